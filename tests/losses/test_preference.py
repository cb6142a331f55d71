"""Tests for irl_jax/losses/preference.py against float64 NumPy references from
docs/objectives.md §6."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from irl_jax.losses import (
  bradley_terry,
  linear_bradley_terry_mle,
  linear_ranking_mle,
  pairwise_split,
  pessimistic_policy_values,
  plackett_luce,
)

# --- float64 NumPy references, written from docs/objectives.md §6 ---------------------------


def ref_bradley_terry(chosen, rejected, margin=0.0):
  """−log σ(r_c − r_r − m) = log(1 + e^{−(r_c − r_r − m)})."""
  z = np.asarray(chosen, np.float64) - np.asarray(rejected, np.float64) - margin
  return np.logaddexp(0.0, -z)


def ref_plackett_luce(rewards, where):
  """−Σ_{j valid} (r_j − logsumexp_{k ≥ j, valid} r_k), one explicit loop per ranking."""
  rewards = np.asarray(rewards, np.float64)
  n, k = rewards.shape
  out = np.zeros(n)
  for i in range(n):
    valid = [j for j in range(k) if where[i, j]]
    total = 0.0
    for j in valid:
      rest = [rewards[i, kk] for kk in valid if kk >= j]
      total -= rewards[i, j] - np.logaddexp.reduce(rest)
    out[i] = total
  return out


def ref_pairwise_split(rewards, where):
  """Σ_{j<k valid} −log σ(r_j − r_k), an explicit double loop."""
  rewards = np.asarray(rewards, np.float64)
  n, k = rewards.shape
  out = np.zeros(n)
  for i in range(n):
    for j in range(k):
      for kk in range(j + 1, k):
        if where[i, j] and where[i, kk]:
          out[i] += np.logaddexp(0.0, -(rewards[i, j] - rewards[i, kk]))
  return out


def ref_pessimistic_values(theta, policy_features, feature_diffs, reference, f, kappa):
  """θᵀw − f·sqrt(wᵀ(Σ_D + κI)^{-1}w), Σ_D = (1/n) Σ x_i x_iᵀ, one policy at a time."""
  x = np.asarray(feature_diffs, np.float64)
  n, d = x.shape
  sigma = np.zeros((d, d))
  for i in range(n):
    sigma += np.outer(x[i], x[i]) / n
  sigma += kappa * np.eye(d)
  out = []
  for phi in np.asarray(policy_features, np.float64):
    w = phi - reference
    out.append(float(np.dot(theta, w)) - f * np.sqrt(w @ np.linalg.solve(sigma, w)))
  return np.array(out)


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


# Jitted once at module level; each (shape, dtype) compiles once.
_bt = jax.jit(bradley_terry)
_pl = jax.jit(lambda r, w: plackett_luce(r, where=w))
_ps = jax.jit(lambda r, w: pairwise_split(r, where=w))
_pl_full = jax.jit(plackett_luce)
_ps_full = jax.jit(pairwise_split)
_pl_grad = jax.jit(jax.grad(lambda r, w: jnp.sum(plackett_luce(r, where=w))))
_ps_grad = jax.jit(jax.grad(lambda r, w: jnp.sum(pairwise_split(r, where=w))))
_bt_grad = jax.jit(jax.grad(lambda c, r: jnp.sum(bradley_terry(c, r)), argnums=(0, 1)))


def _rankings(shape, seed=0, scale=2.0, keep=0.7):
  rng = np.random.default_rng(seed)
  rewards = (scale * rng.standard_normal(shape)).astype(np.float32)
  where = rng.random(shape) < keep
  return rewards, where


# --- Bradley–Terry -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 16])
@pytest.mark.parametrize("margin_kind", ["none", "scalar", "vector"])
def test_bradley_terry_matches_reference(n, margin_kind):
  rng = np.random.default_rng(n)
  chosen = (3 * rng.standard_normal(n)).astype(np.float32)
  rejected = (3 * rng.standard_normal(n)).astype(np.float32)
  margin = {
    "none": None,
    "scalar": np.float32(0.7),
    "vector": rng.uniform(0, 2, n).astype(np.float32),
  }[margin_kind]
  got = _bt(chosen, rejected, margin=margin)
  assert got.shape == (n,) and got.dtype == jnp.float32
  _close(got, ref_bradley_terry(chosen, rejected, 0.0 if margin is None else margin))


def test_bradley_terry_golden():
  # r_c=1, r_r=0: log(1 + e^{-1}) = 0.31326168751822286.
  # r_c=0, r_r=1: log(1 + e) = 1.3132616875182228.
  # r_c=1, r_r=0, m=1: log(1 + e^0) = log 2 = 0.6931471805599453.
  got = _bt(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(got, [0.31326168751822286, 1.3132616875182228], rtol=1e-6)
  got = _bt(jnp.array([1.0]), jnp.array([0.0]), margin=jnp.float32(1.0))
  np.testing.assert_allclose(got, [0.6931471805599453], rtol=1e-6)


def test_bradley_terry_gradient_is_sigmoid():
  # d/dr_c softplus(−(r_c − r_r)) = −σ(r_r − r_c); the rejected side gets the opposite.
  c = jnp.array([1.0, -2.0, 0.0])
  r = jnp.array([0.0, 1.0, 0.0])
  gc, gr = _bt_grad(c, r)
  want = -1.0 / (1.0 + np.exp(np.asarray(c, np.float64) - np.asarray(r, np.float64)))
  _close(gc, want)
  _close(gr, -want)


def test_bradley_terry_gradients_float64():
  rng = np.random.default_rng(1)
  c, r, m = rng.standard_normal((3, 6))
  with jax.enable_x64(True):
    out = bradley_terry(c, r)
    assert out.dtype == jnp.float64
    check_grads(lambda c, r: bradley_terry(c, r), (c, r), order=1, modes=("rev",))
    check_grads(lambda c, r, m: bradley_terry(c, r, margin=m), (c, r, m), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_bradley_terry_extreme_inputs_finite(dtype):
  c = jnp.array([1e4, -1e4, 1e4, 0.0], dtype)
  r = jnp.array([-1e4, 1e4, 1e4, -1e4], dtype)
  out = _bt(c, r)
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  # The reference sees the values as stored (bf16 holds 1e4 as 9984).
  _close(out, ref_bradley_terry(np.asarray(c, np.float32), np.asarray(r, np.float32)))
  for g in _bt_grad(c, r):
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


def test_bradley_terry_bad_inputs():
  with pytest.raises(ValueError, match=r"\[3\].*\[4\]"):
    bradley_terry(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(ValueError, match=r"rank 1.*\(2, 3\)"):
    bradley_terry(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"margin.*\(3,\).*\(2,\)"):
    bradley_terry(jnp.zeros(3), jnp.zeros(3), margin=jnp.zeros(2))
  with pytest.raises(TypeError, match="floating"):
    bradley_terry(jnp.zeros(3, jnp.int32), jnp.zeros(3))


# --- Plackett–Luce and pairwise split -----------------------------------------


@pytest.mark.parametrize("shape", [(1, 2), (5, 4), (16, 6)])
def test_plackett_luce_matches_reference(shape):
  rewards, where = _rankings(shape, seed=shape[0])
  got = _pl(rewards, where)
  assert got.shape == shape[:1] and got.dtype == jnp.float32
  _close(got, ref_plackett_luce(rewards, where))
  full = np.ones(shape, bool)
  _close(_pl_full(rewards), ref_plackett_luce(rewards, full))


@pytest.mark.parametrize("shape", [(1, 2), (5, 4), (16, 6)])
def test_pairwise_split_matches_reference(shape):
  rewards, where = _rankings(shape, seed=shape[0] + 1)
  got = _ps(rewards, where)
  assert got.shape == shape[:1] and got.dtype == jnp.float32
  _close(got, ref_pairwise_split(rewards, where))
  full = np.ones(shape, bool)
  _close(_ps_full(rewards), ref_pairwise_split(rewards, full))


def test_ranking_golden():
  # r = [2, 1, 0], all valid.
  # PL: −(2 − log(e²+e+1)) − (1 − log(e+1)) − (0 − 0)
  #     = log(11.107337927389695) − 2 + log(3.718281828459045) − 1 = 0.7208676519626029.
  # Pairwise: softplus(−1) + softplus(−2) + softplus(−1)
  #     = 2·0.31326168751822286 + 0.1269280110429725 = 0.7534513860794182.
  r = jnp.array([[2.0, 1.0, 0.0]])
  np.testing.assert_allclose(_pl_full(r), [0.7208676519626029], rtol=1e-6)
  np.testing.assert_allclose(_ps_full(r), [0.7534513860794182], rtol=1e-6)
  # Masking the middle entry leaves the ranking [2, 0]: log(1 + e^{-2}) for both.
  w = jnp.array([[True, False, True]])
  np.testing.assert_allclose(_pl(r, w), [0.1269280110429725], rtol=1e-6)
  np.testing.assert_allclose(_ps(r, w), [0.1269280110429725], rtol=1e-6)


def test_plackett_luce_two_items_is_bradley_terry():
  rewards, _ = _rankings((16, 2), seed=3, scale=4.0)
  full = np.ones((16, 2), bool)
  want = _bt(rewards[:, 0], rewards[:, 1])
  _close(_pl(rewards, full), want)
  _close(_ps(rewards, full), want)


@pytest.mark.parametrize("length", [0, 1, 2, 4])
def test_plackett_luce_short_ranking_equals_truncated(length):
  rewards, _ = _rankings((5, 6), seed=4)
  where = np.zeros((5, 6), bool)
  where[:, :length] = True
  got_pl, got_ps = _pl(rewards, where), _ps(rewards, where)
  if length == 0:
    np.testing.assert_array_equal(got_pl, 0.0)
    np.testing.assert_array_equal(got_ps, 0.0)
    return
  _close(got_pl, _pl_full(rewards[:, :length]))
  _close(got_ps, _ps_full(rewards[:, :length]))
  if length == 1:
    np.testing.assert_array_equal(got_pl, 0.0)


def test_ranking_losses_shift_invariant_and_nonnegative():
  rewards, where = _rankings((8, 5), seed=5)
  shift = np.float32(3.0) * np.arange(8, dtype=np.float32)[:, None]
  _close(_pl(rewards + shift, where), _pl(rewards, where))
  _close(_ps(rewards + shift, where), _ps(rewards, where))
  assert np.all(np.asarray(_pl(rewards, where)) >= 0)
  assert np.all(np.asarray(_ps(rewards, where)) >= 0)


_HYP_SHAPE = (4, 5)
_fills = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0])


@settings(max_examples=25, deadline=None)
@given(
  seed=st.integers(0, 2**31 - 1),
  where=hnp.arrays(np.bool_, _HYP_SHAPE),
  fill=_fills,
)
def test_ranking_masking_invariance(seed, where, fill):
  rewards, _ = _rankings(_HYP_SHAPE, seed=seed)
  filled = np.where(where, rewards, np.float32(fill)).astype(np.float32)
  for loss, grad, ref in ((_pl, _pl_grad, ref_plackett_luce), (_ps, _ps_grad, ref_pairwise_split)):
    np.testing.assert_array_equal(loss(filled, where), loss(rewards, where))
    g_filled, g = grad(filled, where), grad(rewards, where)
    np.testing.assert_array_equal(g_filled, g)
    np.testing.assert_array_equal(np.asarray(g)[~where], 0.0)
    _close(loss(filled, where), ref(rewards, where))


@settings(max_examples=25, deadline=None)
@given(
  rewards=hnp.arrays(np.float32, _HYP_SHAPE, elements=st.floats(-1e4, 1e4, width=32)),
  where=hnp.arrays(np.bool_, _HYP_SHAPE),
)
def test_ranking_losses_finite(rewards, where):
  for loss, grad in ((_pl, _pl_grad), (_ps, _ps_grad)):
    out, g = np.asarray(loss(rewards, where)), np.asarray(grad(rewards, where))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(g))
    # A ranking with fewer than two valid entries carries no comparison.
    short = where.sum(axis=1) < 2
    np.testing.assert_array_equal(out[short], 0.0)
    np.testing.assert_array_equal(g[short], 0.0)


def test_ranking_losses_all_masked_rows_zero_and_no_nan():
  rewards = np.full((3, 4), np.nan, np.float32)
  where = np.zeros((3, 4), bool)
  for loss, grad in ((_pl, _pl_grad), (_ps, _ps_grad)):
    np.testing.assert_array_equal(loss(rewards, where), 0.0)
    np.testing.assert_array_equal(grad(rewards, where), 0.0)


def test_ranking_losses_bfloat16():
  rewards = jnp.array([[1e4, -1e4, 0.0, 3.0], [-1e4, 1e4, -1e4, 1e4]], jnp.bfloat16)
  where = np.array([[True, True, True, False], [True, True, True, True]])
  up = np.asarray(rewards, np.float32)
  for loss, grad, ref in (
    (_pl, _pl_grad, ref_plackett_luce),
    (_ps, _ps_grad, ref_pairwise_split),
  ):
    out = loss(rewards, where)
    assert out.dtype == jnp.float32
    _close(out, ref(up, where))
    assert np.all(np.isfinite(np.asarray(grad(rewards, where), np.float32)))


def test_ranking_gradients_float64():
  rewards, where = _rankings((3, 5), seed=6)
  with jax.enable_x64(True):
    r = jnp.asarray(rewards, jnp.float64)
    w = jnp.asarray(where)
    assert _pl(r, w).dtype == jnp.float64 and _ps(r, w).dtype == jnp.float64
    check_grads(functools.partial(_pl, w=w), (r,), order=1, modes=("rev",))
    check_grads(functools.partial(_ps, w=w), (r,), order=1, modes=("rev",))
    check_grads(_pl_full, (r,), order=1, modes=("rev",))


def test_ranking_bad_inputs():
  for fn in (plackett_luce, pairwise_split):
    with pytest.raises(ValueError, match=r"rank 2.*\(4,\)"):
      fn(jnp.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
      fn(jnp.zeros((2, 4)), where=jnp.ones((2, 3), bool))
    with pytest.raises(TypeError, match="bool"):
      fn(jnp.zeros((2, 4)), where=jnp.ones((2, 4), jnp.float32))
    with pytest.raises(TypeError, match="floating"):
      fn(jnp.zeros((2, 4), jnp.int32))


# --- Linear Bradley–Terry MLE and pessimism ------------------------------------


def _bt_dataset(theta_star, n, seed):
  """Feature differences winner − loser, labels drawn from the BT model."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, len(theta_star)))
  p_first_wins = 1.0 / (1.0 + np.exp(-x @ theta_star))
  sign = np.where(rng.random(n) < p_first_wins, 1.0, -1.0)
  return (sign[:, None] * x).astype(np.float32)


