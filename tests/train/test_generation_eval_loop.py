"""Tests for the trainer's generation metrics (irl_jax/train/loop.py: `config.eval_generation`,
`train(..., checker=...)`, `eval_prompts`, `generation_eval`) on the smoke config."""

import json
import math
import os

import ml_collections
import numpy as np
import pytest

from experiments.configs import smoke
from experiments.tasks import reverse
from irl_jax.train import ConfigError, loop

GEN_KEYS = ("accuracy", "score", "self_bleu", "distinct_2", "distinct_3", "entropy",
            "reward_spearman", "reward_prompts", "mean_length")


def _config(num_prompts=4, num_samples=2, **overrides):
  c = smoke.get_config()
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 1, 2, 1
  c.progress_bar = c.tensorboard = c.export_hf = False
  c.objective.name = "mle"
  c.data.num_examples, c.data.num_eval_examples = 32, 8
  c.data.batch_size = c.data.eval_batch_size = 4
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  c.eval_generation = ml_collections.ConfigDict(dict(
      task="reverse", num_prompts=num_prompts, num_samples=num_samples, temperature=1.0,
      max_new_tokens=8, gamma=1.0, prompt_len=0))
  c.update_from_flattened_dict({k.replace("__", "."): v for k, v in overrides.items()})
  return c


def test_train_reports_generation_metrics_and_writes_samples(tmp_path):
  calls = []

  def checker(prompt, reference, response):
    calls.append((prompt, reference, response))
    return float(response == reference), response == reference

  workdir = str(tmp_path / "run")
  summary = loop.train(_config(), workdir, task=reverse, checker=checker)
  for k in GEN_KEYS:
    assert f"eval/gen_{k}" in summary, k
  assert "eval/loss" in summary and summary["train/finite"] == 1.0

  # One evaluation per step (eval_every=1), each sampling 4 prompts x 2 samples.
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["1.jsonl", "2.jsonl"]
  assert len(calls) == 2 * 8
  for step, chunk in ((1, calls[:8]), (2, calls[8:])):
    with open(os.path.join(workdir, "samples", f"{step}.jsonl")) as f:
      lines = [json.loads(line) for line in f]
    assert len(lines) == 8
    assert all(line["step"] == step for line in lines)
    assert [line["response"] for line in lines] == [r for _, _, r in chunk]
  # The checker saw each eval prompt twice in a row, with its own reference (the reversal).
  prompts = [p for p, _, _ in calls[8:]]
  assert prompts[0::2] == prompts[1::2] and len(set(prompts)) == 4
  for prompt, reference, _ in calls[8:]:
    assert prompt.endswith("=") and reference == prompt[:-1][::-1]
  # The returned (final) metrics are those of the last evaluation's samples.
  correct = [r == ref for _, ref, r in calls[8:]]
  assert summary["eval/gen_accuracy"] == pytest.approx(np.mean(correct))
  assert summary["eval/gen_score"] == pytest.approx(np.mean(correct))
  assert 0 <= summary["eval/gen_reward_prompts"] <= 4
  assert summary["eval/gen_entropy"] > 0
  assert 1 <= summary["eval/gen_mean_length"] <= 8
  if not math.isnan(summary["eval/gen_self_bleu"]):
    assert 0.0 <= summary["eval/gen_self_bleu"] <= 1.0
  # The same metrics reach metrics.jsonl at both evaluations.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  gen_steps = [r["step"] for r in logged if "eval/gen_accuracy" in r]
  assert gen_steps == [1, 2]


def test_generation_without_a_checker_is_refused_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match="checker"):
    loop.train(_config(), str(workdir), task=reverse)
  assert not workdir.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"eval_generation__num_samples": 0},
     "config.eval_generation.num_samples=0: must be a positive integer"),
    ({"eval_generation__max_new_tokens": -1},
     "config.eval_generation.max_new_tokens=-1: must be a positive integer"),
    ({"eval_generation__temperature": -0.5},
     "config.eval_generation.temperature=-0.5: must be a finite number >= 0"),
    ({"distributed__num_processes": 2},
     "config.eval_generation.num_prompts=4: generation metrics run in one process"),
])
def test_bad_generation_fields_are_named(tmp_path, monkeypatch, overrides, message):
  def no_distributed(config):
    raise AssertionError("the config must be refused before jax.distributed starts")

  monkeypatch.setattr(loop, "maybe_initialize_distributed", no_distributed)
  checker = lambda p, ref, r: (float(r == ref), r == ref)
  with pytest.raises(ConfigError) as info:
    loop.train(_config(**overrides), str(tmp_path / "run"), task=reverse, checker=checker)
  assert message in str(info.value)
  assert not (tmp_path / "run").exists()


def test_zero_prompts_turn_generation_off():
  # Off: no checker needed, and the other fields are not checked.
  loop.check_config(_config(num_prompts=0, num_samples=0))
  loop.check_config(_config(num_prompts=0, distributed__num_processes=2))


def _rows(real, t=6, offset=0):
  """A batch of `len(real)` rows; row `i` is real (ids `offset + i`) where `real[i]`."""
  real = np.asarray(real, bool)
  ids = (offset + np.arange(len(real)))[:, None] * np.ones((1, t), np.int32)
  seg = np.where(real[:, None], 1, 0) * np.ones((1, t), np.int32)
  return {"input_ids": ids.astype(np.int32), "segment_ids": seg.astype(np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (len(real), 1)),
          "loss_mask": np.zeros((len(real), t), bool) | (np.arange(t) >= 3)[None],
          "extra": np.zeros((len(real), t))}


def test_eval_prompts_takes_the_first_real_rows():
  batches = [_rows([True, False, True], offset=0), _rows([True, True, False], offset=10),
             _rows([True, True, True], offset=20)]
  read = []

  def eval_batches():
    for i, b in enumerate(batches):
      read.append(i)
      yield b

  out = loop.eval_prompts(eval_batches, 3)
  assert set(out) == {"input_ids", "segment_ids", "positions", "loss_mask"}
  np.testing.assert_array_equal(out["input_ids"][:, 0], [0, 2, 10])
  assert (out["segment_ids"] > 0).all()
  assert read == [0, 1]  # stops once it has enough
  read.clear()
  out = loop.eval_prompts(eval_batches, 100)  # fewer real rows than asked: all of them
  np.testing.assert_array_equal(out["input_ids"][:, 0], [0, 2, 10, 11, 20, 21, 22])
  assert loop.eval_prompts(lambda: iter([_rows([False, False])]), 2) is None
  assert loop.eval_prompts(lambda: iter([]), 2) is None
