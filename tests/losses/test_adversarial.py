"""Tests for irl_jax/losses/adversarial.py against float64 NumPy references written
from the GAIL / AIRL / gradient-penalty equations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses.adversarial import (
  DiscriminatorExtras,
  DiscriminatorLoss,
  airl_discriminator_loss,
  airl_logits,
  airl_potential_shaping,
  airl_reward,
  gail_discriminator_loss,
  gail_reward,
  gradient_penalty,
)

# --- float64 NumPy references, written from the equations ----------------------------------


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def ref_gail_terms(expert_logits, policy_logits):
  """−log D on expert, −log(1 − D) on policy, D = σ(l) (moderate logits only)."""
  de, dp = _sigmoid(expert_logits), _sigmoid(policy_logits)
  return -np.log(de), -np.log(1.0 - dp)


def ref_gail_terms_stable(expert_logits, policy_logits):
  """The same as log(1 + e^{∓l}), valid for any logit."""
  return (
      np.logaddexp(0.0, -np.asarray(expert_logits, np.float64)),
      np.logaddexp(0.0, np.asarray(policy_logits, np.float64)),
  )


def ref_airl_d(f, log_pi):
  """D = exp f / (exp f + π(a|s)), straight from the definition."""
  f = np.asarray(f, np.float64)
  pi = np.exp(np.asarray(log_pi, np.float64))
  return np.exp(f) / (np.exp(f) + pi)


def ref_shaping(g, h_s, h_next, discount_t):
  """f = g + γ_t·h(s') − h(s), with no bootstrap where γ_t = 0."""
  g, h_s, h_next = (np.asarray(a, np.float64) for a in (g, h_s, h_next))
  d = np.broadcast_to(np.asarray(discount_t, np.float64), g.shape)
  return g + np.where(d != 0, d * np.where(d != 0, h_next, 0.0), 0.0) - h_s


def _mlp_logit(x, w, v):
  """l(x) = Σ_j v_j tanh((x W)_j), one example at a time, float64."""
  return float(np.tanh(np.asarray(x, np.float64) @ w) @ v)


def ref_gradient_penalty(inputs_e, inputs_p, eps, logit_fn, target):
  """(‖∇l(x̂)‖₂ − c)², x̂ = εx_E + (1 − ε)x_π, ∇ by central finite differences (float64).

  `inputs_e`/`inputs_p` are lists of `[B, ...]` arrays; `logit_fn(list of per-example
  arrays) -> float`.
  """
  inputs_e = [np.asarray(a, np.float64) for a in inputs_e]
  inputs_p = [np.asarray(a, np.float64) for a in inputs_p]
  batch = inputs_e[0].shape[0]
  out = np.zeros(batch)
  h = 1e-6
  for b in range(batch):
    pairs = zip(inputs_e, inputs_p, strict=True)
    x_hat = [eps[b] * xe[b] + (1.0 - eps[b]) * xp[b] for xe, xp in pairs]
    sq = 0.0
    for k, leaf in enumerate(x_hat):
      for idx in np.ndindex(leaf.shape):
        plus = [a.copy() for a in x_hat]
        minus = [a.copy() for a in x_hat]
        plus[k][idx] += h
        minus[k][idx] -= h
        sq += ((logit_fn(plus) - logit_fn(minus)) / (2 * h)) ** 2
    out[b] = (np.sqrt(sq) - target) ** 2
  return out


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


# Jitted once at module level.
_gail = jax.jit(gail_discriminator_loss)
_gail_reward = jax.jit(gail_reward)
_airl = jax.jit(airl_discriminator_loss)
_airl_logits = jax.jit(airl_logits)
_airl_reward = jax.jit(airl_reward)
_shaping = jax.jit(airl_potential_shaping)


def _gail_total(le, lp, we=None, wp=None):
  losses, _ = gail_discriminator_loss(le, lp, expert_where=we, policy_where=wp)
  return jnp.sum(losses.expert) + jnp.sum(losses.policy)


def _airl_total(fe, lpe, fp, lpp, we=None, wp=None):
  losses, _ = airl_discriminator_loss(fe, lpe, fp, lpp, expert_where=we, policy_where=wp)
  return jnp.sum(losses.expert) + jnp.sum(losses.policy)


_gail_grad = jax.jit(jax.grad(_gail_total, argnums=(0, 1)))
_airl_grad = jax.jit(jax.grad(_airl_total, argnums=(0, 1, 2, 3)))
_shaping_grad = jax.jit(
    jax.grad(lambda g, hs, hn, d, w=None: jnp.sum(airl_potential_shaping(g, hs, hn, d, where=w)),
             argnums=(0, 1, 2))
)


def _rand(rng, *shape, scale=2.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- GAIL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(1, 1), (5, 7), (16, 3)])
@pytest.mark.parametrize("masked", [False, True])
def test_gail_discriminator_loss_matches_reference(sizes, masked):
  be, bp = sizes
  rng = np.random.default_rng(be * 10 + bp)
  le, lp = _rand(rng, be), _rand(rng, bp)
  we = rng.random(be) < 0.7 if masked else None
  wp = rng.random(bp) < 0.7 if masked else None
  losses, extras = _gail(le, lp, expert_where=we, policy_where=wp)
  assert isinstance(losses, DiscriminatorLoss) and isinstance(extras, DiscriminatorExtras)
  assert losses.expert.shape == (be,) and losses.policy.shape == (bp,)
  assert losses.expert.dtype == jnp.float32
  re, rp = ref_gail_terms(le, lp)
  me = np.ones(be, bool) if we is None else we
  mp = np.ones(bp, bool) if wp is None else wp
  _close(losses.expert, np.where(me, re, 0.0))
  _close(losses.policy, np.where(mp, rp, 0.0))
  np.testing.assert_array_equal(extras.expert_accuracy, np.where(me, le > 0, 0).astype(np.float32))
  np.testing.assert_array_equal(extras.policy_accuracy, np.where(mp, lp < 0, 0).astype(np.float32))
  _close(extras.expert_logits, np.where(me, le, 0.0))
  _close(extras.policy_logits, np.where(mp, lp, 0.0))


