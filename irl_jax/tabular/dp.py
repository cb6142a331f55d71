"""Dynamic programming on tabular MDPs: soft value iteration, policy evaluation,
occupancy measures and trajectory sampling.

Conventions (dimension letters in `irl_jax.tabular.mdp`): `reward[S, A]`,
temperature `α > 0`, `Q = r + γ P V`, `V(s) = α·logsumexp_a(Q(s, ·)/α)`,
`π(a|s) = exp((Q(s,a) − V(s))/α)`. The unnormalised discounted occupancy is
`ρ(s, a) = Σ_t γ^t Pr(s_t = s, a_t = a)`, which sums to `1/(1 − γ)` for an
infinite horizon and to `Σ_{t<T} γ^t` for a horizon `T`.

Every function is pure, jit-compatible and maps over MDPs, rewards and seeds
with `jax.vmap`. Finite horizons are static Python ints.

References:
  Ziebart, Bagnell & Dey (2010), Modeling interaction via the principle of
  maximum causal entropy. Haarnoja et al. (2017), Reinforcement learning with
  deep energy-based policies (soft Bellman backup).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.tabular.mdp import TabularMDP


class SoftSolution(NamedTuple):
  """Soft-optimal values and policy.

  Infinite horizon: `q[S, A]`, `v[S]`, `policy[S, A]`.
  Finite horizon `T`: `q[T, S, A]`, `v[T, S]`, `policy[T, S, A]` (index `t` is the
  step; `V_T = 0` is not stored).
  """
  q: jax.Array
  v: jax.Array
  policy: jax.Array


class Trajectories(NamedTuple):
  """Sampled trajectories: `states[N, T]`, `actions[N, T]`, `next_states[N, T]` (int32)."""
  states: jax.Array
  actions: jax.Array
  next_states: jax.Array


def _check_reward(fn: str, reward, mdp: TabularMDP, *, allow_time: bool = False):
  s, a = mdp.transitions.shape[-3:-1]
  shape = tuple(reward.shape)
  if shape[-2:] != (s, a) or (len(shape) != 2 and not (allow_time and len(shape) == 3)):
    want = "[S, A] or [T, S, A]" if allow_time else "[S, A]"
    raise ValueError(f"{fn}: `reward` must have shape {want} = [{s}, {a}] for "
                     f"transitions {tuple(mdp.transitions.shape)}, got {shape}.")
  if mdp.transitions.ndim != 3:
    raise ValueError(f"{fn}: expects one MDP (transitions [S, A, S]); map over a batch "
                     f"with jax.vmap. Got transitions {tuple(mdp.transitions.shape)}.")


def _dtype(*xs):
  dtype = jnp.float32
  for x in xs:
    dtype = jnp.promote_types(dtype, jnp.result_type(x))
  return dtype


def _soft_max(q, temperature):
  return temperature * jax.nn.logsumexp(q / temperature, axis=-1)


def _soft_max_and_policy(q, temperature):
  """`(V, π)` from one pass of exponentials: `V = α·logsumexp(Q/α)`, `π = softmax(Q/α)`.
  (The max is a constant shift: it carries no gradient.)"""
  z = q / temperature
  m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  e = jnp.exp(z - m)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return temperature * (m + jnp.log(total))[..., 0], e / total


def _soft_policy(q, temperature):
  # softmax(Q/α) = exp((Q − V)/α) with V = α·logsumexp(Q/α); normalising directly keeps
  # the rows summing to 1 in float32, where V's round-off is amplified by 1/α.
  return jax.nn.softmax(q / temperature, axis=-1)


def _unroll(horizon: int) -> int:
  # Short horizons unroll fully: the per-step work is a few small matmuls, so the
  # loop's own overhead dominates on CPU (about 2x on a 90-state MDP at T = 18).
  return horizon if horizon <= 32 else 8


def _default_tol(dtype):
  # float32: round-off in the backups is a few ulps of |V|, so a tighter bound
  # could not be certified at γ = 0.9 (1e-5 · 9 ≈ 100 ulps of headroom).
  return 1e-12 if dtype == jnp.float64 else 1e-5


def _require_discounted(fn: str, mdp) -> None:
  """An infinite horizon needs γ < 1; checked whenever the discount is concrete."""
  try:
    gamma = np.asarray(mdp.discount)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  if np.any(gamma >= 1):
    raise ValueError(f"{fn}: an infinite horizon needs discount < 1, got {gamma}; use a "
                     "finite horizon (the finite_* functions) for γ = 1.")


def _require_static(fn: str, name: str, value) -> None:
  """`value` (a temperature α) is a Python number, finite and > 0."""
  if isinstance(value, jax.core.Tracer):
    raise TypeError(f"{fn}: `{name}` must be a Python number (it is static: the implicit "
                    "gradient does not differentiate it), got a traced value. Close over "
                    "it instead of passing it through jit/vmap/grad.")
  _require_positive_temperature(fn, name, value)


def _require_positive_temperature(fn: str, name: str, value) -> None:
  """A concrete temperature must be finite and > 0 (0 divides by zero, a negative one
  turns the soft maximum into a soft minimum); traced ones are not checked."""
  if isinstance(value, jax.core.Tracer):
    return
  if not (np.all(np.isfinite(value)) and np.all(np.asarray(value) > 0)):
    raise ValueError(f"{fn}: `{name}` must be finite and > 0, got {value!r}.")


def _nan_unless_discounted(x, gamma):
  """`x`, or NaN where `γ ≥ 1`: under jit the discount is traced and `_require_discounted`
  cannot raise, so an infinite-horizon result for γ = 1 comes back NaN, never finite
  numbers from a fixed point that does not exist."""
  return jnp.where(jnp.asarray(gamma) < 1, x, jnp.nan)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _soft_fixed_point(reward, transitions, discount, v0, temperature, tol, max_iterations):
  dtype = reward.dtype

  def body(carry):
    v, _, i = carry
    v_new = _soft_max(reward + discount * transitions @ v, temperature)
    return v_new, jnp.max(jnp.abs(v_new - v)), i + 1

  def cond(carry):
    v, delta, i = carry
    # A γ-contraction's distance to the fixed point is at most δ·γ/(1 − γ): stop
    # when that bound is within tol·(1 + max|V|) (relative to the values' scale),
    # at the iteration cap, or on a non-finite value (no hang).
    bound = delta * discount / (1 - discount)
    return ((bound > tol * (1 + jnp.max(jnp.abs(v)))) & (i < max_iterations)
            & jnp.isfinite(delta))

  v, _, _ = jax.lax.while_loop(cond, body, (v0, jnp.array(jnp.finfo(dtype).max, dtype), 0))
  return v


def _soft_fixed_point_fwd(reward, transitions, discount, v0, temperature, tol,
                          max_iterations):
  v = _soft_fixed_point(reward, transitions, discount, v0, temperature, tol, max_iterations)
  return v, (reward, transitions, discount, v)


def _soft_fixed_point_bwd(temperature, tol, max_iterations, res, g):
  # Implicit differentiation of V = α·logsumexp((r + γPV)/α) at the fixed point:
  # (I − γP_π) dV = Σ_a π (dr + dγ·PV + γ dP V), so the VJP solves
  # (I − γP_π)ᵀ u = g and scatters u(s)·π(a|s) onto each input.
  reward, transitions, discount, v = res
  pv = transitions @ v
  q = reward + discount * pv
  pi = _soft_policy(q, temperature)
  p_pi = jnp.einsum("sa,sat->st", pi, transitions)
  eye = jnp.eye(v.shape[0], dtype=v.dtype)
  u = jnp.linalg.solve((eye - discount * p_pi).T, g)
  weights = u[:, None] * pi
  # The starting point does not move the fixed point: zero cotangent.
  return (weights, discount * weights[:, :, None] * v[None, None, :],
          jnp.sum(weights * pv).astype(jnp.result_type(discount)), jnp.zeros_like(v))


_soft_fixed_point.defvjp(_soft_fixed_point_fwd, _soft_fixed_point_bwd)


def soft_value_iteration(reward, mdp: TabularMDP, *, temperature: float = 1.0,
                         tol: float | None = None, max_iterations: int = 10_000,
                         init_v=None) -> SoftSolution:
  """Discounted soft value iteration to the fixed point.

  `V ← α·logsumexp((r + γ P V)/α)` from `V = 0` until the contraction bound on
  the distance to the fixed point, `max|ΔV|·γ/(1 − γ)`, is at most
  `tol·(1 + max|V|)` (`max_iterations` caps it; float32 cannot certify much
  below 1e-5, use float64 for γ ≥ 0.99). Gradients are exact at the fixed
  point by implicit differentiation (one `S × S` linear solve), not by
  unrolling the iteration: `∂(ν0ᵀV)/∂r = ρ_π`, the policy's occupancy.

  Args:
    reward: `[S, A]`.
    mdp: one MDP with `discount < 1`.
    temperature: `α > 0`, a Python number (static).
    tol: relative bound on the distance to the fixed point; default 1e-5
      (float32) or 1e-12 (float64).
    max_iterations: cap on the number of backups.
    init_v: optional `[S]` starting values (a warm start, e.g. the previous
      solution in an outer loop); zeros by default. It changes the number of
      backups, not the fixed point, and receives no gradient.

  Returns:
    `SoftSolution(q[S, A], v[S], policy[S, A])`.
  """
  _check_reward("soft_value_iteration", reward, mdp)
  _require_discounted("soft_value_iteration", mdp)
  _require_static("soft_value_iteration", "temperature", temperature)
  dtype = _dtype(reward, mdp.transitions)
  reward = reward.astype(dtype)
  p = mdp.transitions.astype(dtype)
  gamma = jnp.asarray(mdp.discount, dtype)
  tol = _default_tol(dtype) if tol is None else tol
  v0 = (jnp.zeros(reward.shape[0], dtype) if init_v is None
        else jax.lax.stop_gradient(jnp.asarray(init_v, dtype)))
  v = _soft_fixed_point(reward, p, gamma, v0, temperature, tol, max_iterations)
  q = reward + gamma * p @ v
  # One more backup makes V the soft maximum of the returned Q, so every policy row
  # sums to 1 exactly (the last iterate is within the tolerance, not exact).
  v = _soft_max(q, temperature)
  q, v = _nan_unless_discounted(q, gamma), _nan_unless_discounted(v, gamma)
  return SoftSolution(q, v, _soft_policy(q, temperature))


def finite_soft_value_iteration(reward, mdp: TabularMDP, *, horizon: int,
                                temperature: float = 1.0) -> SoftSolution:
  """Finite-horizon soft value iteration (`lax.scan` backwards, `V_T = 0`).

  `Q_{T−1} = r_{T−1}`, `Q_t = r_t + γ P V_{t+1}`, `V_t = α·logsumexp(Q_t/α)`,
  `π_t = exp((Q_t − V_t)/α)`. Differentiable by autodiff through the scan.

  Args:
    reward: `[S, A]` (stationary) or `[T, S, A]`.
    mdp: one MDP; `discount` may be 1.
    horizon: `T`, a static int ≥ 1.
    temperature: `α > 0`.

  Returns:
    `SoftSolution(q[T, S, A], v[T, S], policy[T, S, A])`.
  """
  _check_reward("finite_soft_value_iteration", reward, mdp, allow_time=True)
  if horizon < 1:
    raise ValueError(f"finite_soft_value_iteration: horizon must be >= 1, got {horizon}.")
  if reward.ndim == 3 and reward.shape[0] != horizon:
    raise ValueError(f"finite_soft_value_iteration: reward has {reward.shape[0]} steps, "
                     f"horizon is {horizon}.")
  _require_positive_temperature("finite_soft_value_iteration", "temperature", temperature)
  dtype = _dtype(reward, mdp.transitions)
  p = mdp.transitions.astype(dtype)
  gamma = jnp.asarray(mdp.discount, dtype)
  rewards = jnp.broadcast_to(reward.astype(dtype), (horizon, *reward.shape[-2:]))

  def backup(v_next, r_t):
    q = r_t + gamma * p @ v_next
    v, pi = _soft_max_and_policy(q, temperature)
    return v, (q, v, pi)

  _, (q, v, pi) = jax.lax.scan(backup, jnp.zeros(p.shape[0], dtype), rewards, reverse=True,
                             unroll=_unroll(horizon))
  return SoftSolution(q, v, pi)


def _check_policy(fn: str, policy, mdp: TabularMDP, *, allow_time: bool):
  s, a = mdp.transitions.shape[-3:-1]
  shape = tuple(policy.shape)
  if shape[-2:] != (s, a) or (len(shape) != 2 and not (allow_time and len(shape) == 3)):
    want = "[S, A] or [T, S, A]" if allow_time else "[S, A]"
    raise ValueError(f"{fn}: `policy` must have shape {want} = [{s}, {a}], got {shape}.")


def state_transition_matrix(policy, mdp: TabularMDP) -> jax.Array:
  """`P_π[S, S'] = Σ_a π(a|s) P(s'|s, a)`."""
  _check_policy("state_transition_matrix", policy, mdp, allow_time=False)
  return jnp.einsum("sa,sat->st", policy, mdp.transitions)


def policy_evaluation(policy, reward, mdp: TabularMDP, *,
                      temperature: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Exact values of a stationary policy by one linear solve.

  `V = (I − γ P_π)^{-1} r_π` with `r_π(s) = Σ_a π(a|s)(r(s,a) − α log π(a|s))`
  (the entropy bonus only when `temperature = α > 0`), `Q = r + γ P V`.

  Returns:
    `(q[S, A], v[S])`.
  """
  _check_reward("policy_evaluation", reward, mdp)
  _check_policy("policy_evaluation", policy, mdp, allow_time=False)
  _require_discounted("policy_evaluation", mdp)
  dtype = _dtype(reward, policy, mdp.transitions)
  policy, reward = policy.astype(dtype), reward.astype(dtype)
  p = mdp.transitions.astype(dtype)
  gamma = jnp.asarray(mdp.discount, dtype)
  r_pi = jnp.sum(policy * reward, -1)
  if temperature:
    r_pi = r_pi - temperature * jnp.sum(jax.scipy.special.xlogy(policy, policy), -1)
  p_pi = jnp.einsum("sa,sat->st", policy, p)
  v = _nan_unless_discounted(
      jnp.linalg.solve(jnp.eye(p.shape[0], dtype=dtype) - gamma * p_pi, r_pi), gamma)
  return reward + gamma * p @ v, v


