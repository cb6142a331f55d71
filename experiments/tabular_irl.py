"""Classical IRL on a tabular gridworld: MCE IRL vs IQ-Learn vs behaviour cloning.

The finding tested: with enough demonstrations, MaxEnt/MCE IRL (Ziebart et al.
2008, 2010) and IQ-Learn (Garg et al. 2021) recover the expert's performance,
while behaviour cloning does worse away from the demonstrated states, where it
has no data (its policy there stays uniform).

Setup (`experiments/configs/tabular_irl.py`): an 8×8 slippery gridworld
(`irl_jax.tabular.envs.gridworld`), a soft-optimal expert at temperature α,
N ∈ {1, 10, 100} demonstrations of 100 steps from the uniform initial
distribution, 5 seeds, each with its own demonstrations. Learners:
MCE IRL with linear rewards on one-hot state features and on coordinate
features (`make_mce_irl`, discounted, exact soft value iteration), tabular
IQ-Learn (χ², c = 0.5; `make_iq_learn`) with the offline value term on expert
states and, as a second variant, IQ-Learn's initial-state form
`(1 − γ)E_ν0[V(s_0)]` with expert steps weighted by `γ^t`, and tabular BC
(`make_behaviour_cloning`). Every method trains all (N, seed) pairs in one
`jax.vmap`-ed compiled run; smaller demonstration sets are masks on the largest.

Measures, per method, N and seed, all exact (dynamic programming, no sampling):
- expert-normalised return `(J(π) − J(uniform)) / (J(π_E) − J(uniform))` of
  the learned policy from ν0 (unregularised discounted return under the true
  reward). MCE's policy is the soft-optimal policy of its reward; IQ-Learn's is
  `softmax(Q/α)`, which is also the soft-optimal policy of the reward its Q
  implies, `r = Q − γPV`;
- the same from the states no demonstration visited (uniform over them; NaN,
  and counted out, when every state was visited);
- the normalised occupancy error `(1 − γ)‖ρ_π − ρ_E‖₁ ∈ [0, 2]` against the
  expert's exact occupancy.

Verdict rules (fixed before the first run; 95% t-intervals over seeds):
1. "MCE IRL recovers the expert": MCE (one-hot features) at the largest N:
   reproduced if the interval of its normalised return lies above 0.9,
   contradicted if it lies below 0.9, otherwise not at this scale.
2. "IQ-Learn recovers the expert": the same rule for IQ-Learn.
3. "BC is worse away from the demonstrations": the paired difference MCE −
   BC of the normalised return from undemonstrated states at N = 10:
   reproduced if its interval lies above 0, contradicted if below.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

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
from irl_jax.tabular import dp, envs, learners

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "tabular_irl.py")


def demonstrations(config, mdp, expert_policy):
  """`Trajectories[seeds, N_max, T]`: each seed's own demonstrations."""
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  sample = lambda k: dp.sample_trajectories(k, expert_policy, mdp,
                                            horizon=config.demo_horizon,
                                            num_trajectories=max(config.num_demos))
  return jax.jit(jax.vmap(sample))(keys)


def demo_masks(config):
  """`[len(num_demos), N_max, T]` bool: the first N trajectories are the N-demo set."""
  n_max = max(config.num_demos)
  rows = np.arange(n_max)[None, :, None] < np.asarray(config.num_demos)[:, None, None]
  return jnp.asarray(np.broadcast_to(rows, (len(config.num_demos), n_max,
                                            config.demo_horizon)))


def evaluate(policy, mdp, expert_policy, uniform, expert_occ, visited):
  """Exact measures of one policy: normalised return from ν0 and from unvisited
  states, and the normalised occupancy error."""
  reward = mdp.reward
  _, v = dp.policy_evaluation(policy, reward, mdp)
  _, v_e = dp.policy_evaluation(expert_policy, reward, mdp)
  _, v_u = dp.policy_evaluation(uniform, reward, mdp)
  nu0 = mdp.initial
  ret = (nu0 @ v - nu0 @ v_u) / (nu0 @ v_e - nu0 @ v_u)
  off = (nu0 > 0) & ~visited
  n_off = jnp.sum(off)
  off_ret = jnp.where(n_off > 0,
                      jnp.sum(off * (v - v_u)) / jnp.sum(off * (v_e - v_u)), jnp.nan)
  occ = dp.occupancy(policy, mdp)
  err = (1 - mdp.discount) * jnp.sum(jnp.abs(occ - expert_occ))
  return {"normalised_return": ret, "offdemo_return": off_ret, "occupancy_error": err}


