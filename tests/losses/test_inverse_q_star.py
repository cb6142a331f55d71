"""Tests for irl_jax/losses/inverse_q_star.py against float64 NumPy references from
docs/objectives.md §5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses import (
  InverseQStarExtras,
  gather_response,
  inverse_q_star,
  inverse_q_star_kl,
  inverse_q_star_policy_gradient,
)

# --- float64 NumPy references, written from docs/objectives.md §5 ---------------------------


def ref_inverse_q_star(lp, lr, lo, where, beta):
  """r̂_t = β(log π̂* − log π_ref); ℓ_t = (β(log π_θ − log π_ref) − r̂_t)², per token."""
  lp, lr, lo = (np.asarray(a, np.float64) for a in (lp, lr, lo))
  loss = np.zeros(lp.shape)
  token_rewards = np.zeros(lp.shape)
  policy_rewards = np.zeros(lp.shape)
  for b in range(lp.shape[0]):
    for t in range(lp.shape[1]):
      if where[b, t]:
        token_rewards[b, t] = beta * (lo[b, t] - lr[b, t])
        policy_rewards[b, t] = beta * (lp[b, t] - lr[b, t])
        loss[b, t] = (policy_rewards[b, t] - token_rewards[b, t]) ** 2
  return loss, token_rewards, policy_rewards


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  m = np.max(x)
  return x - m - np.log(np.sum(np.exp(x - m)))


def ref_kl(policy_logits, optimal_logits, where):
  """KL(π̂* ‖ π_θ) = Σ_v π̂*(v)(log π̂*(v) − log π_θ(v)) per response position."""
  b_size, t_size, _ = policy_logits.shape
  out = np.zeros((b_size, t_size))
  for b in range(b_size):
    for t in range(t_size):
      if where[b, t]:
        log_opt = _log_softmax(optimal_logits[b, t])
        log_pol = _log_softmax(policy_logits[b, t])
        support = np.isfinite(log_opt)  # 0·log 0 = 0 for tokens that π̂* rules out.
        out[b, t] = np.sum(np.exp(log_opt[support]) * (log_opt - log_pol)[support])
  return out


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


_iqs = jax.jit(
  lambda lp, lr, lo, w, beta, sg=True: inverse_q_star(
    lp, lr, lo, where=w, beta=beta, stop_gradient_targets=sg
  ),
  static_argnums=(4, 5),
)
_iqs_grad = jax.jit(
  jax.grad(
    lambda lp, lr, lo, w, beta, sg=True: jnp.sum(
      inverse_q_star(lp, lr, lo, where=w, beta=beta, stop_gradient_targets=sg)[0]
    ),
    argnums=(0, 1, 2),
  ),
  static_argnums=(4, 5),
)
_kl = jax.jit(lambda p, o, w: inverse_q_star_kl(p, o, where=w))
_kl_grad = jax.jit(
  jax.grad(lambda p, o, w: jnp.sum(inverse_q_star_kl(p, o, where=w)), argnums=(0, 1))
)


def _logps(shape, seed=0):
  rng = np.random.default_rng(seed)
  lp, lr, lo = (np.log(rng.uniform(0.01, 1.0, shape)).astype(np.float32) for _ in range(3))
  where = rng.random(shape) < 0.75
  return lp, lr, lo, where


def _logits(shape, seed=0, scale=2.0):
  rng = np.random.default_rng(seed)
  policy = (scale * rng.standard_normal(shape)).astype(np.float32)
  optimal = (scale * rng.standard_normal(shape)).astype(np.float32)
  where = rng.random(shape[:2]) < 0.75
  return policy, optimal, where


# --- inverse_q_star -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (8, 12)])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_inverse_q_star_matches_reference(shape, beta):
  lp, lr, lo, where = _logps(shape, seed=shape[0])
  loss, extras = _iqs(lp, lr, lo, where, beta)
  assert isinstance(extras, InverseQStarExtras)
  assert loss.shape == shape and loss.dtype == jnp.float32
  ref_loss, ref_token, ref_policy = ref_inverse_q_star(lp, lr, lo, where, beta)
  _close(loss, ref_loss)
  _close(extras.token_rewards, ref_token)
  _close(extras.policy_rewards, ref_policy)
  # Algebraically ℓ = β²(log π_θ − log π̂*)²: the reference cancels.
  _close(loss, np.where(where, beta**2 * (lp.astype(np.float64) - lo) ** 2, 0))


def test_inverse_q_star_golden():
  # log π_θ = −1, log π_ref = −2, log π̂* = −1.5, β = 0.5:
  # policy reward 0.5·(−1 + 2) = 0.5, token reward 0.5·(−1.5 + 2) = 0.25,
  # ℓ = (0.5 − 0.25)² = 0.0625 = 0.25·(−1 + 1.5)².
  lp, lr, lo = (jnp.array([[v]]) for v in (-1.0, -2.0, -1.5))
  loss, extras = _iqs(lp, lr, lo, jnp.array([[True]]), 0.5)
  np.testing.assert_allclose(loss, [[0.0625]], rtol=1e-6)
  np.testing.assert_allclose(extras.policy_rewards, [[0.5]], rtol=1e-6)
  np.testing.assert_allclose(extras.token_rewards, [[0.25]], rtol=1e-6)


def test_inverse_q_star_gradients_and_stop_gradient():
  lp, lr, lo, where = _logps((4, 6), seed=1)
  beta = 0.7
  diff = np.where(where, lp.astype(np.float64) - lo, 0)
  g_lp, g_lr, g_lo = _iqs_grad(lp, lr, lo, where, beta)
  _close(g_lp, 2 * beta**2 * diff)
  # The reference and π̂* are frozen by default.
  np.testing.assert_array_equal(g_lr, 0.0)
  np.testing.assert_array_equal(g_lo, 0.0)
  # Without the stop-gradient, π̂* gets the opposite gradient; the reference cancels.
  g_lp, g_lr, g_lo = _iqs_grad(lp, lr, lo, where, beta, False)
  _close(g_lp, 2 * beta**2 * diff)
  _close(g_lo, -2 * beta**2 * diff)
  _close(g_lr, np.zeros_like(diff))


def test_inverse_q_star_masking_invariance():
  lp, lr, lo, where = _logps((4, 6), seed=2)
  loss, extras = _iqs(lp, lr, lo, where, 0.5)
  grads = _iqs_grad(lp, lr, lo, where, 0.5, False)
  for fill in (np.nan, np.inf, -np.inf, 1e30):
    filled = [np.where(where, x, np.float32(fill)) for x in (lp, lr, lo)]
    loss_f, extras_f = _iqs(*filled, where, 0.5)
    np.testing.assert_array_equal(loss_f, loss)
    np.testing.assert_array_equal(extras_f.token_rewards, extras.token_rewards)
    np.testing.assert_array_equal(extras_f.policy_rewards, extras.policy_rewards)
    for g_f, g in zip(_iqs_grad(*filled, where, 0.5, False), grads, strict=True):
      np.testing.assert_array_equal(g_f, g)
      np.testing.assert_array_equal(np.asarray(g)[~where], 0.0)
  none = np.zeros_like(where)
  nan = np.full(lp.shape, np.nan, np.float32)
  np.testing.assert_array_equal(_iqs(nan, nan, nan, none, 0.5)[0], 0.0)
  for g in _iqs_grad(nan, nan, nan, none, 0.5, False):
    np.testing.assert_array_equal(g, 0.0)


def test_inverse_q_star_gradients_float64():
  lp, lr, lo, where = _logps((3, 5), seed=3)
  with jax.enable_x64(True):
    lp, lr, lo = (jnp.asarray(x, jnp.float64) for x in (lp, lr, lo))
    assert _iqs(lp, lr, lo, where, 0.8)[0].dtype == jnp.float64
    check_grads(lambda x: _iqs(x, lr, lo, where, 0.8)[0], (lp,), order=1, modes=("rev",))
    check_grads(
      lambda x, r, o: _iqs(x, r, o, where, 0.8, False)[0],
      (lp, lr, lo),
      order=1,
      modes=("rev",),
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_inverse_q_star_extreme_inputs_finite(dtype):
  lp = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], dtype)
  lr = jnp.array([[-1e4, 1e4, -1e4], [0.0, -1e4, 1e4]], dtype)
  lo = jnp.array([[1e4, 1e4, -1e4], [-1e4, -1e4, 0.0]], dtype)
  where = np.ones((2, 3), bool)
  loss, extras = _iqs(lp, lr, lo, where, 0.1)
  assert loss.dtype == jnp.float32
  up = [np.asarray(x, np.float32) for x in (lp, lr, lo)]
  _close(loss, ref_inverse_q_star(*up, where, 0.1)[0])
  for leaf in (loss, *extras):
    assert np.all(np.isfinite(leaf))
  for g in _iqs_grad(lp, lr, lo, where, 0.1, False):
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


def test_inverse_q_star_bad_inputs():
  x = jnp.zeros((2, 3))
  w = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
    inverse_q_star(x, x, jnp.zeros((2, 4)), where=w, beta=0.1)
  with pytest.raises(ValueError, match=r"rank 2.*\(3,\)"):
    inverse_q_star(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), where=jnp.ones(3, bool), beta=0.1)
  with pytest.raises(TypeError, match="bool"):
    inverse_q_star(x, x, x, where=jnp.ones((2, 3)), beta=0.1)
  with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
    inverse_q_star(x, x, x, where=jnp.ones((2, 2), bool), beta=0.1)
  with pytest.raises(TypeError, match="floating"):
    inverse_q_star(jnp.zeros((2, 3), jnp.int32), x, x, where=w, beta=0.1)
  for beta in (0.0, -1.0):
    with pytest.raises(ValueError, match="beta"):
      inverse_q_star(x, x, x, where=w, beta=beta)


# --- inverse_q_star_kl ----------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 2), (2, 5, 7), (4, 12, 11)])
def test_inverse_q_star_kl_matches_reference(shape):
  policy, optimal, where = _logits(shape, seed=shape[2])
  got = _kl(policy, optimal, where)
  assert got.shape == shape[:2] and got.dtype == jnp.float32
  _close(got, ref_kl(policy, optimal, where))
  assert np.all(np.asarray(got) >= -1e-6)
  # ∂KL/∂policy_logits = π_θ − π̂* on response positions; π̂* is frozen.
  g_policy, g_optimal = _kl_grad(policy, optimal, where)
  want = np.zeros(shape)
  for b in range(shape[0]):
    for t in range(shape[1]):
      if where[b, t]:
        want[b, t] = np.exp(_log_softmax(policy[b, t])) - np.exp(_log_softmax(optimal[b, t]))
  _close(g_policy, want)
  np.testing.assert_array_equal(g_optimal, 0.0)


def test_inverse_q_star_kl_golden():
  # π̂* = softmax([0, 0]) = [½, ½], π_θ = softmax([0, log 3]) = [¼, ¾]:
  # KL = ½ log(½/¼) + ½ log(½/¾) = ½ log(4/3) = 0.14384103622589042.
  # π̂* = softmax([0, −∞]) = [1, 0] (a ruled-out token): KL = log(1/¼) = 1.3862943611198906.
  policy = jnp.array([[[0.0, np.log(3.0)], [0.0, np.log(3.0)]]])
  optimal = jnp.array([[[0.0, 0.0], [0.0, -np.inf]]])
  where = jnp.array([[True, True]])
  np.testing.assert_allclose(
    _kl(policy, optimal, where), [[0.14384103622589042, 1.3862943611198906]], rtol=1e-6
  )
  g_policy, _ = _kl_grad(policy, optimal, where)
  # π_θ − π̂*: [¼ − ½, ¾ − ½] and [¼ − 1, ¾ − 0].
  np.testing.assert_allclose(g_policy, [[[-0.25, 0.25], [-0.75, 0.75]]], rtol=1e-6)


def test_inverse_q_star_kl_zero_for_equal_and_shifted_logits():
  policy, _, where = _logits((4, 12, 11), seed=5)
  np.testing.assert_array_equal(_kl(policy, policy, where), 0.0)
  # A constant shift per position leaves the distribution unchanged.
  shift = np.random.default_rng(6).uniform(-50, 50, (4, 12, 1)).astype(np.float32)
  _close(_kl(policy + shift, policy, where), np.zeros((4, 12)))
  _close(_kl(policy, policy - shift, where), np.zeros((4, 12)))
  g, _ = _kl_grad(policy + shift, policy, where)
  _close(g, np.zeros(policy.shape))


def test_inverse_q_star_kl_masking_invariance_finite_fill():
  policy, optimal, where = _logits((4, 6, 5), seed=7)
  out = _kl(policy, optimal, where)
  g_policy, _ = _kl_grad(policy, optimal, where)
  for fill in (1e30, -1e30, 1e4, 0.0):
    p = np.where(where[..., None], policy, np.float32(fill))
    o = np.where(where[..., None], optimal, np.float32(fill))
    np.testing.assert_array_equal(_kl(p, o, where), out)
    g_f, _ = _kl_grad(p, o, where)
    np.testing.assert_array_equal(g_f, g_policy)
    np.testing.assert_array_equal(np.asarray(g_f)[~where], 0.0)
  # Non-finite π̂* logits in masked slots never matter either.
  for fill in (np.nan, np.inf, -np.inf):
    o = np.where(where[..., None], optimal, np.float32(fill))
    np.testing.assert_array_equal(_kl(policy, o, where), out)
    np.testing.assert_array_equal(_kl_grad(policy, o, where)[0], g_policy)


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_inverse_q_star_kl_masking_invariance_nonfinite_policy_fill(fill):
  policy, optimal, where = _logits((4, 6, 5), seed=7)
  g_policy, _ = _kl_grad(policy, optimal, where)
  p = np.where(where[..., None], policy, np.float32(fill))
  np.testing.assert_array_equal(_kl(p, optimal, where), _kl(policy, optimal, where))
  np.testing.assert_array_equal(_kl_grad(p, optimal, where)[0], g_policy)


def test_inverse_q_star_kl_all_masked_is_zero():
  policy, optimal, _ = _logits((2, 3, 4), seed=8)
  none = np.zeros((2, 3), bool)
  np.testing.assert_array_equal(_kl(policy, optimal, none), 0.0)
  np.testing.assert_array_equal(_kl_grad(policy, optimal, none)[0], 0.0)


def test_inverse_q_star_kl_gradients_float64():
  policy, optimal, where = _logits((2, 3, 5), seed=9)
  with jax.enable_x64(True):
    policy, optimal = jnp.asarray(policy, jnp.float64), jnp.asarray(optimal, jnp.float64)
    assert _kl(policy, optimal, where).dtype == jnp.float64
    check_grads(lambda p: _kl(p, optimal, where), (policy,), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_inverse_q_star_kl_extreme_inputs_finite(dtype):
  policy = jnp.array([[[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]]], dtype)
  optimal = jnp.array([[[-1e4, 1e4, 0.0], [0.0, -np.inf, 1e4]]], dtype)
  where = np.ones((1, 2), bool)
  out = _kl(policy, optimal, where)
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  up_p = np.asarray(policy, np.float32)
  up_o = np.asarray(optimal, np.float32)
  _close(out, ref_kl(up_p, up_o, where))
  assert np.all(np.isfinite(np.asarray(_kl_grad(policy, optimal, where)[0], np.float32)))


def test_inverse_q_star_kl_bad_inputs():
  x = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match=r"\[2, 3, 4\].*\[2, 3, 5\]"):
    inverse_q_star_kl(x, jnp.zeros((2, 3, 5)), where=jnp.ones((2, 3), bool))
  with pytest.raises(ValueError, match=r"rank 3.*\(2, 3\)"):
    inverse_q_star_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), where=jnp.ones((2, 3), bool))
  with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
    inverse_q_star_kl(x, x, where=jnp.ones((2, 4), bool))
  with pytest.raises(TypeError, match="bool"):
    inverse_q_star_kl(x, x, where=jnp.ones((2, 3)))


# --- gather_response --------------------------------------------------------------

_gather = jax.jit(gather_response, static_argnames=("length",))


def ref_gather(values, start, length):
  out = np.zeros((values.shape[0], length, *values.shape[2:]), values.dtype)
  for b in range(values.shape[0]):
    for t in range(length):
      out[b, t] = values[b, min(start[b] + t, values.shape[1] - 1)]
  return out


@pytest.mark.parametrize("shape", [(3, 10), (4, 12, 5)])
def test_gather_response_matches_reference(shape):
  rng = np.random.default_rng(len(shape))
  values = rng.standard_normal(shape).astype(np.float32)
  start = rng.integers(0, shape[1], shape[0]).astype(np.int32)
  got = _gather(values, start, length=6)
  assert got.shape == (shape[0], 6, *shape[2:])
  np.testing.assert_array_equal(got, ref_gather(values, start, 6))


def test_gather_response_golden():
  # values[b, t'] = 10·b + t'; starts [0, 2], length 3; row 1 runs past T' = 4 and is clamped.
  values = 10 * np.arange(2)[:, None] + np.arange(4)[None, :]
  got = _gather(values.astype(np.float32), np.array([0, 2], np.int32), length=3)
  np.testing.assert_array_equal(got, [[0, 1, 2], [12, 13, 13]])


def test_gather_response_aligns_longer_prefix_pass():
  # A π̂* pass with a per-row conditioning context of length start[b]: after gathering,
  # its logits line up with the policy's response positions and the KL is zero.
  policy, _, where = _logits((3, 5, 7), seed=10)
  start = np.array([0, 2, 4], np.int32)
  longer = np.random.default_rng(11).standard_normal((3, 9, 7)).astype(np.float32)
  for b in range(3):
    longer[b, start[b] : start[b] + 5] = policy[b]
  aligned = _gather(longer, start, length=5)
  np.testing.assert_array_equal(aligned, policy)
  np.testing.assert_array_equal(_kl(policy, aligned, where), 0.0)
  logps = longer[..., 0]
  np.testing.assert_array_equal(_gather(logps, start, length=5), policy[..., 0])


def test_gather_response_bad_inputs():
  with pytest.raises(ValueError, match=r"\(5,\)"):
    gather_response(jnp.zeros(5), jnp.zeros(5, jnp.int32), length=2)
  with pytest.raises(ValueError, match=r"\(3,\)"):
    gather_response(jnp.zeros((2, 5)), jnp.zeros(3, jnp.int32), length=2)
  with pytest.raises(ValueError, match="float32"):
    gather_response(jnp.zeros((2, 5)), jnp.zeros(2, jnp.float32), length=2)


# --- policy-gradient form ---------------------------------------------------------------------


def ref_inverse_q_star_pg(lp, lr, lo, where, beta, gamma, baseline):
  """Explicit loops: r̂_t, G_t = Σ_{t'≥t} γ^{t'−t}(r̂ − β(lp − lr)), leave-one-out b_t,
  ℓ_t = −(G_t − b_t)·lp_t."""
  lp, lr, lo = (np.asarray(a, np.float64) for a in (lp, lr, lo))
  b_, t_ = lp.shape
  returns = np.zeros(lp.shape)
  for b in range(b_):
    for t in range(t_):
      if where[b, t]:
        returns[b, t] = sum(
            gamma ** (u - t) * beta * ((lo[b, u] - lr[b, u]) - (lp[b, u] - lr[b, u]))
            for u in range(t, t_) if where[b, u])
  adv = returns.copy()
  if baseline:
    for b in range(b_):
      for t in range(t_):
        others = [returns[c, t] for c in range(b_) if c != b and where[c, t]]
        if where[b, t] and others:
          adv[b, t] = returns[b, t] - np.mean(others)
  loss = np.where(where, -adv * lp, 0.0)
  return loss, returns, adv


@pytest.mark.parametrize("gamma, baseline", [(1.0, True), (0.9, True), (0.7, False)])
def test_policy_gradient_matches_reference(gamma, baseline):
  rng = np.random.default_rng(3)
  b, t = 5, 7
  lp, lr, lo = (-rng.random((b, t)).astype(np.float32) * 3 for _ in range(3))
  lengths = np.array([7, 3, 0, 5, 1])
  where = np.arange(t)[None] < lengths[:, None]
  loss, extras = jax.jit(inverse_q_star_policy_gradient,
                         static_argnames=("beta", "gamma", "baseline"))(
      lp, lr, lo, where=where, beta=0.5, gamma=gamma, baseline=baseline)
  want, returns, adv = ref_inverse_q_star_pg(lp, lr, lo, where, 0.5, gamma, baseline)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.returns, returns, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.advantages, adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.token_rewards, np.where(where, 0.5 * (lo - lr), 0), rtol=1e-6)


def test_policy_gradient_gradient_is_minus_advantage():
  # G_t and b_t carry no gradient: ∂ℓ_t/∂lp_t = −(G_t − b_t), and nothing flows into the
  # frozen log-probs.
  rng = np.random.default_rng(4)
  lp, lr, lo = (-rng.random((4, 6)).astype(np.float32) for _ in range(3))
  where = np.ones((4, 6), bool)

  def total(lp, lr, lo):
    return jnp.sum(inverse_q_star_policy_gradient(lp, lr, lo, where=where, beta=1.0)[0])

  g_lp, g_lr, g_lo = jax.grad(total, argnums=(0, 1, 2))(lp, lr, lo)
  _, _, adv = ref_inverse_q_star_pg(lp, lr, lo, where, 1.0, 1.0, True)
  np.testing.assert_allclose(g_lp, -adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_lr, 0.0)
  np.testing.assert_allclose(g_lo, 0.0)


def test_policy_gradient_at_the_optimum_has_zero_returns():
  # π_θ = π̂*: every net reward r̂_t − β(lp − lr) is 0, so the returns and the loss are 0.
  lo = -np.random.default_rng(5).random((3, 4)).astype(np.float32)
  loss, extras = inverse_q_star_policy_gradient(lo, lo - 0.3, lo, where=np.ones((3, 4), bool),
                                                beta=2.0, gamma=0.95)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  np.testing.assert_allclose(extras.returns, 0.0, atol=1e-6)


def test_policy_gradient_bad_inputs():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="gamma"):
    inverse_q_star_policy_gradient(x, x, x, where=x > -1, beta=1.0, gamma=1.5)
  with pytest.raises(ValueError, match="beta"):
    inverse_q_star_policy_gradient(x, x, x, where=x > -1, beta=0.0)
  with pytest.raises(ValueError, match="shapes must match"):
    inverse_q_star_policy_gradient(x, jnp.zeros((2, 4)), x, where=x > -1, beta=1.0)