_mle = jax.jit(linear_bradley_terry_mle, static_argnames=("norm_bound",))


def _bt_grad64(theta, x):
  x = np.asarray(x, np.float64)
  return -np.mean((1.0 / (1.0 + np.exp(x @ theta)))[:, None] * x, axis=0)


def _newton_constrained_mle(x, iters=50):
  """float64 Newton on the hyperplane ⟨1, θ⟩ = 0 (interior of the ball)."""
  x = np.asarray(x, np.float64)
  d = x.shape[1]
  # Orthonormal basis of 1⊥.
  basis = np.linalg.svd(np.eye(d) - np.ones((d, d)) / d)[0][:, : d - 1]
  z = np.zeros(d - 1)
  for _ in range(iters):
    theta = basis @ z
    s = 1.0 / (1.0 + np.exp(-(x @ theta)))
    grad = basis.T @ _bt_grad64(theta, x)
    hess = basis.T @ ((x * (s * (1 - s))[:, None]).T @ x / len(x)) @ basis
    z = z - np.linalg.solve(hess, grad)
  return basis @ z


def test_linear_bt_mle_matches_newton_reference_interior():
  theta_star = np.array([1.0, -0.5, -0.5])
  x = _bt_dataset(theta_star, 200, seed=7)
  got = np.asarray(_mle(x, norm_bound=100.0), np.float64)
  want = _newton_constrained_mle(x)
  assert np.linalg.norm(want) < 100.0  # The ball is inactive.
  _close(got, want)
  np.testing.assert_allclose(np.sum(got), 0.0, atol=1e-5)


