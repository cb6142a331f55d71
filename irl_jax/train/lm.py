"""Adapters from a language model and a batch to what the objectives consume.

Shared by the objectives, the host-side samplers (`irl_jax.train.rollouts`)
and the studies: token statistics at every position, the target mask, summed
sequence log-probs, bootstrap values of truncated rows. Batches follow
`irl_jax.data`'s contract: `input_ids`, `segment_ids` (0 = padding),
`positions`, `loss_mask` `[B, T]`; logits at `t` predict `input_ids[t+1]`,
and `loss_mask[:, 1:]` marks the targets.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from irl_jax import losses
from irl_jax.models.heads import last_token_index


def next_tokens(input_ids):
  """`input_ids` shifted left by one; the last column's target is a dummy 0."""
  return jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)


def lm_targets(loss_mask):
  """`where [B, T]`: position `t` is trained iff `input_ids[t+1]` is a loss target."""
  loss_mask = jnp.asarray(loss_mask).astype(bool)
  return jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)


def grouped_prompts(input_ids, segment_ids, positions, *, prompt_len: int, group_size: int):
  """`[]` bool: the rows form consecutive groups of `group_size` whose first `prompt_len`
  columns (ids, segment ids and positions) are identical within each group, and every row
  holds one segment (`segment_ids` in {0, 1}): the samplers' GRPO layout, which
  `Transformer.grouped_prefix_hidden` computes with each group's prompt run once."""
  ok = jnp.asarray(True)
  for x in (input_ids, segment_ids, positions):
    head = jnp.asarray(x)[:, :prompt_len].reshape(-1, group_size, prompt_len)
    ok = ok & jnp.all(head == head[:, :1])
  segment_ids = jnp.asarray(segment_ids)
  return ok & jnp.all((segment_ids == 0) | (segment_ids == 1))


def shares_prompts(model, shape, prompt_groups: tuple[int, int] | None) -> bool:
  """Static: whether `model_hidden` runs rows of `shape = (B, T)` with each group's prompt
  once. `prompt_groups = (prompt_len, group_size)`; never for models without
  `grouped_prefix_hidden`, a `group_size` of 1, one that does not divide `B`, or a
  `prompt_len` outside `(0, T)`."""
  if prompt_groups is None:
    return False
  p, g = prompt_groups
  b, t = shape
  return g > 1 and b % g == 0 and 0 < p < t and hasattr(model, "grouped_prefix_hidden")


def model_hidden(model, input_ids, segment_ids, positions, *,
                 prompt_groups: tuple[int, int] | None = None):
  """Final hidden states `[B, T, D]` of `model`'s forward pass.

  With `prompt_groups = (prompt_len, group_size)` (static) and `shares_prompts`, each
  group's prompt runs once (`Transformer.grouped_prefix_hidden`): the caller vouches for
  the layout (`grouped_prompts` checks it; in a group that breaks it, every row is
  computed with the group's first prompt). Otherwise the plain forward pass runs.
  """
  if shares_prompts(model, jnp.shape(input_ids), prompt_groups):
    p, g = prompt_groups
    return model.grouped_prefix_hidden(input_ids, segment_ids=segment_ids,
                                       positions=positions, prefix_len=p, group_size=g)
  return model(input_ids, segment_ids=segment_ids, positions=positions, return_hidden=True)


# The metric of GRPO with shared prompts: 1 when the sample rows are not groups sharing
# their prompt (the loss is then NaN), per update (micro-batches add).
PROMPT_GROUPS_BROKEN = "prompt_groups_broken"


def lm_stats(model, input_ids, segment_ids, positions, *, chunk_size: int | None,
             last: int | None = None, temperature: float = 1.0,
             prompt_groups: tuple[int, int] | None = None):
  """Token statistics `[B, T]` at every position (the last column's target is a dummy).

  `stats.q[:, t]` is the logit of `input_ids[:, t+1]` and `stats.v[:, t]` the
  soft value of the state after token `t`. With `chunk_size`, the statistics
  are computed from the hidden states in vocabulary chunks (no `[B, T, V]`
  logits are held). With `last` (a static int), only the last `last` positions
  are unembedded and scored, the earlier ones get zeros (`window_stats`): the
  logits of a prompt are never needed when only a response is scored. With
  `temperature` τ, the statistics are those of the logits divided by τ, so
  `log_probs` are the log-probabilities of the distribution a sampler draws from at τ.
  With `prompt_groups`, groups of rows that share their prompt run it once
  (`model_hidden`; the caller vouches for the layout).
  """
  hidden = model_hidden(model, input_ids, segment_ids, positions, prompt_groups=prompt_groups)
  return window_stats(hidden, model.unembedding, model.logits, input_ids, segment_ids,
                      chunk_size=chunk_size, last=last, temperature=temperature)


