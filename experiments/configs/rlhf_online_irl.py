"""RLHF as online IRL with offline demonstrations (Sun 2023): behaviour cloning vs a reward
model plus policy optimisation vs IQLearn, on one task and one data budget.

    python -m experiments.rlhf_online_irl --workdir=/tmp/rlhf_online_irl
    python -m experiments.rlhf_online_irl --workdir=/tmp/rlhf_online_irl --config.quick=True

Claims made concrete: (1) RLHF — a reward model fitted from the demonstrations, then
policy optimisation on the policy's own samples — beats behaviour cloning (SFT) on the
same data, (2) because it avoids compounding error: its advantage grows with the length
of the generation; (3) IQLearn, the offline IRL objective, also beats SFT on the same
data.

Task: the arithmetic derivations of the main job (`experiments/tasks/arithmetic.py`:
`min_operands`–`max_operands` one-digit operands, one `a+b=c` step per line, then
`#### answer`), so the length of a derivation is its operand count minus one steps.
Budget: `num_demonstrations` expert derivations, the only expert data any method sees.
Per seed (`num_seeds`, vmapped in every training program; the methods of a seed share
its data and start):
1. SFT: a small transformer trained from scratch by MLE (the registry's "mle", `sft_steps`
   AdamW steps; `irl_jax.train.compiled.make_train`).
2. IQLearn: the same model trained from scratch on the same demonstrations and schedule
   with the registry's "iq_learn" (γ = `iq_gamma`, λ = `iq_td_weight`).
3. RLHF: a Bradley–Terry reward model (the registry's "bradley_terry"; the SFT backbone
   plus a fresh head) fitted for `rm_steps` steps on pairs (the expert's derivation ≻ the
   SFT policy's own sample at temperature 1) over the demonstrations' prompts — the
   inverse step, no new expert data; a sample identical to the expert's text makes no
   pair (its row is masked out and counted); then, from SFT, `rl_updates` GRPO updates (the
   registry's "grpo" through `make_train` with an in-step sampler: `rl_prompts` prompts ×
   `group_size` samples each, EOS-terminated, scored by the reward model; k3 KL to SFT at
   `kl_coef`, learning rate `rl_learning_rate`).
Accuracy (greedy decoding, final answer correct) on `eval_per_length` held-out prompts for
each operand count.

Verdicts (95% t-intervals over seeds, paired): (1) RLHF − SFT in mean accuracy over
lengths, claimed positive; (2) the slope of RLHF − SFT against the number of steps
(least squares per seed) and RLHF − SFT at the longest length, both claimed positive
(contradicted when either is negative: a gap that only narrows as both accuracies fall
towards 0 is no advantage); (3) IQLearn − SFT, claimed positive.
`quick`: 2 seeds, short budgets; it checks the pipeline, not the claims.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.data_seed = 0
  c.num_seeds = 5
  # The task and the budget.
  c.min_operands = 2
  c.max_operands = 6
  c.num_demonstrations = 500
  c.seq_len = 72
  c.max_new_tokens = 56
  c.eval_per_length = 64
  # The model and SFT / IQLearn.
  c.hidden_size = 64
  c.num_layers = 2
  c.num_heads = 4
  c.intermediate_size = 192
  c.sft_steps = 800
  c.sft_batch = 32
  c.sft_learning_rate = 3e-3
  c.iq_gamma = 0.99
  c.iq_td_weight = 0.1
  # RLHF.
  c.rm_steps = 200
  c.rm_batch = 32
  c.rm_learning_rate = 1e-3
  c.rl_updates = 100
  c.rl_prompts = 16
  c.group_size = 4
  c.rl_learning_rate = 1e-4
  c.kl_coef = 0.04
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, num_demonstrations=160, sft_steps=150, eval_per_length=16, rm_steps=30,
      rl_updates=10, hidden_size=48, intermediate_size=96))
  return c