def test_linear_bt_mle_active_ball_satisfies_kkt():
  theta_star = np.array([2.0, -1.0, 0.5, -1.5])
  x = _bt_dataset(theta_star, 300, seed=8)
  bound = 0.1
  got = np.asarray(_mle(x, norm_bound=bound), np.float64)
  np.testing.assert_allclose(np.sum(got), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got), bound, rtol=1e-5)
  # At the constrained optimum the gradient projected on 1⊥ points along −θ̂.
  g = _bt_grad64(got, x)
  g = g - g.mean()
  cos = g @ got / (np.linalg.norm(g) * np.linalg.norm(got))
  np.testing.assert_allclose(cos, -1.0, atol=1e-5)


def test_linear_bt_mle_recovers_direction():
  theta_star = np.array([1.5, -1.0, 0.5, -1.0])
  x = _bt_dataset(theta_star, 4000, seed=9)
  got = np.asarray(_mle(x, norm_bound=10.0), np.float64)
  np.testing.assert_allclose(np.sum(got), 0.0, atol=1e-5)
  assert np.linalg.norm(got) <= 10.0 * (1 + 1e-6)
  cos = got @ theta_star / (np.linalg.norm(got) * np.linalg.norm(theta_star))
  assert cos > 0.95, cos


def test_linear_bt_mle_bad_inputs():
  with pytest.raises(ValueError, match="norm_bound"):
    linear_bradley_terry_mle(jnp.zeros((4, 2)), norm_bound=0.0)
  with pytest.raises(ValueError, match=r"rank 2.*\(4,\)"):
    linear_bradley_terry_mle(jnp.zeros(4), norm_bound=1.0)


