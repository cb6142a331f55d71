"""irl_jax vs HumanCompatibleAI imitation 1.0.1 on the same CPU: MCE IRL, GAIL and AIRL.

    python -m experiments.benchmarks.peers_imitation            # table
    python -m experiments.benchmarks.peers_imitation --json     # one JSON object per line
    python -m experiments.benchmarks.peers_imitation --quick    # tiny sizes, about a minute
    python -m experiments.benchmarks.peers_imitation --peer_python=/path/to/venv/bin/python
    python -m experiments.benchmarks.peers_imitation --suite=adversarial --adv_workdir=DIR

`--suite` picks the comparisons: `mce` (tabular MCE IRL, described below),
`adversarial` (GAIL and AIRL on CartPole-v1 and Pendulum-v1 with the same expert
demonstrations; its settings and metrics are in
`experiments.benchmarks.peers_imitation_adversarial`), or `all` (the default).

The problem is imitation's own CliffWorld (seals `CliffWorldEnv`, one-hot
observations; default 15×6 with horizon 18, seals' registered
`seals/CliffWorld15x6-v0`; `--quick`: 7×4, horizon 9), built here with NumPy
so that the irl_jax half needs no peer, and checked against seals' own arrays
in the peer (`seals_max_abs_diff`, 0 when the port is exact). Both learners get:

- the same MDP: `P[S, A, S]`, `ν0` (state 0), horizon `H`, discount 1
  (imitation's default; with another discount its `MCEIRL` plans with the
  undiscounted policy but discounts the occupancy, so 1 is the only setting in
  which both solve the same problem);
- the same expert: the soft-optimal policy (α = 1, finite horizon) of
  CliffWorld's true state reward, given as its exact occupancy measure, as in
  imitation's documented MCE IRL example. imitation takes state visitations
  over the H + 1 states of an episode (`Σ_{t≤H} D_t`, final state included, its
  `demo_state_om` convention); irl_jax takes `ρ_E(s, a) = Σ_{t<H} D_t(s) π_t(a|s)`
  (the H state-action pairs; `dp.finite_occupancy`). Both come from the same
  per-step expert occupancy;
- the same reward class and start: a linear reward of one-hot state features
  (imitation: `BasicRewardNet` with no hidden layer and only the state as input,
  whose bias shifts every reward equally and changes no policy), with the same
  initial weights `U(−1/√S, 1/√S)` (torch's default scale; bias 0);
- the same optimiser: Adam with learning rate `--mce_lr`, default 0.1. (At
  imitation's default 0.01 its run on the default MDP does not reach its own
  stopping rule within its default 1000 iterations, so ε would be the error
  after an arbitrary iteration count rather than at convergence.)

imitation runs `MCEIRL.train(max_iter=--mce_max_iter)` (default 5000) once with
its own stopping rule (`linf_eps` = 1e-3 on the state visitation,
`grad_l2_eps` = 1e-4, or `max_iter`), timing each iteration; its setup
(imports, env, net) is not timed. Its gradient counts the final state's
visitation `D_H`, which its planner ignores (no terminal reward), and
irl_jax's does not, so their iterates differ; both reach zero error here,
where the expert's occupancy is that of a state reward's soft-optimal policy.

The common error is `‖ρ_θ − ρ_E‖₁` over state-action pairs, the finite-horizon
occupancy of the soft-optimal policy of the learned reward (H steps, sums to H)
against the expert's: irl_jax's `MCEExtras.occupancy_error`,
and for imitation the same sum from its own planner (`mce_partition_fh`) and
forward pass (`mce_occupancy_measures`), computed in the peer after the timed
run. The benchmark re-evaluates imitation's final reward with irl_jax's DP
(`cross_check_abs_diff`, float32 noise when both compute the same thing).

Headline metrics:
- `mce_irl_speedup_vs_imitation` (target ≥ 100): ε is the common error
  imitation reaches at the end of its run; imitation's wall-clock to its first
  iteration at or below ε over irl_jax's wall-clock for the jit-compiled
  `make_mce_irl` run with just enough steps to reach ε (found by a search run
  3× imitation's length, `irl_jax_trajectory`; compile time excluded, reported
  as `mce_irl_compile_s_irl_jax`; median of `--repeats` runs);
- `mce_irl_seeds_per_second`: `jax.vmap` of that run over `--mce_seeds` random
  initialisations, seeds completed per second at the same number of steps;
- `mce_irl_final_occupancy_error_{imitation,irl_jax}`: the common error after
  the same number of Adam updates (that of the reward imitation's last
  iteration evaluated); irl_jax's must not be worse.

ε is an L1 gap over the H state-action steps, the quantity irl_jax's gradient
matches, while imitation's gradient matches the state visitation including
`D_H`. So the same run also reports how the headline splits and what it is
under imitation's own criterion:
- `mce_irl_step_time_ratio`: imitation's mean time per iteration (its whole
  `train()` over its iterations) over irl_jax's per step (the timed run over
  its steps);
- `mce_irl_step_count_ratio`: imitation's iterations to ε over irl_jax's steps
  to ε (their product is close to the headline, not equal: the headline uses
  imitation's time to its ε iteration, not its mean);
- `mce_irl_speedup_end_to_end`: the headline with irl_jax's compile time added
  to its run (imitation's setup, imports included, stays excluded);
- `mce_irl_speedup_own_criterion`: time to imitation's stopping quantity,
  `linf_delta = max_s |Σ_{t≤H} D_t(s) − demo_state_om(s)| ≤ 1e-3` (its default
  `linf_eps`; the state visitation of the soft-optimal policy of the current
  reward, the final state D_H included, as `MCEIRL.train` computes it). For
  imitation it is the `visitations` its own `_train_step` returned; for irl_jax
  the peer evaluates each iterate of the search run with the same call,
  `mce_occupancy_measures(env, reward=w, discount=1.0)` (float32 `w`, as the
  net's output is), and irl_jax's DP recomputes it as a check
  (`irl_jax_dp_check_abs_diff`); irl_jax is then timed for the steps to its
  first iterate at or below 1e-3 (`mce_irl_time_to_own_criterion_{imitation,irl_jax}`).

Context on every row: `cpus_available` is the number of CPUs this process may
run on (`os.sched_getaffinity`), not a count read from JAX: JAX has no
documented setting that reports XLA:CPU's thread count (a maintainer's comment
in jax-ml/jax#1539 says its thread pool is sized from this affinity).
`XLA_FLAGS`, when set, is recorded as `xla_flags`. `torch_threads` is
`torch.get_num_threads()` in the peer.

imitation 1.0.1 pins gymnasium 0.29 and stable-baselines3 2.2, which conflict
with irl_jax's stack, so the peer half (`_imitation_peer.py`) runs in its own
virtual environment as a subprocess, reading the arrays from an `.npz`. With
`--peer_python` it uses that interpreter; otherwise the venv at `--peer_venv`
(default `~/.cache/irl_jax/peer_imitation_venv`), which the benchmark creates
on first use with `python -m venv` and `pip install` of `PEER_PINS` (this
downloads imitation, torch and their dependencies, several GB) and reuses
afterwards. `--quick` skips the peer when that venv does not exist and no
`--peer_python` is given; `--skip_peer` always skips it.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments.benchmarks import peers_imitation_adversarial as adv
from experiments.benchmarks.common import JSON, QUICK, REPEATS, run_main
from experiments.study import cpu_model
from irl_jax.tabular import dp, irl, learners
from irl_jax.tabular.mdp import TabularMDP, make_mdp

PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_imitation_peer.py")
RESULT_PREFIX = "PEER_RESULT "  # the peer's result line (see _imitation_peer.py)
DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "irl_jax",
                            "peer_imitation_venv")
# What the benchmark installs into a venv it creates: imitation 1.0.1's own pins
# (seals, gymnasium, stable-baselines3) and the torch/numpy/scipy it was run with.
PEER_PINS = ("imitation==1.0.1", "seals==0.2.1", "gymnasium==0.29.1",
             "stable-baselines3==2.2.1", "torch==2.14.1", "numpy==2.4.6", "scipy==1.17.1")
TARGET_SPEEDUP = 100.0
LINF_EPS = 1e-3  # MCEIRL's default linf_eps, its stopping rule

FULL = dict(width=15, height=6, horizon=18, seeds=32, repeats=5)
SMALL = dict(width=7, height=4, horizon=9, seeds=8, repeats=3)


def _define(define, name, default, help_):
  """Defines a flag unless another benchmark imported together already did."""
  if name not in flags.FLAGS:
    define(name, default, help_)


_define(flags.DEFINE_string, "peer_python", None,
        "Python of an existing venv with imitation==1.0.1; the peer half runs there.")
_define(flags.DEFINE_string, "peer_venv", DEFAULT_VENV,
        "Venv for the imitation peer, created on first use when --peer_python is unset.")
_define(flags.DEFINE_bool, "skip_peer", False, "Run only the irl_jax half.")
_define(flags.DEFINE_float, "mce_lr", 0.1, "Adam learning rate of both learners.")
_define(flags.DEFINE_integer, "mce_max_iter", 5000,
        "imitation's MCEIRL.train(max_iter); irl_jax's step budget without the peer.")
_define(flags.DEFINE_integer, "mce_seeds", None, "Seeds in the vmapped run (default 32, quick 8).")
if "suite" not in flags.FLAGS:
  flags.DEFINE_enum("suite", "all", ["all", "mce", "adversarial"],
                    "Which comparison: tabular MCE IRL, GAIL/AIRL on CartPole/Pendulum, or both.")
_define(flags.DEFINE_list, "adv_envs", ["CartPole-v1", "Pendulum-v1"],
        "Environments of the GAIL/AIRL comparison (gymnasium ids).")
_define(flags.DEFINE_list, "adv_methods", ["gail", "airl"], "Methods of the GAIL/AIRL comparison.")
_define(flags.DEFINE_integer, "adv_seeds", None, "Seeds per side (default 5, quick 1).")
_define(flags.DEFINE_integer, "adv_demos", None, "Expert episodes given to both (default 10, "
        "quick 2).")
_define(flags.DEFINE_integer, "adv_steps", None,
        "Environment steps per run, both sides, every environment of the GAIL/AIRL "
        "comparison (default 200000 CartPole-v1, 500000 Pendulum-v1; quick 16384, 32768).")
_define(flags.DEFINE_bool, "adv_absorbing", False,
        "Give both sides absorbing states instead of ending returns at terminal steps: "
        "irl_jax's library default, and in imitation a fixed horizon with seals' "
        "AbsorbAfterDoneWrapper (demonstrations padded the same way).")
_define(flags.DEFINE_string, "adv_workdir", None,
        "Where the GAIL/AIRL comparison writes its demonstrations, peer settings, "
        "results.json and curves.png (default: a fresh temporary folder).")


class PeerUnavailable(RuntimeError):
  """The imitation peer's Python cannot be used (missing, or imitation not installed)."""


