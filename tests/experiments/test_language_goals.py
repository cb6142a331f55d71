"""The language-to-goals study: the quick config end to end, and its verdict rules."""

import json

import numpy as np

from experiments import language_goals as study
from experiments.configs.language_goals import get_config

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_quick_config_writes_table_plots_json_and_verdicts(tmp_path):
  config = get_config()
  config.quick = True
  results = study.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "success.png", "reward_heatmap.png",
               "learning_curves.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert "[reconstruction]" in table.splitlines()[0]
  assert len(saved["per_seed"]) == 5
  for split in ("train", "test"):
    for name in study.POLICIES:
      for metric in ("success", "return"):
        mean, low, high, n = saved["summary"][split][f"{name}_{metric}"]
        assert n == 5 and low <= mean + 1e-9 and mean <= high + 1e-9
        assert -1e-4 <= mean <= (1 + 1e-4 if metric == "success" else 2.0), (split, name)
    s = saved["summary"][split]
    # The expert reaches its goal; a uniform policy rarely does.
    assert s["expert_success"][0] > 0.95 and s["uniform_success"][0] < 0.1
    np.testing.assert_allclose(s["expert_return"][0], 1.0, rtol=1e-5)
  # Seeds differ (own houses, demonstrations and initialisation).
  assert len({r["test"]["bc_success"] for r in saved["per_seed"]}) == 5
  # Even the quick run's reward fits its training houses.
  assert saved["summary"]["train"]["reward_success"][0] > 0.5
  assert len(saved["verdicts"]) == 2
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and "(n=5)" in v["number"]
    assert f"**{v['verdict']}**" in table
  assert results["example"]["reward"].shape == (3, 49)


def test_verdict_rules():
  def rows(reward_test, bc_test, bc_train):
    return [{"train": {"bc_success": c}, "test": {"reward_success": a, "bc_success": b}}
            for a, b, c in zip(reward_test, bc_test, bc_train, strict=True)]
  v = study.verdicts(rows([0.8, 0.75, 0.85, 0.7, 0.8], [0.3, 0.2, 0.25, 0.3, 0.2],
                          [0.9, 0.85, 0.9, 0.95, 0.9]))
  assert [x["verdict"] for x in v] == ["reproduced", "reproduced"]
  assert "+0.530" in v[0]["number"]
  v = study.verdicts(rows([0.2, 0.25, 0.2, 0.15, 0.2], [0.3, 0.35, 0.3, 0.3, 0.35],
                          [0.3, 0.3, 0.35, 0.3, 0.3]))
  assert v[0]["verdict"] == "contradicted" and v[1]["verdict"] == "not at this scale"
