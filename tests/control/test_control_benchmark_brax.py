"""The control benchmark on the Brax scale-out suite (`control_benchmark_brax.py`)."""

import json

import ml_collections
import numpy as np
import pytest

pytest.importorskip("brax")

from experiments import control_benchmark
from experiments.configs import control_benchmark_brax as cfg


def test_control_benchmark_brax_quick(tmp_path):
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = control_benchmark.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert (tmp_path / "control_benchmark.png").stat().st_size > 0
  table = (tmp_path / "results.md").read_text()
  assert set(saved["envs"]) == {"brax/inverted_pendulum"}
  assert saved["config"]["env_options"]["inverted_pendulum"] == {
      "backend": "positional", "episode_length": 1000}
  r = saved["envs"]["brax/inverted_pendulum"]
  # The library's PPO expert balances the pole for most of the 1000-step episode;
  # uniform random play drops it within a few dozen steps.
  assert r["expert_return"] > 500 and r["random_return"] < 100
  # Demonstrations are whole episodes of the Brax environment (at most 1000 steps each).
  assert len(r["demo_returns"]) == 5 and max(r["demo_returns"]) <= 1000
  assert set(r["methods"]) == {"bc", "gail", "iq_offline"}
  for m in r["methods"].values():
    assert f"| {m['label']} |" in table
    assert np.asarray(m["normalised"]).shape == (2, 2)  # (demo counts, seeds)
    assert np.all(np.isfinite(m["normalised"]))
  gail = r["methods"]["gail"]
  assert gail["env_steps_per_second"] > 0
  assert gail["env_steps_per_run"] == 32_768
  assert len(gail["curve_steps"]) == len(gail["curve_normalised"][0])
  # BC on five demonstrations of a balancing expert balances too.
  assert np.mean(r["methods"]["bc"]["normalised"][1]) > 0.5
  assert "transfer" not in saved
  assert len(results["verdicts"]) == 1
  v = results["verdicts"][0]
  assert v["finding"].startswith("inverted_pendulum: IRL ≥ BC")
  assert f"**{v['verdict']}**" in table


def _fails(config, tmp_path, match):
  with pytest.raises(ValueError, match=match):
    control_benchmark.run(config, str(tmp_path))


def test_control_benchmark_config_errors_come_before_any_training(tmp_path, monkeypatch):
  def no_training(*args, **kwargs):
    raise AssertionError("an expert was trained before the config was checked")

  monkeypatch.setattr(control_benchmark.experts, "train_expert", no_training)

  def two_envs():  # the bad field is on the second environment
    config = cfg.get_config()
    config.envs = ("gymnax/CartPole-v1", "brax/inverted_pendulum")
    config.env_steps["CartPole-v1"] = 1000
    return config

  config = two_envs()
  config.env_options.inverted_pendulum.frames = 3
  _fails(config, tmp_path, r"config\.env_options\.inverted_pendulum: unknown option\(s\) "
                           r"\['frames'\]")
  config = two_envs()
  config.env_options.inverted_pendulum.episode_length = 0
  _fails(config, tmp_path, r"config\.env_options\.inverted_pendulum\.episode_length must be "
                           "a positive integer, got 0")
  config = two_envs()
  config.env_options.inverted_pendulum.backend = "mjxx"
  _fails(config, tmp_path, r"config\.env_options\.inverted_pendulum\.backend must be one of "
                           r"\['generalized', 'positional', 'spring', 'mjx'\], got 'mjxx'")
  config = two_envs()
  config.env_options.hopper = {"backend": "mjx"}
  _fails(config, tmp_path, r"config\.env_options: \['hopper'\] name no environment")
  config = two_envs()
  config.env_options = ml_collections.ConfigDict({"inverted_pendulum": "mjx"})
  _fails(config, tmp_path, r"config\.env_options\.inverted_pendulum must map options")
  # gymnax environments take no Brax options.
  config = two_envs()
  config.env_options["CartPole-v1"] = {"backend": "mjx"}
  _fails(config, tmp_path, r"config\.env_options\.CartPole-v1: \['backend'\] apply to Brax "
                           "environments only")
  # An environment without expert settings is named.
  config = two_envs()
  config.envs = ("gymnax/CartPole-v1", "brax/hopper")
  config.env_steps.hopper = 1000
  _fails(config, tmp_path, r"config\.envs: no expert settings for 'brax/hopper'")
  # The methods and their settings.
  config = two_envs()
  config.methods = ("bc", "dagger")
  _fails(config, tmp_path, r"config\.methods: unknown method 'dagger'")
  config = two_envs()
  config.bc.momentum = 0.9
  _fails(config, tmp_path, r"config\.bc: .*unexpected keyword argument 'momentum'")
  config = two_envs()
  config.adversarial.disc_lr = -1.0
  _fails(config, tmp_path, r"config\.adversarial: .*disc_lr")
  config = two_envs()
  config.num_demos = (0, 5)
  _fails(config, tmp_path, r"config\.num_demos must be a positive integer, got 0")
