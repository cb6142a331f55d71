"""Inverse RL without RL by expert resets (Swamy et al. 2023), tabular and
finite-horizon: a no-regret cost player against a Q-learning policy player whose
episodes start, with probability `α`, at states drawn from the demonstrations.

The game. The learner minimises a cost `c_w(s, a) = φ(s, a)·w` with weights in
the box `w ∈ [−1, 1]^F` (`φ = mdp.features[S, A, F]`; the one-hot
`"state_action"` features make `c` a table `c[S, A] ∈ [−1, 1]`). The moments of
a set of trajectories are `μ = (1/N) Σ_n Σ_t γ^t φ(s_t^n, a_t^n)` (`[F]`).

Cost player (follow-the-regularised-leader). Before outer iteration `i` it
rolls the learner's current greedy policy `π_i` out `cost_rollouts` times from
`ν0` (these transitions are learner interactions and are counted), estimates its
moments `μ̂_i` and plays

    w_i = argmin_{w ∈ [−1,1]^F}  Σ_{j≤i} −⟨μ̂_j − μ_E, w⟩ + ‖w‖²/(2η)
        = clip(η·Σ_{j≤i} (μ̂_j − μ_E), −1, 1)

(the linear losses of all past learner samples, an ℓ2 regulariser; the box and
the regulariser are separable, so the minimiser is the coordinate-wise clip of
the unconstrained one). The cost is positive where the learner has visited more
than the expert and negative where less. `cost_player="best_response"` replaces
the sum over `j ≤ i` by the current term `j = i` (a best response to `π_i` up to
the clip), for comparison.

Policy player (tabular Q-learning on the reward `−c_w`). A non-stationary table
`Q[T, S, A]` (zero-initialised, kept across outer iterations). Each outer
iteration runs `episodes_per_iteration` episodes. An episode starts, with
probability `α`, at an expert state: a demonstration `n` and a step `t` drawn
uniformly, the episode starting in `demos.states[n, t]` at time `t` (on the
combination lock the state is its level, so the time index matches it);
otherwise at `s_0 ∼ ν0` at time 0. It then runs to the horizon: at time `τ`,
ε-greedy in `Q[τ, s]` (greedy ties broken uniformly at random), a transition
sampled from `P(·|s, a)`, and the update

    Q[τ, s, a] ← Q[τ, s, a] + lr·(−c(s, a) + γ·max_a' Q[τ + 1, s', a'] − Q[τ, s, a])

(`Q[T] = 0`). An episode from time `t` takes `T − t` environment steps.

Interactions count every transition the learner executes: the Q-learning
steps and the cost player's rollouts (the expert's demonstrations and the exact
evaluation below are not interactions).

Evaluation and stopping. After each outer iteration the greedy policy (uniform
over each `argmax_a Q[t, s, a]`) is evaluated exactly on the true reward,
`J(π) = dp.expected_return(π, mdp.reward, mdp, horizon=T)`, against `J_E`, the
demonstrations' mean true return. The threshold is normalised by `|J_E|`
(`reached_threshold`):

    J(π) ≥ J_E − (1 − threshold)·|J_E|,

which is `J(π) ≥ threshold·J_E` when `J_E ≥ 0` and stays meaningful when
`J_E < 0` (where `threshold·J_E` would lie above `J_E`; with `J_E = 0` it asks
for `J(π) ≥ 0`).

A run is *solved* at the end of the first outer iteration at which the threshold
is reached with at most `max_interactions` interactions spent in all. It is
*censored* otherwise: it stops as soon as the count reaches the cap (or after
`max_iterations` outer iterations) unsolved, and an iteration that reaches the
threshold only by taking the count past the cap does not count as a solve. The
output says which (`solved`, `censored = ~solved`; `interactions` the count when
it stopped, at least the cap for a censored run) rather than passing a censored
run off as a solve.

Sampling: all the randomness of an outer iteration is one uniform draw from its
key, turned into starts, actions and next states by inverse-CDF sampling (cheaper to
compile than a threefry call per draw).

Everything is pure and jit-compatible; `train` maps over seeds, MDPs (same
`S`, `A`, `F`), demonstrations and `α` with `jax.vmap` (a vmapped
`lax.while_loop` runs until its last member stops; finished members are frozen).

Logging. The per-iteration log has a fixed length, `log_length` entries (default
256) on a geometric grid of iterations: every iteration early on, then ever
sparser, each entry holding the latest iteration that falls into it (so the
stopping iteration is always logged). A vmapped `while_loop` re-selects its whole
carry (the log included) every iteration, so a log with one entry per possible
iteration (`log_length=None`) makes the run time grow with `max_iterations`.

Reference:
  Swamy, Choudhury, Bagnell, Wu (2023), Inverse reinforcement learning without
  reinforcement learning (ICML).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.tabular import dp
from irl_jax.tabular.mdp import TabularMDP

__all__ = [
    "EpisodeTrace",
    "ResetsLog",
    "ResetsOutput",
    "ftrl_weights",
    "greedy_policy",
    "make_train",
    "moments",
    "q_learning_episode",
    "reached_threshold",
    "restrict_features",
    "rollouts",
    "sample_start",
]


class EpisodeTrace(NamedTuple):
  """One Q-learning episode over the full horizon, each `[T]`: `states`, `actions`
  and `active` (bool: the step was executed; steps before the start time are
  not). `active.sum()` is the number of interactions."""
  states: jax.Array
  actions: jax.Array
  active: jax.Array


class ResetsOutput(NamedTuple):
  """What `train` returns.

  Attributes:
    solved: bool, the threshold (`reached_threshold`) was reached at the end of an
      outer iteration with at most `max_interactions` interactions spent.
    censored: bool, `~solved`: stopped by `max_interactions` (or `max_iterations`)
      first, including a run that reached the threshold only in the iteration
      that took it past the cap.
    interactions: int32, environment steps when it stopped (at the solving
      iteration, or the count that reached or passed the cap).
    iterations: int32, outer iterations run.
    final_return: `J(π)` of the last greedy policy.
    expert_return: `J_E`, the demonstrations' mean true return.
    q: `[T, S, A]`, the final Q-table.
    cost_weights: `[F]`, the cost player's last weights `w`.
  """
  solved: jax.Array
  censored: jax.Array
  interactions: jax.Array
  iterations: jax.Array
  final_return: jax.Array
  expert_return: jax.Array
  q: jax.Array
  cost_weights: jax.Array


class ResetsLog(NamedTuple):
  """Logged outer iterations, each `[L]` (`L ≤ log_length`; see "Logging" in the
  module docstring; entries past the stop are `NaN` / `-1`): `iterations` (the
  number of outer iterations run at the entry, increasing), `returns` (`J(π)` after
  that iteration), `interactions` (cumulative), `expert_starts` (episodes of that
  iteration that began at an expert state)."""
  iterations: jax.Array
  returns: jax.Array
  interactions: jax.Array
  expert_starts: jax.Array


def reached_threshold(ret, expert_return, threshold):
  """`J(π) ≥ J_E − (1 − threshold)·|J_E|`: `ret` is within a fraction
  `1 − threshold` of `|J_E|` below the expert's return (`J(π) ≥ threshold·J_E`
  when `J_E ≥ 0`; for `J_E < 0` the plain product would demand more than the
  expert). Computed as `threshold·J_E` for `J_E ≥ 0` and `(2 − threshold)·J_E`
  for `J_E < 0`."""
  bound = jnp.where(expert_return >= 0, threshold * expert_return,
                    (2.0 - threshold) * expert_return)
  return ret >= bound


def log_slots(max_iterations: int, log_length: int | None) -> np.ndarray:
  """The log entry of each outer iteration, `[max_iterations]` int32: the
  identity when `log_length` is None or at least `max_iterations`; otherwise a
  geometric grid of at most `log_length` kept iterations `k_0 = 0 < k_1 < …` (every
  iteration while the grid is denser than 1) and iteration `i` written to entry
  `j` with `k_j ≤ i < k_{j+1}` (non-decreasing, steps of 0 or 1, so no entry is
  skipped)."""
  if log_length is None or max_iterations <= log_length:
    return np.arange(max_iterations, dtype=np.int32)
  kept = np.unique(np.round(np.geomspace(1, max_iterations, log_length)).astype(np.int64) - 1)
  return (np.searchsorted(kept, np.arange(max_iterations), side="right") - 1).astype(np.int32)


def restrict_features(features, state_mask) -> jax.Array:
  """`features[S, A, F]` with every state outside `state_mask[S]` (bool) zeroed:
  a cost class that sees only those states (e.g. only the last level of a
  combination lock, where the true reward sits)."""
  return features * jnp.asarray(state_mask, features.dtype)[:, None, None]


def moments(features, states, actions, *, discount=1.0) -> jax.Array:
  """`μ = (1/N) Σ_n Σ_t γ^t φ(s_t^n, a_t^n)` from `states[N, T]`, `actions[N, T]`."""
  t = states.shape[-1]
  weights = jnp.asarray(discount, features.dtype) ** jnp.arange(t, dtype=features.dtype)
  phi = features[states, actions]  # [N, T, F]
  return jnp.einsum("t,ntf->f", weights, phi) / states.shape[0]


def ftrl_weights(moment_gap_sum, *, eta: float) -> jax.Array:
  """FTRL with the ℓ2 regulariser `‖w‖²/(2η)` on `[−1, 1]^F` over the linear
  losses `−⟨μ̂_j − μ_E, w⟩`: `clip(η·Σ_j (μ̂_j − μ_E), −1, 1)`."""
  return jnp.clip(eta * moment_gap_sum, -1.0, 1.0)


def greedy_policy(q) -> jax.Array:
  """`π[..., S, A]` uniform over `argmax_a q[..., s, a]` (ties share the mass)."""
  best = q == jnp.max(q, axis=-1, keepdims=True)
  return best / jnp.sum(best, axis=-1, keepdims=True)


def _inverse_cdf(probs, u):
  """The index `i` with `cdf[i − 1] ≤ u < cdf[i]` (a draw from `probs[..., K]` given a
  uniform `u ∈ [0, 1)`). The cumulative sum is divided by its last value, so it ends
  at exactly 1 even when the float sum of `probs` falls short of 1, and the index
  always has positive probability (never a trailing zero-probability index)."""
  k = probs.shape[-1]
  cdf = jnp.cumsum(probs, -1)
  cdf = cdf / cdf[..., -1:]
  return jnp.minimum(jnp.sum(cdf <= u[..., None], -1), k - 1).astype(jnp.int32)


def sample_start(u, mdp: TabularMDP, demos: dp.Trajectories, alpha):
  """`(state, time, from_expert)` of one episode's start from four uniforms `u[4]`:
  with probability `alpha` a uniformly drawn demonstration step `(n, t)`, i.e.
  `demos.states[n, t]` at time `t`; otherwise `s_0 ∼ ν0` at time 0."""
  n, t = demos.states.shape
  from_expert = u[0] < alpha
  row = jnp.minimum(jnp.floor(u[1] * n), n - 1).astype(jnp.int32)
  time = jnp.minimum(jnp.floor(u[2] * t), t - 1).astype(jnp.int32)
  s0 = _inverse_cdf(mdp.initial, u[3])
  state = jnp.where(from_expert, demos.states[row, time], s0).astype(jnp.int32)
  return state, jnp.where(from_expert, time, 0).astype(jnp.int32), from_expert


def q_learning_episode(key, q, reward, mdp: TabularMDP, state, start, *, epsilon: float,
                       learning_rate: float):
  """One ε-greedy Q-learning episode from `state` at time `start` to the horizon
  `T = q.shape[0]`, updating `q[T, S, A]` online on `reward[S, A]`.

  Returns:
    `(q, EpisodeTrace)`; the trace's `active.sum() = T − start` interactions.
  """
  return _episode(jax.random.uniform(key, (q.shape[0], 4)), q, reward, mdp, state, start,
                  epsilon=epsilon, learning_rate=learning_rate)


def _episode(u, q, reward, mdp, state, start, *, epsilon, learning_rate):
  horizon, _, num_actions = q.shape
  gamma = jnp.asarray(mdp.discount, q.dtype)

  def step(carry, inputs):
    q, s = carry
    t, u_t = inputs
    active = t >= start
    q_ts = q[t, s]
    best = q_ts == jnp.max(q_ts)
    pick = jnp.floor(u_t[2] * jnp.sum(best))  # uniform among the tied maxima
    greedy = jnp.argmax(jnp.cumsum(best) > pick).astype(jnp.int32)
    explore = jnp.minimum(jnp.floor(u_t[1] * num_actions), num_actions - 1).astype(jnp.int32)
    a = jnp.where(u_t[0] < epsilon, explore, greedy)
    s_next = _inverse_cdf(mdp.transitions[s, a], u_t[3])
    v_next = jnp.where(t + 1 < horizon, jnp.max(q[jnp.minimum(t + 1, horizon - 1), s_next]),
                       0.0)
    old = q[t, s, a]
    new = old + learning_rate * (reward[s, a] + gamma * v_next - old)
    q = q.at[t, s, a].set(jnp.where(active, new, old))
    return (q, jnp.where(active, s_next, s)), (s, a, active)

  (q, _), (states, actions, active) = jax.lax.scan(
      step, (q, jnp.asarray(state, jnp.int32)), (jnp.arange(horizon), u))
  return q, EpisodeTrace(states, actions, active)


def rollouts(u, policy, mdp: TabularMDP):
  """`(states[N, T], actions[N, T])` of `N` rollouts of `policy[T, S, A]` from `ν0`,
  driven by uniforms `u[N, T + 1, 2]` (inverse-CDF sampling; row 0 draws `s_0`)."""
  s0 = _inverse_cdf(mdp.initial, u[:, 0, 0])

  def step(s, inputs):
    pi_t, u_t = inputs
    a = _inverse_cdf(pi_t[s], u_t[:, 0])
    s_next = _inverse_cdf(mdp.transitions[s, a], u_t[:, 1])
    return s_next, (s, a)

  _, (states, actions) = jax.lax.scan(step, s0, (policy, jnp.swapaxes(u[:, 1:], 0, 1)))
  return states.T, actions.T


def make_train(*, horizon: int, max_interactions: int, episodes_per_iteration: int = 8,
               cost_rollouts: int = 1, epsilon: float = 0.1, learning_rate: float = 0.5,
               eta: float = 1.0, threshold: float = 0.95, cost_player: str = "ftrl",
               max_iterations: int | None = None, log_length: int | None = 256):
  """IRL by moment matching with expert resets (see the module docstring).

  Args:
    horizon: `T` (static); demonstrations must have `T` steps.
    max_interactions: the cap on environment steps; a run is solved only if it
      reaches the threshold with at most this many spent, and censored otherwise.
    episodes_per_iteration: Q-learning episodes per outer iteration.
    cost_rollouts: greedy-policy rollouts from `ν0` per outer iteration for the
      cost player's moments (counted as interactions).
    epsilon: ε of the ε-greedy behaviour policy.
    learning_rate: Q-learning step size.
    eta: FTRL step size `η`.
    threshold: stop at `J(π) ≥ J_E − (1 − threshold)·|J_E|` (`reached_threshold`).
    cost_player: `"ftrl"` (no-regret, all past learner samples) or
      `"best_response"` (only the current policy's samples).
    max_iterations: a second cap; default enough iterations to reach
      `max_interactions` at the fewest steps an iteration can take.
    log_length: the most log entries (static; `log_slots`); None logs every
      iteration (`max_iterations` entries, slower under `vmap`).

  Returns:
    `train(key, mdp, demos, alpha) -> (ResetsOutput, ResetsLog)`: `mdp` holds the
    cost features (`mdp.features[S, A, F]`) and the true reward (`mdp.reward`,
    read only by the evaluation); `demos` are the expert's `dp.Trajectories`
    (`[N, T]`); `alpha ∈ [0, 1]` is the expert-reset probability (traced, so one
    compiled program maps over it).
  """
  if cost_player not in ("ftrl", "best_response"):
    raise ValueError(f"make_train: cost_player must be 'ftrl' or 'best_response', got "
                     f"{cost_player!r}.")
  for name, value in (("horizon", horizon), ("max_interactions", max_interactions),
                      ("episodes_per_iteration", episodes_per_iteration),
                      ("cost_rollouts", cost_rollouts)):
    if int(value) < 1:
      raise ValueError(f"make_train: {name} must be >= 1, got {value}.")
  min_per_iteration = episodes_per_iteration + cost_rollouts * horizon
  rollout_size, episode_size = cost_rollouts * (horizon + 1) * 2, (horizon + 1) * 4
  if max_iterations is None:
    max_iterations = math.ceil(max_interactions / min_per_iteration) + 1
  if log_length is not None and int(log_length) < 2:
    raise ValueError(f"make_train: log_length must be >= 2 or None, got {log_length}.")
  slots = log_slots(max_iterations, log_length)
  num_slots = int(slots[-1]) + 1

  def train(key, mdp: TabularMDP, demos: dp.Trajectories, alpha):
    if mdp.features is None or mdp.reward is None:
      raise ValueError("make_train: train needs mdp.features (the cost class) and "
                       "mdp.reward (for the evaluation).")
    if demos.states.shape[-1] != horizon:
      raise ValueError(f"make_train: demonstrations have {demos.states.shape[-1]} steps, "
                       f"the horizon is {horizon}.")
    features = mdp.features
    dtype = features.dtype
    num_states, num_actions = mdp.num_states, mdp.num_actions
    mu_e = moments(features, demos.states, demos.actions, discount=mdp.discount)
    discounts = jnp.asarray(mdp.discount, dtype) ** jnp.arange(horizon, dtype=dtype)
    j_e = jnp.mean(jnp.sum(mdp.reward[demos.states, demos.actions] * discounts, -1))

    def iteration(carry):
      key, q, gap_sum, count, i, _, _, _, log = carry
      # One key per iteration; every draw below is a uniform (inverse-CDF sampling).
      key, k_iter = jax.random.split(key)
      u = jax.random.uniform(k_iter, (rollout_size + episodes_per_iteration * episode_size,))
      u_cost = u[:rollout_size].reshape(cost_rollouts, horizon + 1, 2)
      u_rl = u[rollout_size:].reshape(episodes_per_iteration, horizon + 1, 4)
      # Cost player: moments of the current greedy policy from ν0, FTRL over all of them.
      states, actions = rollouts(u_cost, greedy_policy(q), mdp)
      gap = moments(features, states, actions, discount=mdp.discount) - mu_e
      gap_sum = gap_sum + gap if cost_player == "ftrl" else gap
      w = ftrl_weights(gap_sum, eta=eta)
      reward = -(features @ w)

      # Policy player: Q-learning episodes, each reset to an expert state w.p. α.
      def episode(q, u_ep):
        s, t, from_expert = sample_start(u_ep[0], mdp, demos, alpha)
        q, trace = _episode(u_ep[1:], q, reward, mdp, s, t, epsilon=epsilon,
                            learning_rate=learning_rate)
        return q, (jnp.sum(trace.active), from_expert)

      q, (steps, from_expert) = jax.lax.scan(episode, q, u_rl)
      count = count + jnp.sum(steps) + cost_rollouts * horizon
      ret = dp.expected_return(greedy_policy(q), mdp.reward, mdp, horizon=horizon)
      # A solve counts only within the budget: an iteration that passes the cap is censored.
      solved = reached_threshold(ret, j_e, threshold) & (count <= max_interactions)
      j = jnp.asarray(slots)[i]
      log = ResetsLog(log.iterations.at[j].set(i + 1), log.returns.at[j].set(ret),
                      log.interactions.at[j].set(count),
                      log.expert_starts.at[j].set(jnp.sum(from_expert)))
      return key, q, gap_sum, count, i + 1, solved, ret, w, log

    def cond(carry):
      _, _, _, count, i, solved, _, _, _ = carry
      return ~solved & (count < max_interactions) & (i < max_iterations)

    q0 = jnp.zeros((horizon, num_states, num_actions), dtype)
    f = features.shape[-1]
    log0 = ResetsLog(jnp.full(num_slots, -1, jnp.int32), jnp.full(num_slots, jnp.nan, dtype),
                     jnp.full(num_slots, -1, jnp.int32), jnp.full(num_slots, -1, jnp.int32))
    init = (key, q0, jnp.zeros(f, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
            jnp.zeros((), bool), jnp.zeros((), dtype), jnp.zeros(f, dtype), log0)
    _, q, _, count, i, solved, ret, w, log = jax.lax.while_loop(cond, iteration, init)
    out = ResetsOutput(solved=solved, censored=~solved, interactions=count, iterations=i,
                       final_return=ret, expert_return=j_e, q=q, cost_weights=w)
    return out, log

  return train