def test_linear_bt_mle_ill_conditioned_counts_closed_form():
  # One frequent pair (difference e2, 10⁶ comparisons) and one rare pair (difference e1,
  # 5 comparisons), given as counts. The log-likelihood separates, so the MLE is
  # θ2 = log(wins/losses) of each pair, θ1 likewise and θ3 = −θ1 − θ2. The rare
  # direction's curvature is 10⁻⁶ of the frequent one's; plain gradient descent on the
  # mean loss would barely move it.
  x = jnp.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0]], jnp.float32)
  counts = jnp.array([520_000, 480_000, 3, 2], jnp.float32)
  got = np.asarray(_mle(x, norm_bound=10.0, weights=counts), np.float64)
  t1, t2 = np.log(3 / 2), np.log(520_000 / 480_000)
  np.testing.assert_allclose(got, [t1, t2, -t1 - t2], rtol=2e-4, atol=2e-6)


def test_linear_bt_mle_unidentified_direction_stays_at_minimum_norm():
  # Only e2 is ever compared: θ1 − θ3 does not enter the likelihood, and the solver
  # starts from 0 and leaves it at 0 (the minimum-norm maximiser).
  x = jnp.array([[0, 1, 0], [0, -1, 0]], jnp.float32)
  got = np.asarray(_mle(x, norm_bound=10.0, weights=jnp.array([6.0, 3.0])), np.float64)
  t2 = np.log(2.0)
  np.testing.assert_allclose(got, [-t2 / 2, t2, -t2 / 2], rtol=1e-5)


