"""The training loop: mesh, model, data, objective, checkpoints, metrics, export.

`train(config, workdir)` runs a whole experiment from an `ml_collections`
config (see `experiments/configs/`): it checks the config (errors name the
field), takes a lock on the work directory (a second run on it stops at
once), resumes from the newest valid checkpoint in `workdir/checkpoints`
(parameters, optimizer state, step, PRNG key and data-iterator position; a
checkpoint made for another model or objective is refused with the list of
differing fields), checks that the tokenizer's ids fit the model, stops with a
clear error on a non-finite loss or gradient (the update is not applied and no
later checkpoint is written), and exports the final model in Hugging Face
format.

Policy stages (objectives whose registry entry has `sampler=True` and
`reward_fn=True`: GRPO, PPO) run the reward-hacking monitors of
`irl_jax.train.monitors` on every update, configured by `config.monitors`
(`monitors_config()`; on by default with the module's thresholds): they read
the samples' KL to the reference per sequence (`kl`), entropy (`entropy`),
mean response length (`response_length`) and mean reward (`proxy_reward`),
and the objective's `clip_fraction`. Alerts are logged as warnings and
appended to `workdir/alerts.jsonl`; a monitor with `action="stop"` ends the
run with `RewardHackingStop` once the step's metrics and checkpoint (if due)
are written. The monitors' state is saved with every checkpoint, so a resumed
run alerts exactly as an uninterrupted one (docs/policy_stages.md).

A reward-model run (an objective with a reward head) that has an eval set ends
with a held-out report (`reward_model_report`): accuracy, calibration and the
reward distribution on the eval rankings, written to
`workdir/reward_model_eval.json` and returned as `eval/rm_*`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import socket
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from irl_jax import models
from irl_jax.train import checkpoint as ckpt_lib
from irl_jax.train import generation, lm, optim, registry, rollouts, sharding
from irl_jax.train import monitors as monitors_lib
from irl_jax.train.data_setup import build_data
from irl_jax.train.metrics import MetricWriter
from irl_jax.train.state import TrainState, init_train_state, split_model
from irl_jax.train.step import make_eval_step, make_train_step


class NonFiniteError(FloatingPointError):
  """A non-finite loss or gradient stopped the run."""


class ConfigError(ValueError):
  """A config field holds a value the trainer cannot use; the message names the field."""


class WorkdirLockedError(RuntimeError):
  """Another run holds the work directory."""


class VocabularyError(ValueError):
  """Token ids (or the tokenizer's vocabulary) do not fit the model's vocabulary."""


def _field(config, dotted: str, default=None):
  node = config
  for part in dotted.split("."):
    if node is None or part not in node:
      return default
    node = node[part]
  return node


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_policy_stage(spec: registry.ObjectiveSpec) -> bool:
  """Whether an objective optimises a policy on a reward (it samples and scores its samples):
  the trainer runs the reward-hacking monitors on it."""
  return bool(spec.sampler and spec.reward_fn)


_MONITOR_TOP = ("enabled", "baseline_updates")


def monitors_config():
  """The `config.monitors` block with its defaults: `enabled` (all monitors on or off),
  `baseline_updates`, and one sub-config per monitor of `irl_jax.train.monitors.MonitorConfig`
  (`enabled`, `action` `"warn"` or `"stop"`, `patience`, `metric` and its thresholds)."""
  import ml_collections

  defaults = monitors_lib.MonitorConfig()
  c = ml_collections.ConfigDict()
  c.enabled = True
  c.baseline_updates = defaults.baseline_updates
  for name in monitors_lib.MONITORS:
    c[name] = ml_collections.ConfigDict(dataclasses.asdict(getattr(defaults, name)))
  return c


def monitor_config(config) -> monitors_lib.MonitorConfig | None:
  """The `MonitorConfig` of `config.monitors` (missing fields take their defaults), or None
  when `config.monitors.enabled` is False. Raises `ConfigError` naming the field."""
  block = _field(config, "monitors")
  raw = {} if block is None else (block.to_dict() if hasattr(block, "to_dict") else dict(block))
  known = (*_MONITOR_TOP, *monitors_lib.MONITORS)
  unknown = sorted(set(raw) - set(known))
  if unknown:
    raise ConfigError(f"config.monitors has unknown fields {unknown}; it takes {list(known)}.")
  enabled = raw.get("enabled", True)
  if not isinstance(enabled, bool):
    raise ConfigError(f"config.monitors.enabled={enabled!r}: must be True or False.")
  defaults = monitors_lib.MonitorConfig()
  kwargs = {}
  for name in monitors_lib.MONITORS:
    spec = getattr(defaults, name)
    sub = raw.get(name) or {}
    if not isinstance(sub, dict):
      raise ConfigError(f"config.monitors.{name}={sub!r}: must be a block of fields "
                        f"{sorted(dataclasses.asdict(spec))}.")
    fields = {f.name for f in dataclasses.fields(spec)}
    stray = sorted(set(sub) - fields)
    if stray:
      raise ConfigError(f"config.monitors.{name} has unknown fields {stray}; the {name} "
                        f"monitor takes {sorted(fields)}.")
    kwargs[name] = dataclasses.replace(spec, **sub)
  if "baseline_updates" in raw:
    kwargs["baseline_updates"] = raw["baseline_updates"]
  result = monitors_lib.MonitorConfig(**kwargs)
  try:
    monitors_lib.Monitors(result)  # checks every field
  except (TypeError, ValueError) as e:
    message = str(e).replace("MonitorConfig.", "config.monitors.")
    raise ConfigError(message) from None
  return result if enabled else None


def check_config(config) -> None:
  """Raise `ConfigError` naming the first field the trainer cannot use.

  Checked before anything is built or written (and before JAX starts, so that
  `jax.distributed.initialize` can still run): counts and intervals, the
  optimizer's numbers, dtypes, the objective's name, the mesh's axes, and the
  batch's divisibility by micro-batches and processes. Divisibility by the
  mesh's batch axes needs the devices and is checked once the mesh exists.
  """

  def need(ok: bool, dotted: str, what: str):
    if not ok:
      value = _field(config, dotted)
      value = value.to_dict() if hasattr(value, "to_dict") else value
      raise ConfigError(f"config.{dotted}={value!r}: {what}.")

  for name in ("steps", "checkpoint_every", "log_every", "data.batch_size"):
    value = _field(config, name)
    need(_is_int(value) and value > 0, name, "must be a positive integer")
  for name, default in (("keep_checkpoints", 3), ("optimizer.micro_batches", 1)):
    value = _field(config, name, default)
    need(_is_int(value) and value > 0, name, "must be a positive integer")
  eval_every = _field(config, "eval_every", 0)
  need(eval_every is None or (_is_int(eval_every) and eval_every >= 0), "eval_every",
       "must be a non-negative integer (0 disables evaluation)")
  lr = _field(config, "optimizer.learning_rate")
  need(isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0,
       "optimizer.learning_rate", "must be a finite number >= 0")
  warmup = _field(config, "optimizer.warmup_steps", 0)
  need(_is_int(warmup) and warmup >= 0, "optimizer.warmup_steps",
       "must be a non-negative integer")
  for name in ("model.dtype", "model.compute_dtype"):
    value = _field(config, name, "float32")
    need(value in _DTYPES, name, f"must be one of {sorted(_DTYPES)}")
  need(_field(config, "objective.name") in registry.names(), "objective.name",
       f"unknown objective; registered: {', '.join(registry.names())}")
  try:
    registry.hyperparameters(config.objective)
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(str(e).strip('"')) from None
  need(_field(config, "best_mode", "min") in ("min", "max"), "best_mode", "must be 'min' or 'max'")
  best = _field(config, "best_metric")
  need(best is None or (isinstance(best, str) and best.startswith("eval/")), "best_metric",
       "must name an eval metric ('eval/...'): checkpoints are ranked by evaluation")
  mesh = dict(_field(config, "mesh", {}) or {})
  unknown = sorted(set(mesh) - set(sharding.MESH_AXES))
  need(not unknown, "mesh", f"unknown mesh axes {unknown}; the axes are {sharding.MESH_AXES}")
  for axis, size in mesh.items():
    need(_is_int(size) and (size >= 1 or size == -1), f"mesh.{axis}",
         "must be a positive integer or -1 (all remaining devices)")
  gen = _field(config, "eval_generation")
  if gen is not None:
    value = gen.get("num_prompts", 0)
    need(_is_int(value) and value >= 0, "eval_generation.num_prompts",
         "must be a non-negative integer (0 disables generation metrics)")
  if gen is not None and gen.get("num_prompts", 0):
    for name in ("num_prompts", "num_samples", "max_new_tokens"):
      value = _field(config, f"eval_generation.{name}")
      need(_is_int(value) and value > 0, f"eval_generation.{name}", "must be a positive integer")
    t = _field(config, "eval_generation.temperature", 1.0)
    need(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0,
         "eval_generation.temperature", "must be a finite number >= 0")
    need(int(_field(config, "distributed.num_processes", 1) or 1) == 1,
         "eval_generation.num_prompts", "generation metrics run in one process; set it to 0 "
         "for multi-process runs")
    if _field(config, "objective.name") in registry.names():
      spec = registry.get(config.objective.name)
      need(spec.data == "demonstrations" and not spec.reward_head,
           "eval_generation.num_prompts", f"objective {spec.name!r} trains on "
           f"{'a reward head' if spec.reward_head else spec.data}; generation metrics need a "
           "policy and demonstration prompts (set it to 0)")
  micro = int(_field(config, "optimizer.micro_batches", 1))
  need(config.data.batch_size % micro == 0, "data.batch_size",
       f"must be divisible by config.optimizer.micro_batches={micro}")
  processes = int(_field(config, "distributed.num_processes", 1) or 1)
  need(config.data.batch_size % processes == 0, "data.batch_size",
       f"must split evenly over config.distributed.num_processes={processes} processes")
  _, minibatches = updates_per_batch(config)
  if minibatches > 1:
    hp = registry.hyperparameters(config.objective)
    rows = config.data.batch_size * int(getattr(hp, "num_samples", 1))
    name = config.objective.name
    need(rows % (minibatches * micro) == 0, f"objective.{name}.num_minibatches",
         f"the {rows} sample rows of a batch (data.batch_size x num_samples) must split into "
         f"{minibatches} minibatches" + (f" of {micro} micro-batches each" if micro > 1 else ""))
  monitor_config(config)


def _check_mesh_batch(config, mesh) -> None:
  """The global batch (and each micro-batch) and the eval batch must split over the mesh's
  batch axes."""
  ways = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
  axes = " x ".join(f"{a}={mesh.shape[a]}" for a in sharding.BATCH_AXES)
  processes = int(_field(config, "distributed.num_processes", 1) or 1)
  eval_size = _field(config, "data.eval_batch_size", None) or config.data.batch_size
  eval_rows = max(int(eval_size) // processes, 1) * processes  # as the data setup builds it
  if _field(config, "eval_every") and eval_rows % ways:
    raise ConfigError(
        f"config.data.eval_batch_size={eval_size}: eval batches of {eval_rows} rows must be "
        f"divisible by the mesh's batch axes ({axes} = {ways} ways).")
  micro = int(_field(config, "optimizer.micro_batches", 1))
  rows = config.data.batch_size // micro
  if rows % ways:
    raise ConfigError(
        f"config.data.batch_size={config.data.batch_size}: "
        + (f"each of the {micro} micro-batches has {rows} rows, which " if micro > 1 else "")
        + f"must be divisible by the mesh's batch axes ({axes} = {ways} ways); "
        f"change config.data.batch_size or config.mesh.")


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Hold an exclusive lock on `workdir` (process 0; every process learns the outcome).

  The lock is an `fcntl.flock` on `<workdir>/.lock`, released when the run ends
  or its process dies (so a killed run never leaves a stale lock). It guards
  runs on one host or on a file system with working `flock`.
  """
  path = os.path.join(workdir, ".lock")
  handle, holder, status = None, "", 0  # 0 locked, 1 held by another run, 2 error
  if jax.process_index() == 0:
    try:
      handle = open(path, "a+")  # held (and locked) for the whole run
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      status = 1
    except OSError as e:  # no permission, no lock support on this file system, ...
      holder, status = f"{type(e).__name__}: {e}", 2
    if status and handle is not None:
      handle.close()
      handle = None
  try:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      status = int(multihost_utils.broadcast_one_to_all(np.int32(status)))
    if status == 1:
      raise WorkdirLockedError(
          f"{workdir} is in use by another run ({holder or 'see process 0'}); wait for it to "
          "finish or give this run another --workdir.")
    if status == 2:
      raise WorkdirLockedError(f"could not lock {path} ({holder or 'see process 0'}).")
    if handle is not None:
      handle.seek(0)
      handle.truncate()
      handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
      handle.flush()
    yield
  finally:
    if handle is not None:
      fcntl.flock(handle, fcntl.LOCK_UN)
      handle.close()


def check_vocabulary(tokenizer, vocab_size: int, config) -> None:
  """The tokenizer's ids must all be rows of the model's embedding."""
  n = len(tokenizer)
  if n > vocab_size:
    source = (f"config.tokenizer.path={_field(config, 'tokenizer.path')!r}"
              if _field(config, "tokenizer.path") else "the character tokenizer of "
              "config.tokenizer.alphabet")
    model = (f"config.model.pretrained={_field(config, 'model.pretrained')!r}"
             if _field(config, "model.pretrained") else "config.model.arch")
    raise VocabularyError(
        f"the tokenizer ({source}) has {n} tokens but the model ({model}) embeds only "
        f"{vocab_size}: ids {vocab_size}..{n - 1} would have no embedding row. Use the model's "
        "own tokenizer or a model with a larger vocabulary.")


def check_token_ids(batch: dict, vocab_size: int, step: int) -> None:
  """Every id the model will embed must lie in `[0, vocab_size)` (host-side, before `jit`)."""
  for key in ("input_ids",):
    ids = batch.get(key)
    if ids is None:
      continue
    ids = np.asarray(ids)
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
      at = tuple(int(i) for i in np.argwhere(bad)[0])
      raise VocabularyError(
          f"batch for step {step + 1}: {key}{list(at)} = {int(ids[at])} is outside the model's "
          f"vocabulary [0, {vocab_size}) ({int(bad.sum())} such ids in the batch); the data's "
          "tokenizer does not match the model.")


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


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(name: str):
  return _DTYPES[name]


def _backbone(model) -> models.Transformer:
  """The `Transformer` inside a model (a reward model's backbone, a policy-value model's
  policy)."""
  return getattr(model, "backbone", rollouts.policy_of(model))


def _vocab_size(model) -> int:
  return int(_backbone(model).config.vocab_size)


def run_fingerprint(config, model) -> dict[str, Any]:
  """What a checkpoint is for: the resolved model architecture, its dtypes, the objective
  (its hyperparameters, except fields marked `metadata={"fingerprint": False}`: settings
  that change how the loss is computed, not its value)."""
  arch = dataclasses.asdict(_backbone(model).config)
  mc = config.model
  hp = registry.hyperparameters(config.objective)
  objective = dataclasses.asdict(hp)
  for f in dataclasses.fields(hp):
    if not f.metadata.get("fingerprint", True):
      objective.pop(f.name)
  return {
      "model": {"architecture": arch, "head": type(model).__name__,
                "dtype": mc.get("dtype", "float32")},
      "objective": {"name": config.objective.name, **objective},
  }


def build_model(config, vocab_size: int):
  """The policy (or reward model) from a Hugging Face checkpoint or an architecture dict.

  An objective with `spec.reward_head` gets the model wrapped in a `RewardModel`, one with
  `spec.value_head` (PPO) in a `PolicyValueModel` (a fresh value head on the policy).
  """
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
  spec = registry.get(config.objective.name)
  if spec.reward_head and not isinstance(model, models.RewardModel):
    model = models.RewardModel(model, rngs=nnx.Rngs(config.seed + 1))
  if spec.value_head:
    if isinstance(model, models.RewardModel):
      raise ConfigError(f"config.model.pretrained={mc.pretrained!r} is a reward model "
                        f"(*ForSequenceClassification); objective {spec.name!r} trains a "
                        "policy: load a causal LM.")
    model = models.PolicyValueModel(model, rngs=nnx.Rngs(config.seed + 1))
  return model


def build_objective(config):
  """The objective function of `config.objective` (through the registry)."""
  spec = registry.get(config.objective.name)
  return spec.build(registry.hyperparameters(config.objective))


def updates_per_batch(config) -> tuple[int, int]:
  """`(epochs, minibatches)`: the optimizer updates each batch makes (PPO's
  `ppo_epochs` passes of `num_minibatches`; `(1, 1)` for every other objective)."""
  hp = registry.hyperparameters(config.objective)
  return int(getattr(hp, "ppo_epochs", 1)), int(getattr(hp, "num_minibatches", 1))


def build_preparer(config, model_def, params, tokenizer, *, reward_fn=None):
  """Host-side batch preparation (reference log-probs, policy samples) or None.

  Args:
    reward_fn: for objectives that score samples (`spec.reward_fn`), a factory
      `reward_fn(tokenizer) -> score(prompt_ids, response_ids, response_mask) -> [N]`
      (given `prompt_mask=` too when it takes it; see `irl_jax.train.rewards`).
  """
  spec = registry.get(config.objective.name)
  hp = registry.hyperparameters(config.objective)
  chunk = int(getattr(hp, "chunk_size", 0)) or None
  if spec.sampler:
    if jax.process_count() > 1:
      raise ValueError(f"objective {spec.name!r} samples on the host; run it in one process.")
    score = None
    if spec.reward_fn:
      if reward_fn is None:
        raise ValueError(f"objective {spec.name!r} scores its samples: pass train(..., "
                         "reward_fn=...) (the entry point's task provides one).")
      score = reward_fn(tokenizer)
    value_targets = None
    if spec.value_head:
      value_targets = rollouts.ValueTargets(kl_coef=hp.kl_coef, gamma=hp.gamma, lam=hp.lam,
                                            whiten_advantages=hp.whiten_advantages)
    return rollouts.PolicySampler(
        model_def, max_new_tokens=hp.max_new_tokens, temperature=hp.temperature,
        num_samples=hp.num_samples, eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id or 0, reward_fn=score,
        ref_params=params if spec.reference else None, chunk_size=chunk, seed=config.seed,
        value_targets=value_targets)
  if spec.reference:
    return rollouts.ReferenceLogProbs(model_def, params, chunk_size=chunk)
  return None


# The monitors' default metric names, read from the samples' statistics the trainer logs.
_SAMPLE_METRICS = {"kl": "train/samples/kl", "entropy": "train/samples/entropy",
                   "response_length": "train/samples/response_length",
                   "proxy_reward": "train/samples/reward"}


def monitor_inputs(metrics: dict) -> dict:
  """What the monitors can read from a step's metrics: every metric under its own name and,
  for `train/...` ones, without the prefix (the objective's `clip_fraction`, ...); then `kl`,
  `entropy`, `response_length` and `proxy_reward` of the samples (`train/samples/...`; the
  objective's own per-token `kl` stays `train/kl`)."""
  out = dict(metrics)
  out.update({k[len("train/"):]: v for k, v in metrics.items() if k.startswith("train/")})
  out.update({k: metrics[v] for k, v in _SAMPLE_METRICS.items() if v in metrics})
  return out


def _check_monitor_inputs(monitors, inputs: dict, objective: str) -> None:
  """Every metric an enabled monitor reads must be there (else `ConfigError` naming it)."""
  for name in monitors.enabled:
    spec = getattr(monitors.config, name)
    for attr in (("proxy_metric", "metric") if name == "gold" else ("metric",)):
      metric = getattr(spec, attr)
      if metric not in inputs:
        have = sorted(k for k in inputs if "/" not in k)
        raise ConfigError(
            f"config.monitors.{name}.{attr}={metric!r}: objective {objective!r} gives no such "
            f"metric (it gives {have}, and every train/... metric); name one of them or set "
            f"config.monitors.{name}.enabled=False.")


def _record_alerts(workdir: str, alerts) -> None:
  """Append the alerts to `workdir/alerts.jsonl` (process 0)."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "alerts.jsonl"), "a") as f:
    for a in alerts:
      f.write(json.dumps(a._asdict()) + "\n")


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def train(config, workdir: str, *, data=None, task=None, reward_fn=None,
          checker=None) -> dict[str, Any]:
  """Run (or resume) training; returns the last logged metrics.

  Args:
    config: an `ml_collections.ConfigDict` (see `experiments/configs/smoke.py`).
      `config.allow_config_change=True` resumes from checkpoints made with a
      different model or objective configuration (the array shapes must still
      match); by default that is a `ConfigMismatchError`.
    workdir: output directory (checkpoints, metrics, TensorBoard, export).
    data: optional `(train_iterator, eval_batches_fn, tokenizer)`; by default
      built from `config.data` with `irl_jax.train.data_setup.build_data`.
    task: optional data generator for runs without `config.data.path`: an
      object with `write_demonstrations(path, *, num_examples, seed)` and, for
      preference objectives, `write_preferences(...)` (see `build_data`).
    reward_fn: for objectives that score samples (GRPO, PPO), a factory
      `reward_fn(tokenizer) -> score(prompt_ids, response_ids, response_mask)`
      (`irl_jax.train.rewards.reward_fn_from_config` builds one from
      `config.reward`).
    checker: for `config.eval_generation` (generation metrics at every
      evaluation), the task's `checker(prompt, reference, response) ->
      (score, correct)` (see `irl_jax.train.generation`).

  Raises:
    ConfigError: a config field is unusable (the message names it).
    WorkdirLockedError: another run holds `workdir`.
    ConfigMismatchError: the checkpoints in `workdir` were made for another
      configuration (they are left intact).
    VocabularyError: the tokenizer or a batch holds ids the model cannot embed.
    NonFiniteError: a non-finite loss or gradient (the update was not applied).
    RewardHackingStop: in a policy stage, a monitor of `config.monitors` with
      `action="stop"` fired (the step's metrics and due checkpoint are written
      first; the message names the metric, the step and the last checkpoint).
  """
  check_config(config)
  if _generation_settings(config) is not None and checker is None:
    raise ConfigError("config.eval_generation.num_prompts > 0 needs the task's checker: "
                      "train(..., checker=...).")
  maybe_initialize_distributed(config)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock(workdir):
    return _train_locked(config, workdir, data, task, reward_fn, checker)


def _generation_settings(config):
  """`config.eval_generation` when it asks for generation metrics, else None."""
  gen = _field(config, "eval_generation")
  if gen is None or not int(gen.get("num_prompts", 0) or 0):
    return None
  return gen


def eval_prompts(eval_batches, num_prompts: int) -> dict | None:
  """The first `num_prompts` real rows of the eval set (host arrays), or None."""
  rows, have = [], 0
  for local in eval_batches():
    real = np.asarray(local["segment_ids"]).max(axis=1) > 0
    part = {k: np.asarray(local[k])[real] for k in ("input_ids", "segment_ids", "positions",
                                                     "loss_mask")}
    rows.append(part)
    have += int(real.sum())
    if have >= num_prompts:
      break
  if not have:
    return None
  # Buckets give batches of different widths: pad each part to the widest (padding is
  # segment 0, no target).
  width = max(r["input_ids"].shape[1] for r in rows)
  padded = [{k: np.pad(v, ((0, 0), (0, width - v.shape[1]))) for k, v in r.items()}
            for r in rows]
  return {k: np.concatenate([r[k] for r in padded])[:num_prompts] for k in rows[0]}


def generation_eval(model_def, params, prompts: dict, tokenizer, gen, checker, *, step: int,
                    seed: int, workdir: str | None = None) -> dict[str, float]:
  """`eval/gen_*` metrics of the policy's samples on the eval prompts
  (`irl_jax.train.generation.generation_metrics`); the samples are written to
  `workdir/samples/<step>.jsonl`."""
  metrics = generation.generation_metrics(
      rollouts.policy_of(model_def.merge(params)), prompts, tokenizer, checker=checker,
      key=jax.random.fold_in(jax.random.key(seed + 11), step),
      temperature=float(gen.get("temperature", 1.0)), num_samples=int(gen.num_samples),
      max_new_tokens=int(gen.max_new_tokens), gamma=float(gen.get("gamma", 1.0)),
      prompt_len=int(gen.get("prompt_len", 0) or 0) or None,
      rows=int(gen.get("rows", 0) or 0) or None)
  responses = metrics.pop("responses")
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    with open(os.path.join(workdir, "samples", f"{step}.jsonl"), "w") as f:
      for r in responses:
        f.write(json.dumps({"step": step, "response": r}) + "\n")
  return {f"eval/gen_{k}": float(v) for k, v in metrics.items()}


def _train_locked(config, workdir: str, data, task, reward_fn, checker) -> dict[str, Any]:
  if data is None:
    data = build_data(config, workdir, task=task)
  train_iter, eval_batches, tokenizer = data
  try:
    mesh = sharding.make_mesh(dict(config.get("mesh") or {}))
  except ValueError as e:
    raise ConfigError(f"config.mesh={dict(config.get('mesh') or {})!r}: {e}") from None
  _check_mesh_batch(config, mesh)
  model = build_model(config, len(tokenizer))
  vocab_size = _vocab_size(model)
  check_vocabulary(tokenizer, vocab_size, config)
  fingerprint = run_fingerprint(config, model)
  model_def, params = split_model(model)
  epochs, minibatches = updates_per_batch(config)
  per_batch = epochs * minibatches
  tx, schedule = optim.make_optimizer(
      learning_rate=config.optimizer.learning_rate,
      warmup_steps=config.optimizer.get("warmup_steps", 0) * per_batch,
      total_steps=config.steps * per_batch, decay=config.optimizer.get("decay", "cosine"),
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
  step_fn = jax.jit(make_train_step(model_def, objective, tx, schedule, micro_batches=micro,
                                    epochs=epochs, minibatches=minibatches),
                    donate_argnums=0, out_shardings=(state_sh, replicated))
  eval_fn = jax.jit(make_eval_step(model_def, objective))
  preparer = build_preparer(config, model_def, ref_params, tokenizer, reward_fn=reward_fn)
  monitors = None
  if is_policy_stage(registry.get(config.objective.name)):
    monitor_cfg = monitor_config(config)
    monitors = None if monitor_cfg is None else monitors_lib.Monitors(monitor_cfg)

  checkpoints = ckpt_lib.Checkpoints(
      os.path.join(workdir, "checkpoints"), save_every=config.checkpoint_every,
      keep_last=config.get("keep_checkpoints", 3), best_metric=config.get("best_metric"),
      best_mode=config.get("best_mode", "min"), fingerprint=fingerprint,
      allow_config_change=bool(config.get("allow_config_change", False)))
  writer = None
  pbar = None
  last: dict[str, Any] = {}
  try:
    start = 0
    restored = checkpoints.restore_latest(_abstract(state, state_sh))
    if restored is not None:
      state, data_state, start = restored
      if data_state is not None:
        train_iter.set_state(data_state)
      if monitors is not None:
        host = checkpoints.restored_host_state or {}
        if "monitors" in host:
          monitors.load_state_dict(host["monitors"])
        else:
          logging.warning("checkpoint step %d holds no reward-hacking monitor state; the "
                          "monitors start afresh (their initial values are taken again).", start)
      if jax.process_index() == 0:
        print(f"resumed from step {start} in {workdir}", flush=True)

    writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
    if jax.process_index() == 0 and config.get("progress_bar", True):
      from tqdm import tqdm

      pbar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True)
    gen = _generation_settings(config)
    gen_prompts = None
    if gen is not None:
      if jax.process_count() > 1:
        raise ConfigError("config.eval_generation.num_prompts: generation metrics run in one "
                          f"process, this run has {jax.process_count()}; set it to 0.")
      # Built and checked once, before the first step: a prompt too long for
      # eval_generation.prompt_len stops the run here, not at its first evaluation.
      gen_prompts = eval_prompts(eval_batches, int(gen.num_prompts))
      if gen_prompts is not None and int(gen.get("prompt_len", 0) or 0):
        try:
          rollouts.check_prompt_lengths(gen_prompts, int(gen.prompt_len))
        except ValueError as e:
          raise ConfigError(f"config.eval_generation.prompt_len={gen.prompt_len}: eval {e}"
                            ) from None
    tokens_seen, t0 = 0.0, time.perf_counter()
    for step in range(start, config.steps):
      local = next(train_iter)
      check_token_ids(local, vocab_size, step)
      step_start = time.perf_counter()
      samples = {}
      if isinstance(preparer, rollouts.PolicySampler):
        # Samples keyed by the step: a resumed run draws the same ones.
        try:
          local, samples = preparer.sample(local, state.params, step=step)
        except ValueError as e:  # e.g. a reward source's NaN (irl_jax.train.rewards)
          e.add_note(f"while sampling and scoring the samples of step {step + 1}")
          raise
      elif preparer is not None:
        local = preparer(local, state.params)
      batch = sharding.global_batch(local, mesh)
      state, metrics = step_fn(state, batch)
      metrics = jax.device_get(metrics)
      # This step's wall time (the fetch above waits for it), host-side sampling included,
      # without evaluation, checkpointing or data loading.
      metrics["train/step_seconds"] = time.perf_counter() - step_start
      if not metrics["train/finite"]:
        checkpoints.wait()
        good = checkpoints.steps
        which = ("the update was not applied" if per_batch == 1 else
                 f"of its {per_batch} updates, {int(metrics['train/updates_applied'])} were "
                 "applied and the non-finite ones skipped")
        outside = float(metrics.get(f"train/{lm.TARGETS_BEFORE_RESPONSE}", 0.0))
        why = ("" if not outside > 0 else
               f" The sample rows hold targets before their last max_new_tokens columns "
               f"(train/{lm.TARGETS_BEFORE_RESPONSE}={outside:g}): the objective "
               "scores only the responses of [prompt | response] rows, whose response fills "
               f"the last config.objective.{config.objective.name}.max_new_tokens columns.")
        broken = float(metrics.get(f"train/{lm.PROMPT_GROUPS_BROKEN}", 0.0))
        if broken > 0:
          why += (f" The sample rows are not groups of config.objective."
                  f"{config.objective.name}.num_samples consecutive rows sharing their prompt "
                  f"(train/{lm.PROMPT_GROUPS_BROKEN}={broken:g}): share_prompts runs each "
                  "group's prompt once; set config.objective."
                  f"{config.objective.name}.share_prompts=False for rows laid out otherwise.")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step + 1} (loss={metrics['train/loss']}, "
            f"grad_norm={metrics['train/grad_norm']}); {which}, and training "
            f"stopped. Last good checkpoint: "
            f"{('step ' + str(good[-1])) if good else 'none'} in {checkpoints.directory}."
            + why)
      done = step + 1
      final = done == config.steps
      metrics.update({f"train/samples/{'reward' if k == 'proxy_reward' else k}": v
                      for k, v in samples.items()})
      # Batches without targets leave the weights alone; their running count is the
      # gap between data steps and applied updates.
      metrics["train/skipped_updates"] = float(done * per_batch
                                               - int(jax.device_get(state.step)))
      tokens_seen += float(np.sum(np.asarray(local.get("segment_ids", 0)) > 0))
      elapsed = time.perf_counter() - t0
      metrics["train/tokens_per_s"] = tokens_seen / max(elapsed, 1e-9)
      if pbar is not None:
        pbar.update(1)
        pbar.set_postfix(loss=f"{metrics['train/loss']:.4f}",
                         tok_s=f"{metrics['train/tokens_per_s']:.0f}")
      saving = checkpoints.due(done, force=final)
      stop = None
      if monitors is not None:
        inputs = monitor_inputs(metrics)
        _check_monitor_inputs(monitors, inputs, config.objective.name)
        try:
          alerts = monitors.update(done, inputs, checkpoint_step=done if saving else None)
        except monitors_lib.RewardHackingStop as e:
          stop, alerts = e, e.alerts
        if alerts:
          _record_alerts(workdir, alerts)
      eval_metrics = None
      if config.get("eval_every") and (done % config.eval_every == 0 or done == config.steps):
        eval_metrics = evaluate(eval_fn, state.params, eval_batches, mesh, preparer, config,
                                step=done)
        if gen_prompts is not None:
          eval_metrics.update(generation_eval(model_def, state.params, gen_prompts, tokenizer,
                                              gen, checker, step=done, seed=config.seed,
                                              workdir=workdir))
        writer.write(done, eval_metrics)
        metrics.update(eval_metrics)
      if done % config.log_every == 0 or final or stop is not None:
        writer.write(done, {k: v for k, v in metrics.items() if k.startswith("train/")})
      if saving:  # the iterator state is fetched only then
        checkpoints.maybe_save(
            done, state, data_state=train_iter.get_state(), metrics=eval_metrics, force=final,
            host_state=None if monitors is None else {"monitors": monitors.state_dict()})
      last = metrics
      if stop is not None:
        checkpoints.wait()
        good = checkpoints.steps
        stop.add_note(
            f"The run stopped after step {done} (its metrics and checkpoint, if one was due, "
            f"are written). Checkpoints: {good or 'none'} in {checkpoints.directory}; alerts: "
            f"{os.path.join(workdir, 'alerts.jsonl')}. To go on, change config.monitors."
            f"{stop.alerts[0].monitor} (e.g. action='warn') and resume.")
        raise stop
  finally:
    checkpoints.close()  # waits for pending saves
    if writer is not None:
      writer.close()
    if pbar is not None:
      pbar.close()
  out = {k: float(v) for k, v in last.items()}
  if registry.get(config.objective.name).reward_head:
    report = reward_model_report(model_def, state.params, eval_batches, mesh)
    if report is not None:
      if jax.process_index() == 0:
        with open(os.path.join(workdir, "reward_model_eval.json"), "w") as f:
          json.dump(report, f, indent=1)
      out.update({f"eval/rm_{k}": float(report[k])
                  for k in ("accuracy", "ece", "brier", "log_loss")})
  if config.get("export_hf", True):
    export(model_def, state.params, os.path.join(workdir, "export"), tokenizer)
  return out


def reward_model_report(model_def, params, eval_batches, mesh) -> dict | None:
  """Held-out report of a reward model on the eval set's preference rankings (`None`
  without an eval set or a ranked pair): `irl_jax.eval.preference_metrics` of the first
  two responses of every ranking with at least two (accuracy, calibration of σ(r_1 − r_2)
  on both orders, margin distribution) and `reward_distribution` of every ranked
  response's reward (`"rewards"`)."""
  from jax.experimental import multihost_utils

  from irl_jax.eval import reward_models as rm_eval

  @jax.jit
  def score(p, batch):
    b, k, t = batch["input_ids"].shape
    flat = lambda x: x.reshape(b * k, t)
    return model_def.merge(p)(flat(batch["input_ids"]),
                              attention_mask=flat(batch["segment_ids"]) > 0,
                              positions=flat(batch["positions"])).reshape(b, k)

  chosen, rejected, ranked = [], [], []
  for local in eval_batches():
    batch = sharding.global_batch(local, mesh)
    # The mask travels as a global array too, so its rows line up with the rewards'.
    rewards, mask = score(params, batch), batch["rank_mask"]
    if jax.process_count() > 1:
      rewards, mask = multihost_utils.process_allgather((rewards, mask), tiled=True)
    rewards = np.asarray(jax.device_get(rewards))
    mask = np.asarray(jax.device_get(mask)).astype(bool)
    pair = mask[:, :2].all(axis=1)
    chosen.append(rewards[pair, 0])
    rejected.append(rewards[pair, 1])
    ranked.append(rewards[mask])
  if not chosen or not sum(len(c) for c in chosen):
    return None
  report = rm_eval.preference_metrics(np.concatenate(chosen), np.concatenate(rejected))
  report["rewards"] = rm_eval.reward_distribution(np.concatenate(ranked))
  return report


def evaluate(eval_fn, params, eval_batches, mesh, preparer, config,
             step: int | None = None) -> dict[str, float]:
  """Metrics over the eval set (`{}` when there is none). `eval/loss` is exact: each loss
  population's sums and counts add across batches, then the populations' means add. The
  objective's other metrics are averaged over batches. A policy stage's samples for eval
  batch `i` at `step` are drawn from `(seed, step, i)`, so they do not depend on a resume."""
  totals, counts, sums, n = None, None, {}, 0
  key = jax.random.key(config.seed + 7)
  for i, local in enumerate(eval_batches()):
    if isinstance(preparer, rollouts.PolicySampler) and step is not None:
      local = preparer.sample(local, params, step=step, eval_batch=i)[0]
    elif preparer is not None:
      local = preparer(local, params)
    s, c, m = jax.device_get(eval_fn(params, sharding.global_batch(local, mesh), key))
    s, c = [float(x) for x in s], [float(x) for x in c]
    totals = s if totals is None else [a + b for a, b in zip(totals, s, strict=True)]
    counts = c if counts is None else [a + b for a, b in zip(counts, c, strict=True)]
    n += 1
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  if not n:
    return {}  # no eval set: nothing to report, and no best checkpoint to rank
  if not any(counts):
    loss = float("nan")
  else:
    loss = sum(t / c for t, c in zip(totals, counts, strict=True) if c)
  out = {"eval/loss": loss}
  out.update({f"eval/{k}": v / n for k, v in sums.items()})
  return out


def export(model_def, params, path: str, tokenizer=None) -> None:
  """Write the trained model in Hugging Face format (process 0).

  A policy with a value head (`PolicyValueModel`, PPO) is written as its policy alone, a
  causal LM that `irl_jax.models.from_pretrained` loads as a `Transformer`.
  """
  from jax.experimental import multihost_utils

  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() != 0:
    return
  model = model_def.merge(jax.device_get(params))
  models.save_pretrained(model, path, tokenizer=tokenizer)
