"""The generic jit-compiled train step over any objective.

An objective is `objective(model, batch, rng) -> (loss, metrics)`: `loss` a
`MaskedMean(sum, count)`, or a tuple of them whose means add up to the loss
(one per token population; such an objective has `objective.counts(batch)`,
the populations' counts computed from the masks alone), `metrics` a dict of
scalars. Means are exact across devices and micro-batches: sums and counts
add, each mean is taken once. The step splits the batch into `micro_batches`
along its leading dimension, accumulates the gradient, clips, applies the
optimizer, and refuses a non-finite update (the state is kept and
`train/finite` is 0, so the loop can stop with the last good checkpoint
intact). A batch whose loss has no unmasked element (every count 0) carries no
signal: its update is skipped too (Adam's moments would otherwise still move
the weights), the step counter does not advance, and `train/skipped_empty` is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from irl_jax.losses.reductions import MaskedMean, safe_divide
from irl_jax.train.lm import PROMPT_GROUPS_BROKEN, TARGETS_BEFORE_RESPONSE
from irl_jax.train.state import ModelDef, TrainState

Objective = Callable[[Any, dict, jax.Array], tuple[Any, dict]]


def _populations(loss) -> tuple[tuple[jax.Array, jax.Array], ...]:
  """`((sum, count), ...)` of a loss (one `MaskedMean` or a tuple of them)."""
  if isinstance(loss, MaskedMean):
    loss = (loss,)
  if not (isinstance(loss, tuple) and loss and all(isinstance(m, MaskedMean) for m in loss)):
    raise TypeError("an objective's loss must be a MaskedMean(sum, count) or a tuple of them, "
                    f"got {type(loss).__name__}.")
  return tuple((m.sum.astype(jnp.float32), jnp.asarray(m.count, jnp.float32)) for m in loss)


# Objective metrics that are counts over the batch: micro-batches add them (the rest are means).
_COUNTS = ("tokens", TARGETS_BEFORE_RESPONSE, PROMPT_GROUPS_BROKEN)


def _combine_metrics(metrics: dict) -> dict:
  """Micro-batch metrics `[M]` -> one value: counts (`_COUNTS`) add, the rest are averaged."""
  return {k: jnp.sum(v, axis=0) if k in _COUNTS else jnp.mean(v, axis=0)
          for k, v in metrics.items()}


def _split_micro(batch: dict, micro_batches: int) -> dict:
  def split(name, x):
    if x.shape[0] % micro_batches:
      raise ValueError(
          f"batch[{name!r}] has {x.shape[0]} rows, not divisible by micro_batches="
          f"{micro_batches}" + (" (policy samples: make the sampled prompts times samples per "
                                "prompt a multiple of it)" if name.startswith("sample_") else "")
          + ".")
    return x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:])

  return {k: split(k, v) for k, v in batch.items()}


def loss_and_grads(model_def: ModelDef, objective: Objective, params, batch, rng, *,
                   micro_batches: int = 1):
  """`(loss, grads, metrics, count)`: the loss is the sum of its populations' means over
  the whole batch (all micro-batches), `count` their total count."""

  def loss_of(params, mb, key, weights=None):
    loss, metrics = objective(model_def.merge(params), mb, key)
    pops = _populations(loss)
    if weights is None:  # whole batch: each population's own mean
      value = sum(safe_divide(s, c) for s, c in pops)
    else:  # a micro-batch: sums weighted by the whole batch's 1 / count
      if len(weights) != len(pops):
        raise TypeError(f"the objective's loss has {len(pops)} populations; micro-batching "
                        "it needs objective.counts(batch) giving one count for each.")
      value = sum(s * w for (s, _), w in zip(pops, weights, strict=True))
    return value, (tuple(c for _, c in pops), metrics)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if micro_batches == 1:
    (value, (counts, metrics)), grads = grad_fn(params, batch, rng)
    return value, grads, metrics, sum(counts)

  micro = _split_micro(batch, micro_batches)
  keys = jax.random.split(rng, micro_batches)
  counts_fn = getattr(objective, "counts", None)
  if counts_fn is None:
    # One population: accumulate the gradient of the sum, divide by the count once.
    def body(carry, xs):
      total, count, grads = carry
      mb, key = xs
      (s, (c, m)), g = grad_fn(params, mb, key, (jnp.float32(1.0),))
      return (total + s, count + c[0], jax.tree.map(jnp.add, grads, g)), m

    zeros = jax.tree.map(jnp.zeros_like, params)
    (total, count, grads), metrics = jax.lax.scan(
        body, (jnp.float32(0), jnp.float32(0), zeros), (micro, keys))
    scale = safe_divide(jnp.float32(1.0), count)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    return total * scale, grads, _combine_metrics(metrics), count

  # Several populations: their whole-batch counts come from the masks first, so each
  # micro-batch's sums are weighted by the right 1 / count.
  counts = tuple(jnp.asarray(c, jnp.float32) for c in counts_fn(batch))
  weights = tuple(safe_divide(jnp.float32(1.0), c) for c in counts)

  def body(carry, xs):
    value, grads = carry
    mb, key = xs
    (v, (_, m)), g = grad_fn(params, mb, key, weights)
    return (value + v, jax.tree.map(jnp.add, grads, g)), m

  zeros = jax.tree.map(jnp.zeros_like, params)
  (value, grads), metrics = jax.lax.scan(body, (jnp.float32(0), zeros), (micro, keys))
  return value, grads, _combine_metrics(metrics), sum(counts)


def minibatch_rows(batch: dict, minibatches: int) -> int:
  """The rows of the arrays a minibatch split cuts: the `sample_*` rows when the batch has
  policy samples (the data rows then go whole to every minibatch), else the data rows.
  Raises `ValueError` when they disagree or do not divide by `minibatches`."""
  names = [n for n in batch if n.startswith("sample_")] or list(batch)
  rows = {batch[n].shape[0] for n in names}
  if len(rows) != 1:
    raise ValueError(f"minibatches: the arrays disagree on their number of rows: "
                     f"{ {n: batch[n].shape[0] for n in names} }.")
  n = rows.pop()
  if n % minibatches:
    raise ValueError(f"{n} {'sample ' if names[0].startswith('sample_') else ''}rows do not "
                     f"split into minibatches={minibatches} (config.objective.ppo."
                     "num_minibatches for PPO: make the prompts per batch times samples per "
                     "prompt a multiple of it).")
  return n


def make_train_step(model_def: ModelDef, objective: Objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, *, micro_batches: int = 1,
                    sampler: Callable[[Any, dict, jax.Array], dict] | None = None,
                    epochs: int = 1, minibatches: int = 1):
  """`step(state, batch) -> (state, metrics)`, pure (wrap it in `jax.jit`).

  With a `sampler(model, batch, key) -> batch` (e.g.
  `irl_jax.train.rollouts.in_step_sampler`), the step first draws the
  current policy's samples inside the compiled step, from parameters under
  `stop_gradient`, with a key split off the state's PRNG key. Sampling runs
  once on the whole batch, before micro-batching: the `sample_*` rows are
  split into micro-batches on their own (their count must divide too), so
  objectives whose populations are independent (online IQLearn: exact, with
  `objective.counts`) are unaffected, but one that pairs sample rows with data
  rows would need its own micro-batching.

  With `epochs * minibatches > 1` (PPO's several passes over one sample batch), the step
  makes `epochs` passes over the batch, each in a fresh random order of its rows cut into
  `minibatches`, and applies one optimizer update per minibatch (each with its own
  micro-batching, finite check and skip). The rows cut are the `sample_*` ones when the
  batch has policy samples (the data rows then go whole to every minibatch), else the
  data rows; they must divide by `minibatches`. `state.step` then counts updates
  (`epochs * minibatches` per step; size the schedule for that many), and the metrics are
  means over the updates (an objective's per-batch counts too), except `train/finite` (1
  only when every update was finite; a non-finite update is skipped and the others are
  applied), `train/skipped_empty` (the fraction skipped for an empty minibatch),
  `train/param_norm` (before the first update) and `train/updates_applied`.

  Metrics are `/`-namespaced scalars: `train/loss`, `train/grad_norm`,
  `train/param_norm`, `train/learning_rate`, `train/finite`, and the
  objective's own metrics under `train/`.
  """
  for name, value in (("epochs", epochs), ("minibatches", minibatches)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"make_train_step: {name} must be a positive integer, got {value!r}.")
  updates = epochs * minibatches

  def update(params, opt_state, step, batch, key):
    loss, grads, obj_metrics, count = loss_and_grads(
        model_def, objective, params, batch, key, micro_batches=micro_batches)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    empty = count <= 0
    apply = finite & ~empty
    new_updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, new_updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
    metrics = {"train/loss": loss, "train/grad_norm": grad_norm,
               "train/finite": finite.astype(jnp.float32),
               "train/skipped_empty": empty.astype(jnp.float32)}
    metrics.update({f"train/{k}": jnp.asarray(v, jnp.float32) for k, v in obj_metrics.items()})
    return (keep(new_params, params), keep(new_opt_state, opt_state),
            step + apply.astype(jnp.int32), metrics)

  def step(state: TrainState, batch: dict):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    if sampler is not None:
      step_rng, sample_rng = jax.random.split(step_rng)
      policy = model_def.merge(jax.lax.stop_gradient(state.params))
      batch = sampler(policy, batch, sample_rng)
    if updates == 1:
      params, opt_state, count, metrics = update(state.params, state.opt_state, state.step,
                                                 batch, step_rng)
    else:
      # Only row orders are made up front ([epochs, rows] ids); each update gathers its
      # minibatch, so no copy of the batch per epoch is held.
      n = minibatch_rows(batch, minibatches)
      cut = [k for k in batch if k.startswith("sample_")] or list(batch)
      order_key, update_key = jax.random.split(step_rng)
      orders = jax.vmap(lambda k: jax.random.permutation(k, n))(
          jax.random.split(order_key, epochs))
      slices = orders.reshape(updates, n // minibatches)

      def body(carry, xs):
        params, opt_state, count = carry
        rows, key = xs
        mb = {k: (v[rows] if k in cut else v) for k, v in batch.items()}
        params, opt_state, count, metrics = update(params, opt_state, count, mb, key)
        return (params, opt_state, count), metrics

      (params, opt_state, count), per_update = jax.lax.scan(
          body, (state.params, state.opt_state, state.step),
          (slices, jax.random.split(update_key, updates)))
      metrics = jax.tree.map(jnp.mean, per_update)
      # Targets outside the scored window: every epoch sees every row once, so the batch's
      # count is the sum over its updates over the epochs.
      outside = f"train/{TARGETS_BEFORE_RESPONSE}"
      if outside in per_update:
        metrics[outside] = jnp.sum(per_update[outside]) / epochs
      metrics["train/finite"] = jnp.min(per_update["train/finite"])
      metrics["train/updates_applied"] = (count - state.step).astype(jnp.float32)
    metrics["train/param_norm"] = optax.tree.norm(state.params)
    if schedule is not None:
      metrics["train/learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    return TrainState(step=count, params=params, opt_state=opt_state,
                      rng=jax.random.key_data(rng)), metrics

  return step


def make_eval_step(model_def: ModelDef, objective: Objective):
  """`eval_step(params, batch, rng) -> (sums, counts, metrics)` (one per loss population)
  for exact eval means: add sums and counts over batches, then add the means."""

  def eval_step(params, batch, rng):
    loss, metrics = objective(model_def.merge(params), batch, rng)
    pops = _populations(loss)
    return tuple(s for s, _ in pops), tuple(c for _, c in pops), metrics

  return eval_step
