"""Expert policies trained by the library's own RL, and their demonstrations.

    env = envs.make("gymnax/CartPole-v1")
    expert = experts.train_expert(env, jax.random.key(0))
    demos = experts.demonstrations(env, expert, jax.random.key(1), num_episodes=25)

`EXPERT_CONFIGS` holds the PPO settings used for the laptop suite and for Brax's
inverted pendulum (measured on a 2-core AMD EPYC CPU: CartPole and Acrobot in about
5 s, Pendulum in about 20 s, Brax's inverted pendulum, `positional` physics, in about
35 s). `train_expert` also takes a `sac.SACConfig`, for a SAC expert:

    expert = experts.train_expert(envs.make("gymnax/Pendulum-v1"), key,
                                  sac.SACConfig(total_timesteps=20_000, hidden=(64, 64)))

Demonstrations are sampled from the expert's stochastic policy, with
`log π(a|s)` stored, into an `irl_jax.control.data.Episodes` dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.control import data, envs, ppo, sac

EXPERT_CONFIGS = {
    "gymnax/CartPole-v1": ppo.PPOConfig(total_timesteps=200_000),
    "gymnax/Acrobot-v1": ppo.PPOConfig(total_timesteps=300_000),
    "gymnax/Pendulum-v1": ppo.PPOConfig(
        total_timesteps=1_000_000, num_envs=16, num_steps=128, update_epochs=10,
        num_minibatches=8, lr=1e-3, gamma=0.95, ent_coef=0.0, reward_scale=0.1),
    # Brax (the scale-out suite), with its 1000-step time limit: `envs.make`'s default.
    "brax/inverted_pendulum": ppo.PPOConfig(
        total_timesteps=200_000, num_envs=16, num_steps=128, update_epochs=10,
        num_minibatches=8, lr=3e-4, init_log_std=0.0),
}
# Not MountainCarContinuous-v0: PPO (entropy bonus 0.05, or γ = 0.999 with a wide
# log-std range) ends at the do-nothing policy, return ≈ 0, after 500k steps, and so
# does SAC after 60k (auto-tuned α, or α = 0.1 with γ = 0.9999); its expert is
# `scripted_expert`'s energy-pumping controller.


class Expert(NamedTuple):
  """A trained policy. `act(key, obs) -> (action, log_prob)` samples it; `mode(obs)`
  is its deterministic action. `mean_return` and `random_return` are the mean
  undiscounted returns of the deterministic expert and of uniformly random actions
  (the ends of the expert-normalised scale). `kind`: "PPO", "SAC" or "scripted"."""
  params: Any
  act: Callable
  mode: Callable
  mean_return: float
  random_return: float
  metrics: dict
  kind: str = "PPO"


def uniform_policy(spec: envs.EnvSpec) -> Callable:
  """`act(key, obs) -> action`, uniform over the action space."""
  def act(key, obs):
    del obs
    if spec.action.discrete:
      return jax.random.randint(key, (), 0, spec.action.num_actions)
    return jax.random.uniform(key, spec.action.shape, minval=jnp.asarray(spec.action.low),
                              maxval=jnp.asarray(spec.action.high))
  return act


def train_expert(env: envs.Env, key, config: ppo.PPOConfig | sac.SACConfig | None = None,
                 *, eval_episodes: int = 32) -> Expert:
  """PPO (a `PPOConfig`) or SAC (a `SACConfig`) on the environment's own reward
  (`EXPERT_CONFIGS[env.name]` unless `config`)."""
  if config is None:
    if env.name not in EXPERT_CONFIGS:
      raise ValueError(f"no expert settings for {env.name!r}; pass a PPOConfig or a "
                       f"SACConfig (known: {sorted(EXPERT_CONFIGS)}).")
    config = EXPERT_CONFIGS[env.name]
  if isinstance(config, ppo.PPOConfig):
    kind, learner = "PPO", ppo.make_ppo(config, env)
  elif isinstance(config, sac.SACConfig):
    kind, learner = "SAC", sac.make_sac(config, env)
  else:
    raise TypeError(f"train_expert: config must be a ppo.PPOConfig or a sac.SACConfig, got "
                    f"{type(config).__name__}.")
  k_train, k_eval, k_rand = jax.random.split(key, 3)
  state, metrics = jax.jit(learner.train)(k_train)
  params = state.params
  mean_return = float(learner.evaluate(params, k_eval, eval_episodes, deterministic=True).mean())
  random_return = float(envs.episode_returns(env, uniform_policy(env.spec), k_rand,
                                             eval_episodes).mean())

  def act(key, obs):
    return learner.act(params, key, obs)

  def mode(obs):
    return learner.mode(params, obs)

  return Expert(params, act, mode, mean_return, random_return, metrics, kind)


def _energy_pumping(obs):
  """MountainCar's classic controller: push in the direction of the velocity (a car
  at rest pushes right), which pumps energy into the swing until the car reaches
  the flag."""
  return jnp.where(obs[..., 1] >= 0.0, 1.0, -1.0)[..., None]


SCRIPTED = {"gymnax/MountainCarContinuous-v0": _energy_pumping}


def scripted_expert(env: envs.Env, key, *, noise: float = 0.3,
                    eval_episodes: int = 32) -> Expert:
  """A hand-written controller as the expert, for environments that the library's
  PPO does not solve (`SCRIPTED`: MountainCarContinuous-v0, energy pumping). `act`
  adds Gaussian noise of standard deviation `noise` to the controller's action
  (clipped to the box; `log_prob` is NaN, unknown after clipping); `mode` is the
  controller itself, and `mean_return` its return."""
  if env.name not in SCRIPTED:
    raise ValueError(f"no scripted expert for {env.name!r} (known: {sorted(SCRIPTED)}).")
  if noise < 0:
    raise ValueError(f"scripted_expert: noise must be >= 0, got {noise!r}.")
  controller = SCRIPTED[env.name]
  low, high = jnp.asarray(env.spec.action.low), jnp.asarray(env.spec.action.high)

  def mode(obs):
    return jnp.clip(controller(obs), low, high)

  def act(key, obs):
    a = mode(obs) + noise * jax.random.normal(key, env.spec.action.shape)
    return jnp.clip(a, low, high), jnp.full((), jnp.nan, jnp.float32)

  k_eval, k_rand = jax.random.split(key)
  mean_return = float(envs.episode_returns(env, lambda k, o: mode(o), k_eval,
                                           eval_episodes).mean())
  random_return = float(envs.episode_returns(env, uniform_policy(env.spec), k_rand,
                                             eval_episodes).mean())
  return Expert(None, act, mode, mean_return, random_return,
                {"controller": controller.__name__.lstrip("_"), "noise": noise}, "scripted")


def demonstrations(env: envs.Env, expert: Expert, key, num_episodes: int, *,
                   num_envs: int = 8) -> data.Episodes:
  """`num_episodes` complete episodes of the expert's stochastic policy."""
  return data.collect_episodes(env, expert.act, key, num_episodes, num_envs=num_envs,
                               metadata={"policy": f"irl_jax.control.experts ({expert.kind})",
                                         "expert_return": expert.mean_return,
                                         "random_return": expert.random_return})


def normalised_return(returns, expert: Expert):
  """`(R − R_random) / (R_expert − R_random)`: 0 is random play, 1 the expert."""
  return (returns - expert.random_return) / (expert.mean_return - expert.random_return)