def occupancy(policy, mdp: TabularMDP) -> jax.Array:
  """Discounted occupancy `ρ(s, a) = d(s) π(a|s)`, `d = (I − γ P_πᵀ)^{-1} ν0`.

  One linear solve; needs `γ < 1`. `Σ ρ = 1/(1 − γ)`.

  Returns:
    `ρ[S, A]`.
  """
  _check_policy("occupancy", policy, mdp, allow_time=False)
  _require_discounted("occupancy", mdp)
  dtype = _dtype(policy, mdp.transitions)
  policy = policy.astype(dtype)
  p_pi = jnp.einsum("sa,sat->st", policy, mdp.transitions.astype(dtype))
  eye = jnp.eye(p_pi.shape[0], dtype=dtype)
  d = jnp.linalg.solve(eye - jnp.asarray(mdp.discount, dtype) * p_pi.T,
                       mdp.initial.astype(dtype))
  return _nan_unless_discounted(d[:, None] * policy, mdp.discount)


def finite_occupancy(policy, mdp: TabularMDP, *, horizon: int,
                     per_step: bool = False) -> jax.Array:
  """Finite-horizon occupancy by the forward recursion.

  `D_0 = ν0`, `D_{t+1}(s') = Σ_{s,a} D_t(s) π_t(a|s) P(s'|s,a)`,
  `ρ_t(s, a) = γ^t D_t(s) π_t(a|s)`.

  Args:
    policy: `[S, A]` (stationary) or `[T, S, A]`.
    mdp: one MDP.
    horizon: `T`.
    per_step: return `ρ_t[T, S, A]` instead of `ρ = Σ_t ρ_t [S, A]`.
  """
  _check_policy("finite_occupancy", policy, mdp, allow_time=True)
  if policy.ndim == 3 and policy.shape[0] != horizon:
    raise ValueError(f"finite_occupancy: policy has {policy.shape[0]} steps, horizon "
                     f"is {horizon}.")
  dtype = _dtype(policy, mdp.transitions)
  p = mdp.transitions.astype(dtype)
  gamma = jnp.asarray(mdp.discount, dtype)
  policies = jnp.broadcast_to(policy.astype(dtype), (horizon, *policy.shape[-2:]))

  def forward(carry, pi_t):
    d, scale = carry
    rho_t = scale * d[:, None] * pi_t
    d_next = (d[:, None] * pi_t).reshape(-1) @ p.reshape(-1, p.shape[-1])
    return (d_next, scale * gamma), rho_t

  _, rho = jax.lax.scan(forward, (mdp.initial.astype(dtype), jnp.ones((), dtype)), policies,
                        unroll=_unroll(horizon))
  return rho if per_step else rho.sum(0)


