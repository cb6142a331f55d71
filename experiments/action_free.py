"""Semi-supervised offline RL with action-free trajectories: oracle vs labelled-only vs
SS-TD3+BC vs BC on Pendulum (see the config's docstring).

    python -m experiments.action_free --workdir=/tmp/action_free
    python -m experiments.action_free --workdir=/tmp/action_free --config.quick=True
"""

from __future__ import annotations

import os
import time

# As in the other control studies: single-threaded Eigen before JAX starts.
if "--xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import study
from experiments.preference_offline import mixture_dataset
from irl_jax.control import action_free, data, envs, experts, imitation, offline

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"oracle": "TD3+BC oracle (all actions)", "labelled_only": "TD3+BC labelled only",
          "bc": "BC (labelled)"}


def ss_name(k: int) -> str:
  return f"ss_k{k}"


def label_of(name: str) -> str:
  if name.startswith("ss_k"):
    return f"SS-TD3+BC k={name[4:]}"
  return LABELS[name]


# --- config --------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  study.positive_int(config.eval_episodes, "eval_episodes")
  if not 0 < config.labelled_fraction < 1:
    raise ValueError(f"config.labelled_fraction must lie in (0, 1), got "
                     f"{config.labelled_fraction!r}.")
  if not 0 < config.val_fraction < 1:
    raise ValueError(f"config.val_fraction must lie in (0, 1), got {config.val_fraction!r}.")
  contexts = list(config.contexts)
  if not contexts or any(not isinstance(k, int) or k < 0 for k in contexts) or \
      len(set(contexts)) != len(contexts):
    raise ValueError(f"config.contexts must be distinct integers >= 0, got {tuple(contexts)!r}.")
  if config.verdict_context not in contexts:
    raise ValueError(f"config.verdict_context ({config.verdict_context!r}) must be one of "
                     f"config.contexts {tuple(contexts)}.")
  if not config.equivalence_margin > 0:
    raise ValueError(f"config.equivalence_margin must be > 0, got {config.equivalence_margin!r}.")
  if not config.mixture:
    raise ValueError("config.mixture must list at least one behaviour policy.")
  for field in ("num_steps", "batch_size"):
    study.positive_int(config.td3_bc[field], f"td3_bc.{field}")
    study.positive_int(config.bc[field], f"bc.{field}")


# --- the study -----------------------------------------------------------------------------


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  env = envs.make(config.env)
  spec = env.spec
  if spec.action.discrete:
    raise ValueError(f"config.env must have continuous actions (TD3+BC), got {config.env!r}.")
  td3 = study.learner_config(offline.TD3BCConfig, config.td3_bc, "td3_bc",
                             hidden=tuple(config.td3_bc.hidden))
  bc_config = study.learner_config(imitation.BCConfig, config.bc, "bc",
                                   hidden=tuple(config.bc.hidden))
  idm_configs = {k: study.learner_config(action_free.InverseDynamicsConfig, config.idm, "idm",
                                         context=k, hidden=tuple(config.idm.hidden))
                 for k in config.contexts}
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_expert, k_data, k_split, k_val, k_runs, k_eval = jax.random.split(key, 6)

  expert, expert_seconds, episodes = mixture_dataset(config, env, k_expert, k_data, log=log)
  labelled, hidden = action_free.split_labelled(episodes, k_split,
                                                fraction=config.labelled_fraction)
  norm = lambda r: float(experts.normalised_return(float(np.mean(r)), expert))
  log(f"  dataset: {episodes.num_episodes} episodes ({norm(data.episode_returns(episodes)):.2f} "
      f"normalised); labelled {labelled.num_episodes} ({norm(data.episode_returns(labelled)):.2f}"
      f"), action-free {hidden.num_episodes}")

  seeds = jax.random.split(k_runs, config.num_seeds)
  eval_keys = jax.random.split(k_eval, config.num_seeds)
  learner = offline.make_td3_bc(td3, spec)
  train_td3 = jax.jit(jax.vmap(learner.train))

  def evaluate_td3(states):
    f = jax.vmap(lambda s, k: offline.evaluate(learner, s, env, k, config.eval_episodes).mean())
    return np.asarray(jax.jit(f)(states, eval_keys))

  methods, proxy_error = {}, {}

  def record(name, returns, seconds):
    n = np.asarray(experts.normalised_return(np.asarray(returns), expert))
    methods[name] = {"label": label_of(name), "return": np.asarray(returns).tolist(),
                     "normalised": n.tolist(), "ci": study.interval(n), "seconds": seconds}
    log(f"  {label_of(name):30s} {study.fmt_pm(methods[name]['ci'], 2)}  ({seconds:.0f} s)")

  # TD3+BC on fixed datasets (oracle, labelled only): one vmapped program each.
  for name, dataset in (("oracle", episodes), ("labelled_only", labelled)):
    t0 = time.perf_counter()
    states, _ = train_td3(seeds, _stack([data.to_transitions(dataset)] * config.num_seeds))
    record(name, evaluate_td3(states), time.perf_counter() - t0)

  # SS: per seed an inverse-dynamics ensemble, its proxy labels, then TD3+BC.
  for k in config.contexts:
    t0 = time.perf_counter()
    idm = action_free.make_inverse_dynamics(idm_configs[k], spec)
    train_data, val = action_free.idm_data(labelled, k_val, k, val_fraction=config.val_fraction)
    idm_keys = jax.vmap(lambda s: jax.random.fold_in(s, 7))(seeds)
    idm_states, _ = jax.jit(jax.vmap(idm.train, in_axes=(0, None, None)))(idm_keys, train_data,
                                                                            val)
    combined, errors, uncertainty = [], [], []
    for i in range(config.num_seeds):
      state_i = jax.tree.map(lambda x, i=i: x[i], idm_states)
      proxy, unc = action_free.label(idm, state_i, hidden)
      errors.append(float(np.mean(np.abs(proxy.action - hidden.action))))
      uncertainty.append(float(np.mean(unc)))
      combined.append(data.to_transitions(action_free.combine(labelled, proxy)))
    states, _ = train_td3(seeds, _stack(combined))
    proxy_error[ss_name(k)] = {"mae": errors, "uncertainty": uncertainty,
                               "best_val_nll": np.asarray(idm_states.best_nll).tolist(),
                               "best_step": np.asarray(idm_states.best_step).tolist()}
    record(ss_name(k), evaluate_td3(states), time.perf_counter() - t0)
    log(f"    proxy labels: mean |â − a| {np.mean(errors):.3f} (actions in "
        f"[{float(spec.action.low[0]):g}, {float(spec.action.high[0]):g}]), ensemble std "
        f"{np.mean(uncertainty):.3f}")

  # BC on the labelled episodes.
  t0 = time.perf_counter()
  bc = imitation.make_bc(bc_config, spec)
  params, _ = jax.jit(jax.vmap(bc.train, in_axes=(0, None)))(seeds, data.to_transitions(labelled))
  f = jax.vmap(lambda p, k: envs.episode_returns(env, lambda kk, o: bc.mode(p, o), k,
                                                 config.eval_episodes).mean())
  record("bc", np.asarray(jax.jit(f)(params, eval_keys)), time.perf_counter() - t0)

  results = {
      "env": config.env, "cpu": study.cpu_model(), "config": config.to_dict(),
      "expert_return": expert.mean_return, "random_return": expert.random_return,
      "expert_seconds": expert_seconds,
      "dataset": {"episodes": episodes.num_episodes, "transitions": episodes.num_steps,
                  "normalised": norm(data.episode_returns(episodes)),
                  "labelled_episodes": labelled.num_episodes,
                  "labelled_normalised": norm(data.episode_returns(labelled)),
                  "action_free_episodes": hidden.num_episodes},
      "methods": methods, "proxy_labels": proxy_error}
  results["verdicts"] = verdicts(results, config)
  results["total_seconds"] = time.perf_counter() - t_start
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, workdir)
  return results


