"""Reward programs on MountainCar: dense, buggy, revised and reward-hacking programs vs the
sparse task reward (see the config's docstring).

    python -m experiments.reward_programs --workdir=/tmp/reward_programs
    python -m experiments.reward_programs --workdir=/tmp/reward_programs --config.quick=True
"""

from __future__ import annotations

import os
import time
import warnings

# As in the other control studies: single-threaded Eigen before JAX starts (large vmapped
# scans can wedge XLA's CPU runtime otherwise).
if "--xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import study
from irl_jax.control import envs, experts, ppo
from irl_jax.control import reward_programs as rp

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_PROMPT = ("Write a dense reward for this environment so that PPO learns to reach the flag.\n\n"
           + rp.MOUNTAIN_CAR.describe())

_SPARSE = '''
def reward(obs, action, next_obs):
  """The task's own success signal: 1 on reaching the flag."""
  return jnp.where(next_obs.position >= task.goal_position, 1.0, 0.0)
'''

_ENERGY = '''
def energy(o):
  return 0.5 * o.velocity ** 2 + task.gravity / 3.0 * jnp.sin(3.0 * o.position)
'''

_BUGGY = _ENERGY + '''
def reward(obs, action, next_obs):
  """Flag bonus plus energy shaping (round 0)."""
  success = jnp.where(next_obs.position >= task.goal_position, 1.0, 0.0)
  return success + 1000.0 * (energy(obs) - 0.99 * energy(next_obs))
'''

_GOOD = _ENERGY + '''
def reward(obs, action, next_obs):
  """Flag bonus plus potential-based energy shaping (round 1)."""
  success = jnp.where(next_obs.position >= task.goal_position, 1.0, 0.0)
  return success + 1000.0 * (0.99 * energy(next_obs) - energy(obs))
'''

_HACKING = '''
def reward(obs, action, next_obs):
  """Pays for speed: a fast car is a car on its way to the flag."""
  return 10.0 * jnp.abs(next_obs.velocity)
'''

_NAN_LOG = '''
def reward(obs, action, next_obs):
  """Rewards speed on a log scale."""
  return jnp.log(next_obs.velocity) + 10.0
'''

_PYTHON_BRANCH = '''
def reward(obs, action, next_obs):
  if next_obs.position >= task.goal_position:
    return 1.0
  return next_obs.position - obs.position
'''


def _programs() -> dict[str, rp.RewardProgram]:
  hand = "hand-written (stands in for a language model)"
  buggy = rp.RewardProgram(_BUGGY, "mountain_car", rp.Provenance(_PROMPT, hand, 0), "buggy")
  return {
      "sparse": rp.RewardProgram(_SPARSE, "mountain_car",
                                 rp.Provenance("", "the task's success signal", 0), "sparse"),
      "buggy": buggy,
      "good": rp.RewardProgram(_GOOD, "mountain_car", rp.Provenance(
          _PROMPT + "\n\nFeedback: the car never leaves the valley.", hand, 1, buggy.hash),
          "good"),
      "hacking": rp.RewardProgram(_HACKING, "mountain_car", rp.Provenance(_PROMPT, hand, 0),
                                  "hacking"),
      "nan_log": rp.RewardProgram(_NAN_LOG, "mountain_car", rp.Provenance(_PROMPT, hand, 0),
                                  "nan_log"),
      "python_branch": rp.RewardProgram(_PYTHON_BRANCH, "mountain_car",
                                        rp.Provenance(_PROMPT, hand, 0), "python_branch"),
  }


PROGRAMS = _programs()
TRAINED = ("sparse", "buggy", "good", "hacking")
INVALID = ("nan_log", "python_branch")
LABELS = {"sparse": "sparse task reward", "buggy": "buggy (round 0)", "good": "good (round 1)",
          "hacking": "reward hacking"}


# --- config --------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  for field in ("eval_episodes", "validation_transitions"):
    v = config[field]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ValueError(f"config.{field} must be a positive integer, got {v!r}.")
  if not config.time_limit_s > 0:
    raise ValueError(f"config.time_limit_s must be > 0, got {config.time_limit_s!r}.")
  if config.env not in rp.ENV_ABSTRACTIONS:
    raise ValueError(f"config.env must be one of {sorted(rp.ENV_ABSTRACTIONS)}, got "
                     f"{config.env!r}.")


def ppo_config(config) -> ppo.PPOConfig:
  p = dict(config.ppo)
  p["hidden"] = tuple(int(h) for h in p["hidden"])
  try:
    config = ppo.PPOConfig(**p)
    ppo.check_config(config)
    return config
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.ppo: {e}") from None


# --- evaluation ----------------------------------------------------------------------------