def window_stats(hidden, unembedding, logits, input_ids, segment_ids, *,
                 chunk_size: int | None, last: int | None = None, temperature: float = 1.0):
  """`TokenStats [B, T]` from final hidden states `[B, T, D]` (`lm_stats` after the model).

  `unembedding()` gives the `[D, V]` matrix (chunked path) and `logits(hidden)` the
  float32 logits (dense path). With `last` (static, `1 <= last`), only the columns
  `[T − last, T)` are scored and the earlier columns' statistics are zero, with no
  gradient; `last >= T` scores every column. `temperature` (static, > 0) divides the
  logits: the dense path divides the float32 logits, the chunked path the hidden states
  in float32 before the (linear, bias-free) unembedding, so both score `logits / τ`.
  """
  t = hidden.shape[1]
  if last is not None and not (isinstance(last, int) and last >= 1):
    raise ValueError(f"window_stats: last={last!r} must be a positive int (static).")
  if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)
          and temperature > 0):
    raise ValueError(f"window_stats: temperature={temperature!r} must be a finite number > 0 "
                     "(static); greedy decoding (0) has no log-probabilities to score.")
  tau = float(temperature)
  if tau != 1 and chunk_size:
    hidden = hidden.astype(jnp.float32) / tau
  start = 0 if last is None or last >= t else t - last
  targets = next_tokens(input_ids)[:, start:]
  # Padding slots hold no state: their statistics are zero and no gradient
  # (not even a NaN one from non-finite logits there) flows through them.
  real = jnp.asarray(segment_ids)[:, start:] > 0
  hidden = hidden[:, start:]
  if chunk_size:
    stats = losses.chunked_soft_q_stats(hidden, unembedding(), targets,
                                        chunk_size=chunk_size, where=real)
  else:
    # Padding rows are zeroed before the unembedding, where they are `D` wide, not `V`:
    # their logits are then `logits(0)` (finite), the same statistics and gradients come
    # out at real rows, and no pass over the `[B, T, V]` logits selects rows.
    scaled = logits(jnp.where(real[..., None], hidden, 0))
    if tau != 1:
      scaled = scaled / tau
    q, v = losses.soft_q_stats(scaled, jnp.where(real, targets, 0))
    stats = losses.TokenStats(q=jnp.where(real, q, 0), v=jnp.where(real, v, 0))
  if start:
    stats = jax.tree.map(lambda x: jnp.pad(x, ((0, 0), (start, 0))), stats)
  return stats


def response_window(max_new_tokens: int | None, length: int) -> int | None:
  """The `last` of `lm_stats` for sampled rows `[prompt | response]` whose responses fill
  the last `max_new_tokens` columns (the samplers' layout, `rollouts.sample_arrays`):
  their targets lie at positions `[T − M − 1, T − 1)`, so `M + 1` columns are scored;
  None (every column) when that is all of them."""
  if not max_new_tokens or max_new_tokens + 1 >= length:
    return None
  return int(max_new_tokens) + 1


# The metric of GRPO and PPO counting targets before the scored window (0 on sampler rows).
TARGETS_BEFORE_RESPONSE = "targets_before_response"


def targets_before(where, last: int | None):
  """`[]` int32: how many targets of `where [B, T]` lie before the last `last` columns."""
  if last is None or last >= where.shape[1]:
    return jnp.zeros((), jnp.int32)
  return jnp.sum(where[:, :where.shape[1] - last], dtype=jnp.int32)


def batch_stats(model, batch, *, chunk_size: int | None = None):
  """`(stats, where)` of a language-model batch."""
  stats = lm_stats(model, batch["input_ids"], batch["segment_ids"], batch["positions"],
                   chunk_size=chunk_size)
  return stats, lm_targets(batch["loss_mask"])


def flatten_responses(x):
  """`[B, K, T] -> [B·K, T]` (preference batches to language-model rows)."""
  return x.reshape(-1, x.shape[-1])


def sequence_log_probs(model, batch, *, chunk_size: int | None = None):
  """`[B, K]` summed response log-probs of preference batches `[B, K, T]`."""
  b, k, _ = batch["input_ids"].shape
  stats = lm_stats(model, flatten_responses(batch["input_ids"]),
                   flatten_responses(batch["segment_ids"]),
                   flatten_responses(batch["positions"]), chunk_size=chunk_size)
  where = lm_targets(flatten_responses(batch["loss_mask"]))
  return jnp.sum(jnp.where(where, stats.log_probs, 0), axis=-1).reshape(b, k)


def bootstrap_values(v, where):
  """`[B]` soft value of the state after each row's last target (for truncated rows).

  With `where[:, t]` marking the target `input_ids[t+1]`, the state after the
  last target is the one whose value is `v[:, t_last + 1]`.
  """
  last = last_token_index(where)
  return v[jnp.arange(v.shape[0]), jnp.minimum(last + 1, where.shape[1] - 1)]
