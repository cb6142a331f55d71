"""The data types that the control learners exchange."""

from __future__ import annotations

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