def test_linear_bt_mle_separable_data_hits_the_ball():
  # One comparison: the likelihood keeps rising along its direction, so the MLE is the
  # ball's boundary point in that direction projected on ⟨1, θ⟩ = 0.
  x = jnp.array([[1.0, 0.0, 0.0]])
  got = np.asarray(_mle(x, norm_bound=2.0), np.float64)
  direction = np.array([2.0, -1.0, -1.0]) / np.sqrt(6.0)
  np.testing.assert_allclose(got, 2.0 * direction, rtol=1e-5)


def test_linear_bt_mle_separable_data_reaches_a_large_ball():
  # No finite optimum: the likelihood improves forever along the comparison, so the MLE
  # is on the sphere however large the ball (Newton's step stays of order one there).
  for bound in (50.0, 100.0):
    got = np.asarray(_mle(jnp.array([[1.0, 0.0, 0.0]]), norm_bound=bound), np.float64)
    np.testing.assert_allclose(got, bound * np.array([2.0, -1.0, -1.0]) / np.sqrt(6.0),
                               rtol=1e-5)


def test_linear_bt_mle_partly_separable_and_badly_conditioned_float64():
  with jax.enable_x64(True):
    # e1 is separable (one comparison, won), e2 is not (6 wins, 3 losses). On the sphere
    # of radius 100 the optimum keeps θ2 = log 2 and puts the rest of the norm on e1.
    x = jnp.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    got = np.asarray(linear_bradley_terry_mle(x, norm_bound=100.0,
                                              weights=jnp.array([6.0, 3.0, 1.0])))
    np.testing.assert_allclose(np.linalg.norm(got), 100.0, rtol=1e-9)
    np.testing.assert_allclose(got[1], np.log(2.0), rtol=1e-4)
    assert got[0] > 60 and abs(np.sum(got)) < 1e-9
    # A pair compared 5 times among 10⁷ comparisons: its curvature is 10⁻⁷ of the
    # frequent pair's, beyond float32's reach (documented) but solved in float64.
    x = jnp.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0]], jnp.float64)
    got = np.asarray(linear_bradley_terry_mle(
        x, norm_bound=10.0, weights=jnp.array([5.2e6, 4.8e6, 3.0, 2.0])))
    t1, t2 = np.log(3 / 2), np.log(5.2 / 4.8)
    np.testing.assert_allclose(got, [t1, t2, -t1 - t2], rtol=1e-7)


