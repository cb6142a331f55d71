"""Checkpoints with exact resume, on the Orbax v1 training `Checkpointer`.

One small wrapper around `orbax.checkpoint.experimental.v1.training.Checkpointer`
(the v1 API lives under `experimental` in orbax-checkpoint 0.12):

- asynchronous saves every `save_every` steps (plus explicit forced saves);
- preservation of the latest `keep_last` checkpoints plus the best one by a
  metric (`best_metric`, minimised or maximised);
- auto-resume: `restore_latest` walks the checkpoints from newest to oldest
  and returns the first one that loads; a partial or corrupted checkpoint is
  skipped with a warning naming it (partially written saves live in Orbax
  temporary directories and are never listed);
- the data-iterator position of every process is saved beside the arrays as
  `data_state/<step>.process_<i>.json`, written before the array save starts,
  so a checkpoint counts as valid only if every process's position is there.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint.experimental.v1 as ocp
from absl import logging

_DATA_DIR = "data_state"


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored."""


class Checkpoints:
  """Save, prune and restore train states in `directory`.

  Example:
    >>> ckpts = Checkpoints(workdir + "/checkpoints", save_every=100, keep_last=3,
    ...                     best_metric="eval/loss")
    >>> restored = ckpts.restore_latest(abstract_state)
    >>> state, data_state, step = restored if restored else (init_state, None, 0)
    >>> ckpts.maybe_save(step, state, data_state=it.get_state(), metrics=eval_metrics)
  """

  def __init__(self, directory: str, *, save_every: int, keep_last: int = 3,
               best_metric: str | None = None, best_mode: str = "min"):
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    self.best_metric = best_metric
    pp = ocp.training.preservation_policies
    policies = [pp.LatestN(keep_last)]
    if best_metric is not None:
      # BestN keeps the largest values unless `reverse`; a loss is minimised.
      policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                               n=1, keep_checkpoints_without_metrics=False))
    sp = ocp.training.save_decision_policies
    self._ckptr = ocp.training.Checkpointer(
        self.directory,
        save_decision_policy=sp.FixedIntervalPolicy(save_every),
        preservation_policy=pp.AnyPreservationPolicy(policies),
    )

  # -- saving -------------------------------------------------------------------

  def _data_path(self, step: int, process: int) -> str:
    return os.path.join(self.directory, _DATA_DIR, f"{step}.process_{process}.json")

  def due(self, step: int, *, force: bool = False) -> bool:
    """Whether `maybe_save(step, ...)` would save (a due step not yet saved)."""
    if not force and step % self.save_every:
      return False
    return not any(c.step == step for c in self._ckptr.checkpoints)

  def maybe_save(self, step: int, state, *, data_state: Any = None,
                 metrics: dict | None = None, force: bool = False) -> bool:
    """Start an asynchronous save of `state` at `step` if due (or `force`); returns whether."""
    if not self.due(step, force=force):
      return False
    path = self._data_path(step, jax.process_index())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump({"step": step, "data_state": data_state}, f)
    os.replace(path + ".tmp", path)
    clean = None
    if metrics is not None:
      clean = {k: float(v) for k, v in metrics.items()}
      if self.best_metric is not None and self.best_metric not in clean:
        clean = None  # a checkpoint without the metric is kept by LatestN only
    self._ckptr.save_checkpointables_async(step, {"state": state}, force=True, metrics=clean)
    self._prune_data_states()
    return True

  def _prune_data_states(self):
    folder = os.path.join(self.directory, _DATA_DIR)
    if not os.path.isdir(folder) or jax.process_index() != 0:
      return
    live = {c.step for c in self._ckptr.checkpoints}
    for name in os.listdir(folder):
      step = name.split(".", 1)[0]
      if step.isdigit() and int(step) not in live and int(step) < max(live, default=0):
        os.remove(os.path.join(folder, name))

  def wait(self):
    """Block until pending asynchronous saves are committed."""
    self._ckptr.wait()

  def close(self):
    self._ckptr.close()

  @property
  def steps(self) -> list[int]:
    return sorted(c.step for c in self._ckptr.checkpoints)

  # -- restoring ------------------------------------------------------------------

  def restore_latest(self, abstract_state) -> tuple[Any, Any, int] | None:
    """`(state, data_state, step)` of the newest checkpoint that loads, or None if none exist.

    Args:
      abstract_state: the state's tree of `jax.ShapeDtypeStruct`s with the
        shardings to restore onto.

    Raises:
      CheckpointError: checkpoints exist but none of them loads.
    """
    steps = self.steps
    failures = []
    for step in reversed(steps):
      try:
        data = self._load_data_state(step)
        loaded = self._ckptr.load_checkpointables(step, {"state": abstract_state})
        return loaded["state"], data, step
      except Exception as e:  # any failure means: try the previous checkpoint
        failures.append(f"step {step}: {type(e).__name__}: {e}")
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); trying the "
                        "previous one.", step, self.directory, type(e).__name__, e)
    if steps:
      raise CheckpointError(f"no checkpoint in {self.directory} could be restored:\n  "
                            + "\n  ".join(failures))
    return None

  def _load_data_state(self, step: int):
    path = self._data_path(step, jax.process_index())
    if not os.path.exists(path):
      raise FileNotFoundError(f"data-iterator position {path} is missing")
    with open(path) as f:
      record = json.load(f)
    if record.get("step") != step:
      raise ValueError(f"{path} records step {record.get('step')}, expected {step}")
    return record["data_state"]