def run(config, workdir: str, *, log=print) -> dict:
  config = resolve_quick(config)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  alpha = config.temperature
  base = envs.gridworld(config.size, slip=config.slip, discount=config.discount)
  expert = dp.soft_value_iteration(base.reward, base, temperature=alpha).policy
  expert_occ = dp.occupancy(expert, base)
  uniform = jnp.full_like(expert, 1.0 / base.num_actions)
  s, a = base.num_states, base.num_actions

  demos = demonstrations(config, base, expert)                # [seeds, N, T]
  masks = demo_masks(config)                                  # [n, N, T]
  grid = lambda f: jax.vmap(lambda m: jax.vmap(lambda d: f(d, m))(demos))(masks)
  occupancies = grid(lambda d, m: dp.empirical_occupancy(
      d.states, d.actions, num_states=s, num_actions=a, discount=config.discount, where=m))
  visited = grid(lambda d, m: jnp.zeros(s, bool).at[d.states].max(m))
  transitions = grid(lambda d, m: learners.transitions_from(d, where=m))
  # The initial-state form of IQ-Learn weights expert steps by γ^t (see make_iq_learn).
  discounted = grid(lambda d, m: learners.transitions_from(d, where=m,
                                                           discount=config.discount))

  policies, timing = {}, {}
  for feat in config.mce_features:
    mdp = envs.gridworld(config.size, slip=config.slip, discount=config.discount,
                         features=feat)
    features = mdp.features
    train = learners.make_mce_irl(
        reward_fn=learners.linear_reward(features),
        init_fn=lambda k, f=features: jnp.zeros(f.shape[-1]),
        optimizer=optax.adam(config.mce_lr), steps=config.mce_steps, temperature=alpha)
    name = f"MCE IRL ({feat})"
    t0 = time.perf_counter()
    w, log_ = jax.jit(jax.vmap(jax.vmap(train, in_axes=(None, None, 0)),
                               in_axes=(None, None, 0)))(jax.random.key(0), mdp, occupancies)
    rewards = jnp.einsum("saf,nkf->nksa", features, w)
    policies[name] = jax.block_until_ready(jax.vmap(jax.vmap(
        lambda r, mdp=mdp: dp.soft_value_iteration(r, mdp, temperature=alpha).policy))(rewards))
    timing[name] = time.perf_counter() - t0
    if feat == config.mce_features[0]:
      example_reward = np.asarray(rewards[-1, 0])
    log(f"{name}: final occupancy-matching error "
        f"{float(log_['occupancy_error'][..., -1].mean()):.4f} ({timing[name]:.1f} s)")

  for name, value_term, data in (("IQ-Learn", "expert", transitions),
                                 ("IQ-Learn (ν0 value term)", "initial", discounted)):
    iq = learners.make_iq_learn(num_states=s, num_actions=a,
                                optimizer=optax.adam(config.iq_lr), steps=config.iq_steps,
                                temperature=alpha, chi2_coef=config.iq_chi2_coef,
                                value_term=value_term)
    t0 = time.perf_counter()
    q, _ = jax.jit(jax.vmap(jax.vmap(iq, in_axes=(None, None, 0)), in_axes=(None, None, 0)))(
        jax.random.key(0), base, data)
    policies[name] = jax.block_until_ready(jax.nn.softmax(q / alpha, -1))
    timing[name] = time.perf_counter() - t0

  bc = learners.make_behaviour_cloning(num_states=s, num_actions=a,
                                       optimizer=optax.adam(config.bc_lr), steps=config.bc_steps)
  t0 = time.perf_counter()
  logits, _ = jax.jit(jax.vmap(jax.vmap(bc, in_axes=(None, 0)), in_axes=(None, 0)))(
      jax.random.key(0), transitions)
  policies["BC"] = jax.block_until_ready(jax.nn.softmax(logits, -1))
  timing["BC"] = time.perf_counter() - t0

  measure = jax.jit(jax.vmap(jax.vmap(
      lambda p, v: evaluate(p, base, expert, uniform, expert_occ, v))))
  methods = {}
  for name, pol in policies.items():
    m = jax.device_get(measure(pol, visited))
    per_n = {}
    for i, n in enumerate(config.num_demos):
      per_n[str(n)] = {k: {"per_seed": np.asarray(v[i]).tolist(), "ci": interval(v[i])}
                       for k, v in m.items()}
    methods[name] = {"by_num_demos": per_n, "train_seconds": timing[name]}
    log(f"{name}: normalised return "
        + ", ".join(f"N={n}: {per_n[str(n)]['normalised_return']['ci'][0]:.3f}"
                    for n in config.num_demos))

  results = {"config": config.to_dict(), "cpu": cpu_model(), "methods": methods,
             "expert_return": float(expert_occ.ravel() @ base.reward.ravel())}
  results["verdicts"] = verdicts(results, config)
  results["seconds"] = time.perf_counter() - t_start
  write_json(results, workdir)
  write_text(results_table(results), workdir)
  plot_results(results, workdir, example_reward, np.asarray(base.reward), config)
  return results


