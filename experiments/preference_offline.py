"""Offline RL from preference labels: IPL vs reward model + IQL vs oracle IQL (see the
config's docstring).

    python -m experiments.preference_offline --workdir=/tmp/preference_offline
    python -m experiments.preference_offline --workdir=/tmp/preference_offline --config.quick=True
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

# As in `experiments.control_benchmark`: XLA's CPU runtime can wedge on large vmapped
# scans with multi-threaded Eigen; single-threaded Eigen must be set before JAX starts.
if "--xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import study
from irl_jax.control import data, envs, experts, offline

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"rm_iql": "Reward model + IQL", "ipl_iql": "IPL-IQL", "ipl_awac": "IPL-AWAC",
          "oracle_iql": "Oracle IQL (true reward)"}
PREFERENCE_METHODS = ("rm_iql", "ipl_iql", "ipl_awac")


# --- config ------------------------------------------------------------------------------


def check_config(config, spec: envs.EnvSpec) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  k = config.segment_length
  if not isinstance(k, int) or not 1 <= k <= spec.max_steps:
    raise ValueError(f"config.segment_length must be an integer in [1, {spec.max_steps}] (the "
                     f"episode limit of {spec.name}), got {k!r}.")
  counts = list(config.query_counts)
  if (len(counts) < 2 or any(not isinstance(n, int) or n < 1 for n in counts)
      or counts != sorted(set(counts))):
    raise ValueError(f"config.query_counts must be at least two increasing positive integers, "
                     f"got {tuple(counts)!r}.")
  for field in ("eval_episodes", "batch_size", "num_steps"):
    study.positive_int(config[field], field)
  for field in ("num_steps", "pref_batch_size"):
    v = config.reward_model[field]
    if not isinstance(v, int) or v < 1:
      raise ValueError(f"config.reward_model.{field} must be a positive integer, got {v!r}.")
  if not config.label_temperature > 0:
    raise ValueError(f"config.label_temperature must be > 0, got {config.label_temperature!r}.")
  if not config.equivalence_margin > 0:
    raise ValueError(f"config.equivalence_margin must be > 0, got {config.equivalence_margin!r}.")
  if not config.expert_steps_scale > 0:
    raise ValueError(f"config.expert_steps_scale must be > 0, got {config.expert_steps_scale!r}.")
  if not config.mixture:
    raise ValueError("config.mixture must list at least one behaviour policy.")
  names = set()
  for i, part in enumerate(config.mixture):
    if len(part) != 4:
      raise ValueError(f"config.mixture[{i}] must be (name, epsilon, noise, episodes), got "
                       f"{part!r}.")
    name, eps, noise, n = part
    if name in names:
      raise ValueError(f"config.mixture[{i}]: duplicate name {name!r}.")
    names.add(name)
    if not 0.0 <= eps <= 1.0:
      raise ValueError(f"config.mixture[{i}] ({name!r}): epsilon must lie in [0, 1], got {eps!r}.")
    if not noise >= 0 or (spec.action.discrete and noise):
      raise ValueError(f"config.mixture[{i}] ({name!r}): noise must be >= 0 (and 0 for discrete "
                       f"actions), got {noise!r}.")
    if not isinstance(n, int) or n < 1:
      raise ValueError(f"config.mixture[{i}] ({name!r}): episodes must be a positive integer, "
                       f"got {n!r}.")


# --- data --------------------------------------------------------------------------------


def behaviour_policy(expert: experts.Expert, spec: envs.EnvSpec, epsilon: float, noise: float):
  """`act(key, obs) -> (action, nan)`: the expert's stochastic action plus Gaussian noise of
  std `noise` (continuous), replaced by a uniform random action with probability `epsilon`,
  clipped to the action box."""
  uniform = experts.uniform_policy(spec)

  def act(key, obs):
    k_expert, k_noise, k_coin, k_uniform = jax.random.split(key, 4)
    action, _ = expert.act(k_expert, obs)
    if not spec.action.discrete:
      action = action + noise * jax.random.normal(k_noise, action.shape)
    action = jnp.where(jax.random.uniform(k_coin) < epsilon,
                       uniform(k_uniform, obs).astype(action.dtype), action)
    if not spec.action.discrete:
      action = jnp.clip(action, spec.action.low, spec.action.high)
    return action, jnp.float32(jnp.nan)

  return act


def mixture_dataset(config, env: envs.Env, k_expert, k_data, *, log=print):
  """`(expert, expert_seconds, episodes)`: a PPO expert (`expert_steps_scale` times its
  usual budget) and `config.mixture`'s episodes of `behaviour_policy`, concatenated; the
  dataset of studies C6 and C7, built as this study builds its own."""
  ppo_config = experts.EXPERT_CONFIGS[config.env]
  ppo_config = dataclasses.replace(ppo_config, total_timesteps=int(
      ppo_config.total_timesteps * config.expert_steps_scale))
  t0 = time.perf_counter()
  expert = experts.train_expert(env, k_expert, ppo_config)
  expert_seconds = time.perf_counter() - t0
  log(f"{config.env}: expert return {expert.mean_return:.1f} (random "
      f"{expert.random_return:.1f}) in {expert_seconds:.0f} s")
  parts = [data.collect_episodes(env, behaviour_policy(expert, env.spec, eps, noise),
                                 jax.random.fold_in(k_data, i), n)
           for i, (_, eps, noise, n) in enumerate(config.mixture)]
  return expert, expert_seconds, data.concatenate(parts, {"policy": "mixture"})


def nested_preferences(pairs: data.PreferencePairs, counts) -> offline.Preferences:
  """`[Q, P, ...]` Preferences: for the `q`-th count `n`, the first `n` pairs, the rest
  padding (mask 0: never drawn, and zeroed before any network sees them)."""
  prefs = offline.Preferences(pairs.obs, pairs.action, pairs.next_obs, pairs.terminated,
                              pairs.mask, pairs.label)
  p = prefs.label.shape[0]
  keep = jnp.arange(p)[None, :] < jnp.asarray(counts)[:, None]          # [Q, P]
  stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(counts), *x.shape)), prefs)
  mask = jnp.logical_and(stacked.mask, keep[:, :, None, None])
  return stacked._replace(mask=mask)


# --- methods -----------------------------------------------------------------------------


def learner_configs(config, reward_std: float) -> dict:
  """The library configs of every method, from the study's shared fields."""
  lr = float(config.learning_rate)
  shared = dict(num_steps=int(config.num_steps), batch_size=int(config.batch_size),
                hidden=tuple(int(h) for h in config.hidden), actor_lr=lr, critic_lr=lr,
                value_lr=lr, normalize_obs=bool(config.normalize_obs))
  iql = offline.IQLConfig(**shared, expectile=float(config.iql.expectile),
                          beta=float(config.iql.beta))
  ipl = offline.IPLConfig(**shared, expectile=float(config.iql.expectile),
                          beta=float(config.iql.beta), reward_reg=float(config.ipl.reward_reg),
                          pref_batch_size=int(config.ipl.pref_batch_size),
                          temperature=float(config.ipl.temperature))
  rm = offline.RewardModelConfig(num_steps=int(config.reward_model.num_steps),
                                 pref_batch_size=int(config.reward_model.pref_batch_size), lr=lr,
                                 hidden=shared["hidden"], normalize_obs=shared["normalize_obs"])
  return {"rm_iql": offline.RewardModelIQLConfig(reward_model=rm, iql=iql),
          "ipl_iql": ipl, "ipl_awac": ipl,
          "oracle_iql": dataclasses.replace(iql, reward_scale=1.0 / reward_std)}


