"""The peer half of `experiments.benchmarks.peers_imitation`: imitation 1.0.1's `MCEIRL`.

    PEER_PYTHON experiments/benchmarks/_imitation_peer.py PROBLEM.npz

Runs in the peer's own virtual environment (imitation, seals, gymnasium 0.29,
stable-baselines3, torch), never in irl_jax's: it imports neither irl_jax nor
JAX. It reads the MDP, the expert's occupancy measures and the initial reward
weights that the benchmark wrote, builds a seals `TabularModelPOMDP` from
exactly those arrays, and runs `MCEIRL.train` once with imitation's own
stopping rule, timing every iteration. Afterwards (outside the timing) it
evaluates each iteration's reward with imitation's own planner
(`mce_partition_fh`) and forward pass (`mce_occupancy_measures`):

- `error`: `‖ρ_θ − ρ_E‖₁` over state-action pairs with
  `ρ_θ(s, a) = Σ_{t<H} D_t(s) π_t(a|s)`, the quantity irl_jax's `mce_irl_loss`
  reports as `occupancy_error`, against the same `ρ_E` array;
- `state_l1`, `state_linf`: imitation's own quantity, the state visitation
  `Σ_{t≤H} D_t` (H + 1 states per episode, the final state included) against
  the `demo_state_om` it was given; `state_linf ≤ linf_eps` is its stopping rule.

With `eval_rewards[N, S]` in the input file it trains nothing and instead
evaluates those state rewards (irl_jax's iterates) in order with the call
`MCEIRL._train_step` makes, `mce_occupancy_measures(env, reward=r,
discount=1.0)`, and reports `state_l1`/`state_linf` against `demo_state_om` as
`MCEIRL.train` computes `linf_delta`; it stops after the first reward with
`state_linf ≤ linf_eps` (that reward is the one imitation's rule would stop at).

It prints one line `PEER_RESULT {json}` on stdout (anything else it prints can
be ignored).
"""

import json
import os
import sys
import time

import numpy as np

RESULT_PREFIX = "PEER_RESULT "


