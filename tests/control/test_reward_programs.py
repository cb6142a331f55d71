"""Reward programs: the sandbox's refusals (hostile programs), validation, provenance and
records, and the learners' reward hook."""

import json
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import envs, ppo
from irl_jax.control import reward_programs as rp

GOOD = '''
"""Energy shaping for the car."""
def energy(o):
  return 0.5 * o.velocity ** 2 + task.gravity / 3.0 * jnp.sin(3.0 * o.position)

def reward(obs, action, next_obs):
  success = jnp.where(next_obs.position >= task.goal_position, 1.0, 0.0)
  return success + 1000.0 * (0.99 * energy(next_obs) - energy(obs)) - 0.1 * (action == 1)
'''


def program(src, abstraction="mountain_car", **prov):
  return rp.RewardProgram(src, abstraction, rp.Provenance(**prov))


def reference_good(obs, action, next_obs):
  """The GOOD program written directly in float64 NumPy."""
  def energy(o):
    return 0.5 * o[..., 1] ** 2 + 0.0025 / 3.0 * np.sin(3.0 * o[..., 0])
  success = (next_obs[..., 0] >= 0.5).astype(float)
  return success + 1000.0 * (0.99 * energy(next_obs) - energy(obs)) - 0.1 * (action == 1)


def sample(n=32, seed=0):
  rng = np.random.default_rng(seed)
  obs = np.stack([rng.uniform(-1.2, 0.6, n), rng.uniform(-0.07, 0.07, n)], -1)
  next_obs = np.stack([rng.uniform(-1.2, 0.6, n), rng.uniform(-0.07, 0.07, n)], -1)
  obs[0, 0], next_obs[0, 0] = 0.45, 0.55  # one success
  return obs.astype(np.float32), rng.integers(0, 3, n), next_obs.astype(np.float32)


def test_good_program_matches_numpy_reference_eager_jit_and_vmap():
  lp = rp.load(program(GOOD))
  obs, action, next_obs = sample()
  want = reference_good(obs.astype(np.float64), action, next_obs.astype(np.float64))
  np.testing.assert_allclose(np.asarray(lp.batched(obs, action, next_obs)), want, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.jit(lp.batched)(obs, action, next_obs)), want,
                             rtol=1e-4, atol=1e-5)
  one = lp.reward(obs[0], action[0], next_obs[0])
  assert one.shape == () and one.dtype == jnp.float32
  assert float(one) == pytest.approx(want[0], rel=1e-4)
  report = rp.validate(lp, obs, action, next_obs)
  assert report.ok and report.problems == ()
  assert report.reward_max == pytest.approx(want.max(), rel=1e-4, abs=1e-5)


