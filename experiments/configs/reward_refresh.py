"""Static vs refreshed reward model during RLHF (inverse alignment; the refresh's selection
score is a **reconstruction**, see `irl_jax.train.refresh`).

    python -m experiments.reward_refresh --workdir=/tmp/reward_refresh
    python -m experiments.reward_refresh --workdir=/tmp/reward_refresh --config.quick=True

Finding under test: periodically re-fitting the reward model on the part of the offline
preference data closest to the current policy's outputs aligns faster and better than a
static reward model.

Setup, per seed (`num_seeds`, vmapped): the world of the reward-recovery study (a random
Markov chain over `num_tokens` tokens, the last `num_bad` toxic with mass `bad_mass`; the
hidden true reward −Σ_t w(y_t), w ~ U[0.5, 1.5] on the toxic tokens) and its base policy,
pretrained by MLE. `num_annotators` synthetic annotators who disagree: annotator a scores a
completion by −Σ_t (w(y_t) + ε_a(y_t)), with ε_a ~ N(0, `annotator_noise`²) on every
token, so their average is close to the true reward and each of them is wrong in its own
way. `num_records` offline preference records: a training prompt and two completions drawn
from the chain with its toxic mass scaled by λ ∈ {0, ¼, ½, ¾, 1} (one λ per completion,
so the data cover clean to toxic text), ordered by a Bradley–Terry draw on the scores of
one annotator picked at random per record.

Both arms start from the same Bradley–Terry reward model (the registry's
"bradley_terry" objective on all records, `rm_steps` steps; `irl_jax.models.RewardModel`
on the base backbone) and run `rl_updates` GRPO updates (`rl_prompts` × `group_size`
samples, k3 KL to the base at `kl_coef`) on its reward with the same sampling keys. The
refreshed arm, every `refresh_every` updates, embeds its latest batch of responses (the
frozen base policy's mean final hidden state over the completion), keeps the `top_n`
records nearest to them and `num_anchors` random others (`select_for_refresh`), and
fine-tunes the reward model from its current weights for `refresh_steps` steps of batch
`rm_batch` at `refresh_learning_rate` (`make_refresh`). Record embeddings are the mean of
their two completions' embeddings.

Measured: the true reward of every update's batch, the reward model's pairwise ranking
accuracy against the true reward within each batch's groups (how well it grades what the
policy now writes), and the true reward on held-out prompts at the end (`eval_samples`
per prompt). Verdict, paired over seeds (95% t-intervals): "faster" is the mean batch true
reward over all updates, "better" the final held-out true reward, refreshed − static;
reproduced when both are above 0, contradicted when either is below. `quick`: 2 seeds, a
1-layer model, short budgets; it checks the pipeline, not the finding.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  # The world (the reward-recovery study's) and the base policy.
  c.num_tokens = 12
  c.num_bad = 3
  c.bad_mass = 0.2
  c.concentration = 0.5
  c.prompt_len = 4
  c.completion_len = 8
  c.corpus_size = 4096
  c.hidden_size = 64
  c.num_layers = 2
  c.num_heads = 4
  c.intermediate_size = 128
  c.pretrain_steps = 1500
  c.pretrain_batch = 64
  c.pretrain_learning_rate = 3e-3
  c.train_prompts = 512
  c.eval_prompts = 128
  c.eval_samples = 4
  # Annotators and the offline preference data.
  c.num_annotators = 3
  c.annotator_noise = 0.7
  c.num_records = 2048
  # The reward model and its refresh.
  c.rm_steps = 400
  c.rm_batch = 32
  c.rm_learning_rate = 1e-3
  c.refresh_every = 10
  c.top_n = 256
  c.num_anchors = 64
  c.refresh_steps = 20
  c.refresh_learning_rate = 3e-4
  # RLHF.
  c.rl_updates = 100
  c.rl_prompts = 16
  c.group_size = 4
  c.rl_learning_rate = 1e-4
  c.kl_coef = 0.04
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, corpus_size=1024, pretrain_steps=300, train_prompts=128, eval_prompts=32,
      eval_samples=2, num_records=256, rm_steps=40, rl_updates=20, top_n=64, num_anchors=16,
      refresh_every=5, refresh_steps=5, num_layers=1, hidden_size=32, intermediate_size=64))
  return c
