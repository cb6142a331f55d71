"""Reward recovery from an RLHF'd language model by max-margin IRL (Joselowitz et al. 2024).

    python -m experiments.reward_recovery --workdir=/tmp/reward_recovery
    python -m experiments.reward_recovery --workdir=/tmp/reward_recovery --config.quick=True

Findings under test: (1) max-margin IRL on pairs (the aligned policy's completion, the
base policy's completion, same prompt) recovers a reward that agrees with the hidden true
reward well above chance; (2) with a wide spread across seeds and stopping points (the
reward is not identifiable); (3) the recovered reward can drive RLHF again.

Setup, per world (`num_worlds`, vmapped): a random Markov chain over `num_tokens`
content tokens whose last `num_bad` are "toxic" (each row puts mass `bad_mass` on them,
Dirichlet(`concentration`) within each group); the hidden true reward of a completion is
−Σ_t w(y_t), with a weight w ~ U[0.5, 1.5] per toxic token (0 for the others). A small
transformer is pretrained from scratch by MLE on `corpus_size` sequences BOS + `prompt_len`
+ `completion_len` chain tokens (the registry's "mle" objective through
`irl_jax.train.compiled.make_train`): the base policy. RLHF: GRPO (`irl_jax.losses.grpo`,
`rl_prompts` prompts × `group_size` samples per update, `rl_updates` Adam updates, k3
KL to the base at `kl_coef`) on the true reward over the training prompts gives the
aligned policy. Each policy samples one completion (temperature 1) for each of
`train_prompts` training and `eval_prompts` held-out prompts (fresh chain prefixes).

Reward recovery: a reward model (`irl_jax.models.RewardModel`: the base policy's
backbone with a fresh scalar head, pooled at the last token) is fitted on the training
pairs with each of the three max-margin losses (`irl_jax.losses.max_margin`: the
asymmetric −d / −2d, the hinge with margin `hinge_margin`, the logistic), `rm_seeds`
seeds per world (head initialisation and batch order), `rm_epochs` epochs of Adam at
`rm_learning_rate` and batch `rm_batch`; every epoch is a stopping point. On the held-out
completions of both policies (2 × `eval_prompts`) each fitted reward is scored against
the true reward (`irl_jax.eval.recovery_metrics`): as a classifier of "no toxic token" at
the midpoint between its mean reward on the aligned and on the base training
completions (no true label is used), accuracy and F1; pairwise ranking accuracy and
Spearman correlation with the true reward.

Then each loss's first-seed reward model at its last epoch drives GRPO again from the
base policy with the same budget, and the true reward of the resulting policies (and of
the base and the aligned policies) is measured on `eval_samples` samples per held-out
prompt.

Verdicts (95% t-intervals over worlds, the `rm_seeds` fits of a world averaged):
(1) the asymmetric loss's held-out pairwise ranking accuracy against the true reward at
its last epoch minus chance (0.5), claimed positive (the classifier's accuracy against the
majority-class rate, and F1, are reported with it); (2) "wide spread": the within-world standard
deviation of that accuracy over seeds × stopping points, claimed above `wide_spread`
(fixed before the run); (3) true reward of GRPO on the recovered (asymmetric) reward
minus the base policy's, claimed positive. `quick`: 2 worlds, 2 seeds, a 1-layer model,
short budgets; it checks the pipeline, not the findings.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_worlds = 5
  # The chain and the true reward.
  c.num_tokens = 12
  c.num_bad = 3
  c.bad_mass = 0.2
  c.concentration = 0.5
  c.prompt_len = 4
  c.completion_len = 8
  # The base policy and its pretraining.
  c.corpus_size = 4096
  c.hidden_size = 64
  c.num_layers = 2
  c.num_heads = 4
  c.intermediate_size = 128
  c.pretrain_steps = 1500
  c.pretrain_batch = 64
  c.pretrain_learning_rate = 3e-3
  # RLHF (GRPO) on the true reward, and again on the recovered ones.
  c.rl_updates = 100
  c.rl_prompts = 16
  c.group_size = 4
  c.rl_learning_rate = 1e-4
  c.kl_coef = 0.04
  # The completions.
  c.train_prompts = 320
  c.eval_prompts = 200
  c.eval_samples = 4
  # Reward recovery.
  c.rm_seeds = 4
  c.rm_epochs = 10
  c.rm_batch = 32
  c.rm_learning_rate = 1e-3
  c.hinge_margin = 1.0
  c.wide_spread = 0.02
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_worlds=2, rm_seeds=2, corpus_size=1024, pretrain_steps=300, rl_updates=20,
      train_prompts=64, eval_prompts=64, rm_epochs=3, eval_samples=2, num_layers=1,
      hidden_size=32, intermediate_size=64))
  return c
