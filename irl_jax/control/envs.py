"""One thin adapter over the ecosystem's JAX environments: gymnax and Brax.

Every learner of `irl_jax.control` talks to an `Env`:

    env = envs.make("gymnax/CartPole-v1")            # or "brax/inverted_pendulum"
    state, obs = env.reset(key)
    state, step = env.step(key, state, action)       # auto-resets; pure, jit- and vmap-able

`step` returns a `Step` whose `obs` is the next policy input (the first
observation of a new episode when this one ended) and whose `final_obs` is the
true successor of the transition, before any reset, so that learners bootstrap
truncated episodes from the right state. `terminated` (an absorbing state was
reached: do not bootstrap) and `truncated` (a time limit: do bootstrap) are kept
apart, as in gymnasium.

The environments are the libraries' own: gymnax's classic control (the laptop
suite) and Brax's MJX/generalized systems (the scale-out suite; Brax is an
optional dependency). Environment parameters can be changed at construction
(`make("gymnax/Pendulum-v1", params={"m": 1.5})` gives a heavier pendulum for
reward-transfer tests). States are pytrees, so `set_state` simply returns the
observation of a given state where the library defines one (`Env.observe`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ActionSpec(NamedTuple):
  """`discrete`: `num_actions` integer actions (shape `()`); otherwise a float box of
  `shape` within `[low, high]` (arrays of that shape)."""
  discrete: bool
  shape: tuple
  num_actions: int | None = None
  low: Any = None
  high: Any = None


class EnvSpec(NamedTuple):
  name: str
  obs_shape: tuple
  action: ActionSpec
  max_steps: int  # the time limit that truncates an episode


class Step(NamedTuple):
  """One auto-reset transition. `obs` is the next policy input (a new episode's first
  observation where `done`); `final_obs` is the transition's true successor."""
  obs: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  final_obs: jax.Array

  @property
  def done(self) -> jax.Array:
    return jnp.logical_or(self.terminated, self.truncated)


@dataclasses.dataclass(frozen=True)
class Env:
  """A pure environment: `reset(key) -> (state, obs)`, `step(key, state, action) ->
  (state, Step)` with automatic reset. `observe(state)` gives a state's observation
  (for resets to chosen states, e.g. expert resets)."""
  spec: EnvSpec
  reset: Callable
  step: Callable
  observe: Callable | None = None
  raw: Any = None     # the library's environment object
  params: Any = None  # gymnax: its EnvParams

  @property
  def name(self) -> str:
    return self.spec.name


GYMNAX_SUITE = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0")
BRAX_SUITE = ("inverted_pendulum", "reacher", "hopper")


def _gymnax(name: str, params: dict | None) -> Env:
  import gymnax
  from gymnax.environments import spaces

  if name not in gymnax.registered_envs:
    raise ValueError(f"unknown gymnax environment {name!r}; gymnax has {gymnax.registered_envs}")
  env, env_params = gymnax.make(name)
  if params:
    unknown = sorted(set(params) - set(env_params.__dataclass_fields__))
    if unknown:
      raise ValueError(f"{name}: unknown environment parameter(s) {unknown}; "
                       f"{type(env_params).__name__} has {sorted(env_params.__dataclass_fields__)}")
    env_params = env_params.replace(**params)
  space = env.action_space(env_params)
  if isinstance(space, spaces.Discrete):
    action = ActionSpec(True, (), num_actions=int(space.n))
  elif isinstance(space, spaces.Box):
    shape = tuple(space.shape)
    action = ActionSpec(False, shape, low=np.broadcast_to(np.asarray(space.low, np.float32), shape),
                        high=np.broadcast_to(np.asarray(space.high, np.float32), shape))
  else:
    raise ValueError(f"{name}: action space {space} is neither Discrete nor Box.")
  obs_shape = tuple(env.observation_space(env_params).shape)
  max_steps = int(env_params.max_steps_in_episode)

  def reset(key):
    obs, state = env.reset(key, env_params)
    return state, jnp.asarray(obs, jnp.float32)

  def step(key, state, a):
    if not action.discrete:
      a = jnp.clip(a, action.low, action.high)
    obs, state, reward, terminated, truncated, info = env.step(key, state, a, env_params)
    return state, Step(jnp.asarray(obs, jnp.float32), jnp.reshape(reward, ()).astype(jnp.float32),
                       jnp.reshape(terminated, ()).astype(bool),
                       jnp.reshape(truncated, ()).astype(bool),
                       jnp.asarray(info["final_observation"], jnp.float32))

  def observe(state):
    return jnp.asarray(env.get_obs(state, env_params), jnp.float32)

  return Env(EnvSpec(f"gymnax/{name}", obs_shape, action, max_steps), reset, step, observe,
             raw=env, params=env_params)


