"""Checkpoints with exact resume, on the Orbax v1 training `Checkpointer`.

One small wrapper around `orbax.checkpoint.experimental.v1.training.Checkpointer`
(the v1 API lives under `experimental` in orbax-checkpoint 0.12):

- asynchronous saves every `save_every` steps (plus explicit forced saves);
- preservation of the latest `keep_last` checkpoints plus the best one by a
  metric (`best_metric`, minimised or maximised);
- auto-resume: `restore_latest` walks the checkpoints from newest to oldest
  and returns the first one that loads and verifies; a partial, corrupted or
  tampered checkpoint is skipped with a warning naming its step and folder
  (partially written saves live in Orbax temporary directories and are never
  listed). All processes agree on each step before moving on. Skipped
  checkpoints newer than the restored one are left in place (the failure may
  have been transient) until the run saves that step again: then the old one
  is moved to `<directory>/invalid/` and a good one written;
- integrity: before each save, a checksum of every array of the state is
  computed on device (two 32-bit sums of the array's bits, one plain and one
  position-weighted by odd weights, so that any single flipped bit changes
  it) and recorded in `meta/<step>.json`; on restore, the loaded arrays must
  reproduce it bit for bit. Orbax itself checks no content;
- identity: `meta/<step>.json` also records a fingerprint of the run's
  configuration (whatever JSON the caller passes, e.g. the model and
  objective configs) and the shape and dtype of every array; resuming with a
  different fingerprint or different shapes raises `ConfigMismatchError`,
  which lists the differing fields and leaves every checkpoint untouched;
- the data-iterator position of every process is saved beside the arrays as
  `data_state/<step>.process_<i>.json`, written before the array save starts,
  so a checkpoint counts as valid only if every process's position is there;
  the same record carries the caller's other host-side state (`host_state`,
  any JSON, e.g. the trainer's reward-hacking monitors), which
  `restored_host_state` gives back after `restore_latest`.

Layout of `directory`:

    <step>/            Orbax checkpoint (state arrays, metrics)
    meta/<step>.json   checksums, shapes, fingerprint (process 0)
    data_state/<step>.process_<i>.json
    invalid/<step>[.<n>]/  checkpoints found invalid and moved aside (kept for inspection)
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint.experimental.v1 as ocp
from absl import logging

_DATA_DIR = "data_state"
_META_DIR = "meta"
_INVALID_DIR = "invalid"
_META_VERSION = 1


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored."""


class ConfigMismatchError(ValueError):
  """The checkpoints were made for a different model or objective (they are left intact)."""


class IntegrityError(ValueError):
  """A checkpoint's arrays do not reproduce the checksums recorded when it was saved."""


# -- checksums --------------------------------------------------------------------


