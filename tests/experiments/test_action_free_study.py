"""The action-free trajectories study (oracle vs labelled-only vs SS-TD3+BC vs BC): its
quick run end to end, its shared equivalence rule and its config errors."""

import json

import numpy as np
import pytest

from experiments import study

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_action_free_quick(tmp_path):
  from experiments import action_free
  from experiments.configs import action_free as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = action_free.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "action_free.png").stat().st_size > 0
  assert list(saved["methods"]) == ["oracle", "labelled_only", "ss_k0", "ss_k1", "bc"]
  for m in saved["methods"].values():
    assert f"| {m['label']} |" in table
    assert len(m["normalised"]) == 2 and np.all(np.isfinite(m["normalised"]))
  ds = saved["dataset"]
  assert ds["labelled_episodes"] + ds["action_free_episodes"] == ds["episodes"]
  assert ds["labelled_normalised"] < ds["normalised"]   # labelled: below-median episodes
  for k in ("ss_k0", "ss_k1"):
    p = saved["proxy_labels"][k]
    assert len(p["mae"]) == 2 and all(0 <= e <= 4 for e in p["mae"])   # actions in [-2, 2]
    assert all(s > 0 for s in np.ravel(p["best_step"]))
  assert len(results["verdicts"]) == 2 and saved["cpu"] in table
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table
  assert any("proxy labels" in line for line in lines)


def test_equivalence_rule_on_hand_cases():
  inside = np.array([0.01, -0.02, 0.0, 0.015, -0.01])
  assert study.equivalence(inside, 0.1)[0] == "reproduced"
  beyond = np.array([0.5, 0.45, 0.55, 0.5, 0.52])
  assert study.equivalence(beyond, 0.1)[0] == "contradicted"
  assert study.equivalence(-beyond, 0.1)[0] == "contradicted"
  wide = np.array([0.3, -0.3, 0.1, -0.2, 0.25])
  verdict, ci = study.equivalence(wide, 0.1)
  assert verdict == "not at this scale" and ci[3] == 5


@pytest.mark.parametrize("field,value,message", [
    ("num_seeds", 1, r"config\.num_seeds"),
    ("labelled_fraction", 1.0, r"config\.labelled_fraction"),
    ("contexts", (0, 0), r"config\.contexts"),
    ("verdict_context", 2, r"config\.verdict_context"),
    ("env", "gymnax/CartPole-v1", r"config\.env must have continuous actions"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  from experiments import action_free
  from experiments.configs import action_free as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=message):
    action_free.run(config, str(tmp_path))


def test_bad_learner_settings_name_their_config_block(tmp_path):
  from experiments import action_free
  from experiments.configs import action_free as cfg
  config = cfg.get_config()
  config.idm.eval_every = 7   # 3000 steps are not a multiple of 7
  with pytest.raises(ValueError, match=r"config\.idm: .*multiple of eval_every"):
    action_free.run(config, str(tmp_path))
