"""Study C8 (Masked Trajectory Models): its quick run end to end, its verdict rules on
hand cases and its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_mtm_quick(tmp_path):
  from experiments import mtm as study_mtm
  from experiments.configs import mtm as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = study_mtm.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "mtm.png").stat().st_size > 0
  assert list(saved["methods"]) == list(study_mtm.METHODS)
  for m in saved["methods"].values():
    assert f"| {m['label']} |" in table
    for field in ("inverse_dynamics_mse", "forward_dynamics_mse"):
      assert len(m[field]) == 2 and np.all(np.isfinite(m[field])) and min(m[field]) >= 0
  for name, mode in study_mtm.ROLLOUTS:
    values = saved["methods"][name][f"{mode}_normalised"]
    assert len(values) == 2 and np.all(np.isfinite(values))
  ds = saved["dataset"]
  assert ds["train_episodes"] + ds["heldout_episodes"] == ds["episodes"]
  assert 2 <= ds["episodes_with_actions"] < ds["train_episodes"]
  assert saved["parameters"] > 0 and saved["cpu"] in table
  assert all(np.isfinite(v) and v > 0 for v in saved["references"].values())
  assert len(results["verdicts"]) == 8
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table
  assert any("trained 7 methods" in line for line in lines)


def test_noninferiority_and_combined_verdicts():
  from experiments import mtm as study_mtm
  better = np.array([0.2, 0.25, 0.15, 0.22, 0.18])
  assert study_mtm.noninferior(better, 0.1)[0] == "reproduced"
  slightly_worse = np.array([-0.02, -0.04, -0.01, -0.03, -0.05])
  assert study_mtm.noninferior(slightly_worse, 0.1)[0] == "reproduced"
  much_worse = np.array([-0.5, -0.45, -0.55, -0.5, -0.52])
  assert study_mtm.noninferior(much_worse, 0.1)[0] == "contradicted"
  verdict, ci = study_mtm.noninferior(np.array([0.3, -0.4, 0.1, -0.3, 0.2]), 0.1)
  assert verdict == "not at this scale" and ci[3] == 5
  assert study_mtm.combine(["reproduced", "reproduced"]) == "reproduced"
  assert study_mtm.combine(["reproduced", "not at this scale"]) == "not at this scale"
  assert study_mtm.combine(["not at this scale", "contradicted"]) == "contradicted"


def test_verdicts_on_hand_made_results():
  """Each row's sign: MTM better than specialised on both dynamics tasks, no different
  on returns; heteromodal worse on inverse dynamics but better on BC return."""
  from experiments import mtm as study_mtm
  from experiments.configs import mtm as cfg
  config = cfg.get_config()
  seeds = np.arange(5)
  jitter = 0.01 * (seeds - 2)
  m = {"mtm": {"inverse_dynamics_mse": 0.5 + jitter, "forward_dynamics_mse": 0.010 + 0.001 * jitter,
               "bc_normalised": 0.8 + jitter, "rcbc_normalised": 0.8 + 2 * jitter},
       "spec_inverse_dynamics": {"inverse_dynamics_mse": 1.0 + jitter},
       "spec_forward_dynamics": {"forward_dynamics_mse": 0.020 + 0.001 * jitter},
       "spec_bc": {"bc_normalised": 0.8 - jitter},
       "spec_rcbc": {"rcbc_normalised": 0.3 + jitter},
       "heteromodal": {"inverse_dynamics_mse": 1.5 + jitter, "bc_normalised": 0.9 + jitter},
       "actions_only": {"inverse_dynamics_mse": 1.0 - jitter, "bc_normalised": 0.5 + jitter}}
  rows = {r["finding"][:4]: r["verdict"] for r in study_mtm.verdicts(
      {"methods": m, "config": {"action_fraction": 0.05}}, config)}
  assert rows["(1) "] == "reproduced" and rows["(1a)"] == "reproduced"
  assert rows["(1b)"] == "reproduced"
  assert rows["(1c)"] == "reproduced"          # equal within the 0.1 margin
  assert rows["(1d)"] == "reproduced"          # MTM far better on RCBC
  assert rows["(2a)"] == "contradicted"        # heteromodal's action error is higher
  assert rows["(2b)"] == "reproduced"
  assert rows["(2) "] == "contradicted"
  m["mtm"]["inverse_dynamics_mse"] = 2.0 + jitter   # twice the specialised error
  rows = {r["finding"][:4]: r["verdict"] for r in study_mtm.verdicts(
      {"methods": m, "config": {"action_fraction": 0.05}}, config)}
  assert rows["(1a)"] == "contradicted" and rows["(1) "] == "contradicted"


@pytest.mark.parametrize("field,value,message", [
    ("num_seeds", 1, r"config\.num_seeds"),
    ("action_fraction", 1.0, r"config\.action_fraction"),
    ("heldout_fraction", 0.0, r"config\.heldout_fraction"),
    ("heldout_segments", 0, r"config\.heldout_segments"),
    ("eval_episodes", 0, r"config\.eval_episodes"),
    ("relative_margin", 0.0, r"config\.relative_margin"),
    ("env", "gymnax/CartPole-v1", r"config\.env must have continuous actions"),
    ("mtm", {"train_mask": "bc"}, r"config\.mtm\.train_mask is set by the study"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  from experiments import mtm as study_mtm
  from experiments.configs import mtm as cfg
  config = cfg.get_config()
  if field == "mtm":
    config.mtm.update(value)
  else:
    config[field] = value
  with pytest.raises(ValueError, match=message):
    study_mtm.run(config, str(tmp_path))


def test_bad_model_settings_name_their_config_block(tmp_path):
  from experiments import mtm as study_mtm
  from experiments.configs import mtm as cfg
  config = cfg.get_config()
  config.mtm.heads = 5   # does not divide the width 32
  with pytest.raises(ValueError, match=r"config\.mtm: MTMConfig\.heads"):
    study_mtm.run(config, str(tmp_path))