def _as_uint32(x: jax.Array) -> jax.Array:
  """The bits of `x` as a flat uint32 vector (narrower types widened, wider ones split)."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  size = x.dtype.itemsize
  if size == 4:
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  elif size in (1, 2):
    unsigned = jnp.uint8 if size == 1 else jnp.uint16
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  elif size == 8:
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  else:
    raise TypeError(f"cannot checksum arrays of dtype {x.dtype}")
  return bits.ravel()


def _leaf_checksum(x: jax.Array) -> jax.Array:
  bits = _as_uint32(x)
  # uint32 arithmetic wraps modulo 2**32. An odd weight times a nonzero
  # difference 2**k is nonzero modulo 2**32, so any one flipped bit changes the
  # weighted sum; the weights also make swapped elements visible.
  weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


@jax.jit
def _tree_checksums(tree):
  return jax.tree.map(_leaf_checksum, tree)


def array_checksums(tree) -> dict[str, list[int]]:
  """`{path: [sum, weighted_sum]}` of every array leaf of `tree` (computed on device).

  Works on sharded and multi-process arrays (the sums are global); equal
  arrays give equal checksums whatever their sharding.
  """
  sums = jax.device_get(_tree_checksums(tree))
  flat = jax.tree_util.tree_flatten_with_path(sums)[0]
  return {jax.tree_util.keystr(path): [int(v) for v in np.asarray(s)] for path, s in flat}


def array_shapes(tree) -> dict[str, list]:
  """`{path: [shape, dtype]}` of every leaf (arrays or `ShapeDtypeStruct`s)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): [list(x.shape), str(jnp.dtype(x.dtype))] for p, x in flat}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  """Dotted keys -> leaves (lists are leaves) of a `_jsonable` value."""
  if isinstance(value, Mapping):
    out: dict[str, Any] = {}
    for k in sorted(value, key=str):
      out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    return out if out or not prefix else {prefix: {}}
  return {prefix: value}


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def config_differences(saved: Mapping, current: Mapping) -> list[str]:
  """Lines `field: checkpoint X, now Y` for every dotted field that differs."""
  a, b = _flatten(_jsonable(saved)), _flatten(_jsonable(current))
  missing = object()
  lines = []
  for key in sorted(set(a) | set(b)):
    x, y = a.get(key, missing), b.get(key, missing)
    if x != y:
      show = lambda v: "(absent)" if v is missing else json.dumps(v)
      lines.append(f"{key}: checkpoint {show(x)}, now {show(y)}")
  return lines