def test_linear_bt_mle_weights_equal_repeated_rows():
  rng = np.random.default_rng(5)
  x = _bt_dataset(np.array([1.0, -0.5, -0.5, 0.0]), 12, seed=5)
  reps = rng.integers(0, 4, size=12)
  for bound in (100.0, 0.3):
    weighted = _mle(x, norm_bound=bound, weights=jnp.asarray(reps, jnp.float32))
    repeated = _mle(np.repeat(x, reps, axis=0), norm_bound=bound)
    np.testing.assert_allclose(weighted, repeated, rtol=1e-4, atol=1e-5)


def _ranking_data(n, k, d, theta, seed):
  rng = np.random.default_rng(seed)
  phi = rng.standard_normal((n, k, d))
  utility = phi @ theta + rng.gumbel(size=(n, k))
  order = np.argsort(-utility, axis=1)
  return np.take_along_axis(phi, order[:, :, None], axis=1)


def _scipy_ranking_mle(phi, where, bound, split):
  """float64 SLSQP on the explicit-loop references under ⟨1, θ⟩ = 0 and ‖θ‖² ≤ B²."""
  scipy_optimize = pytest.importorskip("scipy.optimize")
  ref = ref_pairwise_split if split else ref_plackett_luce
  d = phi.shape[2]
  res = scipy_optimize.minimize(
      lambda t: float(np.sum(ref(phi @ t, where))), np.zeros(d), method="SLSQP",
      constraints=[{"type": "eq", "fun": lambda t: np.sum(t)},
                   {"type": "ineq", "fun": lambda t: bound**2 - t @ t}],
      options={"ftol": 1e-14, "maxiter": 500})
  assert res.success, res.message
  return res.x


_rank_mle = jax.jit(linear_ranking_mle, static_argnames=("norm_bound", "split_pairs"))


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("bound", [50.0, 0.4])
def test_linear_ranking_mle_matches_scipy_reference(split, bound):
  theta = np.array([0.8, -0.6, 0.3, -0.5])
  phi = _ranking_data(25, 4, 4, theta, seed=11)
  where = np.ones(phi.shape[:2], bool)
  where[::3, 3] = False                     # some rankings of three items
  want = _scipy_ranking_mle(phi, where, bound, split)
  got = np.asarray(_rank_mle(phi.astype(np.float32), norm_bound=bound, where=where,
                             split_pairs=split), np.float64)
  if bound < 1:
    np.testing.assert_allclose(np.linalg.norm(want), bound, rtol=1e-6)   # the ball is active
  np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-5)


def test_linear_ranking_mle_two_items_is_bradley_terry():
  theta = np.array([0.5, -1.0, 0.5])
  phi = _ranking_data(40, 2, 3, theta, seed=2).astype(np.float32)
  ranked = _rank_mle(phi, norm_bound=5.0, split_pairs=False)
  pairs = _mle(phi[:, 0] - phi[:, 1], norm_bound=5.0)
  np.testing.assert_allclose(ranked, pairs, rtol=1e-4, atol=1e-6)


