"""Experts trained by the library's PPO, their demonstrations, and the control benchmark:
its quick runs on the gymnax laptop suite and on Brax (`control_benchmark_brax.py`), and
its config checks."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from irl_jax.control import data, envs, experts, ppo, sac


def test_cartpole_expert_and_its_demonstrations():
  env = envs.make("gymnax/CartPole-v1")
  config = ppo.PPOConfig(total_timesteps=100_000)
  expert = experts.train_expert(env, jax.random.key(0), config, eval_episodes=8)
  assert expert.mean_return >= 300 and expert.random_return < 40
  demos = experts.demonstrations(env, expert, jax.random.key(1), 3, num_envs=4)
  assert demos.num_episodes == 3
  assert np.isfinite(demos.log_prob).all() and (demos.log_prob <= 0).all()
  assert demos.metadata["expert_return"] == expert.mean_return
  assert expert.kind == "PPO" and demos.metadata["policy"] == "irl_jax.control.experts (PPO)"
  np.testing.assert_allclose(experts.normalised_return(np.array([expert.random_return,
                                                                 expert.mean_return]), expert),
                             [0.0, 1.0], atol=1e-6)
  assert data.episode_returns(demos).mean() > 150


def test_sac_expert_and_its_demonstrations():
  """A SACConfig gives a SAC expert: 6k steps solve most of Pendulum (random play is
  about −1200, a solved pendulum about −150)."""
  env = envs.make("gymnax/Pendulum-v1")
  config = sac.SACConfig(total_timesteps=6_000, learning_starts=500, batch_size=128,
                         hidden=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
  expert = experts.train_expert(env, jax.random.key(0), config, eval_episodes=8)
  assert expert.kind == "SAC" and expert.mean_return > -400 and expert.random_return < -900
  assert "alpha" in expert.metrics
  demos = experts.demonstrations(env, expert, jax.random.key(1), 2, num_envs=2)
  assert demos.num_episodes == 2 and demos.metadata["policy"] == "irl_jax.control.experts (SAC)"
  assert np.isfinite(demos.log_prob).all()
  assert data.episode_returns(demos).mean() > -600


def test_unknown_environments_need_a_config():
  env = envs.make("gymnax/MountainCarContinuous-v0")
  with pytest.raises(ValueError, match="no expert settings"):
    experts.train_expert(env, jax.random.key(0))
  with pytest.raises(TypeError, match=r"config must be a ppo\.PPOConfig or a "
                                      r"sac\.SACConfig, got dict"):
    experts.train_expert(env, jax.random.key(0), {"total_timesteps": 1000})


def run_quick(cfg, tmp_path):
  """The benchmark's quick variant of config module `cfg`: `(config, results, the saved
  results.json, results.md)`, with its plot written."""
  from experiments import control_benchmark
  config = cfg.get_config()
  config.quick = True
  results = control_benchmark.run(config, str(tmp_path), log=lambda line: None)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert (tmp_path / "control_benchmark.png").stat().st_size > 0
  return config, results, saved, (tmp_path / "results.md").read_text()


def test_control_benchmark_quick(tmp_path):
  from experiments.configs import control_benchmark as cfg
  config, results, saved, table = run_quick(cfg, tmp_path)
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


def test_control_benchmark_on_mountaincar_uses_the_scripted_expert(tmp_path):
  """MountainCarContinuous has no PPO expert settings: the benchmark takes the scripted
  controller as the expert, and GAIL's PPO comes from `config.generator_ppo`."""
  from experiments import control_benchmark
  from experiments.configs import control_benchmark as cfg
  config = cfg.get_config()
  config.envs = ("gymnax/MountainCarContinuous-v0",)
  config.transfer.enabled = False
  config.methods = ("bc", "gail")
  config.num_demos, config.num_seeds, config.eval_episodes = (1,), 2, 2
  config.env_steps["MountainCarContinuous-v0"] = 4096
  config.bc.num_steps = 200
  config.generator_ppo["MountainCarContinuous-v0"].num_envs = 4
  results = control_benchmark.run(config, str(tmp_path), log=lambda line: None)
  r = results["envs"]["gymnax/MountainCarContinuous-v0"]
  table = (tmp_path / "results.md").read_text()
  assert r["expert"] == "scripted" and "(scripted expert " in table
  # Energy pumping reaches the flag (about 80-90); uniform actions only pay for fuel.
  assert r["expert_return"] > 70 and r["random_return"] < -20
  # GAIL ran with the configured generator: 4 environments x 128 steps per round.
  assert r["methods"]["gail"]["env_steps_per_run"] == 4096
  assert len(r["methods"]["gail"]["curve_steps"]) == 4096 // (4 * 128)
  # BC clones the bang-bang controller from one noisy demonstration.
  assert np.mean(r["methods"]["bc"]["normalised"][0]) > 0.8
  assert results["verdicts"][0]["finding"].startswith("MountainCarContinuous-v0: IRL ≥ BC")


def test_control_benchmark_generator_ppo_config_errors(tmp_path, monkeypatch):
  from experiments import control_benchmark
  from experiments.configs import control_benchmark as cfg

  def no_expert(*args, **kwargs):
    raise AssertionError("an expert was made before the config was checked")

  monkeypatch.setattr(control_benchmark.experts, "train_expert", no_expert)
  monkeypatch.setattr(control_benchmark.experts, "scripted_expert", no_expert)

  def mountaincar():
    config = cfg.get_config()
    config.envs = ("gymnax/CartPole-v1", "gymnax/MountainCarContinuous-v0")
    config.transfer.enabled = False
    return config

  def fails(config, match):
    with pytest.raises(ValueError, match=match):
      control_benchmark.run(config, str(tmp_path))

  config = mountaincar()
  del config.generator_ppo["MountainCarContinuous-v0"]
  fails(config, r"config\.generator_ppo\.MountainCarContinuous-v0: GAIL and AIRL need PPO "
                "settings for 'gymnax/MountainCarContinuous-v0', whose expert is scripted")
  config = mountaincar()
  config.generator_ppo["MountainCarContinuous-v0"].momentum = 0.9
  fails(config, r"config\.generator_ppo\.MountainCarContinuous-v0: .*unexpected keyword "
                "argument 'momentum'")
  config = mountaincar()
  config.generator_ppo["MountainCarContinuous-v0"].num_envs = 0
  fails(config, r"config\.generator_ppo\.MountainCarContinuous-v0: .*num_envs")
  config = mountaincar()
  config.env_steps["MountainCarContinuous-v0"] = 1000
  fails(config, r"config\.env_steps\.MountainCarContinuous-v0 or config\.generator_ppo\."
                r"MountainCarContinuous-v0: PPOConfig\.total_timesteps: must be at least "
                r"num_envs·num_steps = 2048 \(got 1000\)")
  config = mountaincar()
  config.generator_ppo["MountainCarContinuous-v0"].total_timesteps = 10_000
  fails(config, r"config\.generator_ppo\.MountainCarContinuous-v0\.total_timesteps: the "
                r"budget is config\.env_steps\['MountainCarContinuous-v0'\]")
  # A generator setting that AdversarialConfig refuses names both fields.
  config = mountaincar()
  config.generator_ppo["MountainCarContinuous-v0"].gamma = 1.0
  fails(config, r"config\.adversarial or config\.generator_ppo\.MountainCarContinuous-v0: "
                r"AdversarialConfig\.absorbing")
  config = mountaincar()
  config.generator_ppo.MountainCar = {"gamma": 0.99}
  fails(config, r"config\.generator_ppo: \['MountainCar'\] name no known environment")
  config = mountaincar()
  config.generator_ppo = ml_collections.ConfigDict({"CartPole-v1": 0.99})
  fails(config, r"config\.generator_ppo\.CartPole-v1 must map PPOConfig fields")
  # The transfer trains a PPO expert on the changed dynamics: a scripted one will not do.
  config = mountaincar()
  config.transfer = ml_collections.ConfigDict(dict(
      enabled=True, env="gymnax/MountainCarContinuous-v0", params=dict(power=0.001),
      num_demos=5))
  fails(config, r"config\.transfer\.env 'gymnax/MountainCarContinuous-v0' has no PPO expert "
                "settings")
  # The transfer runs GAIL and AIRL whatever config.methods holds: their settings are
  # checked too.
  config = cfg.get_config()
  config.methods = ("bc",)
  config.generator_ppo["Pendulum-v1"] = {"momentum": 0.9}
  fails(config, r"config\.generator_ppo\.Pendulum-v1: .*unexpected keyword argument "
                "'momentum'")
  config = cfg.get_config()
  config.methods = ("bc",)
  config.adversarial.disc_lr = -1.0
  fails(config, r"config\.adversarial \(the transfer\): .*disc_lr")
  # Without GAIL, AIRL and the transfer no generator settings are needed, and an entry
  # for a known environment outside config.envs stays unchecked (a run on fewer of them).
  config = mountaincar()
  del config.generator_ppo["MountainCarContinuous-v0"]
  config.methods = ("bc",)
  config.generator_ppo["Acrobot-v1"] = {"momentum": 0.9}
  control_benchmark.check_config(config)


def test_generator_ppo_is_the_experts_ppo_where_the_expert_is_ppo():
  """CartPole, Acrobot, Pendulum and Brax's inverted pendulum: GAIL's and AIRL's PPO is
  the expert's settings with the benchmark's budget, as before `generator_ppo` existed."""
  import dataclasses

  from experiments import control_benchmark
  from experiments.configs import control_benchmark as cfg
  from experiments.configs import control_benchmark_brax as cfg_brax
  for module in (cfg, cfg_brax):
    config = module.get_config()
    for name in config.envs:
      if name in experts.EXPERT_CONFIGS:
        steps = config.env_steps[control_benchmark.short(name)]
        assert control_benchmark.generator_ppo(config, name) == dataclasses.replace(
            experts.EXPERT_CONFIGS[name], total_timesteps=steps), name
  config = cfg.get_config()
  inner = control_benchmark.generator_ppo(config, "gymnax/MountainCarContinuous-v0")
  assert (inner.gamma, inner.num_envs, inner.reward_scale, inner.total_timesteps) == (
      0.99, 16, 1.0, 300_000)


def test_control_benchmark_brax_quick(tmp_path):
  pytest.importorskip("brax")
  from experiments.configs import control_benchmark_brax as cfg
  _, results, saved, table = run_quick(cfg, tmp_path)
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


def test_control_benchmark_config_errors_come_before_any_training(tmp_path, monkeypatch):
  pytest.importorskip("brax")
  from experiments import control_benchmark
  from experiments.configs import control_benchmark_brax as cfg

  def no_training(*args, **kwargs):
    raise AssertionError("an expert was trained before the config was checked")

  monkeypatch.setattr(control_benchmark.experts, "train_expert", no_training)

  def _fails(config, tmp_path, match):
    with pytest.raises(ValueError, match=match):
      control_benchmark.run(config, str(tmp_path))

  def two_envs():  # the bad field is on the second environment
    config = cfg.get_config()
    config.envs = ("gymnax/CartPole-v1", "brax/inverted_pendulum")
    config.env_steps["CartPole-v1"] = 4096
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
