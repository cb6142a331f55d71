"""TRL's own `DPOTrainer`, `RewardTrainer` and `GRPOTrainer` steps on CPU, timed for
`benchmarks.peers`.

    from experiments.benchmarks import _trl_peer
    out = _trl_peer.dpo_step_times(model_dir, prompt_ids, chosen_ids, rejected_ids, beta=0.1,
                                   learning_rate=1e-4, steps=10)
    out = _trl_peer.grpo_step_times(model_dir, prompt_ids, completion_ids, completion_mask,
                                    advantages, num_generations=2, beta=0.04, epsilon=0.2,
                                    learning_rate=1e-4, steps=10)

    python -m experiments.benchmarks._trl_peer      # tiny self-check (random Llama)

What is measured: the wall-clock time (`time.perf_counter`) of each optimizer step of
`trainer.train()`, from the `on_step_begin` to the `on_step_end` callback. Between the two
hooks the trainer moves the batch to the device, runs forward and backward (`compute_loss`,
including the `.item()` calls TRL makes for its metrics), clips the global gradient norm at
1.0, steps AdamW and the (constant) scheduler and zeroes the gradients. Fetching and collating
the batch happens before `on_step_begin`, logging after `on_step_end`, so both are excluded;
the first `warmup` steps are discarded. On CPU every torch op is synchronous, so the hooks'
clock readings bracket the step's work.

Both trainers get the caller's token ids unchanged: pre-tokenized datasets (TRL's
`prompt_ids`/`chosen_ids`/`rejected_ids` and `chosen_ids`/`rejected_ids` columns), nothing
appended (no BOS/EOS), no truncation (`max_length=None`) and no padding (every row has the
same length; `pad_to_multiple_of=None`). TRL 1.16's `RewardTrainer` skips its preprocessing
for such columns. Its `DPOTrainer._prepare_dataset` has no such check (it always extracts a
prompt, appends the EOS string and tokenizes text), so a subclass returns the pre-tokenized
dataset as is; TRL's own `DataCollatorForPreference` then builds `prompt + chosen` and
`prompt + rejected` with the completion mask on the response tokens. Before training, the
first batch of each trainer's own dataloader is checked to hold exactly these ids.

One optimizer step is one batch of all N pairs (`per_device_train_batch_size = N`, no
gradient accumulation): the dataset is the N pairs repeated `warmup + steps` times, read in
order (`train_sampling_strategy="sequential"`), so every step sees the same batch. Settings:
float32 (TRL's configs default to bf16, switched off), AdamW (TrainingArguments' default,
torch's fused AdamW) with β = (0.9, 0.95), ε = 1e-8, no weight decay, constant learning rate
without warm-up, `max_grad_norm = 1.0`, no gradient checkpointing (`activation_checkpointing=
False`: TRL's configs default `gradient_checkpointing` to True; irl_jax does not rematerialise
by default), dropout disabled (TRL's default), no saving, no evaluation, logging every step
(kept, not printed: the trainer's `PrinterCallback` is removed). DPO: sigmoid loss, TRL's
fused LM head for the log-probs, reference log-probs precomputed with the initial policy in
the trainer's constructor (outside the timed steps), so a step runs the policy only. Reward
model: Bradley–Terry loss on `AutoModelForSequenceClassification` (`num_labels = 1`), no
reward centring; the reward is the score at the last token, since the pad id (which the
model uses to find a row's end) is set to an id that no row ends with.

GRPO (`GRPOTrainer`, same common settings, `dropout` disabled explicitly since its config
does not by default): a step is the policy update on a fixed batch of already-generated
completions with given advantages, not generation (generation speed is a different
comparison). TRL 1.16 samples, scores, and computes the reference log-probs and the
advantages inside the step (`_prepare_inputs` calls `_generate_and_score_completions` after
`on_step_begin`); a subclass returns the fixed batch there instead: the prompts, the
completions right-padded with the pad id as TRL pads them and their mask, the advantages,
`num_items_in_batch`, and the old and reference log-probs, computed before training by
TRL's own `_get_per_token_logps_and_entropies` with the initial policy and with TRL's
reference model (as its generation step would). Everything else is TRL's: its row shuffle,
`compute_loss` (fused LM head for the log-probs and entropies, the clipped surrogate with ε,
the k3 KL to the reference weighted by β, `loss_type="dapo"`, TRL 1.16's default: the sum
over the batch's completion tokens over their count), backward, clipping and AdamW. One
setting departs from TRL 1.16's GRPO defaults beyond the common ones:
`use_bias_correction_kl=False` (by default TRL multiplies the KL term by the importance
ratio; the loss compared is GRPO's plain k3 term, as in irl_jax). The dataset holds only the
prompts' text (the `prompt` column TRL requires); the override checks that TRL's own sampler
and dataloader (`shuffle_dataset=False`) feed exactly the batch's prompts, each repeated
`num_generations` times, in order. One step is the whole batch of N completions
(`per_device_train_batch_size = N`, `num_iterations = 1`).

Each function returns `times` (seconds per timed step), `first_loss` (the loss logged for the
first optimizer step, before any update), `first_metrics` (everything else TRL logged for
that step: for GRPO `kl`, `entropy` and `clip_ratio/*`; for DPO `logps/chosen`/`logps/
rejected` are the batch means of the policy's summed response-token log-probs; the reward
trainer logs `mean_reward`/`margin`/`accuracy`/..., from which `rewards/chosen` and
`rewards/rejected` (batch means) are derived), and the TRL and torch versions and torch's
thread count (and `first_grad_norm`, the first step's unclipped gradient norm as logged;
GRPO also returns `completion_logps`, the initial policy's per-token log-probs). torch,
transformers, datasets and TRL are optional benchmark extras, imported inside the functions.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

SEED = 0


def local_tokenizer(vocab_size: int):
  """A PreTrainedTokenizerFast built offline (tokenizers WordLevel over tokens 't0'..'t{V-1}',
  whitespace pre-tokenizer), with pad/eos tokens that are ids inside [0, vocab_size) so
  no embedding resize is needed; token 'tI' must map to id I for the ids that the data uses.

  Follows the Llama configs of `experiments.benchmarks.peers`: pad = unk = 't0' (id 0),
  bos = 't1', eos = 't2'; every 'tI' maps to id I. No special tokens are added on encoding.
  """
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  if vocab_size < 3:
    raise ValueError(f"vocab_size must be at least 3 (pad, bos, eos), got {vocab_size}")
  backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
  backend.pre_tokenizer = pre_tokenizers.Whitespace()
  tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="t0", pad_token="t0",
                                bos_token="t1", eos_token="t2")
  assert tok.convert_tokens_to_ids(f"t{vocab_size - 1}") == vocab_size - 1
  assert len(tok) == vocab_size, (len(tok), vocab_size)
  return tok


def _as_rows(x: np.ndarray, name: str) -> list[list[int]]:
  x = np.asarray(x)
  if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{name} must be a 2-D integer array, got {x.dtype} {x.shape}")
  return x.astype(np.int64).tolist()


def _repeat(columns: dict[str, list], times: int):
  """A `datasets.Dataset` of the rows repeated `times` times, in order."""
  from datasets import Dataset

  return Dataset.from_dict({k: v * times for k, v in columns.items()})


def _common_args(n: int, total_steps: int, learning_rate: float, output_dir: str) -> dict:
  """The TrainingArguments both trainers share (see the module docstring)."""
  return dict(
      output_dir=output_dir, use_cpu=True, seed=SEED, data_seed=SEED,
      per_device_train_batch_size=n, gradient_accumulation_steps=1, max_steps=total_steps,
      train_sampling_strategy="sequential", dataloader_num_workers=0,
      dataloader_pin_memory=False, dataloader_drop_last=False,
      learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0,
      optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
      weight_decay=0.0, max_grad_norm=1.0,
      bf16=False, fp16=False, activation_checkpointing=False,
      max_length=None, pad_to_multiple_of=None, dataset_num_proc=None,
      logging_strategy="steps", logging_steps=1, save_strategy="no", eval_strategy="no",
      report_to="none", disable_tqdm=True,
  )


def _step_timer():
  """A callback that records every optimizer step's wall-clock time and every log entry."""
  from transformers import TrainerCallback

  class StepTimer(TrainerCallback):
    def __init__(self):
      self.times, self.logs, self._start = [], [], None

    def on_step_begin(self, args, state, control, **kwargs):
      self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      self.times.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs):
      self.logs.append(dict(logs or {}))

  return StepTimer()