def _brax(name: str, params: dict | None, episode_length: int, backend: str | None) -> Env:
  try:
    from brax import envs as brax_envs
  except ImportError as e:  # pragma: no cover - depends on the optional install
    raise ImportError("Brax environments need `pip install 'irl_jax[brax]'`.") from e
  kwargs = dict(params or {})
  if backend:
    kwargs["backend"] = backend
  env = brax_envs.get_environment(name, **kwargs)
  size = int(env.action_size)
  action = ActionSpec(False, (size,), low=-np.ones(size, np.float32),
                      high=np.ones(size, np.float32))

  def reset(key):
    s = env.reset(key)
    return (s, jnp.zeros((), jnp.int32)), s.obs.astype(jnp.float32)

  def step(key, state, a):
    s, t = state
    nxt = env.step(s, jnp.clip(a, -1.0, 1.0))
    t = t + 1
    terminated = jnp.asarray(nxt.done) > 0.5
    truncated = jnp.logical_and(t >= episode_length, jnp.logical_not(terminated))
    done = jnp.logical_or(terminated, truncated)
    fresh = env.reset(key)
    new = jax.tree.map(lambda x, y: jnp.where(done, x, y), fresh, nxt)
    t = jnp.where(done, 0, t)
    return (new, t), Step(new.obs.astype(jnp.float32), jnp.asarray(nxt.reward, jnp.float32),
                          terminated, truncated, nxt.obs.astype(jnp.float32))

  obs_size = int(env.observation_size)
  return Env(EnvSpec(f"brax/{name}", (obs_size,), action, int(episode_length)), reset, step,
             lambda state: state[0].obs.astype(jnp.float32), raw=env)


def make(name: str, *, params: dict | None = None, episode_length: int = 1000,
         backend: str | None = None) -> Env:
  """An environment by name: `gymnax/<id>` (any gymnax id) or `brax/<name>`.

  params: environment parameters to change (gymnax `EnvParams` fields; Brax
    constructor keywords). episode_length, backend: Brax only (the time limit, and
    the physics pipeline, e.g. "mjx", "generalized" or "positional")."""
  library, _, env_id = name.partition("/")
  if library == "gymnax" and env_id:
    return _gymnax(env_id, params)
  if library == "brax" and env_id:
    return _brax(env_id, params, episode_length, backend)
  raise ValueError(f"environment {name!r}: use 'gymnax/<id>' (e.g. 'gymnax/CartPole-v1') or "
                   "'brax/<name>' (e.g. 'brax/inverted_pendulum').")


class Rollout(NamedTuple):
  """`[T, ...]` (or `[T, N, ...]` for N parallel environments) transitions."""
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  next_obs: jax.Array   # the true successor (`Step.final_obs`)
  log_prob: jax.Array   # log π(a|s) under the acting policy, stored at sampling time


def rollout(env: Env, act: Callable, state, obs, key, num_steps: int):
  """`num_steps` steps of one environment under `act(key, obs) -> (action, log_prob)`.
  Returns `(state, obs, Rollout)`; vmap it over environments or seeds."""
  def body(carry, key):
    state, obs = carry
    k_act, k_env = jax.random.split(key)
    action, log_prob = act(k_act, obs)
    state, s = env.step(k_env, state, action)
    return (state, s.obs), Rollout(obs, action, s.reward, s.terminated, s.truncated, s.final_obs,
                                   log_prob)

  (state, obs), traj = jax.lax.scan(body, (state, obs), jax.random.split(key, num_steps))
  return state, obs, traj


def episode_returns(env: Env, act: Callable, key, num_episodes: int) -> jax.Array:
  """Undiscounted returns of `num_episodes` full episodes (run in parallel, each to its
  end or the time limit) under `act(key, obs) -> action`. Returns `[num_episodes]`."""
  def one(key):
    k0, key = jax.random.split(key)
    state, obs = env.reset(k0)

    def body(carry, key):
      state, obs, ret, alive = carry
      k_act, k_env = jax.random.split(key)
      state, s = env.step(k_env, state, act(k_act, obs))
      ret = ret + jnp.where(alive, s.reward, 0.0)
      return (state, s.obs, ret, jnp.logical_and(alive, jnp.logical_not(s.done))), None

    (_, _, ret, _), _ = jax.lax.scan(
        body, (state, obs, jnp.zeros((), jnp.float32), jnp.ones((), bool)),
        jax.random.split(key, env.spec.max_steps))
    return ret

  return jax.vmap(one)(jax.random.split(key, num_episodes))
