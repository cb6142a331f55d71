"""GRPO vs GRPO-S (dynamic reward scaling, DR-IRL) on imbalanced prompt categories with one
reward model per category (the scaling's squashing function is a **reconstruction**, see
`irl_jax.losses.dynamic_reward_scale`).

    python -m experiments.grpo_s --workdir=/tmp/grpo_s
    python -m experiments.grpo_s --workdir=/tmp/grpo_s --config.quick=True

Finding under test: category-specific reward models plus per-prompt advantage scaling by
data hardness and model responsiveness (GRPO-S) improve the tail categories of an
imbalanced dataset over plain GRPO.

Setup, per seed (`num_seeds`, vmapped): a random Markov chain over `num_tokens` content
tokens; each of the `num_categories` categories has its own disjoint set of
`bad_per_category` toxic tokens (together they carry mass `bad_mass` in every row of the
chain), and a prompt of category c is its tag token followed by a `prompt_len`-token chain
prefix. The category's checker (its true reward) is −Σ_t w_c(y_t), with w_c ~ U[0.5, 1.5]
on the category's toxic tokens and 0 elsewhere. Prompts are drawn with the category
frequencies `category_weights` (10:3:1). A small transformer is pretrained by MLE on
tagged chain sequences (the registry's "mle" objective, `make_train`): the base policy.

Category reward models: for each category, a Bradley–Terry reward model (the registry's
"bradley_terry" objective; `irl_jax.models.RewardModel` on the base policy's backbone) is
fitted on preference pairs of two base completions of the category's prompts, labelled by
a Bradley–Terry draw on the category's true reward; the `num_pairs` pairs are split over
the categories in the same 10:3:1 proportion (a category with fewer pairs than the largest
has its own repeated to fill the rows: fewer distinct pairs, the same number of steps), so
the tail category's reward model sees the fewest.
Demonstrations: one per training prompt, a completion of the category's clean chain (its
toxic tokens removed, rows renormalised).

Policy optimisation: `rl_updates` updates of GRPO (`irl_jax.losses.grpo`, `rl_prompts`
prompts × `group_size` samples, k3 KL to the base at `kl_coef`), each sample rewarded by
its category's reward model. GRPO-S multiplies each prompt's group advantages by
α = α_D · α_M (`irl_jax.losses.dynamic_reward_scale`, batch mean 1): data hardness from
W = cosine similarity between the demonstration's and the policy samples' embeddings
(`demo_policy_similarity`; the embedding is the mean final hidden state of the frozen base
policy — the policy's own hidden states, one "sentence" per completion), responsiveness
from the reward gap R̂_c(demonstration) − mean R̂_c(samples) of the category's reward
model (clamped at 0). Both methods share the reward models, the sampling keys and the
budget.

Measured: the true reward per category on `eval_prompts` held-out prompts per category
(`eval_samples` samples each), at the end. Verdict: the tail (rarest) category's true
reward, GRPO-S − GRPO, paired over seeds (95% t-interval), claimed positive; the head and
middle categories are reported the same way. `quick`: 2 seeds, a 1-layer model, short
budgets; it checks the pipeline, not the finding.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  # Categories, the chain and the checkers.
  c.num_categories = 3
  c.category_weights = (10, 3, 1)
  c.num_tokens = 12
  c.bad_per_category = 2
  c.bad_mass = 0.3
  c.concentration = 0.5
  c.prompt_len = 4
  c.completion_len = 8
  # The base policy.
  c.corpus_size = 4096
  c.hidden_size = 64
  c.num_layers = 2
  c.num_heads = 4
  c.intermediate_size = 128
  c.pretrain_steps = 1500
  c.pretrain_batch = 64
  c.pretrain_learning_rate = 3e-3
  # Category reward models.
  c.num_pairs = 1400
  c.rm_steps = 300
  c.rm_batch = 32
  c.rm_learning_rate = 1e-3
  # Policy optimisation.
  c.train_prompts = 700
  c.rl_updates = 100
  c.rl_prompts = 16
  c.group_size = 4
  c.rl_learning_rate = 1e-4
  c.kl_coef = 0.04
  # Evaluation.
  c.eval_prompts = 64
  c.eval_samples = 4
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, corpus_size=1024, pretrain_steps=300, num_pairs=280, rm_steps=40,
      train_prompts=140, rl_updates=20, eval_prompts=16, eval_samples=2, num_layers=1,
      hidden_size=32, intermediate_size=64))
  return c
