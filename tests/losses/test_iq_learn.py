"""Tests for irl_jax/losses/iq_learn.py against a float64 NumPy reference
(docs/objectives.md §1, §4)."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from irl_jax.losses import (
    TokenStats,
    implied_rewards,
    iq_learn,
    iq_learn_online,
    mle,
    next_state_values,
    sequence_rewards,
    soft_q_stats,
    token_mean,
)

# --- reference ---------------------------------------------------------------


def ref_next_values(v, where, terminal, bootstrap):
  """docs/objectives.md §1, written as a loop over each row's response span."""
  b, t = v.shape
  out = np.zeros((b, t))
  for i in range(b):
    for j in range(t):
      if not where[i, j]:
        continue
      if j + 1 < t and where[i, j + 1]:
        out[i, j] = v[i, j + 1]
      elif terminal[i]:
        out[i, j] = 0.0
      else:
        out[i, j] = bootstrap[i]
  return out


def ref_iq_learn(q, v, where, gamma, lam, terminal, bootstrap):
  q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
  v_next = ref_next_values(v, where, terminal, bootstrap)
  loss = np.zeros_like(q)
  rewards = np.zeros_like(q)
  for i, j in zip(*np.nonzero(where), strict=True):
    r = q[i, j] - gamma * v_next[i, j]
    rewards[i, j] = r
    loss[i, j] = (v[i, j] - q[i, j]) + lam * r * r
  return loss, rewards, v_next


def ref_token_mean(x, where):
  n = where.sum()
  return float((x * where).sum() / n) if n else 0.0


def ref_online(eq, ev, ew, et, eb, pq, pv, pw, pt, pb, mix, gamma, lam, chi2_on_mixture):
  """docs/objectives.md §4 online form; each E a masked token mean over its own batch."""
  _, er, env = ref_iq_learn(eq, ev, ew, gamma, 0.0, et, eb)
  _, pr, pnv = ref_iq_learn(pq, pv, pw, gamma, 0.0, pt, pb)
  nll = ref_token_mean(np.asarray(ev, np.float64) - eq, ew)
  chi2 = ref_token_mean(er**2, ew)
  if chi2_on_mixture:
    chi2 = (1 - mix) * chi2 + mix * ref_token_mean(pr**2, pw)
  gap_e = ref_token_mean(ev - gamma * env, ew)
  gap_p = ref_token_mean(pv - gamma * pnv, pw)
  return nll + lam * chi2 + mix * (gap_p - gap_e)


# --- fixtures ----------------------------------------------------------------


def random_spans(rng, b, t, min_len=1):
  """Each row: a prompt prefix, one contiguous response span, then padding."""
  where = np.zeros((b, t), bool)
  for i in range(b):
    start = rng.integers(0, t - min_len + 1)
    end = rng.integers(start + min_len, t + 1)
    where[i, start:end] = True
  return where


def random_case(shape, seed):
  b, t = shape
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((b, t)).astype(np.float32)
  v = (q + np.abs(rng.standard_normal((b, t)))).astype(np.float32)  # v ≥ q, like logsumexp.
  where = random_spans(rng, b, t)
  terminal = rng.random(b) < 0.5
  bootstrap = rng.standard_normal(b).astype(np.float32)
  return q, v, where, terminal, bootstrap


SHAPES = [(1, 1), (2, 5), (4, 9)]


@functools.partial(jax.jit, static_argnames=("gamma", "td_weight"))
def jit_iq_learn(q, v, where, terminal, bootstrap, *, gamma, td_weight):
  return iq_learn(
      TokenStats(q, v), where=where, gamma=gamma, td_weight=td_weight, terminal=terminal,
      bootstrap=bootstrap,
  )