class Problem(NamedTuple):
  """One benchmark problem: irl_jax's arrays and those written for the peer."""
  name: str
  mdp: TabularMDP           # float32, discount 1
  horizon: int
  features: jax.Array       # [S, A, S] one-hot state features
  expert_occupancy: jax.Array  # ρ_E[S, A] = Σ_{t<H} ρ_t, float32
  peer_arrays: dict         # NumPy arrays for the peer (see write_peer_problem)


# ---------------------------------------------------------------------------
# The MDP and the expert.


def cliff_world(width: int, height: int, *, fail_p: float = 0.3, rew_default: float = -1,
                rew_goal: float = 10, rew_cliff: float = -10):
  """seals 0.2.1's `CliffWorldEnv(use_xy_obs=False)` arrays, built the same way:
  `(transitions[S, 4, S], initial[S], reward[S], observations[S, S])`, state
  `row·width + col`, the four diagonal moves, a 30% chance of one more row up."""
  n = width * height
  trans = np.zeros((n, 4, n))
  reward = np.zeros((n,))
  obs = np.eye(n, dtype=np.float32)

  def clamp(row, col):
    return min(max(row, 0), height - 1) * width + min(max(col, 0), width - 1)

  for row in range(height):
    for col in range(width):
      s = clamp(row, col)
      if row > 0 or col == 0:
        reward[s] = rew_default
      elif col == width - 1:
        reward[s] = rew_goal
      else:
        reward[s] = rew_cliff
      for drow in (-1, 1):
        for dcol in (-1, 1):
          a = (drow + 1) + (dcol + 1) // 2
          trans[s, a, clamp(row + drow - 1, col + dcol)] += fail_p
          trans[s, a, clamp(row + drow, col + dcol)] += 1 - fail_p
  initial = np.zeros((n,))
  initial[0] = 1.0
  return trans, initial, reward, obs