def test_gail_golden():
  # l = 0: D = 1/2, both terms log 2 = 0.6931471805599453; a tie counts as an error.
  # l = log 2: D = 2/3; expert −log(2/3) = 0.4054651081081644,
  #   policy −log(1 − 2/3) = log 3 = 1.0986122886681098.
  # l = −log 2: D = 1/3; expert log 3, policy −log(2/3).
  x = jnp.array([0.0, np.log(2.0), -np.log(2.0)])
  losses, extras = _gail(x, x)
  np.testing.assert_allclose(
      losses.expert, [0.6931471805599453, 0.4054651081081644, 1.0986122886681098], rtol=1e-6
  )
  np.testing.assert_allclose(
      losses.policy, [0.6931471805599453, 1.0986122886681098, 0.4054651081081644], rtol=1e-6
  )
  np.testing.assert_array_equal(extras.expert_accuracy, [0, 1, 0])
  np.testing.assert_array_equal(extras.policy_accuracy, [0, 0, 1])


def test_gail_reward_matches_reference_and_golden():
  rng = np.random.default_rng(0)
  x = _rand(rng, 9)
  got = _gail_reward(x)
  assert got.shape == (9,) and got.dtype == jnp.float32
  _close(got, -np.log(1.0 - _sigmoid(x)))
  # l = 0: −log(1/2) = log 2; l = log 2: −log(1/3) = log 3.
  np.testing.assert_allclose(
      _gail_reward(jnp.array([0.0, np.log(2.0)])), [0.6931471805599453, 1.0986122886681098],
      rtol=1e-6,
  )
  # The reward equals the policy-side BCE term.
  _close(got, _gail(x, x)[0].policy)


def test_gail_gradients_are_sigmoid():
  # ∂/∂l_E softplus(−l_E) = σ(l_E) − 1;  ∂/∂l_P softplus(l_P) = σ(l_P).
  rng = np.random.default_rng(1)
  le, lp = _rand(rng, 6), _rand(rng, 4)
  ge, gp = _gail_grad(le, lp)
  _close(ge, _sigmoid(le) - 1.0)
  _close(gp, _sigmoid(lp))


# --- AIRL ------------------------------------------------------------------------------------


