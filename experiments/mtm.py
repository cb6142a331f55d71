"""Study C8, Masked Trajectory Models: one MTM in several modes vs specialised networks,
and heteromodal training with few actions, on Pendulum (see the config's docstring).

    python -m experiments.mtm --workdir=/tmp/mtm
    python -m experiments.mtm --workdir=/tmp/mtm --config.quick=True
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
from irl_jax.control import data, envs, experts, mtm

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# name: (label, training mask, data: "all" | "heteromodal" | "actions_only").
METHODS = {
    "mtm": ("MTM (random autoregressive masks)", "random_autoregressive", "all"),
    "spec_inverse_dynamics": ("specialised inverse dynamics", "inverse_dynamics", "all"),
    "spec_forward_dynamics": ("specialised forward dynamics", "forward_dynamics", "all"),
    "spec_bc": ("specialised BC", "bc", "all"),
    "spec_rcbc": ("specialised RCBC", "rcbc", "all"),
    "heteromodal": ("heteromodal MTM (actions on a few)", "random_autoregressive",
                    "heteromodal"),
    "actions_only": ("MTM on the few with actions", "random_autoregressive", "actions_only"),
}
# The (method, mode) pairs run in the environment.
ROLLOUTS = (("mtm", "bc"), ("mtm", "rcbc"), ("spec_bc", "bc"), ("spec_rcbc", "rcbc"),
            ("heteromodal", "bc"), ("actions_only", "bc"))


# --- config --------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  if not isinstance(config.num_seeds, int) or config.num_seeds < 2:
    raise ValueError(f"config.num_seeds must be an integer >= 2 (intervals over seeds), got "
                     f"{config.num_seeds!r}.")
  study.positive_int(config.eval_episodes, "eval_episodes")
  study.positive_int(config.heldout_segments, "heldout_segments")
  for field in ("heldout_fraction", "action_fraction"):
    if not 0 < config[field] < 1:
      raise ValueError(f"config.{field} must lie in (0, 1), got {config[field]!r}.")
  for field in ("relative_margin", "return_margin"):
    if not config[field] > 0:
      raise ValueError(f"config.{field} must be > 0, got {config[field]!r}.")
  if not config.mixture:
    raise ValueError("config.mixture must list at least one behaviour policy.")
  if "train_mask" in config.mtm:
    raise ValueError("config.mtm.train_mask is set by the study for each method "
                     "(experiments.mtm.METHODS), not here.")


def mtm_config(config) -> mtm.MTMConfig:
  return study.learner_config(mtm.MTMConfig, config.mtm, "mtm")


# --- data ----------------------------------------------------------------------------------


def splits(episodes: data.Episodes, config, key):
  """`(train, heldout, with_actions)`: held-out episodes for the prediction measures,
  the training episodes, and a `[E_train]` bool of the training episodes that keep
  their actions in finding (2) (`action_fraction`, at least 2)."""
  k_held, k_act = jax.random.split(key)
  n = episodes.num_episodes
  order = np.asarray(jax.random.permutation(k_held, n))
  n_held = max(1, round(config.heldout_fraction * n))
  if n - n_held < 2:
    raise ValueError(f"config.heldout_fraction leaves {n - n_held} training episodes of {n}; "
                     "at least 2 are needed.")
  heldout = data.select_episodes(episodes, np.sort(order[:n_held]))
  train = data.select_episodes(episodes, np.sort(order[n_held:]))
  k = min(train.num_episodes, max(2, round(config.action_fraction * train.num_episodes)))
  chosen = np.asarray(jax.random.permutation(k_act, train.num_episodes))[:k]
  with_actions = np.zeros(train.num_episodes, bool)
  with_actions[chosen] = True
  return train, heldout, with_actions


def method_data(train: data.Episodes, with_actions, mcfg: mtm.MTMConfig) -> dict:
  """The `Trajectories` of each data variant (all the same shape, so they stack)."""
  return {"all": mtm.trajectories(train, mcfg),
          "heteromodal": mtm.trajectories(train, mcfg, has_actions=with_actions),
          "actions_only": mtm.trajectories(train, mcfg, weight=with_actions.astype(np.float32))}


def training_state_std(train: data.Episodes) -> np.ndarray:
  """The training episodes' state standard deviation: the one unit in which every
  model's forward-dynamics error is measured."""
  return train.obs.reshape(train.num_steps, -1).std(axis=0) + 1e-3


