"""GAIL and AIRL: irl_jax vs HumanCompatibleAI imitation 1.0.1, same CPU, same demonstrations.

    python -m experiments.benchmarks.peers_imitation --suite=adversarial
    python -m experiments.benchmarks.peers_imitation --suite=adversarial --json
    python -m experiments.benchmarks.peers_imitation --suite=adversarial --quick

The adversarial half of `experiments.benchmarks.peers_imitation` (the entry point;
this module holds its logic). For each environment (CartPole-v1, Pendulum-v1):

- The same dynamics on both sides: gymnax's environment in irl_jax, gymnasium's
  (0.29) in imitation; gymnax ports gymnasium's classic-control equations and
  episode limits (500 and 200 steps).
- The same expert and demonstrations: a PPO expert trained by irl_jax
  (`irl_jax.control.experts`), `--adv_demos` of its episodes (stochastic policy),
  saved with `irl_jax.control.data.save` and converted by the peer into imitation
  `TrajectoryWithRew`s, one per episode. Both learners read that one file.
- The same generator and discriminator settings where both libraries have them:
  PPO with the expert's settings (`experts.EXPERT_CONFIGS`: environments, rollout
  length, epochs, minibatches, learning rate and its linear annealing, γ, GAE λ,
  clip, entropy and value coefficients, gradient clip, 64×64 tanh networks; for
  continuous actions, an initial log-std of 0, stable-baselines3's `log_std_init`
  default, where irl_jax's expert starts at its range's midpoint) and a
  discriminator with 64×64 hidden layers, Adam 3e-4, 4 steps per round of 256
  expert and 256 policy rows (`--quick`: 64), trained on the latest rollout only (imitation's
  default replay capacity is one round). A round is one PPO rollout and update.
  Where they differ, each keeps its own design: irl_jax's continuous policy is a
  tanh-squashed Gaussian (stable-baselines3's a clipped Gaussian); irl_jax's Pendulum
  PPO scales rewards by 0.1 (`reward_scale`), which stable-baselines3 has no setting
  for. Both discriminators standardise their inputs with running statistics:
  imitation's `RunningNorm` (its documented setup) on observations and one-hot
  actions, irl_jax's `disc_normalize` on observations only.
- The same treatment of episode ends: imitation's trainers have no absorbing states
  (a terminal step ends the return; stable-baselines3 bootstraps through time
  limits), so by default irl_jax runs with `absorbing=False`, which does the same.
  One difference stays: imitation marks every generator episode end `done`, time
  limits included, so its AIRL drops `γ·h(s')` there; irl_jax's keeps it at time
  limits (it drops it at terminal steps only, as imitation does on the expert's
  rows). `--adv_absorbing` gives both sides absorbing states, each library's own
  way: irl_jax's library default (Kostrikov et al. 2019: an indicator feature, the
  absorbing state's value added analytically at a terminal step) and, in imitation,
  a fixed horizon with seals' `AbsorbAfterDoneWrapper` (the last observation
  repeated with reward 0 up to the episode limit; the demonstrations padded the
  same way; those steps count in its budget). Every row records which (`absorbing`).

Measured per (environment, method, seed), `--adv_seeds` seeds each side, one
learner at a time (no vmap: the comparison is of one training run):
- the training return after every round: the mean true return of the last
  episode of each of the `num_envs` environments (irl_jax: `recent_return`;
  imitation: the last `num_envs` entries of Monitor's `ep_info_buffer`), put on
  the expert-normalised scale `(R − R_random)/(R_expert − R_random)` with the
  expert's deterministic return and uniform random play's, both measured by
  irl_jax on gymnax;
- the wall-clock at every round. imitation: `time.perf_counter` in its round
  callback (the callback's own time excluded; setup, imports and the final
  evaluation not timed). irl_jax: the whole run is one compiled `lax.scan`, so it
  is timed once (compilation apart, reported as `*_compile_s_irl_jax`) and round
  `i` of `n` is placed at `(i + 1)/n` of it: the rounds are identical programs;
- the final policy's return, deterministic actions, `eval_episodes`
  episodes on a fresh environment.

Headline metrics (per environment):
- `{gail,airl}_speedup_vs_imitation` (target ≥ 20, stretch 100): imitation's
  median wall-clock to a training return of 90% of the expert's (normalised
  ≥ 0.9) over irl_jax's. A seed that never gets there counts as infinitely slow
  for the median; when imitation's median is such a seed, the ratio is a lower
  bound computed from its whole training time (`bound: "lower"`), and when
  irl_jax's is, there is no ratio (NaN, `reached` says who did);
- `{gail,airl}_final_normalised_return_{imitation,irl_jax}`: mean over seeds of
  the final policy's expert-normalised return; irl_jax's must not be worse
  (`not_worse`: its mean is not lower; with the per-seed values, and the 95%
  Welch interval of the difference, `ci95_low`/`ci95_high`: `worse_by_interval`
  when it lies below 0).
Also: time per round on each side and their ratio, environment steps per
second, and the fraction of seeds that reach 90%.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time

import jax
import numpy as np
import scipy.stats

from experiments.host_memory import huge_pages_active
from experiments.study import cpu_model
from irl_jax.control import adversarial, data, envs, experts

PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "_imitation_adversarial_peer.py")
RESULT_PREFIX = "PEER_RESULT "
THRESHOLD = 0.9
TARGET_SPEEDUP = 20.0
STRETCH_SPEEDUP = 100.0
METHODS = ("gail", "airl")
ENVS = {"CartPole-v1": "gymnax/CartPole-v1", "Pendulum-v1": "gymnax/Pendulum-v1"}
DISC = dict(hidden=(64, 64), lr=3e-4, updates=4, batch_size=256)
# absorbing=False: episode ends treated as imitation treats them (module doc).
# The generator's initial log-std: stable-baselines3's `log_std_init` default (the peer
# passes it explicitly). irl_jax's own default starts at the log-std range's midpoint.
GENERATOR_INIT_LOG_STD = 0.0
# imitation's discriminator runs with `RunningNorm` on its inputs; irl_jax's with
# `disc_normalize` (running statistics of the observations).
DISC_NORMALIZE = True
FULL = dict(budgets={"CartPole-v1": 200_000, "Pendulum-v1": 500_000}, expert_scale=1.0,
            seeds=5, demos=10, eval_episodes=16, disc=DISC, absorbing=False)
QUICK = dict(budgets={"CartPole-v1": 16_384, "Pendulum-v1": 32_768}, expert_scale=0.25,
             seeds=1, demos=2, eval_episodes=4, disc={**DISC, "batch_size": 64},
             absorbing=False)


class PeerFailed(RuntimeError):
  """The imitation peer exited with an error or printed no result."""


@dataclasses.dataclass
class Case:
  """One environment: the env, its expert and the demonstrations file both sides read."""
  name: str  # gymnasium id, e.g. "CartPole-v1"
  env: envs.Env
  expert: experts.Expert
  episodes: data.Episodes
  demos_path: str
  ppo: object  # ppo.PPOConfig of the generator (the expert's settings, budget replaced)


def make_case(name: str, *, budget: int, num_demos: int, expert_scale: float, workdir: str,
              seed: int = 0) -> Case:
  if name not in ENVS:
    raise ValueError(f"--adv_envs: unknown environment {name!r}; known: {sorted(ENVS)}")
  env = envs.make(ENVS[name])
  config = experts.EXPERT_CONFIGS[ENVS[name]]
  expert_config = dataclasses.replace(
      config, total_timesteps=int(config.total_timesteps * expert_scale))
  k_expert, k_demos = jax.random.split(jax.random.key(seed))
  expert = experts.train_expert(env, k_expert, expert_config, eval_episodes=32)
  episodes = experts.demonstrations(env, expert, k_demos, num_demos)
  path = str(data.save(episodes, os.path.join(workdir, f"{name}_demos.npz")))
  generator = dataclasses.replace(config, total_timesteps=budget,
                                  init_log_std=GENERATOR_INIT_LOG_STD)
  if generator.num_iterations < 1:
    raise ValueError(f"--adv budget for {name}: {budget} steps is less than one PPO round "
                     f"({generator.batch_size} steps)")
  return Case(name, env, expert, episodes, path, generator)


def normalised(returns, case: Case):
  return (np.asarray(returns, np.float64) - case.expert.random_return) / (
      case.expert.mean_return - case.expert.random_return)


# ---------------------------------------------------------------------------
# irl_jax's side.


def irl_jax_runs(case: Case, method: str, seeds, *, eval_episodes: int, disc: dict,
                 absorbing: bool = False) -> dict:
  """One compiled single-seed program, run once per seed (timed after compilation)."""
  adv = adversarial.make_adversarial(adversarial.AdversarialConfig(
      method=method, ppo=case.ppo, disc_hidden=tuple(disc["hidden"]), disc_lr=disc["lr"],
      disc_updates=disc["updates"], disc_batch_size=disc["batch_size"],
      absorbing=absorbing, disc_normalize=DISC_NORMALIZE), case.env)
  demos = data.to_transitions(case.episodes)
  train = jax.jit(adv.train)
  t0 = time.perf_counter()
  compiled = train.lower(jax.random.key(0), demos).compile()
  compile_s = time.perf_counter() - t0

  def evaluate(params, key):
    return envs.episode_returns(case.env, lambda k, o: adv.ppo.mode(params.ppo.params, o),
                                key, eval_episodes)

  evaluate = jax.jit(evaluate)
  runs = []
  n = case.ppo.num_iterations
  for seed in seeds:
    key = jax.random.key(1000 + int(seed))
    t0 = time.perf_counter()
    state, metrics = compiled(key, demos)
    jax.block_until_ready(metrics)
    total = time.perf_counter() - t0
    final = np.asarray(evaluate(state, jax.random.fold_in(key, 1)))
    runs.append({"seed": int(seed), "env_steps": np.asarray(metrics["env_steps"]).tolist(),
                 "seconds": (total * np.arange(1, n + 1) / n).tolist(),
                 "recent_return": np.asarray(metrics["recent_return"]).tolist(),
                 "train_seconds": total, "final_returns": final.tolist(), "rounds": n})
  return {"runs": runs, "compile_s": compile_s}


# ---------------------------------------------------------------------------
# imitation's side (a subprocess in its own venv).


def peer_settings(case: Case, method: str, seeds, *, eval_episodes: int, disc: dict,
                  absorbing: bool = False) -> dict:
  p = case.ppo
  ppo_settings = {k: getattr(p, k) for k in (
      "num_envs", "num_steps", "update_epochs", "num_minibatches", "gamma", "gae_lambda",
      "clip_eps", "ent_coef", "vf_coef", "max_grad_norm", "normalize_advantages", "lr",
      "adam_eps", "anneal_lr", "activation", "init_log_std")}
  ppo_settings["hidden"] = list(p.hidden)
  return {"env_id": case.name, "method": method, "seeds": [int(s) for s in seeds],
          "total_timesteps": p.num_iterations * p.batch_size, "eval_episodes": eval_episodes,
          "demos": case.demos_path, "ppo": ppo_settings, "absorbing": bool(absorbing),
          "disc": {**disc, "hidden": list(disc["hidden"])}}


def parse_peer_output(stdout: str) -> dict:
  lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
  if not lines:
    raise PeerFailed(f"the imitation peer printed no {RESULT_PREFIX.strip()} line; its "
                     f"output ended with:\n{stdout[-2000:]}")
  return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_peer(python: str, settings: dict, workdir: str) -> dict:
  path = os.path.join(workdir, f"{settings['env_id']}_{settings['method']}_settings.json")
  with open(path, "w") as f:
    json.dump(settings, f)
  out = subprocess.run([python, "-u", PEER_SCRIPT, path], capture_output=True, text=True)
  if out.returncode != 0:
    raise PeerFailed(f"the imitation peer failed (exit {out.returncode}) on {path}:\n"
                     f"{(out.stdout + out.stderr)[-3000:]}")
  return parse_peer_output(out.stdout)


# ---------------------------------------------------------------------------
# Measures.


def time_to_threshold(run: dict, case: Case, threshold: float = THRESHOLD):
  """Seconds at the first round whose training return is ≥ `threshold` on the
  expert-normalised scale, or None when no round gets there."""
  norm = normalised(run["recent_return"], case)
  hit = np.flatnonzero(np.nan_to_num(norm, nan=-np.inf) >= threshold)
  return float(run["seconds"][hit[0]]) if hit.size else None


def median_time(times: list) -> tuple[float, bool]:
  """Median with unreached seeds (None) as +inf; `(median, finite)`."""
  vals = [np.inf if t is None else t for t in times]
  m = float(statistics.median(vals))
  return m, bool(np.isfinite(m))


def final_difference_interval(ours, theirs) -> tuple[float, float]:
  """The 95% Welch interval of mean(ours) − mean(theirs) (`scipy.stats.ttest_ind`,
  unequal variances; the two sides' seeds are independent, not paired); NaN with
  fewer than 2 seeds on a side."""
  ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
  if len(ours) < 2 or len(theirs) < 2:
    return float("nan"), float("nan")
  if np.ptp(ours) == 0 and np.ptp(theirs) == 0:   # no spread: the interval is the point
    d = float(ours.mean() - theirs.mean())
    return d, d
  ci = scipy.stats.ttest_ind(ours, theirs, equal_var=False).confidence_interval(0.95)
  return float(ci.low), float(ci.high)


def compare(case: Case, method: str, ours: dict, theirs: dict | None, ctx: dict, *,
            absorbing: bool = False) -> list[dict]:
  """Rows for one (environment, method); `absorbing`: both sides' setting, recorded."""
  base = {"env": case.name, "method": method, "absorbing": bool(absorbing),
          "expert_return": case.expert.mean_return,
          "random_return": case.expert.random_return,
          "demos": len(case.episodes.episode_starts),
          "env_steps": ours["runs"][0]["env_steps"][-1], **ctx}
  rows = []
  sides = {"irl_jax": ours["runs"]}
  if theirs is not None:
    sides["imitation"] = theirs["runs"]
  summary = {}
  for side, runs in sides.items():
    times = [time_to_threshold(r, case) for r in runs]
    med, finite = median_time(times)
    finals = [float(np.mean(normalised(r["final_returns"], case))) for r in runs]
    per_round = float(np.mean([r["train_seconds"] / r["rounds"] for r in runs]))
    summary[side] = dict(times=times, median=med, finite=finite, finals=finals,
                         per_round=per_round,
                         train_s=float(np.median([r["train_seconds"] for r in runs])))
    rows.append({"metric": f"{method}_time_to_90pct_{side}", "value": med, "unit": "s",
                 "per_seed": times, "reached": sum(t is not None for t in times),
                 "seeds": len(runs), **base})
    rows.append({"metric": f"{method}_final_normalised_return_{side}",
                 "value": float(np.mean(finals)), "unit": "norm", "per_seed": finals,
                 "seeds": len(runs), **base})
    rows.append({"metric": f"{method}_env_steps_per_second_{side}",
                 "value": runs[0]["env_steps"][-1] / summary[side]["train_s"],
                 "unit": "steps/s", "seeds": len(runs), **base})
  rows.append({"metric": f"{method}_compile_s_irl_jax", "value": ours["compile_s"],
               "unit": "s", **base})
  if theirs is None:
    return rows
  a, b = summary["imitation"], summary["irl_jax"]
  rows.append({"metric": f"{method}_round_time_ratio", "value": a["per_round"] / b["per_round"],
               "unit": "ratio", "imitation_s_per_round": a["per_round"],
               "irl_jax_s_per_round": b["per_round"], **base})
  if not b["finite"]:
    speedup, bound = float("nan"), "irl_jax did not reach 90% (median seed)"
  elif a["finite"]:
    speedup, bound = a["median"] / b["median"], "exact"
  else:
    speedup, bound = a["train_s"] / b["median"], "lower"
  rows.append({"metric": f"{method}_speedup_vs_imitation", "value": speedup, "unit": "ratio",
               "target": TARGET_SPEEDUP, "stretch": STRETCH_SPEEDUP, "bound": bound,
               "imitation_s": a["median"], "irl_jax_s": b["median"],
               "reached_imitation": sum(t is not None for t in a["times"]),
               "reached_irl_jax": sum(t is not None for t in b["times"]), **base})
  ours_final, theirs_final = float(np.mean(b["finals"])), float(np.mean(a["finals"]))
  low, high = final_difference_interval(b["finals"], a["finals"])
  rows.append({"metric": f"{method}_final_return_vs_imitation",
               "value": ours_final - theirs_final, "unit": "norm diff",
               "not_worse": ours_final >= theirs_final, "irl_jax": ours_final,
               "imitation": theirs_final, "ci95_low": low, "ci95_high": high,
               "worse_by_interval": bool(high < 0), **base})
  return rows


def curves(case: Case, ours: dict, theirs: dict | None) -> dict:
  out = {}
  for side, res in (("irl_jax", ours), ("imitation", theirs)):
    if res is not None:
      out[side] = [{"seconds": r["seconds"], "env_steps": r["env_steps"],
                    "normalised": normalised(r["recent_return"], case).tolist()}
                   for r in res["runs"]]
  return out


def run(*, peer_python: str | None, envs_: list[str], methods: list[str], settings: dict,
        ctx: dict, workdir: str | None = None, log=print) -> tuple[list[dict], dict]:
  """All (environment, method) comparisons: `(rows, curves)`."""
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"--adv_methods: unknown method {m!r}; known: {METHODS}")
  workdir = workdir or tempfile.mkdtemp(prefix="irl_jax_adv_")
  os.makedirs(workdir, exist_ok=True)
  seeds = list(range(settings["seeds"]))
  rows, all_curves = [], {}
  for name in envs_:
    if name not in settings["budgets"]:
      raise ValueError(f"--adv_envs: no budget for {name!r}; known: {sorted(settings['budgets'])}")
    case = make_case(name, budget=settings["budgets"][name], num_demos=settings["demos"],
                     expert_scale=settings["expert_scale"], workdir=workdir)
    rows_available = int(case.episodes.num_steps)
    if rows_available < settings["disc"]["batch_size"]:
      # imitation samples expert batches without replacement and refuses fewer rows.
      raise ValueError(
          f"--adv_demos={settings['demos']}: {name}'s {settings['demos']} demonstration(s) "
          f"have {rows_available} transitions, fewer than the discriminator batch "
          f"({settings['disc']['batch_size']}) imitation draws without replacement; "
          "give more demonstrations.")
    log(f"[peers_imitation] {name}: expert {case.expert.mean_return:.1f}, random "
        f"{case.expert.random_return:.1f}, {settings['demos']} demonstrations "
        f"(return {data.episode_returns(case.episodes).mean():.1f})")
    for method in methods:
      absorbing = bool(settings.get("absorbing", False))
      ours = irl_jax_runs(case, method, seeds, eval_episodes=settings["eval_episodes"],
                          disc=settings["disc"], absorbing=absorbing)
      theirs = None
      if peer_python:
        theirs = run_peer(peer_python, peer_settings(
            case, method, seeds, eval_episodes=settings["eval_episodes"],
            disc=settings["disc"], absorbing=absorbing), workdir)
        if bool(theirs.get("absorbing", False)) != absorbing:
          raise PeerFailed(f"the imitation peer ran with absorbing={theirs.get('absorbing')}"
                           f", asked for {absorbing} ({PEER_SCRIPT})")
        ctx = {**ctx, "torch_threads": theirs["torch_threads"],
               "peer_versions": theirs["versions"]}
      rows += compare(case, method, ours, theirs, ctx, absorbing=absorbing)
      all_curves[f"{name}/{method}"] = curves(case, ours, theirs)
      log(f"[peers_imitation] {name} {method}: done")
  return rows, all_curves


def plot(all_curves: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = list(all_curves)
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
  for ax, k in zip(axes[0], keys, strict=True):
    for side, color in (("irl_jax", "C0"), ("imitation", "C1")):
      for i, c in enumerate(all_curves[k].get(side, [])):
        ax.plot(c["seconds"], c["normalised"], color=color, alpha=0.7,
                label=side if i == 0 else None)
    ax.axhline(THRESHOLD, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock (s, log)")
    ax.set_ylabel("training return (expert-normalised)")
    ax.set_title(k)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def context() -> dict:
  ctx = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
         "cpus_available": len(os.sched_getaffinity(0)), "jax": jax.__version__,
         "device": jax.devices()[0].platform, "loadavg_1m": round(os.getloadavg()[0], 2),
         "host_huge_pages": huge_pages_active()}
  if os.environ.get("XLA_FLAGS"):
    ctx["xla_flags"] = os.environ["XLA_FLAGS"]
  return ctx
