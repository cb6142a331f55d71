"""Tests for irl_jax/losses/grpo.py against float64 NumPy references from docs/objectives.md §9."""

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
  GRPOExtras,
  demo_policy_similarity,
  dynamic_reward_scale,
  grpo,
  grpo_advantages,
)

# --- float64 NumPy references, written from docs/objectives.md §9 ---------------------------


def ref_grpo_advantages(rewards, group_size, scale_by_std=True, eps=1e-6):
  """A_i = (R_i − mean_G R) / (std_G R + eps), population std, group by group."""
  rewards = np.asarray(rewards, np.float64)
  out = np.zeros_like(rewards)
  for start in range(0, len(rewards), group_size):
    group = rewards[start : start + group_size]
    mean = sum(group) / group_size
    std = np.sqrt(sum((r - mean) ** 2 for r in group) / group_size)
    for i, r in enumerate(group):
      out[start + i] = (r - mean) / (std + eps) if scale_by_std else r - mean
  return out


def ref_grpo(lp, lo, lr, adv, where, normaliser, clip_epsilon=0.2, kl_coef=0.04):
  """Per-token loop: ρ = π_θ/π_old, J = min(ρA, clip(ρ)A) − β·KL, then the normaliser."""
  lp, lo, lr, adv = (np.asarray(a, np.float64) for a in (lp, lo, lr, adv))
  b_size, t_size = lp.shape
  per_token = np.zeros((b_size, t_size))
  kl = np.zeros((b_size, t_size))
  ratio = np.ones((b_size, t_size))
  clipped_count = 0
  for b in range(b_size):
    for t in range(t_size):
      if not where[b, t]:
        continue
      a = adv[b] if adv.ndim == 1 else adv[b, t]
      rho = np.exp(lp[b, t] - lo[b, t])
      rho_clipped = min(max(rho, 1 - clip_epsilon), 1 + clip_epsilon)
      surrogate = min(rho * a, rho_clipped * a)
      x = np.exp(lr[b, t] - lp[b, t])  # π_ref / π_θ
      kl[b, t] = x - np.log(x) - 1
      ratio[b, t] = rho
      per_token[b, t] = -(surrogate - kl_coef * kl[b, t])
      clipped_count += rho_clipped * a < rho * a
  count = where.sum()
  if normaliser == "token":
    loss = per_token.sum() / count if count else 0.0
  elif normaliser == "sequence":
    row_means = [per_token[b].sum() / where[b].sum() for b in range(b_size) if where[b].any()]
    loss = sum(row_means) / len(row_means) if row_means else 0.0
  else:
    loss = per_token.sum() / normaliser
  mean_kl = kl.sum() / count if count else 0.0
  clip_fraction = clipped_count / count if count else 0.0
  return loss, per_token, kl, ratio, mean_kl, clip_fraction


def ref_trl_advantages(rewards, group_size, eps=1e-4):
  """TRL's GRPO advantages: (R − mean_G R) / (std_G R + eps) with torch.std's default,
  the sample (Bessel-corrected, ddof 1) standard deviation."""
  rewards = np.asarray(rewards, np.float64)
  out = np.zeros_like(rewards)
  for start in range(0, len(rewards), group_size):
    group = rewards[start : start + group_size]
    mean = sum(group) / group_size
    std = np.sqrt(sum((r - mean) ** 2 for r in group) / (group_size - 1))
    for i, r in enumerate(group):
      out[start + i] = (r - mean) / (std + eps)
  return out


def ref_trl_sequence_loss(per_token, where):
  """TRL's "grpo" loss type: each row's Σ ℓ / max(Σ where, 1), averaged over ALL rows."""
  per_token = np.asarray(per_token, np.float64)
  rows = [per_token[b][where[b]].sum() / max(where[b].sum(), 1) for b in range(len(where))]
  return sum(rows) / len(rows)


def ref_similarity(demo, policy, demo_where, policy_where):
  """W = mean over valid demo sentences of the max cosine to the valid policy sentences."""
  demo, policy = np.asarray(demo, np.float64), np.asarray(policy, np.float64)
  out = np.zeros(demo.shape[0])
  for p in range(demo.shape[0]):
    best = []
    for i in range(demo.shape[1]):
      if not demo_where[p, i]:
        continue
      cosines = [
        demo[p, i] @ policy[p, j] / (np.linalg.norm(demo[p, i]) * np.linalg.norm(policy[p, j]))
        for j in range(policy.shape[1])
        if policy_where[p, j]
      ]
      best.append(max(cosines) if cosines else 0.0)
    out[p] = np.mean(best) if best else 0.0
  return out


