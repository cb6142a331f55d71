"""Trajectory datasets for demonstrations and offline RL: `Episodes`, and its storage.

An `Episodes` holds whole episodes stored flat, one row per transition, with the
episode boundaries kept apart:

    data = collect_episodes(env, act, key, num_episodes=25, metadata={"policy": "ppo"})
    demos = take_episodes(data, 5)                    # the first 5 episodes (1/5/25-demo studies)
    batch = pad_transitions(to_transitions(demos), 4096)   # one shape for every demo count
    sample = sample_batch(batch, key, 256)            # real rows only
    pairs = preference_pairs(data, key, num_pairs=100, segment_length=25)

Invariants (checked whenever an `Episodes` is built, so every loader checks them):
rows `[episode_starts[e], episode_starts[e] + lengths[e])` are episode `e`, in time
order; exactly the last step of every episode has `terminated` or `truncated` set
(both may be set at once, as in gymnasium); inside an episode
`next_obs[t] == obs[t + 1]` exactly; observations and rewards are finite; actions
lie in the action space. An `Episodes` is immutable (its arrays are read-only).

Storage:

* `save` / `load`: one `.npz` file of our own (format version 1). It holds the
  arrays `obs`, `action`, `reward`, `terminated`, `truncated`, `next_obs`,
  `log_prob`, `episode_starts` under those names, and a JSON header, the 0-d
  string array `__irl_jax_episodes__`, with `{"format": "irl_jax.control.data.Episodes",
  "version": 1, "spec": <EnvSpec as JSON>, "metadata": <metadata>}`. It loads
  without pickle (`np.load(path, allow_pickle=False)`).
* `to_minari` / `from_minari`: Farama Minari datasets, written and read through
  Minari's own storage API (`minari.dataset.minari_storage.MinariStorage`), so
  that ours open with `minari.load_dataset` and users' Minari datasets load here.
  Minari keeps `T + 1` observations per episode (the last is the final
  successor): ours are `observations[:-1]` and `next_obs` is
  `observations[1:]`; rewards, terminations and truncations have `T` entries.
  The behaviour policy's log-probabilities go in `infos["log_prob"]` (`T + 1`
  entries aligned with the observations, the last NaN); other `infos` are not
  read. Our spec and metadata go in the dataset metadata under `"irl_jax"`, so a
  round trip is exact. Minari and gymnasium are optional dependencies (`pip
  install "minari[arrow]"`), imported only by the Minari and space functions.

Every loader raises `ValueError` naming the file, the field and, where it
applies, the episode: a missing field, a wrong length, NaN in observations or
rewards, an action outside the action space, non-bool terminations, a file that
is not a dataset. Nothing is dropped silently.

Shapes: `N` rows (transitions), `E` episodes, `P` preference pairs, `L` steps per
segment.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.control import envs
from irl_jax.control.envs import ActionSpec, EnvSpec
from irl_jax.control.types import Transitions

FORMAT = "irl_jax.control.data.Episodes"
FORMAT_VERSION = 1
_HEADER = "__irl_jax_episodes__"
_ARRAYS = ("obs", "action", "reward", "terminated", "truncated", "next_obs", "log_prob",
           "episode_starts")
# Field names as they are in a Minari file, for the error messages of `from_minari`.
_MINARI_NAMES = {"obs": "observations", "next_obs": "observations", "action": "actions",
                 "reward": "rewards", "terminated": "terminations", "truncated": "truncations",
                 "log_prob": "infos['log_prob']"}
_MINARI_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "infos")


# ---------------------------------------------------------------------------
# The dataset.


@dataclasses.dataclass(frozen=True, eq=False)
class Episodes:
  """Whole episodes, stored flat: `N` rows (transitions) in `E` episodes.

  obs, next_obs: `[N, *spec.obs_shape]` float32; `next_obs` is the true successor
    (before any automatic reset); inside an episode `next_obs[t] == obs[t + 1]`.
  action: `[N]` int32 in `[0, num_actions)` (discrete) or `[N, *action.shape]`
    float32 in `[low, high]` (continuous).
  reward: `[N]` float32. terminated, truncated: `[N]` bool, set at (and only at)
    the last step of an episode.
  log_prob: `[N]` float32, log π(a|s) of the behaviour policy at sampling time,
    NaN where unknown.
  episode_starts: `[E]` int64, the first row of each episode (0, increasing).
  spec: the environment's `EnvSpec` (`spec.name` names the environment; for a
    Minari dataset it is the gymnasium id, or the dataset id without one).
  metadata: a JSON-serialisable dict, e.g. `{"policy": "ppo", "policy_return": 500.0}`.

  Construction converts the arrays to these dtypes (floats and integers widen or
  narrow to float32 / int32; terminations must already be bool), copies them,
  makes them read-only and checks every invariant, raising `ValueError` naming the
  field, the row and its episode.
  """
  obs: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  terminated: np.ndarray
  truncated: np.ndarray
  next_obs: np.ndarray
  log_prob: np.ndarray
  episode_starts: np.ndarray
  spec: EnvSpec
  metadata: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    arrays = _normalise({name: getattr(self, name) for name in _ARRAYS}, self.spec)
    _validate(arrays, self.spec)
    for name, value in arrays.items():
      value.flags.writeable = False
      object.__setattr__(self, name, value)
    if not isinstance(self.metadata, dict):
      raise ValueError(f"metadata must be a dict, got {type(self.metadata).__name__}")
    try:
      metadata = json.loads(json.dumps(self.metadata, allow_nan=True))
    except (TypeError, ValueError) as e:
      raise ValueError(f"metadata must be JSON-serialisable: {e}") from e
    object.__setattr__(self, "metadata", metadata)

  @property
  def num_steps(self) -> int:
    """`N`, the number of rows (transitions)."""
    return int(self.reward.shape[0])

  @property
  def num_episodes(self) -> int:
    """`E`, the number of episodes."""
    return int(self.episode_starts.shape[0])

  @property
  def lengths(self) -> np.ndarray:
    """`[E]` int64, the number of steps of each episode."""
    return np.diff(np.append(self.episode_starts, self.num_steps))

  @property
  def episode_ids(self) -> np.ndarray:
    """`[N]` int64, the episode of each row."""
    return np.repeat(np.arange(self.num_episodes), self.lengths)

  def __repr__(self) -> str:
    return (f"Episodes(env={self.spec.name!r}, num_episodes={self.num_episodes}, "
            f"num_steps={self.num_steps}, obs_shape={tuple(self.spec.obs_shape)}, "
            f"metadata={self.metadata!r})")


def _normalise(arrays: dict, spec: EnvSpec) -> dict:
  """Copies of the arrays in the stored dtypes; raises `ValueError` on a dtype that
  cannot be converted without changing what it means."""
  out = {}
  for name in ("obs", "next_obs", "reward", "log_prob"):
    x = np.asarray(arrays[name])
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
      raise ValueError(f"field {name!r} must be numeric, got dtype {x.dtype}")
    out[name] = np.array(x, np.float32)
  for name in ("terminated", "truncated"):
    x = np.asarray(arrays[name])
    if x.dtype != np.bool_:
      raise ValueError(f"field {name!r} must be bool, got dtype {x.dtype}")
    out[name] = np.array(x)
  action = np.asarray(arrays["action"])
  if spec.action.discrete:
    if not np.issubdtype(action.dtype, np.integer):
      raise ValueError(f"field 'action' must be integer for a discrete action space, got dtype "
                       f"{action.dtype}")
    if action.size and (action.min() < np.iinfo(np.int32).min or
                        action.max() > np.iinfo(np.int32).max):
      raise ValueError("field 'action': values do not fit int32")
    out["action"] = np.array(action, np.int32)
  else:
    if not (np.issubdtype(action.dtype, np.floating) or np.issubdtype(action.dtype, np.integer)):
      raise ValueError(f"field 'action' must be numeric, got dtype {action.dtype}")
    out["action"] = np.array(action, np.float32)
  starts = np.asarray(arrays["episode_starts"])
  if starts.size == 0:
    starts = starts.astype(np.int64)
  if not np.issubdtype(starts.dtype, np.integer):
    raise ValueError(f"field 'episode_starts' must be integer, got dtype {starts.dtype}")
  out["episode_starts"] = np.array(starts, np.int64)
  return out


def _validate(arrays: dict, spec: EnvSpec, names: dict | None = None) -> None:
  """Checks the invariants of `Episodes` on normalised flat arrays.

  names: how to call each field in messages (e.g. Minari's names); ours by default.
  Raises `ValueError` naming the field, and the row and episode of the first
  offending entry."""
  names = names or {}
  label = lambda field: repr(names.get(field, field))
  starts = arrays["episode_starts"]
  n = arrays["obs"].shape[0] if arrays["obs"].ndim else 0

  # Shapes.
  obs_shape = tuple(spec.obs_shape)
  action_shape = () if spec.action.discrete else tuple(spec.action.shape)
  expected = {"obs": (n, *obs_shape), "next_obs": (n, *obs_shape), "action": (n, *action_shape),
              "reward": (n,), "terminated": (n,), "truncated": (n,), "log_prob": (n,)}
  for field, shape in expected.items():
    got = arrays[field].shape
    if got != shape:
      if got[:1] != shape[:1]:
        raise ValueError(f"field {label(field)} has {got[0] if got else 0} rows but "
                         f"{label('obs')} has {n} (shape {got}, expected {shape})")
      raise ValueError(f"field {label(field)} has shape {got}, expected {shape} "
                       f"(obs_shape {obs_shape}, action shape {action_shape})")
  if starts.ndim != 1:
    raise ValueError(f"field 'episode_starts' must be 1-D, got shape {starts.shape}")
  if len(starts) == 0 and n:
    raise ValueError(f"field 'episode_starts' is empty but there are {n} rows")
  if len(starts):
    if starts[0] != 0:
      raise ValueError(f"field 'episode_starts' must begin at 0, got {starts[0]}")
    if np.any(np.diff(starts) <= 0) or starts[-1] >= n:
      raise ValueError(f"field 'episode_starts' must increase strictly and stay below the "
                       f"{n} rows (every episode has at least one step), got {starts}")

  def where(row) -> str:
    episode = int(np.searchsorted(starts, row, side="right") - 1)
    return f"row {row} (episode {episode}, step {row - starts[episode]})"

  def first(bad) -> int:
    return int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])

  # Values.
  for field in ("obs", "next_obs", "reward"):
    bad = ~np.isfinite(arrays[field])
    if bad.any():
      row = first(bad)
      raise ValueError(f"field {label(field)} has a non-finite value (NaN or inf) at "
                       f"{where(row)}: {arrays[field][row]}")
  bad = np.isinf(arrays["log_prob"]) & (arrays["log_prob"] > 0)
  if bad.any():
    raise ValueError(f"field {label('log_prob')} is +inf at {where(first(bad))}; use NaN for "
                     "unknown log-probabilities")
  action = arrays["action"]
  if spec.action.discrete:
    bad = (action < 0) | (action >= spec.action.num_actions)
    space = f"Discrete({spec.action.num_actions})"
  else:
    low = np.broadcast_to(np.asarray(spec.action.low, np.float32), action_shape)
    high = np.broadcast_to(np.asarray(spec.action.high, np.float32), action_shape)
    bad = ~np.isfinite(action) | (action < low) | (action > high)
    space = f"Box(low={low.tolist()}, high={high.tolist()})"
  if bad.any():
    row = first(bad)
    raise ValueError(f"field {label('action')} at {where(row)} is {action[row]}, outside the "
                     f"action space {space}")

  # Episode boundaries: a flag at, and only at, each episode's last step.
  done = arrays["terminated"] | arrays["truncated"]
  last = np.zeros(n, bool)
  if n:
    last[np.append(starts[1:] - 1, n - 1)] = True
  if (bad := last & ~done).any():
    row = int(np.flatnonzero(bad)[0])
    raise ValueError(f"fields {label('terminated')}/{label('truncated')}: the episode ending "
                     f"at {where(row)} has neither flag set at its last step")
  if (bad := ~last & done).any():
    row = int(np.flatnonzero(bad)[0])
    field = "terminated" if arrays["terminated"][row] else "truncated"
    raise ValueError(f"field {label(field)} is set at {where(row)}, which is not the last step "
                     "of its episode")
  # Inside an episode, the successor is the next row's observation.
  inner = np.flatnonzero(~last)
  if inner.size:
    bad = arrays["next_obs"][inner] != arrays["obs"][inner + 1]
    if bad.any():
      row = int(inner[first(bad)])
      raise ValueError(f"field {label('next_obs')} at {where(row)} differs from the next row's "
                       f"{label('obs')}: {arrays['next_obs'][row].tolist()} vs "
                       f"{arrays['obs'][row + 1].tolist()} (inside an episode they must be "
                       "equal: set next_obs[t] = obs[t + 1] there)")


def episode_returns(dataset: Episodes) -> np.ndarray:
  """`[E]` float64, the undiscounted return (sum of rewards) of each episode."""
  if dataset.num_episodes == 0:
    return np.zeros((0,), np.float64)
  return np.add.reduceat(dataset.reward.astype(np.float64), dataset.episode_starts)


def select_episodes(dataset: Episodes, indices) -> Episodes:
  """The episodes `indices` (`[K]` ints, in that order; repeats allowed), with the
  same spec and metadata."""
  indices = np.asarray(indices, np.int64).reshape(-1)
  if indices.size and (indices.min() < 0 or indices.max() >= dataset.num_episodes):
    raise ValueError(f"episode indices must lie in [0, {dataset.num_episodes}), got "
                     f"{indices.min()}..{indices.max()}")
  lengths = dataset.lengths[indices]
  rows = (np.concatenate([np.arange(s, s + k) for s, k in
                          zip(dataset.episode_starts[indices], lengths, strict=True)])
          if indices.size else np.zeros((0,), np.int64))
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if indices.size \
      else np.zeros((0,), np.int64)
  return Episodes(**{name: getattr(dataset, name)[rows] for name in _ARRAYS[:-1]},
                  episode_starts=starts, spec=dataset.spec, metadata=dataset.metadata)


def concatenate(parts: list[Episodes], metadata: dict | None = None) -> Episodes:
  """One dataset holding every episode of `parts`, in order. All parts must share one
  spec; `metadata` defaults to the first part's."""
  if not parts:
    raise ValueError("concatenate: no datasets given")
  spec = parts[0].spec
  for i, p in enumerate(parts[1:], 1):
    if p.spec != spec:
      raise ValueError(f"concatenate: part {i} is for {p.spec.name}, part 0 for {spec.name}")
  offsets = np.cumsum([0] + [p.num_steps for p in parts[:-1]])
  starts = np.concatenate([p.episode_starts + o for p, o in zip(parts, offsets, strict=True)])
  fields = ("obs", "action", "reward", "terminated", "truncated", "next_obs", "log_prob")
  return Episodes(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields},
                  episode_starts=starts, spec=spec,
                  metadata=dict(parts[0].metadata if metadata is None else metadata))


