"""The Prompt-OIRL study: its quick run end to end and its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")
METHODS = ("random prompt", "best single prompt", "best-of-N (R̂)", "oracle")


def test_early_stop_is_a_wrong_answer_the_checker_rejects():
  from experiments import prompt_oirl
  from experiments.tasks import arithmetic
  assert prompt_oirl.ordered_derivation("+", [3, 5, 8]) == "3+5=8\n8+8=16\n#### 16"
  assert prompt_oirl.early_stop("3+5=8\n8+8=16\n#### 16") == "3+5=8\n#### 8"
  for operands in ([3, 5], [3, 5, 8], [3, 5, 8, 1]):
    good = prompt_oirl.ordered_derivation("+", operands)
    bad = prompt_oirl.early_stop(good)
    prompt = arithmetic.make_prompt("+", operands)
    assert arithmetic.check(prompt, good).correct
    assert not arithmetic.check(prompt, bad).correct
    assert bad.count("\n") == good.count("\n") - 1   # one step fewer
  assert prompt_oirl.early_stop("3+5=8\n#### 8") == "#### 3"


def test_world_reliabilities_follow_the_letter_families():
  from experiments import prompt_oirl
  from experiments.configs import prompt_oirl as cfg
  config = cfg.get_config()
  config.num_demonstrations = 50
  w = prompt_oirl.make_world(config, np.random.default_rng(3))
  assert len(set(w.prefixes)) == config.num_prompts
  assert sorted("".join(w.families)) == sorted(config.letters)
  for p, rho in zip(w.prefixes, w.rho, strict=True):
    counts = [sum(ch in fam for ch in p) for fam in w.families]
    np.testing.assert_allclose(rho, config.rho_low + (config.rho_high - config.rho_low)
                               * np.asarray(counts) / config.prefix_len, rtol=1e-6)
  # The queries are distinct, split without overlap, and cover every type.
  train = {(t, tuple(q)) for t, q in w.train_queries}
  test = {(t, tuple(q)) for t, q in w.test_queries}
  assert not train & test
  assert len(train) + len(test) == config.queries_per_type * len(config.query_types)
  assert {t for t, _ in w.test_queries} == set(range(len(config.query_types)))
  assert len(w.corpus) == 50 and all(ex["prompt"][:config.prefix_len] in w.prefixes
                                     for ex in w.corpus)


def test_prompt_oirl_quick(tmp_path):
  from experiments import prompt_oirl
  from experiments.configs import prompt_oirl as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = prompt_oirl.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "prompt_oirl.png").stat().st_size > 0
  seeds = config.quick_settings.num_seeds
  assert len(saved["per_seed"]) == seeds and len(lines) == seeds + 1
  q = config.quick_settings.queries_per_type * len(config.query_types)
  n_train_q = round(config.train_query_fraction * q)
  assert saved["num_records"] == {"train": n_train_q * config.num_train_prompts,
                                  "test": (q - n_train_q) * config.num_prompts}
  for row in saved["per_seed"]:
    assert np.asarray(row["rho"]).shape == (config.num_prompts, len(config.query_types))
    assert np.asarray(row["cell_accuracy"]).shape == (config.num_prompts,
                                                      len(config.query_types))
    assert row["best_single_train"] in row["prefixes"][:config.num_train_prompts]
    assert row["best_single_held"] in row["prefixes"][config.num_train_prompts:]
    for split in ("train_prompts", "held_prompts"):
      acc = row[split]
      assert all(0 <= acc[m] <= 1 for m in METHODS)
      # No selection beats the oracle; the oracle is at least the mean prompt.
      assert max(acc["best single prompt"], acc["best-of-N (R̂)"]) <= acc["oracle"] + 1e-9
      assert acc["random prompt"] <= acc["oracle"] + 1e-9
    for split in ("rm_fit", "rm_train_prompts", "rm_held_prompts"):
      m = row[split]
      assert all(0 <= m[k] <= 1 for k in ("accuracy", "precision", "recall", "f1",
                                          "base_rate"))
  assert saved["cpu"] in table
  assert "base rate" in table and "F1" in table
  for m in METHODS:
    assert m in table
  assert saved["seconds"]["lm_train"] > 0 and saved["seconds"]["total"] > 0
  assert len(results["verdicts"]) == 2
  for v in saved["verdicts"]:
    assert set(v) == {"finding", "verdict", "deciding"}
    assert v["verdict"] in VERDICTS
    assert f"**{v['verdict']}**" in table
    assert v["deciding"] in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("query_types", ("+3",), "config.query_types"),
    ("query_types", ("+2", "-3"), "config.query_types"),
    ("num_train_prompts", 15, "config.num_train_prompts"),
    ("num_prompts", 10_000, "config.num_prompts"),
    ("letters", "ab", "config.letters"),
    ("rho_low", 0.99, "config.rho_low"),
    ("queries_per_type", 100, "config.queries_per_type"),   # "+2" has 81 distinct queries
    ("train_query_fraction", 1.0, "config.train_query_fraction"),
    ("temperature", -1.0, "config.temperature"),
    ("learning_rate", 0.0, "config.learning_rate"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import prompt_oirl
  from experiments.configs import prompt_oirl as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    prompt_oirl.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
