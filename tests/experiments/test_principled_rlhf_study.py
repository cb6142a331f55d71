"""The principled-RLHF study (pessimistic MLE, K-wise comparisons): its quick run end to end,
its confidence width against the formula, and its config errors."""

import json
import math

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_principled_rlhf_quick(tmp_path):
  from experiments import principled_rlhf
  from experiments.configs import principled_rlhf as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = principled_rlhf.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "principled_rlhf.png").stat().st_size > 0
  assert saved["bandit_rewards"] == pytest.approx([-0.9, -1.0, 0.0, 0.1])
  assert set(saved["bandit"]) == {"10", "1000", "1000000"}
  for row in saved["bandit"].values():
    for key in ("greedy_subopt", "lcb_subopt"):
      v = np.asarray(row[key])
      assert v.shape == (16,)
      # Suboptimality is r(a4) − r(chosen arm): one of 0, 0.1, 1.0, 1.1.
      assert np.all(np.min(np.abs(v[:, None] - [0.0, 0.1, 1.0, 1.1]), axis=1) < 1e-9)
    assert sum(row["greedy_choice_counts"]) == sum(row["lcb_choice_counts"]) == 16
    assert np.all(np.isfinite(row["error"]))
    # About rare_expected = 1 rare comparison per data set, whatever n is.
    assert 0.0 <= row["rare_count_mean"] <= 3.0
  # The MLE converges in the data's norm while n grows 10⁵-fold.
  assert saved["bandit"]["1000000"]["error_ci"][0] < saved["bandit"]["10"]["error_ci"][0] / 10
  assert set(saved["rankings"]) == {"4", "9"}
  for row in saved["rankings"].values():
    e_k, e_2 = np.asarray(row["error_K"]), np.asarray(row["error_2"])
    assert e_k.shape == e_2.shape == (2, 4) and np.all(e_k > 0) and np.all(e_2 > 0)
    assert np.all(e_k[1].mean() < e_k[0].mean())    # error falls with n
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 3
  for v in saved["verdicts"]:
    assert set(v) == {"finding", "verdict", "deciding"}
    assert v["verdict"] in VERDICTS
    assert f"**{v['verdict']}**" in table


def test_confidence_width_formula():
  from experiments.principled_rlhf import confidence_width
  f, kappa = confidence_width(1000, d=3, feature_bound=math.sqrt(2), norm_bound=2.0,
                              scale=1.0, delta=0.1)
  gamma = 1 / (2 + math.exp(-2 * math.sqrt(2)) + math.exp(2 * math.sqrt(2)))
  assert kappa == pytest.approx(3 / (4 * 1000))
  assert f == pytest.approx(math.sqrt((3 + math.log(10)) / (gamma**2 * 1000) + 3 / 1000))


@pytest.mark.parametrize("field, value, match", [
    ("bandit_sizes", (100, 10), "config.bandit_sizes"),
    ("bandit_seeds", 1, "config.bandit_seeds"),
    ("bandit_theta", (1.0, 2.0), "config.bandit_theta"),
    ("rare_pair", (1, 1), "config.rare_pair"),
    ("delta", 1.5, "config.delta"),
    ("norm_bound", 0.5, "config.bandit_theta"),
    ("rare_expected", 50.0, "config.rare_expected"),
    ("ranking_sizes", (1, 4), "config.ranking_sizes"),
    ("lcb_scale", float("nan"), "config.lcb_scale"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import principled_rlhf
  from experiments.configs import principled_rlhf as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    principled_rlhf.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
