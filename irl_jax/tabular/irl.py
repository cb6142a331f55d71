"""Tabular IRL objectives: maximum-causal-entropy IRL, IQ-Learn and behaviour
cloning, as pure functions of arrays and an MDP.

Dimension letters are those of `irl_jax.tabular.mdp`; `B` counts expert
transitions. Rewards are `[S, A]` tables produced by any function of
parameters (`features @ w` for linear rewards, a network for neural ones);
`jax.grad` through these objectives reaches the parameters by the chain rule.

References:
  Ziebart, Bagnell & Dey (2010), Modeling interaction via the principle of
  maximum causal entropy. Garg et al. (2021), IQ-Learn: inverse soft-Q learning
  for imitation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.tabular import dp
from irl_jax.tabular.mdp import TabularMDP


class MCEExtras(NamedTuple):
  """Diagnostics of `mce_irl_loss`.

  Attributes:
    policy: the soft-optimal policy under the reward, `[S, A]` (or `[T, S, A]`).
    occupancy: its occupancy `ρ_θ[S, A]`.
    occupancy_error: `‖ρ_θ − ρ_E‖₁`, scalar.
    values: the soft values `V[S]` (infinite horizon; a warm start for the next
      call) or `V_0[S]` (finite horizon).

  The extras carry no gradient (they are diagnostics).
  """
  policy: jax.Array
  occupancy: jax.Array
  occupancy_error: jax.Array
  values: jax.Array


def _check_occupancy(fn, occ, mdp, *, allow_time=False):
  s, a = mdp.transitions.shape[-3:-1]
  if tuple(occ.shape[-2:]) != (s, a) or occ.ndim not in ((2, 3) if allow_time else (2,)):
    want = "[S, A] or [T, S, A]" if allow_time else "[S, A]"
    raise ValueError(f"{fn}: `expert_occupancy` must have shape {want} = [{s}, {a}], got "
                     f"{tuple(occ.shape)}.")


def mce_irl_loss(reward, expert_occupancy, mdp: TabularMDP, *, temperature: float = 1.0,
                 horizon: int | None = None, init_v=None) -> tuple[jax.Array, MCEExtras]:
  """Maximum-causal-entropy IRL as a loss on a reward table.

  `L(r) = (ν0ᵀ V_r − ⟨ρ_E, r⟩) / α`, equal to the negative expert
  log-likelihood `−⟨ρ_E, log π_r⟩` whenever `ρ_E` is an occupancy measure of the
  MDP, and its dual otherwise. Its gradient is
  the occupancy mismatch

      ∂L/∂r = (ρ_θ − ρ_E) / α,

  so linear rewards `r = Φ w` give feature-expectation matching
  `Φᵀ(ρ_θ − ρ_E)/α`. Infinite horizon (`horizon=None`, `γ < 1`): soft value
  iteration to the fixed point, differentiated implicitly. Finite horizon: the
  `lax.scan` recursion and the forward occupancy, with a custom VJP that returns
  the occupancy mismatch (and the exact gradients with respect to `P`, `ν0` and
  `γ`) without a backward scan; `ρ_E` summed over steps.

  Args:
    reward: `[S, A]`.
    expert_occupancy: `ρ_E[S, A]`, with the same discount and horizon as the DP
      (e.g. `dp.empirical_occupancy` of the demonstrations).
    mdp: one MDP.
    temperature: `α > 0`, a Python number (static).
    horizon: `None` for the discounted infinite horizon, or `T`.
    init_v: optional warm start `[S]` for the infinite-horizon soft value
      iteration (e.g. the previous step's `MCEExtras.values`).

  Returns:
    `(loss, MCEExtras)`; the loss is a scalar.
  """
  _check_occupancy("mce_irl_loss", expert_occupancy, mdp)
  dp._require_positive_temperature("mce_irl_loss", "temperature", temperature)
  if reward.ndim != 2:
    raise ValueError("mce_irl_loss: `reward` must be a stationary [S, A] table, got shape "
                     f"{tuple(reward.shape)} (a per-step reward needs per-step occupancies).")
  if horizon is None:
    sol = dp.soft_value_iteration(reward, mdp, temperature=temperature, init_v=init_v)
    v0 = sol.v
    rho = dp.occupancy(jax.lax.stop_gradient(sol.policy), mdp)
    dtype = v0.dtype
    expert = expert_occupancy.astype(dtype)
    loss = (jnp.dot(mdp.initial.astype(dtype), v0)
            - jnp.sum(expert * reward.astype(dtype))) / temperature
    policy = sol.policy
  else:
    if horizon < 1:
      raise ValueError(f"mce_irl_loss: horizon must be >= 1, got {horizon}.")
    dp._require_static("mce_irl_loss", "temperature", temperature)
    dtype = jnp.promote_types(jnp.float32, jnp.promote_types(reward.dtype,
                                                             mdp.transitions.dtype))
    expert = expert_occupancy.astype(dtype)
    loss, policy, rho, v0 = _finite_mce(
        reward.astype(dtype), expert, mdp.transitions.astype(dtype),
        mdp.initial.astype(dtype), jnp.asarray(mdp.discount, dtype), horizon, temperature)
  extras = MCEExtras(policy, rho, jnp.sum(jnp.abs(rho - expert)), v0)
  return loss, jax.tree.map(jax.lax.stop_gradient, extras)


def _finite_mce_parts(reward, expert, transitions, initial, discount, horizon, temperature):
  mdp = TabularMDP(transitions, initial, discount)
  sol = dp.finite_soft_value_iteration(reward, mdp, horizon=horizon, temperature=temperature)
  rho_t = dp.finite_occupancy(sol.policy, mdp, horizon=horizon, per_step=True)
  loss = (jnp.dot(initial, sol.v[0]) - jnp.sum(expert * reward)) / temperature
  return loss, sol, rho_t


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _finite_mce(reward, expert, transitions, initial, discount, horizon, temperature):
  loss, sol, rho_t = _finite_mce_parts(reward, expert, transitions, initial, discount,
                                       horizon, temperature)
  return loss, sol.policy, rho_t.sum(0), sol.v[0]


def _finite_mce_fwd(reward, expert, transitions, initial, discount, horizon, temperature):
  loss, sol, rho_t = _finite_mce_parts(reward, expert, transitions, initial, discount,
                                       horizon, temperature)
  out = (loss, sol.policy, rho_t.sum(0), sol.v[0])
  return out, (reward, expert, transitions, discount, rho_t, sol.v)


def _finite_mce_bwd(horizon, temperature, res, cotangents):
  # The gradient of ν0ᵀV_0 with respect to Q_t(s, a) is the occupancy ρ_t(s, a) (γ^t
  # included), so one forward pass gives every gradient: no backward scan. Only the
  # loss is differentiated; the other outputs are diagnostics (stopped by the caller).
  reward, expert, transitions, discount, rho_t, v = res
  g = cotangents[0] / temperature
  v_next = jnp.concatenate([v[1:], jnp.zeros_like(v[:1])], 0)            # V_{t+1}
  rho = rho_t.sum(0)
  d_transitions = g * discount * jnp.einsum("tsa,tu->sau", rho_t, v_next)
  d_discount = g * jnp.sum(rho_t * jnp.einsum("sau,tu->tsa", transitions, v_next))
  return (g * (rho - expert), -g * reward, d_transitions, g * v[0],
          d_discount.astype(jnp.result_type(discount)))


_finite_mce.defvjp(_finite_mce_fwd, _finite_mce_bwd)


def expert_log_likelihood(reward, expert_occupancy, mdp: TabularMDP, *,
                          temperature: float = 1.0, horizon: int | None = None) -> jax.Array:
  """`⟨ρ_E, log π_r⟩`: the discounted causal log-likelihood of the expert under the
  soft-optimal policy of `reward`.

  Infinite horizon: `expert_occupancy[S, A]`. Finite horizon: per-step
  `expert_occupancy[T, S, A]` (`dp.finite_occupancy(..., per_step=True)` or
  `dp.empirical_occupancy(..., per_step=True)`), since `π_t` depends on `t`.
  """
  _check_occupancy("expert_log_likelihood", expert_occupancy, mdp,
                   allow_time=horizon is not None)
  if horizon is None:
    sol = dp.soft_value_iteration(reward, mdp, temperature=temperature)
    log_pi = (sol.q - sol.v[:, None]) / temperature
  else:
    if expert_occupancy.ndim != 3 or expert_occupancy.shape[0] != horizon:
      raise ValueError("expert_log_likelihood: with a horizon, `expert_occupancy` must be "
                       f"per step, [T={horizon}, S, A]; got {tuple(expert_occupancy.shape)}.")
    sol = dp.finite_soft_value_iteration(reward, mdp, horizon=horizon,
                                         temperature=temperature)
    log_pi = (sol.q - sol.v[..., None]) / temperature
  return jnp.sum(expert_occupancy.astype(log_pi.dtype) * log_pi)


def soft_values(q, *, temperature: float = 1.0) -> jax.Array:
  """`V(s) = α·logsumexp_a(Q(s, a)/α)` over the last axis, in at least float32."""
  return dp._soft_max(q.astype(jnp.promote_types(jnp.float32, q.dtype)), temperature)


class IQLearnExtras(NamedTuple):
  """Per-transition diagnostics of `iq_learn_control`, each `[B]`.

  Attributes:
    reward: the implied reward `r̂ = Q(s, a) − γ(1−d) V(s')`.
    value_term: `V(s) − γ(1−d) V(s')`.
  """
  reward: jax.Array
  value_term: jax.Array


def iq_learn_control(q_tm1, v_tm1, v_t, discount_t, *, chi2_coef: float = 0.5,
                     where=None) -> tuple[jax.Array, IQLearnExtras]:
  """IQ-Learn (χ² divergence) per expert transition, for control.

  `ℓ = −r̂ + (V(s) − γ(1−d) V(s')) + r̂²/(4c)`, `r̂ = Q(s, a) − γ(1−d) V(s')`;
  the mean over expert transitions is the offline IQ-Learn loss with the value
  term on expert states. For the online variant, add the mean of
  `IQLearnExtras.value_term` computed on policy transitions (the value term
  then averages expert and policy states). Gradients flow through `V(s')` (no
  target network).

  Args:
    q_tm1: `[B]`, `Q(s, a)` of the expert action.
    v_tm1: `[B]`, `V(s)`.
    v_t: `[B]`, `V(s')`.
    discount_t: `[B]`, `γ(1 − done)`.
    chi2_coef: `c > 0`; the regulariser weight is `1/(4c)`.
    where: optional `[B]` bool; masked transitions give 0.

  Returns:
    `(loss[B], IQLearnExtras)`.
  """
  shapes = {tuple(jnp.shape(x)) for x in (q_tm1, v_tm1, v_t, discount_t)}
  if len(shapes) != 1 or len(next(iter(shapes))) != 1:
    raise ValueError("iq_learn_control: q_tm1, v_tm1, v_t and discount_t must all be [B]; "
                     f"got {[tuple(jnp.shape(x)) for x in (q_tm1, v_tm1, v_t, discount_t)]}.")
  if chi2_coef <= 0:
    raise ValueError(f"iq_learn_control: chi2_coef must be > 0, got {chi2_coef}.")
  dtype = jnp.float32
  for x in (q_tm1, v_tm1, v_t, discount_t):
    dtype = jnp.promote_types(dtype, jnp.result_type(x))
  q_tm1, v_tm1, v_t, discount_t = (jnp.asarray(x, dtype) for x in
                                   (q_tm1, v_tm1, v_t, discount_t))
  r_hat = q_tm1 - discount_t * v_t
  value_term = v_tm1 - discount_t * v_t
  loss = -r_hat + value_term + r_hat ** 2 / (4 * chi2_coef)
  if where is not None:
    where = jnp.asarray(where, bool)
    loss, r_hat, value_term = (jnp.where(where, x, 0) for x in (loss, r_hat, value_term))
  return loss, IQLearnExtras(r_hat, value_term)


def tabular_iq_learn_loss(q, states, actions, next_states, dones, *, discount,
                          temperature: float = 1.0, chi2_coef: float = 0.5,
                          where=None) -> tuple[jax.Array, IQLearnExtras]:
  """`iq_learn_control` on a Q-table `q[S, A]` and expert transitions `[B]`.

  `V = α·logsumexp(Q/α)`; `dones[B]` marks transitions into a terminal state
  (their next value is not bootstrapped); a trajectory cut by the horizon is
  not done.
  """
  v = soft_values(q, temperature=temperature)
  discount_t = discount * (1.0 - jnp.asarray(dones, v.dtype))
  return iq_learn_control(q[states, actions].astype(v.dtype), v[states], v[next_states],
                          discount_t, chi2_coef=chi2_coef, where=where)


def iq_learn_rewards(q, mdp: TabularMDP, *, temperature: float = 1.0) -> jax.Array:
  """The reward a Q-table implies under the MDP's dynamics:
  `r(s, a) = Q(s, a) − γ Σ_s' P(s'|s, a) V(s')`, `[S, A]`."""
  v = soft_values(q, temperature=temperature)
  return q.astype(v.dtype) - mdp.discount * mdp.transitions.astype(v.dtype) @ v


def behaviour_cloning_loss(logits, states, actions, *, where=None) -> jax.Array:
  """`−log softmax(logits[s])[a]` per demonstrated pair: `logits[S, A]`,
  `states[B]`, `actions[B]`; returns `[B]` (0 where masked)."""
  logits = logits.astype(jnp.promote_types(jnp.float32, logits.dtype))
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits[states], -1),
                             jnp.asarray(actions)[:, None], -1)[:, 0]
  return nll if where is None else jnp.where(jnp.asarray(where, bool), nll, 0)