def ref_dynamic_scale(similarity, gaps, categories):
  """α = α_D·α_M normalised to batch mean 1; s = sigmoid of δ = 1 − W."""
  similarity, gaps = np.asarray(similarity, np.float64), np.asarray(gaps, np.float64)
  hardness = 1.0 / (1.0 + np.exp(-(1.0 - similarity)))
  alpha = np.zeros(len(similarity))
  for p, c in enumerate(categories):
    members = [q for q in range(len(categories)) if categories[q] == c]
    mean_hardness = np.mean(hardness[members])
    mean_gap = np.mean(gaps[members])
    alpha[p] = hardness[p] / mean_hardness * (gaps[p] / mean_gap if mean_gap else 0.0)
  return alpha / alpha.mean() if alpha.mean() else alpha


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


# --- grpo_advantages ------------------------------------------------------------

_adv = jax.jit(
  grpo_advantages, static_argnames=("group_size", "scale_by_std", "eps", "std_ddof")
)


@pytest.mark.parametrize("batch,group", [(2, 2), (6, 3), (8, 4), (8, 8)])
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_grpo_advantages_match_reference(batch, group, scale_by_std):
  rng = np.random.default_rng(batch + group)
  rewards = (3 * rng.standard_normal(batch)).astype(np.float32)
  got = _adv(rewards, group_size=group, scale_by_std=scale_by_std)
  assert got.shape == (batch,) and got.dtype == jnp.float32
  _close(got, ref_grpo_advantages(rewards, group, scale_by_std))


