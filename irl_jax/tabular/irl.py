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

  `L(r) = (ν0ᵀ V_r − ⟨ρ_E, r⟩) / α`, the negative expert log-likelihood
  `−⟨ρ_E, log π_r⟩` whenever `ρ_E` is an occupancy measure of the MDP (it then
  differs from it by a constant in `r`), and its dual otherwise. Its gradient is
  the occupancy mismatch

      ∂L/∂r = (ρ_θ − ρ_E) / α,

  so linear rewards `r = Φ w` give feature-expectation matching
  `Φᵀ(ρ_θ − ρ_E)/α`. Infinite horizon (`horizon=None`, `γ < 1`): soft value
  iteration to the fixed point, differentiated implicitly. Finite horizon: the
  `lax.scan` recursion, differentiated by autodiff; `ρ_E` summed over steps.

  Args:
    reward: `[S, A]`.
    expert_occupancy: `ρ_E[S, A]`, with the same discount and horizon as the DP
      (e.g. `dp.empirical_occupancy` of the demonstrations).
    mdp: one MDP.
    temperature: `α > 0`.
    horizon: `None` for the discounted infinite horizon, or `T`.
    init_v: optional warm start `[S]` for the infinite-horizon soft value
      iteration (e.g. the previous step's `MCEExtras.values`).

  Returns:
    `(loss, MCEExtras)`; the loss is a scalar.
  """
  _check_occupancy("mce_irl_loss", expert_occupancy, mdp)
  if horizon is None:
    sol = dp.soft_value_iteration(reward, mdp, temperature=temperature, init_v=init_v)
    v0 = sol.v
    rho = dp.occupancy(jax.lax.stop_gradient(sol.policy), mdp)
  else:
    sol = dp.finite_soft_value_iteration(reward, mdp, horizon=horizon,
                                         temperature=temperature)
    v0 = sol.v[0]
    rho = dp.finite_occupancy(jax.lax.stop_gradient(sol.policy), mdp, horizon=horizon)
  dtype = v0.dtype
  expert = expert_occupancy.astype(dtype)
  loss = (jnp.dot(mdp.initial.astype(dtype), v0)
          - jnp.sum(expert * reward.astype(dtype))) / temperature
  return loss, MCEExtras(sol.policy, rho, jnp.sum(jnp.abs(rho - expert)),
                         jax.lax.stop_gradient(v0))


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
  q = q.astype(jnp.promote_types(jnp.float32, q.dtype))
  return temperature * jax.nn.logsumexp(q / temperature, axis=-1)


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
