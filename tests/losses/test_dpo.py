"""Tests for irl_jax/losses/dpo.py against float64 NumPy references from docs/objectives.md §7."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses import (
  advantage_weighted_steps,
  bradley_terry,
  dpo,
  ipo,
  preference_margin,
  prefix_mask,
  step_advantages,
  step_log_probs,
)

# --- float64 NumPy references, written from docs/objectives.md §7 ---------------------------


def _log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def ref_margin(c, r, c_ref, r_ref):
  c, r, c_ref, r_ref = (np.asarray(a, np.float64) for a in (c, r, c_ref, r_ref))
  return (c - c_ref) - (r - r_ref)


def ref_dpo(c, r, c_ref, r_ref, beta, eps):
  """−(1−ε)·log σ(βh) − ε·log σ(−βh)."""
  z = beta * ref_margin(c, r, c_ref, r_ref)
  return -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)


def ref_ipo(c, r, c_ref, r_ref, beta):
  """(h − 1/(2β))²."""
  return (ref_margin(c, r, c_ref, r_ref) - 1.0 / (2.0 * beta)) ** 2


def ref_trl_ipo(c, r, c_ref, r_ref, chosen_lengths, rejected_lengths, beta):
  """TRL's IPO: every sequence log-prob (policy and reference) divided by its
  response length, then (h − 1/(2β))² on the averaged log-probs."""
  c, r, c_ref, r_ref = (np.asarray(a, np.float64) for a in (c, r, c_ref, r_ref))
  lc, lr = np.asarray(chosen_lengths, np.float64), np.asarray(rejected_lengths, np.float64)
  h = (c / lc - r / lr) - (c_ref / lc - r_ref / lr)
  return (h - 1.0 / (2.0 * beta)) ** 2


def ref_step_log_probs(logps, step_ids, where, num_steps):
  b, t = logps.shape
  out = np.zeros((b, num_steps))
  for i in range(b):
    for j in range(t):
      if where[i, j] and 0 <= step_ids[i, j] < num_steps:
        out[i, step_ids[i, j]] += float(logps[i, j])
  return out


def ref_step_advantages(values, initial, where):
  """A_i = Q̂_i − Q̂_{i−1} over the valid steps; first step with the lowest Q̂ (−1 if none)."""
  n, s = values.shape
  adv = np.zeros((n, s))
  pit = np.full(n, -1)
  for i in range(n):
    previous = float(initial[i])
    lowest = np.inf
    for j in range(s):
      if not where[i, j]:
        continue
      q = float(values[i, j])
      adv[i, j] = q - previous
      previous = q
      if q < lowest:
        lowest, pit[i] = q, j
  return adv, pit


def ref_advantage_weighted(logps, adv, where, beta, max_weight):
  """−Σ_i min(exp(A_i/β), w_max)·log π(step_i)."""
  n, s = logps.shape
  out = np.zeros(n)
  for i in range(n):
    for j in range(s):
      if where[i, j]:
        out[i] -= min(np.exp(float(adv[i, j]) / beta), max_weight) * float(logps[i, j])
  return out


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


_dpo = jax.jit(dpo, static_argnames=("beta", "label_smoothing"))
_ipo = jax.jit(ipo, static_argnames=("beta",))
_margin = jax.jit(preference_margin)


def _sum_grad(fn, **hyper):
  """Jitted gradient of Σ loss w.r.t. all four log-prob arrays."""
  return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, **hyper)), argnums=(0, 1, 2, 3)))


def _pairs(n, seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  return tuple((scale * rng.standard_normal(n) - 10.0).astype(np.float32) for _ in range(4))


def _with_margin(h, dtype=np.float32):
  """Log-probs whose margin is exactly h: c = h, r = c_ref = r_ref = 0."""
  h = np.asarray(h, dtype)
  z = np.zeros_like(h)
  return h, z, z, z


# --- DPO / IPO ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 16])
@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (1.0, 0.0), (0.5, 0.1), (2.0, 0.5)])
def test_dpo_matches_reference(n, beta, eps):
  args = _pairs(n, seed=n)
  got = _dpo(*args, beta=beta, label_smoothing=eps)
  assert got.shape == (n,) and got.dtype == jnp.float32
  _close(got, ref_dpo(*args, beta, eps))


@pytest.mark.parametrize("n", [1, 7, 16])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_and_margin_match_reference(n, beta):
  args = _pairs(n, seed=n + 100)
  _close(_ipo(*args, beta=beta), ref_ipo(*args, beta))
  _close(_margin(*args), ref_margin(*args))


def test_dpo_ipo_golden():
  # c=−1, r=−2, c_ref=−1.5, r_ref=−1.5: h = 0.5 − (−0.5) = 1.
  # DPO β=1, ε=0: log(1 + e^{−1}) = 0.31326168751822286.
  # DPO β=1, ε=0.1: 0.9·0.31326168751822286 + 0.1·log(1 + e) = 0.41326168751822286.
  # DPO β=0.5, ε=0: log(1 + e^{−0.5}) = 0.4740769841801067.
  # IPO β=1: (1 − 0.5)² = 0.25;  β=0.25: (1 − 2)² = 1.
  args = tuple(jnp.array([v]) for v in (-1.0, -2.0, -1.5, -1.5))
  np.testing.assert_allclose(_margin(*args), [1.0], rtol=1e-7)
  np.testing.assert_allclose(_dpo(*args, beta=1.0), [0.31326168751822286], rtol=1e-6)
  np.testing.assert_allclose(
    _dpo(*args, beta=1.0, label_smoothing=0.1), [0.41326168751822286], rtol=1e-6
  )
  np.testing.assert_allclose(_dpo(*args, beta=0.5), [0.4740769841801067], rtol=1e-6)
  np.testing.assert_allclose(_ipo(*args, beta=1.0), [0.25], rtol=1e-6)
  np.testing.assert_allclose(_ipo(*args, beta=0.25), [1.0], rtol=1e-6)


def test_dpo_is_bradley_terry_on_implicit_rewards():
  c, r, c_ref, r_ref = _pairs(16, seed=3)
  beta = 0.3
  want = jax.jit(bradley_terry)(beta * (c - c_ref), beta * (r - r_ref))
  _close(_dpo(c, r, c_ref, r_ref, beta=beta), want)


def test_dpo_decreasing_in_margin_without_smoothing():
  h = np.linspace(-20.0, 20.0, 16, dtype=np.float32)
  loss = np.asarray(_dpo(*_with_margin(h), beta=0.5), np.float64)
  assert np.all(np.diff(loss) < 0)
  g = _sum_grad(dpo, beta=0.5)(*_with_margin(h))[0]
  assert np.all(np.asarray(g) < 0)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.5])
def test_dpo_label_smoothing_symmetry(eps):
  # ℓ_ε(h) = (1−ε)ℓ_0(h) + ε ℓ_0(−h), and since softplus(−z) − softplus(z) = −z,
  # ℓ_ε(h) − ℓ_ε(−h) = −(1−2ε)·βh.
  beta = 0.7
  h = np.linspace(-6.0, 6.0, 16, dtype=np.float32)
  pos = np.asarray(_dpo(*_with_margin(h), beta=beta, label_smoothing=eps), np.float64)
  neg = np.asarray(_dpo(*_with_margin(-h), beta=beta, label_smoothing=eps), np.float64)
  plain_pos = np.asarray(_dpo(*_with_margin(h), beta=beta), np.float64)
  plain_neg = np.asarray(_dpo(*_with_margin(-h), beta=beta), np.float64)
  _close(pos, (1 - eps) * plain_pos + eps * plain_neg)
  _close(pos - neg, -(1 - 2 * eps) * beta * h.astype(np.float64))


def test_dpo_label_smoothing_minimum():
  # For 0 < ε < 0.5 the loss is minimised at βh = log((1−ε)/ε): the gradient
  # −(1−ε)σ(−z) + εσ(z) vanishes there.
  beta, eps = 0.5, 0.2
  h_star = np.log((1 - eps) / eps) / beta
  g = _sum_grad(dpo, beta=beta, label_smoothing=eps)(*_with_margin([h_star]))[0]
  np.testing.assert_allclose(g, [0.0], atol=1e-6)
  loss = np.asarray(
    _dpo(*_with_margin(h_star + np.linspace(-3, 3, 7)), beta=beta, label_smoothing=eps)
  )
  assert np.argmin(loss) == 3


def test_conservative_dpo_half_smoothing_minimum_is_log2():
  # ε = 0.5: ℓ = ½ softplus(−z) + ½ softplus(z) ≥ log 2, equal at z = 0, even in h.
  h = np.linspace(-5.0, 5.0, 11, dtype=np.float32)
  loss = np.asarray(_dpo(*_with_margin(h), beta=1.3, label_smoothing=0.5), np.float64)
  np.testing.assert_allclose(loss[5], np.log(2.0), rtol=1e-6)
  assert np.all(loss >= np.log(2.0) - 1e-6)
  _close(loss, loss[::-1])
  g = _sum_grad(dpo, beta=1.3, label_smoothing=0.5)(*_with_margin([0.0]))[0]
  np.testing.assert_allclose(g, [0.0], atol=1e-7)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_minimised_at_half_inverse_beta(beta):
  h_star = 1.0 / (2.0 * beta)
  np.testing.assert_allclose(_ipo(*_with_margin([h_star]), beta=beta), [0.0], atol=1e-10)
  grads = _sum_grad(ipo, beta=beta)(*_with_margin([h_star]))
  for g in grads:
    np.testing.assert_allclose(g, [0.0], atol=1e-6)
  around = _ipo(*_with_margin(h_star + np.array([-1.0, -0.1, 0.1, 1.0])), beta=beta)
  assert np.all(np.asarray(around) > 0)


def test_dpo_ipo_gradients_float64():
  rng = np.random.default_rng(5)
  args = tuple(rng.standard_normal(6) for _ in range(4))
  lengths = tuple(rng.integers(1, 9, 6) for _ in range(2))
  with jax.enable_x64(True):
    assert _dpo(*args, beta=0.4).dtype == jnp.float64
    for f in (
      functools.partial(dpo, beta=0.4),
      functools.partial(dpo, beta=0.4, label_smoothing=0.2),
      functools.partial(ipo, beta=0.4),
      functools.partial(ipo, beta=0.4, chosen_lengths=lengths[0], rejected_lengths=lengths[1]),
    ):
      # All four inputs are differentiable only without the reference stop-gradient.
      check_grads(
        functools.partial(f, stop_reference_gradient=False), args, order=1, modes=("rev",)
      )
      # By default: the policy log-probs, with the reference held fixed.
      check_grads(lambda c, r, f=f: f(c, r, *args[2:]), args[:2], order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dpo_ipo_extreme_inputs_finite(dtype):
  c = jnp.array([1e4, -1e4, 1e4, -1e4], dtype)
  r = jnp.array([-1e4, 1e4, 1e4, 0.0], dtype)
  z = jnp.zeros(4, dtype)
  up = [np.asarray(a, np.float32) for a in (c, r, z, z)]
  for eps in (0.0, 0.25):
    out = _dpo(c, r, z, z, beta=1.0, label_smoothing=eps)
    assert out.dtype == jnp.float32
    _close(out, ref_dpo(*up, 1.0, eps))
    grads = _sum_grad(dpo, beta=1.0, label_smoothing=eps)(c, r, z, z)
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)
  out = _ipo(c, r, z, z, beta=1.0)
  _close(out, ref_ipo(*up, 1.0))
  grads = _sum_grad(ipo, beta=1.0)(c, r, z, z)
  assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)


@pytest.mark.parametrize(
  "loss",
  [
    functools.partial(dpo, beta=0.3),
    functools.partial(dpo, beta=0.3, label_smoothing=0.2),
    functools.partial(ipo, beta=0.3),
    functools.partial(ipo, beta=0.3, chosen_lengths=np.arange(1, 6), rejected_lengths=[3] * 5),
  ],
)
def test_dpo_ipo_reference_log_probs_receive_no_gradient_by_default(loss):
  args = _pairs(5, seed=8)
  g_c, g_r, g_cref, g_rref = _sum_grad(loss)(*args)
  assert np.any(np.asarray(g_c) != 0) and np.any(np.asarray(g_r) != 0)
  np.testing.assert_array_equal(g_cref, 0.0)
  np.testing.assert_array_equal(g_rref, 0.0)
  # Opting out: the margin's gradient, −1 times the policy's.
  grads = _sum_grad(loss, stop_reference_gradient=False)(*args)
  np.testing.assert_array_equal(grads[0], g_c)
  np.testing.assert_array_equal(grads[1], g_r)
  np.testing.assert_allclose(grads[2], -np.asarray(g_c), rtol=1e-6)
  np.testing.assert_allclose(grads[3], -np.asarray(g_r), rtol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 16])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_length_averaged_matches_trl_reference(n, beta):
  args = _pairs(n, seed=n)
  rng = np.random.default_rng(n)
  lc, lr = rng.integers(1, 40, n).astype(np.int32), rng.integers(1, 40, n).astype(np.int32)
  got = jax.jit(functools.partial(ipo, beta=beta))(
    *args, chosen_lengths=lc, rejected_lengths=lr
  )
  _close(got, ref_trl_ipo(*args, lc, lr, beta))
  # Float lengths (e.g. token counts accumulated as floats) are accepted too.
  got_f = ipo(*args, beta=beta, chosen_lengths=lc.astype(np.float32), rejected_lengths=lr)
  _close(got_f, ref_trl_ipo(*args, lc, lr, beta))
  # Unit lengths are the summed form.
  ones = np.ones(n, np.int32)
  _close(ipo(*args, beta=beta, chosen_lengths=ones, rejected_lengths=ones), ref_ipo(*args, beta))


def test_ipo_length_averaged_golden_and_bad_lengths():
  # c = −6 over 3 tokens, r = −12 over 4, references 0: averaged h = −2 − (−3) = 1,
  # summed h = 6; β = 0.25 (target margin 2) → (1 − 2)² = 1 vs (6 − 2)² = 16.
  c, r, z = jnp.array([-6.0]), jnp.array([-12.0]), jnp.zeros(1)
  got = ipo(c, r, z, z, beta=0.25, chosen_lengths=jnp.array([3]), rejected_lengths=jnp.array([4]))
  np.testing.assert_allclose(got, [1.0], rtol=1e-6)
  np.testing.assert_allclose(ipo(c, r, z, z, beta=0.25), [16.0], rtol=1e-6)
  # References are averaged too: c_ref = −3 over 3 → h = (−2 + 1) − (−3) = 2 → 0.
  got = ipo(c, r, jnp.array([-3.0]), z, beta=0.25, chosen_lengths=jnp.array([3]),
            rejected_lengths=jnp.array([4]))
  np.testing.assert_allclose(got, [0.0], atol=1e-6)
  z3 = jnp.zeros(3)
  with pytest.raises(ValueError, match="both"):
    ipo(z3, z3, z3, z3, beta=0.5, chosen_lengths=jnp.ones(3))
  with pytest.raises(ValueError, match=r"rejected_lengths.*\(2,\).*\(3,\)"):
    ipo(z3, z3, z3, z3, beta=0.5, chosen_lengths=jnp.ones(3), rejected_lengths=jnp.ones(2))
  with pytest.raises(TypeError, match="chosen_lengths"):
    ipo(z3, z3, z3, z3, beta=0.5, chosen_lengths=jnp.ones(3, bool), rejected_lengths=jnp.ones(3))


def test_dpo_ipo_bad_inputs():
  a, b = jnp.zeros(3), jnp.zeros(4)
  for fn in (
    functools.partial(dpo, beta=0.1),
    functools.partial(ipo, beta=0.1),
    preference_margin,
  ):
    with pytest.raises(ValueError, match=r"\[3\].*\[4\]"):
      fn(a, a, b, a)
    with pytest.raises(ValueError, match=r"rank 1.*\(2, 3\)"):
      fn(*(jnp.zeros((2, 3)),) * 4)
    with pytest.raises(TypeError, match="floating"):
      fn(a, jnp.zeros(3, jnp.int32), a, a)
  for beta in (0.0, -1.0):
    with pytest.raises(ValueError, match="beta"):
      dpo(a, a, a, a, beta=beta)
    with pytest.raises(ValueError, match="beta"):
      ipo(a, a, a, a, beta=beta)
  for eps in (0.6, -0.1):
    with pytest.raises(ValueError, match="label_smoothing"):
      dpo(a, a, a, a, beta=0.1, label_smoothing=eps)


# --- Per-step negatives -------------------------------------------------------------

_step_logps = jax.jit(
  lambda lp, ids, w, num_steps: step_log_probs(lp, ids, where=w, num_steps=num_steps),
  static_argnums=3,
)


def _step_inputs(shape, seed=0):
  b, t, s = shape
  rng = np.random.default_rng(seed)
  logps = -rng.exponential(2.0, (b, t)).astype(np.float32)
  # Non-decreasing step ids, including out-of-range ones (−1 and S).
  ids = np.sort(rng.integers(-1, s + 1, (b, t)), axis=1).astype(np.int32)
  where = rng.random((b, t)) < 0.8
  return logps, ids, where


@pytest.mark.parametrize("shape", [(1, 3, 2), (4, 12, 5), (8, 7, 3)])
def test_step_log_probs_matches_reference(shape):
  logps, ids, where = _step_inputs(shape, seed=shape[1])
  got = _step_logps(logps, ids, where, shape[2])
  assert got.shape == (shape[0], shape[2]) and got.dtype == jnp.float32
  _close(got, ref_step_log_probs(logps, ids, where, shape[2]))


def test_step_log_probs_golden_and_masking():
  # Tokens [−1, −2, −3, −4] in steps [0, 0, 1, 1], the last masked: [−3, −3].
  logps = np.array([[-1.0, -2.0, -3.0, -4.0]], np.float32)
  ids = np.array([[0, 0, 1, 1]], np.int32)
  where = np.array([[True, True, True, False]])
  np.testing.assert_allclose(_step_logps(logps, ids, where, 2), [[-3.0, -3.0]], rtol=1e-7)
  grad = jax.jit(jax.grad(lambda lp, w: jnp.sum(step_log_probs(lp, ids, where=w, num_steps=2))))
  for fill in (np.nan, np.inf, -1e30):
    filled = np.where(where, logps, np.float32(fill))
    np.testing.assert_array_equal(_step_logps(filled, ids, where, 2), [[-3.0, -3.0]])
    np.testing.assert_array_equal(grad(filled, where), [[1.0, 1.0, 1.0, 0.0]])


def test_step_log_probs_bad_inputs():
  with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
    step_log_probs(
      jnp.zeros((2, 3)), jnp.zeros((2, 4), jnp.int32), where=jnp.ones((2, 3), bool), num_steps=2
    )
  with pytest.raises(TypeError, match="bool"):
    step_log_probs(
      jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32), where=jnp.ones((2, 3)), num_steps=2
    )
  with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
    step_log_probs(
      jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32), where=jnp.ones((2, 2), bool), num_steps=2
    )


_step_adv = jax.jit(lambda q, q0, w: step_advantages(q, initial_values=q0, where=w))


@pytest.mark.parametrize("shape", [(1, 2), (5, 4), (8, 6)])
def test_step_advantages_matches_reference(shape):
  n, s = shape
  rng = np.random.default_rng(n + s)
  # Success rates on a coarse grid so that ties (equal lowest Q̂) occur.
  values = (rng.integers(0, 5, shape) / 4).astype(np.float32)
  initial = (rng.integers(0, 5, n) / 4).astype(np.float32)
  lengths = rng.integers(0, s + 1, n)
  where = np.arange(s)[None, :] < lengths[:, None]
  got = _step_adv(values, initial, where)
  adv, pit = ref_step_advantages(values, initial, where)
  _close(got.advantages, adv)
  np.testing.assert_array_equal(got.first_pit, pit)
  assert got.first_pit.dtype == jnp.int32


def test_step_advantages_golden_and_masking():
  # Q̂_{−1} = 0.4, Q̂ = [0.5, 0.2, 0.6, 0.2]: A = [0.1, −0.3, 0.4, −0.4]; the lowest
  # Q̂ = 0.2 occurs first at step 1. With only the first step valid: A = [0.1, 0, 0, 0], pit 0.
  values = np.array([[0.5, 0.2, 0.6, 0.2], [0.5, 0.2, 0.6, 0.2]], np.float32)
  initial = np.array([0.4, 0.4], np.float32)
  where = np.array([[True] * 4, [True, False, False, False]])
  got = _step_adv(values, initial, where)
  _close(got.advantages, [[0.1, -0.3, 0.4, -0.4], [0.1, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(got.first_pit, [1, 0])
  filled = np.where(where, values, np.float32(np.nan))
  again = _step_adv(filled, initial, where)
  np.testing.assert_array_equal(again.advantages, got.advantages)
  np.testing.assert_array_equal(again.first_pit, got.first_pit)
  none = _step_adv(values, initial, np.zeros_like(where))
  np.testing.assert_array_equal(none.advantages, 0.0)
  np.testing.assert_array_equal(none.first_pit, [-1, -1])


def test_step_advantages_bad_inputs():
  with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
    step_advantages(jnp.zeros((2, 4)), initial_values=jnp.zeros(3))
  with pytest.raises(ValueError, match=r"rank 2.*\(4,\)"):
    step_advantages(jnp.zeros(4), initial_values=jnp.zeros(1))
  with pytest.raises(TypeError, match="bool"):
    step_advantages(jnp.zeros((2, 4)), initial_values=jnp.zeros(2), where=jnp.ones((2, 4)))


def test_prefix_mask_matches_reference_and_golden():
  where = np.array([[True, True, True, True, False], [False, True, True, True, True]])
  ids = np.array([[0, 0, 1, 2, 2], [0, 0, 1, 1, 2]], np.int32)
  got = jax.jit(prefix_mask)(where, ids, np.array([1, -1], np.int32))
  # Row 0 keeps steps 0..1 of its response; row 1 (last_step −1) keeps nothing.
  np.testing.assert_array_equal(
    got, [[True, True, True, False, False], [False, False, False, False, False]]
  )
  rng = np.random.default_rng(11)
  where = rng.random((6, 9)) < 0.8
  ids = np.sort(rng.integers(0, 4, (6, 9)), axis=1).astype(np.int32)
  last = rng.integers(-1, 4, 6).astype(np.int32)
  want = np.zeros_like(where)
  for b in range(6):
    for t in range(9):
      want[b, t] = where[b, t] and ids[b, t] <= last[b]
  np.testing.assert_array_equal(jax.jit(prefix_mask)(where, ids, last), want)


def test_prefix_mask_bad_inputs():
  where, ids = jnp.ones((2, 3), bool), jnp.zeros((2, 3), jnp.int32)
  with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
    prefix_mask(where, ids, jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
    prefix_mask(where, jnp.zeros((2, 4), jnp.int32), jnp.zeros(2, jnp.int32))
  with pytest.raises(TypeError, match="bool"):
    prefix_mask(jnp.ones((2, 3)), ids, jnp.zeros(2, jnp.int32))


def test_first_pit_pipeline_gives_dpo_rejected_logps():
  # Per-step negatives end to end: Q̂ → first pit → prefix mask → summed log-probs.
  values = np.array([[0.6, 0.3, 0.1, 0.4]], np.float32)  # Pit at step 2.
  adv = _step_adv(values, np.array([0.5], np.float32), np.ones((1, 4), bool))
  np.testing.assert_array_equal(adv.first_pit, [2])
  token_logps = np.array([[-0.5, -1.0, -1.5, -2.0, -2.5, -3.0]], np.float32)
  ids = np.array([[0, 0, 1, 2, 3, 3]], np.int32)
  where = np.ones((1, 6), bool)
  mask = prefix_mask(where, ids, adv.first_pit)
  rejected = jnp.sum(jnp.where(mask, token_logps, 0), axis=1)
  # Steps 0..2 = tokens 0..3: −0.5 − 1 − 1.5 − 2 = −5.
  np.testing.assert_allclose(rejected, [-5.0], rtol=1e-7)
  steps = _step_logps(token_logps, ids, where, 4)
  np.testing.assert_allclose(jnp.sum(steps[:, :3], axis=1), rejected, rtol=1e-7)


_awr = jax.jit(
  lambda lp, a, w, beta, max_weight: advantage_weighted_steps(
    lp, a, where=w, beta=beta, max_weight=max_weight
  ),
  static_argnums=(3, 4),
)
_awr_grad = jax.jit(
  jax.grad(
    lambda lp, a, w, beta, max_weight: jnp.sum(
      advantage_weighted_steps(lp, a, where=w, beta=beta, max_weight=max_weight)
    ),
    argnums=(0, 1),
  ),
  static_argnums=(3, 4),
)


@pytest.mark.parametrize("shape", [(1, 2), (5, 4), (8, 6)])
@pytest.mark.parametrize("beta,max_weight", [(0.5, 3.0), (2.0, 100.0)])
def test_advantage_weighted_steps_matches_reference(shape, beta, max_weight):
  rng = np.random.default_rng(shape[0])
  logps = -rng.exponential(2.0, shape).astype(np.float32)
  adv = rng.uniform(-1, 1, shape).astype(np.float32)
  where = rng.random(shape) < 0.8
  got = _awr(logps, adv, where, beta, max_weight)
  assert got.shape == shape[:1]
  _close(got, ref_advantage_weighted(logps, adv, where, beta, max_weight))
  g_lp, g_adv = _awr_grad(logps, adv, where, beta, max_weight)
  want = np.where(where, -np.minimum(np.exp(adv.astype(np.float64) / beta), max_weight), 0)
  _close(g_lp, want)
  np.testing.assert_array_equal(g_adv, 0.0)  # The weights are constants.


def test_advantage_weighted_steps_golden_masking_and_extremes():
  # β = 0.5, A = [0, 1], w_max = 5: weights [e^0, min(e^2, 5)] = [1, 5];
  # ℓ = −(1·(−1) + 5·(−2)) = 11.
  logps = np.array([[-1.0, -2.0, -7.0]], np.float32)
  adv = np.array([[0.0, 1.0, 3.0]], np.float32)
  where = np.array([[True, True, False]])
  np.testing.assert_allclose(_awr(logps, adv, where, 0.5, 5.0), [11.0], rtol=1e-6)
  for fill in (np.nan, np.inf, 1e30):
    lp = np.where(where, logps, np.float32(fill))
    a = np.where(where, adv, np.float32(fill))
    np.testing.assert_array_equal(_awr(lp, a, where, 0.5, 5.0), _awr(logps, adv, where, 0.5, 5.0))
    np.testing.assert_array_equal(_awr_grad(lp, a, where, 0.5, 5.0)[0], [[-1.0, -5.0, 0.0]])
  # Huge advantages saturate at w_max without overflow.
  big = np.array([[1e4, -1e4, 1e4]], np.float32)
  np.testing.assert_allclose(_awr(logps, big, where, 0.5, 5.0), [5.0], rtol=1e-6)
  assert np.all(np.isfinite(_awr_grad(logps, big, where, 0.5, 5.0)[0]))


def test_advantage_weighted_steps_bad_inputs():
  lp = jnp.zeros((2, 3))
  w = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
    advantage_weighted_steps(lp, jnp.zeros((2, 4)), where=w, beta=1.0, max_weight=1.0)
  with pytest.raises(ValueError, match="beta"):
    advantage_weighted_steps(lp, lp, where=w, beta=0.0, max_weight=1.0)
  with pytest.raises(ValueError, match="max_weight"):
    advantage_weighted_steps(lp, lp, where=w, beta=1.0, max_weight=0.0)
  with pytest.raises(TypeError, match="bool"):
    advantage_weighted_steps(lp, lp, where=jnp.ones((2, 3)), beta=1.0, max_weight=1.0)