def test_linear_ranking_mle_is_consistent_for_both_estimators():
  theta = np.array([1.0, -0.5, 0.25, -0.75])
  phi = _ranking_data(3000, 5, 4, theta, seed=4).astype(np.float32)
  for split in (False, True):
    got = np.asarray(_rank_mle(phi, norm_bound=10.0, split_pairs=split), np.float64)
    assert np.linalg.norm(got - theta) < 0.15, (split, got)


def test_linear_mle_bad_inputs():
  x = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match=r"weights.*expected"):
    linear_bradley_terry_mle(x, norm_bound=1.0, weights=jnp.ones(3))
  with pytest.raises(ValueError, match=r"weights.*>= 0"):
    linear_bradley_terry_mle(x, norm_bound=1.0, weights=-jnp.ones(4))
  with pytest.raises(ValueError, match="d >= 2"):
    linear_bradley_terry_mle(jnp.zeros((4, 1)), norm_bound=1.0)
  with pytest.raises(ValueError, match=r"rank 3.*\(4, 3\)"):
    linear_ranking_mle(x, norm_bound=1.0)
  with pytest.raises(ValueError, match="where"):
    linear_ranking_mle(jnp.zeros((4, 2, 3)), norm_bound=1.0, where=jnp.ones((4, 3), bool))
  with pytest.raises(ValueError, match="newton_steps"):
    linear_ranking_mle(jnp.zeros((4, 2, 3)), norm_bound=1.0, newton_steps=0)


def test_pessimistic_values_equal_the_worst_case_over_the_confidence_set():
  # Ĵ(π) is the closed form of min θᵀw over {θ : ‖θ − θ̂‖_(Σ_D + κI) ≤ f}; compare with a
  # brute-force minimum over 400k points of that ellipsoid's boundary (float64). The
  # linear objective's minimum lies on the boundary; the sampled minimum is never below
  # the true one and, this densely in 3-D, within ~1e−4 of it.
  rng = np.random.default_rng(12)
  d = 3
  theta = rng.standard_normal(d)
  phi = rng.standard_normal((4, d))
  x = rng.standard_normal((7, d))
  v = rng.standard_normal(d)
  f, kappa = 0.8, 0.2
  a = x.T @ x / len(x) + kappa * np.eye(d)
  u = rng.standard_normal((400_000, d))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  # Points θ̂ + f·a^{−1/2}u: exactly the boundary (‖·‖_a = f).
  evals, evecs = np.linalg.eigh(a)
  boundary = theta + f * u @ (evecs / np.sqrt(evals)).T
  np.testing.assert_allclose(np.einsum("nd,de,ne->n", boundary - theta, a, boundary - theta),
                             f**2, rtol=1e-9)
  want = np.array([np.min(boundary @ (p - v)) for p in phi])
  got = np.asarray(_pess(theta.astype(np.float32), phi.astype(np.float32),
                         x.astype(np.float32), reference_features=v.astype(np.float32), f=f,
                         kappa=kappa), np.float64)
  assert np.all(want >= got - 1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)


def test_pessimistic_values_weights_equal_repeated_rows():
  rng = np.random.default_rng(6)
  theta = rng.standard_normal(3).astype(np.float32)
  phi = rng.standard_normal((4, 3)).astype(np.float32)
  x = rng.standard_normal((5, 3)).astype(np.float32)
  reps = np.array([3, 0, 1, 2, 5])
  weighted = _pess(theta, phi, x, weights=jnp.asarray(reps, jnp.float32), f=0.7, kappa=0.1)
  repeated = _pess(theta, phi, np.repeat(x, reps, axis=0), f=0.7, kappa=0.1)
  np.testing.assert_allclose(weighted, repeated, rtol=1e-5, atol=1e-6)
  _close(weighted, ref_pessimistic_values(theta, phi, np.repeat(x, reps, axis=0),
                                          np.zeros(3), 0.7, 0.1))
  with pytest.raises(ValueError, match="weights"):
    pessimistic_policy_values(theta, phi, x, weights=jnp.ones(4), f=0.7, kappa=0.1)
  with pytest.raises(ValueError, match="positive sum"):
    pessimistic_policy_values(theta, phi, x, weights=jnp.zeros(5), f=0.7, kappa=0.1)


_pess = jax.jit(pessimistic_policy_values, static_argnames=("f", "kappa"))


