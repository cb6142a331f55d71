"""Float64 NumPy reference implementations for the tabular tests.

Written from the mathematics (soft Bellman equations, occupancy measures,
IQ-Learn's χ² objective), deliberately in plain loops and dense linear algebra,
and independently of `irl_jax.tabular`:

  Q = r + γ P V,  V(s) = α·logsumexp_a(Q(s, ·)/α),  π = exp((Q − V)/α);
  finite horizon: V_T = 0, Q_t = r_t + γ P V_{t+1};
  d = (I − γ P_πᵀ)^{-1} ν0,  ρ(s, a) = d(s) π(a|s);
  D_0 = ν0, D_{t+1}(s') = Σ_{s,a} D_t(s) π_t(a|s) P(s'|s,a), ρ_t = γ^t D_t π_t.
"""

from __future__ import annotations

import functools

import jax
import numpy as np


def logsumexp(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def soft_max(q, alpha):
  return alpha * logsumexp(np.asarray(q, np.float64) / alpha, axis=-1)


def softmax(logits, axis=-1):
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------
# Random test problems.


def random_mdp(seed, num_states, num_actions, *, sparsity=0.0, concentration=1.0):
  """`(P[S, A, S], ν0[S])` with Dirichlet rows; `sparsity` zeroes that fraction of
  the next-state entries (keeping at least one per row)."""
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
  if sparsity:
    mask = rng.random(p.shape) >= sparsity
    keep = rng.integers(num_states, size=p.shape[:2])
    mask[np.arange(num_states)[:, None], np.arange(num_actions)[None, :], keep] = True
    p = p * mask
    p = p / p.sum(-1, keepdims=True)
  nu0 = rng.dirichlet(np.ones(num_states))
  return p, nu0


def random_policy(seed, num_states, num_actions, *, horizon=None):
  rng = np.random.default_rng(seed)
  shape = (num_states,) if horizon is None else (horizon, num_states)
  return rng.dirichlet(np.ones(num_actions), size=shape)


# ---------------------------------------------------------------------------
# Dynamic programming.


def soft_value_iteration(r, p, gamma, alpha, *, iterations=None):
  """Discounted soft VI by plain iteration from V = 0; `(q, v, π)`.

  By default runs enough backups for the contraction to shrink the initial error
  by γ^K ≤ 1e-18 (at most 100 000), so the result is the fixed point to round-off.
  """
  r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
  if iterations is None:
    iterations = 2 if gamma == 0 else min(int(np.log(1e-18) / np.log(gamma)) + 2, 100_000)
  v = np.zeros(r.shape[0])
  for _ in range(iterations):
    v = soft_max(r + gamma * np.einsum("sat,t->sa", p, v), alpha)
  q = r + gamma * np.einsum("sat,t->sa", p, v)
  v = soft_max(q, alpha)
  return q, v, np.exp((q - v[:, None]) / alpha)


def soft_vi_error_bound(gamma, v, tol):
  """Bound on `max|V − V*|` when soft VI stops at `max|ΔV| ≤ tol·(1 + max|V|)`: the
  γ-contraction gives `|V_k − V*| ≤ γ/(1 − γ)·|V_k − V_{k−1}|` (plus round-off)."""
  scale = 1 + np.max(np.abs(v))
  return gamma / (1 - gamma) * tol * scale + 1e-14 * scale


def finite_soft_value_iteration(r, p, gamma, alpha, horizon):
  """`(q[T, S, A], v[T, S], π[T, S, A])`, `V_T = 0`; `r` is `[S, A]` or `[T, S, A]`."""
  r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
  num_states, num_actions = p.shape[:2]
  rs = np.broadcast_to(r, (horizon, num_states, num_actions))
  q = np.zeros((horizon, num_states, num_actions))
  v = np.zeros((horizon, num_states))
  v_next = np.zeros(num_states)
  for t in reversed(range(horizon)):
    q[t] = rs[t] + gamma * np.einsum("sat,t->sa", p, v_next)
    v[t] = soft_max(q[t], alpha)
    v_next = v[t]
  return q, v, np.exp((q - v[..., None]) / alpha)


def state_transition_matrix(pi, p):
  num_states, num_actions = pi.shape
  out = np.zeros((num_states, num_states))
  for s in range(num_states):
    for a in range(num_actions):
      out[s] += pi[s, a] * p[s, a]
  return out


def policy_evaluation(pi, r, p, gamma, alpha=0.0):
  """`(q, v)` of a stationary policy: `V = (I − γ P_π)^{-1} r_π`, `r_π` with the
  entropy bonus `−α Σ_a π log π` when `alpha > 0` (0 log 0 = 0)."""
  pi, r = np.asarray(pi, np.float64), np.asarray(r, np.float64)
  r_pi = np.sum(pi * r, -1)
  if alpha:
    safe = np.where(pi > 0, pi, 1.0)
    r_pi = r_pi - alpha * np.sum(np.where(pi > 0, pi * np.log(safe), 0.0), -1)
  p_pi = state_transition_matrix(pi, p)
  v = np.linalg.solve(np.eye(len(r_pi)) - gamma * p_pi, r_pi)
  return r + gamma * np.einsum("sat,t->sa", p, v), v


def occupancy(pi, p, nu0, gamma):
  """Discounted `ρ(s, a) = d(s) π(a|s)`, `d = (I − γ P_πᵀ)^{-1} ν0`."""
  p_pi = state_transition_matrix(pi, p)
  d = np.linalg.solve(np.eye(len(nu0)) - gamma * p_pi.T, nu0)
  return d[:, None] * pi


def finite_occupancy(pi, p, nu0, gamma, horizon, *, per_step=False):
  """Forward recursion; `pi` is `[S, A]` or `[T, S, A]`."""
  num_states, num_actions = p.shape[:2]
  pis = np.broadcast_to(pi, (horizon, num_states, num_actions))
  rho = np.zeros((horizon, num_states, num_actions))
  d = np.asarray(nu0, np.float64)
  for t in range(horizon):
    rho[t] = gamma ** t * d[:, None] * pis[t]
    d_next = np.zeros(num_states)
    for s in range(num_states):
      for a in range(num_actions):
        d_next += d[s] * pis[t, s, a] * p[s, a]
    d = d_next
  return rho if per_step else rho.sum(0)


def empirical_occupancy(states, actions, num_states, num_actions, gamma, where=None,
                        per_step=False):
  """`(1/N) Σ_i Σ_t γ^t 1[s_t^i = s, a_t^i = a]`; `N` counts rows with a real step."""
  states, actions = np.asarray(states), np.asarray(actions)
  n, horizon = states.shape
  where = np.ones((n, horizon), bool) if where is None else np.asarray(where, bool)
  rho = np.zeros((horizon, num_states, num_actions))
  for i in range(n):
    for t in range(horizon):
      if where[i, t]:
        rho[t, states[i, t], actions[i, t]] += gamma ** t
  rows = max(int(np.sum(np.any(where, 1))), 1)
  rho /= rows
  return rho if per_step else rho.sum(0)


# ---------------------------------------------------------------------------
# IRL objectives.


def iq_learn_per_transition(q_sa, v_s, v_next, discount_t, chi2_coef, where=None):
  """`ℓ = −r̂ + (V(s) − γ(1−d) V(s')) + r̂²/(4c)`, `r̂ = Q(s, a) − γ(1−d) V(s')`,
  one transition at a time; `(loss, r̂, value_term)`, zeros where masked."""
  b = len(q_sa)
  loss, r_hat, value = np.zeros(b), np.zeros(b), np.zeros(b)
  for i in range(b):
    if where is not None and not where[i]:
      continue
    r_hat[i] = q_sa[i] - discount_t[i] * v_next[i]
    value[i] = v_s[i] - discount_t[i] * v_next[i]
    loss[i] = -r_hat[i] + value[i] + r_hat[i] ** 2 / (4 * chi2_coef)
  return loss, r_hat, value


def tabular_iq_learn(q, states, actions, next_states, dones, gamma, alpha, chi2_coef,
                     where=None):
  q = np.asarray(q, np.float64)
  v = soft_max(q, alpha)
  disc = np.array([0.0 if d else gamma for d in np.asarray(dones)])
  return iq_learn_per_transition(q[states, actions], v[states], v[next_states], disc,
                                 chi2_coef, where)


def iq_learn_rewards(q, p, gamma, alpha):
  """`r(s, a) = Q(s, a) − γ Σ_s' P(s'|s, a) V(s')`, `V = α·logsumexp(Q/α)`."""
  v = soft_max(q, alpha)
  return np.asarray(q, np.float64) - gamma * np.einsum("sat,t->sa", p, v)


# ---------------------------------------------------------------------------
# Test helper (not a reference): shared compiled functions.


@functools.cache
def jitted(fn, **static):
  """`jax.jit(partial(fn, **static))`, one per `(fn, static settings)` for the whole
  test session, so test modules that call a solver on the same shapes share one
  compilation. (Calling the solvers eagerly re-traces their `while_loop`s on every
  call.)"""
  return jax.jit(functools.partial(fn, **static))