def expected_return(policy, reward, mdp: TabularMDP, *, temperature: float = 0.0,
                    horizon: int | None = None) -> jax.Array:
  """`J(π) = ⟨ρ_π, r − α log π⟩`: the discounted return from `ν0` (with the entropy
  bonus when `temperature > 0`), infinite horizon by default or over `horizon`
  steps. A stationary `policy[S, A]`, or `[T, S, A]` with a horizon."""
  _check_reward("expected_return", reward, mdp)
  dtype = _dtype(policy, reward, mdp.transitions)
  if horizon is None:
    rho = occupancy(policy, mdp)
    log_pi = jnp.log(jnp.maximum(policy.astype(dtype), jnp.finfo(dtype).tiny))
  else:
    rho = finite_occupancy(policy, mdp, horizon=horizon, per_step=True)
    pol = jnp.broadcast_to(policy.astype(dtype), rho.shape)
    log_pi = jnp.log(jnp.maximum(pol, jnp.finfo(dtype).tiny))
  bonus = -temperature * log_pi if temperature else 0.0
  return jnp.sum(rho * (reward.astype(dtype) + bonus))


def sample_trajectories(key, policy, mdp: TabularMDP, *, horizon: int,
                        num_trajectories: int) -> Trajectories:
  """Samples `N` trajectories of `T` steps: `s_0 ∼ ν0`, `a_t ∼ π_t(·|s_t)`,
  `s_{t+1} ∼ P(·|s_t, a_t)` (`lax.scan` over time, vectorised over trajectories).

  Args:
    key: a PRNG key.
    policy: `[S, A]` or `[T, S, A]`.
    horizon: `T`.
    num_trajectories: `N`.
  """
  _check_policy("sample_trajectories", policy, mdp, allow_time=True)
  policies = jnp.broadcast_to(policy, (horizon, *policy.shape[-2:]))
  log_p = jnp.log(jnp.maximum(mdp.transitions, 0.0))
  log_pi = jnp.log(jnp.maximum(policies, 0.0))
  k0, key = jax.random.split(key)
  s0 = jax.random.categorical(k0, jnp.log(jnp.maximum(mdp.initial, 0.0)),
                              shape=(num_trajectories,))

  def step(s, inputs):
    k, lp = inputs
    ka, ks = jax.random.split(k)
    a = jax.random.categorical(ka, lp[s])
    s_next = jax.random.categorical(ks, log_p[s, a])
    return s_next, (s, a, s_next)

  keys = jax.random.split(key, horizon)
  _, (s, a, s_next) = jax.lax.scan(step, s0, (keys, log_pi))
  return Trajectories(*(x.T.astype(jnp.int32) for x in (s, a, s_next)))


