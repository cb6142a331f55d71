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
`J(π) = dp.expected_return(π, mdp.reward, mdp, horizon=T)`, and training stops
at the first iteration with `J(π) ≥ threshold·J_E`, where `J_E` is the
demonstrations' mean true return. It also stops once `max_interactions`
interactions have been spent (or after `max_iterations` outer iterations): such
a run is *censored*, and its output says so (`censored = True`, `interactions`
the count when it stopped, at least the cap) rather than passing it off as a
solve.

Sampling: all the randomness of an outer iteration is one uniform draw from its
key, turned into starts, actions and next states by inverse-CDF sampling (cheaper to
compile than a threefry call per draw).

Everything is pure and jit-compatible; `train` maps over seeds, MDPs (same
`S`, `A`, `F`), demonstrations and `α` with `jax.vmap` (a vmapped
`lax.while_loop` runs until its last member stops; finished members are frozen).

Reference:
  Swamy, Choudhury, Bagnell, Wu (2023), Inverse reinforcement learning without
  reinforcement learning (ICML).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

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
    solved: bool, `J(π) ≥ threshold·J_E` was reached.
    censored: bool, stopped by `max_interactions` (or `max_iterations`) first.
    interactions: int32, environment steps when it stopped (at the solving
      iteration, or the count that passed the cap).
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
  """Per outer iteration, each `[max_iterations]` (entries past the stop are
  `NaN` / `-1`): `returns` (`J(π)` after the iteration), `interactions`
  (cumulative), `expert_starts` (episodes of the iteration that began at an
  expert state)."""
  returns: jax.Array
  interactions: jax.Array
  expert_starts: jax.Array


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
  uniform `u`), clamped to `K − 1` against round-off."""
  k = probs.shape[-1]
  return jnp.minimum(jnp.sum(jnp.cumsum(probs, -1) <= u[..., None], -1), k - 1).astype(jnp.int32)


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
               max_iterations: int | None = None):
  """IRL by moment matching with expert resets (see the module docstring).

  Args:
    horizon: `T` (static); demonstrations must have `T` steps.
    max_interactions: the cap on environment steps; a run that reaches it unsolved
      is censored.
    episodes_per_iteration: Q-learning episodes per outer iteration.
    cost_rollouts: greedy-policy rollouts from `ν0` per outer iteration for the
      cost player's moments (counted as interactions).
    epsilon: ε of the ε-greedy behaviour policy.
    learning_rate: Q-learning step size.
    eta: FTRL step size `η`.
    threshold: stop at `J(π) ≥ threshold·J_E`.
    cost_player: `"ftrl"` (no-regret, all past learner samples) or
      `"best_response"` (only the current policy's samples).
    max_iterations: the log length and a second cap; default enough iterations to
      reach `max_interactions` at the fewest steps an iteration can take.

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
      solved = ret >= threshold * j_e
      log = ResetsLog(log.returns.at[i].set(ret), log.interactions.at[i].set(count),
                      log.expert_starts.at[i].set(jnp.sum(from_expert)))
      return key, q, gap_sum, count, i + 1, solved, ret, w, log

    def cond(carry):
      _, _, _, count, i, solved, _, _, _ = carry
      return ~solved & (count < max_interactions) & (i < max_iterations)

    q0 = jnp.zeros((horizon, num_states, num_actions), dtype)
    f = features.shape[-1]
    log0 = ResetsLog(jnp.full(max_iterations, jnp.nan, dtype),
                     jnp.full(max_iterations, -1, jnp.int32),
                     jnp.full(max_iterations, -1, jnp.int32))
    init = (key, q0, jnp.zeros(f, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
            jnp.zeros((), bool), jnp.zeros((), dtype), jnp.zeros(f, dtype), log0)
    _, q, _, count, i, solved, ret, w, log = jax.lax.while_loop(cond, iteration, init)
    out = ResetsOutput(solved=solved, censored=~solved, interactions=count, iterations=i,
                       final_return=ret, expert_return=j_e, q=q, cost_weights=w)
    return out, log

  return train
