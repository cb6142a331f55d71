"""Imitation and IRL across the gymnax laptop suite: BC, GAIL, AIRL, IQ-Learn offline and online.

    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark
    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark --config.quick=True

For each environment: a PPO expert trained by the library (`irl_jax.control.experts`;
on MountainCarContinuous, where the library's PPO and SAC do not solve the task, the
scripted energy-pumping controller with action noise 0.3), 25 of its episodes as
demonstrations, and every method trained on the first 1, 5 and 25
of them with 5 seeds; all (demonstration count, seed) runs of a method are one vmapped,
compiled program. Reported: expert-normalised return (0 random play, 1 the expert) of the
final deterministic policy, curves against environment steps for the methods that act,
wall-clock (compilation apart) and environment steps per second per method, and the
verdict on "IRL ≥ BC with few demonstrations". Then AIRL's reward transfer (`transfer`):
PPO retrained on AIRL's state-only reward and on GAIL's reward, on Pendulum with a 1.5x
heavier pole. `quick`: CartPole only (the transfer: a weaker push, `force_mag` 7),
small budgets, 2 seeds, about two minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  # MountainCarContinuous-v0's expert is scripted (`experts.SCRIPTED`: energy pumping with
  # action noise 0.3): the library's PPO and SAC end at the do-nothing policy there.
  c.envs = ("gymnax/CartPole-v1", "gymnax/Acrobot-v1", "gymnax/Pendulum-v1",
            "gymnax/MountainCarContinuous-v0")
  c.num_demos = (1, 5, 25)
  c.methods = ("bc", "gail", "airl", "iq_offline", "iq_online")
  c.eval_episodes = 16
  # Environment steps of the methods that act (GAIL, AIRL, online IQ-Learn), per
  # environment; GAIL's and AIRL's PPO is `generator_ppo` below.
  c.env_steps = ml_collections.ConfigDict({
      "CartPole-v1": 200_000, "Acrobot-v1": 300_000, "Pendulum-v1": 500_000,
      "MountainCarContinuous-v0": 300_000})
  # `envs.make` options per environment (short name -> backend, episode_length): Brax
  # only (`control_benchmark_brax.py`).
  c.env_options = ml_collections.ConfigDict()
  # GAIL's and AIRL's PPO per environment (short name -> PPOConfig fields) on top of the
  # expert's settings (`experts.EXPERT_CONFIGS`); required where the expert is scripted.
  # MountainCar: Pendulum's expert settings with γ = 0.99 (episodes of up to 999 steps)
  # and no reward scale. From the command line, names with a hyphen take brackets:
  # --config.generator_ppo['MountainCarContinuous-v0'].gamma=0.999, and a new entry or
  # field takes the whole dict, which replaces every entry:
  # --config.generator_ppo="{'Pendulum-v1': {'lr': 3e-4}}".
  c.generator_ppo = ml_collections.ConfigDict({
      "MountainCarContinuous-v0": dict(num_envs=16, num_steps=128, update_epochs=10,
                                       num_minibatches=8, lr=1e-3, gamma=0.99, ent_coef=0.0)})
  c.expert_steps_scale = 1.0  # multiplies the experts' PPO budgets (quick: smaller)
  c.bc = ml_collections.ConfigDict(dict(num_steps=2000, batch_size=256, learning_rate=1e-3))
  c.iq_offline = ml_collections.ConfigDict(dict(num_steps=3000, batch_size=256,
                                                temperature=0.01))
  # Online IQ-Learn: 8 environments, one step each per update, at most `iq_online_env_steps`
  # environment steps (an update per 8 steps costs more than PPO's per-step share).
  c.iq_online = ml_collections.ConfigDict(dict(num_envs=8, temperature=0.01,
                                               replay_size=100_000, warmup_env_steps=2000))
  c.iq_online_env_steps = 100_000
  c.adversarial = ml_collections.ConfigDict(dict(disc_updates=4, disc_batch_size=256,
                                                 disc_lr=3e-4))
  # AIRL's reward transfer: rewards learned on `env` (AIRL's state-only g, and GAIL's as
  # the baseline) from `num_demos` demonstrations, then PPO from scratch on them with
  # the environment's `params` changed (gymnax EnvParams fields): a 1.5x heavier pendulum.
  c.transfer = ml_collections.ConfigDict(dict(
      enabled=True, env="gymnax/Pendulum-v1", params=dict(m=1.5), num_demos=25))
  c.quick_settings = ml_collections.ConfigDict(dict(
      envs=("gymnax/CartPole-v1",), num_demos=(1, 5), num_seeds=2, eval_episodes=8,
      env_steps={"CartPole-v1": 50_000}, expert_steps_scale=0.5,
      bc=dict(num_steps=300, batch_size=256, learning_rate=1e-3),
      iq_offline=dict(num_steps=400, batch_size=256, temperature=0.01),
      iq_online=dict(num_envs=8, temperature=0.01, replay_size=20_000, warmup_env_steps=512),
      iq_online_env_steps=50_000,
      transfer=dict(enabled=True, env="gymnax/CartPole-v1", params=dict(force_mag=7.0),
                    num_demos=5)))
  return c
