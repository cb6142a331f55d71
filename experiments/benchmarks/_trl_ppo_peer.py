"""TRL 0.29.1's `PPOTrainer` update on CPU on a fixed batch of completions, timed for
`benchmarks.peers` (its `ppo_step_speedup_vs_trl` row).

TRL 1.16 (irl_jax's benchmark extra) has no PPO trainer; TRL 0.29.1 ships one as
`trl.experimental.ppo.PPOTrainer`. It runs in its own virtual environment (`python -m venv
--system-site-packages DIR && DIR/bin/pip install --no-deps trl==0.29.1`: the main
environment's torch, transformers, accelerate and datasets, TRL 0.29.1 in front of TRL 1.16),
never installed into the main one. `benchmarks.peers` runs this module there as a subprocess
from the repository root:

    DIR/bin/python -m experiments.benchmarks._trl_ppo_peer JOB_DIR   # reads JOB_DIR/inputs.npz
                                                                     # and config.json, writes
                                                                     # JOB_DIR/result.json
    DIR/bin/python -m experiments.benchmarks._trl_ppo_peer           # tiny self-check

What a PPO step is here: one update of `PPOTrainer.train()`'s loop (one rollout batch, one PPO
epoch, one minibatch = the whole batch) minus generation. TRL's loop is monolithic: per update
it generates (`batch_generation`), then computes the reference log-probs (a forward pass of the
reference), the values (a forward pass of the separate value model) and the reward model's
scores, the KL-shaped rewards, GAE, the whitened advantages, then `num_ppo_epochs` × minibatch
updates of policy and value model, its metrics (`.item()` calls) and `self.log`. Generation is
not part of the step (generation speed is a different comparison): the module-level
`batch_generation` the loop calls is replaced by a function that returns the caller's
completions for the queries TRL's own dataloader drew (matched by their ids, so TRL's shuffle
is kept and checked to be a permutation of the caller's prompts) together with the logits a
generation returns (`output_scores`: the current policy's logits at the response positions
divided by the sampling temperature, as TRL's `generate` returns them and takes the "old"
log-probs from), computed by TRL's own `forward` of the current policy. That function reads
the clock as its last statement; the step's time runs from there to the `on_step_end`
callback, so it is exactly the loop's work after generation: leaving the generation context,
the old log-probs from the logits (`selective_log_softmax`), the reference, value-model and
reward-model forward passes, rewards, GAE (TRL's Python loop over the response positions),
whitening, the update (policy and value model forward and backward, AdamW; TRL also computes
the full-vocabulary entropy of every response position, without gradient, for its metrics),
the metrics with their `.item()` calls, `self.log` (kept, not printed: the `PrinterCallback`
is removed), and the `gc.collect()` TRL calls after scoring (`gc_collect_s` reports what one
`gc.collect()` costs in this process after training). Fetching the queries from the dataloader
comes before generation and the `gc.collect()`/`empty_cache()` after `on_step_end`, so both
are excluded. The first `warmup` updates are discarded; on CPU every torch op is synchronous,
so the two clock readings bracket the work. The first update (a discarded one) also runs
through recording wrappers of the module's `selective_log_softmax`, `get_reward` and
`masked_whiten` and of the optimizer's `step` (for the parity values below), removed before
the second: the timed updates call TRL's own functions.

Settings: float32 (`bf16=False`: TRL's configs default to bf16), no gradient checkpointing
(checked), dropout disabled (TRL disables it in all four models), AdamW (torch's fused) with
β = (0.9, 0.95), ε = 1e-8, no weight decay, constant learning rate without warm-up,
`num_ppo_epochs=1`, `num_mini_batches=1`, `per_device_train_batch_size = N` (one optimizer
step per update), `local_rollout_forward_batch_size = N` (one scoring pass), `kl_estimator=
"k1"`, `whiten_rewards=False`, `temperature=1.0`, `stop_token_id=None` (no truncation: the
completions are used as given), `missing_eos_penalty=None`, `num_sample_generations=0`, the
caller's `kl_coef`, `gamma`, `lam`, `cliprange`, `cliprange_value` and `vf_coef`. Three
things cannot be switched off and differ from irl_jax's "ppo" objective:

- TRL never clips gradients in its PPO loop (`accelerator.backward(loss); optimizer.step()`;
  `max_grad_norm` is unused), so the caller compares with an unclipped irl_jax optimizer.
- The value model is a separate `AutoModelForSequenceClassification` (`num_labels=1`) whose
  `score` head is applied to every position: `PolicyAndValueWrapper` runs two backbones (the
  policy's and the value model's) forward and backward in every update. irl_jax's
  `PolicyValueModel` puts the value head on the policy's backbone (one backbone).
- Advantages are whitened with the sample variance (Bessel's correction); irl_jax's sampler
  uses the population variance, so TRL's whitened advantages are irl_jax's times
  `sqrt((var_pop + 1e-8) / (var_sample + 1e-8))` ≈ `sqrt((n − 1) / n)` (`n` the batch's
  response tokens), and so is the policy gradient at ratio 1.

TRL also ends an episode differently on padded completions (it pays the score one position
after the last response token and fits the value there, `padding_mask_p1`); on completions
that fill the whole response length, as the caller's do, its rewards, GAE and value loss are
irl_jax's.

The models: the policy and the reference are loaded from `model_dir` (two copies, as TRL's
`create_reference_model` would make), the value model and the reward model from `value_dir`
and `reward_dir` (`*ForSequenceClassification` checkpoints, one label). The pad id is 0 (the
Llama configs of `benchmarks.peers`; TRL finds a row's end by it, so no prompt or response
token may be 0 except as right padding of a response).

`ppo_step_times` returns `times` (seconds per timed update), `first_metrics` (what TRL logged
for the first update: `loss/policy_avg`, `loss/value_avg`, `objective/kl`, ...), what the
first update used, recorded from TRL's own calls and given in the caller's row order:
`old_logps`, `ref_logps` and `values` `[N, R]` (the policy's, the reference's response-token
log-probs and the value model's values at the response positions), `scores [N]` (the reward
model's), `advantages [N, R]` (GAE's, before whitening) and `whitened_advantages`, `mask
[N, R]` (TRL's response mask, `~padding_mask`); `grad_norm_policy` and `grad_norm_value` (the
first update's gradient norms of the policy's and the value model's parameters, before the
optimizer step), `gc_collect_s`, the TRL, transformers and torch versions, torch's thread
count and the device.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

SEED = 0
PAD_ID = 0


def _check_batch(query_ids, response_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(queries, responses, mask)` as int64 arrays and the response mask, or ValueError."""
  queries, responses = np.asarray(query_ids), np.asarray(response_ids)
  for name, x in (("query_ids", queries), ("response_ids", responses)):
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
      raise ValueError(f"{name} must be a 2-D integer array, got {x.dtype} {x.shape}")
  if queries.shape[0] != responses.shape[0] or queries.shape[0] < 2:
    raise ValueError(f"query_ids {queries.shape} and response_ids {responses.shape} need the "
                     "same number (>= 2) of rows")
  if (queries == PAD_ID).any():
    raise ValueError(f"a query holds the pad id {PAD_ID}; TRL would mask it out")
  mask = responses != PAD_ID
  if not (np.sort(mask, axis=1)[:, ::-1] == mask).all() or not mask.any(axis=1).all():
    raise ValueError(f"each response must be a non-empty prefix right-padded with {PAD_ID}")
  if len({tuple(q) for q in queries.tolist()}) != len(queries):
    raise ValueError("the queries must be distinct (TRL's shuffled rows are matched by them)")
  return queries.astype(np.int64), responses.astype(np.int64), mask


