"""Query-dependent prompt selection from offline records (Prompt-OIRL), at laptop scale.

    python -m experiments.prompt_oirl --workdir=/tmp/prompt_oirl
    python -m experiments.prompt_oirl --workdir=/tmp/prompt_oirl --config.quick=True

Finding under test (Sun et al. 2023, "Query-Dependent Prompt Evaluation and Optimization
with Offline Inverse RL"): a reward model `R̂(x, p)` fitted to offline records
`(query, prompt, correct?)` picks, per query, a better prompt among N candidates
(best-of-N, one language-model call per query) than the single prompt that is best
overall, both among the prompts the records were made with and among prompts the
records never saw.

Setup (`experiments/prompt_oirl.py`). The language model is a small character-level
transformer trained from scratch (MLE, `irl_jax.train.compiled.make_train`, one model per
seed, all seeds in one vmapped program) on the arithmetic task's derivations
(`experiments/tasks/arithmetic.py`), each prompt preceded by an instruction prefix:
`"<prefix> + 3 5 8\\n"`, derivations combining the numbers left to right (one correct
response per query). Query types: `query_types` (`"+2"`: sums of 2 one-digit numbers,
`"+3"`, `"+4"`). Prefixes: `num_prompts` distinct tags of `prefix_len` distinct letters of
`letters`, drawn per seed. The letters are split at random (per seed) into one family per
query type, and the reliability of prefix `p` on type `q` is
`ρ(p, q) = rho_low + (rho_high − rho_low) · (letters of p in family q) / prefix_len`;
a demonstration under `(p, q)` is the expert's derivation with probability `ρ(p, q)`
and otherwise an early stop (the last step dropped and `#### <its first operand>`
written, a wrong answer the model can learn to imitate). So the model's success depends
on prefix and query type, no prefix is best for every type, and prefixes that share
letters behave alike (the analogue of prompts with similar meaning). The model is then
decoded greedily (`temperature`) for every record pair and graded with the task's
checker. Queries (`queries_per_type` distinct ones per type) are shuffled and split into
training and held-out queries (`train_query_fraction`); prompts are shuffled and split into
`num_train_prompts` training prompts and the rest held out. "Held out" means unseen by the
records and the reward model: the language model's corpus uses all prefixes (as a
deployed model has seen the held-out prompts' kind of text), and its queries are drawn
from the same distribution as the records' (the `"+2"` type has only 81 distinct queries).

Reward model (`irl_jax.eval.prompt_selection`): LightGBM (`lightgbm` settings) on
`[embed(query), embed(prefix)]`, where `embed` is the language model's own final hidden
states mean-pooled over the text's tokens (BOS excluded; the query `"+ 3 5 8\\n"` and
the prefix `"abc "` each encoded alone after BOS), fitted on training queries × training
prompts. Measured, on held-out queries: reward-model accuracy, precision, recall and F1
(threshold 0.5) and the base rate of correct records, on (a) training prompts and (b)
held-out prompts; the task accuracy of best-of-N (`argmax_p R̂`), of the best single
prompt and of the oracle (any candidate correct), over the training prompts (best single:
highest accuracy on the training records) and over the held-out prompts (best single:
highest mean `R̂` over the training queries, since held-out prompts have no records).
Verdicts: best-of-N − best single accuracy, paired over `num_seeds` seeds, 95%
t-interval: "reproduced" above 0, "contradicted" below, otherwise "not at this scale".

The default run took 363 s on 2 shared AMD EPYC cores (training the 5 language models
332 s, all else 31 s; `docs/results/prompt_oirl.md`). The models follow their corpus's
reliabilities (correlation of ρ with per-cell accuracy 0.77 ± 0.07), and 17-19% of
records are correct. Over the 6 training prompts, best-of-N reached 0.535 ± 0.165 against
0.303 ± 0.041 for the best single prompt (oracle 0.595): **reproduced**, paired gain
+0.232 [+0.066, +0.398]. Over the 10 held-out prompts, best-of-N reached 0.425 ± 0.128
against 0.318 ± 0.070 (oracle 0.708): **not at this scale**, gain +0.107 [−0.058, +0.271];
the reward model's F1 falls from 0.73 on training prompts to 0.28 on held-out prompts
(recall 0.20), i.e. the prefix embeddings carry too little of a new prefix's reliability.

`quick` (about 15 s): 2 seeds, a smaller model, fewer steps and queries; it checks the
pipeline, not the finding.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  # The world: query types, prefixes and their reliabilities.
  c.query_types = ("+2", "+3", "+4")
  c.letters = "abcdefghijkl"
  c.prefix_len = 3
  c.num_prompts = 16
  c.num_train_prompts = 6
  c.rho_low = 0.05
  c.rho_high = 0.95
  # The language model and its training corpus.
  c.num_demonstrations = 8000
  c.model = ml_collections.ConfigDict(dict(
      hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192))
  c.steps = 3000
  c.batch_size = 32
  c.learning_rate = 3e-3
  c.warmup_steps = 50
  c.temperature = 0.0  # decoding of the records (0: greedy)
  c.max_new_tokens = 28
  # Records and the reward model.
  c.queries_per_type = 80
  c.train_query_fraction = 0.5
  c.threshold = 0.5
  c.lightgbm = ml_collections.ConfigDict(dict(
      n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=10,
      subsample=0.8, subsample_freq=1, colsample_bytree=0.5))
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, num_demonstrations=3000, steps=600, queries_per_type=30,
      model=ml_collections.ConfigDict(dict(
          hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64))))
  return c
