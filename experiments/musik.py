"""Multi-step inverse kinematics (MusIK) vs one-step inverse kinematics vs random
exploration on a block-MDP combination lock (see the config's docstring).

    python -m experiments.musik --workdir=/tmp/musik
    python -m experiments.musik --workdir=/tmp/musik --config.quick=True
"""

from __future__ import annotations

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
from irl_jax.control import musik

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"multi_step": "MusIK (multi-step IK)", "one_step": "One-step IK"}


# --- config ------------------------------------------------------------------------------


def _int_at_least(config, field, low):
  v = config[field]
  if not isinstance(v, int) or isinstance(v, bool) or v < low:
    raise ValueError(f"config.{field} must be an integer >= {low}, got {v!r}.")


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  _int_at_least(config, "num_seeds", 2)
  _int_at_least(config, "horizon", 1)
  _int_at_least(config, "num_latent", 2)
  _int_at_least(config, "num_actions", 2)
  if config.num_actions < config.num_latent - 1:
    raise ValueError(f"config.num_actions must be >= config.num_latent - 1 (distinct correct "
                     f"actions), got {config.num_actions!r}.")
  _int_at_least(config, "noise_dim", 0)
  for field in ("num_steps", "eval_episodes"):
    _int_at_least(config, field, 1)
  for field in ("noise_std", "weight_decay"):
    if not config[field] >= 0:
      raise ValueError(f"config.{field} must be >= 0, got {config[field]!r}.")
  for field in ("learning_rate", "init_scale"):
    if not config[field] > 0:
      raise ValueError(f"config.{field} must be > 0, got {config[field]!r}.")
  if not 0 < config.reach_threshold < 1:
    raise ValueError(f"config.reach_threshold must lie in (0, 1), got "
                     f"{config.reach_threshold!r}.")
  counts = list(config.sample_counts)
  if (len(counts) < 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1
                             for n in counts) or counts != sorted(set(counts))):
    raise ValueError(f"config.sample_counts must be at least two increasing positive "
                     f"integers, got {tuple(counts)!r}.")


# --- the study -----------------------------------------------------------------------------


def make_locks(config, keys) -> musik.BlockLock:
  """One lock per seed, built one at a time (host-side QR) and stacked."""
  locks = [musik.make_lock(k, config.horizon, config.num_latent, config.num_actions,
                           config.noise_dim, config.noise_std) for k in keys]
  return jax.tree.map(lambda *a: jnp.stack(a), *locks)


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  counts = [int(n) for n in config.sample_counts]
  horizon, num_actions = int(config.horizon), int(config.num_actions)
  key = jax.random.key(config.seed)
  k_lock, k_train, k_eval, k_random = jax.random.split(key, 4)
  t_start = time.perf_counter()

  locks = make_locks(config, jax.random.split(k_lock, config.num_seeds))
  seeds = jax.random.split(k_train, config.num_seeds)
  eval_keys = jax.random.split(k_eval, (len(counts), config.num_seeds))
  budget = {"multi_step": max(counts) * horizon * (horizon + 1) // 2,
            "one_step": max(counts) * horizon}
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "sample_counts": counts, "methods": {}}

  for method in ("multi_step", "one_step"):
    learner = musik.make_musik(musik.MusikConfig(
        num_samples=max(counts), multi_step=method == "multi_step",
        num_steps=int(config.num_steps), learning_rate=float(config.learning_rate),
        init_scale=float(config.init_scale), weight_decay=float(config.weight_decay)))
    # [Q, S]: every (sample count, seed) in one program; a seed's lock is the same
    # for every sample count and for both learners (paired comparisons).
    train = jax.vmap(jax.vmap(learner.train, in_axes=(0, 0, None)), in_axes=(None, None, 0))
    args = (seeds, locks, jnp.asarray(counts))
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(*args).compile()
    t1 = time.perf_counter()
    states = compiled(*args)
    jax.block_until_ready(states)
    t2 = time.perf_counter()
    evaluate = jax.vmap(jax.vmap(learner.evaluate, in_axes=(0, 0, 0, None)),
                        in_axes=(0, None, 0, None))
    ev = jax.jit(evaluate, static_argnums=3)(eval_keys, locks, states,
                                            int(config.eval_episodes))
    ev = jax.tree.map(np.asarray, ev)
    reach_h = ev["reach"][..., -1]                 # [Q, S]
    purity = ev["purity"].mean(-1)                 # [Q, S]
    row = {"label": LABELS[method], "compile_seconds": t1 - t0, "run_seconds": t2 - t1,
           "episodes_per_run": {str(n): n * (horizon * (horizon + 1) // 2
                                             if method == "multi_step" else horizon)
                                for n in counts},
           "reach_H": reach_h.tolist(), "purity": purity.tolist(),
           "reach_by_layer": ev["reach"].tolist(), "purity_by_layer": ev["purity"].tolist(),
           "reach_H_ci": {str(n): study.interval(reach_h[q]) for q, n in enumerate(counts)},
           "purity_ci": {str(n): study.interval(purity[q]) for q, n in enumerate(counts)},
           "finite_loss": bool(np.all(np.isfinite(np.asarray(states.loss)[
               ~np.isnan(np.asarray(states.loss))])))}
    log(f"  {LABELS[method]:22s} reach layer {horizon}: "
        + ", ".join(f"n={n}: {study.fmt_pm(row['reach_H_ci'][str(n)], 2)}" for n in counts)
        + "; purity: "
        + ", ".join(f"{study.fmt_pm(row['purity_ci'][str(n)], 2)}" for n in counts)
        + f"  ({t2 - t1:.1f} s run, {t1 - t0:.1f} s compile)")
    results["methods"][method] = row

  exact = np.asarray(jax.vmap(musik.random_reach_probability)(locks))
  mc_episodes = budget["multi_step"]
  mc = np.asarray(jax.jit(jax.vmap(musik.monte_carlo_reach, in_axes=(0, 0, None)),
                          static_argnums=2)(jax.random.split(k_random, config.num_seeds),
                                            locks, mc_episodes))
  results["random"] = {"exact": float(exact[0]), "exact_all_equal": bool(np.allclose(
      exact, float(num_actions) ** -horizon)), "monte_carlo": mc.tolist(),
      "monte_carlo_episodes": mc_episodes,
      "monte_carlo_successes": np.rint(mc * mc_episodes).astype(int).tolist()}
  log(f"  Random exploration: exact {exact[0]:.3g} = {num_actions}^-{horizon}; "
      f"{int(np.rint(mc * mc_episodes).sum())} successes in {config.num_seeds} × "
      f"{mc_episodes} episodes")
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results, config)
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, config, workdir)
  return results


