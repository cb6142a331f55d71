"""The reward-programs study (dense, buggy, revised and hacking programs vs the sparse task
reward on MountainCar): its quick run end to end, its evaluation and its config errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import envs
from irl_jax.control import reward_programs as rp

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_reward_programs_quick(tmp_path):
  from experiments import reward_programs
  from experiments.configs import reward_programs as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = reward_programs.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "reward_programs.png").stat().st_size > 0
  assert set(saved["methods"]) == set(reward_programs.TRAINED)
  for m in saved["methods"].values():
    assert f"| {m['label']} |" in table
    success = np.asarray(m["success"])
    assert success.shape == (2,) and np.all((success >= 0) & (success <= 1))
    assert np.all(np.asarray(m["length"]) >= 1) and np.all(np.asarray(m["length"]) <= 200)
    assert np.all(np.isfinite(m["program_return"])) and m["run_seconds"] > 0
  # The buggy program pays for losing energy, the good one for gaining it: their program
  # returns have opposite signs on every seed.
  assert np.all(np.asarray(saved["methods"]["good"]["program_return"]) > 0)
  assert np.all(np.asarray(saved["methods"]["buggy"]["program_return"]) < 0)
  # Validation: the two invalid programs are rejected, with the reason.
  assert not saved["validation"]["nan_log"]["ok"]
  assert "non-finite" in saved["validation"]["nan_log"]["problems"][0]
  assert "use jnp.where" in saved["validation"]["python_branch"]["problems"][0]
  assert all(saved["validation"][n]["ok"] for n in reward_programs.TRAINED)
  # Provenance: the good program is the revision of the buggy one.
  good, buggy = saved["programs"]["good"], saved["programs"]["buggy"]
  assert good["provenance"]["parent"] == buggy["hash"]
  assert good["provenance"]["feedback_round"] == 1
  assert rp.RewardProgram.from_json(good).hash == good["hash"]
  assert len(results["verdicts"]) == 4 and saved["cpu"] in table
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table
  assert saved["verdicts"][-1]["verdict"] == "reproduced"
  assert any("rejected" in line for line in lines)


def test_evaluate_counts_success_length_and_program_return():
  from experiments import reward_programs
  env = envs.make("gymnax/MountainCar-v0")
  # An energy-pumping controller (push in the direction of motion) reaches the flag; doing
  # nothing never does.
  pump = lambda k, o: jnp.where(o[1] >= 0, 2, 0)
  idle = lambda k, o: jnp.int32(1)
  step_count = lambda o, a, n: jnp.float32(1.0)
  ev = jax.jit(lambda k: reward_programs.evaluate(env, pump, step_count, k, 4))(
      jax.random.key(0))
  assert float(ev["success"]) == 1.0
  assert 50 < float(ev["length"]) < 200
  assert float(ev["program_return"]) == pytest.approx(float(ev["length"]))
  ev = jax.jit(lambda k: reward_programs.evaluate(env, idle, step_count, k, 4))(
      jax.random.key(0))
  assert float(ev["success"]) == 0.0 and float(ev["length"]) == 200.0
  assert float(ev["program_return"]) == 200.0


@pytest.mark.parametrize("field,value,message", [
    ("num_seeds", 1, r"config\.num_seeds"),
    ("eval_episodes", 0, r"config\.eval_episodes"),
    ("time_limit_s", 0.0, r"config\.time_limit_s"),
    ("env", "gymnax/Acrobot-v1", r"config\.env"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  from experiments import reward_programs
  from experiments.configs import reward_programs as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=message):
    reward_programs.run(config, str(tmp_path))


def test_bad_ppo_settings_name_config_ppo(tmp_path):
  from experiments import reward_programs
  from experiments.configs import reward_programs as cfg
  config = cfg.get_config()
  config.ppo.num_minibatches = 7  # does not divide num_envs × num_steps
  with pytest.raises(ValueError, match=r"config\.ppo"):
    reward_programs.run(config, str(tmp_path))