def take_episodes(dataset: Episodes, n: int) -> Episodes:
  """The first `n` episodes (nested subsets for 1/5/25-demonstration studies).
  Raises `ValueError` when the dataset has fewer than `n`."""
  if not 0 <= n <= dataset.num_episodes:
    raise ValueError(f"take_episodes: asked for {n} episodes, the dataset has "
                     f"{dataset.num_episodes}")
  return select_episodes(dataset, np.arange(n))


# ---------------------------------------------------------------------------
# Collection.


def collect_episodes(env: envs.Env, act: Callable, key, num_episodes: int, *, num_envs: int = 8,
                     max_env_steps: int | None = None, chunk_steps: int | None = None,
                     metadata: dict | None = None) -> Episodes:
  """Exactly `num_episodes` complete episodes of `act` in `env`, run in parallel.

  act: `act(key, obs) -> (action, log_prob)` for one observation `[*obs_shape]`
    (vmapped here); return `log_prob = jnp.nan` when unknown.
  num_envs: parallel environments (at most `num_episodes` are used).
  max_env_steps: the step budget per environment; by default `k · spec.max_steps`
    for the `k = ceil(num_episodes / num_envs)` episodes each environment owes,
    which the time limit always meets. Raises `RuntimeError` when it is spent
    before every episode is complete.
  chunk_steps: steps per compiled `envs.rollout` call (default
    `min(budget, spec.max_steps)`).
  metadata: stored with the dataset (JSON-serialisable), over the defaults
    `{"env", "collector", "num_envs"}`.

  Environment `i` owes its first `k_i` episodes (`k_i` fixed in advance, so the
  selection does not favour short episodes, unlike keeping whichever episodes
  finish first); the result lists them round-robin, episode `j` of environment
  0, 1, ... before episode `j + 1`, so it is deterministic given `key`. Only
  complete episodes are kept (each ends by termination or truncation); steps after
  an environment's last owed episode are discarded. Continuous actions are stored
  as executed, clipped to the action box; `log_prob` is the policy's for the
  unclipped sample. Inside an episode `next_obs[t]` is `obs[t + 1]`, the
  observation the policy acted on (the environment's `final_obs` for the same
  state can differ from it in the last bits under XLA); at an episode's last step
  it is `final_obs`, the true successor.
  """
  spec = env.spec
  if num_episodes < 0:
    raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
  if num_envs < 1:
    raise ValueError(f"num_envs must be >= 1, got {num_envs}")
  meta = {"env": spec.name, "collector": "irl_jax.control.data.collect_episodes",
          "num_envs": min(num_envs, num_episodes), **(metadata or {})}
  if num_episodes == 0:
    return _empty(spec, meta)
  n = min(num_envs, num_episodes)
  owed = np.array([num_episodes // n + (i < num_episodes % n) for i in range(n)])
  budget = int(max_env_steps) if max_env_steps is not None else int(owed.max()) * spec.max_steps
  chunk = int(chunk_steps) if chunk_steps is not None else max(1, min(budget, spec.max_steps))

  k_reset, k_run = jax.random.split(key)
  state, obs = jax.vmap(env.reset)(jax.random.split(k_reset, n))
  run = jax.jit(jax.vmap(lambda s, o, k: envs.rollout(env, act, s, o, k, chunk)))
  chunks, finished, steps = [], np.zeros(n, np.int64), 0
  while np.any(finished < owed):
    if steps >= budget:
      raise RuntimeError(
          f"collect_episodes: {int(np.minimum(finished, owed).sum())} of {num_episodes} episodes "
          f"complete after {steps} steps per environment (budget max_env_steps={budget}); "
          f"environments finished {finished.tolist()} episodes, owing {owed.tolist()}. Raise "
          "max_env_steps or num_envs.")
    state, obs, traj = run(state, obs, jax.random.split(jax.random.fold_in(k_run, len(chunks)), n))
    traj = jax.device_get(traj)  # fields [n, chunk, ...]
    chunks.append(traj)
    finished += np.sum(traj.terminated | traj.truncated, axis=1)
    steps += chunk
  traj = envs.Rollout(*(np.concatenate(parts, axis=1) for parts in zip(*chunks, strict=True)))

  done = traj.terminated | traj.truncated
  ends = [np.flatnonzero(done[i])[:owed[i]] for i in range(n)]
  env_rows, time_rows, lengths = [], [], []
  for j in range(int(owed.max())):
    for i in range(n):
      if j < owed[i]:
        start = ends[i][j - 1] + 1 if j else 0
        env_rows.append(np.full(ends[i][j] + 1 - start, i))
        time_rows.append(np.arange(start, ends[i][j] + 1))
        lengths.append(ends[i][j] + 1 - start)
  e, t = np.concatenate(env_rows), np.concatenate(time_rows)
  action = np.asarray(traj.action)[e, t]
  if not spec.action.discrete:
    action = np.clip(action, spec.action.low, spec.action.high)
  log_prob = np.broadcast_to(np.asarray(traj.log_prob, np.float32), done.shape)[e, t]
  obs, next_obs = traj.obs[e, t], traj.next_obs[e, t]
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  inner = np.ones(len(obs), bool)
  inner[np.append(starts[1:] - 1, len(obs) - 1)] = False
  # The environment's successor (`final_obs`) and the next policy input are the same
  # state, but XLA may compute them in two fusions that differ in the last bits;
  # inside an episode keep the observation the policy acted on.
  next_obs[inner] = obs[np.flatnonzero(inner) + 1]
  return Episodes(obs=obs, action=action, reward=traj.reward[e, t],
                  terminated=traj.terminated[e, t], truncated=traj.truncated[e, t],
                  next_obs=next_obs, log_prob=log_prob, episode_starts=starts, spec=spec,
                  metadata=meta)


def _empty(spec: EnvSpec, metadata: dict) -> Episodes:
  obs = np.zeros((0, *spec.obs_shape), np.float32)
  action = (np.zeros((0,), np.int32) if spec.action.discrete
            else np.zeros((0, *spec.action.shape), np.float32))
  return Episodes(obs=obs, action=action, reward=np.zeros(0, np.float32),
                  terminated=np.zeros(0, bool), truncated=np.zeros(0, bool), next_obs=obs,
                  log_prob=np.zeros(0, np.float32), episode_starts=np.zeros(0, np.int64),
                  spec=spec, metadata=metadata)


# ---------------------------------------------------------------------------
# Transitions for the learners.


def to_transitions(dataset: Episodes) -> Transitions:
  """The dataset's `N` rows as a flat `Transitions` batch (jax arrays, weight 1)."""
  return Transitions(
      obs=jnp.asarray(dataset.obs), action=jnp.asarray(dataset.action),
      reward=jnp.asarray(dataset.reward), next_obs=jnp.asarray(dataset.next_obs),
      terminated=jnp.asarray(dataset.terminated), truncated=jnp.asarray(dataset.truncated),
      log_prob=jnp.asarray(dataset.log_prob),
      weight=jnp.ones((dataset.num_steps,), jnp.float32))


def pad_transitions(transitions: Transitions, size: int) -> Transitions:
  """`transitions` (`N` rows) padded to `size` rows with weight 0, so that learners
  vmapped over datasets of different sizes compile once. Padding rows are zeros
  (terminations False, log_prob 0, never NaN, so that masked sums stay finite).
  Raises `ValueError` when `size < N`. Pure; `size` is static."""
  n = transitions.weight.shape[0]
  if size < n:
    raise ValueError(f"pad_transitions: size {size} is smaller than the {n} rows")
  pad = lambda x: jnp.concatenate([x, jnp.zeros((size - n, *x.shape[1:]), x.dtype)])
  return Transitions(*(pad(x) for x in transitions))


def sample_batch(transitions: Transitions, key, batch_size: int) -> Transitions:
  """`batch_size` rows drawn uniformly with replacement from the real rows
  (`weight > 0`) of `transitions`; padding rows are never drawn. The rows keep
  their `weight`. Pure and jit-able (`batch_size` static); `transitions` must have
  at least one real row (checked when the weights are concrete)."""
  real = transitions.weight > 0
  counts = jnp.cumsum(real.astype(jnp.int32))
  total = counts[-1]
  if not isinstance(total, jax.core.Tracer) and int(total) == 0:
    raise ValueError("sample_batch: no real rows (every weight is 0)")
  # The (u+1)-th real row is the first row whose running count exceeds u; integer
  # arithmetic, so a padding row (whose count equals its predecessor's) is never hit.
  u = jax.random.randint(key, (batch_size,), 0, jnp.maximum(total, 1))
  rows = jnp.searchsorted(counts, u, side="right")
  return jax.tree.map(lambda x: x[rows], transitions)


# ---------------------------------------------------------------------------
# Preference segments (synthetic labeller).


class PreferencePairs(NamedTuple):
  """`P` pairs of segments of `L` steps; axis 1 is (first, second) segment.

  obs, next_obs: `[P, 2, L, *obs_shape]`. action: `[P, 2, L]` (discrete) or
  `[P, 2, L, *action_shape]`. reward: `[P, 2, L]` the true rewards (the labeller's
  input; reward learners should not use them). terminated, truncated: `[P, 2, L]`
  bool. mask: `[P, 2, L]` bool, False on the padding of a segment cut short by
  the end of its episode (padding rows are zeros). label: `[P]` float32 in
  {0, 0.5, 1}, 1 when the second segment is preferred (the convention of
  `irl_jax.losses.offline_rl.ipl_preference_loss`). probability: `[P]` the
  labeller's probability that the second segment is preferred. returns: `[P, 2]`
  the segments' true returns. episode, start: `[P, 2]` int32, where each segment
  comes from.
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  mask: jax.Array
  label: jax.Array
  probability: jax.Array
  returns: jax.Array
  episode: jax.Array
  start: jax.Array


def label_segments(returns, key, *, labeller: str = "bradley_terry",
                   temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """A synthetic labeller: `(label [P], probability [P])` from the returns `[P, 2]`
  of the two segments of each pair (a stand-in for human labels, computed from the
  environment's true rewards).

  "bradley_terry": `probability = σ((R₂ − R₁) / temperature)` and `label ~
    Bernoulli(probability)`, in {0, 1}.
  "deterministic": `label = 1` if `R₂ > R₁`, `0` if `R₂ < R₁`, `0.5` on a tie;
    `probability = label`; `key` is unused.
  """
  returns = jnp.asarray(returns, jnp.float32)
  if returns.ndim != 2 or returns.shape[1] != 2:
    raise ValueError(f"label_segments: returns must have shape [P, 2], got {returns.shape}")
  diff = returns[:, 1] - returns[:, 0]
  if labeller == "bradley_terry":
    if not temperature > 0:
      raise ValueError(f"label_segments: temperature must be > 0, got {temperature}")
    probability = jax.nn.sigmoid(diff / temperature)
    label = jax.random.bernoulli(key, probability).astype(jnp.float32)
    return label, probability
  if labeller == "deterministic":
    label = jnp.where(diff > 0, 1.0, jnp.where(diff < 0, 0.0, 0.5)).astype(jnp.float32)
    return label, label
  raise ValueError(f"label_segments: labeller must be 'bradley_terry' or 'deterministic', got "
                   f"{labeller!r}")


def preference_pairs(dataset: Episodes, key, num_pairs: int, segment_length: int, *,
                     labeller: str = "bradley_terry", temperature: float = 1.0) -> PreferencePairs:
  """`num_pairs` pairs of segments of `segment_length` steps, labelled by the
  synthetic `label_segments` from the true rewards.

  Each segment is drawn independently and uniformly among the valid (episode,
  start) positions: starts `0 .. T − L` of every episode of `T ≥ L` steps, and
  start 0 (the whole episode, masked beyond its end) of a shorter one. The two
  segments of a pair may come from the same episode.
  """
  if dataset.num_episodes == 0:
    raise ValueError("preference_pairs: the dataset has no episodes")
  if segment_length < 1 or num_pairs < 0:
    raise ValueError(f"preference_pairs: need segment_length >= 1 and num_pairs >= 0, got "
                     f"{segment_length}, {num_pairs}")
  k_pos, k_label = jax.random.split(key)
  lengths = dataset.lengths
  counts = np.maximum(lengths - segment_length, 0) + 1  # valid starts per episode
  cum = np.cumsum(counts)
  u = np.asarray(jax.random.randint(k_pos, (num_pairs, 2), 0, int(cum[-1])))
  episode = np.searchsorted(cum, u, side="right")
  start = u - (cum[episode] - counts[episode])
  offset = start[..., None] + np.arange(segment_length)  # [P, 2, L]
  mask = offset < lengths[episode][..., None]
  rows = np.where(mask, dataset.episode_starts[episode][..., None] + offset, 0)

  def gather(x):
    g = x[rows]
    return np.where(mask.reshape(mask.shape + (1,) * (g.ndim - 3)), g, np.zeros((), g.dtype))

  reward = gather(dataset.reward)
  returns = reward.astype(np.float64).sum(-1).astype(np.float32)
  label, probability = label_segments(returns, k_label, labeller=labeller,
                                      temperature=temperature)
  return PreferencePairs(
      obs=jnp.asarray(gather(dataset.obs)), action=jnp.asarray(gather(dataset.action)),
      reward=jnp.asarray(reward), next_obs=jnp.asarray(gather(dataset.next_obs)),
      terminated=jnp.asarray(gather(dataset.terminated)),
      truncated=jnp.asarray(gather(dataset.truncated)), mask=jnp.asarray(mask),
      label=label, probability=probability, returns=jnp.asarray(returns),
      episode=jnp.asarray(episode, jnp.int32), start=jnp.asarray(start, jnp.int32))


# ---------------------------------------------------------------------------
# Our own file: one .npz.


def _spec_to_json(spec: EnvSpec) -> dict:
  a = spec.action
  bound = lambda x: None if x is None else np.asarray(x, np.float32).tolist()
  return {"name": spec.name, "obs_shape": list(spec.obs_shape), "max_steps": int(spec.max_steps),
          "action": {"discrete": bool(a.discrete), "shape": list(a.shape),
                     "num_actions": None if a.num_actions is None else int(a.num_actions),
                     "low": bound(a.low), "high": bound(a.high)}}


def _spec_from_json(d: dict) -> EnvSpec:
  a = d["action"]
  shape = tuple(a["shape"])
  bound = lambda x: None if x is None else np.broadcast_to(np.asarray(x, np.float32), shape)
  action = ActionSpec(bool(a["discrete"]), shape, a["num_actions"], bound(a["low"]),
                      bound(a["high"]))
  return EnvSpec(str(d["name"]), tuple(d["obs_shape"]), action, int(d["max_steps"]))


def save(dataset: Episodes, path) -> pathlib.Path:
  """Writes `dataset` to one compressed `.npz` file (the format in the module
  docstring); `.npz` is appended to `path` when missing. Returns the path written."""
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    path = path.with_name(path.name + ".npz")
  header = {"format": FORMAT, "version": FORMAT_VERSION, "spec": _spec_to_json(dataset.spec),
            "metadata": dataset.metadata}
  np.savez_compressed(path, **{name: getattr(dataset, name) for name in _ARRAYS},
                      **{_HEADER: np.array(json.dumps(header))})
  return path


def load(path) -> Episodes:
  """Reads a file written by `save`. Raises `FileNotFoundError` when it is absent,
  and `ValueError` naming the file (and the field) when it is not such a file or
  breaks an invariant of `Episodes`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as npz:
      files = {name: npz[name] for name in npz.files}
  except Exception as e:
    raise ValueError(f"{path}: not an irl_jax episodes file (not a readable .npz: {e})") from e
  if _HEADER not in files:
    raise ValueError(f"{path}: not an irl_jax episodes file (no {_HEADER!r} header entry)")
  try:
    header = json.loads(str(files[_HEADER]))
    assert header["format"] == FORMAT
  except Exception as e:
    raise ValueError(f"{path}: not an irl_jax episodes file (bad {_HEADER!r} header)") from e
  if header.get("version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format version {header.get('version')!r} is not supported "
                     f"(this reader knows version {FORMAT_VERSION})")
  missing = [name for name in _ARRAYS if name not in files]
  if missing:
    raise ValueError(f"{path}: missing field(s) {missing}")
  try:
    spec = _spec_from_json(header["spec"])
  except Exception as e:
    raise ValueError(f"{path}: bad 'spec' in the header: {e}") from e
  try:
    return Episodes(**{name: files[name] for name in _ARRAYS}, spec=spec,
                    metadata=header.get("metadata", {}))
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------
# Gymnasium spaces and Farama Minari.


def observation_space(spec: EnvSpec):
  """`gymnasium.spaces.Box(-inf, inf, obs_shape, float32)` (our specs keep no bounds)."""
  import gymnasium

  return gymnasium.spaces.Box(-np.inf, np.inf, tuple(spec.obs_shape), np.float32)


def action_space(spec: EnvSpec):
  """`gymnasium.spaces.Discrete(num_actions)`, or `Box(low, high, shape, float32)`."""
  import gymnasium

  a = spec.action
  if a.discrete:
    return gymnasium.spaces.Discrete(int(a.num_actions))
  return gymnasium.spaces.Box(np.asarray(a.low, np.float32), np.asarray(a.high, np.float32),
                              tuple(a.shape), np.float32)


def spec_from_spaces(name: str, obs_space, act_space, max_steps: int) -> EnvSpec:
  """An `EnvSpec` from gymnasium spaces: a `Box` observation space, and a
  `Discrete` (starting at 0) or `Box` action space. Raises `ValueError` otherwise."""
  import gymnasium

  if not isinstance(obs_space, gymnasium.spaces.Box):
    raise ValueError(f"observation space {obs_space} is not supported (only Box; flatten "
                     "Dict/Tuple spaces first)")
  if isinstance(act_space, gymnasium.spaces.Discrete):
    if int(act_space.start) != 0:
      raise ValueError(f"action space {act_space} starts at {act_space.start}; only "
                       "Discrete(n) starting at 0 is supported")
    action = ActionSpec(True, (), num_actions=int(act_space.n))
  elif isinstance(act_space, gymnasium.spaces.Box):
    shape = tuple(act_space.shape)
    action = ActionSpec(False, shape, low=np.broadcast_to(np.asarray(act_space.low, np.float32),
                                                          shape),
                        high=np.broadcast_to(np.asarray(act_space.high, np.float32), shape))
  else:
    raise ValueError(f"action space {act_space} is not supported (only Discrete or Box)")
  return EnvSpec(name, tuple(obs_space.shape), action, int(max_steps))


def _minari_root(root) -> pathlib.Path:
  if root is not None:
    return pathlib.Path(root)
  from minari.storage.datasets_root_dir import get_dataset_path

  return pathlib.Path(get_dataset_path())  # $MINARI_DATASETS_PATH or ~/.minari/datasets


def _check_dataset_id(dataset_id: str) -> None:
  from minari.dataset.minari_dataset import DATASET_ID_RE

  match = DATASET_ID_RE.fullmatch(dataset_id)
  if not match or match.group("version") is None:
    raise ValueError(f"Minari dataset id {dataset_id!r} must look like "
                     "'(namespace/)name-v<version>', e.g. 'irl_jax/cartpole-expert-v0'")


def to_minari(dataset: Episodes, dataset_id: str, *, root=None, data_format: str = "arrow",
              description: str | None = None, algorithm_name: str | None = None) -> pathlib.Path:
  """Writes `dataset` as the Minari dataset `dataset_id` under `root` (default:
  Minari's own root, `$MINARI_DATASETS_PATH` or `~/.minari/datasets`, where
  `minari.load_dataset(dataset_id)` finds it). Returns the dataset's directory,
  `root/dataset_id` (the data are in its `data/`).

  data_format: a Minari storage backend, "arrow" (pyarrow; the default) or "hdf5"
  (needs h5py). Observations are stored as a `Box(-inf, inf)` space and actions as
  `Discrete(n)` or `Box(low, high)`; log-probabilities go in `infos["log_prob"]`.
  Raises `FileExistsError` if the dataset exists, `ValueError` on a malformed id.
  """
  _check_dataset_id(dataset_id)
  directory = _minari_root(root) / dataset_id
  if directory.exists():
    raise FileExistsError(f"{directory}: a Minari dataset {dataset_id!r} already exists")
  (directory / "data").mkdir(parents=True)
  try:
    _write_minari(dataset, dataset_id, directory / "data", data_format, description,
                  algorithm_name)
  except BaseException:
    shutil.rmtree(directory, ignore_errors=True)  # no half-written dataset left behind
    raise
  return directory


def _write_minari(dataset: Episodes, dataset_id: str, data_path: pathlib.Path, data_format: str,
                  description: str | None, algorithm_name: str | None) -> None:
  from minari import __version__ as minari_version
  from minari.data_collector.episode_buffer import EpisodeBuffer
  from minari.dataset.minari_storage import MinariStorage

  storage = MinariStorage.new(data_path, observation_space=observation_space(dataset.spec),
                              action_space=action_space(dataset.spec), data_format=data_format)
  extra: dict[str, Any] = {"dataset_id": dataset_id, "minari_version": minari_version,
                           "irl_jax": {"format": FORMAT, "version": FORMAT_VERSION,
                                       "spec": _spec_to_json(dataset.spec),
                                       "metadata": dataset.metadata}}
  if description is not None:
    extra["description"] = description
  if algorithm_name is not None:
    extra["algorithm_name"] = algorithm_name
  storage.update_metadata(extra)
  buffers = []
  ends = np.append(dataset.episode_starts, dataset.num_steps)[1:].tolist()
  for e, (s, end) in enumerate(zip(dataset.episode_starts.tolist(), ends, strict=True)):
    action = dataset.action[s:end]
    buffers.append(EpisodeBuffer(
        id=e, observations=np.concatenate([dataset.obs[s:end], dataset.next_obs[end - 1:end]]),
        actions=action.astype(np.int64) if dataset.spec.action.discrete else action,
        rewards=dataset.reward[s:end], terminations=dataset.terminated[s:end],
        truncations=dataset.truncated[s:end],
        # A list of floats: Minari's Arrow reader cannot decode a 1-D array in infos.
        infos={"log_prob": [*map(float, dataset.log_prob[s:end]), float("nan")]}))
  storage.update_episodes(buffers)


def _minari_data_path(dataset_id_or_path, root) -> pathlib.Path:
  candidate = pathlib.Path(dataset_id_or_path)
  if root is None and candidate.exists():
    path = candidate
  else:
    path = _minari_root(root) / str(dataset_id_or_path)
    if not path.exists():
      raise FileNotFoundError(f"{path}: no Minari dataset {str(dataset_id_or_path)!r} there")
  if (path / "data" / "metadata.json").is_file():
    return path / "data"
  if (path / "metadata.json").is_file():
    return path
  raise ValueError(f"{path}: not a Minari dataset (no metadata.json in it or in its data/)")


def _minari_episode(ep, index: int, spec: EnvSpec, source) -> dict:
  """One Minari episode (a dict as `MinariStorage.get_episodes` gives) as our flat
  arrays, after the per-episode checks: fields present, lengths (observations
  `T + 1`, the rest `T`), bool flags."""
  where = f"{source}: episode {index}"
  for field in _MINARI_FIELDS[:-1]:
    if field not in ep or ep[field] is None:
      raise ValueError(f"{where}: missing field {field!r}")
  if isinstance(ep["observations"], (dict, tuple)):
    raise ValueError(f"{where}: field 'observations' is a Dict/Tuple space, not supported")
  obs = np.asarray(ep["observations"])
  actions = np.asarray(ep["actions"])
  steps = len(actions)
  if steps == 0:
    raise ValueError(f"{where}: field 'actions' is empty (an episode needs at least one step)")
  if len(obs) != steps + 1:
    raise ValueError(f"{where}: field 'observations' has length {len(obs)} but 'actions' has "
                     f"{steps} (Minari stores T + 1 observations for T actions)")
  arrays = {}
  for field, ours in (("rewards", "reward"), ("terminations", "terminated"),
                      ("truncations", "truncated")):
    x = np.asarray(ep[field])
    if x.shape != (steps,):
      raise ValueError(f"{where}: field {field!r} has shape {x.shape} but 'actions' has length "
                       f"{steps}")
    arrays[ours] = x
  for field, ours in (("terminations", "terminated"), ("truncations", "truncated")):
    if arrays[ours].dtype != np.bool_:
      raise ValueError(f"{where}: field {field!r} must be bool, got dtype {arrays[ours].dtype}")
  if not (np.issubdtype(arrays["reward"].dtype, np.floating)
          or np.issubdtype(arrays["reward"].dtype, np.integer)):
    raise ValueError(f"{where}: field 'rewards' must be numeric, got dtype "
                     f"{arrays['reward'].dtype}")
  log_prob = np.full(steps, np.nan, np.float32)
  infos = ep.get("infos") or {}
  if "log_prob" in infos:
    lp = np.asarray(infos["log_prob"], np.float64).reshape(-1)
    if lp.shape != (steps + 1,):
      raise ValueError(f"{where}: field \"infos['log_prob']\" has length {lp.shape[0]}, expected "
                       f"{steps + 1} (aligned with the observations)")
    log_prob = lp[:steps].astype(np.float32)
  if spec.action.discrete and not np.issubdtype(actions.dtype, np.integer):
    raise ValueError(f"{where}: field 'actions' must be integer for {spec.action}, got dtype "
                     f"{actions.dtype}")
  return {"obs": obs[:-1], "next_obs": obs[1:], "action": actions, "log_prob": log_prob,
          **arrays}


def from_minari(dataset_id_or_path, *, root=None) -> Episodes:
  """Reads a Minari dataset (any Minari storage backend Minari can open here) into
  `Episodes`: by id under `root` (default Minari's root, as `minari.load_dataset`
  resolves it), or from a path (the dataset directory or its `data/`).

  Episodes keep Minari's order. `obs` is `observations[:-1]` and `next_obs`
  `observations[1:]` per episode; rewards are cast to float32, discrete actions to
  int32. A dataset written by `to_minari` comes back exactly (spec and
  metadata included); for another, `spec.name` is the gymnasium id of its
  `env_spec` (else the dataset id), `spec.max_steps` its `max_episode_steps`
  (else the longest episode), and `metadata = {"minari": {...}}` keeps its id,
  algorithm, author, description, version and reference scores.

  Raises `FileNotFoundError` when absent, and `ValueError` naming the file, the
  field and the episode when it is not a Minari dataset, lacks a field, has a
  wrong length, NaN in observations or rewards, an action outside its action
  space, non-bool terminations, or an episode without a final flag.
  """
  from minari.dataset.minari_dataset import MinariDataset

  data_path = _minari_data_path(dataset_id_or_path, root)
  try:
    minari_dataset = MinariDataset(data_path)
    raw = minari_dataset.storage.metadata
  except Exception as e:
    raise ValueError(f"{data_path}: not a readable Minari dataset: {type(e).__name__}: {e}") from e
  ours = raw.get("irl_jax")
  if isinstance(ours, dict) and ours.get("format") == FORMAT:
    spec, metadata = _spec_from_json(ours["spec"]), ours.get("metadata", {})
  else:
    name, max_steps = raw.get("dataset_id", str(dataset_id_or_path)), None
    if raw.get("env_spec"):
      try:
        env_spec = json.loads(raw["env_spec"])
        name, max_steps = env_spec.get("id", name), env_spec.get("max_episode_steps")
      except (TypeError, ValueError):
        pass
    try:
      spec = spec_from_spaces(name, minari_dataset.observation_space,
                              minari_dataset.action_space, max_steps or 0)
    except ValueError as e:
      raise ValueError(f"{data_path}: {e}") from e
    keep = ("dataset_id", "algorithm_name", "author", "author_email", "code_permalink",
            "description", "minari_version", "ref_min_score", "ref_max_score")
    metadata = {"minari": {k: sorted(raw[k]) if isinstance(raw[k], set) else raw[k]
                           for k in keep if k in raw}}

  # One episode at a time: Arrow would otherwise merge the episodes' schemas first,
  # and a bad column in one episode would fail (or be null-filled) for all of them.
  episodes = []
  for index in (int(i) for i in minari_dataset.episode_indices):
    try:
      (ep,) = list(minari_dataset.storage.get_episodes([index]))
    except KeyError as e:  # pyarrow: 'Field "rewards" does not exist in schema'
      text = str(e.args[0]) if e.args else ""
      field = next((f for f in _MINARI_FIELDS if f == text or f'"{f}"' in text), text)
      raise ValueError(f"{data_path}: episode {index}: missing field {field!r} ({text})") from e
    except Exception as e:
      raise ValueError(f"{data_path}: episode {index} cannot be read: "
                       f"{type(e).__name__}: {e}") from e
    episodes.append(_minari_episode(ep, index, spec, data_path))

  lengths = [len(ep["reward"]) for ep in episodes]
  if not ours and not spec.max_steps:
    spec = spec._replace(max_steps=max(lengths, default=0))
  arrays = {name: (np.concatenate([ep[name] for ep in episodes]) if episodes else
                   getattr(_empty(spec, {}), name)) for name in _ARRAYS[:-1]}
  arrays["episode_starts"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) \
      if episodes else np.zeros(0, np.int64)
  try:
    _validate(_normalise(arrays, spec), spec, _MINARI_NAMES)
    return Episodes(**arrays, spec=spec, metadata=metadata)
  except ValueError as e:
    raise ValueError(f"{data_path}: {e}") from e


__all__ = [
    "FORMAT", "FORMAT_VERSION", "Episodes", "PreferencePairs", "action_space",
    "collect_episodes", "episode_returns", "from_minari", "label_segments", "load",
    "observation_space", "pad_transitions", "preference_pairs", "sample_batch", "save",
    "select_episodes", "spec_from_spaces", "take_episodes", "to_minari", "to_transitions",
]

