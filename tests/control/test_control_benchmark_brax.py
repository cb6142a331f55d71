"""The control benchmark on the Brax scale-out suite (`control_benchmark_brax.py`)."""

import json

import numpy as np
import pytest

pytest.importorskip("brax")

from experiments import control_benchmark
from experiments.configs import control_benchmark as gymnax_cfg
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


def test_control_benchmark_env_options_errors(tmp_path):
  config = cfg.get_config()
  config.env_options.inverted_pendulum.frames = 3
  with pytest.raises(ValueError, match=r"config\.env_options\.inverted_pendulum: unknown "
                                       r"option\(s\) \['frames'\]"):
    control_benchmark.run(config, str(tmp_path))
  config = cfg.get_config()
  config.env_options.inverted_pendulum.episode_length = 0
  with pytest.raises(ValueError, match=r"config\.env_options\.inverted_pendulum\.episode_length "
                                       "must be a positive integer, got 0"):
    control_benchmark.run(config, str(tmp_path))
  # gymnax environments take no Brax options.
  config = gymnax_cfg.get_config()
  config.env_options = {"CartPole-v1": {"backend": "mjx"}}
  with pytest.raises(ValueError, match=r"config\.env_options\.CartPole-v1: \['backend'\] "
                                       "apply to Brax environments only"):
    control_benchmark.run(config, str(tmp_path))
  # An environment without expert settings is named before anything trains.
  config = cfg.get_config()
  config.envs = ("brax/hopper",)
  config.env_steps = {"hopper": 1000}
  with pytest.raises(ValueError, match=r"config\.envs: no expert settings for 'brax/hopper'"):
    control_benchmark.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