def _versions():
  from importlib import metadata

  out = {"python": sys.version.split()[0]}
  for name in ("imitation", "seals", "gymnasium", "stable-baselines3", "torch", "numpy",
               "scipy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def _blas_threads():
  try:
    from threadpoolctl import threadpool_info
  except ImportError:
    return None
  return {f"{i['internal_api']}": i["num_threads"] for i in threadpool_info()}


def main(path: str) -> dict:
  start = time.perf_counter()
  import torch as th
  from imitation.algorithms import mce_irl
  from imitation.rewards import reward_nets
  from seals import base_envs
  from seals.diagnostics.cliff_world import CliffWorldEnv

  d = dict(np.load(path))
  horizon = int(d["horizon"])
  env = base_envs.TabularModelPOMDP(
      transition_matrix=d["transitions"], observation_matrix=d["observations"],
      reward_matrix=d["reward"], horizon=horizon, initial_state_dist=d["initial"])
  expert_sa, expert_om = d["expert_occupancy"], d["expert_state_om"]
  if "eval_rewards" in d:
    return evaluate(env, d)

  checks = {}
  if "cliff_width" in d:
    # The benchmark builds CliffWorld itself (so irl_jax runs without this venv):
    # compare its arrays with seals' own CliffWorldEnv of the same size.
    ref = CliffWorldEnv(width=int(d["cliff_width"]), height=int(d["cliff_height"]),
                        horizon=horizon, use_xy_obs=False)
    checks["seals_max_abs_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in (
            (ref.transition_matrix, env.transition_matrix),
            (ref.initial_state_dist, env.initial_state_dist),
            (ref.reward_matrix, env.reward_matrix),
            (ref.observation_matrix, env.observation_matrix)))
  # The expert recomputed by imitation's own planner (float64) on the true reward.
  _, _, pi_e = mce_irl.mce_partition_fh(env, discount=1.0)
  d_e, om_e = mce_irl.mce_occupancy_measures(env, pi=pi_e, discount=1.0)
  checks["expert_state_om_max_abs_diff"] = float(np.max(np.abs(om_e - expert_om)))
  checks["expert_occupancy_max_abs_diff"] = float(np.max(np.abs(
      np.einsum("ts,tsa->sa", d_e[:horizon], pi_e) - expert_sa)))

  th.manual_seed(0)
  net = reward_nets.BasicRewardNet(env.observation_space, env.action_space, hid_sizes=[],
                                   use_action=False, use_next_state=False, use_done=False)
  with th.no_grad():  # the same initial weights as irl_jax's run; bias 0
    net.mlp.dense_final.weight.copy_(th.as_tensor(d["init_weight"][None], dtype=th.float32))
    net.mlp.dense_final.bias.zero_()

  class TimedMCEIRL(mce_irl.MCEIRL):
    """MCEIRL that notes when each iteration starts and which reward it evaluated."""

    stamps: list
    rewards: list
    visitations: list

    def _train_step(self, obs_mat):
      self.stamps.append(time.perf_counter())
      reward, visitations = super()._train_step(obs_mat)
      self.rewards.append(reward.copy())
      self.visitations.append(visitations.copy())
      return reward, visitations

  algo = TimedMCEIRL(expert_om, env, net, rng=np.random.default_rng(0),
                     optimizer_kwargs={"lr": float(d["lr"])}, discount=1.0,
                     linf_eps=float(d["linf_eps"]), grad_l2_eps=float(d["grad_l2_eps"]),
                     log_interval=None)
  algo.stamps, algo.rewards, algo.visitations = [], [], []
  setup_s = time.perf_counter() - start
  max_iter = int(d["max_iter"])
  t0 = time.perf_counter()
  algo.train(max_iter=max_iter)
  end = time.perf_counter()
  # Iteration t is complete when iteration t + 1 starts (train() has then run its
  # stopping checks); the last one when train() returns (after its final planning).
  done_at = [s - t0 for s in algo.stamps[1:]] + [end - t0]

  errors, state_l1, state_linf = [], [], []
  for i, reward in enumerate(algo.rewards):  # (no zip(strict=): Python 3.8 peers)
    visitations = algo.visitations[i]
    _, _, pi = mce_irl.mce_partition_fh(env, reward=reward, discount=1.0)
    dist, _ = mce_irl.mce_occupancy_measures(env, pi=pi, discount=1.0)
    rho = np.einsum("ts,tsa->sa", dist[:horizon], pi)
    errors.append(float(np.sum(np.abs(rho - expert_sa))))
    state_l1.append(float(np.sum(np.abs(visitations - expert_om))))
    state_linf.append(float(np.max(np.abs(visitations - expert_om))))
  iterations = len(algo.rewards)
  grad_norm = None
  if iterations:
    grad_norm = float(th.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters())))
  if iterations and state_linf[-1] <= algo.linf_eps:
    stopped_by = "linf_eps"
  elif iterations < max_iter:
    stopped_by = "grad_l2_eps"
  else:
    stopped_by = "max_iter"
  return {
      "versions": _versions(),
      "torch_threads": th.get_num_threads(),
      "torch_interop_threads": th.get_num_interop_threads(),
      "blas_threads": _blas_threads(),
      "cpu_count": os.cpu_count(),
      "setup_s": setup_s,
      "train_s": end - t0,
      "iterations": iterations,
      "stopped_by": stopped_by,
      "final_grad_norm": grad_norm,
      "time_s": done_at,
      "error": errors,
      "state_l1": state_l1,
      "state_linf": state_linf,
      "final_reward": [float(x) for x in algo.rewards[-1]] if iterations else [],
      "checks": checks,
  }


def evaluate(env, d) -> dict:
  """imitation's stopping quantity for each row of `eval_rewards`, in order, until the
  first at or below `linf_eps`."""
  from imitation.algorithms import mce_irl

  expert_om, linf_eps = d["expert_state_om"], float(d["linf_eps"])
  state_l1, state_linf = [], []
  start = time.perf_counter()
  for reward in d["eval_rewards"]:
    # As in MCEIRL._train_step (reward: the net's float32 output) and MCEIRL.train.
    _, visitations = mce_irl.mce_occupancy_measures(env, reward=reward, discount=1.0)
    state_l1.append(float(np.sum(np.abs(expert_om - visitations))))
    state_linf.append(float(np.max(np.abs(expert_om - visitations))))
    if state_linf[-1] <= linf_eps:
      break
  return {"versions": _versions(), "evaluated": len(state_linf), "eval_s":
          time.perf_counter() - start, "state_l1": state_l1, "state_linf": state_linf}


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(f"usage: {sys.argv[0]} PROBLEM.npz")
  print(RESULT_PREFIX + json.dumps(main(sys.argv[1])), flush=True)
