"""Reproduce "Inverse RL without RL" (Swamy et al. 2023) on a combination lock: with
resets to ν0 IRL's inner RL needs exponentially many interactions in the horizon,
with resets to expert states far fewer (the paper: polynomially many; see the verdict
rules for what is tested here).

    python -u -m experiments.expert_resets --workdir=/tmp/expert_resets
    python -u -m experiments.expert_resets --workdir=/tmp/expert_resets --config.quick=True

Setting. Combination locks (`irl_jax.tabular.envs.combination_lock`) of depth
`H ∈ config.depths`, 2 actions, horizon `H`, one random combination per seed.
The algorithm is `irl_jax.tabular.resets.make_train`: an FTRL cost player over
the moments of all past learner policies (no-regret) against ε-greedy tabular
Q-learning on the reward `−c`, whose episodes start at an expert state
(a uniformly drawn demonstration step, at its time index) with probability `α`
and at `ν0` otherwise. Methods: expert resets (`α = config.alpha`, 1 by default)
and ν0 resets (`α = 0`, standard IRL). Measured: environment interactions
(every transition the learner executes, including the cost player's rollouts)
until the greedy policy's exact return reaches `0.95·J(π_E)`, capped at
`config.max_interactions`; a run that hits the cap is censored, enters the
statistics at its count at the cap (a lower bound) and is flagged in every table.

Cost classes. `"leaf"` (the verdicts' class, `config.cost_class`): one-hot
`(s, a)` costs on the lock's last level only, where the true reward sits; the
class contains the true reward, and its moments do not reveal the expert's path
at the earlier levels, so the learner from `ν0` has to find the end of the lock
by exploration (the setting of the paper's lower bound). `"state_action"` (an
ablation): the full table `c[S, A]`; the expert's moments then mark its action at
every level and the cost is a dense reward along the expert's path, so even ν0
resets need no deep exploration. Both run on the same seeds in one vmapped
program per depth. The leaf class was chosen as the verdicts' class after the
full table had been tried and showed no gap between the reset rules; the full
table's results are therefore always reported next to the verdicts.

Seeds. Seed set 0 (`config.seed = 0`: the locks' combinations and the training
keys at every depth) was used for the exploratory runs, including the full-table
run that led to the choice of the leaf class, so verdicts on it are exploratory.
The confirmatory verdicts are decided on seed set 1 (`config.seed = 1`, the
default), never used before.

Caveat (stated, not tested here): ν0 resets are exponential on the lock because
Q-learning explores by ε-greedy dithering (with random tie-breaking); the lock has
only `H + 2` states, so an optimistic explorer would be polynomial even from `ν0`.
The continuous variant of the study (a settable pure-JAX environment, a GAIL-style
cost with gradient penalty, α-mixture resets) is not implemented here; issues 13/14
cover continuous environments.

Growth laws. Per seed `k` (the same combination and key for both methods), the OLS
slope `b` of `log2(interactions)` on `H` over the depths (1 = doubling per level)
and the exponent `p` of the power law, the OLS slope of `ln(interactions)` on
`ln H`. Intervals are 95% t-intervals over seeds (`experiments.study.interval`).

Verdict rules (fixed before the first run; `s* = config.exponential_slope = 0.7`):

(1) "ν0 resets need exponentially many interactions in the depth (≥ s* doublings
    per level), expert resets far fewer (their growth per level is below ν0's)"
    (cost class `config.cost_class`), from the ν0 slope `b_ν0` and the
    expert-reset slope `b_E` (intervals over seeds):
    reproduced if `low(b_ν0) ≥ s*`, `low(b_ν0) > high(b_E)` and no expert-reset
    run is censored; contradicted if no ν0 run is censored and `high(b_ν0) < s*`
    or `high(b_ν0) < low(b_E)` (censoring only flattens the ν0 slope, so a flat
    censored fit decides nothing); otherwise not at this scale.
    The rule does not test the paper's "polynomial" for expert resets: over depths
    4–14 a log2-slope of 0.3–0.5 fits a power law `H^p` and a slow exponential
    (`1.2^H`–`1.4^H`) alike, and this depth range cannot separate them. The fitted
    power-law exponent `p` is reported as a description of the expert-reset
    curve, not as a test.
(2) "Expert resets need fewer interactions than ν0 resets at the largest depth":
    the paired per-seed `log2(I_ν0 / I_E)` at the largest depth, decided by
    `experiments.study.decide` (interval above 0: reproduced; below: contradicted),
    except that any censored expert-reset run there makes it not at this scale.

Outputs in the work directory: `results.md`, `results.json`,
`interactions_vs_depth.png` (log scale, one panel per cost class) and
`learning_curves.png` (`J(π)` against interactions at the largest depth).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import study
from experiments.study import (
  cpu_model,
  decide,
  fmt_ci,
  interval,
  resolve_quick,
  write_json,
  write_text,
)
from irl_jax.tabular import dp, envs, resets

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "expert_resets.py")

COST_CLASSES = ("leaf", "state_action")
EXPERT, NU0 = "expert resets", "ν0 resets"


def resolve(config):
  """The config with its quick settings applied (an unknown quick setting raises,
  naming it), checked."""
  config = resolve_quick(config)
  classes = cost_classes(config)
  unknown = [c for c in classes if c not in COST_CLASSES]
  if unknown:
    raise ValueError(f"config.cost_class / ablation_cost_classes: unknown {unknown}; "
                     f"known: {list(COST_CLASSES)}.")
  if len(set(classes)) != len(classes):
    raise ValueError(f"config.ablation_cost_classes repeats a class: {classes}.")
  if config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be >= 2 for intervals, got {config.num_seeds}.")
  if len(config.depths) < 2 or min(config.depths) < 1:
    raise ValueError(f"config.depths needs at least two depths >= 1, got {config.depths}.")
  if not 0.0 < config.alpha <= 1.0:
    raise ValueError(f"config.alpha must lie in (0, 1], got {config.alpha}.")
  return config


def cost_classes(config) -> list[str]:
  return [config.cost_class, *config.ablation_cost_classes]


def method_alphas(config) -> dict[str, float]:
  return {EXPERT: float(config.alpha), NU0: 0.0}


# -- one depth ----------------------------------------------------------------------------------


def lock_problems(depth: int, key, *, num_seeds: int, num_actions: int,
                  num_demonstrations: int):
  """`(mdps, demos)` of `num_seeds` locks with random combinations, as NumPy arrays
  stacked along a leading seed axis: the MDPs (with the full one-hot `(s, a)`
  features) and the expert's demonstrations. The expert (the combination) and the
  lock are deterministic, so every demonstration is the path `s_t = t`,
  `a_t = combination[t]` (what `dp.sample_trajectories` draws from that policy);
  they are written down rather than sampled."""
  mdps, paths = [], []
  for k in range(num_seeds):
    mdp, combination = envs.combination_lock(depth, num_actions=num_actions,
                                             key=jax.random.fold_in(key, k))
    mdps.append(jax.tree.map(np.asarray, mdp))
    paths.append(np.asarray(combination))
  mdps = jax.tree.map(lambda *xs: np.stack(xs), *mdps)
  levels = np.broadcast_to(np.arange(depth, dtype=np.int32), (num_seeds, num_demonstrations,
                                                              depth))
  actions = np.broadcast_to(np.stack(paths).astype(np.int32)[:, None, :], levels.shape)
  demos = dp.Trajectories(levels, actions, levels + 1)
  return mdps, demos


def with_cost_class(mdps, depth: int, cost_class: str):
  """The lock MDPs with the cost class's features (as `resets.restrict_features`):
  `"state_action"` keeps the one-hot `(s, a)` features; `"leaf"` zeroes them outside
  the last level (state `depth − 1`)."""
  if cost_class == "state_action":
    return mdps
  mask = np.zeros(mdps.transitions.shape[-3], bool)
  mask[depth - 1] = True
  return mdps._replace(features=mdps.features * mask[:, None, None])


def run_depth(config, depth: int) -> dict:
  """Every cost class × method × seed at one depth in one vmapped program.

  Returns `{"classes": {class: {method: {"interactions", "solved", "censored",
  "iterations", "final_return", "expert_return": [seeds], "curves": [(interactions,
  returns)]}}}, "compile_time", "run_time", "batch"}`.
  """
  classes, alphas = cost_classes(config), method_alphas(config)
  items = [(c, m, k) for c in classes for m in alphas for k in range(config.num_seeds)]
  base = jax.random.fold_in(jax.random.key(config.seed), depth)
  locks, lock_demos = lock_problems(depth, jax.random.fold_in(base, 0),
                                    num_seeds=config.num_seeds, num_actions=config.num_actions,
                                    num_demonstrations=config.num_demonstrations)
  # Seed k has the same lock, demonstrations and training key in every class and method
  # (common random numbers).
  concat = lambda *xs: jnp.asarray(np.concatenate(xs))
  mdps = jax.tree.map(concat, *[with_cost_class(locks, depth, c)
                                for c in classes for _ in alphas])
  demos = jax.tree.map(concat, *[lock_demos for _ in classes for _ in alphas])
  seed_keys = jax.random.split(jax.random.fold_in(base, 1), config.num_seeds)
  keys = jnp.tile(seed_keys, len(classes) * len(alphas))
  alpha = jnp.asarray([alphas[m] for _, m, _ in items], jnp.float32)
  train = resets.make_train(
      horizon=depth, max_interactions=config.max_interactions,
      episodes_per_iteration=config.episodes_per_iteration,
      cost_rollouts=config.cost_rollouts, epsilon=config.epsilon,
      learning_rate=config.learning_rate, eta=config.eta, threshold=config.threshold,
      cost_player=config.cost_player, log_length=config.log_length)
  t0 = time.perf_counter()
  compiled = jax.jit(jax.vmap(train)).lower(keys, mdps, demos, alpha).compile()
  t1 = time.perf_counter()
  out, log = jax.block_until_ready(compiled(keys, mdps, demos, alpha))
  t2 = time.perf_counter()
  out = jax.tree.map(np.asarray, out)
  log = jax.tree.map(np.asarray, log)
  result = {c: {m: {"interactions": [], "solved": [], "censored": [], "iterations": [],
                    "final_return": [], "expert_return": [], "curves": []} for m in alphas}
            for c in classes}
  for i, (c, m, _) in enumerate(items):
    r = result[c][m]
    r["interactions"].append(int(out.interactions[i]))
    r["solved"].append(bool(out.solved[i]))
    r["censored"].append(bool(out.censored[i]))
    r["iterations"].append(int(out.iterations[i]))
    r["final_return"].append(float(out.final_return[i]))
    r["expert_return"].append(float(out.expert_return[i]))
    logged = log.iterations[i] > 0  # the log's written entries (a geometric grid)
    r["curves"].append((log.interactions[i, logged], log.returns[i, logged]))
  return {"classes": result, "compile_time": t1 - t0, "run_time": t2 - t1,
          "batch": len(items)}


# -- statistics and verdicts --------------------------------------------------------------------


def slopes(depths, counts) -> tuple[np.ndarray, np.ndarray]:
  """Per seed (`counts[D, seeds]`): the OLS slope of `log2(count)` on depth, and the
  power-law exponent (OLS slope of `ln(count)` on `ln(depth)`)."""
  h = np.asarray(depths, float)
  y = np.log2(np.asarray(counts, float))
  b = np.polyfit(h, y, 1)[0]
  p = np.polyfit(np.log(h), y * np.log(2.0), 1)[0]
  return np.atleast_1d(b), np.atleast_1d(p)


def summarise(results) -> None:
  """Adds per-depth summaries and the growth-law fits to `results["classes"]`."""
  depths = results["depths"]
  for per_method in results["classes"].values():
    for r in per_method.values():
      counts = np.asarray([r["by_depth"][str(d)]["interactions"] for d in depths], float)
      censored = np.asarray([r["by_depth"][str(d)]["censored"] for d in depths], bool)
      for d, row, cens in zip(depths, counts, censored, strict=True):
        s = r["by_depth"][str(d)]
        s["median"] = float(np.median(row))
        s["mean"] = interval(row)
        s["censored_fraction"] = float(np.mean(cens))
      b, p = slopes(depths, counts)
      r["log2_slope_per_seed"] = b.tolist()
      r["power_law_exponent_per_seed"] = p.tolist()
      r["log2_slope"] = interval(b)
      r["power_law_exponent"] = interval(p)
      r["any_censored"] = bool(censored.any())
      r["censored_runs"] = int(censored.sum())


def verdicts(results, config) -> list[dict]:
  """The two findings' verdicts on `config.cost_class` by the rules in the module
  docstring (fixed before running)."""
  per_method = results["classes"][config.cost_class]
  nu0, exp = per_method[NU0], per_method[EXPERT]
  star = config.exponential_slope
  b_nu0, b_e = nu0["log2_slope"], exp["log2_slope"]
  _, lo_n, hi_n, n_n = b_nu0
  _, lo_e, hi_e, n_e = b_e
  defined = n_n >= 2 and n_e >= 2 and not np.isnan(lo_n) and not np.isnan(lo_e)
  if not defined:
    v1 = "not at this scale"
  elif lo_n >= star and lo_n > hi_e and not exp["any_censored"]:
    v1 = "reproduced"
  elif not nu0["any_censored"] and (hi_n < star or hi_n < lo_e):
    v1 = "contradicted"
  else:
    v1 = "not at this scale"
  p_e = exp["power_law_exponent"]
  number1 = (f"log2-interactions per level: ν0 resets {fmt_ci(b_nu0, 2, False)}, expert "
             f"resets {fmt_ci(b_e, 2, False)} (rule: ν0 low ≥ {star} and above expert high); "
             f"expert-reset power-law exponent (a description, not tested) p = "
             f"{fmt_ci(p_e, 2, False)}; censored runs: "
             f"ν0 {nu0['censored_runs']}, expert {exp['censored_runs']}")
  top = str(max(results["depths"]))
  i_nu0 = np.asarray(nu0["by_depth"][top]["interactions"], float)
  i_e = np.asarray(exp["by_depth"][top]["interactions"], float)
  ratio = interval(np.log2(i_nu0 / i_e))
  censored_e = any(exp["by_depth"][top]["censored"])
  v2 = "not at this scale" if censored_e else decide(ratio)
  number2 = (f"log2(I_ν0 / I_expert) at H = {top}: {fmt_ci(ratio, 2)} (paired over seeds; "
             f"ν0 censored {sum(nu0['by_depth'][top]['censored'])}/{len(i_nu0)}, expert "
             f"censored {sum(exp['by_depth'][top]['censored'])}/{len(i_e)})")
  return [
      dict(finding=f"(1) ν0 resets need exponentially many interactions in the depth "
           f"(≥ {star} doublings per level), expert resets far fewer (their growth per "
           f"level is below ν0's)", verdict=v1, number=number1),
      dict(finding=f"(2) expert resets need fewer interactions than ν0 resets at the "
           f"largest depth (H = {top})", verdict=v2, number=number2),
  ]


# -- the study ----------------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  """The whole study; writes results.md, results.json and plots into `workdir`."""
  config = resolve(config)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  classes, alphas = cost_classes(config), method_alphas(config)
  results = {"config": config.to_dict(), "device": str(jax.devices()[0]), "cpu": cpu_model(),
             "depths": list(config.depths), "timing": {},
             "classes": {c: {m: {"alpha": a, "by_depth": {}} for m, a in alphas.items()}
                         for c in classes}}
  curves = {}
  for depth in config.depths:
    r = run_depth(config, depth)
    results["timing"][str(depth)] = {"compile": r["compile_time"], "run": r["run_time"],
                                     "batch": r["batch"]}
    for c in classes:
      for m in alphas:
        rows = r["classes"][c][m]
        curves[(c, m, depth)] = rows.pop("curves")
        results["classes"][c][m]["by_depth"][str(depth)] = rows
    line = ", ".join(
        f"{c}/{m}: median {np.median(r['classes'][c][m]['interactions']):.0f}"
        f" ({sum(r['classes'][c][m]['censored'])} censored)" for c in classes for m in alphas)
    log(f"H={depth}: {line} [compile {r['compile_time']:.1f} s, run {r['run_time']:.1f} s]")
  summarise(results)
  results["verdicts"] = verdicts(results, config)
  results["timing"]["total"] = time.perf_counter() - t_start
  write_json(results, workdir)
  write_text(results_table(results, config), workdir)
  plot_results(results, config, curves, workdir)
  return results


def _count(x) -> str:
  return f"{x:,.0f}"


def _seed_role(seed) -> str:
  return {0: "exploratory, the set that chose the cost class",
          1: "confirmatory"}.get(int(seed), "a further replication")


def results_table(results, config) -> str:
  c = results["config"]
  total = results["timing"].get("total", float("nan"))
  lines = [
      "# Expert resets vs ν0 resets on the combination lock",
      "",
      f"{len(results['depths'])} depths × {c['num_seeds']} seeds × 2 methods × "
      f"{len(results['classes'])} cost classes; {c['episodes_per_iteration']} Q-learning "
      f"episodes and {c['cost_rollouts']} cost-player rollout(s) per outer iteration; "
      f"ε = {c['epsilon']}, lr = {c['learning_rate']}, η = {c['eta']}, cost player "
      f"{c['cost_player']}; stop at J(π) ≥ {c['threshold']}·J(π_E); cap "
      f"{_count(c['max_interactions'])} interactions; seed set {c['seed']}. {total:.0f} s on "
      f"{os.cpu_count()} × {results['cpu']} ({results['device']}).",
      "",
      "Interactions to reach the threshold (every learner transition, cost-player rollouts "
      "included). A censored run (hit the cap) enters at its count at the cap, so a mean or "
      "median that includes one is a lower bound (marked ≥).",
  ]
  for cls, per_method in results["classes"].items():
    role = "verdict class" if cls == config.cost_class else "ablation"
    lines += ["", f"## cost class `{cls}` ({role})", "",
              "| H | method | median | mean [95% interval] | censored |", "|---|---|---|---|---|"]
    for d in results["depths"]:
      for name, r in per_method.items():
        s = r["by_depth"][str(d)]
        ge = "≥ " if s["censored_fraction"] > 0 else ""
        m, lo, hi, n = s["mean"]
        lines.append(f"| {d} | {name} (α={r['alpha']:g}) | {ge}{_count(s['median'])} | "
                     f"{ge}{_count(m)} [{_count(lo)}, {_count(hi)}] | "
                     f"{sum(s['censored'])}/{n} |")
    lines += ["", "| method | log2-interactions per level (b) | power-law exponent (p) | "
              "censored runs |", "|---|---|---|---|"]
    for name, r in per_method.items():
      lines.append(f"| {name} | {fmt_ci(r['log2_slope'], 2, False)} | "
                   f"{fmt_ci(r['power_law_exponent'], 2, False)} | {r['censored_runs']} |")
  lines += ["", f"## verdicts (cost class `{config.cost_class}`, seed set {c['seed']}; rules "
            "fixed in the module docstring before running; the leaf class was chosen after "
            "the full table had shown no gap)", "",
            "Seed set 0 was used for the exploratory runs that chose the cost class; the "
            "verdicts are decided on seed set 1, never used before. This run: seed set "
            f"{c['seed']} ({_seed_role(c['seed'])}).", "",
            "Finding (1) tests that ν0 resets grow exponentially in the depth and expert "
            "resets more slowly; it does not test that expert resets are polynomial (over "
            "these depths a power law and a slow exponential fit alike), so the power-law "
            "exponent p is a description, not a test.", "",
            "| finding | verdict | deciding number (mean [95% interval] over seeds) |",
            "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['number']} |")
  lines += ["", "Timing per depth (one vmapped program each): " + ", ".join(
      f"H={d}: compile {t['compile']:.1f} s + run {t['run']:.1f} s"
      for d, t in results["timing"].items() if d != "total") + "."]
  return "\n".join(lines) + "\n"


def plot_results(results, config, curves, workdir: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  depths = np.asarray(results["depths"], float)
  colours = {EXPERT: "tab:blue", NU0: "tab:red"}
  classes = list(results["classes"])
  fig, axes = plt.subplots(1, len(classes), figsize=(5.5 * len(classes), 4.5), sharey=True,
                           squeeze=False)
  for ax, cls in zip(axes[0], classes, strict=True):
    for name, r in results["classes"][cls].items():
      counts = np.asarray([r["by_depth"][str(d)]["interactions"] for d in results["depths"]],
                          float)
      cens = np.asarray([r["by_depth"][str(d)]["censored"] for d in results["depths"]], bool)
      jitter = np.linspace(-0.15, 0.15, counts.shape[1])[None, :] * (depths[1] - depths[0]) / 2
      x = depths[:, None] + jitter + (0.1 if name == NU0 else -0.1)
      ax.scatter(x[~cens], counts[~cens], s=10, alpha=0.5, color=colours[name])
      if cens.any():
        ax.scatter(x[cens], counts[cens], s=30, marker="^", facecolors="none",
                   edgecolors=colours[name], label=f"{name}: censored at the cap")
      ax.plot(depths, np.median(counts, 1), "-o", color=colours[name],
              label=f"{name} (α={r['alpha']:g}), median; b = {r['log2_slope'][0]:.2f}/level, "
              f"p = {r['power_law_exponent'][0]:.1f}")
    ax.axhline(results["config"]["max_interactions"], color="grey", ls=":", lw=1,
               label="cap")
    ax.set_yscale("log")
    ax.set(xlabel="lock depth H", title=f"cost class '{cls}'"
           + (" (verdicts)" if cls == config.cost_class else " (ablation)"))
    ax.legend(fontsize=7)
  axes[0, 0].set_ylabel("environment interactions to J ≥ 0.95·J(π_E)")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "interactions_vs_depth.png"), dpi=120)
  plt.close(fig)

  top = int(depths.max())
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for name in method_alphas(config):
    for k, (x, y) in enumerate(curves[(config.cost_class, name, top)]):
      ax.plot(np.maximum(x, 1), y, color=colours[name], alpha=0.5, lw=1,
              label=name if k == 0 else None)
  ax.axhline(config.threshold, color="grey", ls=":", lw=1, label="threshold")
  ax.set_xscale("log")
  ax.set(xlabel="environment interactions", ylabel="J(greedy π) (true reward)",
         title=f"learning curves, H = {top}, cost class '{config.cost_class}'")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "learning_curves.png"), dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  study.command_line(run, lambda results, config: results_table(results, resolve(config)),
                     _DEFAULT_CONFIG, "/tmp/expert_resets")
