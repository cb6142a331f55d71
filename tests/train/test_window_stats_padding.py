"""`lm.window_stats` on padded rows, both paths (dense logits and vocabulary chunks), with
and without a temperature and a response window: at real positions the statistics are the
float64 NumPy reference's (target logit and logsumexp of `h·W / τ`); at padding positions
they are 0, and non-finite hidden states there reach neither the statistics nor the
gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.train import lm

B, T, D, V = 3, 7, 8, 23


def _case(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, V, (B, T)).astype(np.int32)
  seg = (np.arange(T)[None] < np.array([[T], [4], [2]])).astype(np.int32)  # right padding
  seg[2] = np.arange(T) >= 3  # left padding in the last row
  hidden = rng.normal(size=(B, T, D)).astype(np.float32)
  w = (0.5 * rng.normal(size=(D, V))).astype(np.float32)
  return ids, seg, hidden, w


def _reference(ids, seg, hidden, w, tau, last):
  logits = hidden.astype(np.float64) @ w.astype(np.float64) / tau
  targets = np.concatenate([ids[:, 1:], np.zeros((B, 1), ids.dtype)], axis=1)
  m = logits.max(-1, keepdims=True)
  v = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  q = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  keep = seg > 0
  if last is not None:
    keep = keep & (np.arange(T)[None] >= T - last)
  return np.where(keep, q, 0), np.where(keep, v, 0), keep


@pytest.mark.parametrize("chunk_size,tau,last", [(None, 1.0, None), (None, 0.7, 4),
                                                 (8, 1.0, None), (8, 1.3, 5)])
def test_window_stats_padding_rows_are_zero_and_carry_no_gradient(chunk_size, tau, last):
  ids, seg, hidden, w = _case()
  q_ref, v_ref, keep = _reference(ids, seg, hidden, w, tau, last)
  # Non-finite hidden states on every padding row: they must not leak.
  poisoned = np.where((seg > 0)[..., None], hidden, np.nan).astype(np.float32)
  assert seg[1, -1] == 0
  poisoned[1, -1, 0] = np.inf  # and an infinity on a padding slot
  wj = jnp.asarray(w)

  def stats(h, w_):
    return lm.window_stats(h, lambda: w_, lambda x: x @ w_, jnp.asarray(ids), jnp.asarray(seg),
                           chunk_size=chunk_size, last=last, temperature=tau)

  s = jax.jit(stats)(jnp.asarray(poisoned), wj)
  np.testing.assert_allclose(np.asarray(s.q), q_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(s.v), v_ref, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(s.q)[~keep] == 0) and np.all(np.asarray(s.v)[~keep] == 0)

  def loss(h, w_):
    out = stats(h, w_)
    return jnp.sum(jnp.sin(out.q) + out.v ** 2)

  g_h, g_w = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(poisoned), wj)
  assert np.all(np.isfinite(np.asarray(g_h))) and np.all(np.isfinite(np.asarray(g_w)))
  assert np.all(np.asarray(g_h)[~keep] == 0)
  # The same gradient as from clean hidden states (padding rows zeroed by hand).
  clean = np.where(keep[..., None], hidden, 0).astype(np.float32)
  g_h2, g_w2 = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(clean), wj)
  np.testing.assert_allclose(np.asarray(g_h)[keep], np.asarray(g_h2)[keep], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_w), np.asarray(g_w2), rtol=1e-5, atol=1e-6)