def empirical_occupancy(states, actions, *, num_states: int, num_actions: int,
                        discount, where=None, per_step: bool = False) -> jax.Array:
  """`ρ_E(s, a) = (1/N) Σ_i Σ_t γ^t 1[s_t^i = s, a_t^i = a]` from `states[N, T]`,
  `actions[N, T]`.

  `where[N, T]` (optional) marks real steps; `N` counts the rows with at least
  one. The demonstrations' discount and horizon must match the DP's they are
  compared with. `per_step=True` returns `ρ_t[T, S, A]`.
  """
  states, actions = jnp.asarray(states), jnp.asarray(actions)
  if states.shape != actions.shape or states.ndim != 2:
    raise ValueError(f"empirical_occupancy: states and actions must both be [N, T]; got "
                     f"{tuple(states.shape)} and {tuple(actions.shape)}.")
  n, t = states.shape
  dtype = _dtype(jnp.asarray(discount))
  where = jnp.ones((n, t), bool) if where is None else jnp.asarray(where, bool)
  weight = jnp.asarray(discount, dtype) ** jnp.arange(t, dtype=dtype)[None, :] * where
  rows = jnp.maximum(jnp.sum(jnp.any(where, 1)), 1)
  onehot = (jax.nn.one_hot(states, num_states, dtype=dtype)[..., :, None]
            * jax.nn.one_hot(actions, num_actions, dtype=dtype)[..., None, :])
  rho = jnp.einsum("nt,ntsa->tsa", weight, onehot) / rows
  return rho if per_step else rho.sum(0)
