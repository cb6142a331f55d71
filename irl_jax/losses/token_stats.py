"""Soft-Q token statistics: the language model as its own critic.

The logits of a causal LM at the position that predicts `y_t` are the soft
Q-values `Q(s_t, ·)` of the token MDP (docs/objectives.md §1.3). Every language-model objective
in `irl_jax.losses` reads two numbers per token from them:

    q[b, t] = logits[b, t, targets[b, t]]       Q(s_t, a_t)
    v[b, t] = logsumexp_v logits[b, t, v]       V(s_t), the soft value
    log π(a_t | s_t) = q − v

Dimensions: `B` batch rows, `T` positions (already shifted so that
`logits[b, t]` predicts `targets[b, t]`), `V` vocabulary, `D` model width,
`N = B·T` flattened tokens.

`chunked_soft_q_stats` computes the same two arrays from the final hidden
states and the unembedding matrix without holding `[B, T, V]` logits: it
scans over vocabulary chunks with an online logsumexp and recomputes each
chunk's logits in the backward pass.

Both take an optional response mask `where`. Pass it whenever masked
positions (prompt, padding) may hold non-finite logits or hidden states: the
objectives zero the cotangents of masked statistics, but a zero cotangent
times the NaN softmax of a non-finite row is still NaN, which would reach the
parameters. With `where`, masked rows are replaced by zeros before any
arithmetic, so values and gradients are exactly those of finite inputs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.losses import _checks


class TokenStats(NamedTuple):
  """Per-token soft-Q statistics, both `[B, T]` float32.

  Attributes:
    q: `Q(s_t, a_t)`, the logit of the target token.
    v: `V(s_t) = logsumexp Q(s_t, ·)`, the soft value of the state.
  """

  q: jax.Array
  v: jax.Array

  @property
  def log_probs(self) -> jax.Array:
    """`log π(a_t | s_t) = q − v`, `[B, T]`."""
    return self.q - self.v


def _check_targets(fn: str, targets, batch_shape, vocab_size: int) -> jax.Array:
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(f"{fn}: `targets` must be integer token ids, got dtype {targets.dtype}.")
  if tuple(targets.shape) != tuple(batch_shape):
    raise ValueError(
        f"{fn}: `targets` has shape {tuple(targets.shape)}, expected {tuple(batch_shape)} "
        "[B, T] to match the logits / hidden states."
    )
  if _checks.is_concrete(targets) and targets.size:
    hi = int(np.max(np.asarray(targets)))
    if hi >= vocab_size:
      raise ValueError(
          f"{fn}: `targets` contains token id {hi}, outside the vocabulary of size "
          f"{vocab_size}."
      )
  # Negative ids (e.g. -100 padding) are allowed at masked positions only; they
  # are clipped so that the gather stays in bounds and finite.
  return jnp.clip(targets, 0, vocab_size - 1)


def _check_where(fn: str, where, batch_shape) -> jax.Array | None:
  return None if where is None else _checks.as_mask("where", fn, where, batch_shape)


def soft_q_stats(logits, targets, *, where=None) -> TokenStats:
  """`q` = target logit and `v` = logsumexp of `logits`, in float32.

      q[b,t] = logits[b,t,targets[b,t]],   v[b,t] = logsumexp_v logits[b,t,v]

  Args:
    logits: `[B, T, V]`, any floating dtype (bfloat16 is upcast to float32).
    targets: `[B, T]` integer token ids in `[0, V)`. Negative ids (padding
      conventions such as -100) are allowed at positions the objective masks
      out; ids `>= V` raise when the array is concrete.
    where: optional `[B, T]` bool response mask. Masked rows of `logits` are
      replaced by zeros before any arithmetic and their `q`, `v` are 0, so
      NaN or ±inf logits there reach neither the values nor the gradient
      (without it, the gradient of such a row is NaN even though every
      objective ignores it). None (default) computes every position.

  Returns:
    `TokenStats(q, v)`, each `[B, T]` float32 (0 where `where` is false).

  Example:
    >>> stats = soft_q_stats(model_logits, input_ids[:, 1:], where=response_mask)
    >>> nll = mle(stats, where=response_mask)
  """
  fn = "soft_q_stats"
  _checks.check_rank(fn, "logits", logits, 3, "[B, T, V]")
  logits = _checks.as_float("logits", fn, logits)
  targets = _check_targets(fn, targets, logits.shape[:2], logits.shape[-1])
  where = _check_where(fn, where, logits.shape[:2])
  if where is not None:
    # Before the logsumexp, as in `token_entropy`: a `where` on its output
    # would not stop 0·NaN in the backward pass.
    logits = jnp.where(where[..., None], logits, 0)
  v = jax.nn.logsumexp(logits, axis=-1)
  q = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if where is not None:
    q, v = jnp.where(where, q, 0), jnp.where(where, v, 0)
  return TokenStats(q=q, v=v)


def chunked_soft_q_stats(
    hidden, unembedding, targets, *, chunk_size: int = 4096, where=None
) -> TokenStats:
  """`soft_q_stats(hidden @ unembedding, targets)` without the `[B, T, V]` logits.

  Scans over vocabulary chunks of `chunk_size` columns with an online
  logsumexp; the backward pass recomputes each chunk's logits, so peak memory
  is `O(N · chunk_size)` instead of `O(N · V)`. Values and gradients (w.r.t.
  `hidden` and `unembedding`) equal the dense computation to float32
  round-off. `chunk_size` need not divide `V`: the last chunk overlaps the
  previous one and its repeated columns are masked.

  Args:
    hidden: `[B, T, D]` final hidden states (any floating dtype).
    unembedding: `[D, V]` output projection (the transposed embedding table
      for tied models).
    targets: `[B, T]` integer token ids, as in `soft_q_stats`.
    chunk_size: vocabulary columns per chunk (static); clipped to `V`.
    where: optional `[B, T]` bool response mask, as in `soft_q_stats`: masked
      rows of `hidden` are replaced by zeros first (a NaN there would
      otherwise reach the gradient of `unembedding` through `hiddenᵀ·dlogits`)
      and their `q`, `v` are 0.

  Returns:
    `TokenStats(q, v)`, each `[B, T]` float32 (float64 for float64 inputs under
    x64; 0 where `where` is false); matmuls accumulate in that dtype.
  """
  fn = "chunked_soft_q_stats"
  _checks.check_rank(fn, "hidden", hidden, 3, "[B, T, D]")
  _checks.check_rank(fn, "unembedding", unembedding, 2, "[D, V]")
  hidden = jnp.asarray(hidden)
  unembedding = jnp.asarray(unembedding)
  for name, x in (("hidden", hidden), ("unembedding", unembedding)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{fn}: `{name}` must be floating, got dtype {x.dtype}.")
  b, t, d = hidden.shape
  if unembedding.shape[0] != d:
    raise ValueError(
        f"{fn}: `hidden` {tuple(hidden.shape)} [B, T, D] and `unembedding` "
        f"{tuple(unembedding.shape)} [D, V] disagree on D."
    )
  if not isinstance(chunk_size, int | np.integer) or chunk_size <= 0:
    raise ValueError(f"{fn}: `chunk_size` must be a positive int, got {chunk_size!r}.")
  vocab = unembedding.shape[1]
  targets = _check_targets(fn, targets, (b, t), vocab)
  chunk = int(min(chunk_size, vocab))
  where = _check_where(fn, where, (b, t))
  if where is not None:
    hidden = jnp.where(where[..., None], hidden, 0)
  q, v = _chunked_stats(hidden.reshape(b * t, d), unembedding, targets.reshape(b * t), chunk)
  q, v = q.reshape(b, t), v.reshape(b, t)
  if where is not None:
    q, v = jnp.where(where, q, 0), jnp.where(where, v, 0)
  return TokenStats(q=q, v=v)


def _chunk_logits(h, w, i, chunk: int):
  """Logits of vocabulary chunk `i` in float32, with repeated columns at -inf.

  The last chunk starts at `V - chunk` when `chunk` does not divide `V`, so it
  overlaps its predecessor; columns below `i * chunk` were already counted.
  """
  vocab = w.shape[1]
  nominal = i * chunk
  start = jnp.minimum(nominal, vocab - chunk)
  w_c = jax.lax.dynamic_slice_in_dim(w, start, chunk, axis=1)
  logits = jnp.dot(h, w_c, preferred_element_type=_checks.compute_dtype(h, w))
  cols = start + jnp.arange(chunk)
  fresh = cols >= nominal
  return jnp.where(fresh[None, :], logits, -jnp.inf), w_c, start, cols, fresh


def _target_hits(tg, cols, fresh):
  """`[N, C]` one-hot of each target among this chunk's fresh columns."""
  return (tg[:, None] == cols[None, :]) & fresh[None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked_stats(h, w, tg, chunk: int):
  return _chunked_forward(h, w, tg, chunk)


def _chunked_forward(h, w, tg, chunk: int):
  n = h.shape[0]
  num_chunks = -(-w.shape[1] // chunk)

  def body(i, carry):
    m, s, q = carry
    logits, _, _, cols, fresh = _chunk_logits(h, w, i, chunk)
    m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=-1)
    hits = _target_hits(tg, cols, fresh)
    q = q + jnp.sum(jnp.where(hits, logits, 0.0), axis=-1)
    return m_new, s, q

  acc = _checks.compute_dtype(h, w)
  init = (jnp.full((n,), -jnp.inf, acc), jnp.zeros((n,), acc), jnp.zeros((n,), acc))
  m, s, q = jax.lax.fori_loop(0, num_chunks, body, init)
  return q, m + jnp.log(s)


def _chunked_fwd(h, w, tg, chunk: int):
  q, v = _chunked_forward(h, w, tg, chunk)
  return (q, v), (h, w, tg, v)


def _chunked_bwd(chunk: int, residuals, cotangents):
  h, w, tg, v = residuals
  g_q, g_v = cotangents
  num_chunks = -(-w.shape[1] // chunk)
  mm_dtype = jnp.promote_types(h.dtype, w.dtype)
  acc = _checks.compute_dtype(h, w)

  def body(i, carry):
    dh, dw = carry
    logits, w_c, start, cols, fresh = _chunk_logits(h, w, i, chunk)
    probs = jnp.exp(logits - v[:, None])  # 0 on repeated columns.
    hits = _target_hits(tg, cols, fresh)
    dlogits = g_v[:, None] * probs + jnp.where(hits, g_q[:, None], 0.0)
    dlogits = dlogits.astype(mm_dtype)
    dh = dh + jnp.dot(dlogits, w_c.T, preferred_element_type=acc)
    dw_c = jnp.dot(h.T, dlogits, preferred_element_type=acc)
    prev = jax.lax.dynamic_slice_in_dim(dw, start, chunk, axis=1)
    dw = jax.lax.dynamic_update_slice_in_dim(dw, prev + dw_c, start, axis=1)
    return dh, dw

  init = (jnp.zeros(h.shape, acc), jnp.zeros(w.shape, acc))
  dh, dw = jax.lax.fori_loop(0, num_chunks, body, init)
  return dh.astype(h.dtype), dw.astype(w.dtype), None


_chunked_stats.defvjp(_chunked_fwd, _chunked_bwd)
