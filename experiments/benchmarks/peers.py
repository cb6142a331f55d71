"""irl_jax's train steps against PyTorch + `transformers` and TRL: same CPU, weights and batch.

    python -m experiments.benchmarks.peers            # table
    python -m experiments.benchmarks.peers --json     # one JSON object per line
    python -m experiments.benchmarks.peers --quick    # tiny shapes, a smoke test
    python -m experiments.benchmarks.peers --peers_skip=trl,models

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
  1.16's default `loss_type="dapo"`), forward, backward, clipping and AdamW.
  Generation, reward scoring and the reference forward pass are not part of
  it: generation speed is a different comparison (`decode_speedup_*` of
  `experiments.benchmarks.models`).
- the forward and decode ratios of `experiments.benchmarks.models`.

Before timing, each pair of sides is checked to compute the same thing on the
first step (loss and gradient norm for MLE; the policy's summed response
log-probs, chosen and rejected, and the gradient norm for DPO; the
Bradley–Terry loss and the gradient norm for the reward model; for GRPO the
loss, which with ratio 1 and KL 0 must also equal `−Σ_i A_i·n_i / Σ_i n_i`
(`n_i` row i's completion length), the mean completion-token log-prob and the
gradient norm) within float32 round-off; a mismatch stops the benchmark. Every
row names the CPU model and both libraries' thread counts. torch, transformers
and TRL are benchmark/test extras, not irl_jax dependencies.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments.benchmarks import models as models_bench
from experiments.benchmarks.common import JSON, QUICK, REPEATS
from experiments.benchmarks.train import FULL, SMALL, measured_matmul_flops, model_flops_per_token
from experiments.study import cpu_model
from irl_jax import models
from irl_jax.losses import grpo_advantages
from irl_jax.train import objectives, optim, registry
from irl_jax.train.lm import lm_stats, lm_targets, sequence_log_probs
from irl_jax.train.state import init_train_state, split_model
from irl_jax.train.step import make_train_step

SKIP = flags.DEFINE_list("peers_skip", [], "Parts to skip: any of torch, trl, models.")
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
TARGETS = {"train_step_speedup_vs_torch": 1.0, "iq_learn_over_mle_step_time": 1.05,
           "mfu_vs_measured_matmul": 0.6, "dpo_step_speedup_vs_trl": 1.5,
           "reward_model_step_speedup_vs_trl": 1.5, "grpo_step_speedup_vs_trl": 1.5}
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
          "V": cfg["vocab"], "tokens": cfg["batch"] * cfg["seq"]}


def bench_torch(cfg, model_dir, data, jax_side, repeats, threads) -> list[dict]:
  torch_step = torch_mle_side(model_dir, data, threads)
  loss, norm = torch_step()  # first step: parity; then warm-up
  first = jax_side.first["mle"]
  rel_loss = check_parity("MLE first-step loss", first["train/loss"], loss)
  rel_norm = check_parity("MLE first-step gradient norm", first["train/grad_norm"], norm,
                          GRAD_NORM_RTOL)
  torch_step()
  times = {"torch_mle": [], "mle": [], "iq_learn": []}
  for r in range(repeats):
    order = ["torch_mle", "mle", "iq_learn"]
    for name in order if r % 2 == 0 else order[::-1]:
      times[name].append(timed(torch_step) if name == "torch_mle" else jax_side.run(name))
  med = {k: statistics.median(v) for k, v in times.items()}
  tokens = cfg["batch"] * cfg["seq"]
  matmul = measured_matmul_flops(cfg["matmul"], max(repeats, 5))
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
  grpo_objective = registry.get("grpo").build(objectives.GRPOConfig(
      clip_epsilon=GRPO_EPSILON, kl_coef=GRPO_BETA, normaliser="token"))
  policy_side = JaxSide(policy, {"dpo": (dpo_objective, pairs), "grpo": (grpo_objective, grpo)})
  rm = JaxSide(models.from_pretrained(rm_dir),
               {"rm": (registry.get("bradley_terry").build(), pair_batch(data))})
  ours = {"dpo": [], "grpo": [], "rm": []}

  def run_ours(n):
    for _ in range(n):
      ours["dpo"].append(policy_side.run("dpo"))
      ours["grpo"].append(policy_side.run("grpo"))
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
  first_rm = rm.first["rm"]
  rel_rm = check_parity("reward-model first-step loss", first_rm["train/loss"],
                        trl_rm["first_loss"])
  rel_rm_norm = check_parity("reward-model first-step gradient norm", first_rm["train/grad_norm"],
                             trl_rm["first_grad_norm"], GRAD_NORM_RTOL)
  ctx = {**context(cfg, threads), "trl": trl_dpo["trl_version"], "torch": trl_dpo["torch_version"]}
  med = {"dpo": statistics.median(ours["dpo"]), "grpo": statistics.median(ours["grpo"]),
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
       "unit": "ratio", **ctx},
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


def run(cfg: dict, repeats: int, skip=(), with_breakdown: bool = False) -> list[dict]:
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
  if "models" not in skip:
    for name in ("gpt2", "llama"):
      for row in models_bench.bench_family(name, cfg is SMALL, repeats):
        # The machine, not the peers model: these rows carry their own model's shape.
        machine = {k: v for k, v in context(cfg, threads).items()
                   if k in ("cpu", "device", "xla_cpu_devices", "torch_threads", "cpu_count")}
        rows.append({**row, **machine})
  for r in rows:
    if r["metric"] in TARGETS:
      r["target"] = TARGETS[r["metric"]]
  return rows


def main(argv):
  del argv
  bad = set(SKIP.value) - {"torch", "trl", "models"}
  if bad:
    raise app.UsageError(f"--peers_skip: unknown part(s) {sorted(bad)}; use torch, trl, models.")
  if BREAKDOWN.value and "torch" in SKIP.value:
    raise app.UsageError("--peers_breakdown profiles the MLE step against PyTorch's: it needs the "
                         "torch part, which --peers_skip=torch leaves out.")
  rows = run(SMALL if QUICK.value else FULL, REPEATS.value or (3 if QUICK.value else 7),
             SKIP.value, BREAKDOWN.value)
  if JSON.value:
    for r in rows:
      print(json.dumps(r), flush=True)
    return
  print(f"CPU: {cpu_model()}; XLA devices: {len(jax.devices())}; torch threads: "
        f"{rows[0]['torch_threads'] if rows else '-'}")
  print(f"{'metric':52s} {'value':>12s}  unit      target")
  for r in rows:
    target = ""
    if "target" in r:
      upper = r["metric"].endswith("over_mle_step_time")
      ok = r["value"] <= r["target"] if upper else r["value"] >= r["target"]
      target = f"{'<=' if upper else '>='} {r['target']}  {'ok' if ok else 'MISSED'}"
    print(f"{r['metric']:52s} {r['value']:12.4g}  {r['unit']:8s}  {target}")


if __name__ == "__main__":
  app.run(main)