def test_airl_golden_sign_convention():
  # f = 0, log π = log 0.5: D = e⁰/(e⁰ + 0.5) = 1/1.5 = 2/3, logit = log 2 = 0.6931471805599453.
  # Expert term −log(2/3) = 0.4054651081081644; policy term −log(1/3) = 1.0986122886681098.
  # The policy reward is the logit, log 2 (positive: the discriminator calls it expert-like).
  f = jnp.array([0.0])
  log_pi = jnp.array([np.log(0.5)])
  np.testing.assert_allclose(_airl_logits(f, log_pi), [0.6931471805599453], rtol=1e-6)
  np.testing.assert_allclose(_airl_reward(f, log_pi), [0.6931471805599453], rtol=1e-6)
  np.testing.assert_allclose(_sigmoid(_airl_logits(f, log_pi)), ref_airl_d(0.0, np.log(0.5)))
  losses, extras = _airl(f, log_pi, f, log_pi)
  np.testing.assert_allclose(losses.expert, [0.4054651081081644], rtol=1e-6)
  np.testing.assert_allclose(losses.policy, [1.0986122886681098], rtol=1e-6)
  np.testing.assert_array_equal(extras.expert_accuracy, [1.0])
  np.testing.assert_array_equal(extras.policy_accuracy, [0.0])


@pytest.mark.parametrize("sizes", [(1, 1), (6, 9)])
@pytest.mark.parametrize("masked", [False, True])
def test_airl_discriminator_loss_matches_reference(sizes, masked):
  be, bp = sizes
  rng = np.random.default_rng(be + 100 * bp)
  fe, fp = _rand(rng, be), _rand(rng, bp)
  lpe = -np.abs(_rand(rng, be)).astype(np.float32)
  lpp = -np.abs(_rand(rng, bp)).astype(np.float32)
  we = rng.random(be) < 0.7 if masked else None
  wp = rng.random(bp) < 0.7 if masked else None
  losses, extras = _airl(fe, lpe, fp, lpp, expert_where=we, policy_where=wp)
  me = np.ones(be, bool) if we is None else we
  mp = np.ones(bp, bool) if wp is None else wp
  de, dp = ref_airl_d(fe, lpe), ref_airl_d(fp, lpp)
  _close(losses.expert, np.where(me, -np.log(de), 0.0))
  _close(losses.policy, np.where(mp, -np.log(1.0 - dp), 0.0))
  np.testing.assert_array_equal(extras.expert_accuracy, np.where(me, de > 0.5, 0))
  np.testing.assert_array_equal(extras.policy_accuracy, np.where(mp, dp < 0.5, 0))
  # Reward = log D − log(1 − D) = f − log π.
  _close(_airl_reward(fp, lpp, where=wp), np.where(mp, np.log(dp) - np.log(1.0 - dp), 0.0))
  _close(extras.policy_logits, _airl_reward(fp, lpp, where=wp))
  # AIRL is GAIL's BCE on the AIRL logits.
  g_losses, g_extras = _gail(
      _airl_logits(fe, lpe), _airl_logits(fp, lpp), expert_where=we, policy_where=wp
  )
  _close(losses.expert, g_losses.expert, 1e-6)
  _close(losses.policy, g_losses.policy, 1e-6)
  np.testing.assert_array_equal(extras.expert_accuracy, g_extras.expert_accuracy)


@pytest.mark.parametrize("discount", ["scalar", "vector"])
def test_airl_potential_shaping_matches_reference(discount):
  rng = np.random.default_rng(3)
  g, hs, hn = _rand(rng, 8), _rand(rng, 8), _rand(rng, 8)
  done = rng.random(8) < 0.3
  d = np.float32(0.9) if discount == "scalar" else (0.9 * (1 - done)).astype(np.float32)
  got = _shaping(g, hs, hn, d)
  assert got.shape == (8,) and got.dtype == jnp.float32
  _close(got, ref_shaping(g, hs, hn, d))


def test_airl_potential_shaping_golden_and_terminal():
  # g = 1, h(s) = 2, h(s') = 3, γ = 0.5: f = 1 + 1.5 − 2 = 0.5.
  # Terminal (γ_t = 0) with h(s') = NaN: f = 1 − 2 = −1, and every gradient is finite.
  g, hs = jnp.array([1.0, 1.0]), jnp.array([2.0, 2.0])
  hn = jnp.array([3.0, np.nan])
  d = jnp.array([0.5, 0.0])
  np.testing.assert_allclose(_shaping(g, hs, hn, d), [0.5, -1.0], rtol=1e-6)
  gg, ghs, ghn = _shaping_grad(g, hs, hn, d)
  np.testing.assert_array_equal(gg, [1.0, 1.0])
  np.testing.assert_array_equal(ghs, [-1.0, -1.0])
  np.testing.assert_array_equal(ghn, [0.5, 0.0])


