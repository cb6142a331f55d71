"""irl_jax's train steps against PyTorch + `transformers` and TRL: same CPU, weights and batch.

    python -m experiments.benchmarks.peers            # table
    python -m experiments.benchmarks.peers --json     # one JSON object per line
    python -m experiments.benchmarks.peers --quick    # tiny shapes, a smoke test
    python -m experiments.benchmarks.peers --peers_skip=trl,models
    python -m experiments.benchmarks.peers --peers_skip=torch,trl,models --trl_ppo_python=PY

One Llama-shaped model (by default D = 512, 4 layers, GQA 8/4, FFN 1536,
V = 8192; batch 8 × 256 tokens, the last three quarters of each row are
targets) is created by `transformers` (`LlamaForCausalLM`, SDPA attention),
saved as safetensors and loaded by `irl_jax.models.from_pretrained`, so both
sides train identical float32 parameters. Each side's full train step is
timed: forward, backward, global-norm clipping at 1.0 and AdamW (β = 0.9,
0.95, ε = 1e-8, no weight decay, constant learning rate).

- `train_step_speedup_vs_torch`: irl_jax's jit-compiled MLE step against a
  plain PyTorch loop (`loss.backward()`, `clip_grad_norm_`,
  `torch.optim.AdamW`), rounds interleaved, medians after warm-up; also
  irl_jax's IQLearn step against the same PyTorch MLE step, and
  `iq_learn_over_mle_step_time` (the cost of the TD term).
- `mfu_vs_measured_matmul`: the MLE step's model FLOPs over this machine's
  measured float32 matmul throughput (see `experiments.benchmarks.train`).
- `dpo_step_speedup_vs_trl`, `reward_model_step_speedup_vs_trl` and
  `grpo_step_speedup_vs_trl`: against TRL's `DPOTrainer` (reference log-probs
  precomputed on both sides), `RewardTrainer` (Bradley–Terry on a
  `LlamaForSequenceClassification`) and `GRPOTrainer`, timed per optimizer
  step by a trainer callback (`experiments/benchmarks/_trl_peer.py`); the
  irl_jax steps are timed before and after TRL's runs. A GRPO step is the
  policy update on a fixed batch of already-generated completions
  (`grpo_batch`: groups of 2 ragged completions with given advantages, old and
  reference log-probs precomputed from the initial model): the clipped
  surrogate with the k3 KL to the reference (β = 0.04, ε = 0.2), token-mean
  normalised (irl_jax's "grpo" objective with `normaliser="token"`, TRL
  1.16's default `loss_type="dapo"`), forward, backward, clipping and AdamW. Both sides
  unembed only the completion positions (TRL's `logits_to_keep`, irl_jax's
  `max_new_tokens` window). irl_jax runs each group's shared prompt once (the "grpo"
  objective's `share_prompts`, on by default) where TRL runs it for every completion;
  `grpo_unshared_step_speedup_vs_trl` times irl_jax with `share_prompts=False`, the
  same work as TRL.
  Generation, reward scoring and the reference forward pass are not part of
  it: generation speed is a different comparison (`decode_speedup_*` of
  `experiments.benchmarks.models`).
- `ppo_step_speedup_vs_trl`: against TRL 0.29.1's `PPOTrainer`
  (`trl.experimental.ppo`; TRL 1.16 has none), run in its own venv as a
  subprocess (`experiments/benchmarks/_trl_ppo_peer.py`, which defines TRL's
  side exactly). The venv's python is `--trl_ppo_python` (or
  `$IRL_JAX_TRL_PPO_PYTHON`), else the one at `--trl_ppo_venv`, made on first
  use with `python -m venv --system-site-packages` and `pip install --no-deps
  trl==0.29.1`; when none can be had (or `run` gets neither) the row is
  reported with value None and the reason under "skipped" (the last command
  above runs this row alone, PY a venv's python with TRL 0.29.1). A PPO step is one
  update minus generation on a fixed batch (`ppo_batch`: B distinct prompts,
  each with one completion filling the response length): on irl_jax's side
  (`PPOSide`) the trainer's `PolicySampler.sample` with generation replaced by
  the batch (reward-model scores, old log-probs and values, reference
  log-probs, KL-shaped rewards with β = 0.05, GAE with γ = 1 and λ = 0.95,
  whitened advantages) and the "ppo" train step (ε = 0.2, value clip 0.2,
  c_V = 0.1, token mean), timed from the end of generation to the ready state;
  one PPO epoch of one minibatch on TRL's side. The work differs and the row's
  `note` says how: TRL's value model is a second backbone (trained too),
  irl_jax's value head sits on the policy's backbone, irl_jax recomputes
  the old log-probs where TRL reads them from the generation's logits, and irl_jax
  unembeds only the response positions (the `max_new_tokens` window) where TRL's
  forward passes compute the logits of every position and slice them;
  `ppo_separate_critic_step_speedup_vs_trl` runs irl_jax's same objective and
  sampler on TRL's two-backbone layout (`SeparateCriticPolicy`). Neither side
  clips gradients (TRL's PPO loop cannot), and TRL whitens the advantages with
  the sample variance, irl_jax with the population variance.
- the forward and decode ratios of `experiments.benchmarks.models`.

Before timing, each pair of sides is checked to compute the same thing on the
first step (loss and gradient norm for MLE; the policy's summed response
log-probs, chosen and rejected, and the gradient norm for DPO; the
Bradley–Terry loss and the gradient norm for the reward model; for GRPO the
loss, which with ratio 1 and KL 0 must also equal `−Σ_i A_i·n_i / Σ_i n_i`
(`n_i` row i's completion length), the mean completion-token log-prob and the
gradient norm; for PPO's first update, at ratio 1, the response tokens' old
and reference log-probs, the values, the scores and GAE's advantages, the
value loss ½·mean(A²), TRL's whitened advantages against irl_jax's times the
whitening factor `sqrt((var_pop + 1e-8)/(var_sample + 1e-8))`, and with the
separate critic the policy's (times that factor) and the critic's gradient
norms) within float32 round-off; a mismatch stops the benchmark. PPO's first
policy losses (minus the mean of whitened advantages: 0 up to round-off) and
irl_jax's shared-backbone gradient norm are reported, not compared. Every
row names the CPU model and both libraries' thread counts. torch, transformers
and TRL are benchmark/test extras, not irl_jax dependencies.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from experiments.benchmarks import models as models_bench
from experiments.benchmarks.common import JSON, QUICK, REPEATS, run_main
from experiments.benchmarks.train import FULL, SMALL, matmul_timer, model_flops_per_token
from experiments.host_memory import huge_pages_active
from experiments.study import cpu_model
from irl_jax import models
from irl_jax.losses import grpo_advantages
from irl_jax.train import objectives, optim, registry, rollouts
from irl_jax.train.lm import lm_stats, lm_targets, sequence_log_probs
from irl_jax.train.state import init_train_state, split_model
from irl_jax.train.step import loss_and_grads, make_train_step

SKIP = flags.DEFINE_list(
    "peers_skip", [], "Parts to skip: any of torch, trl (TRL 1.16's DPO, reward-model and GRPO "
    "steps), trl_ppo (TRL 0.29.1's PPO step, in its own venv), models.")
TRL_PPO_PYTHON = flags.DEFINE_string(
    "trl_ppo_python", None,
    "Python of a virtual environment with TRL 0.29.1 (trl.experimental.ppo) for "
    "ppo_step_speedup_vs_trl; default: $IRL_JAX_TRL_PPO_PYTHON, else the --trl_ppo_venv one.")
TRL_PPO_VENV = flags.DEFINE_string(
    "trl_ppo_venv", os.path.join(os.path.expanduser("~"), ".cache", "irl_jax", "trl_ppo_venv"),
    "Venv for TRL 0.29.1's PPO, created on first use (python -m venv --system-site-packages, "
    "pip install --no-deps trl==0.29.1) when no --trl_ppo_python is given.")
BREAKDOWN = flags.DEFINE_bool(
    "peers_breakdown", False,
    "Also time the MLE step's parts on both sides (forward, forward + loss, loss + gradient, "
    "clipping + AdamW): the profile behind train_step_speedup_vs_torch.")

LEARNING_RATE = 1e-4
CLIP_NORM = 1.0
DPO_BETA = 0.1
# GRPO: KL weight (TRL's `beta`, irl_jax's `kl_coef`), clip ε, completions per prompt.
GRPO_BETA = 0.04
GRPO_EPSILON = 0.2
GRPO_GROUP = 2
# PPO: TRL's PPOConfig defaults (irl_jax's PPOConfig has the same ones): the KL weight in the
# shaped rewards, GAE's γ and λ, the ratio and value clips, the value-loss weight.
PPO_KL_COEF = 0.05
PPO_GAMMA = 1.0
PPO_LAM = 0.95
PPO_CLIP = 0.2
PPO_VALUE_CLIP = 0.2
PPO_VF_COEF = 0.1
# TRL 1.16 has no PPO trainer; 0.29.1's `trl.experimental.ppo` runs in its own venv.
TRL_PPO_VERSION = "0.29.1"
TRL_PPO_PYTHON_ENV = "IRL_JAX_TRL_PPO_PYTHON"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = {"train_step_speedup_vs_torch": 1.0, "iq_learn_over_mle_step_time": 1.05,
           "mfu_vs_measured_matmul": 0.6, "dpo_step_speedup_vs_trl": 1.5,
           "reward_model_step_speedup_vs_trl": 1.5, "grpo_step_speedup_vs_trl": 1.5,
           "ppo_step_speedup_vs_trl": 1.5}
# First-step agreement (relative) between the two sides: float32 round-off over
# different summation orders, not a tolerance for different work. Gradient norms sum
# the squares of every parameter's gradient (about 2e7 of them), hence their looser bound.
PARITY_RTOL = 2e-4
GRAD_NORM_RTOL = 1e-3


def hf_llama_config(cfg: dict):
  from transformers import LlamaConfig

  return LlamaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
                     intermediate_size=cfg["ffn"], num_hidden_layers=cfg["layers"],
                     num_attention_heads=cfg["heads"], num_key_value_heads=cfg["kv_heads"],
                     max_position_embeddings=cfg["seq"], tie_word_embeddings=False,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2,
                     attn_implementation="sdpa", torch_dtype="float32")


def make_data(cfg: dict, seed: int = 0) -> dict:
  """Token ids (never the pad id 0) with a shared prompt per pair of rows.

  Rows `2i` and `2i + 1` share their first `T/4` tokens (the prompt) and
  differ after it, so the same `[B, T]` array is an LM batch and, reshaped to
  `[B/2, 2, T]`, a batch of (chosen, rejected) pairs.
  """
  rng = np.random.default_rng(seed)
  b, t, v = cfg["batch"], cfg["seq"], cfg["vocab"]
  prompt_len = t // 4
  ids = rng.integers(3, v, (b, t)).astype(np.int32)
  ids[1::2, :prompt_len] = ids[0::2, :prompt_len]
  loss_mask = np.broadcast_to(np.arange(t)[None] >= prompt_len, (b, t)).copy()
  return {"ids": ids, "prompt_len": prompt_len, "loss_mask": loss_mask}


def lm_batch(data: dict) -> dict:
  b, t = data["ids"].shape
  return {"input_ids": data["ids"], "segment_ids": np.ones((b, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
          "loss_mask": data["loss_mask"]}


def pair_batch(data: dict) -> dict:
  b, t = data["ids"].shape
  pairs = {k: x.reshape(b // 2, 2, t) for k, x in lm_batch(data).items()}
  pairs["rank_mask"] = np.ones((b // 2, 2), bool)
  return pairs


def grpo_batch(data: dict) -> dict:
  """A fixed GRPO batch of already-generated completions on the benchmark's rows.

  Each pair of rows (one shared prompt, see `make_data`) is a group of `GRPO_GROUP = 2`
  completions. Row `i` keeps the first `n_i = R − ⌊i·R/(2B)⌋` of its `R = T − T/4` response
  tokens and is right-padded with the pad id 0 (`segment_ids` 0): ragged, as sampled
  completions ending at different EOS positions are. Its reward is `n_i` and its advantage
  TRL's group advantage `(r − mean_G r)/(std_G r + 1e-4)` with the sample std
  (`grpo_advantages(..., std_ddof=1, eps=1e-4)`), ±0.707 here. The advantages are
  group-centred, so the lengths must differ within groups for the first-step loss,
  `−Σ_i A_i·n_i / Σ_i n_i` (ratio 1, KL 0, token mean), to be non-zero.

  Returns the `sample_*` keys of the "grpo" objective except `sample_old_logps` and
  `sample_ref_logps` (they need the model), plus `lengths [B]` (host only).
  """
  ids, p = data["ids"], data["prompt_len"]
  b, t = ids.shape
  r = t - p
  lengths = r - (np.arange(b) * r) // (2 * b)
  real = np.arange(t)[None] < p + lengths[:, None]
  rewards = jnp.asarray(lengths, jnp.float32)
  return {"sample_input_ids": np.where(real, ids, 0).astype(np.int32),
          "sample_segment_ids": real.astype(np.int32),
          "sample_positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
          "sample_loss_mask": real & (np.arange(t)[None] >= p),
          "sample_advantages": np.asarray(grpo_advantages(rewards, group_size=GRPO_GROUP,
                                                          std_ddof=1, eps=1e-4), np.float32),
          "lengths": lengths}


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def check_parity(what: str, ours: float, theirs: float, rtol: float = PARITY_RTOL) -> float:
  """Relative difference of the two sides' first-step values; raises above `rtol`."""
  rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
  if not rel <= rtol:
    raise RuntimeError(f"{what}: irl_jax {ours!r} vs peer {theirs!r} (relative difference "
                       f"{rel:.2e} > {rtol:g}): the two sides do not compute the same step.")
  return rel


