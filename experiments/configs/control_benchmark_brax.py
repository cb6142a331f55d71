"""Imitation and IRL on the Brax scale-out suite: BC, GAIL, AIRL, IQ-Learn offline and online.

    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark_brax \
        --config=experiments/configs/control_benchmark_brax.py
    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark_brax \
        --config=experiments/configs/control_benchmark_brax.py --config.quick=True

The laptop suite's benchmark (`control_benchmark.py`: the same methods, demonstration
counts 1, 5 and 25, 5 seeds vmapped, curves, wall-clock and environment steps per
second, the verdict on "IRL ≥ BC with few demonstrations") on Brax's
`inverted_pendulum`: 1000-step episodes, reward 1 per step while the pole stays within
0.2 rad, Brax's `positional` physics (pure JAX; `env_options` picks another backend,
e.g. `mjx`, and the time limit). The PPO expert's settings are
`experts.EXPERT_CONFIGS["brax/inverted_pendulum"]`. No reward transfer here: it runs on
the laptop suite's Pendulum.

At accelerator scale, raise the budgets and seeds from the command line, e.g.
`--config.num_seeds=16 --config.env_steps.inverted_pendulum=1000000
--config.iq_online_env_steps=500000`. Other Brax environments need expert settings in
`experts.EXPERT_CONFIGS` (the benchmark names the missing ones) and a budget in
`env_steps`. `quick`: BC, GAIL and offline IQ-Learn only (the others compile for half a
minute each with Brax's physics inside), 2 seeds, demonstration counts 1 and 5, small
budgets, about two minutes on 2 CPU cores.
"""

import ml_collections

from experiments.configs import control_benchmark


def get_config():
  c = control_benchmark.get_config()
  c.envs = ("brax/inverted_pendulum",)
  c.env_steps = ml_collections.ConfigDict({"inverted_pendulum": 200_000})
  c.env_options = ml_collections.ConfigDict({
      "inverted_pendulum": {"backend": "positional", "episode_length": 1000}})
  c.iq_online_env_steps = 100_000
  c.generator_ppo = ml_collections.ConfigDict()  # GAIL's and AIRL's PPO: the expert's
  c.transfer.enabled = False
  c.quick_settings = ml_collections.ConfigDict(dict(
      methods=("bc", "gail", "iq_offline"), num_demos=(1, 5), num_seeds=2, eval_episodes=4,
      env_steps={"inverted_pendulum": 32_768}, expert_steps_scale=1.0,
      bc=dict(num_steps=300, batch_size=256, learning_rate=1e-3),
      iq_offline=dict(num_steps=400, batch_size=256, temperature=0.01),
))
  return c