# --- masking, extremes, dtypes -----------------------------------------------------------


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf, 1e30, 0.0])
def test_masking_invariance(fill):
  rng = np.random.default_rng(4)
  we, wp = rng.random(7) < 0.6, rng.random(5) < 0.6
  we[0], wp[0] = False, False
  le, lp = _rand(rng, 7), _rand(rng, 5)
  lpe, lpp = _rand(rng, 7), _rand(rng, 5)
  fill_e = lambda x: np.where(we, x, np.float32(fill)).astype(np.float32)
  fill_p = lambda x: np.where(wp, x, np.float32(fill)).astype(np.float32)

  clean = _gail(le, lp, expert_where=we, policy_where=wp)
  dirty = _gail(fill_e(le), fill_p(lp), expert_where=we, policy_where=wp)
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(clean[0].expert[~we], 0.0)
  np.testing.assert_array_equal(clean[0].policy[~wp], 0.0)
  ge, gp = _gail_grad(fill_e(le), fill_p(lp), we, wp)
  np.testing.assert_array_equal(ge, _gail_grad(le, lp, we, wp)[0])
  np.testing.assert_array_equal(ge[~we], 0.0)
  np.testing.assert_array_equal(gp[~wp], 0.0)

  clean = _airl(le, lpe, lp, lpp, expert_where=we, policy_where=wp)
  dirty = _airl(fill_e(le), fill_e(lpe), fill_p(lp), fill_p(lpp), expert_where=we,
                policy_where=wp)
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty), strict=True):
    np.testing.assert_array_equal(a, b)
  grads = _airl_grad(fill_e(le), fill_e(lpe), fill_p(lp), fill_p(lpp), we, wp)
  for g, w in zip(grads, (we, we, wp, wp), strict=True):
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[~w], 0.0)

  np.testing.assert_array_equal(_gail_reward(fill_e(le), where=we), _gail_reward(le, where=we))
  np.testing.assert_array_equal(_gail_reward(fill_e(le), where=we)[~we], 0.0)
  np.testing.assert_array_equal(
      _airl_reward(fill_e(le), fill_e(lpe), where=we), _airl_reward(le, lpe, where=we)
  )
  np.testing.assert_array_equal(
      _airl_logits(fill_e(le), fill_e(lpe), where=we), _airl_logits(le, lpe, where=we)
  )
  d = np.full(7, 0.9, np.float32)
  shaped = _shaping(fill_e(le), fill_e(lpe), fill_e(lp[:1].repeat(7)), d, where=we)
  np.testing.assert_array_equal(shaped, _shaping(le, lpe, lp[:1].repeat(7), d, where=we))
  np.testing.assert_array_equal(shaped[~we], 0.0)
  for g in _shaping_grad(fill_e(le), fill_e(lpe), fill_e(lp[:1].repeat(7)), d, we):
    np.testing.assert_array_equal(g[~we], 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_extreme_logits_finite(dtype):
  x = jnp.array([1e4, -1e4, 0.0, 1e4, -1e4], dtype)
  l2 = jnp.array([-1e4, 1e4, 1e4, 1e4, -1e4], dtype)
  up = np.asarray(x, np.float32)  # bf16 holds 1e4 as 9984.
  up2 = np.asarray(l2, np.float32)
  losses, extras = _gail(x, x)
  assert losses.expert.dtype == jnp.float32 and extras.expert_logits.dtype == jnp.float32
  re, rp = ref_gail_terms_stable(up, up)
  _close(losses.expert, re)
  _close(losses.policy, rp)
  for g in _gail_grad(x, x):
    assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g, np.float32)))
  out = _gail_reward(x)
  assert out.dtype == jnp.float32
  _close(out, ref_gail_terms_stable(-up, up)[1])
  # AIRL with f = ±1e4 and log π = ∓1e4: logits ±2e4.
  losses, extras = _airl(x, l2, x, l2)
  assert losses.expert.dtype == jnp.float32
  _close(losses.expert, ref_gail_terms_stable(up - up2, up - up2)[0])
  _close(losses.policy, ref_gail_terms_stable(up - up2, up - up2)[1])
  for g in _airl_grad(x, l2, x, l2):
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
  shaped = _shaping(x, l2, x, jnp.asarray(0.99, dtype))
  assert shaped.dtype == jnp.float32
  _close(shaped, ref_shaping(up, up2, up, np.float32(jnp.asarray(0.99, dtype))))