def test_grpo_advantages_golden():
  # Group [1, 3]: mean 2, population std 1 → [−1, 1]/(1 + eps).
  # Group [0, 0]: zero spread → [0, 0].
  rewards = jnp.array([1.0, 3.0, 0.0, 0.0])
  np.testing.assert_allclose(
    _adv(rewards, group_size=2), [-1 / (1 + 1e-6), 1 / (1 + 1e-6), 0, 0], rtol=1e-6
  )
  np.testing.assert_allclose(_adv(rewards, group_size=2, eps=0.0)[:2], [-1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(
    _adv(rewards, group_size=2, scale_by_std=False), [-1.0, 1.0, 0.0, 0.0], rtol=1e-6
  )


def test_grpo_advantages_group_statistics():
  rng = np.random.default_rng(1)
  rewards = rng.standard_normal(8).astype(np.float32) * 5 + 3
  rewards[4:] = 0.7  # A zero-spread group carries no signal.
  got = np.asarray(_adv(rewards, group_size=4), np.float64).reshape(2, 4)
  np.testing.assert_array_equal(got[1], 0.0)
  np.testing.assert_allclose(got[0].mean(), 0.0, atol=1e-6)
  np.testing.assert_allclose(got[0].std(), 1.0, atol=1e-5)
  centred = np.asarray(_adv(rewards, group_size=4, scale_by_std=False), np.float64).reshape(2, 4)
  np.testing.assert_allclose(centred.mean(axis=1), 0.0, atol=1e-5)


@pytest.mark.parametrize("value", [0.1, 0.7, -1.7841711, 3e3])
@pytest.mark.parametrize("group", [3, 6, 8])
@pytest.mark.parametrize("std_ddof", [0, 1])
def test_grpo_advantages_zero_spread_group_is_exactly_zero(value, group, std_ddof):
  # A float32 mean of G equal rewards can be off by an ulp (0.1 × 6 was), and
  # the division by std + eps turned that into an advantage of ~1e-2.
  rewards = np.full(2 * group, value, np.float32)
  rewards[group:] = np.arange(group)
  for fn in (_adv, grpo_advantages):
    got = np.asarray(fn(rewards, group_size=group, std_ddof=std_ddof))
    np.testing.assert_array_equal(got[:group], 0.0)


def test_grpo_advantages_bfloat16_and_extremes():
  rewards = jnp.array([1e4, -1e4, 3.0, 3.0], jnp.bfloat16)
  got = _adv(rewards, group_size=2)
  assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
  _close(got, ref_grpo_advantages(np.asarray(rewards, np.float32), 2))


def test_grpo_advantages_bad_inputs():
  with pytest.raises(ValueError, match="group_size=3"):
    grpo_advantages(jnp.zeros(8), group_size=3)
  with pytest.raises(ValueError, match="group_size=0"):
    grpo_advantages(jnp.zeros(8), group_size=0)
  with pytest.raises(ValueError, match=r"rank 1.*\(2, 4\)"):
    grpo_advantages(jnp.zeros((2, 4)), group_size=2)
  with pytest.raises(TypeError, match="floating"):
    grpo_advantages(jnp.zeros(4, jnp.int32), group_size=2)


# --- grpo -------------------------------------------------------------------------


@functools.cache
def _jitted(normaliser, clip_epsilon=0.2, kl_coef=0.04, log_ratio_clip=20.0):
  """(loss with extras, gradient of the loss w.r.t. logps), jitted once per setting."""

  def f(lp, lo, lr, a, w):
    return grpo(
      lp,
      lo,
      lr,
      a,
      where=w,
      normaliser=normaliser,
      clip_epsilon=clip_epsilon,
      kl_coef=kl_coef,
      log_ratio_clip=log_ratio_clip,
    )

  return jax.jit(f), jax.jit(jax.grad(lambda *args: f(*args)[0]))


_NORMALISERS = ["token", "sequence", 7.0]


def _spans(b, t, rng, empty_row=True):
  """One contiguous response span per row; with `empty_row`, row 1 is empty."""
  where = np.zeros((b, t), bool)
  for i in range(b):
    start = rng.integers(0, t)
    stop = rng.integers(start + 1, t + 1)
    where[i, start:stop] = True
  if empty_row and b > 2:
    where[1] = False
  return where


def _grpo_inputs(b, t, g, seed=0, spread=0.3):
  rng = np.random.default_rng(seed)
  lp = np.log(rng.uniform(0.05, 1.0, (b, t))).astype(np.float32)
  lo = (lp + spread * rng.standard_normal((b, t))).astype(np.float32)
  lr = (lp + 0.5 * rng.standard_normal((b, t))).astype(np.float32)
  adv = ref_grpo_advantages(rng.standard_normal(b), g).astype(np.float32)
  return lp, lo, lr, adv, _spans(b, t, rng)


def _check_against_reference(out, extras, ref):
  loss, per_token, kl, ratio, mean_kl, clip_fraction = ref
  assert isinstance(extras, GRPOExtras)
  _close(out, loss)
  _close(extras.loss_terms.mean(), loss)
  _close(extras.per_token_loss, per_token)
  _close(extras.kl, kl)
  _close(extras.ratio, ratio)
  _close(extras.mean_kl.mean(), mean_kl)
  _close(extras.clip_fraction.mean(), clip_fraction)


@pytest.mark.parametrize("shape", [(2, 3, 2), (4, 12, 2), (8, 5, 4)])
@pytest.mark.parametrize("normaliser", _NORMALISERS)
def test_grpo_matches_reference(shape, normaliser):
  b, t, g = shape
  lp, lo, lr, adv, where = _grpo_inputs(b, t, g, seed=b * t)
  out, extras = _jitted(normaliser)[0](lp, lo, lr, adv, where)
  assert out.shape == () and out.dtype == jnp.float32
  _check_against_reference(out, extras, ref_grpo(lp, lo, lr, adv, where, normaliser))


def test_grpo_per_token_advantages_match_reference():
  lp, lo, lr, _, where = _grpo_inputs(4, 6, 2, seed=3)
  adv = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
  for normaliser in ("token", 3.0):
    out, extras = _jitted(normaliser, 0.3, 0.1)[0](lp, lo, lr, adv, where)
    ref = ref_grpo(lp, lo, lr, adv, where, normaliser, clip_epsilon=0.3, kl_coef=0.1)
    _check_against_reference(out, extras, ref)


def test_grpo_golden():
  # One token, A = 1, ε = 0.2, β = 0.5.
  # log ρ = 0.1: ρ = e^{0.1} = 1.1051709180756477 (inside the clip range).
  # log(π_ref/π_θ) = −0.2: KL = e^{−0.2} + 0.2 − 1 = 0.018730753077981888.
  # J = 1.1051709180756477 − 0.5·0.018730753077981888 = 1.0958055415366568; loss = −J.
  lp, lo, lr = (jnp.array([[v]]) for v in (-1.0, -1.1, -1.2))
  out, extras = _jitted("token", 0.2, 0.5)[0](lp, lo, lr, jnp.array([1.0]), jnp.array([[True]]))
  np.testing.assert_allclose(out, -1.0958055415366568, rtol=1e-6)
  np.testing.assert_allclose(extras.kl, [[0.018730753077981888]], rtol=1e-5)
  # log ρ = 0.5 with A = 1: ρ = 1.65 is clipped to 1.2, J = 1.2 (β = 0).
  out, extras = _jitted("token", 0.2, 0.0)[0](
    lp, jnp.array([[-1.5]]), lr, jnp.array([1.0]), jnp.array([[True]])
  )
  np.testing.assert_allclose(out, -1.2, rtol=1e-6)
  np.testing.assert_allclose(extras.clip_fraction.mean(), 1.0)


def _row_weights(where, normaliser):
  """The weight of each token of row b under each normaliser."""
  counts = where.sum(axis=1).astype(np.float64)
  if normaliser == "token":
    return np.where(where, 1.0 / where.sum(), 0.0)
  if normaliser == "sequence":
    nonempty = (counts > 0).sum()
    return np.where(where, 1.0 / (np.maximum(counts, 1) * nonempty)[:, None], 0.0)
  return np.where(where, 1.0 / normaliser, 0.0)


@pytest.mark.parametrize("normaliser", _NORMALISERS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.04])
def test_grpo_at_ratio_one_is_policy_gradient(normaliser, kl_coef):
  # old == logps (ρ = 1) and ref == logps (KL = 0 with zero gradient):
  # loss = −Σ_b A_b·Σ_t weight_bt and ∂loss/∂logps_bt = −A_b·weight_bt.
  b, t = 4, 12
  lp, _, _, adv, where = _grpo_inputs(b, t, 2, seed=4)
  loss_fn, grad_fn = _jitted(normaliser, 0.2, kl_coef)
  weights = _row_weights(where, normaliser)
  out, extras = loss_fn(lp, lp, lp, adv, where)
  _close(out, -np.sum(adv.astype(np.float64)[:, None] * weights))
  np.testing.assert_array_equal(extras.kl, 0.0)
  np.testing.assert_array_equal(extras.ratio, 1.0)
  _close(grad_fn(lp, lp, lp, adv, where), -adv.astype(np.float64)[:, None] * weights)
  if normaliser == "token":
    # Token mean: −(Σ_b n_b A_b)/(Σ_b n_b).
    n = where.sum(axis=1)
    _close(out, -np.sum(n * adv.astype(np.float64)) / n.sum())


def test_grpo_clipping_gradients():
  # Row 0: A = +1, row 1: A = −1; log ρ = [0.5, −0.5, 0.05, −0.05] (ε = 0.2).
  # A > 0: ρ > 1+ε is clipped (zero gradient); ρ < 1−ε is not (min picks ρA).
  # A < 0: ρ < 1−ε is clipped; ρ > 1+ε is not.
  log_ratio = np.array([0.5, -0.5, 0.05, -0.05], np.float32)
  lo = np.full((2, 4), -2.0, np.float32)
  lp = lo + log_ratio
  adv = np.array([1.0, -1.0], np.float32)
  where = np.ones((2, 4), bool)
  loss_fn, grad_fn = _jitted("token", 0.2, 0.0)
  rho = np.exp(log_ratio.astype(np.float64))
  want = -np.array([[0.0, rho[1], rho[2], rho[3]], [-rho[0], 0.0, -rho[2], -rho[3]]]) / 8
  _close(grad_fn(lp, lo, lo, adv, where), want)
  _, extras = loss_fn(lp, lo, lo, adv, where)
  np.testing.assert_allclose(extras.clip_fraction.mean(), 2 / 8)


@pytest.mark.parametrize("per_token_adv", [False, True])
def test_grpo_only_logps_receive_gradient(per_token_adv):
  # π_old, π_ref and the advantages are constants of the surrogate (stop-gradient).
  lp, lo, lr, adv, where = _grpo_inputs(4, 6, 2, seed=12)
  if per_token_adv:
    adv = np.repeat(adv[:, None], 6, axis=1)
  grads = _frozen_grads(lp, lo, lr, adv, where)
  assert np.any(np.asarray(grads[0]) != 0)
  for g in grads[1:]:
    np.testing.assert_array_equal(g, 0.0)


_frozen_grads = jax.jit(
  jax.grad(
    lambda lp, lo, lr, a, w: grpo(lp, lo, lr, a, where=w, normaliser="token")[0],
    argnums=(0, 1, 2, 3),
  )
)


def test_grpo_k3_kl_nonnegative_and_zero_at_reference():
  rng = np.random.default_rng(5)
  lp = np.log(rng.uniform(0.01, 1, (8, 12))).astype(np.float32)
  lr = (lp + 3 * rng.standard_normal((8, 12))).astype(np.float32)
  where = np.ones((8, 12), bool)
  adv = np.zeros(8, np.float32)
  loss_fn = _jitted("token")[0]
  _, extras = loss_fn(lp, lp, lr, adv, where)
  assert np.all(np.asarray(extras.kl) >= 0)
  x = np.exp(lr.astype(np.float64) - lp)
  _close(extras.kl, x - np.log(x) - 1)
  _, extras = loss_fn(lp, lp, lp, adv, where)
  np.testing.assert_array_equal(extras.kl, 0.0)


@pytest.mark.parametrize("normaliser", _NORMALISERS)
def test_grpo_normaliser_terms(normaliser):
  # The (sum, count) pair: token → (Σ ℓ, Σ where); sequence → (Σ_rows row mean,
  # non-empty rows); constant c → (Σ ℓ, c).
  lp, lo, lr, adv, where = _grpo_inputs(4, 6, 2, seed=6)
  out, extras = _jitted(normaliser)[0](lp, lo, lr, adv, where)
  # The per-token losses from the float64 reference, not from the implementation.
  per_token = ref_grpo(lp, lo, lr, adv, where, "token")[1]
  counts = where.sum(axis=1)
  if normaliser == "token":
    want_sum, want_count = per_token.sum(), where.sum()
  elif normaliser == "sequence":
    want_sum = sum(per_token[b].sum() / counts[b] for b in range(4) if counts[b])
    want_count = (counts > 0).sum()
  else:
    want_sum, want_count = per_token.sum(), normaliser
  _close(extras.loss_terms.sum, want_sum)
  np.testing.assert_allclose(extras.loss_terms.count, want_count)
  _close(out, want_sum / want_count)


_HYP_B, _HYP_T = 4, 6
_fills = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0])