def make_problem(width: int, height: int, horizon: int) -> Problem:
  """CliffWorld `width × height`, horizon `H`, discount 1, and its soft-optimal expert."""
  trans, initial, reward, obs = cliff_world(width, height)
  s, a = trans.shape[:2]
  mdp = make_mdp(trans, initial, 1.0)
  reward_sa = jnp.broadcast_to(jnp.asarray(reward, jnp.float32)[:, None], (s, a))
  policy = dp.finite_soft_value_iteration(reward_sa, mdp, horizon=horizon,
                                          temperature=1.0).policy
  per_step = np.asarray(dp.finite_occupancy(policy, mdp, horizon=horizon, per_step=True),
                        np.float64)
  rho_e = per_step.sum(0)
  # imitation's state visitation also counts the state reached after the last action.
  last = np.einsum("sa,sat->t", per_step[-1], trans)
  state_om = per_step.sum((0, 2)) + last
  features = jnp.broadcast_to(jnp.eye(s, dtype=jnp.float32)[:, None, :], (s, a, s))
  peer = {"transitions": trans, "initial": initial, "reward": reward, "observations": obs,
          "horizon": np.int64(horizon), "discount": np.float64(1.0),
          "expert_occupancy": rho_e, "expert_state_om": state_om,
          "cliff_width": np.int64(width), "cliff_height": np.int64(height)}
  return Problem(f"CliffWorld{width}x{height}", mdp, horizon, features,
                 jnp.asarray(rho_e, jnp.float32), peer)


# ---------------------------------------------------------------------------
# The irl_jax half.


def init_fn(num_features: int):
  bound = 1.0 / np.sqrt(num_features)
  return lambda key: jax.random.uniform(key, (num_features,), jnp.float32, -bound, bound)


