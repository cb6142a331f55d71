"""Train-step throughput of MLE, offline IQLearn and DPO, and model FLOPs utilisation.

    python -m experiments.benchmarks.train            # table
    python -m experiments.benchmarks.train --json     # one JSON object per line
    python -m experiments.benchmarks.train --quick    # tiny shapes, seconds

One Llama-shaped model (D = 512 by default) and one batch; each objective's
full jit-compiled train step (forward, backward, AdamW update) is timed after
compilation, interleaving the objectives round by round so that machine noise
hits them alike. DPO's batch holds pairs (`[B/2, 2, T]`, same token count) with
reference log-probs precomputed, as the trainer does.

MFU divides the step's model FLOPs (6 × matmul parameters × tokens, plus the
attention score and value products, 12 × layers × T × D × tokens) by this
machine's own measured matmul throughput: a large float32 `jnp.dot` timed in
the same run. Headline metrics: `iq_learn_over_mle_step_time` (target ≤ 1.05)
and `mfu_vs_measured_matmul` (target ≥ 0.6).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.benchmarks.common import JSON, QUICK, REPEATS, run_main
from irl_jax.models import ModelConfig, Transformer
from irl_jax.train import optim, registry
from irl_jax.train.state import init_train_state, split_model
from irl_jax.train.step import make_train_step

FULL = dict(hidden=512, layers=4, heads=8, kv_heads=4, ffn=1536, vocab=8192, batch=8, seq=256,
            matmul=2048)
SMALL = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=512, batch=4, seq=32,
             matmul=256)


def model_flops_per_token(cfg: dict) -> float:
  """Training FLOPs per token: 6 × matmul parameters + attention products."""
  d, f, layers, v = cfg["hidden"], cfg["ffn"], cfg["layers"], cfg["vocab"]
  head_dim = d // cfg["heads"]
  attn_params = d * d * 2 + 2 * d * cfg["kv_heads"] * head_dim  # q, o, k, v
  mlp_params = 3 * d * f
  matmul_params = layers * (attn_params + mlp_params) + d * v  # plus the unembedding
  attention = 12 * layers * cfg["seq"] * d  # QKᵀ and PV, forward and backward
  return 6 * matmul_params + attention


def matmul_timer(n: int):
  """A compiled float32 `[n, n]·[n, n]` `jnp.dot`, warmed up; calling it returns the
  seconds of one product."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()

  def timed() -> float:
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    return time.perf_counter() - start

  return timed


def measured_matmul_flops(n: int, repeats: int) -> float:
  timed = matmul_timer(n)
  return 2 * n**3 / statistics.median([timed() for _ in range(repeats)])


def make_batches(cfg: dict, seed: int = 0):
  rng = np.random.default_rng(seed)
  b, t, v = cfg["batch"], cfg["seq"], cfg["vocab"]
  lm = {"input_ids": rng.integers(1, v, (b, t)).astype(np.int32),
        "segment_ids": np.ones((b, t), np.int32),
        "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
        "loss_mask": np.arange(t)[None] >= t // 4 + np.zeros((b, 1), int)}
  pairs = {k: x.reshape(b // 2, 2, t) for k, x in lm.items()}
  pairs["ref_logps"] = rng.normal(-50, 5, (b // 2, 2)).astype(np.float32)
  pairs["rank_mask"] = np.ones((b // 2, 2), bool)
  return lm, pairs


def run(cfg: dict, repeats: int) -> list[dict]:
  config = ModelConfig(model_type="llama", vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
                       num_layers=cfg["layers"], num_heads=cfg["heads"],
                       num_kv_heads=cfg["kv_heads"], head_dim=cfg["hidden"] // cfg["heads"],
                       intermediate_size=cfg["ffn"], max_position_embeddings=cfg["seq"])
  model_def, params = split_model(Transformer(config, rngs=nnx.Rngs(0)))
  tx, schedule = optim.make_optimizer(learning_rate=1e-4, warmup_steps=10, total_steps=1000)
  lm, pairs = make_batches(cfg)
  # Each objective with the registry's default hyperparameters, on the data it trains on.
  objs = {name: (registry.get(name).build(), pairs if registry.get(name).data == "preferences"
                 else lm) for name in ("mle", "iq_learn", "dpo")}
  steps, states = {}, {}
  for name, (obj, batch) in objs.items():
    steps[name] = jax.jit(make_train_step(model_def, obj, tx, schedule), donate_argnums=0)
    states[name] = init_train_state(params, tx, 0)
    states[name], m = steps[name](states[name], batch)  # compile + warm-up
    jax.block_until_ready(m)
  times = {name: [] for name in objs}
  for r in range(repeats):
    order = list(objs) if r % 2 == 0 else list(reversed(objs))
    for name in order:
      start = time.perf_counter()
      states[name], m = steps[name](states[name], objs[name][1])
      jax.block_until_ready(m)
      times[name].append(time.perf_counter() - start)
  tokens = cfg["batch"] * cfg["seq"]
  med = {k: statistics.median(v) for k, v in times.items()}
  matmul = measured_matmul_flops(cfg["matmul"], max(repeats, 5))
  flops_per_step = model_flops_per_token(cfg) * tokens
  ctx = {"D": cfg["hidden"], "layers": cfg["layers"], "V": cfg["vocab"], "tokens": tokens,
         "device": jax.devices()[0].platform}
  rows = []
  for name in objs:
    rows.append({"metric": f"train_tokens_per_s_{name}", "value": tokens / med[name],
                 "unit": "tokens/s", **ctx})
    rows.append({"metric": f"step_time_{name}", "value": med[name], "unit": "s", **ctx})
  paired = statistics.median(i / m for i, m in zip(times["iq_learn"], times["mle"], strict=True))
  rows.append({"metric": "iq_learn_over_mle_step_time", "value": med["iq_learn"] / med["mle"],
               "unit": "ratio", "paired_median": paired, "target": 1.05, **ctx})
  rows.append({"metric": "measured_matmul_flops", "value": matmul, "unit": "FLOP/s",
               "n": cfg["matmul"], **ctx})
  rows.append({"metric": "model_flops_per_step", "value": flops_per_step, "unit": "FLOP", **ctx})
  rows.append({"metric": "mfu_vs_measured_matmul", "value": flops_per_step / med["mle"] / matmul,
               "unit": "ratio", "objective": "mle", "target": 0.6, **ctx})
  return rows


def main(argv):
  del argv
  rows = run(SMALL if QUICK.value else FULL, REPEATS.value or (3 if QUICK.value else 7))
  if JSON.value:
    for r in rows:
      print(json.dumps(r), flush=True)
    return
  print(f"{'metric':32s} {'value':>14s}  unit       target")
  for r in rows:
    target = ""
    if "target" in r:
      upper = "over" in r["metric"]
      ok = r["value"] <= r["target"] if upper else r["value"] >= r["target"]
      target = f"{'<=' if upper else '>='} {r['target']}  {'ok' if ok else 'MISSED'}"
    print(f"{r['metric']:32s} {r['value']:14.4g}  {r['unit']:9s}  {target}")


if __name__ == "__main__":
  run_main(main)