class Checkpoints:
  """Save, prune, verify and restore train states in `directory`.

  Example:
    >>> ckpts = Checkpoints(workdir + "/checkpoints", save_every=100, keep_last=3,
    ...                     best_metric="eval/loss", fingerprint={"model": ..., "objective": ...})
    >>> restored = ckpts.restore_latest(abstract_state)
    >>> state, data_state, step = restored if restored else (init_state, None, 0)
    >>> host = ckpts.restored_host_state  # what maybe_save(..., host_state=) recorded, or None
    >>> ckpts.maybe_save(step, state, data_state=it.get_state(), metrics=eval_metrics)

  Args:
    directory: where the checkpoints live.
    save_every: save when `step % save_every == 0` (a positive integer).
    keep_last: how many of the newest checkpoints to keep.
    best_metric: also keep the checkpoint with the best value of this metric.
    best_mode: `"min"` or `"max"` for `best_metric`.
    fingerprint: JSON-like description of what the checkpoints are for
      (recorded with each save, compared on restore); `None` records nothing.
    allow_config_change: on restore, a fingerprint mismatch only warns (the
      array shapes must still match).
  """

  def __init__(self, directory: str, *, save_every: int, keep_last: int = 3,
               best_metric: str | None = None, best_mode: str = "min",
               fingerprint: Mapping | None = None, allow_config_change: bool = False):
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
    if isinstance(save_every, bool) or not isinstance(save_every, (int, np.integer)) \
        or save_every < 1:
      raise ValueError(f"save_every must be a positive integer, got {save_every!r}.")
    if isinstance(keep_last, bool) or not isinstance(keep_last, (int, np.integer)) \
        or keep_last < 1:
      raise ValueError(f"keep_last must be a positive integer, got {keep_last!r}.")
    self.directory = os.path.abspath(directory)
    self.save_every = int(save_every)
    self.best_metric = best_metric
    self.fingerprint = None if fingerprint is None else _jsonable(fingerprint)
    self.allow_config_change = allow_config_change
    pp = ocp.training.preservation_policies
    policies = [pp.LatestN(int(keep_last))]
    if best_metric is not None:
      # BestN keeps the largest values unless `reverse`; a loss is minimised.
      policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                               n=1, keep_checkpoints_without_metrics=False))
    sp = ocp.training.save_decision_policies
    self._ckptr = ocp.training.Checkpointer(
        self.directory,
        save_decision_policy=sp.FixedIntervalPolicy(self.save_every),
        preservation_policy=pp.AnyPreservationPolicy(policies),
    )
    self._closed = False
    # The host state recorded with the checkpoint `restore_latest` returned.
    self.restored_host_state: Any = None
    self._replace: set[int] = set()  # invalid steps found at restore, replaced when re-saved
    _finish_at_exit(self)

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- saving -------------------------------------------------------------------

  def _data_path(self, step: int, process: int) -> str:
    return os.path.join(self.directory, _DATA_DIR, f"{step}.process_{process}.json")

  def _meta_path(self, step: int) -> str:
    return os.path.join(self.directory, _META_DIR, f"{step}.json")

  def due(self, step: int, *, force: bool = False) -> bool:
    """Whether `maybe_save(step, ...)` would save (a due step not yet saved)."""
    if not force and step % self.save_every:
      return False
    if step in self._replace:
      return True  # skipped as invalid at restore: the run writes a good one now
    return not any(c.step == step for c in self._ckptr.checkpoints)

  def maybe_save(self, step: int, state, *, data_state: Any = None,
                 metrics: dict | None = None, force: bool = False,
                 host_state: Any = None) -> bool:
    """Start an asynchronous save of `state` at `step` if due (or `force`); returns whether.

    `data_state` (the data-iterator position) and `host_state` (any other JSON
    host state of this process) are written to the step's data-state record
    before the array save starts.
    """
    if not self.due(step, force=force):
      return False
    if self._replace:
      self._move_invalid(sorted(s for s in self._replace if s >= step))
      self._replace = {s for s in self._replace if s < step}
    # Both side files are complete before the array save starts, so a
    # committed checkpoint always has them.
    meta = {"version": _META_VERSION, "step": step, "checksums": array_checksums(state),
            "shapes": array_shapes(state), "fingerprint": self.fingerprint}
    if jax.process_index() == 0:
      _write_json(self._meta_path(step), meta)
    record = {"step": step, "data_state": data_state}
    if host_state is not None:
      record["host_state"] = host_state
    _write_json(self._data_path(step, jax.process_index()), record)
    clean = None
    if metrics is not None:
      clean = {k: float(v) for k, v in metrics.items()}
      if self.best_metric is not None and self.best_metric not in clean:
        clean = None  # a checkpoint without the metric is kept by LatestN only
    self._ckptr.save_checkpointables_async(step, {"state": state}, force=True, metrics=clean)
    self._prune_side_files()
    return True

  def _prune_side_files(self):
    if jax.process_index() != 0:
      return
    live = {c.step for c in self._ckptr.checkpoints}
    newest = max(live, default=0)
    for sub in (_DATA_DIR, _META_DIR):
      folder = os.path.join(self.directory, sub)
      if not os.path.isdir(folder):
        continue
      for name in os.listdir(folder):
        step = name.split(".", 1)[0]
        if step.isdigit() and int(step) not in live and int(step) < newest:
          os.remove(os.path.join(folder, name))

  def wait(self):
    """Block until pending asynchronous saves are committed."""
    self._ckptr.wait()

  def close(self):
    """Wait for pending saves and release Orbax's resources (idempotent)."""
    if not self._closed:
      self._closed = True
      _OPEN.pop(self._token, None)
      self._ckptr.close()

  @property
  def steps(self) -> list[int]:
    return sorted(c.step for c in self._ckptr.checkpoints)

  # -- restoring ------------------------------------------------------------------

  def restore_latest(self, abstract_state) -> tuple[Any, Any, int] | None:
    """`(state, data_state, step)` of the newest checkpoint that loads and verifies.

    Args:
      abstract_state: the state's tree of `jax.ShapeDtypeStruct`s with the
        shardings to restore onto.

    Returns:
      None if the directory holds no checkpoint. The host state saved with the
      returned checkpoint (`maybe_save(..., host_state=)`) is then in
      `restored_host_state` (None if it recorded none).

    Raises:
      ConfigMismatchError: the newest readable checkpoint records another
        configuration fingerprint (unless `allow_config_change`) or other
        array shapes; nothing was restored or moved.
      CheckpointError: checkpoints exist but none of them loads.
    """
    steps = self.steps
    if not steps:
      return None
    self._check_identity(steps, abstract_state)
    failures, skipped = [], []
    for step in reversed(steps):
      try:
        state, data, host = self._restore(step, abstract_state)
      except Exception as e:  # any failure means: try the previous checkpoint
        failures.append(f"step {step}: {type(e).__name__}: {e}")
        skipped.append(step)
        logging.warning("checkpoint at step %d (%s) is unreadable or corrupted (%s: %s); trying "
                        "the previous one.", step, self._step_dir(step), type(e).__name__, e)
        continue
      # Nothing is moved now (a failure may have been transient); a skipped newer
      # checkpoint is replaced when the run saves that step again.
      self._replace = set(skipped)
      self.restored_host_state = host
      return state, data, step
    raise CheckpointError(f"no checkpoint in {self.directory} could be restored (they are left "
                          "in place):\n  " + "\n  ".join(failures))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _restore(self, step: int, abstract_state):
    # Every stage ends with the processes agreeing, so that they all restore the same
    # step and enter Orbax's and the checksums' collectives together.
    try:
      record = self._load_data_record(step)
      meta = self._load_meta(step)
      error = None
    except Exception as e:
      error = e
    _agree(error, f"step {step}: another process cannot read its data position or record")
    try:
      loaded = self._ckptr.load_checkpointables(step, {"state": abstract_state})["state"]
      error = None
    except Exception as e:
      error = e
    _agree(error, f"step {step}: another process cannot load its arrays")
    recorded = meta["checksums"]
    found = array_checksums(loaded)
    bad = [k for k in found if recorded.get(k) != found[k]]
    if bad or set(recorded) != set(found):
      what = bad[0] if bad else sorted(set(recorded) ^ set(found))[0]
      raise IntegrityError(
          f"{self._step_dir(step)}: array {what} does not match the checksum recorded in "
          f"{self._meta_path(step)} when it was saved ({len(bad) or 1} of {len(found)} arrays "
          "differ): the files were changed or damaged on disk")
    return loaded, record["data_state"], record.get("host_state")

  def _load_meta(self, step: int) -> dict:
    path = self._meta_path(step)
    if not os.path.exists(path):
      raise FileNotFoundError(f"integrity record {path} is missing")
    with open(path) as f:
      meta = json.load(f)
    if not isinstance(meta, dict) or meta.get("step") != step or "checksums" not in meta:
      raise ValueError(f"{path} is not the integrity record of step {step}")
    return meta

  def _check_identity(self, steps: list[int], abstract_state) -> None:
    """Compare the newest readable record with this run; raise before touching anything."""
    for step in reversed(steps):
      try:
        meta = self._load_meta(step)
      except (OSError, ValueError):
        continue  # that checkpoint is invalid anyway; restore will say so
      where = (f"The checkpoints in {self.directory} are intact and were not modified; resume "
               "with the configuration they were made with, or start the new configuration in "
               "another workdir.")
      saved_fp, fp = meta.get("fingerprint"), self.fingerprint
      if saved_fp is not None and fp is not None:
        diff = config_differences(saved_fp, fp)
        if diff:
          message = (f"checkpoint step {step} was made for a different configuration "
                     f"({len(diff)} field(s) differ):\n  " + "\n  ".join(diff))
          if not self.allow_config_change:
            raise ConfigMismatchError(f"{message}\n{where} (To resume with the changed "
                                      "configuration anyway, pass allow_config_change=True; in "
                                      "the trainer, config.allow_config_change=True.)")
          logging.warning("%s\nresuming anyway (allow_config_change=True).", message)
      saved_shapes = meta.get("shapes", {})
      diff = config_differences(saved_shapes, array_shapes(abstract_state))
      if diff:
        raise ConfigMismatchError(
            f"checkpoint step {step} holds arrays of other shapes or dtypes than this run's "
            f"state ({len(diff)} differ; [shape, dtype]):\n  " + "\n  ".join(diff[:20])
            + ("\n  ..." if len(diff) > 20 else "") + f"\n{where}")
      return

  def _move_invalid(self, steps: list[int]) -> None:
    """Move invalid checkpoints aside (kept for inspection) before good ones replace them.

    Called by every process at the same save; process 0 moves, all wait and reload.
    """
    moved = []
    if jax.process_index() == 0 and steps:
      target_root = os.path.join(self.directory, _INVALID_DIR)
      os.makedirs(target_root, exist_ok=True)
      for step in steps:
        if not os.path.isdir(self._step_dir(step)):
          continue
        target, n = os.path.join(target_root, str(step)), 0
        while os.path.exists(target):
          n += 1
          target = os.path.join(target_root, f"{step}.{n}")
        shutil.move(self._step_dir(step), target)
        meta = self._meta_path(step)
        if os.path.exists(meta):
          shutil.move(meta, os.path.join(target, "irl_jax_meta.json"))
        moved.append(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("irl_jax_checkpoints_moved")
    self._ckptr.reload()
    if moved:
      logging.warning("moved the invalid checkpoint(s) of step(s) %s to %s; the run writes a "
                      "new one now.", steps, ", ".join(moved))

  def _load_data_record(self, step: int) -> dict:
    path = self._data_path(step, jax.process_index())
    if not os.path.exists(path):
      raise FileNotFoundError(f"data-iterator position {path} is missing")
    with open(path) as f:
      record = json.load(f)
    if record.get("step") != step:
      raise ValueError(f"{path} records step {record.get('step')}, expected {step}")
    if "data_state" not in record:
      raise ValueError(f"{path} has no data_state entry")
    return record


# Orbax checkpointers not yet closed, by a token of their `Checkpoints`; strong references,
# so that a save still pending when its `Checkpoints` is dropped is finished too.
_OPEN: dict[int, tuple[str, Any]] = {}
_TOKENS = itertools.count()
_EXIT_HOOK = []


def _finish_at_exit(checkpoints: Checkpoints) -> None:
  """Finish `checkpoints`' pending saves if the interpreter exits with it still open.

  Orbax commits asynchronous saves on a thread pool driven by an asyncio event
  loop. Left open at exit, the commit runs after Python has shut those down:
  the save is lost and "Event loop is closed" / "cannot schedule new futures
  after shutdown" tracebacks are printed (or the exit hangs). Threading's exit
  hooks run before the thread pools shut down (in reverse order of
  registration, and the pools register theirs at import), so a hook registered
  here can still wait for the commit.
  """
  checkpoints._token = next(_TOKENS)
  _OPEN[checkpoints._token] = (checkpoints.directory, checkpoints._ckptr)
  if _EXIT_HOOK:
    return
  register = getattr(threading, "_register_atexit", None)
  if register is None:
    return

  def finish():
    for directory, ckptr in list(_OPEN.values()):
      logging.warning("Checkpoints(%s) was not closed; finishing its pending saves at exit.",
                      directory)
      try:
        ckptr.close()
      except Exception as e:  # report, and still close the others
        logging.error("closing Checkpoints(%s) at exit failed: %s: %s", directory,
                      type(e).__name__, e)
    _OPEN.clear()

  try:
    register(finish)
    _EXIT_HOOK.append(finish)
  except RuntimeError:  # already shutting down
    pass


def _agree(error: Exception | None, elsewhere: str) -> None:
  """Raise `error` here, or an error if any other process had one (all processes call this)."""
  failed = error is not None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    failed_anywhere = bool(np.any(multihost_utils.process_allgather(np.int32(failed))))
  else:
    failed_anywhere = failed
  if error is not None:
    raise error
  if failed_anywhere:
    raise CheckpointError(elsewhere)


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f)
  os.replace(path + ".tmp", path)