@settings(max_examples=25, deadline=None)
@given(
  seed=st.integers(0, 2**31 - 1),
  where=hnp.arrays(np.bool_, (_HYP_B, _HYP_T)),
  fill=_fills,
  normaliser=st.sampled_from(_NORMALISERS),
  per_token_adv=st.booleans(),
)
def test_grpo_masking_invariance(seed, where, fill, normaliser, per_token_adv):
  lp, lo, lr, adv, _ = _grpo_inputs(_HYP_B, _HYP_T, 2, seed=seed)
  fill = np.float32(fill)
  if per_token_adv:
    adv = np.repeat(adv[:, None], _HYP_T, axis=1)
    adv_filled = np.where(where, adv, fill)
  else:
    # The advantage of a row with no response token never matters either.
    adv_filled = np.where(where.any(axis=1), adv, fill)
  filled = [np.where(where, x, fill) for x in (lp, lo, lr)]
  loss_fn, grad_fn = _jitted(normaliser)
  out, extras = loss_fn(lp, lo, lr, adv, where)
  out_f, extras_f = loss_fn(*filled, adv_filled, where)
  np.testing.assert_array_equal(out_f, out)
  for a, b in zip(jax.tree.leaves(extras_f), jax.tree.leaves(extras), strict=True):
    np.testing.assert_array_equal(a, b)
  g, g_f = grad_fn(lp, lo, lr, adv, where), grad_fn(*filled, adv_filled, where)
  np.testing.assert_array_equal(g_f, g)
  np.testing.assert_array_equal(np.asarray(g)[~where], 0.0)
  _check_against_reference(out, extras, ref_grpo(lp, lo, lr, adv, where, normaliser))


