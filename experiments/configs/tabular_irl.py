"""Classical IRL on a tabular gridworld: MCE IRL vs IQ-Learn vs behaviour cloning.

    python -m experiments.tabular_irl --workdir=/tmp/tabular_irl
    python -m experiments.tabular_irl --workdir=/tmp/tabular_irl --config.quick=True

8×8 gridworld, slip 0.1, γ = 0.9, one goal in the corner; N ∈ {1, 10, 100}
expert demonstrations; 5 seeds (each draws its own demonstrations), all
(N, seed) pairs of a method in one vmapped, compiled run. Default: under a
minute on 2 CPU cores; quick: a few seconds.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5

  # The MDP (irl_jax.tabular.envs.gridworld).
  c.size = 8
  c.slip = 0.1
  c.discount = 0.9
  # Expert and learners share the temperature α (the expert is soft-optimal).
  c.temperature = 0.1
  c.num_demos = (1, 10, 100)
  c.demo_horizon = 100  # γ^100 ≈ 3e-5: the truncated tail is negligible

  # MCE IRL with linear rewards on these feature sets (irl_jax.tabular.envs).
  c.mce_features = ("onehot", "coords")
  c.mce_steps = 400
  c.mce_lr = 0.05
  # Tabular IQ-Learn (χ², c = 0.5, value term on expert states) and BC.
  c.iq_steps = 2000
  c.iq_lr = 0.05
  c.iq_chi2_coef = 0.5
  c.bc_steps = 2000
  c.bc_lr = 0.1

  # Applied by the runner when `quick` is True.
  c.quick_settings = ml_collections.ConfigDict(dict(
      size=5, num_demos=(1, 10), demo_horizon=60, mce_steps=100, iq_steps=300,
      bc_steps=300))
  return c