HOSTILE = {
    "import": ("import os\ndef reward(obs, action, next_obs):\n  return 0.0\n", "imports", 1),
    "from_import": ("def reward(obs, action, next_obs):\n  from os import system\n  return 0.0\n",
                    "imports", 2),
    "dunder_import": ("def reward(obs, action, next_obs):\n  __import__('os')\n  return 0.0\n",
                      "underscore", 2),
    "open": ("def reward(obs, action, next_obs):\n  f = open\n  return 0.0\n", "'open'", 2),
    "eval": ("def reward(obs, action, next_obs):\n  return eval\n", "'eval'", 2),
    "getattr": ("def reward(obs, action, next_obs):\n  g = getattr\n  return 0.0\n",
                "'getattr'", 2),
    "globals_walk": ("def reward(obs, action, next_obs):\n  g = reward.__globals__\n"
                     "  return 0.0\n", "underscore", 2),
    "class_walk": ("def reward(obs, action, next_obs):\n  x = ().__class__.__bases__\n"
                   "  return 0.0\n", "underscore", 2),
    "func_attr_walk": ("def reward(obs, action, next_obs):\n  c = jnp.sum.lower\n  return 0.0\n",
                       "not a field", 2),
    "jnp_escape": ("def reward(obs, action, next_obs):\n  return jnp.load('x')\n",
                   "jnp.load", 2),
    "obs_private": ("def reward(obs, action, next_obs):\n  return obs.data\n", "not a field", 2),
    "while": ("def reward(obs, action, next_obs):\n  while True:\n    pass\n  return 0.0\n",
              "while", 2),
    "lambda": ("def reward(obs, action, next_obs):\n  f = lambda: 0\n  return 0.0\n",
               "lambda", 2),
    "string": ("def reward(obs, action, next_obs):\n  s = 'rm -rf'\n  return 0.0\n",
               "string", 2),
    "huge_int": ("def reward(obs, action, next_obs):\n  return 10000000000\n", "exceeds", 2),
    "power_bomb": ("def reward(obs, action, next_obs):\n  return 10 ** 10 ** 10\n", "**", 2),
    "repetition": ("def reward(obs, action, next_obs):\n  x = [0] * 1000000\n  return 0.0\n",
                   "repetition", 2),
    "comprehension": ("def reward(obs, action, next_obs):\n  return sum([i for i in range(3)])\n",
                      "ListComp", 2),
    "global": ("def reward(obs, action, next_obs):\n  global jnp\n  return 0.0\n", "global", 2),
    "rebind_jnp": ("jnp = 1\ndef reward(obs, action, next_obs):\n  return 0.0\n", "rebound", 1),
    "try": ("def reward(obs, action, next_obs):\n  try:\n    pass\n  except Exception:\n"
            "    pass\n  return 0.0\n", "Try", 2),
    "with_open": ("def reward(obs, action, next_obs):\n  with obs:\n    pass\n  return 0.0\n",
                  "With", 2),
    "decorator": ("@jnp.where\ndef reward(obs, action, next_obs):\n  return 0.0\n", "decorator",
                  2),
    "no_reward": ("def score(obs, action, next_obs):\n  return 0.0\n", "no top-level", None),
    "wrong_arity": ("def reward(obs, action):\n  return 0.0\n", "parameters", 1),
    "top_level_call": ("x = abs(-1)\nprint\ndef reward(obs, action, next_obs):\n  return 0.0\n",
                       "'print'", 2),
    "syntax": ("def reward(obs, action, next_obs)\n  return 0.0\n", "parse", 1),
    "set_attr": ("def reward(obs, action, next_obs):\n  obs.position = 1.0\n  return 0.0\n",
                 "assigned", 2),
    "task_unknown": ("def reward(obs, action, next_obs):\n  return task.secret\n", "task.secret",
                     2),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_are_refused_with_the_line(name):
  src, message, line = HOSTILE[name]
  with pytest.raises(rp.SandboxViolation) as e:
    rp.load(program(src))
  assert message in str(e.value), str(e.value)
  assert e.value.line == line, str(e.value)
  if line is not None:
    assert f"line {line}" in str(e.value)


def test_size_bounds():
  long_src = "def reward(obs, action, next_obs):\n" + "  x = 1.0\n" * 3000 + "  return x\n"
  with pytest.raises(rp.SandboxViolation, match="max_chars"):
    rp.load(program(long_src))
  with pytest.raises(rp.SandboxViolation, match="max_nodes"):
    rp.load(program(long_src), max_chars=10**6)


def test_namespace_holds_only_the_provided_names():
  # Even if the static checks were bypassed, the builtins are the whitelist only.
  lp = rp.load(program("def reward(obs, action, next_obs):\n  return 0.0\n"))
  g = lp._fn.__globals__
  assert set(g["__builtins__"]) == set(rp._BUILTINS)
  assert "open" not in g["__builtins__"] and "__import__" not in g["__builtins__"]
  assert not hasattr(g["jnp"], "load") and not hasattr(g["jnp"], "numpy")


def test_observation_views_refuse_other_attributes_at_run_time():
  view = rp.MOUNTAIN_CAR.view(jnp.array([0.1, 0.2]))
  assert float(view.velocity) == pytest.approx(0.2)
  with pytest.raises(rp.SandboxViolation, match="no field 'speed'"):
    view.speed  # noqa: B018
  with pytest.raises(rp.SandboxViolation, match="read-only"):
    view.position = 1.0


def test_infinite_loop_times_out_naming_the_line():
  src = ("def reward(obs, action, next_obs):\n  x = 0.0\n  for i in range(1000000):\n"
         "    for j in range(1000000):\n      x = x + 1.0\n  return x\n")
  lp = rp.load(program(src), time_limit_s=0.3)
  obs, action, next_obs = sample(4)
  t0 = time.perf_counter()
  with pytest.raises(rp.ProgramTimeout, match=r"time_limit_s=0\.3") as e:
    rp.validate(lp, obs, action, next_obs)
  assert time.perf_counter() - t0 < 10
  assert e.value.line in (3, 4, 5)


def test_work_in_c_and_huge_arrays_are_bounded():
  obs, action, next_obs = sample(4)
  # `sum` over a range runs in C, out of the line tracer's reach: ranges are bounded.
  src = "def reward(obs, action, next_obs):\n  n = 1000000 * 1000000\n  return sum(range(n))\n"
  with pytest.raises(rp.SandboxViolation, match="range") as e:
    rp.validate(rp.load(program(src)), obs, action, next_obs)
  assert e.value.line == 3 and e.value.program_hash is not None
  # An outer product of 10^5 × 10^5 is refused from its trace, before anything is allocated.
  src = ("def reward(obs, action, next_obs):\n  x = jnp.array(range(100000)) * 1.0\n"
         "  return jnp.sum(x[:, None] * x[None, :])\n")
  t0 = time.perf_counter()
  with pytest.raises(rp.ValidationError, match=r"\(100000, 100000\).*max_elements"):
    rp.validate(rp.load(program(src)), obs, action, next_obs)
  assert time.perf_counter() - t0 < 10
  # Within the bound it is accepted.
  small = src.replace("100000", "100")
  assert rp.validate(rp.load(program(small)), obs, action, next_obs).ok


RED_TEAM = {
    # Top-level work runs at load time, outside validation: only numeric constants there.
    "top_level_power": ("X = 1000000 ** 16\ndef reward(obs, action, next_obs):\n  return 0.0\n",
                        "top level", 1),
    "top_level_alloc": ("X = jnp.zeros_like(1.0)\ndef reward(obs, action, next_obs):\n"
                        "  return 0.0\n", "top level", 1),
    # State that survives between calls (a counter in a list) lets a program behave during
    # validation and misbehave later: no sequence can be kept in a name.
    "kept_list": ("def reward(obs, action, next_obs):\n  c = [0]\n  return 0.0\n",
                  "lists and tuples", 2),
    "list_growth": ("def reward(obs, action, next_obs):\n  a = (0,)\n  return 0.0\n",
                    "lists and tuples", 2),
    "complex": ("def reward(obs, action, next_obs):\n  return abs(1e999j)\n", "complex", 2),
    "rebind_param": ("def f(jnp):\n  return 0.0\ndef reward(obs, action, next_obs):\n"
                     "  return f(1.0)\n", "rebound", 1),
    "double_star": ("def reward(obs, action, next_obs):\n  return jnp.clip(obs.position, **obs)\n",
                    "`**`", 2),
}


@pytest.mark.parametrize("name", sorted(RED_TEAM))
def test_red_team_programs_are_refused(name):
  src, message, line = RED_TEAM[name]
  with pytest.raises(rp.SandboxViolation, match=re.escape(message)) as e:
    rp.load(program(src))
  assert e.value.line == line, str(e.value)


def test_integers_cannot_grow_without_bound():
  # x = x * x doubles the bits each line, in C: stopped at a few thousand bits.
  src = ("def reward(obs, action, next_obs):\n  x = len(range(1000))\n"
         "  for i in range(100):\n    x = x * x\n  return 0.0\n")
  t0 = time.perf_counter()
  with pytest.raises(rp.SandboxViolation, match="integer 'x' has more than") as e:
    rp.load(program(src)).reward(np.zeros(2), 0, np.zeros(2))
  assert e.value.line in (3, 4) and time.perf_counter() - t0 < 5


def test_a_non_finite_eager_reward_fails_validation():
  src = "def reward(obs, action, next_obs):\n  return jnp.log(obs.velocity - obs.velocity)\n"
  obs, action, next_obs = sample(4)
  report = rp.validate(rp.load(program(src)), obs, action, next_obs, raise_on_error=False)
  assert not report.ok and "non-finite reward" in report.problems[0]


def test_infinite_recursion_is_a_validation_error():
  src = "def f(x):\n  return f(x)\n\ndef reward(obs, action, next_obs):\n  return f(1.0)\n"
  lp = rp.load(program(src))
  obs, action, next_obs = sample(4)
  with pytest.raises(rp.ValidationError, match="recursion"):
    rp.validate(lp, obs, action, next_obs)


def test_a_timeout_leaves_the_previous_tracer_in_place():
  import sys
  marker = lambda *a: None
  previous = sys.gettrace()
  sys.settrace(marker)
  try:
    src = ("def reward(obs, action, next_obs):\n  x = 0.0\n  for i in range(1000000):\n"
           "    for j in range(1000000):\n      x = x + 1.0\n  return x\n")
    lp = rp.load(program(src), time_limit_s=0.05)
    with pytest.raises(rp.ProgramTimeout):
      lp.reward(np.zeros(2), 0, np.zeros(2))
    assert sys.gettrace() is marker
  finally:
    sys.settrace(previous)


@pytest.mark.parametrize("src,message,line", [
    ("def reward(obs, action, next_obs):\n  return jnp.log(next_obs.velocity)\n", "non-finite",
     None),
    ("def reward(obs, action, next_obs):\n  if next_obs.position > 0.5:\n    return 1.0\n"
     "  return 0.0\n", "use jnp.where", 2),
    ("def reward(obs, action, next_obs):\n  return jnp.stack([obs.position, obs.velocity])\n",
     "not a scalar", None),
    ("def reward(obs, action, next_obs):\n  return obs.position[3]\n", "IndexError", 2),
    ("def reward(obs, action, next_obs):\n  return jnp.sqrt(next_obs.velocity) * 0.0 + 1.0 / "
     "(obs.position - obs.position)\n", "non-finite", None),
])
def test_validation_rejects_programs_that_cannot_train(src, message, line):
  lp = rp.load(program(src))
  obs, action, next_obs = sample()
  with pytest.raises(rp.ValidationError, match=message) as e:
    rp.validate(lp, obs, action, next_obs)
  if line is not None:
    assert e.value.line == line
  report = rp.validate(lp, obs, action, next_obs, raise_on_error=False)
  assert not report.ok and len(report.problems) >= 1 and message in report.problems[0]


def test_validation_names_bad_sample_shapes():
  lp = rp.load(program(GOOD))
  with pytest.raises(ValueError, match="obs\\[B, >=2\\]"):
    rp.validate(lp, np.zeros((4, 1)), np.zeros(4), np.zeros((4, 1)))


def test_hash_provenance_and_records(tmp_path):
  p0 = program(GOOD, prompt="write a reward", model="m", feedback_round=0)
  p1 = rp.RewardProgram(GOOD + "\n", "mountain_car",
                        rp.Provenance("feedback", "m", 1, parent=p0.hash), "fixed")
  assert p0.hash != p1.hash and len(p0.hash) == 64
  assert p0.hash == program(GOOD).hash  # identity is the source, not the provenance
  assert p0.hash != rp.RewardProgram(GOOD, "cartpole").hash
  path = tmp_path / "programs.jsonl"
  rp.save_programs(path, [p0, p1])
  back = rp.load_programs(path)
  assert back == [p0, p1] and back[1].provenance.parent == p0.hash

  record = json.loads(path.read_text().splitlines()[1])
  record["source"] += "# edited\n"
  path.write_text(json.dumps(p0.to_json()) + "\n" + json.dumps(record) + "\n")
  with pytest.raises(ValueError, match=r"programs.jsonl:2: field 'hash'"):
    rp.load_programs(path)
  path.write_text(json.dumps(p0.to_json()) + "\n{not json\n")
  with pytest.raises(ValueError, match=r"programs.jsonl:2: not JSON"):
    rp.load_programs(path)
  path.write_text('{"source": "x"}\n')
  with pytest.raises(ValueError, match=r"programs.jsonl:1: .*no 'abstraction' field"):
    rp.load_programs(path)
  with pytest.raises(ValueError, match="feedback_round"):
    rp.Provenance(feedback_round=-1)


def test_abstraction_checks_and_description():
  with pytest.raises(ValueError, match="'real' is also an attribute"):
    rp.Abstraction("x", {"real": 0})
  with pytest.raises(ValueError, match="underscore"):
    rp.Abstraction("x", {"_hidden": 0})
  with pytest.raises(ValueError, match="finite"):
    rp.Abstraction("x", {"pos": 0}, constants={"c": math.inf})
  text = rp.MOUNTAIN_CAR.describe()
  for word in ("position", "velocity", "task.goal_position", "def reward", "jnp.where"):
    assert word in text
  with pytest.raises(ValueError, match="abstraction 'mountain_car', not 'cartpole'"):
    rp.load(program(GOOD), rp.CARTPOLE)
  with pytest.raises(ValueError, match="not one of"):
    rp.load(program(GOOD, abstraction="moon_lander"))


def test_abstraction_fields_match_the_environments_observations():
  for env_name, abstraction in rp.ENV_ABSTRACTIONS.items():
    env = envs.make(env_name)
    assert rp.ABSTRACTIONS[abstraction].obs_dim == env.spec.obs_shape[0], env_name
  # MountainCar: position first, then velocity (gymnax's observation order).
  env = envs.make("gymnax/MountainCar-v0")
  state, obs = env.reset(jax.random.key(0))
  assert float(obs[0]) == pytest.approx(float(state.position))
  assert float(obs[1]) == pytest.approx(float(state.velocity))


def test_loaded_program_drives_ppo_as_its_reward():
  # PPO learns from the program's reward, not the environment's: a program that pays 1 for
  # action k only makes action k the policy's most likely one, for k = 0 and k = 2.
  env = envs.make("gymnax/MountainCar-v0")
  config = ppo.PPOConfig(total_timesteps=8192, num_envs=4, num_steps=64, update_epochs=4,
                         num_minibatches=2, hidden=(16,), lr=3e-3)
  _, obs = env.reset(jax.random.key(1))
  for paid in (0, 2):
    src = f"def reward(obs, action, next_obs):\n  return jnp.where(action == {paid}, 1.0, 0.0)\n"
    agent = ppo.make_ppo(config, env, reward_fn=rp.load(program(src)).reward_fn)
    state, _ = jax.jit(agent.train)(jax.random.key(0), None)
    probs = np.asarray(agent.policy_apply(state.params.policy, obs[None]).probs[0])
    assert probs.argmax() == paid and probs[paid] > 0.6, (paid, probs)