def verdicts(results, config) -> list[dict]:
  """The three findings, decided by the rules in the module docstring."""
  n_max, mce = str(max(config.num_demos)), f"MCE IRL ({config.mce_features[0]})"
  out = []

  def near_expert(name, finding):
    ci = results["methods"][name]["by_num_demos"][n_max]["normalised_return"]["ci"]
    shifted = (ci[0] - 0.9, ci[1] - 0.9, ci[2] - 0.9, ci[3])
    out.append(dict(finding=finding, verdict=decide(shifted),
                    number=f"{name}, N={n_max}: normalised return "
                           f"{fmt_ci(ci, signed=False)} (bar: 0.9)"))

  near_expert(mce, f"(1) MCE IRL recovers the expert's performance (N={n_max})")
  near_expert("IQ-Learn", f"(2) IQ-Learn recovers the expert's performance (N={n_max})")
  n = "10" if "10" in results["methods"]["BC"]["by_num_demos"] else n_max
  a = results["methods"][mce]["by_num_demos"][n]["offdemo_return"]["per_seed"]
  b = results["methods"]["BC"]["by_num_demos"][n]["offdemo_return"]["per_seed"]
  diff = interval(np.asarray(a, float) - np.asarray(b, float))
  out.append(dict(finding="(3) BC does worse than IRL away from the demonstrated states",
                  verdict=decide(diff),
                  number=f"N={n}: MCE − BC normalised return from undemonstrated states "
                         f"{fmt_ci(diff)}"))
  return out


def results_table(results) -> str:
  cfg = results["config"]
  lines = ["# Classical IRL on a tabular gridworld", "",
           f"{cfg['size']}×{cfg['size']} gridworld, slip {cfg['slip']}, γ = {cfg['discount']}, "
           f"α = {cfg['temperature']}; {cfg['num_seeds']} seeds; mean [95% interval]. "
           f"CPU: {results['cpu']}.", "",
           "| method | N | normalised return | from undemonstrated states | occupancy error |",
           "|---|---|---|---|---|"]
  for name, r in results["methods"].items():
    for n, m in r["by_num_demos"].items():
      lines.append(f"| {name} | {n} | {fmt_ci(m['normalised_return']['ci'], signed=False)} | "
                   f"{fmt_ci(m['offdemo_return']['ci'], signed=False)} | "
                   f"{fmt_ci(m['occupancy_error']['ci'], signed=False)} |")
  lines += ["", "| finding | verdict | deciding number |", "|---|---|---|"]
  lines += [f"| {v['finding']} | {v['verdict']} | {v['number']} |" for v in results["verdicts"]]
  lines += ["", f"Total time {results['seconds']:.1f} s; training per method (compile included): "
            + ", ".join(f"{k} {v['train_seconds']:.1f} s" for k, v in results["methods"].items())]
  return "\n".join(lines) + "\n"


def plot_results(results, workdir, example_reward, true_reward, config) -> None:
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  ns = [int(n) for n in config.num_demos]
  for name, r in results["methods"].items():
    for ax, key in zip(axes[:2], ("normalised_return", "occupancy_error"), strict=True):
      study.errorbars(ax, ns, [r["by_num_demos"][str(n)][key]["ci"] for n in ns], label=name)
      ax.set_xscale("log")
      ax.set_xlabel("expert demonstrations N")
      ax.set_ylabel(key.replace("_", " "))
  axes[0].legend(fontsize=8)
  size = config.size
  diff = example_reward[:, 0] - example_reward[:, 0].mean()
  im = axes[2].imshow(diff.reshape(size, size), cmap="viridis")
  goal = tuple(int(i) for i in np.unravel_index(true_reward[:, 0].argmax(), (size, size)))
  axes[2].set_title(f"MCE reward (N={max(ns)}, seed 0), mean removed;\n"
                    f"true goal at (row, col) = {goal}")
  fig.colorbar(im, ax=axes[2])
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "tabular_irl.png"), dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  study.command_line(run, lambda results, config: results_table(results),
                     _DEFAULT_CONFIG, "/tmp/tabular_irl")
