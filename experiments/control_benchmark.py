"""Imitation and IRL benchmark: the gymnax laptop suite and the Brax scale-out suite.

    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark
    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark --config.quick=True
    python -m experiments.control_benchmark --workdir=/tmp/control_benchmark_brax \
        --config=experiments/configs/control_benchmark_brax.py

(see the config modules' docstrings).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

# XLA's CPU runtime can wedge (every thread asleep, forever) when it runs these large
# vmapped scans with multi-threaded Eigen: seen here on AIRL's 15-run CartPole program in
# two of five runs. Single-threaded Eigen avoids it; it must be set before JAX starts.
if "--xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import study
from irl_jax.control import adversarial, data, envs, experts, imitation, ppo

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"bc": "BC", "gail": "GAIL", "airl": "AIRL", "iq_offline": "IQ-Learn (offline)",
          "iq_online": "IQ-Learn (online)"}
IRL = ("gail", "airl", "iq_offline", "iq_online")
COLORS = {m: f"C{i}" for i, m in enumerate(LABELS)}  # one colour per method in both panels


ENV_OPTIONS = ("backend", "episode_length")  # `envs.make` keywords, Brax only
BRAX_BACKENDS = ("generalized", "positional", "spring", "mjx")


def short(env_name: str) -> str:
  return env_name.split("/", 1)[1]


def env_options(config, env_name: str) -> dict:
  """`config.env_options.<short name>` (Brax's physics backend and time limit), checked."""
  options = config.get("env_options") or {}
  opts = options.get(short(env_name), {})
  field = f"config.env_options.{short(env_name)}"
  if hasattr(opts, "to_dict"):
    opts = opts.to_dict()
  if not isinstance(opts, dict):
    raise ValueError(f"{field} must map options {list(ENV_OPTIONS)} to values, got {opts!r}.")
  opts = dict(opts)
  unknown = sorted(set(opts) - set(ENV_OPTIONS))
  if unknown:
    raise ValueError(f"{field}: unknown option(s) {unknown}; known: {list(ENV_OPTIONS)}.")
  if opts and not env_name.startswith("brax/"):
    raise ValueError(f"{field}: {sorted(opts)} apply to Brax environments only, not {env_name!r}.")
  if "episode_length" in opts:
    study.positive_int(opts["episode_length"], f"env_options.{short(env_name)}.episode_length")
  if "backend" in opts and opts["backend"] not in BRAX_BACKENDS:
    raise ValueError(f"{field}.backend must be one of {list(BRAX_BACKENDS)}, got "
                     f"{opts['backend']!r}.")
  return opts


def check_config(config) -> None:
  """Every field `run` uses, checked before anything trains (a `ValueError` names it)."""
  if config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be >= 2 for intervals, got {config.num_seeds}.")
  for n in config.num_demos:
    study.positive_int(n, "num_demos")
  for m in config.methods:
    if m not in LABELS:
      raise ValueError(f"config.methods: unknown method {m!r}; known: {sorted(LABELS)}.")
  for name in config.envs:
    if name not in experts.EXPERT_CONFIGS and name not in experts.SCRIPTED:
      raise ValueError(f"config.envs: no expert settings for {name!r} (known: "
                       f"{sorted(experts.EXPERT_CONFIGS)}; scripted: "
                       f"{sorted(experts.SCRIPTED)}).")
    if short(name) not in config.env_steps:
      raise ValueError(f"config.env_steps has no budget for {name!r}.")
    env_options(config, name)
  # Entries for known environments outside config.envs may stay (a run on fewer of them).
  known = {short(n) for n in (*config.envs, *experts.EXPERT_CONFIGS, *experts.SCRIPTED)}
  stray = sorted(set(config.get("generator_ppo") or {}) - known)
  if stray:
    raise ValueError(f"config.generator_ppo: {stray} name no known environment "
                     f"(config.envs: {tuple(config.envs)}).")
  stray = sorted(set(config.get("env_options") or {}) - {short(n) for n in config.envs})
  if stray:
    raise ValueError(f"config.env_options: {stray} name no environment of config.envs "
                     f"{tuple(config.envs)}.")
  if config.transfer.enabled and config.transfer.env not in config.envs:
    raise ValueError(f"config.transfer.env {config.transfer.env!r} is not one of config.envs "
                     f"{tuple(config.envs)}.")
  with_ppo = sorted(n for n, c in experts.EXPERT_CONFIGS.items() if isinstance(c, ppo.PPOConfig))
  if config.transfer.enabled and config.transfer.env not in with_ppo:
    raise ValueError(f"config.transfer.env {config.transfer.env!r} has no PPO expert settings "
                     f"(the transfer trains a PPO expert on the changed dynamics); known: "
                     f"{with_ppo}.")
  if config.transfer.enabled and not 1 <= config.transfer.num_demos <= max(config.num_demos):
    raise ValueError(f"config.transfer.num_demos must be in [1, {max(config.num_demos)}] "
                     f"(the demonstrations collected), got {config.transfer.num_demos}.")
  # The methods' own settings: build each learner once (cheap, nothing trains).
  for name in config.envs:
    env = make_env(config, name)
    inner = None
    for m in config.methods:
      if m in ("gail", "airl") and inner is None:
        inner = generator_ppo(config, name)
      try:
        make_method(m, config, env, inner)
      except (TypeError, ValueError) as e:
        raise ValueError(f"{method_fields(m, name, e)}: {e}") from e
  if config.transfer.enabled:  # its GAIL and AIRL run whatever config.methods holds
    inner = generator_ppo(config, config.transfer.env)
    for m in ("airl", "gail"):
      try:
        adversarial.check_config(adversarial.AdversarialConfig(
            method=m, ppo=inner, state_only=m == "airl", **config.adversarial))
      except (TypeError, ValueError) as e:
        raise ValueError(f"{method_fields(m, config.transfer.env, e)} (the transfer): "
                         f"{e}") from e


def method_fields(method: str, env_name: str, error: Exception) -> str:
  """The config field(s) to blame for `method`'s settings error on `env_name`: GAIL's and
  AIRL's messages about `ppo.` settings may come from `config.generator_ppo` too."""
  fields = {"bc": "bc", "iq_offline": "iq_offline", "iq_online": "iq_online",
            "gail": "adversarial", "airl": "adversarial"}
  field = f"config.{fields[method]}"
  if method in ("gail", "airl") and "ppo." in str(error):
    field += f" or config.generator_ppo.{short(env_name)}"
  return field


def generator_ppo(config, env_name: str) -> ppo.PPOConfig:
  """GAIL's and AIRL's PPO settings on `env_name`: the expert's (`experts.EXPERT_CONFIGS`),
  with `config.generator_ppo.<short name>` (PPOConfig fields) on top; where the expert is
  scripted (or SAC), that entry gives them all. The budget is `config.env_steps`."""
  field = f"config.generator_ppo.{short(env_name)}"
  override = (config.get("generator_ppo") or {}).get(short(env_name), {})
  if hasattr(override, "to_dict"):
    override = override.to_dict()
  if not isinstance(override, dict):
    raise ValueError(f"{field} must map PPOConfig fields to values, got {override!r}.")
  if "total_timesteps" in override:
    raise ValueError(f"{field}.total_timesteps: the budget is config.env_steps"
                     f"[{short(env_name)!r}], not a generator setting.")
  base = experts.EXPERT_CONFIGS.get(env_name)
  if not isinstance(base, ppo.PPOConfig):
    base = None
    if not override:
      raise ValueError(f"{field}: GAIL and AIRL need PPO settings for {env_name!r}, whose "
                       "expert is scripted or SAC (no PPO expert settings to start from).")
  steps = int(config.env_steps[short(env_name)])
  override = {**override, "total_timesteps": steps}
  try:
    inner = (dataclasses.replace(base, **override) if base is not None
             else ppo.PPOConfig(**override))
    ppo.check_config(inner)
  except (TypeError, ValueError) as e:
    # A budget below one round: config.env_steps, or this entry's num_envs·num_steps.
    budget = str(e).startswith("PPOConfig.total_timesteps")
    where = f"config.env_steps.{short(env_name)} or {field}" if budget else field
    raise ValueError(f"{where}: {e}") from e
  return inner


def make_expert(config, env: envs.Env, key) -> experts.Expert:
  """The library's PPO or SAC on the true reward (`experts.EXPERT_CONFIGS`, its budget
  scaled by `config.expert_steps_scale`), or the scripted controller where there are no
  settings."""
  if env.name not in experts.EXPERT_CONFIGS:
    return experts.scripted_expert(env, key, eval_episodes=config.eval_episodes)
  rl_config = experts.EXPERT_CONFIGS[env.name]
  rl_config = dataclasses.replace(rl_config, total_timesteps=int(
      rl_config.total_timesteps * config.expert_steps_scale))
  return experts.train_expert(env, key, rl_config, eval_episodes=config.eval_episodes)


def make_env(config, env_name: str, params: dict | None = None) -> envs.Env:
  return envs.make(env_name, params=params, **env_options(config, env_name))


def make_method(method: str, config, env, inner: ppo.PPOConfig | None):
  """`(train(key, demos) -> (params, metrics), mode(params, obs), env_steps,
  curve(metrics) -> (steps, returns))` for one method; `inner` is GAIL's and AIRL's
  PPO, budget included (`generator_ppo`; unused by the other methods)."""
  spec = env.spec
  steps = int(config.env_steps[short(env.name)])
  if method == "bc":
    bc = imitation.make_bc(imitation.BCConfig(**config.bc), spec)
    return bc.train, bc.mode, 0, None
  if method == "iq_offline":
    iq = imitation.make_iq_learn(imitation.IQLearnConfig(**config.iq_offline), spec)
    return iq.train, iq.mode, 0, None
  if method == "iq_online":
    n = int(config.iq_online.num_envs)
    budget = min(steps, int(config.iq_online_env_steps))
    iq_config = imitation.IQLearnConfig(online=True, num_steps=max(1, budget // n),
                                        **config.iq_online)
    iq = imitation.make_iq_learn(iq_config, spec)
    warm = -(-iq_config.warmup_env_steps // n) * n

    def curve(metrics):
      r = np.asarray(metrics["iq/episode_return"])
      return warm + n * np.arange(1, r.shape[-1] + 1), r

    def train(key, demos):
      return iq.train(key, demos, env)

    return train, iq.mode, warm + n * iq_config.num_steps, curve
  if method in ("gail", "airl"):
    adv = adversarial.make_adversarial(adversarial.AdversarialConfig(
        method=method, ppo=inner, **config.adversarial), env)

    def curve(metrics):
      return np.asarray(metrics["env_steps"]), np.asarray(metrics["recent_return"])

    return adv.train, (lambda params, obs: adv.ppo.mode(params.ppo.params, obs)), \
        inner.num_iterations * inner.batch_size, curve
  raise ValueError(f"config.methods: unknown method {method!r}; known: {sorted(LABELS)}")


def run_env(config, env_name: str, key, log=print) -> dict:
  env = make_env(config, env_name)
  k_expert, k_demos, k_runs, k_eval = jax.random.split(key, 4)
  inner = generator_ppo(config, env_name) if {"gail", "airl"} & set(config.methods) else None
  t0 = time.perf_counter()
  expert = make_expert(config, env, k_expert)
  kind = expert.kind
  log(f"{env_name}: {kind} expert return {expert.mean_return:.1f} (random "
      f"{expert.random_return:.1f}) in {time.perf_counter() - t0:.0f} s")
  counts = [int(n) for n in config.num_demos]
  episodes = experts.demonstrations(env, expert, k_demos, max(counts))
  size = int(data.take_episodes(episodes, max(counts)).num_steps)
  demo_sets = [data.pad_transitions(data.to_transitions(data.take_episodes(episodes, n)), size)
               for n in counts]
  demos = jax.tree.map(lambda *x: jnp.stack(x), *demo_sets)  # [D, size, ...]
  seeds = jax.random.split(k_runs, config.num_seeds)
  out = {"expert": kind, "expert_return": expert.mean_return,
         "random_return": expert.random_return,
         "demo_returns": data.episode_returns(episodes).tolist(),
         "demo_steps": [int(d.weight.sum()) for d in demo_sets], "methods": {}}
  for method in config.methods:
    train, mode, env_steps, curve = make_method(method, config, env, inner)
    # All (demonstration count, seed) runs in one program: [D, S].
    run_all = jax.jit(jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(None, 0)))
    t0 = time.perf_counter()
    compiled = run_all.lower(seeds, demos).compile()
    t1 = time.perf_counter()
    params, metrics = compiled(seeds, demos)
    jax.block_until_ready(metrics)
    t2 = time.perf_counter()

    def evaluate(p, key, mode=mode):
      return envs.episode_returns(env, lambda k, o: mode(p, o), key, config.eval_episodes).mean()

    eval_keys = jax.random.split(jax.random.fold_in(k_eval, len(out["methods"])),
                                 (len(counts), config.num_seeds))
    returns = np.asarray(jax.jit(jax.vmap(jax.vmap(evaluate)))(params, eval_keys))
    norm = np.asarray(experts.normalised_return(returns, expert))
    runs = len(counts) * config.num_seeds
    row = {"label": LABELS[method], "return": returns.tolist(), "normalised": norm.tolist(),
           "compile_seconds": t1 - t0, "run_seconds": t2 - t1, "runs": runs,
           "env_steps_per_run": env_steps,
           "env_steps_per_second": env_steps * runs / (t2 - t1) if env_steps else None,
           "by_demos": {str(n): study.interval(norm[i]) for i, n in enumerate(counts)}}
    if curve is not None:
      x, y = curve(metrics)
      x = np.asarray(x).reshape(-1, np.asarray(x).shape[-1])[0]
      y = np.asarray(y)  # [D, S, iterations]
      row["curve_steps"] = x.tolist()
      with warnings.catch_warnings():  # rounds before any episode has ended: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        row["curve_normalised"] = np.nanmean(
            np.asarray(experts.normalised_return(y, expert)), axis=1).tolist()
    out["methods"][method] = row
    log(f"  {LABELS[method]:20s} normalised return by demos "
        + ", ".join(f"{n}: {study.fmt_pm(row['by_demos'][str(n)], 2)}" for n in counts)
        + f"  ({t2 - t1:.1f} s run, {t1 - t0:.1f} s compile)")
  out["_expert"], out["_episodes"] = expert, episodes  # for the transfer (not saved)
  return out


def run_transfer(config, env_name: str, expert, episodes, key, log=print) -> dict:
  """AIRL's reward transfer (Fu et al. 2018, §6.2): learn a reward on `env_name` from
  the expert's demonstrations, then train PPO from scratch with that reward fixed on the
  same task with changed dynamics (`config.transfer.params`), and score the new policy
  on the changed task's true return. AIRL learns its state-only `g(s)`, the reward the
  paper argues is disentangled from the dynamics; GAIL's discriminator reward is the
  baseline. Scale: 0 is uniform random play on the changed task, 1 a PPO expert trained
  there on the true reward. All seeds are one vmapped program per step."""
  t = config.transfer
  source = make_env(config, env_name)
  target = make_env(config, env_name, params=t.params.to_dict())
  ppo_config = experts.EXPERT_CONFIGS[env_name]
  ppo_config = dataclasses.replace(ppo_config, total_timesteps=int(
      ppo_config.total_timesteps * config.expert_steps_scale))
  k_target, k_runs, k_ppo, k_eval = jax.random.split(key, 4)
  target_expert = experts.train_expert(target, k_target, ppo_config,
                                       eval_episodes=config.eval_episodes)
  log(f"  transfer to {t.params.to_dict()}: expert there {target_expert.mean_return:.1f} "
      f"(random {target_expert.random_return:.1f}); source expert {expert.mean_return:.1f}")
  demos = data.to_transitions(data.take_episodes(episodes, int(t.num_demos)))
  seeds = jax.random.split(k_runs, config.num_seeds)
  inner = generator_ppo(config, env_name)
  out = {"params": t.params.to_dict(), "num_demos": int(t.num_demos),
         "target_expert_return": target_expert.mean_return,
         "target_random_return": target_expert.random_return, "methods": {}}
  for method in ("airl", "gail"):
    t0 = time.perf_counter()
    adv = adversarial.make_adversarial(adversarial.AdversarialConfig(
        method=method, ppo=inner, state_only=method == "airl", **config.adversarial), source)
    states, _ = jax.jit(jax.vmap(adv.train, in_axes=(0, None)))(seeds, demos)
    learner = ppo.make_ppo(ppo_config, target, reward_fn=adv.learned_reward)
    ppo_keys = jax.random.split(jax.random.fold_in(k_ppo, len(out["methods"])),
                                config.num_seeds)
    retrained, _ = jax.jit(jax.vmap(learner.train))(ppo_keys, states.disc)
    eval_keys = jax.random.split(jax.random.fold_in(k_eval, len(out["methods"])),
                                 config.num_seeds)

    def evaluate(params, key, env=target, mode=learner.mode):
      return envs.episode_returns(env, lambda k, o: mode(params, o), key,
                                  config.eval_episodes).mean()

    def evaluate_source_policy(params, key, mode=adv.ppo.mode):  # the policy, moved over
      return envs.episode_returns(target, lambda k, o: mode(params, o), key,
                                  config.eval_episodes).mean()

    returns = np.asarray(jax.jit(jax.vmap(evaluate))(retrained.params, eval_keys))
    direct = np.asarray(jax.jit(jax.vmap(evaluate_source_policy))(states.ppo.params, eval_keys))
    norm = np.asarray(experts.normalised_return(returns, target_expert))
    norm_direct = np.asarray(experts.normalised_return(direct, target_expert))
    label = "AIRL (state-only g)" if method == "airl" else "GAIL"
    out["methods"][method] = {
        "label": label, "retrained": norm.tolist(), "policy_moved": norm_direct.tolist(),
        "retrained_ci": study.interval(norm), "policy_moved_ci": study.interval(norm_direct),
        "seconds": time.perf_counter() - t0}
    log(f"  transfer {label:20s} PPO on its reward there: {study.fmt_pm(study.interval(norm), 2)}"
        f"; its policy moved over: {study.fmt_pm(study.interval(norm_direct), 2)}")
  return out


def verdicts(results, config) -> list[dict]:
  """Per environment: the best IRL method minus BC at the fewest demonstrations,
  paired over seeds (a claimed positive difference; within-noise is not at this scale)."""
  fewest = str(min(int(n) for n in config.num_demos))
  rows = []
  for env_name, r in results["envs"].items():
    if "bc" not in r["methods"]:
      continue
    bc = np.asarray(r["methods"]["bc"]["by_demos_raw"][fewest])
    best, best_ci = None, None
    for m in IRL:
      if m not in r["methods"]:
        continue
      diff = np.asarray(r["methods"][m]["by_demos_raw"][fewest]) - bc
      ci = study.interval(diff)
      if best_ci is None or ci[0] > best_ci[0]:
        best, best_ci = m, ci
    if best is None:
      continue
    rows.append({"finding": f"{short(env_name)}: IRL ≥ BC with {fewest} demonstration(s)",
                 "verdict": study.decide(best_ci),
                 "deciding": f"{LABELS[best]} − BC, expert-normalised return: "
                             f"{study.fmt_ci(best_ci, 2)}"})
  tr = results.get("transfer")
  if tr:
    diff = np.asarray(tr["methods"]["airl"]["retrained"]) - np.asarray(
        tr["methods"]["gail"]["retrained"])
    ci = study.interval(diff)
    rows.append({"finding": f"{short(tr['env'])} with {tr['params']}: AIRL's reward transfers "
                            "to changed dynamics better than GAIL's",
                 "verdict": study.decide(ci),
                 "deciding": "AIRL − GAIL, normalised return of PPO retrained on the learned "
                             f"reward there: {study.fmt_ci(ci, 2)}"})
  return rows


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "envs": {}}
  key = jax.random.key(config.seed)
  for i, name in enumerate(config.envs):
    r = run_env(config, name, jax.random.fold_in(key, i), log=log)
    for m in r["methods"].values():
      m["by_demos_raw"] = {str(n): m["normalised"][j] for j, n in enumerate(config.num_demos)}
    results["envs"][name] = r
    if config.transfer.enabled and name == config.transfer.env:
      results["transfer"] = {"env": name, **run_transfer(
          config, name, r.pop("_expert"), r.pop("_episodes"),
          jax.random.fold_in(key, 1000 + i), log=log)}
    r.pop("_expert", None)
    r.pop("_episodes", None)
  results["verdicts"] = verdicts(results, config)
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, config, workdir)
  return results