def make_train(problem: Problem, *, steps: int, lr: float):
  """irl_jax's MCE IRL: `train(key, mdp, ρ_E) -> (w, log)` (`learners.make_mce_irl`)."""
  return learners.make_mce_irl(reward_fn=learners.linear_reward(problem.features),
                               init_fn=init_fn(problem.features.shape[-1]),
                               optimizer=optax.adam(lr), steps=steps, temperature=1.0,
                               horizon=problem.horizon)


def compile_and_time(fn, args, repeats: int):
  """`(compiled, compile_s, median run s, outputs)`; runs are timed after a warm-up."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return compiled, compile_s, statistics.median(times), out


def irl_jax_errors(problem: Problem, *, steps: int, lr: float, seed: int = 0) -> np.ndarray:
  """`‖ρ_θ − ρ_E‖₁` before each of `steps` Adam steps (index i: after i updates)."""
  train = jax.jit(make_train(problem, steps=steps, lr=lr))
  _, log = train(jax.random.key(seed), problem.mdp, problem.expert_occupancy)
  return np.asarray(log["occupancy_error"], np.float64)


def irl_jax_trajectory(problem: Problem, *, steps: int, lr: float,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`make_mce_irl`'s iterates: `(weights[steps, S], errors[steps])`, row i the weights
  after i Adam updates and their `‖ρ_θ − ρ_E‖₁` (the learner's `occupancy_error` log).

  The same step as `learners.make_mce_irl` (its `train` returns only the final
  weights), here also emitting each iterate's weights."""
  reward_fn = learners.linear_reward(problem.features)
  optimizer = optax.adam(lr)

  def train(key, mdp, expert_occupancy):
    params = init_fn(problem.features.shape[-1])(key)

    def step(carry, _):
      params, opt_state = carry

      def loss_fn(params):
        return irl.mce_irl_loss(reward_fn(params), expert_occupancy, mdp, temperature=1.0,
                                horizon=problem.horizon)

      (_, extras), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), (params,
                                                                 extras.occupancy_error)

    _, (weights, errors) = jax.lax.scan(step, (params, optimizer.init(params)), None,
                                        length=steps)
    return weights, errors

  weights, errors = jax.jit(train)(jax.random.key(seed), problem.mdp, problem.expert_occupancy)
  return np.asarray(weights), np.asarray(errors, np.float64)


@functools.partial(jax.jit, static_argnames="horizon")
def _state_visitation(mdp: TabularMDP, rewards, *, horizon: int):
  s, a = mdp.num_states, mdp.num_actions

  def one(r):
    policy = dp.finite_soft_value_iteration(jnp.broadcast_to(r[:, None], (s, a)), mdp,
                                            horizon=horizon, temperature=1.0).policy
    per_step = dp.finite_occupancy(policy, mdp, horizon=horizon, per_step=True)
    return per_step.sum((0, 2)) + jnp.einsum("sa,sat->t", per_step[-1], mdp.transitions)

  return jax.vmap(one)(rewards)


def state_visitation(problem: Problem, state_rewards) -> np.ndarray:
  """imitation's state visitation `Σ_{t≤H} D_t[S]` (H + 1 states, the final state
  included) of the soft-optimal policy of each state reward `r[..., S]`, by irl_jax's
  DP (float32): what `MCEIRL` compares with `demo_state_om`."""
  r = jnp.asarray(state_rewards, jnp.float32)
  out = _state_visitation(problem.mdp, r.reshape(-1, problem.mdp.num_states),
                          horizon=problem.horizon)
  return np.asarray(out, np.float64).reshape(r.shape)


def state_linf(problem: Problem, state_rewards) -> np.ndarray:
  """imitation's stopping quantity `max_s |Σ_{t≤H} D_t(s) − demo_state_om(s)|` per
  reward (irl_jax's DP; the peer computes it with imitation's own functions)."""
  om = state_visitation(problem, state_rewards)
  return np.max(np.abs(om - problem.peer_arrays["expert_state_om"]), axis=-1)


def reward_error(problem: Problem, state_reward) -> float:
  """irl_jax's occupancy error of a state reward `r[S]` (to re-check the peer's)."""
  s, a = problem.mdp.num_states, problem.mdp.num_actions
  r = jnp.broadcast_to(jnp.asarray(state_reward, jnp.float32)[:, None], (s, a))
  _, extras = irl.mce_irl_loss(r, problem.expert_occupancy, problem.mdp, temperature=1.0,
                               horizon=problem.horizon)
  return float(extras.occupancy_error)


# ---------------------------------------------------------------------------
# The peer half: its Python, its input file, its output.


