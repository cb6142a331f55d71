"""Expert resets for continuous IRL ("Inverse RL without RL", Swamy et al. 2023).

Standard IRL runs its inner RL from the start distribution `ν0` and must find the
expert's states by exploration. With expert resets, each episode of the learner
starts, with probability `α`, at a state drawn from the expert's demonstrations
instead (the α-mixture of the paper's practical algorithm); the cost player, a
discriminator, should then be trained on all past learner samples (no-regret)
rather than only the current policy's (`AdversarialConfig.disc_replay`).

JAX environments make this cheap: gymnax and Brax states are pytrees, so a reset
to an expert state is a `tree.map` over a pool of stored states.

    env = envs.make("gymnax/Pendulum-v1")
    demos, pool = resets.demonstrations_with_states(env, expert.act, key, num_episodes=25)
    learner_env = resets.with_expert_resets(env, pool, alpha=0.5)  # train on this
    # evaluate on `env` (from ν0), never on `learner_env`

`demonstrations_with_states` returns the demonstrations and, row for row, the
environment states they were observed in, so that the reset states are exactly
the demonstrations' states (`pool.obs[i] == demos.obs[i]`). A state keeps its time
index (gymnax's `time`, the Brax adapter's step counter): a learner reset to an
expert's step `t` has the rest of the horizon, `max_steps − t`, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.control import data, envs


class ResetPool(NamedTuple):
  """`N` environment states (a pytree with leading axis `N`) and their observations
  `[N, *obs_shape]`."""
  states: Any
  obs: jax.Array

  @property
  def size(self) -> int:
    return int(self.obs.shape[0])


def _where(cond, a, b):
  return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def with_expert_resets(env: envs.Env, pool: ResetPool, alpha: float) -> envs.Env:
  """`env` whose episodes start (at `reset` and at every automatic reset) at a
  uniformly drawn state of `pool` with probability `alpha`, at `env.reset`'s `ν0`
  otherwise. `alpha = 0` is `env` itself (bit for bit in distribution; the draw
  still happens); `alpha = 1` always starts at expert states."""
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f"with_expert_resets: alpha must lie in [0, 1], got {alpha!r}.")
  if pool.size < 1:
    raise ValueError("with_expert_resets: the reset pool is empty.")
  probe_state, _ = jax.eval_shape(env.reset, jax.random.key(0))
  pool_leaf = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), pool.states)
  if jax.tree.structure(probe_state) != jax.tree.structure(pool_leaf) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(probe_state), jax.tree.leaves(pool_leaf),
                                         strict=True)):
    raise ValueError(f"with_expert_resets: the pool's states do not match {env.name}'s state "
                     f"(pool {pool_leaf}, environment {probe_state}).")
  rows = {int(x.shape[0]) for x in jax.tree.leaves(pool.states)}
  if rows != {pool.size}:
    raise ValueError(f"with_expert_resets: the pool has {pool.size} observations but its state "
                     f"leaves have {sorted(rows)} rows; they must match row for row.")
  if tuple(pool.obs.shape[1:]) != tuple(env.spec.obs_shape):
    raise ValueError(f"with_expert_resets: pool observations have shape {pool.obs.shape[1:]}, "
                     f"{env.name} observations {env.spec.obs_shape}.")
  states = jax.tree.map(jnp.asarray, pool.states)
  obs_pool = jnp.asarray(pool.obs, jnp.float32)
  alpha = float(alpha)

  def reset(key):
    k_nu0, k_pick, k_coin = jax.random.split(key, 3)
    state, obs = env.reset(k_nu0)
    i = jax.random.randint(k_pick, (), 0, obs_pool.shape[0])
    use = jax.random.bernoulli(k_coin, alpha)
    return (_where(use, jax.tree.map(lambda x: x[i], states), state),
            jnp.where(use, obs_pool[i], obs))

  def step(key, state, action):
    k_step, k_reset = jax.random.split(key)
    state, s = env.step(k_step, state, action)
    fresh, fresh_obs = reset(k_reset)
    return _where(s.done, fresh, state), s._replace(obs=jnp.where(s.done, fresh_obs, s.obs))

  spec = env.spec._replace(name=f"{env.spec.name}+expert_resets(alpha={alpha:g})")
  return envs.Env(spec, reset, step, env.observe, raw=env.raw, params=env.params)


def demonstrations_with_states(env: envs.Env, act: Callable, key, num_episodes: int, *,
                               metadata: dict | None = None) -> tuple[data.Episodes, ResetPool]:
  """`num_episodes` complete episodes of `act(key, obs) -> (action, log_prob)` from `ν0`
  and the environment state of every row: `(Episodes, ResetPool)` with
  `pool.obs[i] == episodes.obs[i]`.

  Each episode runs in its own environment for at most `spec.max_steps` steps (the
  time limit ends it by then); raises `RuntimeError` if one has not ended, naming it."""
  spec = env.spec
  if num_episodes < 1:
    raise ValueError(f"demonstrations_with_states: num_episodes must be >= 1, got "
                     f"{num_episodes}.")

  def one(key):
    k0, key = jax.random.split(key)
    state, obs = env.reset(k0)

    def body(carry, key):
      state, obs, alive = carry
      k_act, k_env = jax.random.split(key)
      action, log_prob = act(k_act, obs)
      new_state, s = env.step(k_env, state, action)
      row = (state, obs, action, s.reward, s.terminated, s.truncated, s.final_obs,
             jnp.broadcast_to(jnp.asarray(log_prob, jnp.float32), ()), alive)
      return (new_state, s.obs, jnp.logical_and(alive, jnp.logical_not(s.done))), row

    _, rows = jax.lax.scan(body, (state, obs, jnp.ones((), bool)),
                           jax.random.split(key, spec.max_steps))
    return rows

  rows = jax.device_get(jax.jit(jax.vmap(one))(jax.random.split(key, num_episodes)))
  state, obs, action, reward, terminated, truncated, final_obs, log_prob, alive = rows
  done = terminated | truncated
  ended = (done & alive).any(axis=1)
  if not ended.all():
    raise RuntimeError(f"demonstrations_with_states: episode {int(np.argmin(ended))} did not "
                       f"end within {spec.max_steps} steps ({spec.name}'s time limit).")
  lengths = np.argmax(done & alive, axis=1) + 1
  keep = np.arange(spec.max_steps)[None, :] < lengths[:, None]
  e, t = np.nonzero(keep)  # episode-major, time-ordered
  next_obs = final_obs[e, t].copy()
  inner = t + 1 < lengths[e]
  next_obs[inner] = obs[e[inner], t[inner] + 1]
  if not spec.action.discrete:
    action = np.clip(action, spec.action.low, spec.action.high)
  meta = {"env": spec.name, "collector": "irl_jax.control.resets.demonstrations_with_states",
          **(metadata or {})}
  episodes = data.Episodes(obs=obs[e, t], action=action[e, t], reward=reward[e, t],
                           terminated=terminated[e, t], truncated=truncated[e, t],
                           next_obs=next_obs, log_prob=log_prob[e, t],
                           episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                           spec=spec, metadata=meta)
  pool = ResetPool(jax.tree.map(lambda x: jnp.asarray(x[e, t]), state),
                   jnp.asarray(obs[e, t], jnp.float32))
  return episodes, pool