MAKERS = {"rm_iql": offline.make_reward_model_iql, "ipl_iql": offline.make_ipl_iql,
          "ipl_awac": offline.make_ipl_awac, "oracle_iql": offline.make_iql}


def parameter_count(state) -> int:
  """Trainable parameters of one run's state (`params` of every network; the target
  critics, copies, are not counted; reward model + IQL: both states')."""
  parts = ([state.reward_model.params, state.iql.params]
           if isinstance(state, offline.RewardModelIQLState) else [state.params])
  return int(sum(math.prod(x.shape) for p in parts for x in jax.tree.leaves(p)))


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  env = envs.make(config.env)
  spec = env.spec
  check_config(config, spec)
  counts = [int(n) for n in config.query_counts]
  key = jax.random.key(config.seed)
  k_expert, k_data, k_pairs, k_runs, k_eval = jax.random.split(key, 5)
  t_start = time.perf_counter()

  # Expert and the mixed-quality dataset.
  ppo_config = experts.EXPERT_CONFIGS[config.env]
  ppo_config = dataclasses.replace(ppo_config, total_timesteps=int(
      ppo_config.total_timesteps * config.expert_steps_scale))
  t0 = time.perf_counter()
  expert = experts.train_expert(env, k_expert, ppo_config)  # its own 32 episodes for both ends
  expert_seconds = time.perf_counter() - t0
  log(f"{config.env}: expert return {expert.mean_return:.1f} (random "
      f"{expert.random_return:.1f}) in {expert_seconds:.0f} s")
  parts, mixture = [], []
  for i, (name, eps, noise, n) in enumerate(config.mixture):
    part = data.collect_episodes(env, behaviour_policy(expert, spec, eps, noise),
                                 jax.random.fold_in(k_data, i), n)
    returns = data.episode_returns(part)
    parts.append(part)
    mixture.append({"name": name, "epsilon": eps, "noise": noise, "episodes": n,
                    "mean_return": float(returns.mean()),
                    "normalised": float(experts.normalised_return(returns.mean(), expert))})
  episodes = data.concatenate(parts, {"policy": "mixture", "mixture": [list(p) for p in
                                                                   config.mixture]})
  returns = data.episode_returns(episodes)
  transitions = data.to_transitions(episodes)
  reward_std = float(np.std(episodes.reward))
  log(f"  dataset: {episodes.num_episodes} episodes, {episodes.num_steps} transitions, "
      "normalised return by component "
      + ", ".join(f"{m['name']} {m['normalised']:.2f}" for m in mixture))

  # Preference pairs, labelled once; the query counts are nested prefixes.
  pairs = data.preference_pairs(episodes, k_pairs, max(counts), config.segment_length,
                                labeller="bradley_terry", temperature=config.label_temperature)
  prefs = nested_preferences(pairs, counts)
  true_order = np.asarray(pairs.returns[:, 1] > pairs.returns[:, 0])
  label = np.asarray(pairs.label)
  labels = {"second_preferred": float(label.mean()),
            "agree_with_true_returns": float(np.mean((label > 0.5) == true_order)),
            "mean_abs_return_difference": float(np.mean(np.abs(
                np.asarray(pairs.returns[:, 1] - pairs.returns[:, 0]))))}

  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "env": config.env,
             "expert_return": expert.mean_return, "random_return": expert.random_return,
             "expert_seconds": expert_seconds, "mixture": mixture,
             "dataset": {"episodes": episodes.num_episodes, "transitions": episodes.num_steps,
                         "mean_return": float(returns.mean()),
                         "normalised": float(experts.normalised_return(returns.mean(), expert)),
                         "reward_std": reward_std},
             "labels": labels, "query_counts": counts, "methods": {}}

  seeds = jax.random.split(k_runs, config.num_seeds)
  configs = learner_configs(config, reward_std)
  for i, method in enumerate((*PREFERENCE_METHODS, "oracle_iql")):
    learner = MAKERS[method](configs[method], spec)
    if method == "oracle_iql":   # [S]: independent of the query count
      train = jax.vmap(learner.train, in_axes=(0, None))
      args = (seeds, transitions)
      shape = (config.num_seeds,)
    else:                        # [Q, S]: every (query count, seed) in one program
      train = jax.vmap(jax.vmap(learner.train, in_axes=(0, None, None)),
                       in_axes=(None, 0, None))
      args = (seeds, prefs, transitions)
      shape = (len(counts), config.num_seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(*args).compile()
    t1 = time.perf_counter()
    states, metrics = compiled(*args)
    jax.block_until_ready((states, metrics))
    t2 = time.perf_counter()

    def evaluate(state, key, learner=learner):
      return offline.evaluate(learner, state, env, key, config.eval_episodes).mean()

    evaluate_all = evaluate
    for _ in shape:
      evaluate_all = jax.vmap(evaluate_all)
    eval_keys = jax.random.split(jax.random.fold_in(k_eval, i), shape)
    ret = np.asarray(jax.jit(evaluate_all)(states, eval_keys))
    norm = np.asarray(experts.normalised_return(ret, expert))
    first = (0,) * len(shape)
    one = jax.tree.map(lambda x, first=first: x[first], states)
    row = {"label": LABELS[method], "return": ret.tolist(), "normalised": norm.tolist(),
           "compile_seconds": t1 - t0, "run_seconds": t2 - t1, "runs": int(np.prod(shape)),
           "parameters": parameter_count(one),
           "finite_metrics": bool(all(np.all(np.isfinite(np.asarray(v)))
                                      for v in metrics.values()))}
    if method == "oracle_iql":
      row["ci"] = study.interval(norm)
      log(f"  {LABELS[method]:26s} {study.fmt_pm(row['ci'], 2)}  ({t2 - t1:.1f} s run, "
          f"{t1 - t0:.1f} s compile, {row['parameters']:,} parameters)")
    else:
      row["by_queries"] = {str(n): study.interval(norm[q]) for q, n in enumerate(counts)}
      row["by_queries_raw"] = {str(n): norm[q].tolist() for q, n in enumerate(counts)}
      accuracy = metrics.get("reward_model/pref/accuracy", metrics.get("pref/accuracy"))
      row["final_pref_accuracy"] = np.asarray(accuracy)[..., -100:].mean(-1).tolist()
      log(f"  {LABELS[method]:26s} by queries "
          + ", ".join(f"{n}: {study.fmt_pm(row['by_queries'][str(n)], 2)}" for n in counts)
          + f"  ({t2 - t1:.1f} s run, {t1 - t0:.1f} s compile, {row['parameters']:,} "
            "parameters)")
    results["methods"][method] = row
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results, config)
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, config, workdir)
  return results