# --- float64 gradients -----------------------------------------------------------------------


def test_gradients_float64():
  rng = np.random.default_rng(5)
  le, lp, lpe, lpp = (rng.standard_normal(n) for n in (4, 3, 4, 3))
  g, hs, hn = rng.standard_normal((3, 5))
  d = 0.9 * (rng.random(5) < 0.7)
  we = np.array([True, False, True, True])
  with jax.enable_x64(True):
    losses, _ = gail_discriminator_loss(le, lp)
    assert losses.expert.dtype == jnp.float64
    check_grads(jax.jit(_gail_total), (le, lp), order=1, modes=("rev",))
    check_grads(lambda a, b: _gail_total(a, b, we), (le, lp), order=1, modes=("rev",))
    check_grads(jax.jit(_airl_total), (le, lpe, lp, lpp), order=1, modes=("rev",))
    check_grads(lambda a: jnp.sum(gail_reward(a)), (lp,), order=1, modes=("rev",))
    check_grads(lambda a, b: jnp.sum(airl_reward(a, b)), (lp, lpp), order=1, modes=("rev",))
    assert airl_potential_shaping(g, hs, hn, d).dtype == jnp.float64
    check_grads(
        lambda a, b, c: jnp.sum(airl_potential_shaping(a, b, c, d)), (g, hs, hn), order=1,
        modes=("rev",),
    )
  assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak.


# --- gradient penalty ------------------------------------------------------------------------


_gp = jax.jit(gradient_penalty, static_argnums=0, static_argnames=("target",))


def _eps(key, batch, dtype=jnp.float32):
  # The documented draw: ε = jax.random.uniform(key, (B,)).
  return np.asarray(jax.random.uniform(key, (batch,), dtype), np.float64)


def _linear_345(x):
  return x @ jnp.array([3.0, -4.0, 0.0])  # ‖w‖ = 5.


@pytest.mark.parametrize("target", [0.0, 1.0, 2.5])
def test_gradient_penalty_linear_discriminator(target):
  # l(x) = x·w has ∇_x l = w everywhere: penalty (‖w‖ − c)² for every ε.
  rng = np.random.default_rng(6)
  xe, xp = _rand(rng, 6, 3), _rand(rng, 6, 3)
  for seed in range(2):
    got = _gp(_linear_345, xe, xp, jax.random.key(seed), target=target)
    assert got.shape == (6,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.full(6, (5.0 - target) ** 2), rtol=1e-6)


def test_gradient_penalty_matches_finite_differences():
  rng = np.random.default_rng(7)
  w = rng.standard_normal((4, 5)).astype(np.float32)
  v = rng.standard_normal(5).astype(np.float32)
  xe, xp = _rand(rng, 6, 4, scale=0.7), _rand(rng, 6, 4, scale=0.7)
  key = jax.random.key(11)
  mlp = lambda x: jnp.tanh(x @ w) @ v
  got = gradient_penalty(mlp, xe, xp, key)
  want = ref_gradient_penalty(
      [xe], [xp], _eps(key, 6), lambda xs: _mlp_logit(xs[0], w.astype(np.float64), v), 1.0
  )
  _close(got, want, 1e-4)
  # ε really is drawn in [0, 1) per example: the interpolates differ from both endpoints.
  eps = _eps(key, 6)
  assert np.all((eps >= 0) & (eps < 1)) and len(set(eps.tolist())) == 6


