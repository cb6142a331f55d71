"""Reward-model refresh during RLHF (inverse alignment; the selection score is a
**reconstruction**).

A reward model fitted once on offline preferences is right near the data it saw, and
the policy stage moves away from there. A refresh, every `K` policy updates:

1. freeze the policy and sample its responses on the training prompts;
2. score every offline preference record by its closeness to those responses: the
   largest cosine similarity between the record's embedding and any response's
   (`nearest_similarity`; any encoder — the studies use the frozen base policy's mean
   final hidden state);
3. keep the `top_n` closest records plus `num_anchors` records drawn uniformly from the
   rest (`select_for_refresh`); the anchors keep the reward model tied to the whole data
   and break the loop in which the policy picks the data that grade it;
4. fine-tune the reward model from its current weights on that subset with a preference
   objective (Bradley–Terry by default), `steps` updates (`make_refresh`).

Everything is pure and jit-compatible, so a whole RLHF run with refreshes compiles into
one `lax.scan` and seeds can be vmapped. Dimensions: `N` records, `M` policy responses,
`E` embedding width.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from irl_jax.train.state import ModelDef, TrainState
from irl_jax.train.step import Objective, make_train_step


def _unit(x):
  x = jnp.asarray(x, jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))


def nearest_similarity(record_embeddings, policy_embeddings, *, policy_where=None) -> jax.Array:
  """`[N]` largest cosine similarity of each record to any valid policy response.

  Args:
    record_embeddings: `[N, E]`.
    policy_embeddings: `[M, E]`.
    policy_where: `[M]` valid responses (default all); with none valid, every score is −inf.
  """
  r, p = jnp.asarray(record_embeddings), jnp.asarray(policy_embeddings)
  if r.ndim != 2 or p.ndim != 2 or r.shape[1] != p.shape[1]:
    raise ValueError(f"nearest_similarity: expected record_embeddings [N, E] and "
                     f"policy_embeddings [M, E] with one E, got {r.shape} and {p.shape}.")
  cos = _unit(r) @ _unit(p).T
  if policy_where is not None:
    where = jnp.asarray(policy_where, bool)
    if where.shape != (p.shape[0],):
      raise ValueError(f"nearest_similarity: policy_where {where.shape} must be [M] = "
                       f"[{p.shape[0]}].")
    cos = jnp.where(where[None, :], cos, -jnp.inf)
  return jnp.max(cos, axis=1)


def select_for_refresh(similarity, key, *, top_n: int, num_anchors: int,
                       valid=None) -> jax.Array:
  """Indices `[top_n + num_anchors]` of the records a refresh trains on: the `top_n`
  most similar (ties to the lower index), then `num_anchors` drawn uniformly without
  replacement from the other valid records.

  Args:
    similarity: `[N]` closeness of each record to the policy (`nearest_similarity`).
    key: PRNG key of the anchor draw.
    top_n, num_anchors: static sizes, `top_n ≥ 1`, `num_anchors ≥ 0`.
    valid: `[N]` records that may be chosen (e.g. after a filter); default all. When it is
      concrete, fewer than `top_n + num_anchors` valid records raise `ValueError`; traced,
      that case cannot be checked and invalid records would fill the shortfall, so check
      the filter on the host first.

  Raises:
    ValueError: sizes out of range, or (concrete `valid`) too few valid records, naming
      the counts.
  """
  fn = "select_for_refresh"
  s = jnp.asarray(similarity, jnp.float32)
  if s.ndim != 1:
    raise ValueError(f"{fn}: similarity must be [N], got shape {s.shape}.")
  n = s.shape[0]
  for name, value, low in (("top_n", top_n, 1), ("num_anchors", num_anchors, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}.")
  if top_n + num_anchors > n:
    raise ValueError(f"{fn}: top_n + num_anchors = {top_n + num_anchors} exceeds the {n} "
                     "records.")
  valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
  if valid.shape != (n,):
    raise ValueError(f"{fn}: valid {valid.shape} must be [N] = [{n}].")
  try:
    count = int(jnp.sum(valid))
  except jax.errors.ConcretizationTypeError:
    count = None
  if count is not None and count < top_n + num_anchors:
    raise ValueError(f"{fn}: {count} records are left after filtering; a refresh needs "
                     f"top_n + num_anchors = {top_n + num_anchors}. "
                     + ("The filter left no record at all." if count == 0 else ""))
  score = jnp.where(valid, jnp.nan_to_num(s, nan=-jnp.inf), -jnp.inf)
  _, top = jax.lax.top_k(score, top_n)
  if num_anchors == 0:
    return top
  chosen = jnp.zeros((n,), bool).at[top].set(True)
  # Uniform anchors among the rest: random keys, invalid and chosen records last.
  noise = jax.random.uniform(key, (n,))
  rest = jnp.where(valid & ~chosen, noise, -1.0 - noise)
  _, anchors = jax.lax.top_k(rest, num_anchors)
  return jnp.concatenate([top, anchors])


def make_refresh(rm_def: ModelDef, objective: Objective, tx: optax.GradientTransformation, *,
                 steps: int, batch_size: int):
  """`refresh(params, data, indices, key) -> (params, metrics)`: `steps` updates of
  `objective` (a registered preference objective, e.g. `bradley_terry`) from the reward
  model's current `params`, with a fresh optimizer state, each on `batch_size` rows drawn
  uniformly with replacement from `data[indices]`; pure and jit-compatible.

  `metrics` are the train step's, stacked `[steps]` (`train/loss`, `train/accuracy`, ...).
  """
  for name, value in (("steps", steps), ("batch_size", batch_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"make_refresh: {name} must be a positive int, got {value!r}.")
  step_fn = make_train_step(rm_def, objective, tx)

  def refresh(params: Any, data: dict, indices, key) -> tuple[Any, dict]:
    indices = jnp.asarray(indices)
    k_rows, k_state = jax.random.split(key)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=tx.init(params), rng=jax.random.key_data(k_state))
    picks = jax.random.randint(k_rows, (steps, batch_size), 0, indices.shape[0])

    def one(state, rows):
      return step_fn(state, jax.tree.map(lambda x: x[indices[rows]], data))

    state, metrics = jax.lax.scan(one, state, picks)
    return state.params, metrics

  return refresh