# --- verdicts ------------------------------------------------------------------------------


def verdicts(results, config) -> list[dict]:
  m = results["methods"]
  counts = [str(n) for n in results["query_counts"]]
  low, high = counts[0], counts[-1]
  margin = float(config.equivalence_margin)
  rows = []
  rm = np.asarray(m["rm_iql"]["by_queries_raw"][high])
  for method in ("ipl_iql", "ipl_awac"):
    verdict, ci = study.equivalence(np.asarray(m[method]["by_queries_raw"][high]) - rm, margin)
    rows.append({"finding": f"{LABELS[method]} ≈ reward model + IQL with {high} queries "
                            f"(≈: the 95% interval of the difference within ±{margin:g})",
                 "verdict": verdict,
                 "deciding": f"{LABELS[method]} − RM+IQL, expert-normalised return, paired "
                             f"over seeds: {study.fmt_ci(ci, 3)}"})
  oracle = np.asarray(m["oracle_iql"]["normalised"])
  ipl_low = np.asarray(m["ipl_iql"]["by_queries_raw"][low])
  ipl_high = np.asarray(m["ipl_iql"]["by_queries_raw"][high])
  shrink = study.interval((oracle - ipl_low) - (oracle - ipl_high))
  gap_high = study.interval(oracle - ipl_high)
  rows.append({"finding": f"IPL-IQL approaches oracle IQL as queries grow ({low} → {high})",
               "verdict": study.decide(shrink),
               "deciding": f"oracle gap at {low} − gap at {high}, paired over seeds: "
                           f"{study.fmt_ci(shrink, 3)}; gap left at {high}: "
                           f"{study.fmt_ci(gap_high, 3)}"})
  n_rm, n_ipl = m["rm_iql"]["parameters"], m["ipl_iql"]["parameters"]
  n_awac = m["ipl_awac"]["parameters"]
  rows.append({"finding": "IPL has fewer parameters than reward model + IQL (no reward network)",
               "verdict": "reproduced" if max(n_ipl, n_awac) < n_rm else "contradicted",
               "deciding": f"RM+IQL − IPL-IQL = {n_rm - n_ipl:+,} parameters ({n_rm:,} vs "
                           f"{n_ipl:,}); IPL-AWAC {n_awac:,} (exact counts)"})
  return rows


