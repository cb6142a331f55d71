"""Offline RL from a (synthetic) vision-language labeller's frame preferences: learned frame
reward + IQL vs IQL on the true reward vs BC on Pendulum (see the config's docstring).

    python -m experiments.vlm_preferences --workdir=/tmp/vlm_preferences
    python -m experiments.vlm_preferences --workdir=/tmp/vlm_preferences --config.quick=True
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
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import study
from experiments.preference_offline import mixture_dataset
from irl_jax.control import data, envs, experts, imitation, labellers, offline

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# --- config --------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  counts = list(config.query_counts)
  if (len(counts) < 2 or any(not isinstance(n, int) or n < 1 for n in counts)
      or counts != sorted(set(counts))):
    raise ValueError(f"config.query_counts must be at least two increasing positive integers, "
                     f"got {tuple(counts)!r}.")
  noise = list(config.label_noise)
  if not noise or any(not 0 <= x < 0.5 for x in noise) or len(set(noise)) != len(noise):
    raise ValueError(f"config.label_noise must be distinct flip probabilities in [0, 0.5), got "
                     f"{tuple(noise)!r}.")
  if config.verdict_noise not in noise:
    raise ValueError(f"config.verdict_noise ({config.verdict_noise!r}) must be one of "
                     f"config.label_noise {tuple(noise)}.")
  if not config.tie_margin >= 0:
    raise ValueError(f"config.tie_margin must be >= 0, got {config.tie_margin!r}.")
  for field in ("eval_episodes", "frame_size"):
    v = config[field]
    if not isinstance(v, int) or isinstance(v, bool) or v < 4:
      raise ValueError(f"config.{field} must be an integer >= 4, got {v!r}.")
  if config.env not in labellers.RENDERERS:
    raise ValueError(f"config.env must be one of {sorted(labellers.RENDERERS)} (a renderer "
                     f"exists), got {config.env!r}.")
  if not config.equivalence_margin > 0:
    raise ValueError(f"config.equivalence_margin must be > 0, got {config.equivalence_margin!r}.")


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  env = envs.make(config.env)
  spec = env.spec
  counts = [int(n) for n in config.query_counts]
  rc = study.learner_config(labellers.FrameRewardConfig, config.reward, "reward",
              channels=tuple(config.reward.channels), hidden=tuple(config.reward.hidden))
  iql_settings = dict(config.iql)
  lr = iql_settings.pop("lr")
  iql_base = study.learner_config(offline.IQLConfig, iql_settings, "iql",
                                  hidden=tuple(config.iql.hidden), actor_lr=lr, critic_lr=lr,
                                  value_lr=lr, normalize_obs=True)
  bc_config = study.learner_config(imitation.BCConfig, config.bc, "bc",
                                   hidden=tuple(config.bc.hidden))
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_expert, k_data, k_pairs, k_label, k_runs, k_eval, k_test = jax.random.split(key, 7)

  expert, expert_seconds, episodes = mixture_dataset(config, env, k_expert, k_data, log=log)
  transitions = data.to_transitions(episodes)
  returns = data.episode_returns(episodes)
  dataset_norm = float(experts.normalised_return(float(returns.mean()), expert))

  render = jax.jit(jax.vmap(lambda o: labellers.RENDERERS[config.env](o, config.frame_size)))
  next_frames = render(transitions.next_obs)                           # [N, H, W]
  n_rows = next_frames.shape[0]
  pairs = labellers.query_pairs(k_pairs, n_rows, max(counts))          # [P, 2]
  first, second = next_frames[pairs[:, 0]], next_frames[pairs[:, 1]]
  keep = jnp.arange(max(counts))[None, :] < jnp.asarray(counts)[:, None]   # [Q, P]
  test_pairs = labellers.query_pairs(k_test, n_rows, 2000)
  true_height = labellers.pendulum_height(transitions.next_obs)
  test_truth = true_height[test_pairs[:, 1]] > true_height[test_pairs[:, 0]]
  test_valid = jnp.abs(true_height[test_pairs[:, 1]] - true_height[test_pairs[:, 0]]) > 1e-3

  model = labellers.make_frame_reward(rc, (config.frame_size, config.frame_size))
  seeds = jax.random.split(k_runs, config.num_seeds)
  eval_keys = jax.random.split(k_eval, config.num_seeds)
  reward_std = float(np.std(np.asarray(transitions.reward)))
  learner = offline.make_iql(iql_base, spec)

  def evaluate(state, key):
    return offline.evaluate(learner, state, env, key, config.eval_episodes).mean()

  q_n, s_n = len(counts), config.num_seeds
  run_keys = jnp.broadcast_to(seeds, (q_n, *seeds.shape)).reshape(q_n * s_n, *seeds.shape[1:])
  run_masks = jnp.repeat(keep, s_n, axis=0)                            # [Q·S, P]
  run_eval = jnp.broadcast_to(eval_keys, (q_n, *eval_keys.shape)).reshape(run_keys.shape)

  def fit_rewards(labels):
    # One reward model per (count, seed), one after another (`lax.map`): vmapped
    # convolutions become grouped ones, which XLA's CPU backend runs far slower.
    def one(args):
      key, mask = args
      params, metrics = model.train(jax.random.fold_in(key, 1), first, second, labels, mask)
      r = model.apply(params, next_frames)
      r_test = model.apply(params, next_frames[test_pairs].reshape(-1, *next_frames.shape[1:]))
      r_test = r_test.reshape(-1, 2)
      agree = jnp.sum(((r_test[:, 1] > r_test[:, 0]) == test_truth) * test_valid) / jnp.sum(
          test_valid)
      corr = jnp.corrcoef(r, transitions.reward)[0, 1]
      return r / (jnp.std(r) + 1e-8), agree, corr, metrics["ties"][-1], metrics["pairs_used"][-1]
    return jax.lax.map(one, (run_keys, run_masks))

  def iql_runs(rewards):
    def one(key, r, ekey):
      state, _ = learner.train(key, transitions._replace(reward=r))
      return evaluate(state, ekey)
    return jax.vmap(one)(run_keys, rewards, run_eval)

  fit_rewards = jax.jit(fit_rewards)
  iql_runs = jax.jit(iql_runs)

  def over_counts(labels):
    rewards, agree, corr, ties, used = fit_rewards(labels)
    ret = iql_runs(rewards)
    shape = (q_n, s_n)
    return tuple(jnp.reshape(x, shape) for x in (ret, agree, corr, ties, used))

  learned, labels_info = {}, {}
  for j, noise in enumerate(config.label_noise):
    labeller = labellers.synthetic_labeller(labellers.pendulum_height, flip_prob=float(noise),
                                            tie_margin=float(config.tie_margin))
    obs = transitions.next_obs
    labels = labeller(jax.random.fold_in(k_label, j), obs[pairs[:, 0]], obs[pairs[:, 1]])
    t0 = time.perf_counter()
    ret, agree, corr, ties, used = jax.block_until_ready(over_counts(labels))
    seconds = time.perf_counter() - t0
    norm = np.asarray(experts.normalised_return(np.asarray(ret), expert))      # [Q, S]
    key_ = f"{noise:g}"
    learned[key_] = {"normalised": norm.tolist(),
                     "by_queries": {str(n): study.interval(norm[q]) for q, n in enumerate(counts)},
                     "test_agreement": np.asarray(agree).tolist(),
                     "reward_correlation": np.asarray(corr).tolist(), "seconds": seconds}
    lab = np.asarray(labels)
    h1, h2 = np.asarray(true_height[pairs[:, 0]]), np.asarray(true_height[pairs[:, 1]])
    answered = lab != labellers.NO_PREFERENCE
    labels_info[key_] = {
        "no_preference": float(np.mean(~answered)),
        "agree_with_truth": float(np.mean((lab[answered] == 1) == (h2 > h1)[answered])),
        "ties_by_count": np.asarray(ties)[:, 0].tolist(),
        "pairs_used_by_count": np.asarray(used)[:, 0].tolist()}
    log(f"  noise {noise:g}: " + ", ".join(
        f"{n} queries {study.fmt_pm(learned[key_]['by_queries'][str(n)], 2)}"
        for n in counts) + f"; held-out agreement {np.asarray(agree)[-1].mean():.2f}, reward "
        f"correlation {np.asarray(corr)[-1].mean():.2f} ({seconds:.0f} s)")

  t0 = time.perf_counter()
  oracle_learner = offline.make_iql(dataclasses.replace(iql_base, reward_scale=1 / reward_std),
                                    spec)
  oracle = jax.jit(jax.vmap(lambda k, e: offline.evaluate(
      oracle_learner, oracle_learner.train(k, transitions)[0], env, e,
      config.eval_episodes).mean()))(seeds, eval_keys)
  oracle_norm = np.asarray(experts.normalised_return(np.asarray(oracle), expert))
  oracle_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  bc = imitation.make_bc(bc_config, spec)

  def bc_run(k, e):
    params = bc.train(k, transitions)[0]
    return envs.episode_returns(env, lambda kk, o: bc.mode(params, o), e,
                                config.eval_episodes).mean()

  bc_ret = jax.jit(jax.vmap(bc_run))(seeds, eval_keys)
  bc_norm = np.asarray(experts.normalised_return(np.asarray(bc_ret), expert))
  bc_seconds = time.perf_counter() - t0
  log(f"  oracle IQL {study.fmt_pm(study.interval(oracle_norm), 2)} ({oracle_seconds:.0f} s), "
      f"BC {study.fmt_pm(study.interval(bc_norm), 2)} ({bc_seconds:.0f} s)")

  results = {
      "env": config.env, "cpu": study.cpu_model(), "config": config.to_dict(),
      "expert_return": expert.mean_return, "random_return": expert.random_return,
      "expert_seconds": expert_seconds, "query_counts": counts,
      "dataset": {"episodes": episodes.num_episodes, "transitions": episodes.num_steps,
                  "normalised": dataset_norm},
      "labels": labels_info, "learned": learned,
      "oracle": {"normalised": oracle_norm.tolist(), "ci": study.interval(oracle_norm),
                 "seconds": oracle_seconds},
      "bc": {"normalised": bc_norm.tolist(), "ci": study.interval(bc_norm),
             "seconds": bc_seconds}}
  results["verdicts"] = verdicts(results, config)
  results["total_seconds"] = time.perf_counter() - t_start
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, workdir)
  return results


def verdicts(results, config) -> list[dict]:
  noise = f"{config.verdict_noise:g}"
  norm = np.asarray(results["learned"][noise]["normalised"])          # [Q, S]
  hi, lo = norm[-1], norm[0]
  counts = results["query_counts"]
  d_bc = study.interval(hi - np.asarray(results["bc"]["normalised"]))
  verdict, d_oracle = study.equivalence(hi - np.asarray(results["oracle"]["normalised"]),
                                        float(config.equivalence_margin))
  d_more = study.interval(hi - lo)
  tag = f"flip {noise}, {counts[-1]} queries"
  return [
      {"finding": f"(a) IQL on the learned frame reward beats BC ({tag})",
       "verdict": study.decide(d_bc), "deciding": f"learned − BC: {study.fmt_ci(d_bc, 3)}"},
      {"finding": f"(b) IQL on the learned reward ≈ IQL on the true reward ({tag}; ≈: within "
                  f"±{config.equivalence_margin:g})",
       "verdict": verdict, "deciding": f"learned − oracle: {study.fmt_ci(d_oracle, 3)}"},
      {"finding": f"(c) more queries help (flip {noise}: {counts[0]} → {counts[-1]})",
       "verdict": study.decide(d_more),
       "deciding": f"learned({counts[-1]}) − learned({counts[0]}): {study.fmt_ci(d_more, 3)}"}]


def results_table(results, config=None) -> str:
  counts = [str(n) for n in results["query_counts"]]
  c = results["config"]
  lines = [f"## {results['env']}: offline RL from frame preferences (expert "
           f"{results['expert_return']:.1f}, random {results['random_return']:.1f})", "",
           f"Expert-normalised return of the final deterministic policy, mean ± 95% interval "
           f"over {c['num_seeds']} seeds. Dataset: {results['dataset']['episodes']} episodes, "
           f"normalised return {results['dataset']['normalised']:.2f}. Frames "
           f"{c['frame_size']}×{c['frame_size']}. CPU: {results['cpu']}.", "",
           "| method | " + " | ".join(f"{n} queries" for n in counts)
           + " | held-out agreement | reward corr. | seconds |",
           "|---" * (len(counts) + 4) + "|"]
  for noise, m in results["learned"].items():
    agree = np.asarray(m["test_agreement"])[-1].mean()
    corr = np.asarray(m["reward_correlation"])[-1].mean()
    lines.append(f"| learned reward + IQL, flip {noise} | "
                 + " | ".join(study.fmt_pm(m["by_queries"][n], 2) for n in counts)
                 + f" | {agree:.2f} | {corr:.2f} | {m['seconds']:.0f} |")
  for name, label in (("oracle", "IQL, true reward"), ("bc", "BC")):
    m = results[name]
    lines.append(f"| {label} | " + " | ".join([study.fmt_pm(m["ci"], 2)] * len(counts))
                 + f" | | | {m['seconds']:.0f} |")
  lines += ["", "Held-out agreement: fraction of 2000 fresh frame pairs that the learned reward "
            "orders as the true height does (at the largest count); reward corr.: Pearson "
            "correlation of r̂(o') with the true reward over the dataset. The oracle and BC use "
            "no queries (one value, repeated). Labels: "
            + "; ".join(f"flip {k}: {v['no_preference']:.1%} no preference, "
                        f"{v['agree_with_truth']:.1%} of answers agree with the true heights"
                        for k, v in results["labels"].items())
            + f". Total {results['total_seconds']:.0f} s (expert "
              f"{results['expert_seconds']:.0f} s).", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  counts = results["query_counts"]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for noise, m in results["learned"].items():
    study.errorbars(ax, counts, [m["by_queries"][str(n)] for n in counts],
                    label=f"learned frame reward + IQL, flip {noise}")
  for name, label, color in (("oracle", "IQL on the true reward", "k"), ("bc", "BC", "gray")):
    mean, lo, hi, _ = results[name]["ci"]
    ax.axhline(mean, color=color, label=label)
    if not np.isnan(lo):
      ax.axhspan(lo, hi, color=color, alpha=0.15)
  ax.set_xscale("log")
  ax.set_xlabel("preference queries (frame pairs)")
  ax.set_ylabel("expert-normalised return")
  ax.set_title(f"{results['env'].split('/', 1)[-1]}: offline RL from frame preferences")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "vlm_preferences.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/vlm_preferences.py",
                     "/tmp/vlm_preferences")
