"""The continuous expert-resets study (GAIL from ν0 vs expert resets, best-response vs
no-regret discriminator): its quick run end to end, the censoring rule and its config
errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_expert_resets_continuous_quick(tmp_path):
  from experiments import expert_resets_continuous as erc
  from experiments.configs import expert_resets_continuous as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = erc.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "expert_resets_continuous.png").stat().st_size > 0
  (env_name, r), = saved["envs"].items()
  assert env_name == "gymnax/MountainCarContinuous-v0"
  assert list(r["methods"]) == list(erc.METHODS)
  assert r["demos"]["normalised"] > 0.8          # the noisy scripted expert
  assert r["demos"]["episodes"] == 4 and r["demos"]["steps"] >= 4 * 100
  for m in r["methods"].values():
    assert f"| {m['label']} |" in table
    curve = np.asarray(m["curve"])
    assert curve.shape == (2, len(m["env_steps"])) and np.isfinite(curve).all()
    assert m["env_steps"][-1] == r["budget"]
    # A hit is the first evaluation at the threshold; a censored run sits at the budget.
    for seed, (h, c) in enumerate(zip(m["interactions"], m["censored"], strict=True)):
      reached = curve[seed] >= config.threshold
      assert c == (not reached.any())
      assert h == (r["budget"] if c else m["env_steps"][int(np.argmax(reached))])
  assert r["methods"]["resets_no_regret"]["alpha"] == 0.5
  assert r["methods"]["irl"]["alpha"] == 0.0
  assert len(results["verdicts"]) == 2 and saved["cpu"] in table
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table
  assert any("resets, no-regret" in line for line in lines)


def test_interactions_to_threshold_censors_at_the_budget():
  from experiments.expert_resets_continuous import interactions_to_threshold
  normalised = np.array([[0.1, 0.95, 0.5, 0.99],    # first reaches 0.9 at the 2nd evaluation
                         [0.1, 0.2, 0.3, 0.4]])     # never: censored at the budget
  hits, censored = interactions_to_threshold(normalised, np.array([10, 20, 30, 40]), 0.9)
  np.testing.assert_array_equal(hits, [20, 40])
  np.testing.assert_array_equal(censored, [False, True])


@pytest.mark.parametrize("field,value,message", [
    ("num_seeds", 1, r"config\.num_seeds"),
    ("alpha", 0.0, r"config\.alpha"),
    ("threshold", 1.5, r"config\.threshold"),
    ("eval_every", 0, r"config\.eval_every"),
    ("envs", ("gymnax/MountainCar-v0",), r"config\.envs: no expert"),
    ("envs", ("gymnax/Acrobot-v1",), r"config\.envs: 'gymnax/Acrobot-v1' has no entry"),
    ("adversarial", {"disc_lr": -1.0}, r"config\.adversarial: .*disc_lr"),
    ("adversarial", {"disc_replay": 0}, r"config\.adversarial: \['disc_replay'\] are set"),
    ("expert_noise", -0.1, r"config\.expert_noise"),
    ("expert_steps_scale", 0.0, r"config\.expert_steps_scale"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  from experiments import expert_resets_continuous as erc
  from experiments.configs import expert_resets_continuous as cfg
  config = cfg.get_config()
  config.quick = True
  with config.unlocked():
    if field == "adversarial":
      config.adversarial.update(value)
    else:
      config[field] = value
    if field in config.quick_settings:   # the quick run's value is the one checked
      config.quick_settings[field] = value
  with pytest.raises(ValueError, match=message):
    erc.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