class JaxSide:
  """irl_jax's jit-compiled train steps on one model, states kept between calls."""

  def __init__(self, model, names_and_batches: dict):
    model_def, params = split_model(model)
    tx, schedule = optim.make_optimizer(learning_rate=LEARNING_RATE, warmup_steps=0,
                                        total_steps=1, decay="constant", clip_norm=CLIP_NORM)
    self.steps, self.states, self.batches, self.first = {}, {}, {}, {}
    for name, (objective, batch) in names_and_batches.items():
      step = jax.jit(make_train_step(model_def, objective, tx, schedule), donate_argnums=0)
      state = init_train_state(params, tx, 0)
      batch = jax.tree.map(jnp.asarray, batch)
      state, metrics = step(state, batch)  # compile; the first step's metrics for parity
      self.first[name] = {k: float(v) for k, v in metrics.items()}
      self.steps[name], self.states[name], self.batches[name] = step, state, batch

  def run(self, name: str) -> float:
    def go():
      self.states[name], metrics = self.steps[name](self.states[name], self.batches[name])
      jax.block_until_ready(metrics)

    return timed(go)


def torch_mle_setup(model_dir: str, data: dict, threads: int):
  """`(model, ids, labels, AdamW)`: transformers' Llama in float32 on the benchmark batch."""
  import torch
  from transformers import LlamaForCausalLM

  torch.set_num_threads(threads)
  model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa",
                                           dtype=torch.float32).train()
  ids = torch.tensor(data["ids"], dtype=torch.long)
  # transformers shifts labels: logits at t predict labels[t + 1], as irl_jax's loss_mask.
  labels = ids.masked_fill(~torch.tensor(data["loss_mask"]), -100)
  opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.0)
  return model, ids, labels, opt