def test_grpo_gradients_float64():
  rng = np.random.default_rng(7)
  b, t = 4, 5
  lp = np.log(rng.uniform(0.05, 1.0, (b, t)))
  # Log-ratios away from the clip boundaries log(0.8) and log(1.2): inside
  # (|x| ≤ 0.1) or well outside (0.4 ≤ |x| ≤ 0.6).
  mag = np.where(
    rng.random((b, t)) < 0.5, rng.uniform(0, 0.1, (b, t)), rng.uniform(0.4, 0.6, (b, t))
  )
  lo = lp - rng.choice([-1.0, 1.0], (b, t)) * mag
  lr = lp + 0.5 * rng.standard_normal((b, t))
  adv = ref_grpo_advantages(rng.standard_normal(b), 2)
  where = _spans(b, t, rng)
  with jax.enable_x64(True):
    for normaliser in _NORMALISERS:
      loss_fn = _jitted(normaliser)[0]
      assert loss_fn(lp, lo, lr, adv, where)[0].dtype == jnp.float64
      check_grads(lambda x, f=loss_fn: f(x, lo, lr, adv, where)[0], (lp,), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_grpo_extreme_inputs_finite(dtype):
  vals = np.array([1e4, -1e4, 0.0, -5.0], np.float32)
  rng = np.random.default_rng(8)
  lp, lo, lr = (jnp.asarray(rng.choice(vals, (4, 6)), dtype) for _ in range(3))
  adv = jnp.asarray([1.0, -1.0, 0.0, 1e4], dtype)
  where = _spans(4, 6, rng)
  for normaliser in _NORMALISERS:
    loss_fn, grad_fn = _jitted(normaliser)
    out, extras = loss_fn(lp, lo, lr, adv, where)
    assert out.dtype == jnp.float32
    for leaf in (out, *jax.tree.leaves(extras)):
      assert np.all(np.isfinite(leaf))
    assert np.all(np.isfinite(np.asarray(grad_fn(lp, lo, lr, adv, where), np.float32)))


def test_grpo_all_masked_rows_and_batch():
  lp, lo, lr, adv, where = _grpo_inputs(4, 6, 2, seed=9)
  where[2] = False
  nan_lp = np.where(where, lp, np.nan).astype(np.float32)
  for normaliser in _NORMALISERS:
    loss_fn, grad_fn = _jitted(normaliser)
    _, extras = loss_fn(nan_lp, lo, lr, adv, where)
    np.testing.assert_array_equal(extras.per_token_loss[2], 0.0)
    assert np.all(np.isfinite(np.asarray(grad_fn(nan_lp, lo, lr, adv, where))))
    none = np.zeros_like(where)
    out, extras = loss_fn(nan_lp, lo, lr, adv, none)
    np.testing.assert_array_equal(out, 0.0)
    for leaf in jax.tree.leaves(extras):
      assert np.all(np.isfinite(leaf))
    np.testing.assert_array_equal(grad_fn(nan_lp, lo, lr, adv, none), 0.0)


def test_grpo_log_ratio_clip_only_guards_extremes():
  lp, lo, lr, adv, where = _grpo_inputs(4, 6, 2, seed=10)
  guarded = _jitted("token")[0](lp, lo, lr, adv, where)[0]
  unguarded = _jitted("token", log_ratio_clip=None)[0](lp, lo, lr, adv, where)[0]
  np.testing.assert_array_equal(guarded, unguarded)
  # A log-ratio of 1e3 with A = 0: e^{1e3}·0 would be NaN without the guard.
  lo[0, 0] = lp[0, 0] - 1e3
  adv[0] = 0.0
  lr = lp.copy()
  where = np.zeros_like(where)
  where[0, 0] = True
  big, extras = _jitted("token")[0](lp, lo, lr, adv, where)
  np.testing.assert_array_equal(big, 0.0)
  np.testing.assert_allclose(extras.ratio[0, 0], np.exp(20.0), rtol=1e-6)


def test_grpo_bad_inputs():
  x = jnp.zeros((2, 3))
  w = jnp.ones((2, 3), bool)
  a = jnp.zeros(2)
  kw = {"where": w, "normaliser": "token"}
  with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
    grpo(x, jnp.zeros((2, 4)), x, a, **kw)
  with pytest.raises(ValueError, match=r"advantages.*\(3,\)"):
    grpo(x, x, x, jnp.zeros(3), **kw)
  with pytest.raises(ValueError, match=r"rank 2.*\(3,\)"):
    grpo(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), a, **kw)
  with pytest.raises(TypeError, match="bool"):
    grpo(x, x, x, a, where=jnp.ones((2, 3)), normaliser="token")
  with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
    grpo(x, x, x, a, where=jnp.ones((2, 2), bool), normaliser="token")
  with pytest.raises(ValueError, match="normaliser"):
    grpo(x, x, x, a, where=w, normaliser="group")
  with pytest.raises(ValueError, match="normaliser"):
    grpo(x, x, x, a, where=w, normaliser=-1.0)
  with pytest.raises(ValueError, match="clip_epsilon"):
    grpo(x, x, x, a, **kw, clip_epsilon=-0.1)
  with pytest.raises(ValueError, match="kl_coef"):
    grpo(x, x, x, a, **kw, kl_coef=-1.0)