# --- outputs ---------------------------------------------------------------------------------


def results_table(results, config=None) -> str:
  counts = [str(n) for n in results["query_counts"]]
  ds = results["dataset"]
  lab = results["labels"]
  lines = [f"## {results['env']}: offline RL from preferences (expert "
           f"{results['expert_return']:.1f}, random {results['random_return']:.1f})", "",
           f"Expert-normalised return (0: random play, 1: the expert) of the final deterministic "
           f"policy, mean ± 95% interval over {results['config']['num_seeds']} seeds. CPU: "
           f"{results['cpu']}.", "",
           f"Dataset: {ds['episodes']} episodes, {ds['transitions']} transitions, normalised "
           f"return {ds['normalised']:.2f} on average ("
           + ", ".join(f"{m['name']} ×{m['episodes']}: {m['normalised']:.2f}"
                       for m in results["mixture"])
           + f"). Labels: Bradley–Terry on true returns of {results['config']['segment_length']}"
             f"-step segments, {lab['agree_with_true_returns']:.1%} agree with the true "
             f"ordering, {lab['second_preferred']:.1%} prefer the second segment.", "",
           "| method | " + " | ".join(f"{n} queries" for n in counts)
           + " | parameters | run s (compile s) |",
           "|---" * (len(counts) + 3) + "|"]
  for name, m in results["methods"].items():
    if name == "oracle_iql":
      cells = [study.fmt_pm(m["ci"], 2)] * len(counts)
    else:
      cells = [study.fmt_pm(m["by_queries"][n], 2) for n in counts]
    lines.append(f"| {m['label']} | " + " | ".join(cells) + f" | {m['parameters']:,} | "
                 f"{m['run_seconds']:.1f} ({m['compile_seconds']:.1f}) |")
  lines += ["", "Oracle IQL does not use preferences (one value, repeated). Run seconds cover "
            "all (query count × seed) runs of a method in one program; parameters are one "
            f"run's trainable ones (target copies not counted). Total "
            f"{results['total_seconds']:.0f} s, expert {results['expert_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  counts = [int(n) for n in results["query_counts"]]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for name in PREFERENCE_METHODS:
    m = results["methods"][name]
    study.errorbars(ax, counts, [m["by_queries"][str(n)] for n in counts], label=m["label"])
  mean, lo, hi, _ = results["methods"]["oracle_iql"]["ci"]
  ax.axhline(mean, color="k", label=LABELS["oracle_iql"])
  if not np.isnan(lo):
    ax.axhspan(lo, hi, color="k", alpha=0.15)
  ax.axhline(results["dataset"]["normalised"], color="gray", linestyle=":",
             label="dataset average")
  ax.set_xscale("log")
  ax.set_xlabel("preference queries (pairs)")
  ax.set_ylabel("expert-normalised return")
  ax.set_title(f"{results['env'].split('/', 1)[-1]}: offline RL from preferences")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "preference_offline.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/preference_offline.py",
                     "/tmp/preference_offline")