def test_gradient_penalty_pytree_inputs_and_mask():
  # (obs [B, 3], act [B, 2, 2]) → l = Σ_j v_j tanh(obs W_o + vec(act) W_a)_j.
  rng = np.random.default_rng(8)
  wo = rng.standard_normal((3, 4)).astype(np.float32)
  wa = rng.standard_normal((4, 4)).astype(np.float32)
  v = rng.standard_normal(4).astype(np.float32)
  obs_e, obs_p = _rand(rng, 5, 3, scale=0.5), _rand(rng, 5, 3, scale=0.5)
  act_e, act_p = _rand(rng, 5, 2, 2, scale=0.5), _rand(rng, 5, 2, 2, scale=0.5)
  where = np.array([True, False, True, True, False])

  def disc(inputs):
    obs, act = inputs
    return jnp.tanh(obs @ wo + act.reshape(act.shape[0], -1) @ wa) @ v

  def ref_logit(xs):
    h = xs[0] @ wo.astype(np.float64) + xs[1].reshape(-1) @ wa.astype(np.float64)
    return float(np.tanh(h) @ v)

  key = jax.random.key(3)
  got = _gp(disc, (obs_e, act_e), (obs_p, act_p), key, target=1.0, where=where)
  want = ref_gradient_penalty([obs_e, act_e], [obs_p, act_p], _eps(key, 5), ref_logit, 1.0)
  _close(got, np.where(where, want, 0.0), 1e-4)
  # Garbage in masked rows changes nothing.
  bad = lambda x: np.where(where.reshape((5,) + (1,) * (x.ndim - 1)), x, np.nan).astype(np.float32)
  got_bad = _gp(disc, (bad(obs_e), bad(act_e)), (bad(obs_p), bad(act_p)), key, target=1.0,
                where=where)
  np.testing.assert_array_equal(got_bad, got)


def test_gradient_penalty_r1_on_expert_samples():
  # Same inputs on both sides: x̂ = x_E for every ε, so the key does not matter, and
  # target 0 gives R1 = ‖∇l(x_E)‖². For l = Σ tanh(x)_j: ∇ = 1 − tanh²(x).
  rng = np.random.default_rng(9)
  x = _rand(rng, 4, 3)
  disc = lambda x: jnp.sum(jnp.tanh(x), axis=1)
  a = gradient_penalty(disc, x, x, jax.random.key(0), target=0.0)
  b = gradient_penalty(disc, x, x, jax.random.key(1), target=0.0)
  np.testing.assert_array_equal(a, b)
  _close(a, np.sum((1.0 - np.tanh(x.astype(np.float64)) ** 2) ** 2, axis=1))


def test_gradient_penalty_parameter_gradients():
  # Linear x = x·w: penalty (‖w‖ − 1)², ∂/∂w = 2(‖w‖ − 1) w/‖w‖ per example.
  rng = np.random.default_rng(10)
  xe, xp = _rand(rng, 3, 2), _rand(rng, 3, 2)
  w = jnp.array([0.6, 0.8 * 3])
  loss = lambda w: jnp.mean(gradient_penalty(lambda x: x @ w, xe, xp, jax.random.key(0)))
  norm = np.linalg.norm(np.asarray(w, np.float64))
  _close(jax.jit(jax.grad(loss))(w), 2 * (norm - 1) * np.asarray(w, np.float64) / norm)
  # A constant discriminator has zero input gradient: penalty c², finite gradients.
  zero = lambda s: jnp.sum(
      gradient_penalty(lambda x: s * jnp.zeros(x.shape[0]), xe, xp, jax.random.key(0))
  )
  assert float(zero(1.0)) == 3.0
  assert np.isfinite(float(jax.grad(zero)(1.0)))


def test_gradient_penalty_bf16_and_float64():
  rng = np.random.default_rng(12)
  w = rng.standard_normal((3, 4))
  v = rng.standard_normal(4)
  xe, xp = rng.standard_normal((2, 5, 3)) * 0.5
  key = jax.random.key(5)
  got = gradient_penalty(
      lambda x: jnp.tanh(x @ w.astype(np.float32)) @ v.astype(np.float32),
      jnp.asarray(xe, jnp.bfloat16), jnp.asarray(xp, jnp.bfloat16), key,
  )
  assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
  with jax.enable_x64(True):

    def total(w, v):
      return jnp.sum(gradient_penalty(lambda x: jnp.tanh(x @ w) @ v, xe, xp, key))

    assert gradient_penalty(lambda x: x @ v[:3], xe, xp, key).dtype == jnp.float64
    check_grads(jax.jit(total), (w, v), order=1, modes=("rev",))


