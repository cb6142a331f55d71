"""The classical tabular IRL study: the quick config end to end and the verdict rules."""

import json

import numpy as np

from experiments import tabular_irl
from experiments.configs.tabular_irl import get_config


def test_quick_config_writes_table_plot_json_and_verdicts(tmp_path):
  config = get_config()
  config.quick = True
  results = tabular_irl.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "tabular_irl.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved["methods"]) == {"MCE IRL (onehot)", "MCE IRL (coords)", "IQ-Learn",
                                   "IQ-Learn (ν0 value term)", "BC"}
  for r in saved["methods"].values():
    assert set(r["by_num_demos"]) == {"1", "10"}
    for m in r["by_num_demos"].values():
      assert len(m["normalised_return"]["per_seed"]) == 5
      mean, low, high, n = m["normalised_return"]["ci"]
      assert n == 5 and low <= mean <= high and -1.0 < mean < 1.2
      assert 0.0 <= m["occupancy_error"]["ci"][0] <= 2.0
  # More demonstrations help every method (seed means).
  for r in saved["methods"].values():
    assert (r["by_num_demos"]["10"]["occupancy_error"]["ci"][0]
            < r["by_num_demos"]["1"]["occupancy_error"]["ci"][0])
  assert [v["finding"][:3] for v in saved["verdicts"]] == ["(1)", "(2)", "(3)"]
  assert all(v["verdict"] in ("reproduced", "not at this scale", "contradicted")
             for v in saved["verdicts"])
  table = (tmp_path / "results.md").read_text()
  assert "| MCE IRL (onehot) | 10 |" in table and results["seconds"] > 0


def test_verdicts_follow_the_fixed_rules():
  config = get_config()

  def entry(ret, off):
    return {"normalised_return": {"ci": ret}, "offdemo_return": {"per_seed": off}}

  def results(mce_ret, iq_ret, mce_off, bc_off):
    by = lambda ret, off: {"10": entry(ret, off), "100": entry(ret, off)}
    return {"methods": {"MCE IRL (onehot)": {"by_num_demos": by(mce_ret, mce_off)},
                        "IQ-Learn": {"by_num_demos": by(iq_ret, mce_off)},
                        "BC": {"by_num_demos": by(iq_ret, bc_off)}}}

  out = tabular_irl.verdicts(results((0.97, 0.95, 0.99, 5), (0.7, 0.6, 0.8, 5),
                                     [0.9, 0.8, 0.85, 0.95, 0.9], [0.5, 0.4, 0.6, 0.5, 0.45]),
                             config)
  assert [v["verdict"] for v in out] == ["reproduced", "contradicted", "reproduced"]
  out = tabular_irl.verdicts(results((0.9, 0.85, 0.95, 5), (0.9, 0.8, 1.0, 5),
                                     [0.5, 0.6, 0.4, 0.5, 0.5], [0.5, 0.4, 0.6, 0.6, 0.5]),
                             config)
  assert [v["verdict"] for v in out] == ["not at this scale"] * 3
  np.testing.assert_equal(len(out), 3)
