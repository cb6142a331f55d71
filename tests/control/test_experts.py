"""Experts trained by the library's PPO, their demonstrations, and the benchmark's quick run."""

import json

import jax
import numpy as np
import pytest

from irl_jax.control import data, envs, experts, ppo


def test_cartpole_expert_and_its_demonstrations():
  env = envs.make("gymnax/CartPole-v1")
  config = ppo.PPOConfig(total_timesteps=100_000)
  expert = experts.train_expert(env, jax.random.key(0), config, eval_episodes=8)
  assert expert.mean_return >= 300 and expert.random_return < 40
  demos = experts.demonstrations(env, expert, jax.random.key(1), 3, num_envs=4)
  assert demos.num_episodes == 3
  assert np.isfinite(demos.log_prob).all() and (demos.log_prob <= 0).all()
  assert demos.metadata["expert_return"] == expert.mean_return
  np.testing.assert_allclose(experts.normalised_return(np.array([expert.random_return,
                                                                 expert.mean_return]), expert),
                             [0.0, 1.0], atol=1e-6)
  assert data.episode_returns(demos).mean() > 150


def test_unknown_environments_need_a_config():
  env = envs.make("gymnax/MountainCarContinuous-v0")
  with pytest.raises(ValueError, match="no expert settings"):
    experts.train_expert(env, jax.random.key(0))


def test_control_benchmark_quick(tmp_path):
  from experiments import control_benchmark
  from experiments.configs import control_benchmark as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = control_benchmark.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert (tmp_path / "control_benchmark.png").stat().st_size > 0
  table = (tmp_path / "results.md").read_text()
  r = saved["envs"]["gymnax/CartPole-v1"]
  assert set(r["methods"]) == set(config.methods)
  for m in r["methods"].values():
    assert f"| {m['label']} |" in table
    assert np.asarray(m["normalised"]).shape == (2, 2)  # (demo counts, seeds)
    assert m["run_seconds"] > 0
  # Online methods have curves against environment steps and a throughput.
  for name in ("gail", "airl", "iq_online"):
    assert r["methods"][name]["env_steps_per_second"] > 0
    assert len(r["methods"][name]["curve_steps"]) == len(r["methods"][name]["curve_normalised"][0])
  # BC with five demonstrations of the expert is close to it (the expert balances well).
  assert np.mean(r["methods"]["bc"]["normalised"][1]) > 0.5
  assert "_expert" not in r and "_episodes" not in r
  # The reward transfer: both learned rewards retrained on CartPole with a weaker push.
  tr = saved["transfer"]
  assert tr["params"] == {"force_mag": 7.0} and tr["num_demos"] == 5
  assert set(tr["methods"]) == {"airl", "gail"} and "Reward transfer" in table
  for m in tr["methods"].values():
    assert len(m["retrained"]) == len(m["policy_moved"]) == 2
    assert np.all(np.isfinite(m["retrained"])) and m["retrained_ci"][3] == 2
  assert len(results["verdicts"]) == 2
  for v in results["verdicts"]:
    assert v["verdict"] in ("reproduced", "not at this scale", "contradicted")
    assert f"**{v['verdict']}**" in table
  assert "AIRL − GAIL" in results["verdicts"][1]["deciding"]


def test_control_benchmark_transfer_config_errors(tmp_path):
  from experiments import control_benchmark
  from experiments.configs import control_benchmark as cfg
  config = cfg.get_config()
  config.transfer.env = "gymnax/Acrobot-v1"
  config.envs = ("gymnax/CartPole-v1",)
  with pytest.raises(ValueError, match=r"config\.transfer\.env 'gymnax/Acrobot-v1' is not one"):
    control_benchmark.run(config, str(tmp_path))
  config = cfg.get_config()
  config.transfer.num_demos = 26
  with pytest.raises(ValueError, match=r"config.transfer.num_demos must be in \[1, 25\]"):
    control_benchmark.run(config, str(tmp_path))
