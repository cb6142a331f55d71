"""A whole training run as one compiled function of a PRNG key, for small models.

`make_train(...)` returns `train(key) -> (state, log)`: parameters are
initialised from the key, the data stay on the device, every step draws its
batch from a per-epoch permutation, and the steps run under `lax.scan` with
an evaluation every `eval_every` steps. Because `train` is pure, seeds run in
parallel with `jax.vmap(train)(keys)` and the run compiles once
(`jax.jit(jax.vmap(train)).lower(keys).compile()`), so step times can be
measured without compilation. This is the layout of purejaxrl-style
research code, used by the laptop-scale studies.

`compile_seeds(train, keys)` does that compilation with the seed axis
sharded over the available devices (the largest number of them that divides
the number of seeds), so seeds run side by side on several accelerators, or
on several CPU cores: `use_cpu_devices(n)`, called before JAX first runs,
splits the host into `n` CPU devices: the per-device programs then run
concurrently (sharing XLA's intra-op thread pool), which for small models
can beat one program splitting each op over the cores (measured, not a
rule). `cpu_compiler_options` passes XLA:CPU settings to such a compilation
only when it runs on CPUs.

The step is the trainer's own (`irl_jax.train.make_train_step`): the same
objectives, micro-batching and exact means. What differs from
`train(config, workdir)`:

- no checkpoints, mesh or host-side data pipeline (the data are one array);
- a non-finite loss or gradient skips its update (`train/finite` is 0 in the
  log) instead of stopping the run: check the log (the studies raise on it);
- policy samples for online objectives come from an in-step sampler
  (`irl_jax.train.rollouts.in_step_sampler`: the batch's own prompts, cut to
  `prompt_len`, a key from the state), where the trainer samples on the host
  (`PolicySampler`, which also serves objectives that score samples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from irl_jax.train.state import ModelDef, TrainState
from irl_jax.train.step import Objective, make_train_step


def _rows(data: dict) -> int:
  if not data:
    raise ValueError("make_train: data holds no arrays.")
  sizes = {k: v.shape[0] for k, v in data.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"make_train: data arrays disagree on their number of rows: {sizes}.")
  return next(iter(sizes.values()))


def make_train(
    init_params: Callable[[jax.Array], Any],
    model_def: ModelDef,
    objective: Objective,
    tx: optax.GradientTransformation,
    data: dict,
    *,
    steps: int,
    batch_size: int,
    eval_every: int | None = None,
    eval_fn: Callable[[Any], dict] | None = None,
    schedule: optax.Schedule | None = None,
    sampler: Callable[[Any, dict, jax.Array], dict] | None = None,
    micro_batches: int = 1,
) -> Callable[[jax.Array], tuple[TrainState, dict]]:
  """`train(key) -> (state, log)`, pure and `vmap`-able over keys.

  Args:
    init_params: `init_params(key) -> params` (a pure dict, e.g.
      `split_model(Transformer(config, rngs=nnx.Rngs(key)))[1]`).
    model_def: the static half of the model (`split_model`).
    objective: `objective(model, batch, rng) -> (loss, metrics)`.
    tx: the optimizer.
    data: training arrays `[N, ...]` (e.g. `irl_jax.data.lm_arrays`), held on
      the device; each epoch visits every row once in a fresh order.
    steps: number of train steps.
    batch_size: rows per step (at most `N`).
    eval_every: run `eval_fn` every this many steps (must divide `steps`);
      default `steps` (once, at the end).
    eval_fn: `eval_fn(params) -> {name: scalar}`; default none.
    schedule: the learning-rate schedule, logged as `train/learning_rate`.
    sampler: in-step policy sampler (`irl_jax.train.rollouts.in_step_sampler`).
    micro_batches: gradient accumulation inside the step.

  Returns:
    `train(key)` returning the final `TrainState` and a log: `"train"`, the
    step's metrics `[steps]`, and `"eval"`, `eval_fn`'s values
    `[steps // eval_every]` (with `"eval_step"`, the step each was taken at).
  """
  n = _rows(data)
  for name, value in (("steps", steps), ("batch_size", batch_size)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"make_train: {name} must be a positive integer, got {value!r}.")
  if batch_size > n:
    raise ValueError(f"make_train: batch_size={batch_size} exceeds the {n} rows of data.")
  eval_every = steps if eval_every is None else eval_every
  if not isinstance(eval_every, int) or eval_every < 1 or steps % eval_every:
    raise ValueError(f"make_train: eval_every={eval_every!r} must be a positive divisor of "
                     f"steps={steps}.")
  step_fn = make_train_step(model_def, objective, tx, schedule, micro_batches=micro_batches,
                            sampler=sampler)
  epochs = -(-steps * batch_size // n)
  chunks = steps // eval_every

  def train(key: jax.Array) -> tuple[TrainState, dict]:
    init_key, data_key, state_key = jax.random.split(key, 3)
    params = init_params(init_key)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=tx.init(params), rng=jax.random.key_data(state_key))
    order = jax.vmap(lambda k: jax.random.permutation(k, n))(
        jax.random.split(data_key, epochs)).reshape(-1)
    arrays = jax.tree.map(jnp.asarray, data)

    def one_step(state, t):
      rows = jax.lax.dynamic_slice(order, (t * batch_size,), (batch_size,))
      return step_fn(state, jax.tree.map(lambda x: x[rows], arrays))

    def chunk(state, c):
      state, metrics = jax.lax.scan(one_step, state, c * eval_every + jnp.arange(eval_every))
      evals = eval_fn(state.params) if eval_fn is not None else {}
      return state, (metrics, evals)

    state, (metrics, evals) = jax.lax.scan(chunk, state, jnp.arange(chunks))
    metrics = jax.tree.map(lambda x: x.reshape(steps, *x.shape[2:]), metrics)
    return state, {"train": metrics, "eval": evals,
                   "eval_step": (jnp.arange(chunks) + 1) * eval_every}

  return train


def seed_devices(num_seeds: int, devices=None) -> list:
  """The devices a `num_seeds` vmapped run is spread over: the first `d` of
  `devices` (default `jax.local_devices()`, this process's), `d` the largest
  count that divides `num_seeds`."""
  if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
    raise ValueError(f"seed_devices: num_seeds must be a positive integer, got {num_seeds!r}.")
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise ValueError("seed_devices: no devices given.")
  d = max(k for k in range(1, min(len(devices), num_seeds) + 1) if num_seeds % k == 0)
  return devices[:d]


def compile_seeds(train: Callable, keys: jax.Array, *args, devices=None,
                  compiler_options: dict | None = None):
  """`jax.jit(jax.vmap(train))` lowered for `keys` (and `args`, mapped over
  their leading axis too) and compiled, with that axis sharded over
  `seed_devices(len(keys), devices)`. `compiler_options` go to XLA's
  compiler for this program (e.g. `cpu_compiler_options`).

  Over several devices the vmapped function runs under `jax.shard_map`, each
  device on its own seeds: seeds never communicate, so the program has no
  collectives. (Under plain `jit` sharding, a loop whose trip count differs by
  seed, such as decoding that stops at EOS inside an online objective's step,
  synchronises every device on every iteration to agree on the loop condition;
  measured on 2 CPU cores split 5 ways, that made online IQLearn's step 1.2×
  slower, with identical results.) `train` must therefore not use collectives
  or sharding constraints of its own.

  Returns `(compiled, placed)`: call `compiled(*placed)`. `placed` are `keys`
  and `args` put on the devices; the outputs keep the seed axis sharded
  (`jax.device_get` gathers them). On one device this is the plain
  `jax.jit(jax.vmap(train))`.
  """
  if not hasattr(keys, "shape") or len(keys.shape) < 1 or keys.shape[0] < 1:
    raise ValueError(f"compile_seeds: keys must be an array of per-seed keys with a leading "
                     f"seed axis (e.g. jax.random.split(key, 5)), got "
                     f"{getattr(keys, 'shape', type(keys).__name__)}.")
  if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) and len(keys.shape) != 2:
    raise ValueError(f"compile_seeds: raw keys need two axes, [seeds, key data], got "
                     f"{keys.shape}; a single key is not a batch of seeds.")
  num_seeds = int(keys.shape[0])
  for i, a in enumerate(args):
    for leaf in jax.tree.leaves(a):
      if np.shape(leaf)[:1] != (num_seeds,):
        raise ValueError(f"compile_seeds: argument {i + 1} has a leaf of shape "
                         f"{np.shape(leaf)}; every leaf needs a leading seed axis of "
                         f"{num_seeds}.")
  devs = seed_devices(num_seeds, devices)
  mesh = jax.sharding.Mesh(np.asarray(devs), ("seeds",))
  sharding = NamedSharding(mesh, PartitionSpec("seeds"))
  placed = jax.device_put((keys, *args), sharding)
  fn = jax.vmap(train)
  if len(devs) > 1:
    # Values inside are per seed, so the varying-axis check has nothing to add; it would
    # only reject loops whose carries start unvarying (e.g. a decoding buffer of zeros).
    fn = jax.shard_map(fn, mesh=mesh, in_specs=PartitionSpec("seeds"),
                       out_specs=PartitionSpec("seeds"), check_vma=False)
  compiled = jax.jit(fn).lower(*placed).compile(compiler_options)
  return compiled, placed


def cpu_compiler_options(options, devices=None) -> dict | None:
  """`options` (a mapping of XLA compile options) when `devices` (default
  `jax.devices()`) are CPUs, else None: XLA:CPU-only settings for programs that
  may also run on accelerators."""
  devices = list(jax.devices() if devices is None else devices)
  if not options or not devices or devices[0].platform != "cpu":
    return None
  return dict(options)


def use_cpu_devices(n: int) -> None:
  """Split the host CPU into `n` JAX devices (`jax_num_cpu_devices`).

  Call it before JAX runs anything (an entry point's first lines): afterwards
  the device count is fixed and a different `n` raises `RuntimeError` (JAX
  accepts the value it already holds, whatever count the backend took from
  `XLA_FLAGS`). It does not start JAX itself; accelerator backends are
  unaffected.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"use_cpu_devices: n must be a positive integer, got {n!r}.")
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError as e:
    raise RuntimeError(f"use_cpu_devices({n}): JAX has already started, so the CPU device "
                       f"count can no longer change; call it before the first JAX "
                       f"operation.") from e