# --- GRPO-S: similarity and dynamic reward scale ------------------------------

_sim = jax.jit(lambda d, p, dw, pw: demo_policy_similarity(d, p, demo_where=dw, policy_where=pw))


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (3, 5, 4, 6), (6, 4, 6, 8)])
def test_demo_policy_similarity_matches_reference(shape):
  p, sd, sp, e = shape
  rng = np.random.default_rng(p + e)
  demo = rng.standard_normal((p, sd, e)).astype(np.float32)
  policy = rng.standard_normal((p, sp, e)).astype(np.float32)
  dw, pw = rng.random((p, sd)) < 0.7, rng.random((p, sp)) < 0.7
  dw[0, 0] = pw[0, 0] = True
  if p > 2:
    pw[1] = False  # No policy sentence: every demo sentence scores 0.
    dw[2] = False  # No demo sentence: W = 0.
  got = _sim(demo, policy, dw, pw)
  assert got.shape == (p,)
  _close(got, ref_similarity(demo, policy, dw, pw))
  filled_d = np.where(dw[..., None], demo, np.float32(np.nan))
  filled_p = np.where(pw[..., None], policy, np.float32(np.nan))
  np.testing.assert_array_equal(_sim(filled_d, filled_p, dw, pw), got)


def test_demo_policy_similarity_golden():
  # Prompt 0: the demo sentence equals a (scaled) policy sentence → W = 1.
  # Prompt 1: demo [1, 0] vs policy [0, 1] and [−1, 0] → max(0, −1) = 0; demo [1, 1] vs
  #   the same → max(1/√2, −1/√2) = 0.7071067811865476; W = 0.35355339059327373.
  demo = jnp.array([[[1.0, 2.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]]])
  policy = jnp.array([[[2.0, 4.0], [-1.0, 0.0]], [[0.0, 1.0], [-1.0, 0.0]]])
  dw = jnp.array([[True, False], [True, True]])
  pw = jnp.ones((2, 2), bool)
  np.testing.assert_allclose(_sim(demo, policy, dw, pw), [1.0, 0.35355339059327373], rtol=1e-6)


