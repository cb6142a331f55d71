"""Tasks that generate data (and reward functions) for the experiment scripts.

The library never imports this package: an entry point loads a task by name and passes
it to `irl_jax.train.train(..., task=..., reward_fn=...)`.
"""

import importlib


def load(name: str):
  """The task module `experiments.tasks.<name>` (a data generator with `write_demonstrations`,
  `write_preferences` and `make_reward_fn`), or None for an empty name."""
  if not name:
    return None
  try:
    return importlib.import_module(f"experiments.tasks.{name}")
  except ModuleNotFoundError:
    raise ValueError(f"config.data.task={name!r}: no module experiments/tasks/{name}.py") from None
