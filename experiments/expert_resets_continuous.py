"""Expert resets in continuous control: GAIL with ν0 resets vs expert resets, best-response
vs no-regret discriminator (see the config's docstring).

    python -u -m experiments.expert_resets_continuous --workdir=/tmp/erc
    python -u -m experiments.expert_resets_continuous --workdir=/tmp/erc --config.quick=True
"""

from __future__ import annotations

import dataclasses
import os
import time

# As in the other control studies: single-threaded Eigen before JAX starts.
if "--xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()

import jax
import matplotlib
import numpy as np

from experiments import study
from irl_jax.control import adversarial, data, envs, experts, ppo, resets

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# name: (label, resets?, no-regret?)
METHODS = {
    "irl": ("IRL (ν0)", False, False),
    "irl_no_regret": ("IRL (ν0), no-regret", False, True),
    "resets_best_response": ("resets, best response", True, False),
    "resets_no_regret": ("resets, no-regret", True, True),
}


def short(env_name: str) -> str:
  return env_name.split("/", 1)[1]


# --- config --------------------------------------------------------------------------------


def ppo_config(config, env_name: str) -> ppo.PPOConfig:
  name = short(env_name)
  if name not in config.ppo or name not in config.env_steps:
    raise ValueError(f"config.envs: {env_name!r} has no entry in config.ppo and "
                     f"config.env_steps (they have {sorted(config.ppo)} and "
                     f"{sorted(config.env_steps)}).")
  settings = dict(config.ppo[name])
  settings["total_timesteps"] = int(config.env_steps[name])
  inner = study.learner_config(ppo.PPOConfig, settings, f"ppo.{name}")
  try:
    ppo.check_config(inner)
  except ValueError as e:
    raise ValueError(f"config.ppo.{name}: {e}") from None
  if inner.num_iterations < config.eval_every:
    raise ValueError(f"config.env_steps.{name}: {inner.total_timesteps} steps are "
                     f"{inner.num_iterations} PPO iterations, fewer than config.eval_every="
                     f"{config.eval_every}.")
  return inner


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  for field in ("num_demos", "eval_every", "eval_episodes"):
    study.positive_int(config[field], field)
  if not 0 < config.alpha <= 1:
    raise ValueError(f"config.alpha (the expert-reset probability) must lie in (0, 1], got "
                     f"{config.alpha!r}.")
  if not 0 < config.threshold <= 1:
    raise ValueError(f"config.threshold must lie in (0, 1], got {config.threshold!r}.")
  if not config.expert_noise >= 0:
    raise ValueError(f"config.expert_noise must be >= 0, got {config.expert_noise!r}.")
  if not config.expert_steps_scale > 0:
    raise ValueError(f"config.expert_steps_scale must be > 0, got "
                     f"{config.expert_steps_scale!r}.")
  fixed = sorted({"method", "disc_replay", "ppo"} & set(config.adversarial))
  if fixed:
    raise ValueError(f"config.adversarial: {fixed} are set by the study (GAIL; the cost player "
                     "of each method; config.ppo), not here.")
  if not config.envs:
    raise ValueError("config.envs is empty.")
  for name in config.envs:
    if name not in experts.SCRIPTED and name not in experts.EXPERT_CONFIGS:
      raise ValueError(f"config.envs: no expert for {name!r} (scripted: "
                       f"{sorted(experts.SCRIPTED)}; PPO: {sorted(experts.EXPERT_CONFIGS)}).")
    inner = ppo_config(config, name)
    adv = study.learner_config(adversarial.AdversarialConfig, config.adversarial,
                               "adversarial", ppo=inner)
    try:
      adversarial.check_config(adv)
    except ValueError as e:
      raise ValueError(f"config.adversarial: {e}") from None


# --- one environment -------------------------------------------------------------------------


def make_expert(config, env: envs.Env, key) -> experts.Expert:
  if env.name in experts.SCRIPTED:
    return experts.scripted_expert(env, key, noise=config.expert_noise)
  inner = experts.EXPERT_CONFIGS[env.name]
  inner = dataclasses.replace(inner, total_timesteps=int(inner.total_timesteps
                                                         * config.expert_steps_scale))
  return experts.train_expert(env, key, inner)