def _prepare(trainer):
  """Drops the callback that prints every log to stdout; returns the first batch's `input_ids`.

  The batch is the first one the trainer's own dataloader yields (sampler and collator).
  """
  from transformers import PrinterCallback

  trainer.remove_callback(PrinterCallback)
  return next(iter(trainer.get_train_dataloader()))["input_ids"].cpu().numpy()


def _result(timer, warmup: int, steps: int, threads: int) -> dict:
  import torch
  import trl

  if len(timer.times) != warmup + steps:
    raise RuntimeError(f"expected {warmup + steps} optimizer steps, timed {len(timer.times)}")
  first = next(log for log in timer.logs if "loss" in log)
  metrics = {k: float(v) for k, v in first.items()
             if k not in ("loss", "epoch", "learning_rate", "grad_norm")}
  return {"times": [float(t) for t in timer.times[warmup:]], "first_loss": float(first["loss"]),
          "first_metrics": metrics, "first_grad_norm": float(first.get("grad_norm", np.nan)),
          "trl_version": trl.__version__, "torch_version": torch.__version__, "threads": threads}


def dpo_step_times(model_dir: str, prompt_ids: np.ndarray, chosen_ids: np.ndarray,
                   rejected_ids: np.ndarray, *, beta: float, learning_rate: float,
                   steps: int, warmup: int = 2, threads: int | None = None) -> dict:
  """Times `steps` optimizer steps of TRL's `DPOTrainer` (sigmoid loss) after `warmup` ones.

  `prompt_ids [N, P]` is each pair's shared prompt, `chosen_ids`/`rejected_ids [N, R]` the
  responses; the policy trains on exactly `prompt + chosen` and `prompt + rejected`, and the
  log-probs are summed over the R response tokens. `model_dir` is a saved causal LM.
  """
  import torch
  from transformers import AutoModelForCausalLM, set_seed
  from trl import DPOConfig, DPOTrainer

  class PreTokenizedDPOTrainer(DPOTrainer):
    # TRL 1.16 would extract a prompt, append the EOS string and tokenize text here; the
    # dataset already holds the `prompt_ids`/`chosen_ids`/`rejected_ids` its collator reads.
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
      return dataset

  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  prompt, chosen, rejected = (_as_rows(prompt_ids, "prompt_ids"),
                              _as_rows(chosen_ids, "chosen_ids"),
                              _as_rows(rejected_ids, "rejected_ids"))
  n = len(prompt)
  if not (len(chosen) == len(rejected) == n and n > 0):
    raise ValueError("prompt_ids, chosen_ids and rejected_ids need the same number of rows")
  total = warmup + steps
  dataset = _repeat({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected},
                    total)

  set_seed(SEED)
  model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
  tokenizer = local_tokenizer(model.config.vocab_size)
  timer = _step_timer()
  with tempfile.TemporaryDirectory() as out_dir:
    args = DPOConfig(**_common_args(n, total, learning_rate, out_dir), loss_type=["sigmoid"],
                     beta=beta, precompute_ref_log_probs=True, precompute_ref_batch_size=n)
    # The constructor precomputes the reference log-probs with the initial policy.
    trainer = PreTokenizedDPOTrainer(model=model, args=args, train_dataset=dataset,
                                     processing_class=tokenizer, callbacks=[timer])
    expected = np.concatenate([np.concatenate([prompt_ids, chosen_ids], axis=1),
                               np.concatenate([prompt_ids, rejected_ids], axis=1)])
    batch = _prepare(trainer)
    if not np.array_equal(batch, expected):
      raise RuntimeError("DPOTrainer's batch is not exactly prompt + chosen, prompt + rejected")
    trainer.train()
  return _result(timer, warmup, steps, torch.get_num_threads())


