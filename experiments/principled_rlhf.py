"""Greedy vs pessimistic policies on a linear Bradley–Terry reward, and Plackett–Luce vs
pairwise-split estimation from K-wise rankings (see the config's docstring).

    python -m experiments.principled_rlhf --workdir=/tmp/principled_rlhf
    python -m experiments.principled_rlhf --workdir=/tmp/principled_rlhf --config.quick=True
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import scipy.stats

from experiments import study
from irl_jax import losses

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  phi = np.asarray(config.bandit_features, float)
  if phi.ndim != 2 or phi.shape[0] < 2 or phi.shape[1] < 2 or not np.all(np.isfinite(phi)):
    raise ValueError(f"config.bandit_features must be a finite [actions >= 2, d >= 2] table, "
                     f"got {config.bandit_features!r}.")
  for field in ("bandit_theta", "reference_features"):
    v = np.asarray(config[field], float)
    if v.shape != (phi.shape[1],) or not np.all(np.isfinite(v)):
      raise ValueError(f"config.{field} must be {phi.shape[1]} finite numbers (one per "
                       f"feature), got {config[field]!r}.")
  for field in ("frequent_pair", "rare_pair"):
    pair = tuple(config[field])
    if (len(pair) != 2 or any(not isinstance(a, int) or not 0 <= a < phi.shape[0] for a in pair)
        or pair[0] == pair[1]):
      raise ValueError(f"config.{field} must be two different action indices in "
                       f"[0, {phi.shape[0]}), got {pair!r}.")
  for field in ("rare_expected", "norm_bound", "lcb_scale", "lcb_margin", "slope_margin"):
    study.finite_positive(config, field)
  if not 0 < config.delta < 1:
    raise ValueError(f"config.delta must lie in (0, 1), got {config.delta!r}.")
  if np.linalg.norm(config.bandit_theta) > config.norm_bound:
    raise ValueError(f"config.bandit_theta has norm {np.linalg.norm(config.bandit_theta):.3g} "
                     f"> config.norm_bound {config.norm_bound!r}.")
  study.increasing_ints(config, "bandit_sizes", 1)
  if config.rare_expected > min(config.bandit_sizes):
    raise ValueError(f"config.rare_expected ({config.rare_expected!r}) must not exceed the "
                     f"smallest of config.bandit_sizes ({min(config.bandit_sizes)}).")
  study.int_at_least(config, "bandit_seeds", 2)
  study.int_at_least(config, "ranking_dim", 2)
  study.increasing_ints(config, "ranking_sizes", 2)
  study.increasing_ints(config, "ranking_counts", 1)
  study.int_at_least(config, "ranking_seeds", 2)
  study.int_at_least(config, "theta_seed", 0)


# --- (1) the bandit ------------------------------------------------------------------------


def confidence_width(n: int, *, d: int, feature_bound: float, norm_bound: float,
                     scale: float, delta: float) -> tuple[float, float]:
  """`(f, κ)` for `n` comparisons: the width `C·sqrt((d + log(1/δ))/(γ²n) + λB²)` with
  `γ = 1/(2 + e^{−LB} + e^{LB})` and the ridge `κ = λ = d/(B²n)`."""
  lb = feature_bound * norm_bound
  gamma = 1.0 / (2.0 + math.exp(-lb) + math.exp(lb))
  kappa = d / (norm_bound**2 * n)
  f = scale * math.sqrt((d + math.log(1 / delta)) / (gamma**2 * n) + kappa * norm_bound**2)
  return f, kappa


def _argmax_random_ties(key, values):
  """Index of the largest value; exact ties (to 1e−12 relative) broken uniformly."""
  top = values >= jnp.max(values) - 1e-12 * (jnp.abs(jnp.max(values)) + 1.0)
  return jax.random.categorical(key, jnp.where(top, 0.0, -jnp.inf))


def bandit_program(config, n: int):
  """`(key) -> dict` of one data set of `n` comparisons: the MLE, both policies'
  choices and suboptimalities, and the estimation error (float64)."""
  phi = jnp.asarray(config.bandit_features, jnp.float64)
  theta_star = jnp.asarray(config.bandit_theta, jnp.float64)
  v = jnp.asarray(config.reference_features, jnp.float64)
  rewards = phi @ theta_star
  (a, b), (c, e) = tuple(config.frequent_pair), tuple(config.rare_pair)
  # The four distinct differences, winner minus loser.
  diffs = jnp.stack([phi[a] - phi[b], phi[b] - phi[a], phi[c] - phi[e], phi[e] - phi[c]])
  p_rare = float(config.rare_expected) / n
  f, kappa = confidence_width(
      n, d=phi.shape[1], feature_bound=float(jnp.max(jnp.linalg.norm(phi, axis=1))),
      norm_bound=float(config.norm_bound), scale=float(config.lcb_scale),
      delta=float(config.delta))

  def one(key):
    k_rare, k_freq, k_out, k_greedy, k_lcb = jax.random.split(key, 5)
    rare = jax.random.binomial(k_rare, n, p_rare).astype(jnp.float64)
    frequent = n - rare
    first_freq = jax.random.binomial(k_freq, frequent, jax.nn.sigmoid(rewards[a] - rewards[b]))
    first_rare = jax.random.binomial(k_out, rare, jax.nn.sigmoid(rewards[c] - rewards[e]))
    counts = jnp.stack([first_freq, frequent - first_freq, first_rare, rare - first_rare])
    theta = losses.linear_bradley_terry_mle(diffs, norm_bound=float(config.norm_bound),
                                            weights=counts)
    greedy = _argmax_random_ties(k_greedy, phi @ theta)
    lcb_values = losses.pessimistic_policy_values(
        theta, phi, diffs, reference_features=v, weights=counts, f=f, kappa=kappa)
    lcb = _argmax_random_ties(k_lcb, lcb_values)
    sigma = (diffs * counts[:, None]).T @ diffs / n + kappa * jnp.eye(phi.shape[1])
    err = theta - theta_star
    return {"greedy": greedy, "lcb": lcb, "greedy_subopt": jnp.max(rewards) - rewards[greedy],
            "lcb_subopt": jnp.max(rewards) - rewards[lcb], "theta": theta,
            "rare_count": rare, "error": jnp.sqrt(err @ sigma @ err)}

  return jax.jit(jax.vmap(one)), f, kappa


def bandit_laws(results, config) -> dict:
  """Least-squares slopes over the sample sizes, per seed then over seeds: the greedy
  suboptimality against log10 n (a plateau: slope ≈ 0) and log MLE error against log n
  (n^−½: slope ≈ −0.5)."""
  sizes = [str(n) for n in config.bandit_sizes]
  log_n = np.log(np.asarray(config.bandit_sizes, float))
  greedy = np.stack([np.asarray(results["bandit"][n]["greedy_subopt"]) for n in sizes])
  error = np.stack([np.asarray(results["bandit"][n]["error"]) for n in sizes])
  decades = log_n / np.log(10.0)
  greedy_slope = np.array([np.polyfit(decades, greedy[:, s], 1)[0]
                           for s in range(greedy.shape[1])])
  error_slope = np.array([np.polyfit(log_n, np.log(error[:, s]), 1)[0]
                          for s in range(error.shape[1])])
  return {"greedy_per_decade": study.interval(greedy_slope),
          "error_log_slope": study.interval(error_slope)}


# --- (2, 3) K-wise rankings -----------------------------------------------------------------


def ranking_theta(config) -> np.ndarray:
  """The fixed `θ*`: a unit vector with `⟨1, θ*⟩ = 0`."""
  g = np.random.default_rng(config.theta_seed).standard_normal(config.ranking_dim)
  g -= g.mean()
  return g / np.linalg.norm(g)


def ranking_program(config, k: int, n: int, theta_star):
  """`(key) -> (error_K, error_2)` for `n` rankings of `k` items (float64)."""
  theta_star = jnp.asarray(theta_star, jnp.float64)
  d = theta_star.shape[0]

  def one(key):
    k_phi, k_gumbel = jax.random.split(key)
    phi = jax.random.normal(k_phi, (n, k, d), jnp.float64)
    utility = phi @ theta_star + jax.random.gumbel(k_gumbel, (n, k), jnp.float64)
    order = jnp.argsort(-utility, axis=1)                       # best first: PL(θ*)
    ranked = jnp.take_along_axis(phi, order[:, :, None], axis=1)
    errors = []
    for split in (False, True):
      theta = losses.linear_ranking_mle(ranked, norm_bound=float(config.norm_bound),
                                        split_pairs=split)
      errors.append(jnp.sqrt(2.0) * jnp.linalg.norm(theta - theta_star))   # Σ = 2I
    return jnp.stack(errors)

  return jax.jit(jax.vmap(one))


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  k_bandit, k_rank = jax.random.split(jax.random.key(config.seed))
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "bandit": {}, "rankings": {}}
  phi = np.asarray(config.bandit_features, float)
  rewards = phi @ np.asarray(config.bandit_theta, float)
  results["bandit_rewards"] = rewards.tolist()
  with jax.enable_x64(True):
    t0 = time.perf_counter()
    for i, n in enumerate(config.bandit_sizes):
      program, f, kappa = bandit_program(config, int(n))
      keys = jax.random.split(jax.random.fold_in(k_bandit, i), config.bandit_seeds)
      out = jax.tree.map(np.asarray, program(keys))
      row = {"f": f, "kappa": kappa,
             "greedy_subopt": out["greedy_subopt"].tolist(),
             "lcb_subopt": out["lcb_subopt"].tolist(),
             "greedy_choice_counts": np.bincount(out["greedy"], minlength=len(phi)).tolist(),
             "lcb_choice_counts": np.bincount(out["lcb"], minlength=len(phi)).tolist(),
             "rare_count_mean": float(out["rare_count"].mean()),
             "error": out["error"].tolist(),
             "greedy_ci": study.interval(out["greedy_subopt"]),
             "lcb_ci": study.interval(out["lcb_subopt"]),
             "greedy_at_least_gap": float(np.mean(out["greedy_subopt"] >= 0.1 - 1e-9)),
             "error_ci": study.interval(out["error"])}
      results["bandit"][str(n)] = row
      log(f"  bandit n={n:>8,}: greedy suboptimality {study.fmt_pm(row['greedy_ci'])}, "
          f"pessimistic {study.fmt_pm(row['lcb_ci'])} (f={f:.3g}), MLE error "
          f"{study.fmt_pm(row['error_ci'])}; greedy picks {row['greedy_choice_counts']}, "
          f"pessimism {row['lcb_choice_counts']}")
    results["bandit_seconds"] = time.perf_counter() - t0
    results["bandit_laws"] = bandit_laws(results, config)

    theta_star = ranking_theta(config)
    results["ranking_theta"] = theta_star.tolist()
    t0 = time.perf_counter()
    for k in config.ranking_sizes:
      errors = []
      for i, n in enumerate(config.ranking_counts):
        keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(k_rank, k), i),
                                config.ranking_seeds)
        errors.append(np.asarray(ranking_program(config, int(k), int(n), theta_star)(keys)))
      errors = np.stack(errors)                                   # [counts, seeds, 2]
      log_n = np.log(np.asarray(config.ranking_counts, float))
      slopes = np.array([[scipy.stats.linregress(log_n, np.log(errors[:, s, j])).slope
                          for s in range(errors.shape[1])] for j in range(2)])
      row = {"error_K": errors[..., 0].tolist(), "error_2": errors[..., 1].tolist(),
             "error_K_ci": [study.interval(e) for e in errors[..., 0]],
             "error_2_ci": [study.interval(e) for e in errors[..., 1]],
             "gain_ci": [study.interval(e[:, 1] - e[:, 0]) for e in errors],
             "ratio": [float(np.mean(e[:, 0]) / np.mean(e[:, 1])) for e in errors],
             "slope_K": slopes[0].tolist(), "slope_2": slopes[1].tolist(),
             "slope_K_ci": study.interval(slopes[0]), "slope_2_ci": study.interval(slopes[1])}
      results["rankings"][str(k)] = row
      log(f"  K={k}: MLE_K error " + ", ".join(
          f"n={n}: {study.fmt_pm(ci)}"
          for n, ci in zip(config.ranking_counts, row["error_K_ci"], strict=True))
          + "; MLE_K / MLE_2 " + ", ".join(f"{r:.2f}" for r in row["ratio"])
          + f"; slopes {study.fmt_pm(row['slope_K_ci'])} (K), "
            f"{study.fmt_pm(row['slope_2_ci'])} (2)")
    results["ranking_seconds"] = time.perf_counter() - t0
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results, config)
  return study.save(results, workdir, results_table(results, config),
                    lambda: plot_results(results, config, workdir))


# --- verdicts ------------------------------------------------------------------------------


def _combine(verdicts) -> str:
  if all(v == "reproduced" for v in verdicts):
    return "reproduced"
  return "contradicted" if "contradicted" in verdicts else "not at this scale"


def verdicts(results, config) -> list[dict]:
  top = str(max(config.bandit_sizes))
  b = results["bandit"][top]
  greedy, lcb = np.asarray(b["greedy_subopt"]), np.asarray(b["lcb_subopt"])
  diff = study.interval(greedy - lcb)
  lcb_zero, lcb_ci = study.equivalence(lcb, float(config.lcb_margin))
  rows = [{"finding": f"Greedy on the Bradley–Terry MLE stays suboptimal while the "
                      f"pessimistic policy converges (n = {int(top):,} comparisons)",
           "verdict": _combine([study.decide(diff), lcb_zero]),
           "deciding": f"greedy − pessimistic suboptimality, paired: {study.fmt_ci(diff)}; "
                       f"pessimistic suboptimality {study.fmt_ci(lcb_ci)} (±"
                       f"{config.lcb_margin:g} of 0: {lcb_zero}); greedy ≥ 0.1 suboptimal in "
                       f"{b['greedy_at_least_gap']:.0%} of seeds; fitted over all n: greedy "
                       f"suboptimality {study.fmt_ci(results['bandit_laws']['greedy_per_decade'])}"
                       f" per decade of n, log MLE error against log n "
                       f"{study.fmt_ci(results['bandit_laws']['error_log_slope'])}"}]
  gains = [(k, n, ci) for k, r in results["rankings"].items()
           for n, ci in zip(config.ranking_counts, r["gain_ci"], strict=True)]
  worst = min(gains, key=lambda g: g[2][1] if not np.isnan(g[2][1]) else -np.inf)
  ratios = [x for r in results["rankings"].values() for x in r["ratio"]]
  rows.append({"finding": "The Plackett–Luce MLE (MLE_K) estimates θ* better than the "
                          "pairwise split (MLE_2) at every n, K ∈ "
                          f"{tuple(config.ranking_sizes)}",
               "verdict": _combine([study.decide(ci) for _, _, ci in gains]),
               "deciding": f"MLE_2 − MLE_K error, paired: above 0 in "
                           f"{sum(study.decide(ci) == 'reproduced' for _, _, ci in gains)} of "
                           f"{len(gains)} (K, n); weakest at K = {worst[0]}, n = {worst[1]}: "
                           f"{study.fmt_ci(worst[2], 4)}; error ratio MLE_K/MLE_2 "
                           f"{min(ratios):.2f}–{max(ratios):.2f}"})
  slopes = [(k, name, np.asarray(r[f"slope_{name}"])) for k, r in results["rankings"].items()
            for name in ("K", "2")]
  checks = [(k, name, *study.equivalence(s + 0.5, float(config.slope_margin)))
            for k, name, s in slopes]
  rows.append({"finding": "Both estimators' errors fall as n^−½",
               "verdict": _combine([c[2] for c in checks]),
               "deciding": "fitted slopes: " + "; ".join(
                   f"MLE_{'K' if name == 'K' else '2'} K={k}: "
                   f"{study.fmt_ci(study.interval(s), 3)}" for k, name, s in slopes)
                   + f" (claim: within ±{config.slope_margin:g} of −0.5)"})
  return rows


# --- outputs ---------------------------------------------------------------------------------


def results_table(results, config=None) -> str:
  cfg = results["config"]
  sizes = [str(n) for n in cfg["bandit_sizes"]]
  lines = ["## Pessimistic MLE on a 4-action linear bandit", "",
           f"Suboptimality r(a*) − r(chosen) of the greedy and the pessimistic policy, and the "
           f"MLE's error ‖θ̂ − θ*‖_(Σ_D + λI), mean ± 95% interval over {cfg['bandit_seeds']} "
           f"seeds; about {cfg['rare_expected']:g} comparison(s) of the rare pair per data set. "
           f"CPU: {results['cpu']}.", "",
           "| n | greedy | pessimistic | width f | greedy picks (a1..a4) | pessimism picks | "
           "MLE error |", "|---|---|---|---|---|---|---|"]
  for n in sizes:
    r = results["bandit"][n]
    lines.append(f"| {int(n):,} | {study.fmt_pm(r['greedy_ci'])} | {study.fmt_pm(r['lcb_ci'])} "
                 f"| {r['f']:.3g} | {r['greedy_choice_counts']} | {r['lcb_choice_counts']} | "
                 f"{study.fmt_pm(r['error_ci'])} |")
  laws = results["bandit_laws"]
  lines += ["", f"Fitted laws over n (per seed, then mean ± 95% interval): greedy suboptimality "
            f"{study.fmt_pm(laws['greedy_per_decade'])} per decade of n (a plateau is 0); "
            f"log MLE error against log n {study.fmt_pm(laws['error_log_slope'])} "
            f"(n^−½ is −0.5)."]
  counts = cfg["ranking_counts"]
  lines += ["", f"## Plackett–Luce (MLE_K) vs pairwise split (MLE_2), d = {cfg['ranking_dim']}",
            "", f"Error ‖θ̂ − θ*‖_Σ, mean ± 95% interval over {cfg['ranking_seeds']} seeds.", "",
            "| K | estimator | " + " | ".join(f"n={n}" for n in counts) + " | slope |",
            "|---|---|" + "---|" * len(counts) + "---|"]
  for k, r in results["rankings"].items():
    for name in ("K", "2"):
      lines.append(f"| {k} | MLE_{name} | "
                   + " | ".join(study.fmt_pm(ci, 4) for ci in r[f"error_{name}_ci"])
                   + f" | {study.fmt_pm(r[f'slope_{name}_ci'])} |")
    lines.append(f"| {k} | ratio K/2 | " + " | ".join(f"{x:.3f}" for x in r["ratio"]) + " | |")
  lines += ["", f"Bandit {results['bandit_seconds']:.0f} s, rankings "
            f"{results['ranking_seconds']:.0f} s, total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  cfg = results["config"]
  sizes = [int(n) for n in cfg["bandit_sizes"]]
  fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4))
  for key, label in (("greedy_ci", "greedy on the MLE"), ("lcb_ci", "pessimistic (LCB)")):
    study.errorbars(ax0, sizes, [results["bandit"][str(n)][key] for n in sizes], label=label)
  ax0.axhline(0.1, color="gray", linestyle=":", label="gap between a4 and a3")
  ax0.set_xscale("log")
  ax0.set_xlabel("comparisons n")
  ax0.set_ylabel("suboptimality")
  ax0.legend(fontsize=7)
  study.errorbars(ax1, sizes, [results["bandit"][str(n)]["error_ci"] for n in sizes],
                  label="‖θ̂ − θ*‖ in Σ_D + λI")
  ax1.set_xscale("log")
  ax1.set_yscale("log")
  ax1.set_xlabel("comparisons n")
  ax1.set_ylabel("MLE error")
  ax1.legend(fontsize=7)
  counts = np.asarray(cfg["ranking_counts"], float)
  for k, r in results["rankings"].items():
    for name in ("K", "2"):
      study.errorbars(ax2, counts, r[f"error_{name}_ci"],
                      label=f"K={k}, MLE_{name}", linestyle="-" if name == "K" else "--")
  first = np.mean([r["error_2_ci"][0][0] for r in results["rankings"].values()])
  ax2.plot(counts, first * np.sqrt(counts[0] / counts), color="gray", linestyle=":",
           label="∝ n^−½")
  ax2.set_xscale("log")
  ax2.set_yscale("log")
  ax2.set_xlabel("rankings n")
  ax2.set_ylabel("‖θ̂ − θ*‖_Σ")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "principled_rlhf.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/principled_rlhf.py",
                     "/tmp/principled_rlhf")
