"""Per-step negatives (Setlur et al. 2024, "RL on Incorrect Synthetic Data Scales the
Efficiency of LLM Math Reasoning by Eight-Fold"), at laptop scale.

    python -m experiments.per_step_negatives --workdir=/tmp/per_step_negatives
    python -m experiments.per_step_negatives --workdir=/tmp/per_step_negatives --config.quick=True

Findings under test: (1) DPO on pairs (positive, negative cut after its first pit) with
π_ref = π_SFT, equivalently advantage-weighted step likelihood, is several times more
data-efficient than SFT on positives; (2) rejection fine-tuning (RFT) on self-generated
positives helps; (3) outcome-level DPO (full negatives) helps less than per-step DPO.

Task: the arithmetic derivations of the main job (`experiments/tasks/arithmetic.py`,
`min_operands`–`max_operands` one-digit operands, one `a+b=c` step per line in a random
order, then `#### answer`), checked exactly. One step is one line. No spurious step is
planted: the negatives are the SFT model's own errors (a choice of this study; the
design's planted step was not specified further).

Per synthetic-data size n in `data_sizes` and seed (`num_seeds`; each (n, seed) has its
own model init and data order, seeds vmapped in every training program; the methods of
one (n, seed) share its SFT model, self-generated data and fine-tuning keys, so the
comparisons are paired):
1. SFT: a small transformer trained from scratch by MLE on the first n expert
   derivations of a fixed pool (`sft_steps` AdamW steps; the registry's "mle" objective
   and `irl_jax.train.compiled.make_train`).
2. Self-generated data: `samples_per_question` responses at temperature 1 to each of
   `num_questions` fresh questions (prompts only, disjoint from the held-out ones; no
   expert answer is used for them, so n is the whole expert-data budget): the first
   correct sample is the question's positive (for RFT and the pairs), the first
   incorrect one its negative; a question without both forms no pair. (Sampling the
   SFT data's own prompts gave almost no negatives: the SFT model had memorised them.)
3. Step values of each negative (`irl_jax.train.monte_carlo_step_values`): `rollouts`
   continuations from the SFT policy at temperature 1 from the prompt and from every step
   prefix, `q_estimate` ("best_of_k": any success; or "mean"), graded by the checker;
   advantages A_i = Q̂_i − Q̂_{i−1} and the first pit (`irl_jax.losses.step_advantages`).
4. From the SFT weights, `finetune_steps` Adam steps (learning rate `finetune_learning_rate`,
   batches of `finetune_batch` questions) of each method: RFT (MLE on the self-generated
   positives); outcome DPO (`dpo`, β = `dpo_beta`, π_ref = π_SFT, the full negative);
   per-step DPO (the negative cut after its first pit, `irl_jax.losses.prefix_mask`); AWR
   (`advantage_weighted_steps` on the negative's steps, β = `awr_beta`, weights clipped at
   `awr_max_weight`, plus MLE on the positive, whose steps carry A = 0). The weights
   are positive, so AWR also raises the likelihood of a negative's wrong steps, only
   less than of its good ones; it matches per-step DPO in expectation only when the
   data are unselected samples of π_SFT, which these (first incorrect sample per
   question) are not.
   A control, "SFT continued", fine-tunes the same way by MLE on the expert positives
   (the first `num_questions` of the n, cycled when n is smaller): it separates what a
   method's data do from what the extra fine-tuning itself does.
Accuracy (final answer, greedy) on `num_heldout` held-out prompts never seen in training.
SFT alone is also trained at `sft_only_sizes` (larger n) to measure the data-efficiency
multiple: the n at which SFT's mean accuracy (log-linear interpolation in n) reaches a
method's accuracy, divided by the method's n.

Verdicts (95% t-intervals over seeds of the paired difference, averaged over
`data_sizes`): (1) per-step DPO − SFT > 0; (2) RFT − SFT > 0; (3) per-step DPO − outcome
DPO > 0. The multiples are reported with them.

The default run took 790 s on 2 shared AMD EPYC cores. SFT reached 0.191 (n = 250) and
0.576 (n = 1000). Every fine-tuning method, and the control, lowered accuracy at
n = 1000 (control 0.452, RFT 0.466, AWR 0.458, per-step DPO 0.166, outcome DPO 0.059):
(1) contradicted, per-step DPO − SFT −0.226 [−0.291, −0.161]; (2) contradicted,
RFT − SFT −0.044 [−0.076, −0.012] (RFT − control +0.016 [−0.007, +0.038]); (3)
reproduced, per-step − outcome DPO +0.083 [+0.058, +0.107]. `quick`: one small n, 2
seeds, short training; it checks the pipeline, not the findings.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.data_seed = 0
  c.num_seeds = 5
  # The task.
  c.min_operands = 3
  c.max_operands = 4
  c.seq_len = 48
  c.max_new_tokens = 36
  c.num_heldout = 256
  # SFT.
  c.data_sizes = (250, 1000)
  c.sft_only_sizes = (2000, 4000)
  c.hidden_size = 64
  c.num_layers = 2
  c.num_heads = 4
  c.intermediate_size = 192
  c.sft_steps = 800
  c.sft_batch = 32
  c.sft_learning_rate = 3e-3
  # Self-generated data and step values.
  c.num_questions = 256
  c.samples_per_question = 8
  c.rollouts = 4
  c.q_estimate = "best_of_k"
  c.max_steps = 8
  # Fine-tuning.
  c.finetune_steps = 120
  c.finetune_batch = 32
  c.finetune_learning_rate = 3e-4
  c.dpo_beta = 0.1
  c.awr_beta = 1.0
  c.awr_max_weight = 10.0
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, data_sizes=(200,), sft_only_sizes=(400,), sft_steps=150, num_questions=32,
      finetune_steps=20, num_heldout=64, hidden_size=48, intermediate_size=96))
  return c