def _free_pad_id(chosen: np.ndarray, rejected: np.ndarray, vocab_size: int) -> int:
  """An id absent from the data (or at least from the rows' last tokens) to use as pad.

  `LlamaForSequenceClassification` scores the rightmost token that is not the pad id, so the
  pad id must not be a row's last token for the reward to be the last token's score.
  """
  ids = np.concatenate([np.asarray(chosen).ravel(), np.asarray(rejected).ravel()])
  for avoid in (ids, np.concatenate([np.asarray(chosen)[:, -1], np.asarray(rejected)[:, -1]])):
    free = np.setdiff1d(np.arange(vocab_size), avoid)
    if free.size:
      return int(free[0])
  raise ValueError("every vocabulary id ends some row; no pad id leaves the last token scored")


def reward_step_times(model_dir: str, chosen_ids: np.ndarray, rejected_ids: np.ndarray, *,
                      learning_rate: float, steps: int, warmup: int = 2,
                      threads: int | None = None) -> dict:
  """Times `steps` optimizer steps of TRL's `RewardTrainer` (Bradley–Terry) after `warmup` ones.

  `chosen_ids`/`rejected_ids [N, T]` are full sequences (no padding); the reward is the
  sequence-classification score at the last token. `model_dir` is loaded with
  `AutoModelForSequenceClassification(num_labels=1)` (a missing `score` head is initialised
  from the seed).
  """
  import torch
  from transformers import AutoModelForSequenceClassification, set_seed
  from trl import RewardConfig, RewardTrainer

  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  chosen, rejected = _as_rows(chosen_ids, "chosen_ids"), _as_rows(rejected_ids, "rejected_ids")
  n = len(chosen)
  if not (len(rejected) == n and n > 0):
    raise ValueError("chosen_ids and rejected_ids need the same number of rows")
  total = warmup + steps
  dataset = _repeat({"chosen_ids": chosen, "rejected_ids": rejected}, total)

  set_seed(SEED)
  model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1,
                                                             dtype=torch.float32)
  tokenizer = local_tokenizer(model.config.vocab_size)
  # No padding happens (equal lengths); the pad id only tells the model where a row ends.
  tokenizer.pad_token = f"t{_free_pad_id(chosen_ids, rejected_ids, model.config.vocab_size)}"
  model.config.pad_token_id = tokenizer.pad_token_id
  timer = _step_timer()
  with tempfile.TemporaryDirectory() as out_dir:
    args = RewardConfig(**_common_args(n, total, learning_rate, out_dir),
                        center_rewards_coefficient=None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset,
                            processing_class=tokenizer, callbacks=[timer])
    batch = _prepare(trainer)
    if not np.array_equal(batch, np.concatenate([chosen_ids, rejected_ids])):
      raise RuntimeError("RewardTrainer's batch is not exactly chosen + rejected")
    trainer.train()
  out = _result(timer, warmup, steps, torch.get_num_threads())
  m = out["first_metrics"]
  if "mean_reward" in m and "margin" in m:
    # TRL logs the mean over all 2N rewards and the mean margin chosen − rejected.
    m["rewards/chosen"] = m["mean_reward"] + m["margin"] / 2
    m["rewards/rejected"] = m["mean_reward"] - m["margin"] / 2
  return out