# --- offline -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("gamma", "td_weight"), [(1.0, 0.5), (0.9, 0.1), (0.0, 2.0)])
def test_iq_learn_matches_reference(shape, gamma, td_weight):
  q, v, where, terminal, bootstrap = random_case(shape, seed=sum(shape))
  loss, extras = jit_iq_learn(q, v, where, terminal, bootstrap, gamma=gamma, td_weight=td_weight)
  want, rewards, v_next = ref_iq_learn(q, v, where, gamma, td_weight, terminal, bootstrap)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.implied_rewards, rewards, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.next_values, v_next, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(extras.td_penalty, td_weight * rewards**2, rtol=1e-5, atol=1e-6)
  want_residual = (q - gamma * v_next) * where  # docs/objectives.md §4: r̂ = q − γ·v_next
  np.testing.assert_allclose(extras.td_residual, want_residual, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extras.nll, (v - q) * where, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(extras.values, v * where, rtol=1e-6)
  np.testing.assert_allclose(extras.value_gap, (v - gamma * v_next) * where, rtol=1e-5, atol=1e-6)
  got_r = implied_rewards(
      TokenStats(q, v), where=where, gamma=gamma, terminal=terminal, bootstrap=bootstrap
  )
  np.testing.assert_allclose(got_r, rewards, rtol=1e-5, atol=1e-6)
  got_seq = sequence_rewards(
      TokenStats(q, v), where=where, gamma=gamma, terminal=terminal, bootstrap=bootstrap
  )
  np.testing.assert_allclose(got_seq, rewards.sum(-1), rtol=1e-5, atol=1e-5)


def test_iq_learn_golden():
  # where = [0, 1, 1]; q = [., 1, 2]; v = [., 1.5, 2.5]; γ = 0.5, λ = 0.1.
  # t=1: v_next = v_2 = 2.5, r̂ = 1 − 1.25 = −0.25, ℓ = 0.5 + 0.1·0.0625 = 0.50625
  # t=2, terminal: v_next = 0, r̂ = 2, ℓ = 0.5 + 0.1·4 = 0.9
  # t=2, truncated with bootstrap 3: r̂ = 2 − 1.5 = 0.5, ℓ = 0.5 + 0.1·0.25 = 0.525
  stats = TokenStats(q=jnp.array([[7.0, 1.0, 2.0]] * 2), v=jnp.array([[9.0, 1.5, 2.5]] * 2))
  where = jnp.array([[False, True, True]] * 2)
  loss, extras = iq_learn(
      stats, where=where, gamma=0.5, td_weight=0.1, terminal=jnp.array([True, False]),
      bootstrap=jnp.array([123.0, 3.0]),
  )
  np.testing.assert_allclose(loss, [[0, 0.50625, 0.9], [0, 0.50625, 0.525]], rtol=1e-6)
  np.testing.assert_allclose(extras.implied_rewards, [[0, -0.25, 2.0], [0, -0.25, 0.5]], rtol=1e-6)


def test_next_state_values_padding_layouts():
  v = jnp.arange(1.0, 6.0)[None].repeat(3, 0)
  where = jnp.array([
      [1, 1, 1, 0, 0],  # right-padded response
      [0, 0, 1, 1, 1],  # left-padded / prompt first, response at the end
      [0, 1, 1, 1, 0],  # prompt, response, padding
  ], bool)
  got = next_state_values(
      v, where=where, terminal=jnp.array([True, False, False]), bootstrap=jnp.array([0.0, 7.0, 8.0])
  )
  np.testing.assert_array_equal(got, [[2, 3, 0, 0, 0], [0, 0, 4, 5, 7], [0, 3, 4, 8, 0]])


def test_td_weight_zero_is_mle_values_and_gradients():
  rng = np.random.default_rng(3)
  logits = rng.standard_normal((3, 6, 11)).astype(np.float32)
  targets = rng.integers(0, 11, (3, 6))
  where = random_spans(rng, 3, 6)

  def loss_fn(objective):
    def f(x):
      stats = soft_q_stats(x, targets)
      per_token = objective(stats)
      return token_mean(per_token, where), per_token

    return f

  iq = loss_fn(lambda s: iq_learn(s, where=where, gamma=0.9, td_weight=0.0)[0])
  ml = loss_fn(lambda s: mle(s, where=where))
  (l1, t1), g1 = jax.jit(jax.value_and_grad(iq, has_aux=True))(logits)
  (l2, t2), g2 = jax.jit(jax.value_and_grad(ml, has_aux=True))(logits)
  np.testing.assert_array_equal(t1, t2)
  np.testing.assert_array_equal(l1, l2)
  np.testing.assert_allclose(g1, g2, rtol=0, atol=0)


def test_gamma_one_telescopes():
  # Σ_t r̂_t = Σ_t (q_t − v_{t+1}) = Σ_t log π(a_t|s_t) + v_0 on terminal rows.
  rng = np.random.default_rng(4)
  logits = 2 * rng.standard_normal((4, 7, 9)).astype(np.float32)
  targets = rng.integers(0, 9, (4, 7))
  where = random_spans(rng, 4, 7)
  stats = soft_q_stats(logits, targets)
  seq = sequence_rewards(stats, where=where, gamma=1.0)
  first = np.argmax(where, axis=1)
  v0 = np.asarray(stats.v)[np.arange(4), first]
  want = np.sum(np.asarray(stats.log_probs) * where, axis=1) + v0
  np.testing.assert_allclose(seq, want, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_next_value():
  # ∂ℓ_0/∂v_1 = −2λγ r̂_0: no stop-gradient on the TD target.
  stats = TokenStats(q=jnp.array([[1.0, 2.0]]), v=jnp.array([[1.5, 2.5]]))
  where = jnp.ones((1, 2), bool)

  def first_loss(v):
    return iq_learn(TokenStats(stats.q, v), where=where, gamma=0.9, td_weight=0.3)[0][0, 0]

  g = jax.grad(first_loss)(stats.v)
  r0 = 1.0 - 0.9 * 2.5
  np.testing.assert_allclose(g, [[1.0, -2 * 0.3 * 0.9 * r0]], rtol=1e-6)


def test_iq_learn_gradients_float64():
  q, v, where, terminal, bootstrap = random_case((3, 6), seed=5)
  with jax.enable_x64(True):
    def f(q, v, b):
      loss, _ = iq_learn(TokenStats(q, v), where=where, gamma=0.95, td_weight=0.4,
                         terminal=terminal, bootstrap=b)
      return loss

    args = tuple(jnp.asarray(x, jnp.float64) for x in (q, v, bootstrap))
    check_grads(f, args, order=2, modes=("rev",))


# --- online ------------------------------------------------------------------


@pytest.mark.parametrize("chi2_on_mixture", [False, True])
@pytest.mark.parametrize(("mix", "gamma"), [(0.1, 1.0), (0.5, 0.9), (1.0, 0.0)])
def test_online_matches_reference(mix, gamma, chi2_on_mixture):
  eq, ev, ew, et, eb = random_case((3, 7), seed=6)
  pq, pv, pw, pt, pb = random_case((5, 4), seed=7)
  loss, extras = jax.jit(
      lambda *a: iq_learn_online(
          TokenStats(a[0], a[1]), TokenStats(a[5], a[6]), expert_where=a[2], policy_where=a[7],
          expert_terminal=a[3], expert_bootstrap=a[4], policy_terminal=a[8],
          policy_bootstrap=a[9], mix=mix, gamma=gamma, td_weight=0.3,
          chi2_on_mixture=chi2_on_mixture,
      )
  )(eq, ev, ew, et, eb, pq, pv, pw, pt, pb)
  want = ref_online(eq, ev, ew, et, eb, pq, pv, pw, pt, pb, mix, gamma, 0.3, chi2_on_mixture)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  _, pr, _ = ref_iq_learn(pq, pv, pw, gamma, 0.0, pt, pb)
  np.testing.assert_allclose(extras.policy_implied_rewards, pr, rtol=1e-5, atol=1e-6)


def test_online_mix_zero_equals_offline_values_and_gradients():
  eq, ev, ew, _, _ = random_case((3, 7), seed=8)
  pq, pv, pw, _, _ = random_case((2, 5), seed=9)

  def online(eq, ev, pq, pv):
    loss, _ = iq_learn_online(TokenStats(eq, ev), TokenStats(pq, pv), expert_where=ew,
                              policy_where=pw, mix=0.0, gamma=0.9, td_weight=0.2)
    return loss

  def offline(eq, ev, pq, pv):
    loss, _ = iq_learn(TokenStats(eq, ev), where=ew, gamma=0.9, td_weight=0.2)
    return token_mean(loss, ew)

  args = (eq, ev, pq, pv)
  l1, g1 = jax.value_and_grad(online, argnums=(0, 1, 2, 3))(*args)
  l2, g2 = jax.value_and_grad(offline, argnums=(0, 1, 2, 3))(*args)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(g1, g2, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(g1[2]) == 0) and np.all(np.asarray(g1[3]) == 0)


def test_online_value_term_trains_policy_values():
  # With α > 0 the policy batch's v gets gradient α/n_π · ∂(v − γ v_next).
  eq, ev, ew, _, _ = random_case((2, 4), seed=10)
  pq, pv = np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32)
  pw = np.ones((1, 3), bool)
  g = jax.grad(
      lambda pv: iq_learn_online(TokenStats(eq, ev), TokenStats(pq, pv), expert_where=ew,
                                 policy_where=pw, mix=0.3, gamma=1.0, td_weight=0.0)[0]
  )(pv)
  # E_π[v − v_next] = (v0 − v1 + v1 − v2 + v2) / 3 = v0 / 3  ->  ∂/∂v = [0.1, 0, 0].
  np.testing.assert_allclose(g, [[0.1, 0.0, 0.0]], atol=1e-7)


# --- errors, masking, finiteness --------------------------------------------


def test_truncated_rows_need_bootstrap():
  stats = TokenStats(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  where = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match="bootstrap"):
    iq_learn(stats, where=where, gamma=1.0, td_weight=0.1, terminal=jnp.array([True, False]))
  with pytest.raises(ValueError, match="bootstrap"):
    jax.jit(lambda t: iq_learn(stats, where=where, gamma=1.0, td_weight=0.1, terminal=t))(
        jnp.array([True, True])
    )
  with pytest.raises(ValueError, match="without `terminal`"):
    iq_learn(stats, where=where, gamma=1.0, td_weight=0.1, bootstrap=jnp.zeros(2))
  # All rows concretely terminal: no bootstrap needed.
  loss, _ = iq_learn(stats, where=where, gamma=1.0, td_weight=0.1, terminal=jnp.array([1, 1]))
  assert np.all(np.isfinite(loss))


def test_bad_shapes_and_hyperparameters():
  stats = TokenStats(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"shape \(2, 4\), expected \(2, 3\)"):
    iq_learn(stats, where=jnp.ones((2, 4), bool), gamma=1.0, td_weight=0.1)
  with pytest.raises(ValueError, match="gamma"):
    iq_learn(stats, where=jnp.ones((2, 3), bool), gamma=1.5, td_weight=0.1)
  with pytest.raises(ValueError, match="td_weight"):
    iq_learn(stats, where=jnp.ones((2, 3), bool), gamma=1.0, td_weight=-1.0)
  with pytest.raises(ValueError, match="mix"):
    iq_learn_online(stats, stats, expert_where=jnp.ones((2, 3), bool),
                    policy_where=jnp.ones((2, 3), bool), mix=2.0, gamma=1.0, td_weight=0.1)
  with pytest.raises(ValueError, match=r"bootstrap` has shape \(3,\), expected \(2,\)"):
    iq_learn(stats, where=jnp.ones((2, 3), bool), gamma=1.0, td_weight=0.1,
             terminal=jnp.array([True, False]), bootstrap=jnp.zeros(3))
  with pytest.raises(TypeError, match="mask"):
    iq_learn(stats, where=jnp.ones((2, 3)), gamma=1.0, td_weight=0.1)


HB, HT = 3, 6
finite = st.floats(-50, 50, width=32)
extreme = st.sampled_from([1e4, -1e4, 3e38, -3e38, np.inf, -np.inf, np.nan])


def _loss_and_grads(q, v, where, terminal, bootstrap):
  def total(q, v):
    loss, extras = iq_learn(TokenStats(q, v), where=where, gamma=0.9, td_weight=0.25,
                            terminal=terminal, bootstrap=bootstrap)
    return jnp.sum(loss), (loss, extras.implied_rewards)

  return jax.grad(total, argnums=(0, 1), has_aux=True)(q, v)


_jit_loss_and_grads = jax.jit(_loss_and_grads)


@given(
    q=hnp.arrays(np.float32, (HB, HT), elements=finite),
    v=hnp.arrays(np.float32, (HB, HT), elements=finite),
    junk=hnp.arrays(np.float32, (HB, HT), elements=extreme),
    spans=st.lists(st.tuples(st.integers(0, HT), st.integers(0, HT)), min_size=HB, max_size=HB),
    terminal=hnp.arrays(np.bool_, (HB,)),
)
def test_masked_positions_never_matter(q, v, junk, spans, terminal):
  where = np.zeros((HB, HT), bool)
  for i, (a, b) in enumerate(spans):
    where[i, min(a, b) : max(a, b)] = True  # empty rows included
  bootstrap = np.linspace(-1, 1, HB).astype(np.float32)
  (gq, gv), (loss, rewards) = _jit_loss_and_grads(q, v, where, terminal, bootstrap)
  q2, v2 = np.where(where, q, junk), np.where(where, v, junk[::-1])
  (gq2, gv2), (loss2, rewards2) = _jit_loss_and_grads(q2, v2, where, terminal, bootstrap)
  for a, b in ((loss, loss2), (rewards, rewards2), (gq, gq2), (gv, gv2)):
    assert np.all(np.isfinite(b))
    np.testing.assert_array_equal(a, b)
  assert np.all(np.asarray(loss)[~where] == 0)
  assert np.all(np.asarray(gq)[~where] == 0)


_jit_logit_loss = jax.jit(jax.value_and_grad(
    lambda x, t, w: token_mean(iq_learn(soft_q_stats(x, t), where=w, gamma=1.0, td_weight=1.0)[0],
                               w)
))


@given(
    signs=hnp.arrays(np.int8, (2, 4, 5), elements=st.sampled_from([-1, 0, 1])),
    targets=hnp.arrays(np.int32, (2, 4), elements=st.integers(0, 4)),
    lengths=hnp.arrays(np.int32, (2,), elements=st.integers(0, 4)),
    bf16=st.booleans(),
)
def test_extreme_logits_and_empty_rows_stay_finite(signs, targets, lengths, bf16):
  logits = jnp.asarray(signs * 1e4, jnp.bfloat16 if bf16 else jnp.float32)
  where = np.arange(4)[None, :] < lengths[:, None]
  loss, grad = _jit_logit_loss(logits, targets, where)
  assert np.isfinite(float(loss))
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  if not where.any():
    assert float(loss) == 0.0