def torch_mle_side(model_dir: str, data: dict, threads: int):
  """A plain PyTorch + transformers MLE step: `step() -> (loss, grad_norm)`."""
  import torch

  model, ids, labels, opt = torch_mle_setup(model_dir, data, threads)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    opt.step()
    return float(loss.detach()), float(norm)

  return step


def breakdown(cfg, model_dir, data, repeats, threads) -> list[dict]:
  """Median times of the MLE step's parts, each compiled (or run) on its own, both sides."""
  import torch

  def med(fn):
    fn()
    fn()
    return statistics.median(timed(fn) for _ in range(repeats))

  out = {}
  model_def, params = split_model(models.from_pretrained(model_dir))
  objective = registry.get("mle").build()
  batch = jax.tree.map(jnp.asarray, lm_batch(data))
  loss_of = lambda p, b: objective(model_def.merge(p), b, None)[0].sum
  forward = jax.jit(lambda p, b: model_def.merge(p)(b["input_ids"], segment_ids=b["segment_ids"],
                                                    positions=b["positions"]))
  out["irl_jax_forward_logits"] = med(lambda: forward(params, batch).block_until_ready())
  loss = jax.jit(loss_of)
  out["irl_jax_forward_loss"] = med(lambda: loss(params, batch).block_until_ready())
  grad = jax.jit(jax.grad(loss_of))
  out["irl_jax_loss_grad"] = med(lambda: jax.block_until_ready(grad(params, batch)))
  tx, _ = optim.make_optimizer(learning_rate=LEARNING_RATE, warmup_steps=0, total_steps=1,
                               decay="constant", clip_norm=CLIP_NORM)
  grads, opt_state = grad(params, batch), tx.init(params)

  def apply(g, o, p):
    updates, o = tx.update(g, o, p)
    return optax.apply_updates(p, updates), o

  update = jax.jit(apply)
  out["irl_jax_clip_adamw"] = med(lambda: jax.block_until_ready(update(grads, opt_state, params)))

  model, ids, labels, opt = torch_mle_setup(model_dir, data, threads)

  def t_forward(with_loss):
    with torch.no_grad():
      out = model(input_ids=ids, labels=labels if with_loss else None)
      (out.loss if with_loss else out.logits.sum()).item()

  out["torch_forward_logits"] = med(lambda: t_forward(False))
  out["torch_forward_loss"] = med(lambda: t_forward(True))

  def t_grad():
    model.zero_grad(set_to_none=False)
    model(input_ids=ids, labels=labels).loss.backward()

  out["torch_loss_grad"] = med(t_grad)

  def t_update():
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    opt.step()

  out["torch_clip_adamw"] = med(t_update)
  ctx = context(cfg, threads)
  return [{"metric": f"breakdown_{k}", "value": v, "unit": "s", **ctx} for k, v in out.items()]


def torch_threads(requested: int) -> int:
  """The thread count torch actually runs with (the requested one if torch is absent)."""
  try:
    import torch
  except ImportError:
    return requested
  return torch.get_num_threads()


def context(cfg: dict, threads: int) -> dict:
  return {"cpu": cpu_model(), "device": jax.devices()[0].platform,
          "xla_cpu_devices": len(jax.devices()), "torch_threads": torch_threads(threads),
          "cpu_count": os.cpu_count(), "D": cfg["hidden"], "layers": cfg["layers"],
          "V": cfg["vocab"], "tokens": cfg["batch"] * cfg["seq"],
          "host_huge_pages": huge_pages_active()}


def bench_torch(cfg, model_dir, data, jax_side, repeats, threads) -> list[dict]:
  torch_step = torch_mle_side(model_dir, data, threads)
  loss, norm = torch_step()  # first step: parity; then warm-up
  first = jax_side.first["mle"]
  rel_loss = check_parity("MLE first-step loss", first["train/loss"], loss)
  rel_norm = check_parity("MLE first-step gradient norm", first["train/grad_norm"], norm,
                          GRAD_NORM_RTOL)
  torch_step()
  times = {"torch_mle": [], "mle": [], "iq_learn": []}
  matmul_times, matmul_timed = [], matmul_timer(cfg["matmul"])
  # Each round starts with PyTorch's step, and irl_jax's two steps take turns right after
  # it, over an even number of rounds: a step that runs right after PyTorch's in the same
  # process can be slower (the caches and the heap hold PyTorch's data), and this way
  # each of the two meets that equally often. The matmul that MFU is measured against is
  # timed in every round too (three products), so it sees the machine the steps see.
  for r in range(repeats + repeats % 2):
    order = ["torch_mle", "mle", "iq_learn"] if r % 2 == 0 else ["torch_mle", "iq_learn", "mle"]
    for name in order:
      times[name].append(timed(torch_step) if name == "torch_mle" else jax_side.run(name))
    matmul_times += [matmul_timed() for _ in range(3)]
  med = {k: statistics.median(v) for k, v in times.items()}
  tokens = cfg["batch"] * cfg["seq"]
  matmul = 2 * cfg["matmul"] ** 3 / statistics.median(matmul_times)
  flops = model_flops_per_token(cfg) * tokens
  ctx = context(cfg, threads)
  rows = [{"metric": f"step_time_{k}", "value": v, "unit": "s", **ctx} for k, v in med.items()]
  rows += [
      {"metric": "first_step_loss_relative_difference_mle", "value": rel_loss, "unit": "ratio",
       "irl_jax": first["train/loss"], "peer": loss, **ctx},
      {"metric": "first_step_grad_norm_relative_difference_mle", "value": rel_norm,
       "unit": "ratio", "irl_jax": first["train/grad_norm"], "peer": norm, **ctx},
      {"metric": "train_step_speedup_vs_torch", "value": med["torch_mle"] / med["mle"],
       "unit": "ratio", "objective": "mle", **ctx},
      {"metric": "iq_learn_step_speedup_vs_torch_mle", "value": med["torch_mle"] / med["iq_learn"],
       "unit": "ratio", **ctx},
      {"metric": "iq_learn_over_mle_step_time", "value": med["iq_learn"] / med["mle"],
       "unit": "ratio", **ctx},
      {"metric": "measured_matmul_flops", "value": matmul, "unit": "FLOP/s", "n": cfg["matmul"],
       **ctx},
      {"metric": "mfu_vs_measured_matmul", "value": flops / med["mle"] / matmul, "unit": "ratio",
       "objective": "mle", **ctx},
      {"metric": "mfu_vs_measured_matmul_torch", "value": flops / med["torch_mle"] / matmul,
       "unit": "ratio", **ctx},
  ]
  return rows