def reference_errors(held: mtm.Segments, train: data.Episodes) -> dict:
  """What the prediction errors mean, on the same held-out targets as
  `mtm.heldout_errors`: inverse dynamics' MSE of always predicting the training data's
  mean action and of a least-squares linear model `a_t ≈ W·[s_t, s_{t+1}, 1]` fitted on
  every training transition (all actions known); forward dynamics' (in units of the
  training data's state std) of predicting no change, `s_{t+1} = s_t`."""
  states, actions = np.asarray(held.states), np.asarray(held.actions)
  valid = np.asarray(held.valid)
  ok = valid[:, :-1] & valid[:, 1:]
  obs = train.obs.reshape(train.num_steps, -1)
  std = training_state_std(train)
  act = train.action.reshape(train.num_steps, -1)
  mean_action = act.mean(axis=0)
  id_err = np.mean(np.square(actions[:, :-1] - mean_action), axis=-1)
  feats = lambda s, s2: np.concatenate([s, s2, np.ones((*s.shape[:-1], 1))], axis=-1)
  w, *_ = np.linalg.lstsq(feats(obs, train.next_obs.reshape(train.num_steps, -1)), act,
                          rcond=None)
  linear = np.clip(feats(states[:, :-1], states[:, 1:]) @ w, train.spec.action.low,
                   train.spec.action.high)
  lin_err = np.mean(np.square(actions[:, :-1] - linear), axis=-1)
  fd_err = np.mean(np.square((states[:, 1:] - states[:, :-1]) / std), axis=-1)
  return {"inverse_dynamics_mean_action": float(id_err[ok].mean()),
          "inverse_dynamics_linear": float(lin_err[ok].mean()),
          "forward_dynamics_no_change": float(fd_err[ok].mean())}


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  mcfg = mtm_config(config)
  env = envs.make(config.env)
  spec = env.spec
  if spec.action.discrete:
    raise ValueError(f"config.env must have continuous actions (MTM here), got {config.env!r}.")
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_expert, k_data, k_split, k_runs, k_held, k_eval = jax.random.split(key, 6)

  expert, expert_seconds, episodes = mixture_dataset(config, env, k_expert, k_data, log=log)
  train, heldout, with_actions = splits(episodes, config, k_split)
  norm = lambda r: np.asarray(experts.normalised_return(np.asarray(r, float), expert))
  train_returns = data.episode_returns(train)
  log(f"  dataset: {episodes.num_episodes} episodes ({float(norm(train_returns.mean())):.2f} "
      f"normalised); train {train.num_episodes} ({int(with_actions.sum())} keep actions in "
      f"finding 2), held out {heldout.num_episodes}")

  # Every method × seed in one vmapped training program.
  learner = mtm.make_mtm(mcfg, spec)
  variants = method_data(train, with_actions, mcfg)
  names = list(METHODS)
  s = config.num_seeds
  trajs = jax.tree.map(lambda *xs: jnp.repeat(jnp.stack(xs), s, axis=0),
                       *[variants[METHODS[n][2]] for n in names])
  tasks = jnp.repeat(jnp.asarray([mtm.TRAIN_MASKS.index(METHODS[n][1]) for n in names]), s)
  keys = jnp.tile(jax.random.split(k_runs, s), len(names))   # seed i: the same key per method
  t0 = time.perf_counter()
  states, metrics = jax.jit(jax.vmap(learner.train))(keys, trajs, tasks)
  final_loss = np.asarray(metrics["loss/total"][:, -50:].mean(axis=1))
  train_seconds = time.perf_counter() - t0
  log(f"  trained {len(names)} methods × {s} seeds in {train_seconds:.0f} s")

  # Held-out prediction errors, every run.
  held = mtm.sample_segments(mtm.trajectories(heldout, mcfg), k_held, config.heldout_segments,
                             mcfg.segment_length)
  state_std = training_state_std(train)
  errors = jax.jit(jax.vmap(lambda st: mtm.heldout_errors(learner, st, held, state_std)))(
      states)
  errors = {k: np.asarray(v).reshape(len(names), s) for k, v in errors.items()}
  references = reference_errors(held, train)

  # Returns in the environment for the (method, mode) pairs.
  t0 = time.perf_counter()
  target = float(train_returns.max())
  run_index = np.asarray([names.index(m) * s + i for m, _ in ROLLOUTS for i in range(s)])
  modes = jnp.asarray([mtm.MODES.index(mode) for _, mode in ROLLOUTS for _ in range(s)])
  eval_keys = jnp.tile(jax.random.split(k_eval, s), len(ROLLOUTS))
  picked = jax.tree.map(lambda x: x[run_index], states)
  returns = jax.jit(jax.vmap(lambda st, k, mode: mtm.evaluate(
      learner, st, env, k, config.eval_episodes, mode=mode, target_return=target).mean()))(
          picked, eval_keys, modes)
  returns = np.asarray(returns).reshape(len(ROLLOUTS), s)
  eval_seconds = time.perf_counter() - t0

  methods = {}
  for j, name in enumerate(names):
    methods[name] = {
        "label": METHODS[name][0], "train_mask": METHODS[name][1], "data": METHODS[name][2],
        "final_loss": final_loss[j * s:(j + 1) * s].tolist(),
        **{f"{k}_mse": errors[k][j].tolist() for k in ("inverse_dynamics", "forward_dynamics")},
        **{f"{k}_mse_ci": study.interval(errors[k][j])
           for k in ("inverse_dynamics", "forward_dynamics")}}
  for (name, mode), r in zip(ROLLOUTS, returns, strict=True):
    n = norm(r)
    methods[name][f"{mode}_return"] = r.tolist()
    methods[name][f"{mode}_normalised"] = n.tolist()
    methods[name][f"{mode}_ci"] = study.interval(n)
  for m in methods.values():
    parts = [f"ID {study.fmt_pm(m['inverse_dynamics_mse_ci'], 4)}",
             f"FD {study.fmt_pm(m['forward_dynamics_mse_ci'], 4)}"]
    parts += [f"{mode} {study.fmt_pm(m[f'{mode}_ci'], 2)}" for mode in ("bc", "rcbc")
              if f"{mode}_ci" in m]
    log(f"  {m['label']:38s} " + ", ".join(parts))

  params = jax.tree.leaves(jax.tree.map(lambda x: x[0], states.params))
  results = {
      "env": config.env, "cpu": study.cpu_model(), "config": config.to_dict(),
      "expert_return": expert.mean_return, "random_return": expert.random_return,
      "expert_seconds": expert_seconds, "train_seconds": train_seconds,
      "eval_seconds": eval_seconds, "parameters": int(sum(p.size for p in params)),
      "rcbc_target_return": target, "references": references,
      "dataset": {"episodes": episodes.num_episodes, "transitions": episodes.num_steps,
                  "train_episodes": train.num_episodes, "heldout_episodes": heldout.num_episodes,
                  "episodes_with_actions": int(with_actions.sum()),
                  "normalised": float(norm(data.episode_returns(episodes).mean())),
                  "with_actions_normalised": float(norm(train_returns[with_actions].mean()))},
      "methods": methods}
  results["verdicts"] = verdicts(results, config)
  results["total_seconds"] = time.perf_counter() - t_start
  study.write_json(results, workdir)
  study.write_text(results_table(results, config), workdir)
  plot_results(results, workdir)
  return results