def _imitation_version(python: str) -> str | None:
  code = "from importlib.metadata import version; print(version('imitation'))"
  try:
    out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                         timeout=120)
  except OSError:
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def create_peer_venv(venv: str) -> str:
  """`python -m venv VENV` and `pip install PEER_PINS`; returns its python."""
  print(f"[peers_imitation] creating the imitation peer venv at {venv}: pip downloads "
        f"{' '.join(PEER_PINS)} and their dependencies (several GB, once).",
        file=sys.stderr, flush=True)
  python = os.path.join(venv, "bin", "python")
  for cmd in ([sys.executable, "-m", "venv", venv],
              [python, "-m", "pip", "install", *PEER_PINS]):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
      tail = (out.stdout + out.stderr)[-3000:]
      raise PeerUnavailable(f"creating the imitation venv failed at `{' '.join(cmd)}` "
                            f"(exit {out.returncode}):\n{tail}")
  return python


def resolve_peer_python(peer_python: str | None, peer_venv: str, *,
                        create: bool) -> str | None:
  """The python that runs the peer: `peer_python` if given (it must exist and have
  imitation 1.0.1), else the venv's (created if missing and `create`), else None."""
  if peer_python:
    if not (os.path.isfile(peer_python) and os.access(peer_python, os.X_OK)):
      raise PeerUnavailable(
          f"--peer_python={peer_python} is not an executable file. Point it at the python "
          "of a virtual environment with imitation 1.0.1 (python3 -m venv DIR && "
          "DIR/bin/pip install imitation==1.0.1), or leave it unset to let the benchmark "
          "create one at --peer_venv.")
    version = _imitation_version(peer_python)
    if version is None:
      raise PeerUnavailable(f"--peer_python={peer_python} cannot import imitation; install "
                            "it there with `pip install imitation==1.0.1`.")
    if version != "1.0.1":
      print(f"[peers_imitation] warning: {peer_python} has imitation {version}, not 1.0.1.",
            file=sys.stderr)
    return peer_python
  python = os.path.join(peer_venv, "bin", "python")
  if os.path.isfile(python) and _imitation_version(python) is not None:
    return python
  return create_peer_venv(peer_venv) if create else None


def write_peer_problem(path: str, problem: Problem, *, init_weight, lr: float, max_iter: int,
                       linf_eps: float = LINF_EPS, grad_l2_eps: float = 1e-4) -> str:
  """Writes what the peer reads: the MDP, the expert and the run's settings."""
  np.savez(path, **problem.peer_arrays, init_weight=np.asarray(init_weight, np.float64),
           lr=np.float64(lr), max_iter=np.int64(max_iter), linf_eps=np.float64(linf_eps),
           grad_l2_eps=np.float64(grad_l2_eps))
  return path


def parse_peer_output(stdout: str) -> dict:
  """The peer's result: the JSON on its last `PEER_RESULT ` line."""
  lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
  if not lines:
    raise ValueError("the imitation peer printed no result line "
                     f"({RESULT_PREFIX.strip()} ...); its output ended with:\n{stdout[-2000:]}")
  result = json.loads(lines[-1][len(RESULT_PREFIX):])
  missing = {"versions", "time_s", "error", "iterations", "final_reward"} - set(result)
  if missing:
    raise ValueError(f"the imitation peer's result lacks {sorted(missing)}.")
  if not (len(result["time_s"]) == len(result["error"]) == result["iterations"]):
    raise ValueError("the imitation peer's result has per-iteration lists of unequal length.")
  return result


def run_peer(python: str, problem: Problem, *, init_weight, lr: float, max_iter: int,
             linf_eps: float = LINF_EPS) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    path = write_peer_problem(os.path.join(tmp, "problem.npz"), problem,
                              init_weight=init_weight, lr=lr, max_iter=max_iter,
                              linf_eps=linf_eps)
    # -I: the benchmarks folder (train.py, models.py, ...) must not shadow the peer's modules.
    out = subprocess.run([python, "-I", PEER_SCRIPT, path], capture_output=True, text=True,
                         cwd=tmp)
  if out.returncode != 0:
    raise RuntimeError(f"the imitation peer failed (exit {out.returncode}):\n"
                       f"{(out.stdout + out.stderr)[-3000:]}")
  return parse_peer_output(out.stdout)


