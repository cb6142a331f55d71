"""The training loop: mesh, model, data, objective, checkpoints, metrics, export.

`train(config, workdir)` runs a whole experiment from an `ml_collections`
config (see `experiments/configs/`): it resumes from the newest valid
checkpoint in `workdir/checkpoints` (parameters, optimizer state, step, PRNG
key and data-iterator position), stops with a clear error on a non-finite
loss or gradient (the update is not applied and no later checkpoint is
written), and exports the final model in Hugging Face format.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from irl_jax import models
from irl_jax.train import checkpoint as ckpt_lib
from irl_jax.train import objectives, optim, rollouts, sharding
from irl_jax.train.metrics import MetricWriter
from irl_jax.train.state import TrainState, init_train_state, split_model
from irl_jax.train.step import make_eval_step, make_train_step

REWARD_OBJECTIVES = ("bradley_terry", "plackett_luce", "pairwise_split")
PREFERENCE_OBJECTIVES = (*REWARD_OBJECTIVES, "dpo", "ipo")
SAMPLING_OBJECTIVES = ("iq_learn_online", "grpo")


class NonFiniteError(FloatingPointError):
  """A non-finite loss or gradient stopped the run."""


def maybe_initialize_distributed(config) -> None:
  """`jax.distributed.initialize` when the config asks for several processes."""
  dist = config.get("distributed")
  if dist is None or int(dist.get("num_processes", 1)) <= 1:
    return
  jax.distributed.initialize(
      coordinator_address=dist.coordinator_address,
      num_processes=int(dist.num_processes),
      process_id=int(dist.process_id),
      local_device_ids=dist.get("local_device_ids"),
  )


def _dtype(name: str):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_model(config, vocab_size: int):
  """The policy (or reward model) from a Hugging Face checkpoint or an architecture dict."""
  mc = config.model
  param_dtype, compute_dtype = _dtype(mc.get("dtype", "float32")), _dtype(
      mc.get("compute_dtype", mc.get("dtype", "float32")))
  if mc.get("pretrained"):
    model = models.from_pretrained(mc.pretrained, dtype=param_dtype, compute_dtype=compute_dtype,
                                   remat=mc.get("remat", False))
  else:
    arch = dict(mc.arch)
    arch.setdefault("vocab_size", vocab_size)
    model = models.Transformer(models.ModelConfig(**arch), rngs=nnx.Rngs(config.seed),
                               param_dtype=param_dtype, dtype=compute_dtype,
                               remat=mc.get("remat", False))
  if config.objective.name in REWARD_OBJECTIVES and not isinstance(model, models.RewardModel):
    model = models.RewardModel(model, rngs=nnx.Rngs(config.seed + 1))
  return model


def build_objective(config):
  o = config.objective
  chunk = o.get("chunk_size") or None
  name = o.name
  if name == "mle":
    return objectives.mle_objective(chunk_size=chunk, entropy_bonus=o.get("entropy_bonus", 0.0))
  if name == "iq_learn":
    return objectives.iq_learn_objective(gamma=o.gamma, td_weight=o.td_weight, chunk_size=chunk)
  if name == "iq_learn_online":
    return objectives.iq_learn_online_objective(gamma=o.gamma, td_weight=o.td_weight, mix=o.mix,
                                                chunk_size=chunk)
  if name in REWARD_OBJECTIVES:
    return objectives.reward_model_objective(ranking=name)
  if name in ("dpo", "ipo"):
    return objectives.direct_preference_objective(
        kind=name, beta=o.beta, label_smoothing=o.get("label_smoothing", 0.0), chunk_size=chunk)
  if name == "grpo":
    return objectives.grpo_objective(clip_epsilon=o.clip_epsilon, kl_coef=o.kl_coef,
                                     normaliser=o.get("normaliser", "token"), chunk_size=chunk)
  raise ValueError(f"unknown objective {name!r}.")


def _import(path: str):
  module, _, attr = path.partition(":")
  return getattr(importlib.import_module(module), attr)


def build_preparer(config, model_def, params, tokenizer):
  """Host-side batch preparation (reference log-probs, policy samples) or None."""
  o = config.objective
  chunk = o.get("chunk_size") or None
  if o.name in ("dpo", "ipo"):
    return rollouts.ReferenceLogProbs(model_def, params, chunk_size=chunk)
  if o.name in SAMPLING_OBJECTIVES:
    if jax.process_count() > 1:
      raise ValueError(f"objective {o.name!r} samples on the host; run it in one process.")
    reward_fn = _import(o.reward_fn)(tokenizer) if o.name == "grpo" else None
    return rollouts.PolicySampler(
        model_def, max_new_tokens=o.max_new_tokens, temperature=o.get("temperature", 1.0),
        num_samples=o.get("num_samples", 1), eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id or 0, reward_fn=reward_fn,
        ref_params=params if o.name == "grpo" else None, chunk_size=chunk, seed=config.seed)
  return None


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def train(config, workdir: str, *, data=None) -> dict[str, Any]:
  """Run (or resume) training; returns the last logged metrics.

  Args:
    config: an `ml_collections.ConfigDict` (see `experiments/configs/smoke.py`).
    workdir: output directory (checkpoints, metrics, TensorBoard, export).
    data: optional `(train_iterator, eval_batches_fn, tokenizer)`; by default
      built from `config.data` with `irl_jax.train.data_setup.build_data`.
  """
  maybe_initialize_distributed(config)
  os.makedirs(workdir, exist_ok=True)
  if data is None:
    from irl_jax.train.data_setup import build_data

    data = build_data(config, workdir)
  train_iter, eval_batches, tokenizer = data
  mesh = sharding.make_mesh(dict(config.mesh))
  model = build_model(config, len(tokenizer))
  model_def, params = split_model(model)
  tx, schedule = optim.make_optimizer(
      learning_rate=config.optimizer.learning_rate, warmup_steps=config.optimizer.warmup_steps,
      total_steps=config.steps, decay=config.optimizer.get("decay", "cosine"),
      weight_decay=config.optimizer.get("weight_decay", 0.0),
      clip_norm=config.optimizer.get("clip_norm", 1.0) or None)  # 0 or None: no clipping
  objective = build_objective(config)

  param_sh = sharding.param_shardings(model, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  del model
  params = jax.device_put(params, param_sh)
  init = jax.jit(lambda p: init_train_state(p, tx, config.seed))
  state = init(params)
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  state_sh = TrainState(step=replicated, params=param_sh, opt_state=state_sh.opt_state,
                        rng=replicated)
  state = jax.device_put(state, state_sh)
  ref_params = params  # frozen copy of the initial parameters (reference policy)

  micro = int(config.optimizer.get("micro_batches", 1))
  step_fn = jax.jit(make_train_step(model_def, objective, tx, schedule, micro_batches=micro),
                    donate_argnums=0, out_shardings=(state_sh, replicated))
  eval_fn = jax.jit(make_eval_step(model_def, objective))
  preparer = build_preparer(config, model_def, ref_params, tokenizer)

  checkpoints = ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints"), save_every=config.checkpoint_every,
      keep_last=config.get("keep_checkpoints", 3), best_metric=config.get("best_metric"),
      best_mode=config.get("best_mode", "min"))
  start = 0
  restored = checkpoints.restore_latest(_abstract(state, state_sh))
  if restored is not None:
    state, data_state, start = restored
    if data_state is not None:
      train_iter.set_state(data_state)
    if jax.process_index() == 0:
      print(f"resumed from step {start} in {workdir}", flush=True)

  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
  last: dict[str, Any] = {}
  pbar = None
  if jax.process_index() == 0 and config.get("progress_bar", True):
    from tqdm import tqdm

    pbar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True)
  tokens_seen, t0 = 0.0, time.perf_counter()
  try:
    for step in range(start, config.steps):
      local = next(train_iter)
      if preparer is not None:
        local = preparer(local, state.params)
      batch = sharding.global_batch(local, mesh)
      state, metrics = step_fn(state, batch)
      metrics = jax.device_get(metrics)
      if not metrics["train/finite"]:
        checkpoints.wait()
        good = checkpoints.steps
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step + 1} (loss={metrics['train/loss']}, "
            f"grad_norm={metrics['train/grad_norm']}); the update was not applied and training "
            f"stopped. Last good checkpoint: "
            f"{('step ' + str(good[-1])) if good else 'none'} in {checkpoints.directory}.")
      tokens_seen += float(np.sum(np.asarray(local.get("segment_ids", 0)) > 0))
      elapsed = time.perf_counter() - t0
      metrics["train/tokens_per_s"] = tokens_seen / max(elapsed, 1e-9)
      done = step + 1
      if pbar is not None:
        pbar.update(1)
        pbar.set_postfix(loss=f"{metrics['train/loss']:.4f}",
                         tok_s=f"{metrics['train/tokens_per_s']:.0f}")
      eval_metrics = None
      if config.get("eval_every") and (done % config.eval_every == 0 or done == config.steps):
        eval_metrics = evaluate(eval_fn, state.params, eval_batches, mesh, preparer, config)
        writer.write(done, eval_metrics)
        metrics.update(eval_metrics)
      if done % config.log_every == 0 or done == config.steps:
        writer.write(done, {k: v for k, v in metrics.items() if k.startswith("train/")})
      final = done == config.steps
      if checkpoints.due(done, force=final):  # the iterator state is fetched only then
        checkpoints.maybe_save(done, state, data_state=train_iter.get_state(),
                               metrics=eval_metrics, force=final)
      last = metrics
  finally:
    checkpoints.wait()
    checkpoints.close()
    writer.close()
    if pbar is not None:
      pbar.close()
  if config.get("export_hf", True):
    export(model_def, state.params, os.path.join(workdir, "export"), tokenizer)
  return {k: float(v) for k, v in last.items()}


def evaluate(eval_fn, params, eval_batches, mesh, preparer, config) -> dict[str, float]:
  """Exact means over the eval set: sums and counts add across batches."""
  total, count, sums, n = 0.0, 0.0, {}, 0
  key = jax.random.key(config.seed + 7)
  for local in eval_batches():
    if preparer is not None:
      local = preparer(local, params)
    s, c, m = jax.device_get(eval_fn(params, sharding.global_batch(local, mesh), key))
    total, count, n = total + float(s), count + float(c), n + 1
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  out = {"eval/loss": total / count if count else float("nan")}
  out.update({f"eval/{k}": v / n for k, v in sums.items()})
  return out


def export(model_def, params, path: str, tokenizer=None) -> None:
  """Write the trained model in Hugging Face format (process 0)."""
  from jax.experimental import multihost_utils

  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() != 0:
    return
  model = model_def.merge(jax.device_get(params))
  models.save_pretrained(model, path, tokenizer=tokenizer)
