"""The MusIK study: its quick run end to end and its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_musik_quick(tmp_path):
  from experiments import musik
  from experiments.configs import musik as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = musik.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "musik.png").stat().st_size > 0
  assert saved["sample_counts"] == [100, 1000]
  assert set(saved["methods"]) == {"multi_step", "one_step"}
  for m in saved["methods"].values():
    assert f"| {m['label']} |" in table
    assert m["finite_loss"] and m["run_seconds"] > 0
    for field in ("reach_H", "purity"):
      v = np.asarray(m[field])
      assert v.shape == (2, 2) and np.all((v >= 0) & (v <= 1))   # [counts, seeds]
    assert np.asarray(m["reach_by_layer"]).shape == (2, 2, 3)
  assert saved["methods"]["multi_step"]["episodes_per_run"]["1000"] == 6000
  assert saved["methods"]["one_step"]["episodes_per_run"]["1000"] == 3000
  assert saved["random"]["exact"] == pytest.approx(4.0 ** -3)
  assert saved["random"]["exact_all_equal"]
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 2
  for v in saved["verdicts"]:
    assert set(v) == {"finding", "verdict", "deciding"}
    assert v["verdict"] in VERDICTS
    assert f"**{v['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("horizon", 0, "config.horizon"),
    ("num_seeds", 1, "config.num_seeds"),
    ("sample_counts", (300, 100), "config.sample_counts"),
    ("num_actions", 1, "config.num_actions"),
    ("reach_threshold", 1.5, "config.reach_threshold"),
    ("learning_rate", 0.0, "config.learning_rate"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import musik
  from experiments.configs import musik as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    musik.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
