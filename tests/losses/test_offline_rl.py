"""Tests for irl_jax/losses/offline_rl.py against float64 NumPy references written
from the equations of IQL, AWR/AWAC, TD3+BC and IPL (see the module docstring)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses.offline_rl import (
  AWRExtras,
  IPLExtras,
  awac_actor_loss,
  awr_actor_loss,
  expectile_loss,
  ipl_implied_rewards,
  ipl_preference_loss,
  ipl_regulariser,
  iql_q_loss,
  iql_value_loss,
  td3_bc_actor_loss,
)

# --- float64 NumPy references, written from the equations -----------------------------------


def ref_expectile(u, tau):
  """|τ − 1(u < 0)| · u²."""
  u = np.asarray(u, np.float64)
  return np.abs(tau - (u < 0).astype(np.float64)) * u * u


def ref_iql_value(q, v, tau, mask):
  """Per transition: u = min_i Q̄_i − V, |τ − 1(u<0)| u²; 0 where masked."""
  q = np.asarray(q, np.float64).reshape(-1, len(v))
  out = np.zeros(len(v))
  for b in range(len(v)):
    if mask[b]:
      u = min(q[:, b]) - float(v[b])
      out[b] = (tau if u >= 0 else 1 - tau) * u**2
  return out


def ref_iql_q(q, r, d, v, mask):
  """Per transition: Σ_i (r + d·v − Q_i)²; 0 where masked."""
  q = np.asarray(q, np.float64).reshape(-1, len(r))
  d = np.broadcast_to(np.asarray(d, np.float64), (len(r),))
  out = np.zeros(len(r))
  for b in range(len(r)):
    if mask[b]:
      y = float(r[b]) + d[b] * float(v[b])
      out[b] = sum((y - float(qi)) ** 2 for qi in q[:, b])
  return out


def ref_awr(logp, q, v, beta, w_max, mask):
  """Per transition: −min(exp(β(min_i Q_i − V)), w_max) · log π; weights too."""
  q = np.asarray(q, np.float64).reshape(-1, len(v))
  loss, weights = np.zeros(len(v)), np.zeros(len(v))
  for b in range(len(v)):
    if mask[b]:
      adv = min(q[:, b]) - float(v[b])
      with np.errstate(over="ignore"):  # exp overflows to inf, then the clip applies
        weights[b] = min(np.exp(beta * adv), w_max)
      loss[b] = -weights[b] * float(logp[b])
  return loss, weights


def ref_td3_bc(q, pi, a, alpha, mask):
  """Per transition: −α/mean_valid|Q| · Q + Σ_a (π − a)²."""
  q, pi, a = (np.asarray(x, np.float64) for x in (q, pi, a))
  lam = alpha / np.mean(np.abs(q[mask]))
  out = np.zeros(len(q))
  for b in range(len(q)):
    if mask[b]:
      out[b] = -lam * q[b] + np.sum((pi[b] - a[b]) ** 2)
  return out


def ref_implied(q, v_next, d, clip):
  v = np.asarray(v_next, np.float64)
  if clip is not None:
    v = np.minimum(np.maximum(v, -clip), clip)
  return np.asarray(q, np.float64) - np.asarray(d, np.float64) * v


def ref_ipl_pref(r1, r2, y, mask):
  """−y log σ(l) − (1 − y) log σ(−l), l = Σ_k r²_k − Σ_k r¹_k; 0 where masked."""
  r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
  logits = r2.sum(-1) - r1.sum(-1)
  y = np.asarray(y, np.float64)
  log_sig = lambda x: -np.logaddexp(0.0, -x)
  loss = -y * log_sig(logits) - (1 - y) * log_sig(-logits)
  return np.where(mask, loss, 0.0), np.where(mask, logits, 0.0)


def ref_ipl_reg(pref, unl, weight, pref_mask=None, unl_mask=None):
  pref = np.asarray(pref, np.float64)
  p = np.mean(pref[pref_mask] ** 2) if pref_mask is not None else np.mean(pref**2)
  if unl is None:
    return weight * p
  unl = np.asarray(unl, np.float64)
  u = np.mean(unl[unl_mask] ** 2) if unl_mask is not None else np.mean(unl**2)
  return weight * (0.5 * p + 0.5 * u)


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


# Jitted once; each (shape, dtype, static kwargs) compiles once.
_expectile = jax.jit(expectile_loss, static_argnames="expectile")
_value = jax.jit(iql_value_loss, static_argnames=("expectile", "stop_target_gradient"))
_qloss = jax.jit(iql_q_loss, static_argnames="stop_target_gradient")
_awr = jax.jit(awr_actor_loss, static_argnames=("beta", "max_weight"))
_awac = jax.jit(awac_actor_loss, static_argnames=("beta", "max_weight"))
_td3 = jax.jit(td3_bc_actor_loss, static_argnames="alpha")
_implied = jax.jit(ipl_implied_rewards, static_argnames=("value_clip", "stop_target_gradient"))
_pref = jax.jit(ipl_preference_loss)
_reg = jax.jit(ipl_regulariser, static_argnames="weight")


def _sum_grad(f, argnums, **kw):
  """jit(grad(Σ f(*args, **kw)[0 or all])) w.r.t. `argnums`."""

  def total(*args):
    out = f(*args, **kw)
    return jnp.sum(out[0] if isinstance(out, tuple) else out)

  return jax.jit(jax.grad(total, argnums=argnums))


def _rand(rng, *shape, scale=2.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- expectile ----------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.5, 0.7, 0.9, 1.0])
def test_expectile_matches_reference(tau):
  u = _rand(np.random.default_rng(0), 3, 7)
  got = _expectile(u, expectile=tau)
  assert got.shape == (3, 7) and got.dtype == jnp.float32
  _close(got, ref_expectile(u, tau))


def test_expectile_golden():
  # τ = 0.7: u = +1 → 0.7·1 = 0.7; u = −1 → 0.3·1 = 0.3; u = −2 → 0.3·4 = 1.2; u = 0 → 0.
  got = _expectile(jnp.array([1.0, -1.0, -2.0, 0.0]), expectile=0.7)
  np.testing.assert_allclose(got, [0.7, 0.3, 1.2, 0.0], rtol=1e-6)
  # τ = 0.5 is half the squared error.
  u = _rand(np.random.default_rng(1), 11)
  _close(_expectile(u, expectile=0.5), 0.5 * np.asarray(u, np.float64) ** 2)


# --- IQL value and critic losses ----------------------------------------------------


@pytest.mark.parametrize("ensemble", [None, 1, 2, 5])
@pytest.mark.parametrize("masked", [False, True])
def test_iql_value_matches_reference(ensemble, masked):
  rng = np.random.default_rng(10 + (ensemble or 0))
  b = 9
  q = _rand(rng, b) if ensemble is None else _rand(rng, ensemble, b)
  v = _rand(rng, b)
  mask = rng.random(b) < 0.6 if masked else np.ones(b, bool)
  for tau in (0.7, 0.9):
    got = _value(q, v, expectile=tau, where=mask if masked else None)
    assert got.shape == (b,) and got.dtype == jnp.float32
    _close(got, ref_iql_value(q, v, tau, mask))


def test_iql_value_default_expectile_and_stop_gradient():
  rng = np.random.default_rng(2)
  q, v = _rand(rng, 2, 6), _rand(rng, 6)
  _close(_value(q, v), ref_iql_value(q, v, 0.7, np.ones(6, bool)))
  gq, gv = _sum_grad(iql_value_loss, (0, 1))(q, v)
  np.testing.assert_array_equal(gq, 0.0)
  assert np.any(np.asarray(gv) != 0)
  # dℓ/dv = −2|τ − 1(u<0)| u.
  u = np.min(q.astype(np.float64), axis=0) - v
  _close(gv, -2 * np.abs(0.7 - (u < 0)) * u)
  gq, _ = _sum_grad(iql_value_loss, (0, 1), stop_target_gradient=False)(q, v)
  assert np.count_nonzero(np.asarray(gq)) == 6  # only the minimum critic of each column
  _close(np.sum(gq, axis=0), -np.asarray(gv))


@pytest.mark.parametrize("ensemble", [None, 2, 4])
@pytest.mark.parametrize("scalar_discount", [False, True])
def test_iql_q_matches_reference(ensemble, scalar_discount):
  rng = np.random.default_rng(20 + (ensemble or 0))
  b = 8
  q = _rand(rng, b) if ensemble is None else _rand(rng, ensemble, b)
  r, v = _rand(rng, b), _rand(rng, b)
  d = np.float32(0.99) if scalar_discount else (0.99 * (rng.random(b) < 0.8)).astype(np.float32)
  mask = rng.random(b) < 0.7
  got = _qloss(q, r, d, v, where=mask)
  assert got.shape == (b,) and got.dtype == jnp.float32
  _close(got, ref_iql_q(q, r, d, v, mask))
  _close(_qloss(q, r, d, v), ref_iql_q(q, r, d, v, np.ones(b, bool)))


def test_iql_q_golden_and_target_gradient():
  # Q = [1, 2] (two critics), r = 1, γ(1−d) = 0.5, V(s') = 2 → y = 2: (2−1)² + (2−2)² = 1.
  q, r, d, v = jnp.array([[1.0], [2.0]]), jnp.array([1.0]), jnp.array([0.5]), jnp.array([2.0])
  np.testing.assert_allclose(_qloss(q, r, d, v), [1.0], rtol=1e-6)
  rng = np.random.default_rng(3)
  q, r, d, v = _rand(rng, 2, 5), _rand(rng, 5), np.full(5, 0.9, np.float32), _rand(rng, 5)
  gq, gv = _sum_grad(iql_q_loss, (0, 3))(q, r, d, v)
  np.testing.assert_array_equal(gv, 0.0)
  y = r.astype(np.float64) + 0.9 * v
  _close(gq, -2 * (y - q.astype(np.float64)))
  _, gv = _sum_grad(iql_q_loss, (0, 3), stop_target_gradient=False)(q, r, d, v)
  _close(gv, 0.9 * 2 * np.sum(y - q.astype(np.float64), axis=0))


# --- AWR / AWAC --------------------------------------------------------------------------


@pytest.mark.parametrize("ensemble", [None, 2])
@pytest.mark.parametrize("beta,max_weight", [(3.0, 100.0), (10.0, 100.0), (0.5, 2.0), (0.0, 1.0)])
def test_awr_matches_reference(ensemble, beta, max_weight):
  rng = np.random.default_rng(30 + (ensemble or 0))
  b = 10
  logp = -np.abs(_rand(rng, b))
  q = _rand(rng, b) if ensemble is None else _rand(rng, ensemble, b)
  v = _rand(rng, b)
  mask = rng.random(b) < 0.7
  loss, extras = _awr(logp, q, v, beta=beta, max_weight=max_weight, where=mask)
  assert isinstance(extras, AWRExtras)
  assert loss.shape == (b,) and loss.dtype == jnp.float32
  want_loss, want_w = ref_awr(logp, q, v, beta, max_weight, mask)
  _close(loss, want_loss)
  _close(extras.weights, want_w)
  adv = np.min(q.astype(np.float64).reshape(-1, b), axis=0) - v
  _close(extras.advantages, np.where(mask, adv, 0))
  # AWAC is the same computation with a policy-expectation baseline.
  loss2, extras2 = _awac(logp, q, v, beta=beta, max_weight=max_weight, where=mask)
  np.testing.assert_array_equal(loss2, loss)
  np.testing.assert_array_equal(extras2.weights, extras.weights)


def test_awr_weight_clip_and_golden():
  # β = 3: A = 0 → w = 1; A = ln(2)/3 → w = 2; A = 10 → exp(30) clipped to 100; A = −∞-ish → 0.
  logp = jnp.array([-1.0, -1.0, -2.0, -1.0])
  v = jnp.zeros(4)
  q = jnp.array([0.0, np.log(2.0) / 3, 10.0, -1e4])
  loss, extras = _awr(logp, q, v, beta=3.0)
  np.testing.assert_allclose(extras.weights, [1.0, 2.0, 100.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(loss, [1.0, 2.0, 200.0, 0.0], rtol=1e-6)
  _, extras = _awr(logp, q, v, beta=3.0, max_weight=1.5)
  np.testing.assert_allclose(extras.weights, [1.0, 1.5, 1.5, 0.0], rtol=1e-6)
  assert np.all(np.asarray(extras.weights) <= 1.5)


def test_awr_weight_is_stop_gradient():
  rng = np.random.default_rng(4)
  logp, q, v = -np.abs(_rand(rng, 6)), _rand(rng, 2, 6), _rand(rng, 6)
  for f in (awr_actor_loss, awac_actor_loss):
    g_logp, gq, gv = _sum_grad(f, (0, 1, 2), beta=3.0)(logp, q, v)
    np.testing.assert_array_equal(gq, 0.0)
    np.testing.assert_array_equal(gv, 0.0)
    _, w = ref_awr(logp, q, v, 3.0, 100.0, np.ones(6, bool))
    _close(g_logp, -w)


# --- TD3+BC ------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.5, 0.0, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_td3_bc_matches_reference(alpha, masked):
  rng = np.random.default_rng(40)
  b, a = 12, 3
  q = _rand(rng, b, scale=50.0)
  pi, act = np.tanh(_rand(rng, b, a)), np.tanh(_rand(rng, b, a))
  mask = rng.random(b) < 0.6 if masked else np.ones(b, bool)
  got = _td3(q, pi, act, alpha=alpha, where=mask if masked else None)
  assert got.shape == (b,) and got.dtype == jnp.float32
  _close(got, ref_td3_bc(q, pi, act, alpha, mask))


def test_td3_bc_golden_default_alpha_and_normaliser_gradient():
  # Q = [1, −3], mean|Q| = 2 → λ = 2.5/2 = 1.25; BC: ‖[1, 0]‖² = 1, ‖[0, 2]‖² = 4.
  # ℓ = [−1.25 + 1, 3.75 + 4] = [−0.25, 7.75].
  q = jnp.array([1.0, -3.0])
  pi = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  got = _td3(q, pi, jnp.zeros((2, 2)))
  np.testing.assert_allclose(got, [-0.25, 7.75], rtol=1e-6)
  # Normaliser is a stop-gradient: ∂ℓ/∂Q = −λ exactly, masked entries 0.
  rng = np.random.default_rng(5)
  q, pi, act = _rand(rng, 7), _rand(rng, 7, 2), _rand(rng, 7, 2)
  mask = np.array([1, 1, 0, 1, 0, 1, 1], bool)
  gq, gpi, gact = _sum_grad(td3_bc_actor_loss, (0, 1, 2), where=mask)(q, pi, act)
  lam = 2.5 / np.mean(np.abs(q[mask].astype(np.float64)))
  _close(gq, np.where(mask, -lam, 0.0))
  _close(gpi, np.where(mask[:, None], 2 * (pi.astype(np.float64) - act), 0.0))
  _close(gact, -np.asarray(gpi))


def test_td3_bc_zero_q_is_finite():
  got = _td3(jnp.zeros(3), jnp.ones((3, 2)), jnp.zeros((3, 2)))
  np.testing.assert_allclose(got, [2.0, 2.0, 2.0])
  g = _sum_grad(td3_bc_actor_loss, 0)(jnp.zeros(3), jnp.ones((3, 2)), jnp.zeros((3, 2)))
  assert np.all(np.isfinite(g))


# --- IPL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [None, 1.0, 40.0])
@pytest.mark.parametrize("v_shape", ["same", "shared"])
def test_ipl_implied_rewards_matches_reference(clip, v_shape):
  rng = np.random.default_rng(50)
  q = _rand(rng, 2, 4, 5)
  v = _rand(rng, 2, 4, 5) if v_shape == "same" else _rand(rng, 4, 5)
  d = np.float32(0.99)
  got = _implied(q, v, d, value_clip=clip)
  assert got.shape == q.shape and got.dtype == jnp.float32
  _close(got, ref_implied(q, v, 0.99, clip))
  d_arr = (0.99 * (rng.random((4, 5)) < 0.9)).astype(np.float32)
  _close(_implied(q, v, d_arr, value_clip=clip), ref_implied(q, v, d_arr, clip))


def test_ipl_value_clip_and_target_gradient():
  # λ = 0.5, γ = 0.99 → c = 1/(0.5·0.01) = 200: V = 500 is clipped to 200.
  clip = 1 / (0.5 * (1 - 0.99))
  q, v = jnp.array([1.0, 1.0, 1.0]), jnp.array([500.0, -500.0, 3.0])
  got = _implied(q, v, 0.99, value_clip=clip)
  np.testing.assert_allclose(got, [1 - 0.99 * 200, 1 + 0.99 * 200, 1 - 0.99 * 3], rtol=1e-5)
  gq, gv = _sum_grad(ipl_implied_rewards, (0, 1), value_clip=clip)(q, v, 0.99)
  np.testing.assert_array_equal(gq, 1.0)
  np.testing.assert_array_equal(gv, 0.0)
  _, gv = _sum_grad(ipl_implied_rewards, (0, 1), value_clip=clip, stop_target_gradient=False)(
      q, v, 0.99
  )
  np.testing.assert_allclose(gv, [0.0, 0.0, -0.99], rtol=1e-6)


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("soft", [False, True])
def test_ipl_preference_matches_reference(lead, soft):
  rng = np.random.default_rng(60 + len(lead))
  b, k = 8, 6
  r1, r2 = _rand(rng, *lead, b, k, scale=0.5), _rand(rng, *lead, b, k, scale=0.5)
  y = rng.random(b).astype(np.float32) if soft else (rng.random(b) < 0.5).astype(np.float32)
  mask = rng.random(b) < 0.7
  loss, extras = _pref(r1, r2, y, where=mask)
  assert isinstance(extras, IPLExtras)
  assert loss.shape == (*lead, b) and loss.dtype == jnp.float32
  want, logits = ref_ipl_pref(r1, r2, y, mask)
  _close(loss, want)
  _close(extras.logits, logits)
  _close(extras.returns_2 - extras.returns_1, logits)
  full, _ = _pref(r1, r2, y)
  _close(full, ref_ipl_pref(r1, r2, y, np.ones(b, bool))[0])


def test_ipl_preference_golden_and_symmetry():
  # Equal returns → logit 0 → log 2 for any label; returns 1 vs 0 with y = 1 → log(1 + e^{−1}).
  r1 = jnp.array([[0.5, 0.5], [0.0, 0.0]])
  r2 = jnp.array([[1.0, 0.0], [0.25, 0.75]])
  loss, extras = _pref(r1, r2, jnp.array([0.3, 1.0]))
  np.testing.assert_allclose(loss, [np.log(2.0), 0.31326168751822286], rtol=1e-6)
  np.testing.assert_allclose(extras.logits, [0.0, 1.0], atol=1e-7)
  # Swapping segments and flipping labels leaves the loss unchanged.
  rng = np.random.default_rng(6)
  r1, r2, y = _rand(rng, 2, 7, 4), _rand(rng, 2, 7, 4), rng.random(7).astype(np.float32)
  a, ea = _pref(r1, r2, y)
  b, eb = _pref(r2, r1, 1 - y)
  _close(a, b)
  _close(ea.logits, -np.asarray(eb.logits))
  # bool labels are accepted.
  hard = rng.random(7) < 0.5
  _close(_pref(r1, r2, hard)[0], _pref(r1, r2, hard.astype(np.float32))[0])


def test_ipl_preference_gradient_is_sigmoid_minus_label():
  rng = np.random.default_rng(7)
  r1, r2, y = _rand(rng, 5, 3), _rand(rng, 5, 3), rng.random(5).astype(np.float32)
  g1, g2 = _sum_grad(ipl_preference_loss, (0, 1))(r1, r2, y)
  logits = r2.astype(np.float64).sum(-1) - r1.sum(-1)
  want = 1 / (1 + np.exp(-logits)) - y
  _close(g2, np.repeat(want[:, None], 3, axis=1))
  _close(g1, -np.repeat(want[:, None], 3, axis=1))


def test_ipl_regulariser_matches_reference():
  rng = np.random.default_rng(8)
  pref, unl = _rand(rng, 2, 3, 5, 4), _rand(rng, 17)
  got = _reg(pref, unl, weight=0.5)
  assert got.shape == () and got.dtype == jnp.float32
  _close(got, ref_ipl_reg(pref, unl, 0.5))
  _close(_reg(pref, None, weight=0.5), ref_ipl_reg(pref, None, 0.5))
  pm, um = rng.random(pref.shape) < 0.6, rng.random(17) < 0.5
  got = _reg(pref, unl, weight=2.0, pref_where=pm, unlabelled_where=um)
  _close(got, ref_ipl_reg(pref, unl, 2.0, pm, um))
  # Golden: pref r̂ = [1, 3] → E = 5; unlabelled r̂ = [2] → 4; λ = 0.1 → 0.1·(2.5 + 2) = 0.45.
  np.testing.assert_allclose(_reg(jnp.array([1.0, 3.0]), jnp.array([2.0]), weight=0.1), 0.45,
                             rtol=1e-6)
  # An empty set gives its half to the other: the same as no unlabelled data (E = 5).
  np.testing.assert_allclose(
      _reg(jnp.array([1.0, 3.0]), jnp.array([2.0]), weight=1.0,
           unlabelled_where=jnp.array([False])), 5.0, rtol=1e-6)
  # Both sets empty: 0.
  np.testing.assert_allclose(
      _reg(jnp.array([1.0, 3.0]), jnp.array([2.0]), weight=1.0,
           pref_where=jnp.array([False, False]), unlabelled_where=jnp.array([False])), 0.0)


def test_ipl_preference_bad_labels():
  r = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match=r"labels.*\[0, 1\]"):
    ipl_preference_loss(r, r, jnp.array([0.0, 1.5, 0.5]))
  with pytest.raises(ValueError, match=r"labels.*\[0, 1\]"):
    ipl_preference_loss(r, r, jnp.array([0.0, np.nan, 0.5]))
  # An out-of-range label in a masked slot does not matter.
  loss, _ = ipl_preference_loss(r, r, jnp.array([0.0, 7.0, 0.5]),
                                where=jnp.array([True, False, True]))
  np.testing.assert_allclose(loss, [np.log(2.0), 0.0, np.log(2.0)], rtol=1e-6)


# --- masking invariance (masked slots never matter, masked outputs are 0) ---------------


def test_masking_invariance():
  rng = np.random.default_rng(9)
  b = 8
  mask = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
  masked_idx = np.flatnonzero(~mask)

  def put(x, axis, fill):
    """`x` with its masked batch slots (along `axis`) overwritten by `fill`."""
    m = np.expand_dims(mask, tuple(i for i in range(x.ndim) if i != axis % x.ndim))
    return np.where(m, x, np.float32(fill)).astype(np.float32)

  q2, v, r, logp = _rand(rng, 2, b), _rand(rng, b), _rand(rng, b), -np.abs(_rand(rng, b))
  d = np.full(b, 0.9, np.float32)
  pi, act = _rand(rng, b, 3), _rand(rng, b, 3)
  r1, r2 = _rand(rng, b, 4), _rand(rng, b, 4)
  y = rng.random(b).astype(np.float32)

  # (function, args, batch axis of each arg, number of leading args differentiated, kwargs)
  cases = [
    (iql_value_loss, (q2, v), (-1, 0), 2, {}),
    (iql_q_loss, (q2, r, d, v), (-1, 0, 0, 0), 4, {"stop_target_gradient": False}),
    (awr_actor_loss, (logp, q2, v), (0, -1, 0), 1, {"beta": 3.0}),
    (td3_bc_actor_loss, (v, pi, act), (0, 0, 0), 3, {}),
    (ipl_preference_loss, (r1, r2, y), (0, 0, 0), 2, {}),
  ]
  for f, clean, axes, nargs, kw in cases:
    f_masked = jax.jit(functools.partial(f, where=mask, **kw))
    grad = _sum_grad(f, tuple(range(nargs)), where=mask, **kw)
    out_c, grads_c = jax.tree_util.tree_leaves(f_masked(*clean)), grad(*clean)
    for leaf in out_c:
      np.testing.assert_array_equal(np.asarray(leaf)[..., ~mask], 0.0, err_msg=f.__name__)
    for fill in (np.nan, np.inf, -np.inf, 1e30):
      msg = f"{f.__name__} fill={fill}"
      dirty = tuple(put(x, ax, fill) for x, ax in zip(clean, axes, strict=True))
      for leaf_c, leaf_d in zip(out_c, jax.tree_util.tree_leaves(f_masked(*dirty)), strict=True):
        np.testing.assert_array_equal(leaf_d, leaf_c, err_msg=msg)
      for g_c, g_d, ax in zip(grads_c, grad(*dirty), axes, strict=False):
        np.testing.assert_array_equal(g_d, g_c, err_msg=msg)
        np.testing.assert_array_equal(np.take(np.asarray(g_d), masked_idx, axis=ax), 0.0,
                                      err_msg=msg)
  # The regulariser ignores masked entries too.
  pm = rng.random((b, 4)) < 0.5
  for fill in (np.nan, np.inf, 1e30):
    dirty = np.where(pm, r1, np.float32(fill)).astype(np.float32)
    np.testing.assert_array_equal(_reg(dirty, None, weight=1.0, pref_where=pm),
                                  _reg(r1, None, weight=1.0, pref_where=pm))


# --- extreme inputs, bfloat16, float64 gradients, jit -----------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_extreme_inputs_finite_and_float32(dtype):
  big = jnp.array([1e4, -1e4, 1e4, -1e4, 0.0, 3.0], dtype)
  other = jnp.array([-1e4, 1e4, 1e4, 0.0, -1e4, 3.0], dtype)
  up = lambda x: np.asarray(x, np.float32)
  mask = np.ones(6, bool)
  outs = {
    "expectile": (_expectile(big, expectile=0.9), ref_expectile(up(big), 0.9)),
    "value": (_value(jnp.stack([big, other]), other),
              ref_iql_value(np.stack([up(big), up(other)]), up(other), 0.7, mask)),
    "q": (_qloss(big, other, jnp.asarray(0.99, dtype), big),
          ref_iql_q(up(big), up(other), up(jnp.asarray(0.99, dtype)), up(big), mask)),
    "awr": (_awr(-jnp.abs(big), big, other, beta=10.0)[0],
            ref_awr(-np.abs(up(big)), up(big), up(other), 10.0, 100.0, mask)[0]),
    "td3": (_td3(big, jnp.stack([big, other], 1), jnp.stack([other, big], 1)),
            ref_td3_bc(up(big), np.stack([up(big), up(other)], 1),
                       np.stack([up(other), up(big)], 1), 2.5, mask)),
    "implied": (_implied(big, other, jnp.asarray(0.99, dtype), value_clip=100.0),
                ref_implied(up(big), up(other), up(jnp.asarray(0.99, dtype)), 100.0)),
    "pref": (_pref(big[:, None], other[:, None], jnp.full(6, 0.5, dtype))[0],
             ref_ipl_pref(up(big)[:, None], up(other)[:, None], np.full(6, 0.5), mask)[0]),
  }
  for name, (got, want) in outs.items():
    assert got.dtype == jnp.float32, name
    assert np.all(np.isfinite(np.asarray(got))), name
    _close(got, want, tol=1e-5)
  grads = [
    _sum_grad(iql_value_loss, (0, 1))(jnp.stack([big, other]), other),
    _sum_grad(awr_actor_loss, 0, beta=10.0)(-jnp.abs(big), big, other),
    _sum_grad(td3_bc_actor_loss, (0, 1))(big, jnp.stack([big, other], 1),
                                         jnp.stack([other, big], 1)),
    _sum_grad(ipl_preference_loss, (0, 1))(big[:, None], other[:, None], jnp.full(6, 0.5)),
  ]
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
  assert _reg(big, other, weight=1.0).dtype == jnp.float32


def test_gradients_float64():
  rng = np.random.default_rng(11)
  q2, v, r, logp = rng.standard_normal((2, 5)), *rng.standard_normal((3, 5))
  d = np.full(5, 0.9)
  pi, act = rng.standard_normal((2, 5, 2))
  r1, r2 = rng.standard_normal((2, 2, 5, 3))
  y = rng.random(5)
  mask = np.array([1, 1, 0, 1, 1], bool)
  rev = functools.partial(check_grads, order=1, modes=("rev",))
  with jax.enable_x64(True):
    assert expectile_loss(jnp.asarray(v), expectile=0.7).dtype == jnp.float64
    assert iql_value_loss(q2, v).dtype == jnp.float64
    assert ipl_preference_loss(r1, r2, y)[0].dtype == jnp.float64
    rev(lambda u: expectile_loss(u, expectile=0.7), (v,))
    rev(lambda q, v: iql_value_loss(q, v, where=mask, stop_target_gradient=False), (q2, v))
    rev(lambda v: iql_value_loss(q2, v, where=mask), (v,))
    rev(lambda q, r, v: iql_q_loss(q, r, d, v, stop_target_gradient=False), (q2, r, v))
    rev(lambda q, r: iql_q_loss(q, r, d, v, where=mask), (q2, r))
    rev(lambda lp: awr_actor_loss(lp, q2, v, beta=3.0, where=mask)[0], (logp,))
    rev(lambda p: td3_bc_actor_loss(v, p, act, where=mask), (pi,))
    rev(lambda q, vn: ipl_implied_rewards(q, vn, 0.9, value_clip=10.0,
                                          stop_target_gradient=False), (q2, v))
    rev(lambda a, b: ipl_preference_loss(a, b, y, where=mask)[0], (r1, r2))
    rev(lambda a, b: ipl_regulariser(a, b, weight=0.3), (r1, r2))
  assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak


def test_bad_shapes_raise():
  z = jnp.zeros
  cases = [
    (lambda: iql_value_loss(z(5), z(4)), r"iql_value_loss.*q_target.*\(5,\)"),
    (lambda: iql_value_loss(z((2, 3, 4)), z(4)), r"q_target.*\(2, 3, 4\)"),
    (lambda: iql_value_loss(z(4), z((4, 1))), r"v_tm1.*rank 1"),
    (lambda: iql_value_loss(z(4), z(4), where=jnp.ones(3, bool)), r"where.*\(3,\)"),
    (lambda: iql_q_loss(z(4), z(4), z(3), z(4)), r"iql_q_loss.*discount_t.*\(3,\)"),
    (lambda: iql_q_loss(z(4), z(4), 0.9, z(5)), r"r_t\[4\].*v_t\[5\]"),
    (lambda: iql_q_loss(z((2, 5)), z(4), 0.9, z(4)), r"q_tm1.*\(2, 5\)"),
    (lambda: awr_actor_loss(z(4), z(4), z(3), beta=1.0), r"awr_actor_loss.*`v`.*\(3,\)"),
    (lambda: awac_actor_loss(z(4), z(3), z(4), beta=1.0), r"awac_actor_loss.*q_tm1.*\(3,\)"),
    (lambda: awr_actor_loss(z(4), z(4), z(4), beta=-1.0), r"beta"),
    (lambda: awr_actor_loss(z(4), z(4), z(4), beta=1.0, max_weight=0.0), r"max_weight"),
    (lambda: td3_bc_actor_loss(z(4), z((4, 2)), z((4, 3))), r"policy_actions.*data_actions"),
    (lambda: td3_bc_actor_loss(z(4), z((5, 2)), z((5, 2))), r"policy_actions.*\(5, 2\)"),
    (lambda: td3_bc_actor_loss(z(4), z(4), z(4)), r"policy_actions.*rank 2"),
    (lambda: ipl_implied_rewards(z((2, 3)), z((3, 3)), 0.9), r"v_next.*\(3, 3\)"),
    (lambda: ipl_implied_rewards(z((2, 3)), z(3), z(2)), r"discount_t.*\(2,\)"),
    (lambda: ipl_implied_rewards(z(3), z(3), 0.9, value_clip=0.0), r"value_clip"),
    (lambda: ipl_preference_loss(z((3, 2)), z((3, 4)), z(3)), r"rewards_1.*rewards_2"),
    (lambda: ipl_preference_loss(z((3, 2)), z((3, 2)), z(4)), r"labels.*\(4,\)"),
    (lambda: ipl_preference_loss(z(3), z(3), z(3)), r"rewards_1.*\[\.\.\., B, K\]"),
    (lambda: ipl_regulariser(z(3), z(2), weight=1.0, pref_where=jnp.ones(2, bool)),
     r"pref_where.*\(2,\)"),
    (lambda: ipl_regulariser(z(3), weight=-1.0), r"weight"),
    (lambda: expectile_loss(z(3), expectile=1.5), r"expectile"),
  ]
  for fn, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      fn()
  with pytest.raises(TypeError, match="floating"):
    iql_value_loss(jnp.zeros(3, jnp.int32), jnp.zeros(3))


def test_python_float_discount_keeps_float32_under_x64():
  with jax.enable_x64(True):
    q = jnp.ones(3, jnp.float32)
    assert iql_q_loss(q, q, 0.99, q).dtype == jnp.float32
    assert ipl_implied_rewards(q, q, 0.99).dtype == jnp.float32