def evaluate(env: envs.Env, act, reward_fn, key, num_episodes: int) -> dict:
  """`num_episodes` full episodes of `act(key, obs) -> action`: success (the episode
  terminated, i.e. reached the goal, before its time limit), length and the return of
  `reward_fn(obs, action, next_obs)` (one transition) over the episode."""
  def one(key):
    k0, key = jax.random.split(key)
    state, obs = env.reset(k0)

    def body(carry, key):
      state, obs, alive, ret, length, success = carry
      k_act, k_env = jax.random.split(key)
      a = act(k_act, obs)
      state, s = env.step(k_env, state, a)
      ret = ret + jnp.where(alive, reward_fn(obs, a, s.final_obs), 0.0)
      length = length + alive.astype(jnp.int32)
      success = jnp.logical_or(success, jnp.logical_and(alive, s.terminated))
      alive = jnp.logical_and(alive, jnp.logical_not(s.done))
      return (state, s.obs, alive, ret, length, success), None

    init = (state, obs, jnp.ones((), bool), jnp.zeros((), jnp.float32),
            jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    (_, _, _, ret, length, success), _ = jax.lax.scan(
        body, init, jax.random.split(key, env.spec.max_steps))
    return success, length, ret

  success, length, ret = jax.vmap(one)(jax.random.split(key, num_episodes))
  return {"success": jnp.mean(success.astype(jnp.float32)),
          "length": jnp.mean(length.astype(jnp.float32)), "program_return": jnp.mean(ret)}


def validation_batch(env: envs.Env, key, n: int):
  """`n` transitions of uniformly random actions from `n` fresh episodes each run for a
  random number of steps (so positions and velocities spread over the valley)."""
  uniform = experts.uniform_policy(env.spec)

  def act(key, obs):
    return uniform(key, obs), jnp.float32(0.0)

  def one(key):
    k_reset, k_roll = jax.random.split(key)
    state, obs = env.reset(k_reset)
    _, _, traj = envs.rollout(env, act, state, obs, k_roll, env.spec.max_steps // 2)
    return traj

  traj = jax.vmap(one)(jax.random.split(key, max(1, n // 16)))
  flat = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:])[:n], traj)
  return flat.obs, flat.action, flat.next_obs


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  env = envs.make(config.env)
  pc = ppo_config(config)
  key = jax.random.key(config.seed)
  k_val, k_train, k_eval = jax.random.split(key, 3)
  obs, action, next_obs = validation_batch(env, k_val, config.validation_transitions)

  validation, loaded = {}, {}
  for name, program in PROGRAMS.items():
    try:
      lp = rp.load(program, time_limit_s=config.time_limit_s)
      report = rp.validate(lp, obs, action, next_obs, raise_on_error=False)
      validation[name] = report.to_json()
      if report.ok:
        loaded[name] = lp
    except rp.RewardProgramError as e:
      validation[name] = {"program_hash": program.hash, "ok": False, "problems": [str(e)]}
    log(f"[reward_programs] {name}: {'valid' if validation[name]['ok'] else 'rejected'}"
        + ("" if validation[name]["ok"] else f" ({validation[name]['problems'][0]})"))

  seeds = jax.random.split(k_train, config.num_seeds)
  eval_keys = jax.random.split(k_eval, config.num_seeds)
  methods = {}
  for name in TRAINED:
    if name not in loaded:
      log(f"[reward_programs] {name}: rejected by validation, not trained")
      continue
    lp = loaded[name]
    agent = ppo.make_ppo(pc, env, reward_fn=lp.reward_fn)

    def train_eval(key, ekey, agent=agent, lp=lp):
      state, metrics = agent.train(key, None)
      params = state.params
      act = lambda k, o: agent.policy_apply(params.policy, o).sample(seed=k)
      ev = evaluate(env, act, lp.reward, ekey, config.eval_episodes)
      return ev, metrics["recent_return"]

    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(train_eval)).lower(seeds, eval_keys).compile()
    t1 = time.perf_counter()
    ev, curve = jax.block_until_ready(compiled(seeds, eval_keys))
    t2 = time.perf_counter()
    ev = jax.tree.map(np.asarray, ev)
    methods[name] = {
        "label": LABELS[name], "success": ev["success"], "length": ev["length"],
        "program_return": ev["program_return"], "curve_env_return": np.asarray(curve),
        "success_ci": study.interval(ev["success"]),
        "compile_seconds": t1 - t0, "run_seconds": t2 - t1,
        "env_steps_per_second": config.num_seeds * pc.num_iterations * pc.batch_size / (t2 - t1)}
    log(f"[reward_programs] {name}: success {study.fmt_pm(methods[name]['success_ci'], 2)}, "
        f"length {ev['length'].mean():.0f}, program return {ev['program_return'].mean():.2f} "
        f"({t2 - t1:.0f} s + {t1 - t0:.0f} s compile)")

  verdicts = _verdicts(methods, validation)
  results = {
      "env": config.env, "cpu": study.cpu_model(), "config": config.to_dict(),
      "env_steps_per_iteration": pc.batch_size, "num_iterations": pc.num_iterations,
      "programs": {n: p.to_json() for n, p in PROGRAMS.items()},
      "validation": validation, "methods": methods, "verdicts": verdicts,
      "total_seconds": time.perf_counter() - t_start}
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, workdir)
  return results


