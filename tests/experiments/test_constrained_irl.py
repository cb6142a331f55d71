"""The constrained-IRL study: the quick config end to end, the reward-class check and
the verdict rules."""

import json

import numpy as np

from experiments import constrained_irl
from experiments.configs.constrained_irl import get_config


def test_reward_class_check_counts_the_directions_no_expert_reveals():
  config = get_config()
  mdp = constrained_irl.make_env(config)
  dims = {w: constrained_irl.unidentified_dimensions(
      mdp, constrained_irl.feature_matrix(mdp, config.size, w))
          for w in constrained_irl.FEATURE_SETS}
  s = mdp.num_states
  # All state-action pairs: every shaping direction (S), the constant (already one of
  # them, with γ < 1) and the two costs.
  assert dims["everywhere"] == s + 2
  # State indicators on the ring: none; their one-hot pairs: the corner potentials and more.
  assert dims["boundary"] == 0
  assert dims["boundary (s,a)"] >= 4


def test_quick_config_writes_table_plot_json_and_verdicts(tmp_path):
  config = get_config()
  config.quick = True
  constrained_irl.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "constrained_irl.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  assert list(saved["feature_sets"]) == list(constrained_irl.FEATURE_SETS)
  for r in saved["feature_sets"].values():
    for m in r["by_num_demos"].values():
      assert len(m["d_const"]["per_seed"]) == 5
      assert all(x >= 0 for x in m["d_const"]["per_seed"] + m["d_shape"]["per_seed"])
      # d_shape minimises over a class containing every constant shift.
      assert all(b <= a + 1e-4 for a, b in zip(m["d_const"]["per_seed"],
                                               m["d_shape"]["per_seed"], strict=True))
      assert 0 <= m["occupancy_error"]["ci"][0] <= 1
    assert set(r["exact_occupancy"]) >= {"d_const", "d_shape", "regret_0"}
  # The expert satisfies its budgets.
  assert max(saved["expert"]["violation"]) < 1e-3
  assert [v["finding"][:3] for v in saved["verdicts"]] == ["(A)", "(B)", "(C)"]
  assert all(v["verdict"] in ("reproduced", "not at this scale", "contradicted")
             for v in saved["verdicts"])


def test_slope_rule():
  config = get_config()
  ns = np.asarray(config.num_demos, float)

  def results(exponent):
    rng = np.random.default_rng(0)
    per = {str(int(n)): [float(n ** exponent * np.exp(rng.normal(0, 0.02))) for _ in range(5)]
           for n in ns}
    by = {n: {"d_const": {"per_seed": v, "ci": (0, 0, 0, 5)},
              "d_shape": {"per_seed": v, "ci": (0, 0, 0, 5)},
              "regret_0": {"per_seed": [1.0] * 5},
              "violation_0": {"per_seed": [0.0] * 5}} for n, v in per.items()}
    fs = {w: {"by_num_demos": by} for w in constrained_irl.FEATURE_SETS}
    r = {"feature_sets": fs, "transfers": ["t"], "null_shape_ratio": 0.6}
    r["slopes"] = constrained_irl.slopes(r, config)
    return constrained_irl.verdicts(r, config)[2]["verdict"]

  assert results(-0.5) == "reproduced"
  assert results(-1.0) == "contradicted"
  assert results(0.0) == "contradicted"


def test_finding_a_and_b_rules_can_fail():
  config = get_config()
  n = str(max(config.num_demos))

  def verdicts(d_const_every, d_shape_every, d_const_boundary, violation=0.0):
    def entry(d_const, d_shape):
      return {"d_const": {"per_seed": d_const}, "d_shape": {"per_seed": d_shape},
              "regret_0": {"per_seed": [1.0, 1.1, 0.9, 1.0, 1.2]},
              "violation_0": {"per_seed": [violation] * 5}}
    fs = {"everywhere": {"by_num_demos": {n: entry(d_const_every, d_shape_every)}},
          "boundary": {"by_num_demos": {n: entry(d_const_boundary, d_const_boundary)}}}
    r = {"feature_sets": fs, "transfers": ["t"], "null_shape_ratio": 0.6,
         "slopes": {"boundary/d_const": {"ci": (-0.5, -0.6, -0.4, 5)}}}
    return [v["verdict"] for v in constrained_irl.verdicts(r, config)]

  big, small = [3.0, 3.2, 2.9, 3.1, 3.0], [0.1, 0.12, 0.09, 0.11, 0.1]
  assert verdicts(big, [0.3, 0.32, 0.29, 0.31, 0.3], small)[0] == "reproduced"
  # The shaping class fits the deviation no better than it fits noise: contradicted.
  assert verdicts(big, [2.7, 2.9, 2.8, 2.9, 2.7], small)[0] == "contradicted"
  # Boundary farther from r_E + c than everywhere: contradicted.
  assert verdicts(small, small, big)[0] == "contradicted"
  # A budget violation above the bar leaves (B) undecided.
  assert verdicts(big, small, small, violation=0.1)[1] == "not at this scale"