def test_demo_policy_similarity_bad_inputs():
  d, p = jnp.zeros((2, 3, 4)), jnp.zeros((2, 5, 4))
  dw, pw = jnp.ones((2, 3), bool), jnp.ones((2, 5), bool)
  with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 5, 3\)"):
    demo_policy_similarity(d, jnp.zeros((2, 5, 3)), demo_where=dw, policy_where=pw)
  with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
    demo_policy_similarity(d, p, demo_where=dw, policy_where=jnp.ones((2, 4), bool))
  with pytest.raises(TypeError, match="bool"):
    demo_policy_similarity(d, p, demo_where=jnp.ones((2, 3)), policy_where=pw)


_scale = jax.jit(dynamic_reward_scale, static_argnames=("num_categories",))


@pytest.mark.parametrize("p,c", [(1, 1), (5, 2), (8, 3)])
def test_dynamic_reward_scale_matches_reference(p, c):
  rng = np.random.default_rng(p * c)
  similarity = rng.uniform(-1, 1, p).astype(np.float32)
  gaps = rng.uniform(0.1, 2.0, p).astype(np.float32)
  categories = rng.integers(0, c, p).astype(np.int32)
  got = _scale(similarity, gaps, categories, num_categories=c)
  assert got.shape == (p,)
  _close(got, ref_dynamic_scale(similarity, gaps, categories))
  np.testing.assert_allclose(np.mean(np.asarray(got, np.float64)), 1.0, rtol=1e-5)


def test_dynamic_reward_scale_golden():
  # One category, W = [0, 0] → α_D = 1; gaps [1, 3], mean 2 → α_M = [0.5, 1.5];
  # α = [0.5, 1.5], already mean 1.
  np.testing.assert_allclose(
    _scale(jnp.zeros(2), jnp.array([1.0, 3.0]), jnp.array([0, 0]), num_categories=1),
    [0.5, 1.5],
    rtol=1e-6,
  )
  # Each prompt alone in its category: α_D = α_M = 1.
  np.testing.assert_allclose(
    _scale(jnp.array([0.3, -0.2]), jnp.array([1.0, 5.0]), jnp.array([0, 1]), num_categories=2),
    [1.0, 1.0],
    rtol=1e-6,
  )
  # A category whose mean gap is 0 gets α = 0; the rest renormalise to mean 1.
  got = _scale(jnp.zeros(3), jnp.array([0.0, 0.0, 2.0]), jnp.array([0, 0, 1]), num_categories=2)
  np.testing.assert_allclose(got, [0.0, 0.0, 3.0], rtol=1e-6)


def test_dynamic_reward_scale_bad_inputs():
  with pytest.raises(ValueError, match=r"\[3\].*\[4\]"):
    dynamic_reward_scale(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3, jnp.int32), num_categories=2)
  with pytest.raises(TypeError, match="integer"):
    dynamic_reward_scale(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), num_categories=2)
  with pytest.raises(ValueError, match=r"rank 1.*\(2, 3\)"):
    dynamic_reward_scale(
      jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32), num_categories=2
    )


