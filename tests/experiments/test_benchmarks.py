"""The benchmarks run end to end at tiny sizes and report every metric.

Only completeness and sanity are asserted here; the speed and memory targets
are read from the full-size benchmark output, never from a timed test.
"""

import math

from experiments.benchmarks import losses as losses_bench
from experiments.benchmarks import models as models_bench


def test_losses_benchmark_quick_reports_every_metric():
  records = losses_bench.run_benchmarks(losses_bench.QUICK)
  names = {r["metric"] for r in records}
  for name in ("chunked_over_dense_temp_memory_v8192", "iq_learn_over_mle_time_dense",
               "iq_learn_over_mle_time_chunked", "chunked_over_dense_time_iq_learn",
               "temp_memory_dense", "temp_memory_chunked"):
    assert name in names, name
  for r in records:
    assert {"metric", "value", "unit"} <= set(r) and math.isfinite(r["value"]) and r["value"] > 0
  # The chunked path never holds [N, V] logits, so it must need less scratch memory.
  dense = [r["value"] for r in records if r["metric"] == "temp_memory_dense"]
  chunked = [r["value"] for r in records if r["metric"] == "temp_memory_chunked"]
  assert all(c < d for c, d in zip(chunked, dense, strict=True))
  assert "chunked_over_dense" in losses_bench.format_table(records)


def test_models_benchmark_quick_reports_every_metric():
  rows = models_bench.bench_family("llama", quick=True, repeats=1)
  names = {r["metric"] for r in rows}
  assert {"forward_speedup_vs_transformers_llama", "decode_speedup_vs_transformers_llama"} <= names
  for r in rows:
    assert r["unit"] in ("tokens/s", "ratio") and math.isfinite(r["value"]) and r["value"] > 0


def test_train_benchmark_quick_reports_every_metric():
  from experiments.benchmarks import train as train_bench

  rows = train_bench.run(train_bench.SMALL, repeats=1)
  names = {r["metric"] for r in rows}
  assert {"iq_learn_over_mle_step_time", "mfu_vs_measured_matmul", "train_tokens_per_s_mle",
          "train_tokens_per_s_iq_learn", "train_tokens_per_s_dpo"} <= names
  for r in rows:
    assert math.isfinite(r["value"]) and r["value"] > 0
  # FLOP count by hand for the small model: d=64, f=128, 2 layers, V=512, T=32, 4 heads/2 kv.
  # attention params 64·64·2 + 2·64·2·16 = 12288; mlp 3·64·128 = 24576; per layer 36864;
  # matmul params 2·36864 + 64·512 = 106496; 6× = 638976; attention 12·2·32·64 = 49152.
  assert train_bench.model_flops_per_token(train_bench.SMALL) == 638976 + 49152