def ppo_step_times(model_dir: str, value_dir: str, reward_dir: str, query_ids, response_ids, *,
                   kl_coef: float, gamma: float, lam: float, cliprange: float,
                   cliprange_value: float, vf_coef: float, learning_rate: float, steps: int,
                   warmup: int = 2, threads: int | None = None) -> dict:
  """Times `steps` updates of TRL's `PPOTrainer` after `warmup` ones (see the module docstring).

  `query_ids [N, P]` are the prompts (distinct, no padding), `response_ids [N, R]` their
  completions (right-padded with the pad id 0 if shorter than R).
  """
  os.environ.setdefault("ACCELERATE_USE_CPU", "true")  # PPOTrainer builds its own Accelerator
  import torch
  import transformers
  import trl
  from datasets import Dataset
  from transformers import (
      AutoModelForCausalLM,
      AutoModelForSequenceClassification,
      PrinterCallback,
      TrainerCallback,
      set_seed,
  )
  from trl.experimental.ppo import PPOConfig, PPOTrainer
  from trl.experimental.ppo import ppo_trainer as ppo_module

  from experiments.benchmarks._trl_peer import local_tokenizer

  if warmup < 1 or steps < 1:
    raise ValueError(f"need warmup >= 1 (the first update records the parity values) and "
                     f"steps >= 1, got warmup={warmup}, steps={steps}")
  queries, responses, _ = _check_batch(query_ids, response_ids)
  n, p = queries.shape
  r = responses.shape[1]
  row_of = {tuple(q): i for i, q in enumerate(queries.tolist())}
  responses_t = torch.tensor(responses)
  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  total = warmup + steps

  set_seed(SEED)
  load = dict(dtype=torch.float32)
  policy = AutoModelForCausalLM.from_pretrained(model_dir, **load)
  ref_policy = AutoModelForCausalLM.from_pretrained(model_dir, **load)
  value_model = AutoModelForSequenceClassification.from_pretrained(value_dir, num_labels=1, **load)
  reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1,
                                                                    **load)
  tokenizer = local_tokenizer(policy.config.vocab_size)
  assert tokenizer.pad_token_id == PAD_ID
  dataset = Dataset.from_dict({"input_ids": queries.tolist()})

  clock: dict = {}
  first: dict = {"rows": None, "log_softmax": [], "get_reward": {}, "whiten": []}

  def fixed_generation(model, batch_queries, local_rollout_forward_batch_size, pad_token_id,
                       generation_config):
    # The caller's completions for the queries TRL's dataloader drew, with the logits a
    # generation returns (`output_scores`: processed by the sampling temperature).
    rows = [row_of.get(tuple(q)) for q in batch_queries.tolist()]
    if sorted(i for i in rows if i is not None) != list(range(n)):
      raise RuntimeError("PPOTrainer's rollout batch is not a permutation of the prompts")
    if first["rows"] is None:
      first["rows"] = rows
    query_responses = torch.cat([batch_queries, responses_t[rows]], dim=1)
    with torch.no_grad():
      logits = ppo_module.forward(model, query_responses, pad_token_id).logits[:, p - 1:-1]
      logits = logits / generation_config.temperature
    clock["generated"] = time.perf_counter()
    return query_responses, logits

  # Recorders of what the first update computes (removed after it: the timed updates call
  # TRL's own functions directly).
  originals = {name: getattr(ppo_module, name)
               for name in ("selective_log_softmax", "get_reward", "masked_whiten")}

  def log_softmax_recorder(logits, index):
    out = originals["selective_log_softmax"](logits, index)
    first["log_softmax"].append(out.detach().clone())
    return out

  def get_reward_recorder(model, query_responses, pad_token_id, context_length):
    out = originals["get_reward"](model, query_responses, pad_token_id, context_length)
    kind = "value" if model is value_model else "reward" if model is reward_model else "other"
    first["get_reward"][kind] = [x.detach().clone() for x in out]
    return out

  def whiten_recorder(values, mask, shift_mean=True):
    out = originals["masked_whiten"](values, mask, shift_mean)
    first["whiten"].append((values.detach().clone(), mask.clone(), out.detach().clone()))
    return out

  recorders = {"selective_log_softmax": log_softmax_recorder, "get_reward": get_reward_recorder,
               "masked_whiten": whiten_recorder}

  class StepTimer(TrainerCallback):
    def __init__(self):
      self.times, self.logs = [], []

    def on_step_end(self, args, state, control, **kwargs):
      self.times.append(time.perf_counter() - clock.pop("generated"))
      for name, fn in originals.items():
        setattr(ppo_module, name, fn)

    def on_log(self, args, state, control, logs=None, **kwargs):
      self.logs.append(dict(logs or {}))

  timer = StepTimer()
  saved_generation = ppo_module.batch_generation
  with tempfile.TemporaryDirectory() as out_dir:
    args = PPOConfig(
        output_dir=out_dir, use_cpu=True, seed=SEED, data_seed=SEED, report_to="none",
        per_device_train_batch_size=n, gradient_accumulation_steps=1, num_mini_batches=1,
        num_ppo_epochs=1, total_episodes=n * total, local_rollout_forward_batch_size=n,
        learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
        weight_decay=0.0, bf16=False, fp16=False, gradient_checkpointing=False,
        kl_coef=kl_coef, kl_estimator="k1", cliprange=cliprange,
        cliprange_value=cliprange_value, vf_coef=vf_coef, gamma=gamma, lam=lam,
        whiten_rewards=False, temperature=1.0, response_length=r, stop_token=None,
        stop_token_id=None, missing_eos_penalty=None, num_sample_generations=0,
        logging_steps=1, save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False)
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy,
                         ref_model=ref_policy, reward_model=reward_model,
                         train_dataset=dataset, value_model=value_model, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    device = trainer.accelerator.device
    if device.type != "cpu" or trainer.accelerator.mixed_precision != "no":
      raise RuntimeError(f"PPOTrainer runs on {device} with mixed precision "
                         f"{trainer.accelerator.mixed_precision!r}, not float32 on the CPU")
    if policy.is_gradient_checkpointing or value_model.is_gradient_checkpointing:
      raise RuntimeError("PPOTrainer set up with gradient checkpointing")
    if any(x.dtype != torch.float32 for x in trainer.model.parameters()):
      raise RuntimeError("PPOTrainer's models are not float32")
    # The first update's gradient norms, read before its optimizer step (then TRL's own
    # `step` again for every later update).
    optimizer = trainer.optimizer
    own_step = vars(optimizer).get("step")
    bound_step = optimizer.step
    norms: dict = {}

    def first_step(*a, **k):
      for name, module in (("policy", trainer.model.policy),
                           ("value", trainer.model.value_model)):
        grads = [x.grad.detach().double().norm() for x in module.parameters()
                 if x.grad is not None]
        norms[name] = float(torch.stack(grads).norm()) if grads else 0.0
      if own_step is None:
        del optimizer.step
      else:
        optimizer.step = own_step
      return bound_step(*a, **k)

    optimizer.step = first_step
    for name, fn in recorders.items():
      setattr(ppo_module, name, fn)
    ppo_module.batch_generation = fixed_generation
    try:
      trainer.train()
    finally:
      ppo_module.batch_generation = saved_generation
      for name, fn in originals.items():
        setattr(ppo_module, name, fn)
  gc_times = []
  for _ in range(3):
    start = time.perf_counter()
    gc.collect()
    gc_times.append(time.perf_counter() - start)

  if len(timer.times) != total:
    raise RuntimeError(f"expected {total} PPO updates, timed {len(timer.times)}")
  if len(first["log_softmax"]) != 3 or set(first["get_reward"]) != {"value", "reward"} or \
     len(first["whiten"]) != 1 or len(norms) != 2:
    raise RuntimeError("PPOTrainer's first update did not make the expected calls "
                       f"({len(first['log_softmax'])} log-softmax, {sorted(first['get_reward'])} "
                       f"get_reward, {len(first['whiten'])} whitening, {sorted(norms)} norms)")
  logs = [log for log in timer.logs if "loss/policy_avg" in log]
  # Back to the caller's row order.
  order = np.asarray(first["rows"])

  def caller_order(x):
    x = np.asarray(x.detach().cpu().numpy(), np.float64)
    out = np.empty_like(x)
    out[order] = x
    return out

  value_logits = first["get_reward"]["value"][0][:, p - 1:-1, 0]
  advantages, whiten_mask, whitened = first["whiten"][0]
  return {
      "times": [float(t) for t in timer.times[warmup:]],
      "first_metrics": {k: float(v) for k, v in logs[0].items()},
      "old_logps": caller_order(first["log_softmax"][0]).tolist(),
      "ref_logps": caller_order(first["log_softmax"][1]).tolist(),
      "values": caller_order(value_logits).tolist(),
      "scores": caller_order(first["get_reward"]["reward"][1]).tolist(),
      "advantages": caller_order(advantages).tolist(),
      "whitened_advantages": caller_order(whitened).tolist(),
      "mask": caller_order(whiten_mask.to(torch.float64)).astype(bool).tolist(),
      "grad_norm_policy": norms["policy"], "grad_norm_value": norms["value"],
      "gc_collect_s": statistics.median(gc_times),
      "trl_version": trl.__version__, "transformers_version": transformers.__version__,
      "torch_version": torch.__version__, "threads": torch.get_num_threads(),
      "device": str(device),
  }