def bench_trl(cfg, model_dir, rm_dir, data, repeats, threads) -> list[dict]:
  from experiments.benchmarks import _trl_peer

  # irl_jax: DPO with reference log-probs from the initial model (as TRL precomputes them);
  # GRPO on a fixed batch of completions whose old (sampling) and reference log-probs are the
  # initial model's, as the sampler would return them right after sampling; and a
  # Bradley–Terry reward model loaded from the same sequence-classification checkpoint.
  policy = models.from_pretrained(model_dir)
  pairs = pair_batch(data)
  ref = jax.jit(lambda m, b: sequence_log_probs(m, b))(policy, jax.tree.map(jnp.asarray, pairs))
  pairs["ref_logps"] = np.asarray(ref, np.float32)
  dpo_objective = registry.get("dpo").build(objectives.DPOConfig(beta=DPO_BETA))
  grpo = grpo_batch(data)
  lengths = grpo.pop("lengths")
  grpo_logps = np.asarray(jax.jit(lambda m, b: lm_stats(
      m, b["sample_input_ids"], b["sample_segment_ids"], b["sample_positions"],
      chunk_size=None).log_probs)(policy, jax.tree.map(jnp.asarray, grpo)), np.float32)
  grpo["sample_old_logps"] = grpo["sample_ref_logps"] = grpo_logps
  # max_new_tokens: the completions' length budget (TRL's max_completion_length), so only the
  # completion positions are unembedded, as TRL's logits_to_keep does. num_samples: the
  # rows are groups of GRPO_GROUP sharing their prompt, which irl_jax runs once per group
  # (share_prompts, its default); "grpo_unshared" runs every row's prompt, as TRL does.
  grpo_objectives = {name: registry.get("grpo").build(objectives.GRPOConfig(
      clip_epsilon=GRPO_EPSILON, kl_coef=GRPO_BETA, normaliser="token",
      max_new_tokens=data["ids"].shape[1] - data["prompt_len"], num_samples=GRPO_GROUP,
      share_prompts=share)) for name, share in (("grpo", True), ("grpo_unshared", False))}
  policy_side = JaxSide(policy, {"dpo": (dpo_objective, pairs),
                                 **{name: (o, grpo) for name, o in grpo_objectives.items()}})
  rm = JaxSide(models.from_pretrained(rm_dir),
               {"rm": (registry.get("bradley_terry").build(), pair_batch(data))})
  ours = {"dpo": [], "grpo": [], "grpo_unshared": [], "rm": []}

  def run_ours(n):
    for _ in range(n):
      ours["dpo"].append(policy_side.run("dpo"))
      ours["grpo"].append(policy_side.run("grpo"))
      ours["grpo_unshared"].append(policy_side.run("grpo_unshared"))
      ours["rm"].append(rm.run("rm"))

  run_ours((repeats + 1) // 2)
  p = data["prompt_len"]
  ids = data["ids"]
  trl_dpo = _trl_peer.dpo_step_times(
      model_dir, ids[0::2, :p], ids[0::2, p:], ids[1::2, p:], beta=DPO_BETA,
      learning_rate=LEARNING_RATE, steps=repeats, threads=threads)
  trl_rm = _trl_peer.reward_step_times(rm_dir, ids[0::2], ids[1::2],
                                       learning_rate=LEARNING_RATE, steps=repeats,
                                       threads=threads)
  completion_mask = grpo["sample_loss_mask"][:, p:]
  trl_grpo = _trl_peer.grpo_step_times(
      model_dir, ids[:, :p], ids[:, p:], completion_mask, grpo["sample_advantages"],
      num_generations=GRPO_GROUP, beta=GRPO_BETA, epsilon=GRPO_EPSILON,
      learning_rate=LEARNING_RATE, steps=repeats, threads=threads)
  run_ours(repeats // 2)
  # DPO's first loss is log 2 on both sides (policy == reference). The policy's summed
  # response log-probs (chosen and rejected) check that both score the same tokens, and
  # the first step's gradient norm that both train the same loss.
  first, metrics = policy_side.first["dpo"], trl_dpo["first_metrics"]
  rel_dpo = check_parity("DPO first-step loss", first["train/loss"], trl_dpo["first_loss"])
  logps_jax = {"chosen": float(np.mean(ref[:, 0])), "rejected": float(np.mean(ref[:, 1]))}
  rel_logps = {side: check_parity(f"DPO first-step {side} log-prob", logps_jax[side],
                                  metrics[f"logps/{side}"]) for side in logps_jax}
  rel_dpo_norm = check_parity("DPO first-step gradient norm", first["train/grad_norm"],
                              trl_dpo["first_grad_norm"], GRAD_NORM_RTOL)
  # GRPO's first step has ratio 1 and KL 0 on both sides (old = reference = policy), so
  # both report −Σ_i A_i·n_i / Σ_i n_i; the mean completion-token log-prob of the initial
  # policy checks that both score the same tokens, the gradient norm that both train the
  # same loss.
  first_grpo = policy_side.first["grpo"]
  # The shared-prompt path ran (its metric is there) on rows that are its groups (0).
  if first_grpo.get("train/prompt_groups_broken") != 0.0:
    raise RuntimeError("GRPO: the shared-prompt path did not run on groups sharing their "
                       "prompt (train/prompt_groups_broken="
                       f"{first_grpo.get('train/prompt_groups_broken', 'absent')}).")
  expected_grpo = float(-np.sum(grpo["sample_advantages"].astype(np.float64) * lengths)
                        / np.sum(lengths))
  check_parity("GRPO first-step loss against −Σ A·n / Σ n", first_grpo["train/loss"],
               expected_grpo)
  rel_grpo = check_parity("GRPO first-step loss", first_grpo["train/loss"],
                          trl_grpo["first_loss"])
  where = np.asarray(lm_targets(grpo["sample_loss_mask"]))
  logp_jax = float(grpo_logps[where].mean())
  logp_trl = float(trl_grpo["completion_logps"][completion_mask].mean())
  rel_grpo_logp = check_parity("GRPO completion-token log-prob", logp_jax, logp_trl)
  rel_grpo_norm = check_parity("GRPO first-step gradient norm", first_grpo["train/grad_norm"],
                               trl_grpo["first_grad_norm"], GRAD_NORM_RTOL)
  first_unshared = policy_side.first["grpo_unshared"]
  check_parity("GRPO (prompts unshared) first-step loss", first_unshared["train/loss"],
               trl_grpo["first_loss"])
  check_parity("GRPO (prompts unshared) first-step gradient norm",
               first_unshared["train/grad_norm"], trl_grpo["first_grad_norm"], GRAD_NORM_RTOL)
  first_rm = rm.first["rm"]
  rel_rm = check_parity("reward-model first-step loss", first_rm["train/loss"],
                        trl_rm["first_loss"])
  rel_rm_norm = check_parity("reward-model first-step gradient norm", first_rm["train/grad_norm"],
                             trl_rm["first_grad_norm"], GRAD_NORM_RTOL)
  ctx = {**context(cfg, threads), "trl": trl_dpo["trl_version"], "torch": trl_dpo["torch_version"]}
  med = {"dpo": statistics.median(ours["dpo"]), "grpo": statistics.median(ours["grpo"]),
         "grpo_unshared": statistics.median(ours["grpo_unshared"]),
         "rm": statistics.median(ours["rm"]),
         "trl_dpo": statistics.median(trl_dpo["times"]),
         "trl_grpo": statistics.median(trl_grpo["times"]),
         "trl_rm": statistics.median(trl_rm["times"])}
  rows = [{"metric": f"step_time_{k}", "value": v, "unit": "s", **ctx} for k, v in med.items()]
  rows += [
      {"metric": "first_step_loss_relative_difference_dpo", "value": rel_dpo, "unit": "ratio",
       **ctx},
      *({"metric": f"first_step_{side}_logp_relative_difference_dpo", "value": rel,
         "unit": "ratio", "irl_jax": logps_jax[side], "peer": metrics[f"logps/{side}"], **ctx}
        for side, rel in rel_logps.items()),
      {"metric": "first_step_grad_norm_relative_difference_dpo", "value": rel_dpo_norm,
       "unit": "ratio", "irl_jax": first["train/grad_norm"], "peer": trl_dpo["first_grad_norm"],
       **ctx},
      {"metric": "first_step_loss_relative_difference_grpo", "value": rel_grpo,
       "unit": "ratio", "irl_jax": first_grpo["train/loss"], "peer": trl_grpo["first_loss"],
       "expected": expected_grpo, **ctx},
      {"metric": "first_step_logp_relative_difference_grpo", "value": rel_grpo_logp,
       "unit": "ratio", "irl_jax": logp_jax, "peer": logp_trl, **ctx},
      {"metric": "first_step_grad_norm_relative_difference_grpo", "value": rel_grpo_norm,
       "unit": "ratio", "irl_jax": first_grpo["train/grad_norm"],
       "peer": trl_grpo["first_grad_norm"], **ctx},
      {"metric": "first_step_grad_norm_relative_difference_reward_model", "value": rel_rm_norm,
       "unit": "ratio", "irl_jax": first_rm["train/grad_norm"],
       "peer": trl_rm["first_grad_norm"], **ctx},
      {"metric": "first_step_loss_relative_difference_reward_model", "value": rel_rm,
       "unit": "ratio", "irl_jax": first_rm["train/loss"], "peer": trl_rm["first_loss"],
       **ctx},
      {"metric": "dpo_step_speedup_vs_trl", "value": med["trl_dpo"] / med["dpo"],
       "unit": "ratio", **ctx},
      {"metric": "reward_model_step_speedup_vs_trl", "value": med["trl_rm"] / med["rm"],
       "unit": "ratio", **ctx},
      {"metric": "grpo_step_speedup_vs_trl", "value": med["trl_grpo"] / med["grpo"],
       "unit": "ratio", "note": "irl_jax runs each group's shared prompt once "
       "(share_prompts); TRL runs it for every completion", **ctx},
      {"metric": "grpo_unshared_step_speedup_vs_trl",
       "value": med["trl_grpo"] / med["grpo_unshared"], "unit": "ratio",
       "note": "share_prompts=False: every row's prompt runs, the same work as TRL", **ctx},
  ]
  return rows


# -- PPO against TRL 0.29.1's PPOTrainer (its own venv) ---------------------------------------


def ppo_batch(cfg: dict, seed: int = 1) -> dict:
  """A fixed PPO batch of already-generated completions: `B` distinct prompts of `P = T/4`
  tokens, each with one completion of `R = T − P` tokens that fills the response length (as
  when sampling stops at `max_new_tokens`), ids never the pad id 0 (nor BOS 1 or EOS 2).

  Completions that fill the response length are the case where TRL's episode ends where
  irl_jax's does (on padded ones TRL pays the score one position after the last response
  token and fits one more value; see `experiments/benchmarks/_trl_ppo_peer.py`), so the two
  sides' first updates can be compared value for value. Distinct prompts let TRL's shuffled
  rollout batch be matched to the completions row by row.

  Returns `make_data`'s keys (`ids [B, T]`, `prompt_len`, `loss_mask`), so `lm_batch` makes
  the data batch whose prompts the sampler reads.
  """
  rng = np.random.default_rng(seed)
  b, t, v = cfg["batch"], cfg["seq"], cfg["vocab"]
  prompt_len = t // 4
  ids = rng.integers(3, v, (b, t)).astype(np.int32)
  if len({row.tobytes() for row in ids[:, :prompt_len]}) != b:
    raise ValueError(f"seed {seed} draws two equal prompts; pick another")
  loss_mask = np.broadcast_to(np.arange(t)[None] >= prompt_len, (b, t)).copy()
  return {"ids": ids, "prompt_len": prompt_len, "loss_mask": loss_mask}


def save_value_checkpoint(cfg: dict, tmp: str, model_dir: str) -> str:
  """A `LlamaForSequenceClassification` (one label) on the policy's backbone with its own
  random `score` head: the initial value model (TRL's separate one, irl_jax's value head)."""
  import torch
  from transformers import LlamaForCausalLM, LlamaForSequenceClassification

  lm = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
  config = hf_llama_config(cfg)
  config.num_labels = 1
  torch.manual_seed(1)
  value = LlamaForSequenceClassification(config)
  value.model.load_state_dict(lm.model.state_dict())
  value_dir = os.path.join(tmp, "value")
  value.save_pretrained(value_dir)
  return value_dir


class SeparateCriticPolicy(models.PolicyValueModel):
  """TRL's actor-critic layout behind irl_jax's `PolicyValueModel` interface: the values come
  from a second backbone (a `RewardModel`'s backbone with its `score` head applied at every
  position, as TRL's `PolicyAndValueWrapper` runs its value model), not from a head on the
  policy's backbone. The registered "ppo" objective and `PolicySampler` run it unchanged;
  the benchmark uses it for the same-work comparison with TRL only.
  """

  def __init__(self, policy: models.Transformer, critic: models.RewardModel):
    self.policy = policy
    self.critic = critic

  def values(self, hidden):
    raise NotImplementedError("SeparateCriticPolicy's values come from the critic's backbone")

  def __call__(self, input_ids, *, attention_mask=None, positions=None, segment_ids=None,
               return_hidden: bool = False):
    kwargs = dict(attention_mask=attention_mask, positions=positions, segment_ids=segment_ids,
                  return_hidden=True)
    h = self.policy(input_ids, **kwargs)
    values = self.critic.score(self.critic.backbone(input_ids, **kwargs))[..., 0]
    return (h if return_hidden else self.policy.logits(h)), values.astype(jnp.float32)


def ppo_models(model_dir: str, value_dir: str, *, separate_critic: bool):
  """The policy with its initial value function, as both sides start: `PolicyValueModel`
  (the value checkpoint's `score` as the head on the policy's backbone, bias 0: the value
  checkpoint's backbone is the policy's, so the initial values are TRL's) or
  `SeparateCriticPolicy` (the value checkpoint as a second backbone)."""
  policy = models.from_pretrained(model_dir)
  value = models.from_pretrained(value_dir)
  if separate_critic:
    return SeparateCriticPolicy(policy, value)
  model = models.PolicyValueModel(policy, rngs=nnx.Rngs(0))
  model.value_head.kernel.set_value(value.score.kernel.get_value())
  model.value_head.bias.set_value(jnp.zeros_like(model.value_head.bias.get_value()))
  return model


class PPOSide:
  """irl_jax's PPO update on the fixed batch, as its trainer runs one minus generation.

  An update is `PolicySampler.sample` (the trainer's host-side sampler for "ppo", built as
  `irl_jax.train.loop.build_preparer` builds it) with its `generate` replaced by the batch's
  completions, then the jit-compiled train step of the registered "ppo" objective. The clock
  starts when the replacement returns (generation is not part of the step) and stops once the
  new state and metrics are ready (`block_until_ready`: JAX dispatch is asynchronous), so it
  covers the sampler's scoring (the reward model on the completions, the old log-probs and
  values in one forward pass, the reference log-probs, KL-shaped rewards, GAE, whitening,
  and its host statistics) and the update (forward, backward, AdamW).

  The optimizer does not clip gradients: TRL's PPO loop cannot (see `_trl_ppo_peer.py`).
  The first update compiles; its samples, metrics and (for `SeparateCriticPolicy`) the
  gradient norms of the policy's and the critic's parameters are kept in `first`.
  """

  def __init__(self, model, reward_model: models.RewardModel, data: dict):
    ids, p = data["ids"], data["prompt_len"]
    n, t = ids.shape
    self.prompt_len, self.response_len = p, t - p
    self.hp = objectives.PPOConfig(
        clip_epsilon=PPO_CLIP, value_clip=PPO_VALUE_CLIP, vf_coef=PPO_VF_COEF,
        kl_coef=PPO_KL_COEF, gamma=PPO_GAMMA, lam=PPO_LAM, whiten_advantages=True,
        normaliser="token", max_new_tokens=t - p, temperature=1.0, num_samples=1)
    model_def, params = split_model(model)
    tx, schedule = optim.make_optimizer(learning_rate=LEARNING_RATE, warmup_steps=0,
                                        total_steps=1, decay="constant", clip_norm=None)
    objective = registry.get("ppo").build(self.hp)
    self.step = jax.jit(make_train_step(model_def, objective, tx, schedule), donate_argnums=0)
    self.state = init_train_state(params, tx, 0)
    rm_def, rm_params = split_model(reward_model)
    score = jax.jit(lambda p_, ids_, mask: rm_def.merge(p_)(ids_, attention_mask=mask))

    def reward_fn(prompt_ids, response_ids, response_mask, *, prompt_mask):
      return np.asarray(score(rm_params, np.concatenate([prompt_ids, response_ids], axis=1),
                              np.concatenate([prompt_mask, response_mask], axis=1)))

    hp = self.hp
    self.sampler = rollouts.PolicySampler(
        model_def, max_new_tokens=hp.max_new_tokens, temperature=hp.temperature,
        num_samples=hp.num_samples, eos_id=2, pad_id=0, reward_fn=reward_fn,
        ref_params=jax.tree.map(jnp.copy, params), chunk_size=None, seed=0,
        value_targets=rollouts.ValueTargets(kl_coef=hp.kl_coef, gamma=hp.gamma, lam=hp.lam,
                                            whiten_advantages=hp.whiten_advantages))
    self.batch = lm_batch(data)
    policy = rollouts.policy_of(model)
    b = jax.tree.map(jnp.asarray, self.batch)
    logps = jax.jit(lambda m, x: lm_stats(m, x["input_ids"], x["segment_ids"], x["positions"],
                                          chunk_size=None).log_probs)(policy, b)
    # What `generate` returns for these completions (the log-probs only feed the sampler's
    # entropy statistic).
    self.generated = models.SampleOutput(
        tokens=jnp.asarray(ids[:, p:]), response_mask=jnp.ones((n, t - p), bool),
        log_probs=logps[:, p - 1:t - 1], terminal=jnp.zeros((n,), bool),
        prompt_ids=jnp.asarray(ids[:, :p]), prompt_mask=jnp.ones((n, p), bool))
    self.updates = 0
    first_grads = None
    if isinstance(model, SeparateCriticPolicy):
      grads_of = jax.jit(lambda params, batch: loss_and_grads(
          model_def, objective, params, batch, jax.random.key(0))[1])

      def first_grads(params, batch):
        grads = grads_of(params, jax.tree.map(jnp.asarray, batch))
        return {"grad_norm_policy": float(optax.tree.norm(grads["policy"])),
                "grad_norm_critic": float(optax.tree.norm(grads["critic"]))}

    self.first = {}
    self.update(first_grads)  # compiles; the first update's samples and metrics for parity

  def _generate(self, model, prompt_ids, prompt_mask, key, **kwargs):
    p = self.prompt_len
    if not (np.array_equal(np.asarray(prompt_ids)[:, :p], self.generated.prompt_ids)
            and np.asarray(prompt_mask)[:, :p].all() and not np.asarray(prompt_mask)[:, p:].any()
            and kwargs["max_new_tokens"] == self.response_len and kwargs["num_samples"] == 1):
      raise RuntimeError("PolicySampler asked for other prompts or lengths than the batch's")
    self._generated_at = time.perf_counter()
    return self.generated

  def update(self, first_grads=None) -> float:
    """One update; returns its seconds after generation."""
    with mock.patch.object(rollouts, "generate", self._generate):
      batch, _ = self.sampler.sample(self.batch, self.state.params, step=self.updates)
      if first_grads is not None:
        self.first.update(first_grads(self.state.params, batch))
      self.state, metrics = self.step(self.state, batch)
      jax.block_until_ready((self.state, metrics))
    elapsed = time.perf_counter() - self._generated_at
    if self.updates == 0:
      self.first.update(sample=batch, metrics={k: float(v) for k, v in metrics.items()})
    self.updates += 1
    return elapsed


def ppo_first_update(side: PPOSide) -> dict:
  """What irl_jax's first PPO update used, on the response tokens `[N, R]` (TRL's layout):
  the old and reference log-probs, old values, rewards, GAE's advantages before whitening
  (returns − values) and after."""
  s, p, r = side.first["sample"], side.prompt_len, side.response_len
  resp = lambda k: np.asarray(s[k], np.float64)[:, p - 1:p - 1 + r]
  return {"old_logps": resp("sample_old_logps"), "ref_logps": resp("sample_ref_logps"),
          "values": resp("sample_old_values"), "scores": np.asarray(s["sample_rewards"],
                                                                     np.float64),
          "advantages": resp("sample_returns") - resp("sample_old_values"),
          "whitened_advantages": resp("sample_advantages")}


def check_parity_array(what: str, ours, theirs, rtol: float = PARITY_RTOL) -> float:
  """Elementwise agreement of two sides' arrays: `max |ours − theirs| / max |theirs|`;
  raises above `rtol` (or on different shapes)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    raise RuntimeError(f"{what}: irl_jax has shape {ours.shape}, the peer {theirs.shape}")
  rel = float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(theirs))), 1e-12))
  if not rel <= rtol:
    raise RuntimeError(f"{what}: max |irl_jax − peer| is {rel:.2e} of max |peer| (> {rtol:g}): "
                       "the two sides do not compute the same step.")
  return rel


def whitening_scale_ratio(advantages, ddof_ours: int = 0, ddof_theirs: int = 1,
                          eps: float = 1e-8) -> float:
  """`Â_theirs / Â_ours` for whitening the same advantages with different variance ddofs:
  `sqrt((var_ours + eps) / (var_theirs + eps))` (irl_jax's `whiten`, TRL's `masked_whiten`)."""
  a = np.asarray(advantages, np.float64).ravel()
  centred_sq = np.sum(np.square(a - a.mean()))
  var = lambda ddof: centred_sq / (a.size - ddof)
  return float(np.sqrt((var(ddof_ours) + eps) / (var(ddof_theirs) + eps)))


class TrlPPOUnavailable(RuntimeError):
  """TRL's PPO cannot run: no interpreter given, the venv cannot be made, or no import."""


def trl_ppo_probe(python: str) -> str:
  """TRL's version in `python` if `trl.experimental.ppo` imports there, else TrlPPOUnavailable."""
  if not (os.path.isfile(python) and os.access(python, os.X_OK)):
    raise TrlPPOUnavailable(f"{python} is not an executable file")
  code = ("import trl; from trl.experimental.ppo import PPOConfig, PPOTrainer; "
          "print(trl.__version__)")
  try:
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=tempfile.gettempdir(),
                         env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
  except (OSError, subprocess.TimeoutExpired) as e:
    raise TrlPPOUnavailable(f"{python} could not be run: {e}") from e
  if out.returncode != 0:
    raise TrlPPOUnavailable(f"{python} cannot import trl.experimental.ppo (TRL "
                            f"{TRL_PPO_VERSION} has it): {out.stderr.strip()[-500:]}")
  return out.stdout.strip().splitlines()[-1]


def create_trl_ppo_venv(venv: str) -> str:
  """`python -m venv --system-site-packages VENV` and `pip install --no-deps trl==0.29.1`
  (this environment's torch, transformers, accelerate and datasets; TRL 0.29.1 in front of
  its TRL); returns the venv's python."""
  print(f"[peers] creating a venv with TRL {TRL_PPO_VERSION} for PPO at {venv} (pip downloads "
        "TRL's wheel, once)", file=sys.stderr, flush=True)
  python = os.path.join(venv, "bin", "python")
  for cmd in ([sys.executable, "-m", "venv", "--system-site-packages", venv],
              [python, "-m", "pip", "install", "--no-deps", f"trl=={TRL_PPO_VERSION}"]):
    try:
      out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise TrlPPOUnavailable(f"creating the TRL {TRL_PPO_VERSION} venv failed at "
                              f"`{' '.join(cmd)}`: {e}") from e
    if out.returncode != 0:
      raise TrlPPOUnavailable(f"creating the TRL {TRL_PPO_VERSION} venv failed at "
                              f"`{' '.join(cmd)}` (exit {out.returncode}): "
                              f"{(out.stdout + out.stderr).strip()[-1000:]}")
  return python


def resolve_trl_ppo_python(python: str | None, venv: str | None) -> tuple[str, str]:
  """`(python, TRL version)` for TRL's PPO: `python` if given, else `venv`'s (created if it
  does not import `trl.experimental.ppo` yet); TrlPPOUnavailable when neither works."""
  if python:
    return python, trl_ppo_probe(python)
  if not venv:
    raise TrlPPOUnavailable(
        f"no Python with TRL {TRL_PPO_VERSION} given: pass --trl_ppo_python (or set "
        f"${TRL_PPO_PYTHON_ENV}) to a venv made with `python -m venv --system-site-packages DIR "
        f"&& DIR/bin/pip install --no-deps trl=={TRL_PPO_VERSION}`, or --trl_ppo_venv=DIR to "
        "let the benchmark make it (run(..., trl_ppo_python=..., trl_ppo_venv=...))")
  venv_python = os.path.join(venv, "bin", "python")
  if os.path.isfile(venv_python):
    try:
      return venv_python, trl_ppo_probe(venv_python)
    except TrlPPOUnavailable:
      pass
  venv_python = create_trl_ppo_venv(venv)
  return venv_python, trl_ppo_probe(venv_python)


def trl_ppo_step_times(python: str, job_dir: str, model_dir: str, value_dir: str, rm_dir: str,
                       data: dict, repeats: int, threads: int) -> dict:
  """Runs `_trl_ppo_peer.ppo_step_times` in `python` (a subprocess from the repository root)
  on the batch's prompts and completions; returns its result."""
  ids, p = data["ids"], data["prompt_len"]
  np.savez(os.path.join(job_dir, "inputs.npz"), query_ids=ids[:, :p], response_ids=ids[:, p:])
  config = dict(model_dir=model_dir, value_dir=value_dir, reward_dir=rm_dir,
                kl_coef=PPO_KL_COEF, gamma=PPO_GAMMA, lam=PPO_LAM, cliprange=PPO_CLIP,
                cliprange_value=PPO_VALUE_CLIP, vf_coef=PPO_VF_COEF,
                learning_rate=LEARNING_RATE, steps=repeats, warmup=2, threads=threads)
  with open(os.path.join(job_dir, "config.json"), "w") as f:
    json.dump(config, f)
  path = os.environ.get("PYTHONPATH")
  env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1",
         "PYTHONPATH": REPO_ROOT + (os.pathsep + path if path else "")}
  out = subprocess.run([python, "-m", "experiments.benchmarks._trl_ppo_peer", job_dir],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True)
  if out.returncode != 0:
    raise RuntimeError(f"TRL's PPO run failed (exit {out.returncode}):\n"
                       f"{(out.stdout + out.stderr)[-3000:]}")
  with open(os.path.join(job_dir, "result.json")) as f:
    return json.load(f)


PPO_NOTE = (
    "A PPO step is one update minus generation on a fixed batch of completions that fill the "
    "response length: TRL 0.29.1's PPOTrainer update (after its generation returns: reference, "
    "value-model and reward-model forward passes, KL-shaped rewards, GAE, whitening, one "
    "policy+value-model update, metrics) against irl_jax's PolicySampler scoring without "
    "generation plus its 'ppo' train step. The work differs: TRL's value model is a separate "
    "backbone (two backbones forward and backward per update), irl_jax's PolicyValueModel a "
    "head on the policy's backbone (one), and irl_jax recomputes the old log-probs in its "
    "policy-and-value forward pass where TRL reads them from the generation's logits: about 9 "
    "forward-pass equivalents for TRL against 6 for irl_jax (forward 1, forward+backward 3); "
    "irl_jax also unembeds only the response positions (its max_new_tokens window) where "
    "TRL's forward passes unembed every position and slice the logits. "
    "ppo_separate_critic_step_speedup_vs_trl runs irl_jax's same objective and sampler with a "
    "separate critic backbone (TRL's work plus that policy forward, about 10). Neither side "
    "clips gradients (TRL's PPO loop never does). TRL whitens the advantages with the sample "
    "variance, irl_jax with the population variance (a factor sqrt((n-1)/n) on TRL's).")


def bench_trl_ppo(cfg, model_dir, rm_dir, tmp, repeats, threads, python=None,
                  venv=None) -> list[dict]:
  """`ppo_step_speedup_vs_trl` (and its same-work companion, step times and first-update
  parity), or the row alone with value None and the reason when TRL's PPO cannot run."""
  ctx = context(cfg, threads)
  try:
    python, version = resolve_trl_ppo_python(python, venv)
  except TrlPPOUnavailable as e:
    return [{"metric": "ppo_step_speedup_vs_trl", "value": None, "unit": "ratio",
             "skipped": str(e), "note": PPO_NOTE, **ctx}]
  if version != TRL_PPO_VERSION:
    print(f"[peers] warning: {python} has TRL {version}, not {TRL_PPO_VERSION}; the PPO step "
          "replaces functions of its PPOTrainer module and checks the calls it expects",
          file=sys.stderr)
  data = ppo_batch(cfg)
  value_dir = save_value_checkpoint(cfg, tmp, model_dir)
  reward_model = models.from_pretrained(rm_dir)
  sides = {"ppo": PPOSide(ppo_models(model_dir, value_dir, separate_critic=False),
                          reward_model, data),
           "ppo_separate_critic": PPOSide(ppo_models(model_dir, value_dir, separate_critic=True),
                                          reward_model, data)}
  ours = {name: [] for name in sides}

  def run_ours(n):
    for _ in range(n):
      for name, side in sides.items():
        ours[name].append(side.update())

  run_ours((repeats + 1) // 2)
  job_dir = os.path.join(tmp, "trl_ppo")
  os.makedirs(job_dir, exist_ok=True)
  trl = trl_ppo_step_times(python, job_dir, model_dir, value_dir, rm_dir, data, repeats,
                           threads)
  run_ours(repeats // 2)

  # First update, same inputs: the policy's and the reference's response-token log-probs,
  # the values and the scores, and GAE's advantages must agree (same models and tokens; no
  # padding, so the same rewards and episode ends). At ratio 1 both value losses are
  # ½·mean(A²); both policy losses are the mean of whitened advantages, 0 up to round-off.
  # TRL's whitened advantages (and so its policy gradient) are irl_jax's times
  # sqrt((var_pop + 1e-8) / (var_sample + 1e-8)), `scale` (the separate critic's, last).
  mine = ppo_first_update(sides["ppo"])
  same_first = ppo_first_update(sides["ppo_separate_critic"])
  theirs = {k: np.asarray(trl[k], np.float64) for k in mine}
  if not np.asarray(trl["mask"]).all():
    raise RuntimeError("TRL masked response tokens of completions that fill the length")
  # Elementwise, in the caller's row order; `compared` keeps the means (irl_jax, peer).
  parity, compared = {}, {}
  for variant, d in (("", mine), ("_separate_critic", same_first)):
    scale = whitening_scale_ratio(d["advantages"])
    for k, x in d.items():
      label = k
      if k == "whitened_advantages":  # TRL divides by the sample std: irl_jax's times scale
        label, x = "whitened_advantages_scaled", scale * x
      name = label + variant
      parity[name] = check_parity_array(f"PPO first update {name}", x, theirs[k])
      compared[name] = (float(np.mean(x)), float(np.mean(theirs[k])))
  first, first_same = sides["ppo"].first["metrics"], sides["ppo_separate_critic"].first
  metrics = trl["first_metrics"]
  compared["value_loss"] = (first["train/value_loss"], metrics["loss/value_avg"])
  compared["value_loss_separate_critic"] = (first_same["metrics"]["train/value_loss"],
                                            metrics["loss/value_avg"])
  for name in ("value_loss", "value_loss_separate_critic"):
    parity[name] = check_parity(f"PPO first update {name}", *compared[name])
  grad = {"policy": (scale * first_same["grad_norm_policy"], trl["grad_norm_policy"]),
          "critic": (first_same["grad_norm_critic"], trl["grad_norm_value"])}
  rel_grad = {k: check_parity(f"PPO first-update {k} gradient norm (separate critic)", a, b,
                              GRAD_NORM_RTOL) for k, (a, b) in grad.items()}

  ctx = {**ctx, "trl": trl["trl_version"], "torch": trl["torch_version"],
         "trl_torch_threads": trl["threads"]}
  med = {"ppo": statistics.median(ours["ppo"]),
         "ppo_separate_critic": statistics.median(ours["ppo_separate_critic"]),
         "trl_ppo": statistics.median(trl["times"])}
  summary = {"parity": {**parity,
                        **{f"grad_norm_{k}_separate_critic": v for k, v in rel_grad.items()}},
             "first_policy_loss": {"irl_jax": first["train/policy_loss"],
                                   "irl_jax_separate_critic":
                                       first_same["metrics"]["train/policy_loss"],
                                   "peer": metrics["loss/policy_avg"], "expected": 0.0},
             "first_value_loss": {"irl_jax": first["train/value_loss"],
                                  "peer": metrics["loss/value_avg"]},
             "whitening_scale_trl_over_irl_jax": scale,
             "step_time_irl_jax": med["ppo"], "step_time_trl": med["trl_ppo"],
             "step_time_irl_jax_separate_critic": med["ppo_separate_critic"],
             "trl_gc_collect_s": trl["gc_collect_s"], "note": PPO_NOTE}
  rows = [{"metric": f"step_time_{k}", "value": v, "unit": "s", **ctx} for k, v in med.items()]
  rows += [{"metric": f"first_update_{k}_relative_difference_ppo", "value": parity[k],
            "unit": "ratio", "irl_jax": a, "peer": b, **ctx} for k, (a, b) in compared.items()]
  rows += [{"metric": f"first_update_{k}_grad_norm_relative_difference_ppo_separate_critic",
            "value": rel_grad[k], "unit": "ratio", "irl_jax_scaled": a, "peer": b, **ctx}
           for k, (a, b) in grad.items()]
  rows += [
      {"metric": "first_update_policy_loss_ppo", "value": first["train/policy_loss"],
       "unit": "loss", "peer": metrics["loss/policy_avg"], "expected": 0.0,
       "why": "ratio 1 on the first update: the policy loss is minus the mean of whitened "
              "advantages, 0 up to round-off on both sides", **ctx},
      {"metric": "first_update_grad_norm_ppo", "value": first["train/grad_norm"],
       "unit": "norm", "peer": None,
       "why": "irl_jax's shared backbone gets both losses' gradients; TRL's two backbones "
              "each get one (compared in the separate-critic rows)", **ctx},
      {"metric": "ppo_step_speedup_vs_trl", "value": med["trl_ppo"] / med["ppo"],
       "unit": "ratio", **summary, **ctx},
      {"metric": "ppo_separate_critic_step_speedup_vs_trl",
       "value": med["trl_ppo"] / med["ppo_separate_critic"], "unit": "ratio",
       "note": "irl_jax's 'ppo' objective and PolicySampler on TRL's layout (SeparateCriticPolicy: "
               "a second backbone for the values): TRL's update work plus one policy forward "
               "pass for the old log-probs, which TRL takes from its generation.", **ctx},
  ]
  return rows


def save_checkpoints(cfg: dict, tmp: str) -> tuple[str, str]:
  """A random `LlamaForCausalLM` and a `LlamaForSequenceClassification` on the same backbone."""
  import torch
  from transformers import LlamaForCausalLM, LlamaForSequenceClassification

  torch.manual_seed(0)
  hf_config = hf_llama_config(cfg)
  lm = LlamaForCausalLM(hf_config)
  model_dir, rm_dir = os.path.join(tmp, "lm"), os.path.join(tmp, "rm")
  lm.save_pretrained(model_dir)
  rm_config = hf_llama_config(cfg)
  rm_config.num_labels = 1
  rm = LlamaForSequenceClassification(rm_config)
  rm.model.load_state_dict(lm.model.state_dict())
  rm.save_pretrained(rm_dir)
  return model_dir, rm_dir


def run(cfg: dict, repeats: int, skip=(), with_breakdown: bool = False, *,
        trl_ppo_python: str | None = None, trl_ppo_venv: str | None = None) -> list[dict]:
  """Every row. `trl_ppo_python` (a venv's python with TRL 0.29.1) or `trl_ppo_venv` (a venv
  made there if needed) runs TRL's PPO; with neither, `ppo_step_speedup_vs_trl` is reported
  skipped (value None, the reason under "skipped")."""
  threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    model_dir, rm_dir = save_checkpoints(cfg, tmp)
    data = make_data(cfg)
    if "torch" not in skip:
      side = JaxSide(models.from_pretrained(model_dir),
                     {"mle": (registry.get("mle").build(), lm_batch(data)),
                      "iq_learn": (registry.get("iq_learn").build(), lm_batch(data))})
      rows += bench_torch(cfg, model_dir, data, side, repeats, threads)
      del side
      if with_breakdown:
        rows += breakdown(cfg, model_dir, data, repeats, threads)
    if "trl" not in skip:
      rows += bench_trl(cfg, model_dir, rm_dir, data, repeats, threads)
    if "trl_ppo" not in skip:
      rows += bench_trl_ppo(cfg, model_dir, rm_dir, tmp, repeats, threads, trl_ppo_python,
                            trl_ppo_venv)
  if "models" not in skip:
    for name in ("gpt2", "llama"):
      for row in models_bench.bench_family(name, cfg is SMALL, repeats):
        # The machine, not the peers model: these rows carry their own model's shape.
        machine = {k: v for k, v in context(cfg, threads).items()
                   if k in ("cpu", "device", "xla_cpu_devices", "torch_threads", "cpu_count",
                            "host_huge_pages")}
        rows.append({**row, **machine})
  for r in rows:
    if r["metric"] in TARGETS:
      r["target"] = TARGETS[r["metric"]]
  return rows


def main(argv):
  del argv
  bad = set(SKIP.value) - {"torch", "trl", "trl_ppo", "models"}
  if bad:
    raise app.UsageError(f"--peers_skip: unknown part(s) {sorted(bad)}; use torch, trl, trl_ppo, "
                         "models.")
  if BREAKDOWN.value and "torch" in SKIP.value:
    raise app.UsageError("--peers_breakdown profiles the MLE step against PyTorch's: it needs the "
                         "torch part, which --peers_skip=torch leaves out.")
  rows = run(SMALL if QUICK.value else FULL, REPEATS.value or (3 if QUICK.value else 7),
             SKIP.value, BREAKDOWN.value,
             trl_ppo_python=TRL_PPO_PYTHON.value or os.environ.get(TRL_PPO_PYTHON_ENV) or None,
             trl_ppo_venv=TRL_PPO_VENV.value)
  if JSON.value:
    for r in rows:
      print(json.dumps(r), flush=True)
    return
  print(f"CPU: {cpu_model()}; XLA devices: {len(jax.devices())}; torch threads: "
        f"{rows[0]['torch_threads'] if rows else '-'}")
  print(f"{'metric':52s} {'value':>12s}  unit      target")
  for r in rows:
    if r["value"] is None:
      print(f"{r['metric']:52s} {'skipped':>12s}  {r['unit']:8s}  {r.get('skipped', '')}")
      continue
    target = ""
    if "target" in r:
      upper = r["metric"].endswith("over_mle_step_time")
      ok = r["value"] <= r["target"] if upper else r["value"] >= r["target"]
      target = f"{'<=' if upper else '>='} {r['target']}  {'ok' if ok else 'MISSED'}"
    print(f"{r['metric']:52s} {r['value']:12.4g}  {r['unit']:8s}  {target}")


if __name__ == "__main__":
  run_main(main)