def test_dynamic_reward_scale_negative_gaps_never_flip_advantages():
  # A negative gap (the policy already beats the demonstration) used to give a
  # negative α, flipping the sign of that prompt's advantages. Under tracing
  # negative gaps are clamped to 0: α ≥ 0 and advantages keep their sign.
  similarity = np.array([0.2, -0.5, 0.9, 0.1, 0.4], np.float32)
  gaps = np.array([-1.0, 2.0, 0.5, -0.3, -0.2], np.float32)
  categories = np.array([0, 0, 1, 1, 2], np.int32)
  got = np.asarray(_scale(similarity, gaps, categories, num_categories=3), np.float64)
  assert np.all(got >= 0), got
  _close(got, ref_dynamic_scale(similarity, np.maximum(gaps, 0.0), categories))
  np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
  adv = np.array([1.0, -1.0] * 5, np.float32)
  scaled = np.repeat(got, 2) * adv
  assert np.all(np.sign(scaled) * np.sign(adv) >= 0)
  # A category whose gaps are all negative has α = 0 (not a negative mean gap).
  got = _scale(jnp.zeros(3), jnp.array([-1.0, -2.0, 1.0]), jnp.array([0, 0, 1]), num_categories=2)
  np.testing.assert_allclose(got, [0.0, 0.0, 3.0], rtol=1e-6)


def test_dynamic_reward_scale_rejects_concrete_negative_gaps():
  with pytest.raises(ValueError, match=r"negative reward gap -0\.5"):
    dynamic_reward_scale(
      jnp.zeros(3), jnp.array([1.0, -0.5, 2.0]), jnp.zeros(3, jnp.int32), num_categories=1
    )


# --- TRL conventions --------------------------------------------------------------


@pytest.mark.parametrize("batch,group", [(2, 2), (6, 3), (8, 4), (8, 8)])
def test_grpo_advantages_sample_std_matches_trl_reference(batch, group):
  rng = np.random.default_rng(10 * batch + group)
  rewards = (3 * rng.standard_normal(batch)).astype(np.float32)
  rewards[:group] = rewards[0]  # a zero-spread group stays 0 under either convention.
  got = _adv(rewards, group_size=group, std_ddof=1, eps=1e-4)
  _close(got, ref_trl_advantages(rewards, group, eps=1e-4))
  np.testing.assert_array_equal(np.asarray(got)[:group], 0.0)
  # The default stays the population std.
  _close(_adv(rewards, group_size=group, std_ddof=0), ref_grpo_advantages(rewards, group))


def test_grpo_advantages_sample_std_golden_and_bad_ddof():
  # Group [1, 3]: mean 2, sample std sqrt(2) → [−1, 1]/sqrt(2).
  got = _adv(jnp.array([1.0, 3.0]), group_size=2, std_ddof=1, eps=0.0)
  np.testing.assert_allclose(got, [-(0.5**0.5), 0.5**0.5], rtol=1e-6)
  with pytest.raises(ValueError, match=r"std_ddof=1.*group_size=1"):
    grpo_advantages(jnp.zeros(4), group_size=1, std_ddof=1)
  with pytest.raises(ValueError, match="std_ddof=-1"):
    grpo_advantages(jnp.zeros(4), group_size=2, std_ddof=-1)


@pytest.mark.parametrize("shape", [(2, 3, 2), (4, 12, 2), (8, 5, 4)])
def test_grpo_sequence_all_rows_matches_trl_reference(shape):
  b, t, g = shape
  lp, lo, lr, adv, where = _grpo_inputs(b, t, g, seed=b * t + 1)
  if b > 2:
    assert not where[1].any()  # an empty row, where the two conventions differ.
  out, extras = _jitted("sequence_all_rows")[0](lp, lo, lr, adv, where)
  per_token = ref_grpo(lp, lo, lr, adv, where, "token")[1]
  _close(out, ref_trl_sequence_loss(per_token, where))
  _close(extras.per_token_loss, per_token)
  np.testing.assert_allclose(extras.loss_terms.count, b)
  grad = _jitted("sequence_all_rows")[1](lp, lo, lr, adv, where)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~where], 0.0)
  if b > 2:
    # Differs from "sequence" (mean over non-empty rows) by the ratio of row counts.
    seq = _jitted("sequence")[0](lp, lo, lr, adv, where)[0]
    nonempty = where.any(axis=1).sum()
    _close(out, np.float64(seq) * nonempty / b)
