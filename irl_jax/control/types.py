"""The data types that the control learners exchange, and `as_config`, which turns a
mapping into a learner's config dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import jax


class Transitions(NamedTuple):
  """A flat batch of `N` transitions (leading axis `N` on every field).

  obs, next_obs: `[N, *obs_shape]` float32; `next_obs` is the true successor (before
    any automatic reset). action: `[N]` int32 (discrete) or `[N, *action_shape]` float32.
  reward: `[N]` float32 (the environment's; learners that learn a reward ignore it).
  terminated: `[N]` bool, an absorbing state was reached (no bootstrap).
  truncated: `[N]` bool, a time limit ended the episode (bootstrap from `next_obs`).
  log_prob: `[N]` float32, log π(a|s) of the behaviour policy at sampling time (NaN
    where unknown). weight: `[N]` float32, 1 for real rows, 0 for padding.
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  log_prob: jax.Array
  weight: jax.Array


def as_config(cls, config):
  """`config` as the config dataclass `cls` (None: its defaults; a mapping or an
  `ml_collections.ConfigDict`: its items as keywords, unknown names rejected with
  the known ones listed; nested config dataclasses from nested mappings)."""
  if config is None:
    return cls()
  if isinstance(config, cls):
    return config
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, Mapping):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
      raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; it has {sorted(fields)}")
    config = dict(config)
    if "hidden" in config:
      config["hidden"] = tuple(config["hidden"])
    for f in dataclasses.fields(cls):  # nested configs (RewardModelIQLConfig) from mappings
      if dataclasses.is_dataclass(f.default) and f.name in config:
        config[f.name] = as_config(type(f.default), config[f.name])
    return cls(**config)
  raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(config).__name__}")