# --- bad inputs --------------------------------------------------------------------------


def test_bad_inputs():
  z3, z4 = jnp.zeros(3), jnp.zeros(4)
  with pytest.raises(ValueError, match=r"gail_discriminator_loss.*expert_logits.*rank 1.*\(2, 3\)"):
    gail_discriminator_loss(jnp.zeros((2, 3)), z3)
  with pytest.raises(ValueError, match=r"policy_logits.*\(3, 1\)"):
    gail_discriminator_loss(z3, jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match=r"expert_where.*\(4,\).*\(3,\)"):
    gail_discriminator_loss(z3, z3, expert_where=jnp.ones(4, bool))
  with pytest.raises(TypeError, match="floating"):
    gail_discriminator_loss(jnp.zeros(3, jnp.int32), z3)
  with pytest.raises(ValueError, match=r"gail_reward.*policy_logits"):
    gail_reward(jnp.zeros((2, 2)))
  with pytest.raises(
      ValueError, match=r"airl_discriminator_loss.*expert_f\[3\].*expert_log_pi\[4\]"
  ):
    airl_discriminator_loss(z3, z4, z3, z3)
  with pytest.raises(ValueError, match=r"policy_f\[3\].*policy_log_pi\[4\]"):
    airl_discriminator_loss(z3, z3, z3, z4)
  with pytest.raises(ValueError, match=r"airl_logits.*f\[3\].*log_pi\[4\]"):
    airl_logits(z3, z4)
  with pytest.raises(ValueError, match=r"airl_reward.*\[3\].*\[4\]"):
    airl_reward(z3, z4)
  with pytest.raises(ValueError, match=r"airl_potential_shaping.*h_next\[4\]"):
    airl_potential_shaping(z3, z3, z4, 0.9)
  with pytest.raises(ValueError, match=r"discount_t.*\(4,\)"):
    airl_potential_shaping(z3, z3, z3, z4)
  key = jax.random.key(0)
  lin = lambda x: x @ jnp.ones(2)
  with pytest.raises(
      ValueError, match=r"gradient_penalty.*expert_inputs.*\(3, 2\).*policy_inputs.*\(4, 2\)"
  ):
    gradient_penalty(lin, jnp.zeros((3, 2)), jnp.zeros((4, 2)), key)
  with pytest.raises(ValueError, match=r"structure"):
    gradient_penalty(lin, (jnp.zeros((3, 2)),), jnp.zeros((3, 2)), key)
  with pytest.raises(ValueError, match=r"batch size.*\(4, 2\)"):
    gradient_penalty(lin, (z3, jnp.zeros((4, 2))), (z3, jnp.zeros((4, 2))), key)
  with pytest.raises(ValueError, match=r"discriminator_fn.*\(3,\).*\(3, 1\)"):
    gradient_penalty(lambda x: x[:, :1], jnp.zeros((3, 2)), jnp.zeros((3, 2)), key)
  with pytest.raises(ValueError, match="target"):
    gradient_penalty(lin, jnp.zeros((3, 2)), jnp.zeros((3, 2)), key, target=-1.0)
  with pytest.raises(ValueError, match=r"where.*\(2,\).*\(3,\)"):
    gradient_penalty(lin, jnp.zeros((3, 2)), jnp.zeros((3, 2)), key, where=jnp.ones(2, bool))
  with pytest.raises(TypeError, match="floating"):
    gradient_penalty(lin, jnp.zeros((3, 2), jnp.int32), jnp.zeros((3, 2), jnp.int32), key)


def test_everything_jits():
  # The module-level jitted wrappers above cover the losses; the penalty jits with a
  # static discriminator and a traced key.
  rng = np.random.default_rng(13)
  xe, xp = _rand(rng, 4, 2), _rand(rng, 4, 2)
  f = jax.jit(functools.partial(gradient_penalty, lambda x: jnp.sum(x**2, axis=1)))
  got = f(xe, xp, jax.random.key(2))
  eps = _eps(jax.random.key(2), 4)[:, None]
  x_hat = eps * xe + (1 - eps) * xp
  _close(got, (2 * np.linalg.norm(x_hat, axis=1) - 1.0) ** 2)