@pytest.mark.parametrize("shape", [(1, 5, 2), (3, 16, 4), (6, 10, 5)])
@pytest.mark.parametrize("f", [0.0, 1.5])
def test_pessimistic_values_match_reference(shape, f):
  p, n, d = shape
  rng = np.random.default_rng(p + n + d)
  theta = rng.standard_normal(d).astype(np.float32)
  phi = rng.standard_normal((p, d)).astype(np.float32)
  x = rng.standard_normal((n, d)).astype(np.float32)
  v = rng.standard_normal(d).astype(np.float32)
  got = _pess(theta, phi, x, reference_features=v, f=f, kappa=0.3)
  assert got.shape == (p,)
  _close(got, ref_pessimistic_values(theta, phi, x, v.astype(np.float64), f, 0.3))
  got0 = _pess(theta, phi, x, f=f, kappa=0.3)
  _close(got0, ref_pessimistic_values(theta, phi, x, np.zeros(d), f, 0.3))
  if f == 0.0:
    # No pessimism: the point estimate θᵀw.
    _close(got, (phi.astype(np.float64) - v) @ theta.astype(np.float64))
  else:
    assert np.all(np.asarray(got) <= (phi - v) @ theta + 1e-5)


def test_pessimistic_values_golden():
  # x = [[1, 0], [0, 1]] → Σ_D = I/2; κ = 0.5 → Σ_D + κI = I. θ = [1, −1],
  # w = [3, 4]: θᵀw = −1, ‖w‖ = 5; f = 0.2 → −1 − 0.2·5 = −2.
  got = _pess(jnp.array([1.0, -1.0]), jnp.array([[3.0, 4.0]]), jnp.eye(2), f=0.2, kappa=0.5)
  np.testing.assert_allclose(got, [-2.0], rtol=1e-6)


def test_pessimistic_values_gradient_at_reference_is_finite():
  # w = 0 (policy features equal the reference): ‖w‖ is not differentiable there;
  # the documented subgradient of the width is 0, so ∂Ĵ/∂φ = θ and ∂Ĵ/∂v = −θ.
  rng = np.random.default_rng(3)
  theta = rng.standard_normal(3).astype(np.float32)
  v = rng.standard_normal(3).astype(np.float32)
  phi = np.stack([v, v + rng.standard_normal(3).astype(np.float32)])
  x = rng.standard_normal((6, 3)).astype(np.float32)

  def total(theta, phi, x, v):
    return jnp.sum(pessimistic_policy_values(theta, phi, x, reference_features=v, f=1.5, kappa=0.3))

  values = _pess(theta, phi, x, reference_features=v, f=1.5, kappa=0.3)
  _close(values, ref_pessimistic_values(theta, phi, x, v.astype(np.float64), 1.5, 0.3))
  np.testing.assert_allclose(values[0], 0.0, atol=1e-6)
  grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(theta, phi, x, v)
  for g in grads:
    assert np.all(np.isfinite(g)), grads
  np.testing.assert_allclose(grads[1][0], theta, rtol=1e-6)
  # Away from w = 0 the gradient is the float64 autodiff of the reference formula.
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(a, jnp.float64) for a in (theta, phi[1:], x, v))
    check_grads(total, args, order=1, modes=("rev",))
  # Without a reference vector, a zero feature row is the same point.
  g0 = jax.grad(
      lambda p: jnp.sum(pessimistic_policy_values(theta, p, x, f=1.5, kappa=0.3))
  )(jnp.zeros((1, 3)))
  np.testing.assert_allclose(g0[0], theta, rtol=1e-6)


def test_pessimistic_values_bad_inputs():
  theta, phi, x = jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros((5, 3))
  with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
    pessimistic_policy_values(theta, jnp.zeros((2, 4)), x, f=1.0, kappa=1.0)
  with pytest.raises(ValueError, match=r"\(5, 2\)"):
    pessimistic_policy_values(theta, phi, jnp.zeros((5, 2)), f=1.0, kappa=1.0)
  with pytest.raises(ValueError, match="kappa"):
    pessimistic_policy_values(theta, phi, x, f=1.0, kappa=0.0)
  with pytest.raises(ValueError, match="`f`"):
    pessimistic_policy_values(theta, phi, x, f=-1.0, kappa=1.0)
