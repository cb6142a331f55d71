"""Checkpointed, resumable control runs, with the language-model trainer's machinery.

A control learner's `train(key, *data)` is one `lax.scan`; for a long run you
want it in pieces, with metrics written as it goes and a checkpoint to resume
from. Learners expose their scan as `start(key, *data) -> (carry, xs)` and
`body(carry, x, *data) -> (carry, metrics)` (PPO, SAC, GAIL/AIRL, BC, IQ-Learn and
the offline learners; online IQ-Learn's `env` is bound with `functools.partial`)
and run here:

    learner = adversarial.make_adversarial(config, env)
    state, metrics = runner.run(learner.start, learner.body, key, demos,
                                workdir="/tmp/gail", chunk=10, save_every=50,
                                fingerprint={"config": dataclasses.asdict(config)})

`run` scans `chunk` iterations per compiled call over the same `xs` that
`train` would scan, so a run cut into pieces computes what `train` computes,
and a resumed run what the uninterrupted one does (the tests check both, bit for
bit on CPU). After each chunk it writes every iteration's scalars to
`workdir/metrics.jsonl` and TensorBoard (`irl_jax.train.metrics.MetricWriter`,
step = iterations done) and, every `save_every` iterations and at the end,
saves the carry with `irl_jax.train.checkpoint.Checkpoints` (Orbax, asynchronous,
checksummed, with the run's fingerprint). Called again with the same workdir it
restores the newest valid checkpoint and goes on from there; metric lines past
that checkpoint (written before an interruption) are dropped first, so every
step appears once. A different fingerprint raises `ConfigMismatchError` naming
the fields. PRNG keys in the carry are stored as their key data and rewrapped.

It runs one seed: vmapped seeds are `jax.vmap` of `train`, which this loop does
not wrap (the carry would be the seeds' stacked states; `start` and `body` can be
vmapped by the caller the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.train.checkpoint import Checkpoints
from irl_jax.train.metrics import MetricWriter


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def storable(tree):
  """`tree` with typed PRNG keys replaced by their `uint32` key data."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def unstorable(stored, template):
  """Inverse of `storable`: key data back into keys of `template`'s key type."""
  def back(s, t):
    return jax.random.wrap_key_data(s, impl=jax.random.key_impl(t)) if _is_key(t) else s
  return jax.tree.map(back, stored, template)


def _scalars(metrics: Mapping, i: int) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v[i])
    if v.ndim == 0 and (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
      out[k] = float(v)
  return out


def _truncate_metrics(workdir: str, step: int) -> None:
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(lines)


def run(start: Callable, body: Callable, key, *data, workdir: str, chunk: int = 10,
        save_every: int = 100, keep_last: int = 2, fingerprint: Mapping | None = None,
        tensorboard: bool = False, log: Callable[[str], Any] | None = None):
  """Runs `lax.scan(body, *start(key, *data))` in chunks with metrics and checkpoints.

  Args:
    start, body: the learner's scan (see the module docstring); `data` goes to both.
      When `start` has a `check_data(*data)` attribute (the offline learners' do), it
      is called first on the concrete data, whose errors `jax.jit` would not see.
    key: the run's PRNG key (the same key `train` takes).
    workdir: metrics.jsonl, tensorboard/ and checkpoints/ live here; a run found there
      is resumed.
    chunk: iterations per compiled call (a positive integer).
    save_every: checkpoint every this many iterations (a positive multiple of `chunk`);
      the last iteration is always saved.
    keep_last: checkpoints kept. fingerprint: JSON-able description of the run,
      checked on resume. tensorboard: also write TensorBoard scalars.

  Returns:
    `(carry, metrics)`: the final carry and the metrics of the iterations run by
    this call (stacked `[iterations, ...]`; earlier ones are in metrics.jsonl).
  """
  for name, v in (("chunk", chunk), ("save_every", save_every), ("keep_last", keep_last)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"runner.run: {name} must be a positive integer, got {v!r}")
  if save_every % chunk:
    raise ValueError(f"runner.run: save_every ({save_every}) must be a multiple of chunk "
                     f"({chunk}): checkpoints are taken between chunks")
  check = getattr(start, "check_data", None)
  if check is not None:  # checks that need concrete data (jit would skip them)
    check(*data)
  carry, xs = jax.jit(start)(key, *data)
  total = int(jax.tree.leaves(xs)[0].shape[0])
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), save_every=save_every,
                      keep_last=keep_last, fingerprint=fingerprint)
  done = 0
  try:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            storable(carry))
    restored = ckpts.restore_latest(abstract)
    if restored is not None:
      stored, _, done = restored
      carry = unstorable(stored, carry)
      _truncate_metrics(workdir, done)
      if log:
        log(f"runner: resumed {workdir} at iteration {done} of {total}")
    writer = MetricWriter(workdir, tensorboard=tensorboard)

    @jax.jit
    def scan(carry, xs, *data):
      return jax.lax.scan(lambda c, x: body(c, x, *data), carry, xs)

    pieces = []
    try:
      while done < total:
        n = min(chunk, total - done)
        part = jax.tree.map(lambda x, d=done, n=n: x[d:d + n], xs)
        carry, metrics = scan(carry, part, *data)
        metrics = jax.device_get(metrics)
        for i in range(n):
          writer.write(done + i + 1, _scalars(metrics, i))
        pieces.append(metrics)
        done += n
        ckpts.maybe_save(done, storable(carry), data_state={"iteration": done},
                         force=done == total)
    finally:
      writer.close()
    ckpts.wait()
  finally:
    ckpts.close()
  if pieces:
    metrics = jax.tree.map(lambda *x: np.concatenate(x), *pieces)
  else:
    metrics = {}
  return carry, metrics
