"""The frame-preference study (learned frame reward + IQL vs IQL on the true reward vs BC):
its quick run end to end and its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_vlm_preferences_quick(tmp_path):
  from experiments import vlm_preferences
  from experiments.configs import vlm_preferences as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = vlm_preferences.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "vlm_preferences.png").stat().st_size > 0
  assert saved["query_counts"] == [20, 80]
  assert set(saved["learned"]) == {"0", "0.2"}
  for noise, m in saved["learned"].items():
    norm = np.asarray(m["normalised"])
    assert norm.shape == (2, 2) and np.all(np.isfinite(norm))     # [queries, seeds]
    agree = np.asarray(m["test_agreement"])                       # [queries, seeds]
    assert agree.shape == (2, 2) and np.all(agree[-1] > 0.6)       # 80 queries: above chance
    assert f"flip {noise} |" in table
  labels = saved["labels"]
  assert labels["0"]["agree_with_truth"] == 1.0                    # no flips
  assert 0.6 < labels["0.2"]["agree_with_truth"] < 0.95
  for info in labels.values():
    used, ties = info["pairs_used_by_count"], info["ties_by_count"]
    assert [u + t for u, t in zip(used, ties, strict=True)] == [20, 80]   # nothing lost
  assert len(saved["oracle"]["normalised"]) == 2 and len(saved["bc"]["normalised"]) == 2
  assert len(results["verdicts"]) == 3 and saved["cpu"] in table
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table
  assert any("oracle IQL" in line for line in lines)


@pytest.mark.parametrize("field,value,message", [
    ("num_seeds", 1, r"config\.num_seeds"),
    ("query_counts", (80, 20), r"config\.query_counts"),
    ("label_noise", (0.0, 0.7), r"config\.label_noise"),
    ("verdict_noise", 0.3, r"config\.verdict_noise"),
    ("env", "gymnax/CartPole-v1", r"config\.env"),
    ("frame_size", 2, r"config\.frame_size"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  from experiments import vlm_preferences
  from experiments.configs import vlm_preferences as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=message):
    vlm_preferences.run(config, str(tmp_path))


def test_bad_reward_settings_name_config_reward(tmp_path):
  from experiments import vlm_preferences
  from experiments.configs import vlm_preferences as cfg
  config = cfg.get_config()
  config.reward.ties = "coin"
  with pytest.raises(ValueError, match=r"config\.reward: .*ties"):
    vlm_preferences.run(config, str(tmp_path))