def verdicts(results, config) -> list[dict]:
  m = results["methods"]
  ss = ss_name(config.verdict_context)
  d_oracle = np.asarray(m[ss]["normalised"]) - np.asarray(m["oracle"]["normalised"])
  verdict, ci = study.equivalence(d_oracle, float(config.equivalence_margin))
  d_lab = study.interval(np.asarray(m[ss]["normalised"])
                         - np.asarray(m["labelled_only"]["normalised"]))
  return [
      {"finding": f"SS-TD3+BC (k={config.verdict_context}) ≈ oracle TD3+BC (≈: the 95% interval "
                  f"of the difference within ±{config.equivalence_margin:g})",
       "verdict": verdict,
       "deciding": f"SS − oracle, expert-normalised, paired over seeds: {study.fmt_ci(ci, 3)}"},
      {"finding": f"SS-TD3+BC (k={config.verdict_context}) beats TD3+BC on the labelled "
                  "episodes alone",
       "verdict": study.decide(d_lab),
       "deciding": f"SS − labelled only: {study.fmt_ci(d_lab, 3)}"}]


def results_table(results, config=None) -> str:
  ds = results["dataset"]
  c = results["config"]
  lines = [f"## {results['env']}: offline RL with action-free trajectories (expert "
           f"{results['expert_return']:.1f}, random {results['random_return']:.1f})", "",
           f"Expert-normalised return (0 random, 1 the expert) of the final deterministic policy, "
           f"mean ± 95% interval over {c['num_seeds']} seeds. CPU: {results['cpu']}.", "",
           f"Dataset: {ds['episodes']} episodes, {ds['transitions']} transitions, normalised "
           f"return {ds['normalised']:.2f}; {ds['labelled_episodes']} keep their actions "
           f"(below-median returns, {ds['labelled_normalised']:.2f}), "
           f"{ds['action_free_episodes']} are action-free.", "",
           "| method | normalised return | proxy-label error | seconds |", "|---|---|---|---|"]
  for name, m in results["methods"].items():
    err = results["proxy_labels"].get(name)
    cell = f"{np.mean(err['mae']):.3f}" if err else ""
    lines.append(f"| {m['label']} | {study.fmt_pm(m['ci'], 2)} | {cell} | {m['seconds']:.0f} |")
  lines += ["", "Proxy-label error: mean absolute difference between the ensemble's label and "
            "the hidden true action on the action-free transitions, mean over seeds. Total "
            f"{results['total_seconds']:.0f} s (expert {results['expert_seconds']:.0f} s).", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  names = list(results["methods"])
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, name in enumerate(names):
    m = results["methods"][name]
    ax.scatter([i] * len(m["normalised"]), m["normalised"], color="gray", s=10, zorder=1)
    study.errorbars(ax, [i], [m["ci"]], color=f"C{i}")
  ax.axhline(results["dataset"]["normalised"], color="k", linestyle=":", label="dataset average")
  ax.axhline(results["dataset"]["labelled_normalised"], color="r", linestyle=":",
             label="labelled episodes' average")
  ax.set_xticks(range(len(names)), [results["methods"][n]["label"] for n in names], rotation=20,
                fontsize=7)
  ax.set_ylabel("expert-normalised return")
  ax.set_title(f"{results['env'].split('/', 1)[-1]}: action-free trajectories")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "action_free.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/action_free.py",
                     "/tmp/action_free")
