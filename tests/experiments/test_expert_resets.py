"""The expert-resets study: the quick config end to end, and the verdict rules."""

import json

import numpy as np
import pytest

from experiments import expert_resets as er
from experiments.configs.expert_resets import get_config

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_quick_config_writes_tables_plots_json_and_verdicts(tmp_path):
  config = get_config()
  config.quick = True
  results = er.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "interactions_vs_depth.png", "learning_curves.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  quick = config.quick_settings
  assert saved["depths"] == list(quick.depths)
  assert list(saved["classes"]) == ["leaf", "state_action"]
  for per_method in saved["classes"].values():
    assert list(per_method) == [er.EXPERT, er.NU0]
    for r in per_method.values():
      for d in quick.depths:
        s = r["by_depth"][str(d)]
        counts = np.asarray(s["interactions"])
        assert len(counts) == quick.num_seeds
        # At least one iteration's worth (a cost rollout of d steps), at most one past the cap.
        assert (counts >= d).all() and (counts < quick.max_interactions + 10 * d * 8).all()
        assert np.array_equal(s["censored"], ~np.asarray(s["solved"]))
        assert 0.0 <= s["censored_fraction"] <= 1.0 and s["median"] > 0
        solved = np.asarray(s["solved"])
        assert (np.asarray(s["final_return"])[solved] >= 0.95).all()
        np.testing.assert_allclose(s["expert_return"], 1.0)
      assert len(r["log2_slope_per_seed"]) == quick.num_seeds
      assert np.isfinite(r["log2_slope"][0]) and np.isfinite(r["power_law_exponent"][0])
  # Both methods solve these small locks well inside the cap.
  assert all(not any(r["by_depth"][str(d)]["censored"])
             for per_method in saved["classes"].values() for r in per_method.values()
             for d in quick.depths)
  verdicts = saved["verdicts"]
  assert [v["finding"][:3] for v in verdicts] == ["(1)", "(2)"]
  for v in verdicts:
    assert v["verdict"] in VERDICTS and v["number"]
    assert f"**{v['verdict']}**" in table
  assert "log2-interactions per level" in verdicts[0]["number"]
  assert "exponentially many" in verdicts[0]["finding"]
  assert "polynomial" not in verdicts[0]["finding"]  # the rule cannot test a power law
  assert "seed set 1" in table and "a description, not a test" in table
  assert results["timing"]["total"] > 0


def _results(depths, counts_by_method, censored_by_method=None):
  """A results dict as `run` builds it, from `counts[D, seeds]` per method."""
  classes = {"leaf": {}}
  for name, counts in counts_by_method.items():
    counts = np.asarray(counts, float)
    cens = (np.zeros_like(counts, bool) if not censored_by_method
            else np.asarray(censored_by_method[name], bool))
    classes["leaf"][name] = {"alpha": 1.0 if name == er.EXPERT else 0.0, "by_depth": {
        str(d): {"interactions": counts[i].tolist(), "censored": cens[i].tolist(),
                 "solved": (~cens[i]).tolist()} for i, d in enumerate(depths)}}
  results = {"depths": list(depths), "classes": classes}
  er.summarise(results)
  return results


def _verdicts(results):
  config = get_config()
  return [v["verdict"] for v in er.verdicts(results, config)]


def test_verdict_rules_decide_on_the_fitted_growth_laws():
  depths = np.array([4, 6, 8, 10, 12, 14])
  rng = np.random.default_rng(0)
  noise = lambda: 2.0 ** rng.normal(0, 0.3, (len(depths), 5))
  exponential = 2.0 ** depths[:, None] * depths[:, None] * noise()
  cubic = depths[:, None] ** 3.0 * noise()
  assert _verdicts(_results(depths, {er.EXPERT: cubic, er.NU0: exponential})) == [
      "reproduced", "reproduced"]
  # Both polynomial: ν0 resets are not exponential, and no faster growing than expert resets.
  flat = depths[:, None] ** 1.0 * 50 * noise()
  assert _verdicts(_results(depths, {er.EXPERT: cubic, er.NU0: flat}))[0] == "contradicted"
  # Expert resets as steep as ν0 resets: not established; steeper: contradicted.
  assert _verdicts(_results(depths, {er.EXPERT: exponential * 4, er.NU0: exponential}))[0] == (
      "not at this scale")
  steeper = 2.0 ** (1.5 * depths[:, None]) * noise()
  assert _verdicts(_results(depths, {er.EXPERT: steeper, er.NU0: exponential}))[0] == (
      "contradicted")
  # A censored expert-reset run (a lower bound) keeps both findings from "reproduced".
  cens = np.zeros((len(depths), 5), bool)
  cens[-1, 0] = True
  r = _results(depths, {er.EXPERT: cubic, er.NU0: exponential},
               {er.EXPERT: cens, er.NU0: np.zeros_like(cens)})
  assert _verdicts(r) == ["not at this scale", "not at this scale"]
  # A flat ν0 fit that is flat because of censoring decides nothing.
  capped = np.minimum(exponential, 300.0)
  r = _results(depths, {er.EXPERT: cubic, er.NU0: capped},
               {er.EXPERT: np.zeros_like(cens), er.NU0: exponential >= 300.0})
  assert _verdicts(r)[0] == "not at this scale"


def test_config_errors_name_the_field():
  config = get_config()
  config.cost_class = "tree"
  with pytest.raises(ValueError, match=r"config\.cost_class"):
    er.resolve(config)
  config = get_config()
  config.num_seeds = 1
  with pytest.raises(ValueError, match=r"config\.num_seeds"):
    er.resolve(config)
  config = get_config()
  config.quick = True
  with config.quick_settings.unlocked():
    config.quick_settings.num_seed = 3  # a typo: no such field
  with pytest.raises(ValueError, match=r"config\.quick_settings\.num_seed"):
    er.resolve(config)


def test_default_config_decides_on_the_fresh_seed_set():
  # Seed set 0 chose the cost class (exploratory); the verdicts use seed set 1.
  assert get_config().seed == 1