# --- verdicts ------------------------------------------------------------------------------


def noninferior(d, margin: float) -> tuple[str, tuple]:
  """`(verdict, interval of d)` for "d > −margin" (d: how much better the claimed method
  is): reproduced when the 95% interval of `d` lies above `−margin`, contradicted when
  it lies below."""
  d = np.asarray(d, float)
  ci = study.interval(d)
  if study.decide(study.interval(d + margin)) == "reproduced":
    return "reproduced", ci
  if study.decide(study.interval(-d - margin)) == "reproduced":
    return "contradicted", ci
  return "not at this scale", ci


def combine(verdicts) -> str:
  """Reproduced when every part is, contradicted when any part is."""
  if all(v == "reproduced" for v in verdicts):
    return "reproduced"
  return "contradicted" if "contradicted" in verdicts else "not at this scale"


def verdicts(results, config) -> list[dict]:
  m = results["methods"]
  arr = lambda name, field: np.asarray(m[name][field], float)
  rel, ret = float(config.relative_margin), float(config.return_margin)
  rows = []
  parts = []
  for task in ("inverse_dynamics", "forward_dynamics"):
    d = 1.0 - arr("mtm", f"{task}_mse") / arr(f"spec_{task}", f"{task}_mse")
    verdict, ci = noninferior(d, rel)
    parts.append(verdict)
    rows.append({"finding": f"(1{'ab'[len(parts) - 1]}) MTM ≥ specialised on "
                            f"{task.replace('_', ' ')} (MSE at most {rel:.0%} worse)",
                 "verdict": verdict,
                 "deciding": f"1 − MSE_MTM/MSE_spec, paired: {study.fmt_ci(ci, 3)}"})
  rows.insert(0, {"finding": "(1) one MTM matches or beats specialised networks on inverse "
                             "and forward dynamics", "verdict": combine(parts),
                  "deciding": "(1a) and (1b) below"})
  for letter, mode in (("c", "bc"), ("d", "rcbc")):
    d = arr("mtm", f"{mode}_normalised") - arr(f"spec_{mode}", f"{mode}_normalised")
    verdict, ci = noninferior(d, ret)
    rows.append({"finding": f"(1{letter}) MTM ≥ specialised on {mode.upper()} return "
                            f"(at most {ret:g} worse, normalised)", "verdict": verdict,
                 "deciding": f"MTM − specialised, paired: {study.fmt_ci(ci, 3)}"})
  d_id = study.interval(arr("actions_only", "inverse_dynamics_mse")
                        - arr("heteromodal", "inverse_dynamics_mse"))
  d_bc = study.interval(arr("heteromodal", "bc_normalised") - arr("actions_only",
                                                                  "bc_normalised"))
  v_id, v_bc = study.decide(d_id), study.decide(d_bc)
  frac = results["config"]["action_fraction"]
  rows += [
      {"finding": f"(2) heteromodal MTM (actions on {frac:.0%}) beats MTM on those "
                  "trajectories alone", "verdict": combine([v_id, v_bc]),
       "deciding": "(2a) and (2b) below"},
      {"finding": "(2a) ... on inverse dynamics", "verdict": v_id,
       "deciding": f"MSE_actions-only − MSE_heteromodal: {study.fmt_ci(d_id, 4)}"},
      {"finding": "(2b) ... on BC return", "verdict": v_bc,
       "deciding": f"heteromodal − actions-only, normalised: {study.fmt_ci(d_bc, 3)}"}]
  return rows


