"""Offline RL from preference labels (Inverse Preference Learning, Hejna & Sadigh 2023).

    python -m experiments.preference_offline --workdir=/tmp/preference_offline
    python -m experiments.preference_offline --workdir=/tmp/preference_offline --config.quick=True

Finding under test: IPL (IPL-IQL, IPL-AWAC), which learns no reward network, does as
well as a Bradley–Terry reward model + IQL, and both approach IQL trained on the true
reward (the oracle) as the number of preference queries grows.

Environment: gymnax Pendulum-v1 (continuous; every 200-step episode is truncated,
none terminates). CartPole-v1 would compile and run faster, but its reward is +1 per
step, so every pair of full-length segments ties and the preferences would carry
information only through episode ends; Pendulum's reward is dense and graded.

Dataset (a reconstruction: the paper uses D4RL / Meta-World data with the Preference
Transformer's labels, which are not available here): a PPO expert trained by the
library (`experts.train_expert`, `expert_steps_scale` times its usual budget) and
`episodes` episodes of each `mixture` component, a behaviour policy that takes the
expert's *stochastic* action, adds Gaussian noise of std `noise` (action units, the
box is [-2, 2]), and with probability `epsilon` per step replaces it by a uniform
random action. Measured in the default run (seed 0; expert-normalised return, 0
random, 1 the deterministic expert): stochastic expert 0.89, noise 1.0 0.79, ε 0.3
0.72, ε 0.5 0.45, ε 0.7 0.23, uniform −0.13; the mixture's mean is 0.46, so the
data's average behaviour is far from the expert and oracle IQL (0.95) improves on it.

Preferences: `max(query_counts)` pairs of `segment_length`-step segments drawn
uniformly from the whole dataset (`data.preference_pairs`), labelled by the synthetic
Bradley–Terry labeller on the true segment returns, `P(σ² ≻ σ¹) = σ((R² − R¹) /
label_temperature)` (label 1: the *second* segment is preferred); a query count `n`
uses the first `n` pairs (nested subsets). Unlabelled data: every transition of the
dataset, for IPL's value, actor and regulariser and for the reward model's relabelling.

Methods (the library's `irl_jax.control.offline`): reward model + IQL, IPL-IQL,
IPL-AWAC, trained for every (query count, seed) in one vmapped program per method,
and oracle IQL on the same transitions with their true rewards divided by their
standard deviation over the dataset (the scale reward model + IQL gives its
relabelled rewards; also a choice of this study). All share `hidden`, `batch_size`,
`num_steps`, `learning_rate` and IQL's `expectile`/`beta`; the reward model trains
`reward_model.num_steps` steps before its IQL's `num_steps`. Smaller networks (64×64)
and far fewer steps than the papers' 256×256 and 10⁵–10⁶, for 2 CPU cores.

Verdicts (`equivalence_margin` δ is a choice of this study, not the paper's): (a) IPL-
IQL ≈ RM+IQL and (a') IPL-AWAC ≈ RM+IQL at the largest query count: the 95% interval
over seeds of the paired difference lies within ±δ (two one-sided tests: δ − d > 0
and δ + d > 0 both reproduced by `study.decide`); contradicted when the interval lies
wholly beyond ±δ. (b) IPL-IQL approaches the oracle: the oracle gap shrinks from the
smallest to the largest query count (the paired reduction is claimed positive). (c)
IPL has fewer parameters than RM+IQL (exact counts of the trained networks).

The default run took 555 s on 2 shared AMD EPYC cores (expert 29 s; IPL-IQL 183 s,
IPL-AWAC 164 s, RM+IQL 86 s for their 20 runs each). `quick`: a smaller expert budget
and dataset, 2 query counts, 2 seeds, 32×32 networks and a few hundred steps; about
90 s on the same cores with compilation and expert training; it checks the pipeline,
not the finding.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  c.env = "gymnax/Pendulum-v1"
  c.expert_steps_scale = 1.0  # multiplies `experts.EXPERT_CONFIGS[env]`'s PPO budget
  # (name, epsilon, noise, episodes): see the docstring.
  c.mixture = (("expert", 0.0, 0.0, 5), ("noise_1.0", 0.0, 1.0, 10), ("eps_0.3", 0.3, 0.0, 10),
               ("eps_0.5", 0.5, 0.0, 10), ("eps_0.7", 0.7, 0.0, 10), ("uniform", 1.0, 0.0, 10))
  c.segment_length = 20  # K
  c.label_temperature = 1.0
  c.query_counts = (25, 100, 400, 1600)
  c.eval_episodes = 16
  # Shared by every method (IQL, IPL-IQL, IPL-AWAC and the reward model's IQL).
  c.hidden = (64, 64)
  c.batch_size = 256
  c.num_steps = 3000
  c.learning_rate = 1e-3  # actor, critic and value
  c.normalize_obs = True
  c.iql = ml_collections.ConfigDict(dict(expectile=0.7, beta=3.0))
  c.ipl = ml_collections.ConfigDict(dict(reward_reg=0.5, pref_batch_size=16, temperature=1.0))
  c.reward_model = ml_collections.ConfigDict(dict(num_steps=1000, pref_batch_size=64))
  c.equivalence_margin = 0.1  # δ of the "≈" verdicts, in expert-normalised return
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, expert_steps_scale=0.3, query_counts=(10, 40), eval_episodes=4,
      mixture=(("expert", 0.0, 0.0, 2), ("eps_0.5", 0.5, 0.0, 2), ("uniform", 1.0, 0.0, 2)),
      hidden=(32, 32), batch_size=64, num_steps=200,
      reward_model=dict(num_steps=100, pref_batch_size=32)))
  return c