def grpo_step_times(model_dir: str, prompt_ids: np.ndarray, completion_ids: np.ndarray,
                    completion_mask: np.ndarray, advantages: np.ndarray, *, num_generations: int,
                    beta: float, epsilon: float, learning_rate: float, steps: int,
                    warmup: int = 2, threads: int | None = None) -> dict:
  """Times `steps` optimizer steps of TRL's `GRPOTrainer` (DAPO token-mean loss) after `warmup`.

  A step is the policy update on a fixed batch of already-generated completions, not
  generation: `_generate_and_score_completions` (which TRL 1.16 calls inside the step, from
  `_prepare_inputs`, to sample, score, compute the reference log-probs and the group
  advantages) is overridden to return the caller's batch, so a timed step runs TRL's own
  `_prepare_inputs` (its row shuffle), `compute_loss` (the clipped surrogate, the k3 KL to the
  reference, the entropy and clip-ratio metrics), backward, clipping and AdamW.

  `prompt_ids [N, P]` are the prompts (no padding), `num_generations` consecutive rows
  sharing one; `completion_ids [N, R]` the completions, right-padded as TRL pads them
  (`completion_mask [N, R]` is 1 on a prefix of each row; masked slots get the pad id 0);
  `advantages [N]` are used as given. The reference and the "old" (sampling) log-probs
  are the initial policy's, computed once before training by TRL's own
  `_get_per_token_logps_and_entropies` with its reference model and with the policy (as
  `_generate_and_score_completions` computes them), so the first step has ratio 1 and KL 0.
  (On-policy, TRL would skip the old log-probs and use the step's own, detached: the same
  values on the first step and the same work; given, every later step computes the same
  function as irl_jax's "grpo" objective with its sampler's fixed `sample_old_logps`.)
  Settings beyond the common ones: `loss_type="dapo"` (TRL 1.16's default: the sum over the
  batch's completion tokens over their count), `beta`, `epsilon` (= `epsilon_high`),
  token-level importance sampling, `use_bias_correction_kl=False` (TRL 1.16 defaults it to
  True: the KL term weighted by the ratio; the plain k3 term is the GRPO loss proper),
  no entropy bonus, `num_iterations=1`, `shuffle_dataset=False`.

  Returns the common keys (`first_metrics` holds TRL's `kl`, `entropy` and `clip_ratio/*`)
  plus `completion_logps [N, R]`, the initial policy's completion-token log-probs as TRL
  computes them (0 where masked).
  """
  import torch
  from transformers import AutoModelForCausalLM, PrinterCallback, set_seed
  from trl import GRPOConfig, GRPOTrainer

  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  prompt = np.asarray(_as_rows(prompt_ids, "prompt_ids"))
  completion = np.asarray(_as_rows(completion_ids, "completion_ids"))
  mask = np.asarray(completion_mask).astype(bool)
  adv = np.asarray(advantages, np.float32)
  n, g = len(prompt), num_generations
  if not (completion.shape[0] == n and mask.shape == completion.shape and adv.shape == (n,)):
    raise ValueError("prompt_ids, completion_ids, completion_mask and advantages need N rows "
                     f"(got {prompt.shape}, {completion.shape}, {mask.shape}, {adv.shape})")
  if g < 2 or n % g:
    raise ValueError(f"{n} rows are not whole groups of num_generations={g} (>= 2)")
  groups = prompt.reshape(n // g, g, -1)
  if not (groups == groups[:, :1]).all():
    raise ValueError(f"every {g} consecutive rows must share their prompt")
  if not (np.sort(mask, axis=1)[:, ::-1] == mask).all() or not mask.any(axis=1).all():
    raise ValueError("completion_mask must be a non-empty prefix of each row (right padding)")
  pad_id = 0
  completion = np.where(mask, completion, pad_id)
  texts = [" ".join(f"t{i}" for i in row) for row in groups[:, 0]]
  total = warmup + steps
  dataset = _repeat({"prompt": texts}, total)
  expected = [t for t in texts for _ in range(g)]

  class FixedBatchGRPOTrainer(GRPOTrainer):
    # TRL 1.16 generates completions for the step's prompts here, scores them and computes
    # the old/reference log-probs and the advantages; a benchmarked step starts from the
    # given ones. The prompts the trainer's own sampler and dataloader feed are checked.
    fixed_batch: dict

    def _generate_and_score_completions(self, inputs):
      if [x["prompt"] for x in inputs] != expected:
        raise RuntimeError("GRPOTrainer's generation batch is not the benchmark's prompts")
      return dict(self.fixed_batch)

  def reward(completions, **kwargs):  # required by the constructor; never called
    raise RuntimeError("the benchmark's GRPO step scores no completions")

  set_seed(SEED)
  model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
  tokenizer = local_tokenizer(model.config.vocab_size)
  assert tokenizer.pad_token_id == pad_id
  timer = _step_timer()
  with tempfile.TemporaryDirectory() as out_dir:
    common = _common_args(n, total, learning_rate, out_dir)
    del common["max_length"], common["dataset_num_proc"]  # not GRPOConfig fields
    args = GRPOConfig(
        **common, loss_type="dapo", beta=beta, epsilon=epsilon, epsilon_high=epsilon,
        num_generations=g, num_iterations=1, importance_sampling_level="token",
        use_bias_correction_kl=False, entropy_coef=0.0, top_entropy_quantile=1.0,
        temperature=1.0, max_completion_length=completion.shape[1], shuffle_dataset=False,
        disable_dropout=True)
    trainer = FixedBatchGRPOTrainer(model=model, reward_funcs=reward, args=args,
                                    train_dataset=dataset, processing_class=tokenizer,
                                    callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    if trainer.ref_model is None or trainer.args.activation_checkpointing:
      raise RuntimeError("GRPOTrainer set up without a reference model or with checkpointing")
    ids = torch.tensor(prompt, dtype=torch.long)
    comp = torch.tensor(completion, dtype=torch.long)
    comp_mask = torch.tensor(mask, dtype=torch.long)
    input_ids = torch.cat([ids, comp], dim=1)
    attention = torch.cat([torch.ones_like(ids), comp_mask], dim=1)
    # Before training, outside the timed steps: TRL computes these in its generation step,
    # irl_jax's sampler before the train step; neither is part of the policy update.
    with torch.no_grad():
      old, _, _ = trainer._get_per_token_logps_and_entropies(
          trainer.model, input_ids, attention, comp.shape[1])
      ref, _, _ = trainer._get_per_token_logps_and_entropies(
          trainer.ref_model, input_ids, attention, comp.shape[1])
    trainer.fixed_batch = {
        "prompt_ids": ids, "prompt_mask": torch.ones_like(ids), "completion_ids": comp,
        "completion_mask": comp_mask, "advantages": torch.tensor(adv),
        "num_items_in_batch": comp_mask.sum(),  # as `_generate_and_score_completions` sets it
        "old_per_token_logps": old, "ref_per_token_logps": ref}
    trainer.train()
  out = _result(timer, warmup, steps, torch.get_num_threads())
  out["completion_logps"] = np.where(mask, old.numpy(), 0.0).astype(np.float32)
  return out


def _self_check() -> None:
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  v, n, p, r = 512, 4, 8, 24
  torch.manual_seed(0)
  config = LlamaConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=p + r, tie_word_embeddings=False,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
  rng = np.random.default_rng(0)
  prompt = rng.integers(3, v, (n, p))
  chosen, rejected = rng.integers(3, v, (n, r)), rng.integers(3, v, (n, r))
  with tempfile.TemporaryDirectory() as tmp:
    LlamaForCausalLM(config).save_pretrained(tmp)
    dpo = dpo_step_times(tmp, prompt, chosen, rejected, beta=0.1, learning_rate=1e-4, steps=3)
    rm = reward_step_times(tmp, np.concatenate([prompt, chosen], axis=1),
                           np.concatenate([prompt, rejected], axis=1), learning_rate=1e-4,
                           steps=3)
    # GRPO: groups of 2 (each pair's prompt), ragged completions, advantages ±1.
    lengths = r - 3 * np.arange(n)
    mask = np.arange(r)[None] < lengths[:, None]
    adv = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    grpo = grpo_step_times(tmp, np.repeat(prompt[::2], 2, axis=0), chosen, mask, adv,
                           num_generations=2, beta=0.04, epsilon=0.2, learning_rate=1e-4,
                           steps=3)
  for name, res in (("dpo", dpo), ("reward", rm), ("grpo", grpo)):
    print(name, {k: res[k] for k in ("first_loss", "first_metrics", "times", "threads")})
  assert abs(dpo["first_loss"] - np.log(2)) < 1e-5, dpo["first_loss"]
  # Ratio 1 and KL 0 on the first step: the loss is −Σ_i A_i·n_i / Σ_i n_i.
  expected = -np.sum(adv * lengths) / np.sum(lengths)
  assert abs(grpo["first_loss"] - expected) < 1e-6, (grpo["first_loss"], expected)
  assert abs(grpo["first_metrics"]["kl"]) < 1e-6, grpo["first_metrics"]


if __name__ == "__main__":
  _self_check()