def _paired(methods, a, b):
  if a not in methods or b not in methods:
    return None
  return study.interval(methods[a]["success"] - methods[b]["success"])


def _verdicts(methods, validation) -> list[dict]:
  out = []
  for finding, (a, b) in (
      ("(a) dense program (good) succeeds where the sparse task reward does not", ("good",
                                                                                  "sparse")),
      ("(b) the revision after feedback (round 1) beats round 0", ("good", "buggy")),
      ("(c) reward hacking: the good program beats the hacking one on task success",
       ("good", "hacking"))):
    ci = _paired(methods, a, b)
    if ci is None:
      out.append({"finding": finding, "verdict": "not at this scale",
                  "deciding": f"{a} or {b} was not trained (rejected by validation)"})
    else:
      out.append({"finding": finding, "verdict": study.decide(ci),
                  "deciding": f"success({a}) − success({b}) = {study.fmt_ci(ci, 2)}"})
  rejected_invalid = sum(not validation[n]["ok"] for n in INVALID)
  accepted_valid = sum(validation[n]["ok"] for n in TRAINED)
  ok = rejected_invalid == len(INVALID) and accepted_valid == len(TRAINED)
  out.append({"finding": "(d) validation rejects the invalid programs and accepts the others",
              "verdict": "reproduced" if ok else "contradicted",
              "deciding": f"{rejected_invalid}/{len(INVALID)} invalid rejected, "
                          f"{accepted_valid}/{len(TRAINED)} valid accepted"})
  return out


def results_table(results, config=None) -> str:
  c = results["config"]
  lines = [f"## {results['env']}: reward programs", "",
           f"Success rate (reaching the flag within 200 steps) of the final stochastic PPO policy "
           f"over {c['eval_episodes']} episodes, mean ± 95% interval over {c['num_seeds']} seeds; "
           f"PPO for {results['num_iterations'] * results['env_steps_per_iteration']:,} "
           f"environment steps per seed. CPU: {results['cpu']}.", "",
           "| program | round | success | episode length | program return | env steps/s | "
           "run s (compile s) |", "|---|---|---|---|---|---|---|"]
  for name, m in results["methods"].items():
    prov = results["programs"][name]["provenance"]
    lines.append(f"| {m['label']} | {prov['feedback_round']} | {study.fmt_pm(m['success_ci'], 2)} "
                 f"| {np.mean(m['length']):.0f} | {np.mean(m['program_return']):.2f} | "
                 f"{m['env_steps_per_second']:,.0f} | {m['run_seconds']:.0f} "
                 f"({m['compile_seconds']:.0f}) |")
  lines += ["", "Validation (on random-policy transitions):", ""]
  for name, v in results["validation"].items():
    lines.append(f"- `{name}` ({v['program_hash'][:12]}): "
                 + ("valid" if v["ok"] else "rejected: " + "; ".join(v["problems"])))
  lines += ["", f"Total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  names = list(results["methods"])
  for i, name in enumerate(names):
    m = results["methods"][name]
    study.errorbars(ax1, [i], [m["success_ci"]], label=m["label"])
    curve = np.asarray(m["curve_env_return"])            # [seeds, iterations]
    steps = (np.arange(curve.shape[1]) + 1) * results["env_steps_per_iteration"]
    with warnings.catch_warnings():  # iterations where no episode ended yet are NaN
      warnings.simplefilter("ignore", RuntimeWarning)
      ax2.plot(steps, np.nanmean(curve, axis=0), label=m["label"])
  ax1.set_xticks(range(len(names)), [results["methods"][n]["label"] for n in names],
                 rotation=20, fontsize=7)
  ax1.set_ylabel("success rate")
  ax1.set_ylim(-0.05, 1.05)
  ax2.set_xlabel("environment steps per seed")
  ax2.set_ylabel("task return (−steps per episode)")
  ax2.legend(fontsize=7)
  fig.suptitle(f"{results['env'].split('/', 1)[-1]}: reward programs")
  fig.tight_layout()
  path = os.path.join(workdir, "reward_programs.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/reward_programs.py",
                     "/tmp/reward_programs")
