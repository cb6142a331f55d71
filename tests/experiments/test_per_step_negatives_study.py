"""The per-step-negatives study: its data-efficiency interpolation, its quick run end to end and
its config errors."""

import json
import math

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_equivalent_data_interpolates_log_linearly():
  from experiments.per_step_negatives import equivalent_data
  n = np.array([100.0, 1000.0, 10000.0])
  acc = np.array([0.2, 0.4, 0.8])
  assert equivalent_data(n, acc, 0.4) == pytest.approx(1000.0)
  assert equivalent_data(n, acc, 0.3) == pytest.approx(math.sqrt(100.0 * 1000.0))
  assert equivalent_data(n, acc, 0.6) == pytest.approx(math.sqrt(1000.0 * 10000.0))
  assert equivalent_data(n, acc, 0.2) == 100.0
  assert equivalent_data(n, acc, 0.1) == 0.0            # below the grid: fewer than 100
  assert math.isinf(equivalent_data(n, acc, 0.9))
  # A dip in the SFT curve is bridged by its running maximum.
  assert equivalent_data(n, np.array([0.2, 0.5, 0.4]), 0.45) < 1000.0


def test_per_step_negatives_quick(tmp_path):
  from experiments import per_step_negatives as psn
  from experiments.configs import per_step_negatives as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = psn.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "per_step_negatives.png").stat().st_size > 0
  assert set(saved["sizes"]) == {"200"} and set(saved["sft_only"]) == {"400"}
  row = saved["sizes"]["200"]
  for m in ("sft", *psn.METHODS):
    acc = np.asarray(row[m])
    assert acc.shape == (2,) and np.all((acc >= 0) & (acc <= 1))
    if m != "sft":
      # DPO starts at log 2 (policy = reference); every loss is finite.
      assert np.all(np.isfinite(row[f"{m}_loss"]))
  np.testing.assert_allclose(np.asarray(row["step_dpo_loss"])[:, 0], np.log(2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(row["outcome_dpo_loss"])[:, 0], np.log(2), rtol=1e-5)
  for c in row["counts"]:
    assert 0 <= c["questions_with_pair"] <= c["questions_with_negative"] <= 32
    assert 0.0 <= c["pit_before_last_step"] <= 1.0
  for m in psn.METHODS:
    assert set(saved["multiples"][m]) == {"200"}
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 3
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("data_sizes", (500, 250), "config.data_sizes"),
    ("sft_only_sizes", (500,), "config.sft_only_sizes"),
    ("num_questions", 1, "config.num_questions"),
    ("q_estimate", "median", "config.q_estimate"),
    ("max_steps", 2, "config.max_steps"),
    ("dpo_beta", 0.0, "config.dpo_beta"),
    ("finetune_batch", 500, "config.finetune_batch"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import per_step_negatives as psn
  from experiments.configs import per_step_negatives as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    psn.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
