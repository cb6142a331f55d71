"""Tests for irl_jax/losses/mle.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.losses import TokenStats, mle, soft_q_stats, token_entropy


def test_mle_is_negative_log_likelihood():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 4, 6)).astype(np.float32)
  targets = rng.integers(0, 6, (3, 4))
  where = rng.random((3, 4)) < 0.7
  got = jax.jit(lambda s, w: mle(s, where=w))(soft_q_stats(logits, targets), where)
  x = logits.astype(np.float64)
  logp = x - np.log(np.sum(np.exp(x), -1, keepdims=True))
  want = -np.take_along_axis(logp, targets[..., None], -1)[..., 0] * where
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mle_golden_and_masking():
  # q = 1, v = 3 -> -log π = 2; the masked slot holds NaN and stays 0.
  stats = TokenStats(q=jnp.array([[1.0, jnp.nan]]), v=jnp.array([[3.0, jnp.nan]]))
  where = jnp.array([[True, False]])
  np.testing.assert_array_equal(mle(stats, where=where), [[2.0, 0.0]])
  grad = jax.grad(lambda q: jnp.sum(mle(TokenStats(q, stats.v), where=where)))(stats.q)
  np.testing.assert_array_equal(grad, [[-1.0, 0.0]])


def test_mle_rejects_bad_stats():
  with pytest.raises(TypeError, match="TokenStats"):
    mle((jnp.zeros((1, 2)), jnp.zeros((1, 2))), where=jnp.ones((1, 2), bool))
  with pytest.raises(ValueError, match=r"stats.q\[1, 2\], stats.v\[1, 3\]"):
    mle(TokenStats(jnp.zeros((1, 2)), jnp.zeros((1, 3))), where=jnp.ones((1, 2), bool))


def test_token_entropy():
  # Uniform over 4 tokens: log 4; a banned token (-inf) is left out: log 3.
  logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -jnp.inf]]])
  where = jnp.array([[True, True]])
  want = [[np.log(4), np.log(3)]]
  np.testing.assert_allclose(token_entropy(logits, where=where), want, rtol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(token_entropy(x, where=where)))(logits)
  assert np.all(np.isfinite(grad))
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 5))
  p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
  want = -(p * np.log(p)).sum(-1)
  np.testing.assert_allclose(token_entropy(x.astype(np.float32), where=np.ones((2, 3), bool)),
                             want, rtol=1e-5)


def test_token_entropy_ignores_nonfinite_masked_rows():
  logits = jnp.array([[[0.0, 1.0, 2.0], [jnp.nan, jnp.inf, 0.0]]])
  where = jnp.array([[True, False]])
  ent = token_entropy(logits, where=where)
  assert float(ent[0, 1]) == 0.0 and np.isfinite(float(ent[0, 0]))
  grad = jax.grad(lambda x: jnp.sum(token_entropy(x, where=where)))(logits)
  np.testing.assert_array_equal(grad[0, 1], 0.0)