def peer_state_linf(python: str, problem: Problem, state_rewards, *,
                    linf_eps: float = 1e-3) -> dict:
  """imitation's own `linf_delta` of irl_jax's iterates (`state_rewards[N, S]`, in
  order), computed in the peer by imitation's `mce_occupancy_measures` until the first
  at or below `linf_eps`: `{"state_linf": [...], "state_l1": [...], ...}`."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "eval.npz")
    np.savez(path, **problem.peer_arrays, linf_eps=np.float64(linf_eps),
             eval_rewards=np.asarray(state_rewards, np.float32))
    out = subprocess.run([python, "-I", PEER_SCRIPT, path], capture_output=True, text=True,
                         cwd=tmp)
  if out.returncode != 0:
    raise RuntimeError(f"the imitation peer's evaluation failed (exit {out.returncode}):\n"
                       f"{(out.stdout + out.stderr)[-3000:]}")
  lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
  if not lines:
    raise ValueError(f"the imitation peer's evaluation printed no result line:\n"
                     f"{out.stdout[-2000:]}")
  return json.loads(lines[-1][len(RESULT_PREFIX):])


# ---------------------------------------------------------------------------
# The benchmark.


def _first_at_or_below(errors, eps) -> int | None:
  hits = np.flatnonzero(np.asarray(errors) <= eps)
  return int(hits[0]) if hits.size else None


def _timed_run(problem: Problem, args, *, steps: int, lr: float, repeats: int):
  """`make_mce_irl` with `steps` steps: `(train, compile s, median run s, error log)`."""
  train = make_train(problem, steps=steps, lr=lr)
  _, compile_s, t, (_, log) = compile_and_time(train, args, repeats)
  return train, compile_s, t, np.asarray(log["occupancy_error"], np.float64)


def run(problem: Problem, *, lr: float, max_iter: int, seeds: int, repeats: int,
        peer_python: str | None, linf_eps: float = LINF_EPS) -> list[dict]:
  """Every measurement as a row `{"metric", "value", "unit", ...context}`."""
  s, a = problem.mdp.num_states, problem.mdp.num_actions
  # cpus_available: this process's CPU affinity, not a thread count read from JAX (JAX
  # documents none; see the module docstring).
  ctx = {"mdp": problem.name, "S": s, "A": a, "H": problem.horizon, "lr": lr,
         "cpu": cpu_model(), "cpu_count": os.cpu_count(),
         "cpus_available": len(os.sched_getaffinity(0)), "jax": jax.__version__,
         "device": jax.devices()[0].platform,
         "loadavg_1m": round(os.getloadavg()[0], 2)}
  if os.environ.get("XLA_FLAGS"):
    ctx["xla_flags"] = os.environ["XLA_FLAGS"]
  key = jax.random.key(0)
  w0 = init_fn(s)(key)
  args = (key, problem.mdp, problem.expert_occupancy)
  rows = []

  peer = None
  if peer_python:
    peer = run_peer(peer_python, problem, init_weight=w0, lr=lr, max_iter=max_iter,
                    linf_eps=linf_eps)
    ctx["torch_threads"] = peer["torch_threads"]
    ctx["peer_blas_threads"] = peer.get("blas_threads")
  if peer is None or not peer["iterations"]:
    train, compile_s, t_jax, errors = _timed_run(problem, args, steps=max_iter, lr=lr,
                                                 repeats=repeats)
    rows.append({"metric": "mce_irl_compile_s_irl_jax", "value": compile_s, "unit": "s",
                 "steps": max_iter, **ctx})
    rows.append({"metric": "mce_irl_step_time_irl_jax", "value": t_jax / max_iter,
                 "unit": "s", "steps": max_iter, **ctx})
    rows.append({"metric": "mce_irl_final_occupancy_error_irl_jax", "value": float(errors[-1]),
                 "unit": "L1", "updates": max_iter - 1, "initial_error": float(errors[0]),
                 **ctx})
    return rows + _seeds_row(train, args, seeds=seeds, steps=max_iter, repeats=repeats,
                             ctx=ctx)

  nan = float("nan")
  # imitation: ε is the common error it ends at; time to its first iteration at or
  # below ε, and to its own stopping quantity (state_linf ≤ linf_eps).
  n_peer = peer["iterations"]
  eps = peer["error"][-1]
  peer_idx = _first_at_or_below(peer["error"], eps)
  t_peer = peer["time_s"][peer_idx]
  peer_own = _first_at_or_below(peer["state_linf"], linf_eps)
  t_peer_own = peer["time_s"][peer_own] if peer_own is not None else nan

  # irl_jax: every iterate of a search run 3× imitation's length.
  budget = 3 * n_peer
  weights, search = irl_jax_trajectory(problem, steps=budget, lr=lr)
  idx = _first_at_or_below(search, eps)
  steps = budget if idx is None else idx + 1  # the last step reports error[idx]
  # imitation's stopping quantity of those iterates, by imitation's own code.
  evaluated = peer_state_linf(peer_python, problem, weights, linf_eps=linf_eps)
  jax_linf = np.asarray(evaluated["state_linf"], np.float64)
  own = _first_at_or_below(jax_linf, linf_eps)
  own_steps = budget if own is None else own + 1
  # The same quantity by irl_jax's DP (float32), as a check of the peer's evaluation.
  peer_check = float(np.max(np.abs(state_linf(problem, weights[:len(jax_linf)]) - jax_linf)))

  train, compile_s, t_jax, errors = _timed_run(problem, args, steps=steps, lr=lr,
                                               repeats=repeats)
  # The search run's iterates are the learner's: its error log is the timed run's.
  trajectory_check = float(np.max(np.abs(errors - search[:steps])))
  if own is None:
    t_own = nan
  elif own_steps == steps:
    t_own = t_jax
  else:
    _, _, t_own, _ = _timed_run(problem, args, steps=own_steps, lr=lr, repeats=repeats)
  t_jax_eps = t_jax if idx is not None else nan
  step_jax = t_jax / steps
  step_peer = peer["train_s"] / n_peer
  own_rule = f"state_linf<={linf_eps:g}"

  rows.append({"metric": "mce_irl_compile_s_irl_jax", "value": compile_s, "unit": "s",
               "steps": steps, **ctx})
  rows.append({"metric": "mce_irl_step_time_irl_jax", "value": step_jax, "unit": "s",
               "steps": steps, **ctx})
  rows.append({"metric": "mce_irl_step_time_imitation", "value": step_peer, "unit": "s",
               "iterations": n_peer, **ctx})
  rows.append({"metric": "mce_irl_step_time_ratio", "value": step_peer / step_jax,
               "unit": "ratio", "imitation_s_per_step": step_peer,
               "irl_jax_s_per_step": step_jax, **ctx})
  rows.append({"metric": "mce_irl_time_to_error_imitation", "value": t_peer, "unit": "s",
               "epsilon": eps, "iterations": peer_idx + 1,
               "stopped_by": peer["stopped_by"], "setup_s": peer["setup_s"], **ctx})
  rows.append({"metric": "mce_irl_time_to_error_irl_jax", "value": t_jax_eps, "unit": "s",
               "epsilon": eps, "steps": steps, "reached": idx is not None,
               "error": float(errors[-1]), "trajectory_check_abs_diff": trajectory_check,
               **ctx})
  rows.append({"metric": "mce_irl_step_count_ratio",
               "value": (peer_idx + 1) / steps if idx is not None else nan, "unit": "ratio",
               "epsilon": eps, "imitation_iterations": peer_idx + 1, "irl_jax_steps": steps,
               **ctx})
  rows.append({"metric": "mce_irl_speedup_vs_imitation", "value": t_peer / t_jax_eps,
               "unit": "ratio", "target": TARGET_SPEEDUP, "epsilon": eps,
               "epsilon_rule": "common error imitation reaches at its end",
               "imitation_s": t_peer, "imitation_iterations": peer_idx + 1,
               "irl_jax_s": t_jax_eps, "irl_jax_steps": steps, **ctx})
  rows.append({"metric": "mce_irl_speedup_end_to_end",
               "value": t_peer / (compile_s + t_jax_eps), "unit": "ratio", "epsilon": eps,
               "imitation_s": t_peer, "irl_jax_s": compile_s + t_jax_eps,
               "irl_jax_compile_s": compile_s, "irl_jax_steps": steps, **ctx})
  rows.append({"metric": "mce_irl_time_to_own_criterion_imitation", "value": t_peer_own,
               "unit": "s", "criterion": own_rule,
               "iterations": peer_own + 1 if peer_own is not None else None,
               "reached": peer_own is not None, "stopped_by": peer["stopped_by"], **ctx})
  rows.append({"metric": "mce_irl_time_to_own_criterion_irl_jax", "value": t_own, "unit": "s",
               "criterion": own_rule, "steps": own_steps, "reached": own is not None,
               "state_linf": float(jax_linf[-1]), "evaluated_by": "imitation",
               "irl_jax_dp_check_abs_diff": peer_check, **ctx})
  rows.append({"metric": "mce_irl_speedup_own_criterion", "value": t_peer_own / t_own,
               "unit": "ratio", "criterion": own_rule, "imitation_s": t_peer_own,
               "imitation_iterations": peer_own + 1 if peer_own is not None else None,
               "irl_jax_s": t_own, "irl_jax_steps": own_steps, **ctx})
  final_jax = float(search[n_peer - 1])
  cross = abs(reward_error(problem, peer["final_reward"]) - eps)
  rows.append({"metric": "mce_irl_final_occupancy_error_imitation", "value": eps,
               "unit": "L1", "updates": n_peer - 1,
               "state_linf": peer["state_linf"][-1], "state_l1": peer["state_l1"][-1],
               "cross_check_abs_diff": cross, "versions": peer["versions"],
               "checks": peer["checks"], **ctx})
  rows.append({"metric": "mce_irl_final_occupancy_error_irl_jax", "value": final_jax,
               "unit": "L1", "updates": n_peer - 1, "not_worse": final_jax <= eps, **ctx})
  return rows + _seeds_row(train, args, seeds=seeds, steps=steps, repeats=repeats, ctx=ctx)


def _seeds_row(train, args, *, seeds: int, steps: int, repeats: int, ctx: dict) -> list[dict]:
  batched = jax.vmap(train, in_axes=(0, None, None))
  keys = jax.random.split(jax.random.key(1), seeds)
  _, vcompile_s, t_vmap, (_, vlog) = compile_and_time(batched, (keys, *args[1:]), repeats)
  return [{"metric": "mce_irl_seeds_per_second", "value": seeds / t_vmap, "unit": "seeds/s",
           "seeds": seeds, "steps": steps, "compile_s": vcompile_s,
           "median_final_error": float(np.median(np.asarray(vlog["occupancy_error"])[:, -1])),
           **ctx}]


def _context(r: dict) -> str:
  keys = ("mdp", "env", "cpu", "cpus_available", "torch_threads", "loadavg_1m")
  return " ".join(f"{k}={r[k]}" for k in keys if k in r)


def format_rows(rows: list[dict]) -> str:
  lines = [f"{'metric':42s} {'value':>12s}  {'unit':8s}  target  | context"]
  for r in rows:
    target = ""
    if "target" in r:
      ok = r["value"] >= r["target"]
      target = f">= {r['target']:g} {'ok' if ok else 'MISSED'}"
      if "stretch" in r:
        target += f" (stretch {r['stretch']:g})"
    elif "not_worse" in r:
      target = "not worse " + ("ok" if r["not_worse"] else "MISSED")
      if "ci95_low" in r:
        target += f" [{r['ci95_low']:+.2f}, {r['ci95_high']:+.2f}]"
    extra = {k: r[k] for k in ("epsilon", "criterion", "steps", "iterations",
                               "imitation_iterations", "irl_jax_steps", "irl_jax_compile_s",
                               "reached", "seeds", "stopped_by", "cross_check_abs_diff",
                               "trajectory_check_abs_diff", "irl_jax_dp_check_abs_diff")
             if k in r}
    if "bound" in r:
      extra["bound"] = r["bound"]
    extra_s = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in extra.items())
    lines.append(f"{r['metric']:42s} {r['value']:12.4g}  {r['unit']:8s}  {target:16s} | "
                 f"{_context(r)} {extra_s}")
  return "\n".join(lines)


def main(argv):
  del argv
  quick = QUICK.value
  cfg = SMALL if quick else FULL
  fv = flags.FLAGS
  python = None
  if not fv.skip_peer:
    try:
      python = resolve_peer_python(fv.peer_python, fv.peer_venv, create=not quick)
    except PeerUnavailable as e:
      sys.exit(f"peers_imitation: {e}")
    if python is None:
      print(f"[peers_imitation] no imitation venv at {fv.peer_venv}: --quick runs only the "
            "irl_jax half (pass --peer_python, or run without --quick to create it).",
            file=sys.stderr)
  rows = []
  if fv.suite in ("all", "mce"):
    problem = make_problem(cfg["width"], cfg["height"], cfg["horizon"])
    rows += run(problem, lr=fv.mce_lr, max_iter=fv.mce_max_iter,
                seeds=fv.mce_seeds or cfg["seeds"], repeats=REPEATS.value or cfg["repeats"],
                peer_python=python)
  if fv.suite in ("all", "adversarial"):
    rows += run_adversarial(python, quick=quick, fv=fv)
  if JSON.value:
    for r in rows:
      print(json.dumps(r), flush=True)
    return
  print(format_rows(rows))
  for r in rows:
    if "versions" in r:
      print("imitation peer: " + " ".join(f"{k}={v}" for k, v in r["versions"].items())
            + f" torch_threads={r.get('torch_threads')} blas_threads="
            + f"{r.get('peer_blas_threads')} checks={json.dumps(r['checks'])}")


def run_adversarial(python: str | None, *, quick: bool, fv) -> list[dict]:
  """The GAIL/AIRL comparison (`peers_imitation_adversarial`); writes results.json and
  curves.png to `--adv_workdir` (a temporary folder when unset)."""
  settings = dict(adv.QUICK if quick else adv.FULL)
  if fv.adv_seeds is not None:
    settings["seeds"] = fv.adv_seeds
  if fv.adv_demos is not None:
    settings["demos"] = fv.adv_demos
  settings["absorbing"] = bool(fv.adv_absorbing)
  if settings["seeds"] < 1 or settings["demos"] < 1:
    sys.exit("peers_imitation: --adv_seeds and --adv_demos must be >= 1.")
  if fv.adv_steps is not None:
    if fv.adv_steps < 1:
      sys.exit(f"peers_imitation: --adv_steps must be >= 1 (got {fv.adv_steps}).")
    settings["budgets"] = {name: int(fv.adv_steps) for name in settings["budgets"]}
  workdir = fv.adv_workdir or tempfile.mkdtemp(prefix="irl_jax_adv_")
  os.makedirs(workdir, exist_ok=True)
  try:
    rows, curves = adv.run(peer_python=python, envs_=fv.adv_envs, methods=fv.adv_methods,
                           settings=settings, ctx=adv.context(), workdir=workdir,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
  except (adv.PeerFailed, ValueError) as e:
    sys.exit(f"peers_imitation: {e}")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"rows": rows, "curves": curves, "settings": settings}, f)
  adv.plot(curves, os.path.join(workdir, "curves.png"))
  print(f"[peers_imitation] GAIL/AIRL results and curves in {workdir}", file=sys.stderr)
  return rows


if __name__ == "__main__":
  run_main(main)
