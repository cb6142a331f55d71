"""The GRPO vs GRPO-S study (L8): its world and category pairs, its quick run end to end, and
its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_world_categories_checkers_and_demonstrations():
  from experiments import grpo_s
  from experiments.configs import grpo_s as cfg
  config = cfg.get_config()
  config.corpus_size, config.train_prompts = 500, 1400
  world = grpo_s.make_world(config, np.random.default_rng(0))
  c_, first = config.num_categories, grpo_s.first_token(config)
  w = world["weights"]
  assert w.shape == (c_, first + config.num_tokens)
  penalised = w > 0
  assert np.all(penalised.sum(1) == config.bad_per_category)
  assert not np.any(penalised.sum(0) > 1)                  # disjoint checkers
  # Training prompts follow the 10:3:1 imbalance, held-out prompts are balanced.
  share = np.bincount(world["train_categories"], minlength=c_) / config.train_prompts
  np.testing.assert_allclose(share, np.array(config.category_weights) / 14, atol=0.04)
  assert np.all(np.bincount(world["eval_categories"]) == config.eval_prompts)
  assert np.all(world["train_prompts"][:, 0] == 1 + world["train_categories"])
  # A demonstration never uses its own category's toxic tokens (the clean chain).
  for c in range(c_):
    rows = world["train_categories"] == c
    assert not penalised[c][world["demos"][rows]].any()
  assert sorted(np.bincount(world["pair_categories"]).tolist(), reverse=True) == \
      grpo_s.pair_counts(config)


def test_category_pairs_are_ordered_by_a_draw_on_the_category_reward():
  from experiments import grpo_s
  from experiments.configs import grpo_s as cfg
  config = cfg.get_config()
  config.num_pairs = 140
  rng = np.random.default_rng(1)
  world = grpo_s.make_world(config, rng)
  n, first = len(world["pair_categories"]), grpo_s.first_token(config)
  a = rng.integers(first, first + config.num_tokens, (n, config.completion_len))
  b = rng.integers(first, first + config.num_tokens, (n, config.completion_len))
  pairs = grpo_s.category_pairs(config, world, a, b, rng)
  counts = grpo_s.pair_counts(config)
  assert pairs["input_ids"].shape == (config.num_categories, max(counts), 2,
                                      1 + config.prompt_len + config.completion_len)
  # Every row of a category's block is one of its pairs (the tail's repeated).
  for c in range(config.num_categories):
    assert np.all(pairs["input_ids"][c, :, :, 0] == 1 + c)
    assert len({row.tobytes() for row in pairs["input_ids"][c]}) <= counts[c]


def test_grpo_s_quick(tmp_path):
  from experiments import grpo_s
  from experiments.configs import grpo_s as cfg
  config = cfg.get_config()
  config.quick = True
  results = grpo_s.run(config, str(tmp_path), log=lambda *_: None)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "grpo_s.png").stat().st_size > 0
  q, c_ = config.quick_settings, config.num_categories
  assert set(saved["reached"]) == {"base", "grpo", "grpo_s"}
  for v in saved["reached"].values():
    v = np.asarray(v)
    assert v.shape == (q.num_seeds, c_) and np.all(v <= 0) and np.all(np.isfinite(v))
  for m in saved["methods"].values():
    assert np.asarray(m["true_reward"]).shape == (q.num_seeds, q.rl_updates, c_)
    assert f"| {m['label']} |" in table
  # GRPO-S's scales are non-negative with batch mean 1; GRPO's (unused) ones are the same
  # computation on its own batches.
  alpha = np.asarray(saved["methods"]["grpo_s"]["alpha"])
  counts = np.asarray(saved["methods"]["grpo_s"]["count"]) / config.group_size
  assert np.all(alpha >= 0)
  batch_mean = (alpha * counts).sum(-1) / counts.sum(-1)
  np.testing.assert_allclose(batch_mean[batch_mean > 0], 1.0, rtol=1e-4)
  assert np.all(np.asarray(saved["rm_train_accuracy"]) > 0.5)
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 1
  assert saved["verdicts"][0]["verdict"] in VERDICTS
  assert f"**{saved['verdicts'][0]['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("category_weights", (10, 3), "config.category_weights"),
    ("category_weights", (10, 3, 0), "config.category_weights"),
    ("bad_per_category", 4, "config.bad_per_category"),
    ("num_pairs", 5, "config.num_pairs"),
    ("rm_batch", 2000, "config.rm_batch"),
    ("kl_coef", -1.0, "config.kl_coef"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import grpo_s
  from experiments.configs import grpo_s as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    grpo_s.run(config, str(tmp_path))