def train_method(config, env: envs.Env, pool, demos, inner: ppo.PPOConfig, method: str, key,
                 expert: experts.Expert):
  """All seeds of one method: `(normalised [seeds, evals], env_steps [evals], seconds)`."""
  _, use_resets, no_regret = METHODS[method]
  learner_env = resets.with_expert_resets(env, pool, config.alpha) if use_resets else env
  adv_config = study.learner_config(
      adversarial.AdversarialConfig, config.adversarial, "adversarial", method="gail",
      ppo=inner, disc_replay=inner.num_iterations * inner.batch_size if no_regret else 0)
  adv = adversarial.make_adversarial(adv_config, learner_env)
  seeds = jax.random.split(key, config.num_seeds)
  state, iter_keys = jax.vmap(adv.start, in_axes=(0, None))(seeds, demos)

  def chunk(state, keys):
    return jax.lax.scan(lambda s, k: adv.body(s, k, demos), state, keys)[0]

  def evaluate(params, key):
    return envs.episode_returns(env, lambda k, o: adv.ppo.mode(params, o), key,
                                config.eval_episodes).mean()

  run_chunk = jax.jit(jax.vmap(chunk))
  run_eval = jax.jit(jax.vmap(evaluate))
  n_iter = inner.num_iterations
  bounds = list(range(config.eval_every, n_iter + 1, config.eval_every))
  if bounds[-1] != n_iter:
    bounds.append(n_iter)
  returns, steps, done = [], [], 0
  eval_key = jax.random.fold_in(key, 10_000)
  t0 = time.perf_counter()
  for i, end in enumerate(bounds):
    state = run_chunk(state, iter_keys[:, done:end])
    done = end
    r = run_eval(state.ppo.params, jax.random.split(jax.random.fold_in(eval_key, i),
                                                    config.num_seeds))
    returns.append(np.asarray(r))
    steps.append(end * inner.batch_size)
  seconds = time.perf_counter() - t0
  normalised = np.asarray(experts.normalised_return(np.stack(returns, 1), expert))
  if not np.all(np.isfinite(normalised)):
    raise FloatingPointError(f"{env.name}, {method}: non-finite evaluation returns "
                             f"{normalised.tolist()}.")
  return normalised, np.asarray(steps), seconds


def interactions_to_threshold(normalised, steps, threshold: float):
  """`(interactions [seeds], censored [seeds])`: the environment steps of the first
  evaluation at or above `threshold`; the budget (and censored) when none is."""
  hit = normalised >= threshold
  first = np.argmax(hit, axis=1)
  reached = hit.any(axis=1)
  return np.where(reached, steps[first], steps[-1]), ~reached


def run_env(config, env_name: str, key, log=print) -> dict:
  env = envs.make(env_name)
  k_expert, k_demos, k_train = jax.random.split(key, 3)
  t0 = time.perf_counter()
  expert = make_expert(config, env, k_expert)
  log(f"{env_name}: expert return {expert.mean_return:.1f} (random {expert.random_return:.1f}) "
      f"in {time.perf_counter() - t0:.0f} s")
  if not expert.mean_return > expert.random_return:
    raise RuntimeError(f"{env_name}: the expert ({expert.mean_return:.1f}) does not beat random "
                       f"play ({expert.random_return:.1f}), so the normalised scale is "
                       "meaningless; raise config.expert_steps_scale.")
  episodes, pool = resets.demonstrations_with_states(env, expert.act, k_demos, config.num_demos,
                                                     metadata={"policy": "expert"})
  demos = data.to_transitions(episodes)
  demo_norm = float(np.mean(experts.normalised_return(data.episode_returns(episodes), expert)))
  inner = ppo_config(config, env_name)
  out = {"expert_return": expert.mean_return, "random_return": expert.random_return,
         "demos": {"episodes": episodes.num_episodes, "steps": episodes.num_steps,
                   "normalised": demo_norm, "mean_length": float(episodes.lengths.mean())},
         "budget": inner.num_iterations * inner.batch_size, "methods": {}}
  for method, (label, use_resets, no_regret) in METHODS.items():
    normalised, steps, seconds = train_method(config, env, pool, demos, inner, method,
                                              k_train, expert)
    hits, censored = interactions_to_threshold(normalised, steps, config.threshold)
    m = {"label": label, "alpha": config.alpha if use_resets else 0.0, "no_regret": no_regret,
         "curve": normalised, "env_steps": steps, "interactions": hits, "censored": censored,
         "auc": normalised.mean(1), "final": normalised[:, -1], "seconds": seconds}
    out["methods"][method] = m
    log(f"{short(env_name)} {label}: final {m['final'].mean():.2f}, AUC {m['auc'].mean():.2f}, "
        f"interactions to {config.threshold} {hits.mean():,.0f} ({censored.sum()} censored) "
        f"in {seconds:.0f} s")
  return out