def results_table(results, config=None) -> str:
  lines = [f"Expert-normalised return (0: random play, 1: the expert), mean ± 95% interval "
           f"over seeds. CPU: {results['cpu']}.", ""]
  for env_name, r in results["envs"].items():
    counts = list(next(iter(r["methods"].values()))["by_demos"])
    kind = f"{r['expert']} expert" if r.get("expert", "PPO") != "PPO" else "expert"
    lines += [f"### {env_name} ({kind} {r['expert_return']:.1f}, random "
              f"{r['random_return']:.1f})", "",
              "| method | " + " | ".join(f"{n} demo(s)" for n in counts)
              + " | run s (compile s) | env steps/s |",
              "|---" * (len(counts) + 3) + "|"]
    for m in r["methods"].values():
      sps = m["env_steps_per_second"]
      lines.append(f"| {m['label']} | "
                   + " | ".join(study.fmt_pm(m["by_demos"][n], 2) for n in counts)
                   + f" | {m['run_seconds']:.1f} ({m['compile_seconds']:.1f}) | "
                   + (f"{sps:,.0f}" if sps else "–") + " |")
    lines.append("")
  lines += ["Run seconds cover all (demonstration count × seed) runs of a method in one "
            "program; env steps/s counts every run's steps.", ""]
  tr = results.get("transfer")
  if tr:
    lines += [f"### Reward transfer: {tr['env']} with {tr['params']} (expert there "
              f"{tr['target_expert_return']:.1f}, random {tr['target_random_return']:.1f}; "
              f"{tr['num_demos']} demonstrations from the original dynamics)", "",
              "| learned reward | PPO retrained on it, changed dynamics | the imitation policy "
              "moved over | s |", "|---|---|---|---|"]
    for m in tr["methods"].values():
      lines.append(f"| {m['label']} | {study.fmt_pm(m['retrained_ci'], 2)} | "
                   f"{study.fmt_pm(m['policy_moved_ci'], 2)} | {m['seconds']:.0f} |")
    lines += ["", "Normalised on the changed task: 0 random play, 1 a PPO expert trained there "
              "on the true reward.", ""]
  lines += [
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> None:
  names = list(results["envs"])
  fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 8), squeeze=False)
  for j, env_name in enumerate(names):
    r = results["envs"][env_name]
    ax = axes[0, j]
    for name, m in r["methods"].items():
      counts = [int(n) for n in m["by_demos"]]
      study.errorbars(ax, counts, [m["by_demos"][str(n)] for n in counts], label=m["label"],
                      color=COLORS[name])
    ax.set_xscale("log")
    ax.set_xlabel("expert trajectories")
    ax.set_ylabel("expert-normalised return")
    ax.set_title(short(env_name))
    ax.legend(fontsize=7)
    ax = axes[1, j]
    for name, m in r["methods"].items():
      if "curve_steps" not in m:
        continue
      curves = np.asarray(m["curve_normalised"])
      ax.plot(m["curve_steps"], curves[-1], label=f"{m['label']} ({list(m['by_demos'])[-1]})",
              color=COLORS[name])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("expert-normalised return (training)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(f"{workdir}/control_benchmark.png", dpi=100)
  plt.close(fig)


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/control_benchmark.py",
                     "/tmp/control_benchmark")
