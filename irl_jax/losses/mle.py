"""Maximum likelihood (behaviour cloning) on response tokens (docs/objectives.md §3).

Dimensions: `B` batch rows, `T` response positions, `V` vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks
from irl_jax.losses.token_stats import TokenStats


def check_stats(fn: str, stats: TokenStats, where) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Validated `(q, v, where)` with masked slots zeroed (no NaN can leak through)."""
  if not isinstance(stats, TokenStats):
    raise TypeError(f"{fn}: `stats` must be a TokenStats(q, v), got {type(stats).__name__}.")
  _checks.check_rank(fn, "stats.q", stats.q, 2, "[B, T]")
  _checks.check_same_shape(fn, **{"stats.q": stats.q, "stats.v": stats.v})
  dtype = _checks.compute_dtype(stats.q, stats.v)
  q = _checks.as_float("stats.q", fn, stats.q, dtype)
  v = _checks.as_float("stats.v", fn, stats.v, dtype)
  where = _checks.as_mask("where", fn, where, q.shape)
  # Replacing masked slots before any arithmetic keeps gradients finite even
  # when those slots hold inf or NaN (a `where` after the fact would not).
  return jnp.where(where, q, 0), jnp.where(where, v, 0), where


def mle(stats: TokenStats, *, where) -> jax.Array:
  """Per-token negative log-likelihood `ℓ_t = v_t − q_t = −log π(a_t|s_t)`.

  Args:
    stats: `TokenStats` with `q`, `v` of shape `[B, T]`.
    where: `[B, T]` bool, true on response tokens (final EOS included).

  Returns:
    `[B, T]` float32, zero where `where` is false.

  Example:
    >>> loss = token_mean(mle(soft_q_stats(logits, targets, where=mask), where=mask), mask)

  Pass the same mask to `soft_q_stats` / `chunked_soft_q_stats`: this
  function zeroes masked slots of `stats`, which keeps its own gradient
  finite, but only the mask in the statistics keeps NaN or inf logits at
  masked positions out of the gradient w.r.t. the logits.
  """
  q, v, where = check_stats("mle", stats, where)
  return jnp.where(where, v - q, 0)


def token_entropy(logits, *, where) -> jax.Array:
  """Per-token entropy `H(π(·|s_t))` of `softmax(logits)` in float32, `[B, T]`.

  Used for entropy bonuses and diversity diagnostics. `logits`: `[B, T, V]`.
  """
  fn = "token_entropy"
  _checks.check_rank(fn, "logits", logits, 3, "[B, T, V]")
  logits = _checks.as_float("logits", fn, logits)
  where = _checks.as_mask("where", fn, where, logits.shape[:2])
  logp = jax.nn.log_softmax(jnp.where(where[..., None], logits, 0), axis=-1)
  # Tokens with -inf logits (banned tokens) contribute 0·log 0 = 0; the inner
  # `where` keeps that limit out of the gradient too.
  finite = jnp.isfinite(logp)
  logp = jnp.where(finite, logp, 0)
  ent = -jnp.sum(jnp.where(finite, jnp.exp(logp) * logp, 0), axis=-1)
  return jnp.where(where, ent, 0)