# --- reporting -----------------------------------------------------------------------------


def results_table(results, config=None) -> str:
  ds = results["dataset"]
  c = results["config"]
  mc = c["mtm"]
  lines = [f"## {results['env']}: Masked Trajectory Models (expert "
           f"{results['expert_return']:.1f}, random {results['random_return']:.1f})", "",
           f"Mean ± 95% interval over {c['num_seeds']} seeds. CPU: {results['cpu']}.", "",
           f"Dataset: {ds['episodes']} episodes, {ds['transitions']} transitions (normalised "
           f"return {ds['normalised']:.2f}); {ds['train_episodes']} train, "
           f"{ds['heldout_episodes']} held out; in finding (2) {ds['episodes_with_actions']} "
           f"training episodes keep their actions ({ds['with_actions_normalised']:.2f}).", "",
           f"Every model: the same transformer ({results['parameters']} parameters; width "
           f"{mc['width']}, {mc['depth']} blocks, {mc['heads']} heads, L = "
           f"{mc['segment_length']}), {mc['num_steps']} steps of {mc['batch_size']} segments.",
           "", "| method | inverse dynamics MSE | forward dynamics MSE | BC return | "
           "RCBC return |", "|---|---|---|---|---|"]
  for m in results["methods"].values():
    cells = [study.fmt_pm(m["inverse_dynamics_mse_ci"], 4),
             study.fmt_pm(m["forward_dynamics_mse_ci"], 4)]
    cells += [study.fmt_pm(m[f"{mode}_ci"], 2) if f"{mode}_ci" in m else ""
              for mode in ("bc", "rcbc")]
    lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
  lines += ["", "Inverse dynamics: squared error of `a_t` in torque units (box [−2, 2]); "
            "forward dynamics: of `s_{t+1}` in normalised state units; both on held-out "
            "segments. Returns: expert-normalised (0 random, 1 the expert), deterministic "
            f"predicted action, {c['eval_episodes']} episodes; RCBC targets the best training "
            f"return ({results['rcbc_target_return']:.1f}). Blank: not run in that mode. "
            "For scale: always predicting the mean action scores "
            f"{results['references']['inverse_dynamics_mean_action']:.4f} on inverse "
            "dynamics and a least-squares linear model of `(s_t, s_{t+1})` "
            f"{results['references'].get('inverse_dynamics_linear', float('nan')):.2g}; "
            "predicting no change scores "
            f"{results['references']['forward_dynamics_no_change']:.4f} on forward dynamics. "
            f"Time: {results['total_seconds']:.0f} s in all (expert "
            f"{results['expert_seconds']:.0f} s, training {results['train_seconds']:.0f} s, "
            f"rollouts {results['eval_seconds']:.0f} s).", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  m = results["methods"]
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  panels = [("inverse dynamics MSE", [("mtm", "inverse_dynamics_mse"),
                                      ("spec_inverse_dynamics", "inverse_dynamics_mse"),
                                      ("heteromodal", "inverse_dynamics_mse"),
                                      ("actions_only", "inverse_dynamics_mse")]),
            ("forward dynamics MSE", [("mtm", "forward_dynamics_mse"),
                                      ("spec_forward_dynamics", "forward_dynamics_mse")]),
            ("expert-normalised return", [("mtm", "bc_normalised"), ("spec_bc", "bc_normalised"),
                                          ("mtm", "rcbc_normalised"),
                                          ("spec_rcbc", "rcbc_normalised"),
                                          ("heteromodal", "bc_normalised"),
                                          ("actions_only", "bc_normalised")])]
  short = {"mtm": "MTM", "spec_inverse_dynamics": "spec.", "spec_forward_dynamics": "spec.",
           "spec_bc": "spec.", "spec_rcbc": "spec.", "heteromodal": "hetero",
           "actions_only": "actions only"}
  ref = results["references"]
  axes[0].axhline(ref["inverse_dynamics_mean_action"], color="k", linestyle=":",
                  label="mean action")
  if "inverse_dynamics_linear" in ref:
    axes[0].axhline(ref["inverse_dynamics_linear"], color="r", linestyle=":",
                    label="linear least squares")
  axes[1].axhline(ref["forward_dynamics_no_change"], color="k", linestyle=":",
                  label="no change")
  axes[2].axhline(results["dataset"]["normalised"], color="k", linestyle=":",
                  label="dataset average")
  for ax, (title, entries) in zip(axes, panels, strict=True):
    labels = []
    for i, (name, field) in enumerate(entries):
      values = np.asarray(m[name][field], float)
      ax.scatter([i] * len(values), values, color="gray", s=10, zorder=1)
      study.errorbars(ax, [i], [study.interval(values)], color=f"C{i}")
      mode = field.split("_")[0]
      labels.append(short[name] + (f" {mode.upper()}" if "normalised" in field else ""))
    ax.set_xticks(range(len(entries)), labels, rotation=25, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
  fig.suptitle(f"{results['env'].split('/', 1)[-1]}: masked trajectory models", fontsize=10)
  fig.tight_layout()
  path = os.path.join(workdir, "mtm.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/mtm.py", "/tmp/mtm")
