"""Tests for irl_jax/losses/token_stats.py against a float64 NumPy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses import (
    TokenStats,
    chunked_soft_q_stats,
    iq_learn,
    mle,
    soft_q_stats,
    token_mean,
)


def reference_stats(logits, targets):
  """docs/objectives.md §2 in float64: q = target logit, v = logsumexp over the vocabulary."""
  logits = np.asarray(logits, np.float64)
  b, t, _ = logits.shape
  q = np.zeros((b, t))
  v = np.zeros((b, t))
  for i in range(b):
    for j in range(t):
      row = logits[i, j]
      m = row.max()
      v[i, j] = m + np.log(np.sum(np.exp(row - m)))
      q[i, j] = row[targets[i, j]]
  return q, v


def _inputs(shape, seed=0, scale=3.0):
  b, t, v = shape
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal((b, t, v))).astype(np.float32)
  targets = rng.integers(0, v, (b, t)).astype(np.int32)
  return logits, targets


@pytest.mark.parametrize("shape", [(1, 1, 2), (2, 5, 7), (3, 4, 33)])
def test_soft_q_stats_matches_reference(shape):
  logits, targets = _inputs(shape)
  stats = jax.jit(soft_q_stats)(logits, targets)
  q, v = reference_stats(logits, targets)
  assert isinstance(stats, TokenStats)
  assert stats.q.dtype == jnp.float32 and stats.v.dtype == jnp.float32
  np.testing.assert_allclose(stats.q, q, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(stats.v, v, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(stats.log_probs, q - v, rtol=1e-6, atol=1e-6)


def test_soft_q_stats_golden():
  # logits [0, log 3], target 1: q = log 3, v = log(1 + 3) = log 4.
  logits = jnp.array([[[0.0, np.log(3.0)]]])
  stats = soft_q_stats(logits, jnp.array([[1]]))
  np.testing.assert_allclose(stats.q, [[1.0986122886681098]], rtol=1e-7)
  np.testing.assert_allclose(stats.v, [[1.3862943611198906]], rtol=1e-7)
  np.testing.assert_allclose(stats.log_probs, [[np.log(0.75)]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_extreme_logits_stay_finite(dtype):
  logits = jnp.array([[[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]]], dtype)
  targets = jnp.array([[1, 0]])

  def f(x):
    s = soft_q_stats(x, targets)
    return jnp.sum(s.q - s.v)

  stats = jax.jit(soft_q_stats)(logits, targets)
  assert stats.q.dtype == jnp.float32
  assert np.all(np.isfinite(stats.q)) and np.all(np.isfinite(stats.v))
  # The reference sees the logits as stored (bf16 holds 1e4 as 9984).
  q, v = reference_stats(np.asarray(logits.astype(jnp.float32)), np.asarray(targets))
  np.testing.assert_allclose(stats.log_probs, q - v, rtol=1e-6)
  assert np.all(q - v < -1.9e4)
  grad = jax.jit(jax.grad(f))(logits)
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_negative_padding_ids_are_clipped_and_large_ids_raise():
  logits, _ = _inputs((1, 3, 5))
  stats = soft_q_stats(logits, jnp.array([[-100, 2, 4]]))
  assert np.all(np.isfinite(stats.q))
  with pytest.raises(ValueError, match=r"token id 5.*vocabulary of size 5"):
    soft_q_stats(logits, jnp.array([[0, 5, 1]]))
  with pytest.raises(ValueError, match=r"\(2, 3\).*\(1, 3\)"):
    soft_q_stats(logits, jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(TypeError, match="integer"):
    soft_q_stats(logits, jnp.zeros((1, 3), jnp.float32))
  with pytest.raises(ValueError, match="rank 3"):
    soft_q_stats(logits[0], jnp.zeros((3,), jnp.int32))


def test_soft_q_stats_gradients_float64():
  logits, targets = _inputs((2, 3, 5))
  with jax.enable_x64(True):
    f = lambda x: soft_q_stats(x, targets)
    check_grads(f, (jnp.asarray(logits, jnp.float64),), order=2, modes=("rev",))


# --- chunked == dense --------------------------------------------------------

B, T, D, V = 2, 5, 8, 37


def _hidden_inputs(seed=1, dtype=np.float32):
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((B, T, D)).astype(dtype)
  unembedding = rng.standard_normal((D, V)).astype(dtype)
  targets = rng.integers(0, V, (B, T)).astype(np.int32)
  weights = rng.standard_normal((2, B, T)).astype(dtype)
  return hidden, unembedding, targets, weights


def _dense(hidden, unembedding, targets):
  return soft_q_stats(jnp.einsum("btd,dv->btv", hidden, unembedding), targets)


def _functional(stats_fn, targets, weights):
  """A generic scalar of (q, v) so that both cotangents are non-trivial."""

  def f(hidden, unembedding):
    s = stats_fn(hidden, unembedding, targets)
    return jnp.sum(weights[0] * s.q + weights[1] * s.v + 0.1 * s.v**2)

  return f


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 36, 37, 64])
def test_chunked_equals_dense_values_and_gradients(chunk_size):
  hidden, unembedding, targets, weights = _hidden_inputs()
  chunked = functools.partial(chunked_soft_q_stats, chunk_size=chunk_size)
  got = jax.jit(chunked)(hidden, unembedding, targets)
  want = _dense(hidden, unembedding, targets)
  np.testing.assert_allclose(got.q, want.q, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got.v, want.v, rtol=1e-5, atol=1e-5)
  q, v = reference_stats(np.einsum("btd,dv->btv", hidden.astype(np.float64), unembedding), targets)
  np.testing.assert_allclose(got.q, q, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got.v, v, rtol=1e-5, atol=1e-5)

  g_chunked = jax.jit(jax.grad(_functional(chunked, targets, weights), argnums=(0, 1)))(
      hidden, unembedding
  )
  g_dense = jax.grad(_functional(_dense, targets, weights), argnums=(0, 1))(hidden, unembedding)
  for a, b in zip(g_chunked, g_dense, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_gradients_float64():
  hidden, unembedding, targets, weights = _hidden_inputs(seed=2)
  with jax.enable_x64(True):
    f = _functional(functools.partial(chunked_soft_q_stats, chunk_size=6), targets, weights)
    check_grads(
        f, (jnp.asarray(hidden, jnp.float64), jnp.asarray(unembedding, jnp.float64)), order=1,
        modes=("rev",),
    )


def test_chunked_bfloat16_is_finite_and_float32():
  hidden, unembedding, targets, weights = _hidden_inputs(seed=3)
  hidden = jnp.asarray(hidden * 3e3, jnp.bfloat16)  # logits of order ±1e4.
  unembedding = jnp.asarray(unembedding, jnp.bfloat16)
  chunked = functools.partial(chunked_soft_q_stats, chunk_size=8)
  stats = jax.jit(chunked)(hidden, unembedding, targets)
  assert stats.q.dtype == jnp.float32 and stats.v.dtype == jnp.float32
  assert np.all(np.isfinite(stats.q)) and np.all(np.isfinite(stats.v))
  gh, gw = jax.jit(jax.grad(_functional(chunked, targets, weights), argnums=(0, 1)))(
      hidden, unembedding
  )
  assert gh.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(gh, np.float32)))
  assert np.all(np.isfinite(np.asarray(gw, np.float32)))


def test_chunked_rejects_bad_shapes():
  hidden, unembedding, targets, _ = _hidden_inputs()
  with pytest.raises(ValueError, match=r"disagree on D"):
    chunked_soft_q_stats(hidden, unembedding[:-1], targets)
  with pytest.raises(ValueError, match="rank 3"):
    chunked_soft_q_stats(hidden[0], unembedding, targets)
  with pytest.raises(ValueError, match="chunk_size"):
    chunked_soft_q_stats(hidden, unembedding, targets, chunk_size=0)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    chunked_soft_q_stats(hidden, unembedding, targets + V)


# --- non-finite values at masked positions -------------------------------------


def _masked_case(seed=7):
  """Logits whose masked positions hold NaN/±inf, and the same with finite fills."""
  b, t, v = 3, 5, 6
  logits, targets = _inputs((b, t, v), seed=seed)
  where = np.zeros((b, t), bool)
  where[0, 1:4] = True
  where[1, :] = True  # row 2 is empty.
  targets = np.where(where, targets, -100).astype(np.int32)
  fills = np.array([np.nan, np.inf, -np.inf], np.float32)
  bad = logits.copy()
  for k, (i, j) in enumerate(zip(*np.nonzero(~where), strict=True)):
    bad[i, j, k % v] = fills[k % 3]
    if k % 2:
      bad[i, j, :] = fills[k % 3]
  return logits, bad, targets, where


_LOSSES = {
    "mle": lambda s, w: mle(s, where=w),
    "iq_learn": lambda s, w: iq_learn(s, where=w, gamma=0.9, td_weight=0.3)[0],
}


@pytest.mark.parametrize("loss", sorted(_LOSSES))
def test_soft_q_stats_where_keeps_nonfinite_masked_logits_out_of_gradients(loss):
  logits, bad, targets, where = _masked_case()
  objective = _LOSSES[loss]

  def f(x):
    return token_mean(objective(soft_q_stats(x, targets, where=where), where), where)

  value, grad = jax.jit(jax.value_and_grad(f))(logits)
  value_bad, grad_bad = jax.jit(jax.value_and_grad(f))(bad)
  assert np.isfinite(value_bad) and np.all(np.isfinite(grad_bad))
  np.testing.assert_array_equal(value_bad, value)
  np.testing.assert_array_equal(grad_bad, grad)
  np.testing.assert_array_equal(np.asarray(grad)[~where], 0.0)
  # Valid positions are the unmasked statistics; masked ones are 0.
  stats = jax.jit(functools.partial(soft_q_stats, where=where))(bad, targets)
  q, v = reference_stats(logits, np.clip(targets, 0, None))
  np.testing.assert_allclose(stats.q, np.where(where, q, 0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(stats.v, np.where(where, v, 0), rtol=1e-6, atol=1e-6)


def test_chunked_where_keeps_nonfinite_masked_hidden_out_of_gradients():
  hidden, unembedding, targets, _ = _hidden_inputs(seed=4)
  where = np.zeros((B, T), bool)
  where[0, 1:4] = True
  where[1, :2] = True
  bad = hidden.copy()
  bad[~where] = np.nan
  bad[0, 0, 0] = np.inf

  def f(stats_fn):
    def g(h, w):
      return token_mean(mle(stats_fn(h, w, targets, where=where), where=where), where)

    return jax.jit(jax.value_and_grad(g, argnums=(0, 1)))

  chunked = f(functools.partial(chunked_soft_q_stats, chunk_size=8))
  value, grads = chunked(hidden, unembedding)
  value_bad, grads_bad = chunked(bad, unembedding)
  np.testing.assert_array_equal(value_bad, value)
  for a, b in zip(grads_bad, grads, strict=True):
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.asarray(grads_bad[0])[~where], 0.0)

  def dense(h, w, tg, *, where):
    return soft_q_stats(jnp.einsum("btd,dv->btv", h, w), tg, where=where)

  # Dense on the finite hidden states (its own einsum would carry NaN·0 into
  # the unembedding gradient, which is why the chunked path masks `hidden`).
  value_dense, grads_dense = f(dense)(hidden, unembedding)
  np.testing.assert_allclose(value_bad, value_dense, rtol=1e-6)
  for a, b in zip(grads_bad, grads_dense, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
