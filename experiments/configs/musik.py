"""Multi-step inverse kinematics (MusIK) on a block-MDP combination lock.

    python -m experiments.musik --workdir=/tmp/musik
    python -m experiments.musik --workdir=/tmp/musik --config.quick=True

Finding under test (Mhammedi, Foster & Rakhlin 2023, reconstructed): an explorer that
learns a latent decoder by multi-step inverse kinematics, predicting the action `a_t`
from `(x_t, x_h)` for every earlier step `t` of a target layer `h`, and acts greedily
in the fitted model, (a) reaches the last layer of a horizon-`H` combination lock
with high probability, where uniform random exploration succeeds with probability
`A^−H`, and (b) does better than one-step inverse kinematics (`t = h − 1` only).

Setup (`irl_jax.control.musik`, a reconstruction; see its docstring for the choices
that are ours): a combination lock with `horizon` layers, `num_latent` latents per
layer (the last one bad and absorbing), `num_actions` actions, observations the
one-hot latent and `noise_dim` Gaussian dimensions of std `noise_std` under a random
rotation; one random lock per seed. Both learners fit every inverse-kinematics model
on `n` episodes for each `n` in `sample_counts` (MusIK: `h` fits for layer `h`,
`n·H(H+1)/2` episodes in all; one-step: `n·H`), all (`n`, seed) runs of a learner in
one vmapped program. Measured: the probability that the best cover policy of a layer
reaches a good latent of that layer (`eval_episodes` rollouts per cover policy), and
the decoder purity of the decoders the final cover acts with (majority-latent
fraction over fresh observations of every latent, averaged over layers). Random
exploration: `A^−H` exactly, and a Monte-Carlo count over MusIK's episode budget.

Verdicts, at the largest `n`, over `num_seeds` seeds (95% t-intervals): (a) MusIK's
probability of reaching layer `H` minus `reach_threshold` (a choice of this study) is
claimed positive; (b) MusIK − one-step IK in the probability of reaching layer `H`,
paired over seeds (same lock and key), is claimed positive (purity difference
reported alongside). "reproduced" when the interval lies above 0, "contradicted"
below, otherwise "not at this scale".

The default run took 115 s on 2 shared AMD EPYC cores (MusIK 51 s for its 15 runs,
one-step IK 10 s, plus compilation and evaluation). In it neither finding reproduced:
at n = 1000 one-step IK reached layer 10 with probability 0.98 and this
reconstruction of MusIK with 0.00 (its best cover policy reaches layer 2 with 0.97,
layer 5 with 0.39 and layer 8 with 0.00: errors compound). `quick`: a
3-layer lock, 2 seeds and 2 sample counts; it checks the pipeline, not the finding.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  # The lock.
  c.horizon = 10
  c.num_latent = 3
  c.num_actions = 4
  c.noise_dim = 8
  c.noise_std = 1.0
  # The learners (`musik.MusikConfig`): episodes per fit, and each fit's Adam.
  c.sample_counts = (100, 300, 1000)
  c.num_steps = 300
  c.learning_rate = 0.05
  c.init_scale = 0.1
  c.weight_decay = 0.0       # L2 on the decoders' weights (0.01 and 0.05 hurt in a pilot)
  # Evaluation.
  c.eval_episodes = 200      # rollouts per cover policy (and observations per latent)
  c.reach_threshold = 0.5    # "high probability" of verdict (a)
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, horizon=3, sample_counts=(100, 1000), eval_episodes=50))
  return c