# --- verdicts ------------------------------------------------------------------------------


def verdicts(results, config) -> list[dict]:
  m = results["methods"]
  counts = [str(n) for n in results["sample_counts"]]
  q, top = len(counts) - 1, counts[-1]
  horizon, actions = config.horizon, config.num_actions
  thr = float(config.reach_threshold)
  multi = np.asarray(m["multi_step"]["reach_H"])[q]
  one = np.asarray(m["one_step"]["reach_H"])[q]
  above = study.interval(multi - thr)
  rows = [{"finding": f"MusIK reaches layer H = {horizon} with probability > {thr:g} with "
                      f"n = {top} episodes per fit (random exploration: A^-H = "
                      f"{results['random']['exact']:.3g})",
           "verdict": study.decide(above),
           "deciding": f"MusIK reach − {thr:g} over seeds: {study.fmt_ci(above, 3)}; random "
                       f"exploration: {sum(results['random']['monte_carlo_successes'])} "
                       f"successes in {config.num_seeds} × "
                       f"{results['random']['monte_carlo_episodes']} episodes"}]
  diff = study.interval(multi - one)
  purity = study.interval(np.asarray(m["multi_step"]["purity"])[q]
                          - np.asarray(m["one_step"]["purity"])[q])
  rows.append({"finding": f"Multi-step IK beats one-step IK at reaching layer H = {horizon} "
                          f"(n = {top} episodes per fit)",
               "verdict": study.decide(diff),
               "deciding": f"MusIK − one-step reach, paired over seeds: {study.fmt_ci(diff, 3)}; "
                           f"purity difference {study.fmt_ci(purity, 3)}"})
  del actions
  return rows


# --- outputs ---------------------------------------------------------------------------------


def results_table(results, config=None) -> str:
  cfg = results["config"]
  counts = [str(n) for n in results["sample_counts"]]
  horizon = cfg["horizon"]
  lines = [f"## MusIK on a block-MDP combination lock (H = {horizon}, {cfg['num_latent']} "
           f"latents, {cfg['num_actions']} actions, {cfg['noise_dim']} noise dimensions)", "",
           f"Probability that the best cover policy reaches a good latent of layer H, and "
           f"decoder purity (mean over layers), mean ± 95% interval over {cfg['num_seeds']} "
           f"seeds (one random lock each), by episodes per inverse-kinematics fit n. CPU: "
           f"{results['cpu']}.", "",
           "| method | " + " | ".join(f"reach H, n={n}" for n in counts) + " | "
           + " | ".join(f"purity, n={n}" for n in counts) + " | episodes at largest n "
           "| run s (compile s) |",
           "|---" * (2 * len(counts) + 3) + "|"]
  for m in results["methods"].values():
    lines.append(f"| {m['label']} | "
                 + " | ".join(study.fmt_pm(m["reach_H_ci"][n], 2) for n in counts) + " | "
                 + " | ".join(study.fmt_pm(m["purity_ci"][n], 2) for n in counts)
                 + f" | {m['episodes_per_run'][counts[-1]]:,} | {m['run_seconds']:.1f} "
                   f"({m['compile_seconds']:.1f}) |")
  r = results["random"]
  lines.append(f"| Random exploration | {r['exact']:.3g} (exact) |"
               + " |" * (2 * len(counts) - 1)
               + f" {r['monte_carlo_episodes']:,} ({sum(r['monte_carlo_successes'])} successes "
                 f"over all seeds) | |")
  lines += ["", f"Total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  counts = [int(n) for n in results["sample_counts"]]
  horizon = results["config"]["horizon"]
  fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(14, 4))
  for m in results["methods"].values():
    study.errorbars(ax0, counts, [m["reach_H_ci"][str(n)] for n in counts], label=m["label"])
    study.errorbars(ax1, counts, [m["purity_ci"][str(n)] for n in counts], label=m["label"])
    by_layer = np.asarray(m["reach_by_layer"])[-1]       # [S, H] at the largest n
    study.errorbars(ax2, np.arange(1, horizon + 1),
                    [study.interval(by_layer[:, h]) for h in range(horizon)], label=m["label"])
  ax0.axhline(results["random"]["exact"], color="gray", linestyle=":",
              label="random exploration (A^-H)")
  ax0.set_ylabel(f"P(reach layer {horizon})")
  ax1.set_ylabel("decoder purity")
  ax2.set_ylabel(f"P(reach layer), n = {counts[-1]}")
  for ax in (ax0, ax1):
    ax.set_xscale("log")
    ax.set_xlabel("episodes per inverse-kinematics fit")
  ax2.set_xlabel("layer")
  ax0.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "musik.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/musik.py", "/tmp/musik")
