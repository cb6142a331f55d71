"""irl_jax models vs transformers (PyTorch) on the same CPU, same weights, same batch.

    python -m experiments.benchmarks.models            # table
    python -m experiments.benchmarks.models --json     # one JSON object per line
    python -m experiments.benchmarks.models --quick    # tiny shapes, seconds

For a GPT-2-small-shaped random model (12 layers, D = 768, V = 50257) and a
small Llama-shaped one, reports forward tokens/s (one full-sequence pass) and
decode tokens/s (greedy generation with a KV cache, prefill included) of both
implementations and their ratios `forward_speedup_vs_transformers_{gpt2,llama}`
and `decode_speedup_vs_transformers_{gpt2,llama}` (targets ≥ 1.2 and ≥ 1.5).
Weights are created with transformers, saved as safetensors and loaded by
`irl_jax.models.from_pretrained`, so both run identical parameters in float32.
Times are medians over `--repeats` runs after a warm-up (compilation excluded).
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

from experiments.benchmarks.common import JSON, QUICK, REPEATS, run_main
from experiments.host_memory import huge_pages_active
from experiments.study import cpu_model
from irl_jax import models

TARGETS = {"forward": 1.2, "decode": 1.5}


def hf_config(name: str, quick: bool):
  from transformers import GPT2Config, LlamaConfig

  if name == "gpt2":
    if quick:
      return GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    return GPT2Config(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)
  if quick:
    return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
  return LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408,
                     num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4)


def median_time(fn, repeats: int) -> float:
  fn()  # warm-up: compilation / allocator
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_family(name: str, quick: bool, repeats: int) -> list[dict]:
  import torch
  from transformers import AutoModelForCausalLM

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  ref = AutoModelForCausalLM.from_config(hf_config(name, quick)).eval()
  with tempfile.TemporaryDirectory() as tmp:
    ref.save_pretrained(tmp)
    model = models.from_pretrained(tmp)
  vocab = model.config.vocab_size
  batch, length = (2, 32) if quick else (4, 128)
  prompt_len, new_tokens = (8, 8) if quick else (16, 32)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, vocab, (batch, length))
  prompt = rng.integers(0, vocab, (batch, prompt_len))

  forward = jax.jit(lambda m, x: m(x))
  x = jnp.asarray(ids)
  t_jax_fwd = median_time(lambda: forward(model, x).block_until_ready(), repeats)
  tx = torch.tensor(ids)

  def torch_forward():
    with torch.inference_mode():
      ref(tx).logits.sum().item()

  t_torch_fwd = median_time(torch_forward, repeats)

  mask = jnp.ones(prompt.shape, bool)
  key = jax.random.key(0)

  def jax_decode():
    out = models.generate(model, prompt, mask, key, max_new_tokens=new_tokens, temperature=0.0,
                          eos_id=-1)
    out.tokens.block_until_ready()

  tp = torch.tensor(prompt)

  def torch_decode():
    with torch.inference_mode():
      ref.generate(tp, attention_mask=torch.ones_like(tp), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

  t_jax_dec = median_time(jax_decode, repeats)
  t_torch_dec = median_time(torch_decode, repeats)
  ctx = {"model": name, "batch": batch}
  fwd_tokens, dec_tokens = batch * length, batch * new_tokens
  return [
      {"metric": f"forward_tokens_per_s_irl_jax_{name}", "value": fwd_tokens / t_jax_fwd,
       "unit": "tokens/s", "seq_len": length, **ctx},
      {"metric": f"forward_tokens_per_s_transformers_{name}", "value": fwd_tokens / t_torch_fwd,
       "unit": "tokens/s", "seq_len": length, **ctx},
      {"metric": f"forward_speedup_vs_transformers_{name}", "value": t_torch_fwd / t_jax_fwd,
       "unit": "ratio", "target": TARGETS["forward"], **ctx},
      {"metric": f"decode_tokens_per_s_irl_jax_{name}", "value": dec_tokens / t_jax_dec,
       "unit": "tokens/s", "prompt_len": prompt_len, "new_tokens": new_tokens, **ctx},
      {"metric": f"decode_tokens_per_s_transformers_{name}", "value": dec_tokens / t_torch_dec,
       "unit": "tokens/s", "prompt_len": prompt_len, "new_tokens": new_tokens, **ctx},
      {"metric": f"decode_speedup_vs_transformers_{name}", "value": t_torch_dec / t_jax_dec,
       "unit": "ratio", "target": TARGETS["decode"], **ctx},
  ]


def main(argv):
  del argv
  rows = []
  cpu = cpu_model()
  for name in ("gpt2", "llama"):
    for row in bench_family(name, QUICK.value, REPEATS.value or 5):
      row["device"] = jax.devices()[0].platform
      row["cpu"] = cpu
      row["host_huge_pages"] = huge_pages_active()
      rows.append(row)
      if JSON.value:
        print(json.dumps(row), flush=True)
  if not JSON.value:
    print(f"{'metric':48s} {'value':>12s}  unit      target")
    for r in rows:
      target = f">= {r['target']}" if "target" in r else ""
      status = "" if "target" not in r else ("  ok" if r["value"] >= r["target"] else "  MISSED")
      print(f"{r['metric']:48s} {r['value']:12.2f}  {r['unit']:8s}  {target}{status}")


if __name__ == "__main__":
  run_main(main)
