"""Reward programs (Text2Reward, Xie et al. 2023): the interface and a harness.

    python -m experiments.reward_programs --workdir=/tmp/reward_programs
    python -m experiments.reward_programs --workdir=/tmp/reward_programs --config.quick=True

Findings under test, at laptop scale, with hand-written programs standing in for a
language model's (the paper's programs come from GPT-4 on ManiSkill2 / MetaWorld,
which are not available here):
  (a) a dense reward program written against an environment abstraction trains
      policies that succeed where the sparse task reward does not;
  (b) a revision after feedback (round 1) fixes a program whose policies fail
      (round 0), measured as the success gain of the revision;
  (c) a reward-hacking program, one that pays for a proxy of the task, gets high
      program return but less task success than the good program, so program
      return alone does not show that the task is solved;
  (d) validation rejects the programs that cannot train (non-finite rewards, branches
      on traced values) before any training, and accepts the others.

Environment: gymnax MountainCar-v0 (3 discrete actions, 200-step episodes; success:
reaching the flag, `position >= 0.5`, which terminates the episode). Its task reward
is sparse: random actions almost never reach the flag within 200 steps.

Programs (all in `experiments.reward_programs.PROGRAMS`, with provenance):
  sparse   the task reward as a program: 1 on reaching the flag, else 0;
  buggy    round 0: flag bonus plus a mechanical-energy shaping term with its sign
           flipped (it pays for losing energy);
  good     round 1, the revision of `buggy` after the feedback "the car never leaves
           the valley": flag bonus plus potential-based energy shaping,
           `scale · (γ Φ(s') − Φ(s))`, `Φ = v²/2 + (g/3) sin 3x`;
  hacking  pays `|velocity|` each step and nothing for the flag: swinging forever
           earns more than finishing;
  nan_log, python_branch: two invalid programs (`log` of a signed velocity; an `if`
           on a traced value) that validation must reject.

Each valid program trains PPO (`irl_jax.control.ppo`, its `reward_fn` hook) for
`ppo.total_timesteps` environment steps, `num_seeds` seeds vmapped in one program
per reward program; evaluation: `eval_episodes` episodes of the stochastic policy,
success rate, episode length and the program's own return. Verdicts (a)–(c) on the
paired difference of success rates over seeds (`study.decide`: reproduced when the
95% interval lies above 0); (d) by count.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  c.env = "gymnax/MountainCar-v0"
  c.eval_episodes = 64
  c.validation_transitions = 512  # random-policy transitions that programs are validated on
  c.time_limit_s = 5.0  # the sandbox's bound on running a program's Python
  c.ppo = ml_collections.ConfigDict(dict(
      total_timesteps=500_000, num_envs=16, num_steps=128, update_epochs=4, num_minibatches=4,
      gamma=0.99, gae_lambda=0.95, ent_coef=0.01, lr=1e-3, hidden=(64, 64)))
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, eval_episodes=8, validation_transitions=64,
      ppo=dict(total_timesteps=16_384, num_envs=8, num_steps=64, update_epochs=2,
               num_minibatches=2, gamma=0.99, gae_lambda=0.95, ent_coef=0.01, lr=1e-3,
               hidden=(32, 32))))
  return c