# --- verdicts and output -------------------------------------------------------------------


def verdicts(results, config) -> list[dict]:
  out = []
  for env_name, r in results["envs"].items():
    m = r["methods"]
    diff = np.asarray(m["irl"]["interactions"], float) - np.asarray(
        m["resets_no_regret"]["interactions"], float)
    ci = study.interval(diff)
    censored = int(np.sum(m["irl"]["censored"])) + int(np.sum(m["resets_no_regret"]["censored"]))
    note = f"; {censored} censored run(s) enter at the budget" if censored else ""
    # Not a verdict: the resets alone, both sides with the no-regret discriminator.
    alone = study.interval(np.asarray(m["irl_no_regret"]["interactions"], float)
                           - np.asarray(m["resets_no_regret"]["interactions"], float))
    note += f" (resets alone, both no-regret: {study.fmt_ci(alone, 0)})"
    out.append({"env": env_name,
                "finding": f"{short(env_name)}: expert resets reach {config.threshold} of expert "
                           "performance in fewer interactions than standard IRL",
                "verdict": study.decide(ci),
                "deciding": f"interactions IRL (ν0) − resets (no-regret): "
                            f"{study.fmt_ci(ci, 0)}{note}", "ci": ci})
    diff = np.asarray(m["resets_no_regret"]["auc"]) - np.asarray(
        m["resets_best_response"]["auc"])
    ci = study.interval(diff)
    out.append({"env": env_name,
                "finding": f"{short(env_name)}: with resets, a no-regret cost player beats a "
                           "best-response one",
                "verdict": study.decide(ci),
                "deciding": f"AUC no-regret − best response: {study.fmt_ci(ci)}", "ci": ci})
  return out


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  results = {"config": config.to_dict(), "cpu": study.cpu_model(), "envs": {}}
  for i, env_name in enumerate(config.envs):
    results["envs"][env_name] = run_env(config, env_name, jax.random.fold_in(key, i), log)
  results["seconds"] = time.perf_counter() - t0
  results["verdicts"] = verdicts(results, config)
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, config, workdir)
  return results


def results_table(results, config=None) -> str:
  threshold = results["config"]["threshold"]
  lines = [f"# Expert resets in continuous control (GAIL, α = {results['config']['alpha']})", "",
           f"CPU: {results['cpu']}; {results['config']['num_seeds']} seeds; "
           f"{results['seconds']:.0f} s in all.", ""]
  for env_name, r in results["envs"].items():
    d = r["demos"]
    lines += [f"## {env_name} (expert {r['expert_return']:.1f}, random {r['random_return']:.1f}; "
              f"{d['episodes']} demonstrations, {d['steps']} states, mean length "
              f"{d['mean_length']:.0f}, normalised return {d['normalised']:.2f}; budget "
              f"{r['budget']:,} steps)", "",
              f"| method | interactions to {threshold} | censored | AUC | final | run s |",
              "|---|---|---|---|---|---|"]
    for m in r["methods"].values():
      lines.append(f"| {m['label']} | {study.fmt_pm(study.interval(m['interactions']), 0)} | "
                   f"{int(np.sum(m['censored']))}/{len(m['censored'])} | "
                   f"{study.fmt_pm(study.interval(m['auc']), 2)} | "
                   f"{study.fmt_pm(study.interval(m['final']), 2)} | {m['seconds']:.0f} |")
    lines.append("")
  lines += ["Normalised return: 0 uniformly random actions, 1 the noise-free expert, evaluated "
            "from ν0 only. Censored runs never reached the threshold and count at the budget "
            "(a lower bound).", "", "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  names = list(results["envs"])
  fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
  for ax, env_name in zip(axes[0], names, strict=True):
    r = results["envs"][env_name]
    for i, m in enumerate(r["methods"].values()):
      curve = np.asarray(m["curve"])
      steps = np.asarray(m["env_steps"])
      mean = curve.mean(0)
      ax.plot(steps, mean, color=f"C{i}", label=m["label"])
      ax.fill_between(steps, curve.min(0), curve.max(0), color=f"C{i}", alpha=0.15)
    ax.axhline(results["config"]["threshold"], color="k", linestyle=":", linewidth=1)
    ax.set_xlabel("environment interactions")
    ax.set_ylabel("normalised return from ν0")
    ax.set_title(short(env_name))
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "expert_resets_continuous.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/expert_resets_continuous.py",
                     "/tmp/erc")
