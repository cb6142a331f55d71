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


def test_peers_benchmark_quick_checks_parity_and_reports_every_ratio():
  """irl_jax vs PyTorch + transformers and TRL at tiny sizes: the first steps agree (or the
  benchmark raises) and every ratio is reported with the CPU and thread counts named."""
  import pytest

  pytest.importorskip("trl")
  from experiments.benchmarks import peers

  rows = peers.run(peers.SMALL, repeats=1, skip=("models",))
  by_name = {r["metric"]: r for r in rows}
  for name in ("train_step_speedup_vs_torch", "iq_learn_step_speedup_vs_torch_mle",
               "iq_learn_over_mle_step_time", "mfu_vs_measured_matmul", "dpo_step_speedup_vs_trl",
               "reward_model_step_speedup_vs_trl", "grpo_step_speedup_vs_trl"):
    row = by_name[name]
    assert math.isfinite(row["value"]) and row["value"] > 0, name
    assert row["cpu"] and row["torch_threads"] >= 1, name
    assert row.get("target") == peers.TARGETS.get(name), name
  assert by_name["dpo_step_speedup_vs_trl"]["trl"] and by_name["grpo_step_speedup_vs_trl"]["trl"]
  unshared = by_name["grpo_unshared_step_speedup_vs_trl"]
  assert math.isfinite(unshared["value"]) and unshared["value"] > 0 and "target" not in unshared
  for name in ("step_time_grpo", "step_time_grpo_unshared", "step_time_trl_grpo"):
    assert math.isfinite(by_name[name]["value"]) and by_name[name]["value"] > 0, name
  # Same work on both sides: the first step's values agree to float32 round-off.
  for name in ("first_step_loss_relative_difference_mle",
               "first_step_chosen_logp_relative_difference_dpo",
               "first_step_rejected_logp_relative_difference_dpo",
               "first_step_loss_relative_difference_reward_model",
               "first_step_loss_relative_difference_grpo",
               "first_step_logp_relative_difference_grpo"):
    assert by_name[name]["value"] <= peers.PARITY_RTOL, name
  for name in ("first_step_grad_norm_relative_difference_mle",
               "first_step_grad_norm_relative_difference_dpo",
               "first_step_grad_norm_relative_difference_reward_model",
               "first_step_grad_norm_relative_difference_grpo"):
    assert by_name[name]["value"] <= peers.GRAD_NORM_RTOL and by_name[name]["peer"] > 0, name
  # The summed response log-probs of a random model over 24 targets are far from 0.
  assert by_name["first_step_chosen_logp_relative_difference_dpo"]["irl_jax"] < -10
  # GRPO's first loss is −Σ A·n / Σ n (ratio 1, KL 0): non-zero only because the ragged
  # completions of each group differ in length, so the check is not 0 against 0.
  grpo_loss = by_name["first_step_loss_relative_difference_grpo"]
  assert grpo_loss["expected"] < -0.01
  assert abs(grpo_loss["irl_jax"] - grpo_loss["expected"]) <= peers.PARITY_RTOL * 0.01


def test_peers_grpo_batch_has_ragged_groups_and_trl_advantages():
  """The fixed GRPO batch: pairs share prompts, lengths differ within each group, padding is
  the pad id 0 outside `segment_ids`, and the advantages are TRL's (±1/√2 for two rows)."""
  import numpy as np

  from experiments.benchmarks import peers

  data = peers.make_data(peers.SMALL)
  batch = peers.grpo_batch(data)
  p, (b, t) = data["prompt_len"], data["ids"].shape
  lengths = batch["lengths"]
  assert lengths[0] == t - p and np.all(np.diff(lengths) < 0) and lengths[-1] >= (t - p) // 2
  ids, seg, mask = batch["sample_input_ids"], batch["sample_segment_ids"], batch["sample_loss_mask"]
  np.testing.assert_array_equal(seg.sum(1), p + lengths)
  np.testing.assert_array_equal(mask.sum(1), lengths)
  assert np.all(ids[seg == 0] == 0) and np.all(ids[seg == 1] == data["ids"][seg == 1])
  np.testing.assert_array_equal(ids[0::2, :p], ids[1::2, :p])
  np.testing.assert_allclose(batch["sample_advantages"], np.tile([1, -1], b // 2) / np.sqrt(2),
                             rtol=1e-3)


def test_peers_parity_check_refuses_different_work():
  import pytest

  from experiments.benchmarks import peers

  assert peers.check_parity("loss", 1.0, 1.0 + 1e-6) < peers.PARITY_RTOL
  with pytest.raises(RuntimeError, match=r"MLE first-step loss: irl_jax 1\.0 vs peer 1\.1"):
    peers.check_parity("MLE first-step loss", 1.0, 1.1)
  with pytest.raises(RuntimeError, match="do not compute the same step"):
    peers.check_parity("loss", float("nan"), 1.0)
