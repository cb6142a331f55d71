"""IRL without RL at scale: expert resets in continuous control (Swamy et al. 2023, the
continuous half of study C3).

    python -u -m experiments.expert_resets_continuous --workdir=/tmp/erc
    python -u -m experiments.expert_resets_continuous --workdir=/tmp/erc --config.quick=True

Findings under test: (1) resetting the learner to the expert's states (with probability
α, the α-mixture of the paper's practical algorithm) makes IRL reach expert performance
in fewer environment interactions than standard IRL, whose inner RL always starts at
ν0; (2) with expert resets, a no-regret cost player (the discriminator trained on all
past learner samples) does better than a best-response-style one (trained on the
current policy's samples only).

Environments (`envs`): gymnax MountainCarContinuous-v0, where the expert's states are
far from ν0 and exploration is the difficulty (the expert is the library's scripted
energy-pumping controller with action noise 0.3, `irl_jax.control.experts.
scripted_expert`, since the library's PPO does not solve this task), and gymnax
Pendulum-v1 (a PPO expert trained by the library). `num_demos` demonstrations of the
noisy expert; the reset pool is their states, row for row
(`irl_jax.control.resets.demonstrations_with_states`), each with its time index.

Methods, a 2 × 2 design, all GAIL on PPO with the same settings (`irl_jax.control.
adversarial`; a zero-centred gradient penalty, weight 1, on expert–policy interpolates):
  IRL (ν0)              α = 0, discriminator on the current rollout;
  IRL (ν0), no-regret   α = 0, discriminator on every past rollout;
  resets, best response α = `alpha`, discriminator on the current rollout;
  resets, no-regret     α = `alpha`, discriminator on every past rollout (the paper's
                        FILTER-style algorithm).
The learner trains on the reset environment (`resets.with_expert_resets`) and is
evaluated every `eval_every` iterations on the original one, from ν0 only: the
deterministic policy's mean return over `eval_episodes` episodes, expert-normalised
(0 uniformly random actions, 1 the noise-free expert). Seeds: `num_seeds`, vmapped (one
compiled program per method and environment); the demonstrations are fixed by `seed`.

Measures: environment interactions until the normalised return first reaches
`threshold` (0.9, chosen before any run; a run that never does is censored at the
budget, enters the statistics at the budget, a lower bound, and is flagged), the mean
normalised return over the evaluations (area under the learning curve, AUC), and the
final normalised return.

Verdicts, per environment: (1) interactions(IRL ν0) − interactions(resets, no-regret)
> 0 (`study.decide` on the paired difference over seeds); (2) AUC(resets, no-regret) −
AUC(resets, best response) > 0. Both rules were fixed before the first run.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  c.envs = ("gymnax/MountainCarContinuous-v0", "gymnax/Pendulum-v1")
  c.num_demos = 10
  c.expert_noise = 0.3            # the scripted expert's action noise
  c.expert_steps_scale = 1.0      # multiplies the PPO experts' budgets
  c.alpha = 0.5
  c.threshold = 0.9
  c.eval_every = 10               # PPO iterations between evaluations
  c.eval_episodes = 8
  c.env_steps = ml_collections.ConfigDict({
      "MountainCarContinuous-v0": 500_000, "Pendulum-v1": 500_000})
  # GAIL's inner PPO: Pendulum's is its expert's (`experts.EXPERT_CONFIGS`); MountainCar's
  # the same with γ = 0.99 (episodes of up to 999 steps).
  c.ppo = ml_collections.ConfigDict({
      "MountainCarContinuous-v0": dict(num_envs=16, num_steps=128, update_epochs=10,
                                       num_minibatches=8, lr=1e-3, gamma=0.99, ent_coef=0.0),
      "Pendulum-v1": dict(num_envs=16, num_steps=128, update_epochs=10, num_minibatches=8,
                          lr=1e-3, gamma=0.95, ent_coef=0.0, reward_scale=0.1)})
  c.adversarial = ml_collections.ConfigDict(dict(
      disc_updates=4, disc_batch_size=256, disc_lr=3e-4, grad_penalty=1.0,
      grad_penalty_target=0.0))
  c.quick_settings = ml_collections.ConfigDict(dict(
      envs=("gymnax/MountainCarContinuous-v0",), num_seeds=2, num_demos=4, eval_every=5,
      eval_episodes=2, env_steps={"MountainCarContinuous-v0": 40_960}))
  return c