def run_job(job_dir: str) -> None:
  """Reads `job_dir/inputs.npz` (`query_ids`, `response_ids`) and `job_dir/config.json`
  (`ppo_step_times`' other arguments), writes `job_dir/result.json`."""
  with open(os.path.join(job_dir, "config.json")) as f:
    config = json.load(f)
  arrays = np.load(os.path.join(job_dir, "inputs.npz"))
  result = ppo_step_times(query_ids=arrays["query_ids"], response_ids=arrays["response_ids"],
                          **config)
  with open(os.path.join(job_dir, "result.json"), "w") as f:
    json.dump(result, f)


def _self_check() -> None:
  """A tiny random Llama: the first update has ratio 1 (its policy loss is the mean of the
  whitened advantages, 0) and its value loss is ½·mean(A²) (the values are the old ones)."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

  v, n, p, r = 256, 4, 6, 10
  torch.manual_seed(0)
  config = LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=p + r, tie_word_embeddings=False,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
  rng = np.random.default_rng(0)
  queries, responses = rng.integers(3, v, (n, p)), rng.integers(3, v, (n, r))
  with tempfile.TemporaryDirectory() as tmp:
    lm = LlamaForCausalLM(config)
    lm.save_pretrained(os.path.join(tmp, "lm"))
    for name in ("value", "reward"):
      head = LlamaForSequenceClassification(LlamaConfig(**{**config.to_dict(), "num_labels": 1}))
      head.model.load_state_dict(lm.model.state_dict())
      head.save_pretrained(os.path.join(tmp, name))
    out = ppo_step_times(os.path.join(tmp, "lm"), os.path.join(tmp, "value"),
                         os.path.join(tmp, "reward"), queries, responses, kl_coef=0.05,
                         gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
                         learning_rate=1e-4, steps=2, warmup=1)
  m = out["first_metrics"]
  print({k: out[k] for k in ("times", "grad_norm_policy", "grad_norm_value", "gc_collect_s",
                             "trl_version", "threads", "device")}, m)
  adv = np.asarray(out["advantages"])
  assert abs(m["loss/policy_avg"]) < 1e-6, m
  assert abs(m["loss/value_avg"] - 0.5 * np.mean(adv ** 2)) < 1e-5 * max(1.0, np.mean(adv ** 2))
  assert np.allclose(out["old_logps"], out["ref_logps"], atol=1e-5)  # policy = reference


if __name__ == "__main__":
  if len(sys.argv) > 2:
    sys.exit(f"usage: python -m experiments.benchmarks._trl_ppo_peer [JOB_DIR]; got {sys.argv[1:]}")
  if len(sys.argv) == 2:
    run_job(sys.argv[1])
  else:
    _self_check()
