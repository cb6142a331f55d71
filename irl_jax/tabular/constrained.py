"""Constrained MDPs with entropy regularisation: the forward problem, its inverse,
and the identifiability measures of constrained IRL.

Occupancies here are *normalised*, `μ = (1 − γ) ρ` (a distribution over state-
action pairs), and constraints read `⟨μ, Ψ_k⟩ ≤ b_k` with `costs Ψ[S, A, K]` and
`budgets b[K]` from the `TabularMDP`. The forward problem is

    max_{μ ∈ M_P, ⟨μ, Ψ⟩ ≤ b}  ⟨r, μ⟩/(1−γ) − β Ω(μ),

`Ω(μ) = ⟨μ, log π_μ⟩/(1−γ)` the negative causal entropy, equivalently
`max_π E[Σ_t γ^t (r − β log π)]` under the constraints. Its Lagrangian dual
`g(ξ) = ν0ᵀ V_{r − Ψξ} + ⟨ξ, b⟩/(1−γ)` over `ξ ≥ 0` is smooth because of the
entropy term; for fixed `ξ` the inner maximisation is solved exactly by soft
value iteration (the fixed point of entropy-regularised policy iteration), and
the duals take projected gradient steps
`ξ ← max(0, ξ + η (⟨μ_ξ, Ψ⟩ − b))`.

The inverse problem fits linear rewards `r_w = Φ w`, `w` in an ℓ1 ball, by
projected gradient descent on
`L(w) = max_{μ feasible}[⟨r_w, μ⟩/(1−γ) − βΩ(μ)] − ⟨r_w, μ_E⟩/(1−γ)`, whose
gradient is `Φᵀ(μ_w − μ_E)/(1−γ)` (Danskin), with the duals warm-started across
steps (a primal–dual scheme).

References:
  Altman (1999), Constrained Markov decision processes. Schlaginhaufen &
  Kamgarpour (2023), Identifiability and generalizability in constrained
  inverse reinforcement learning.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from irl_jax.tabular import dp
from irl_jax.tabular.mdp import TabularMDP


class ConstrainedSolution(NamedTuple):
  """Solution of the entropy-regularised CMDP.

  Attributes:
    policy: `[S, A]`, the soft-optimal policy of `r − Ψξ` at the final duals.
    duals: `ξ[K] ≥ 0`.
    occupancy: normalised `μ[S, A]` of `policy` (sums to 1).
    violation: `⟨μ, Ψ_k⟩ − b_k`, `[K]` (≤ 0 when feasible).
    v: `[S]`, soft values of `r − Ψξ` (a warm start for the next solve).
  """
  policy: jax.Array
  duals: jax.Array
  occupancy: jax.Array
  violation: jax.Array
  v: jax.Array


def _require_constraints(fn, mdp):
  if mdp.costs is None or mdp.budgets is None:
    raise ValueError(f"{fn}: the MDP has no constraints (costs and budgets are None).")


def _dual_steps(reward, mdp, duals, v, *, temperature, steps, dual_lr):
  gamma = mdp.discount
  costs, budgets = mdp.costs.astype(reward.dtype), mdp.budgets.astype(reward.dtype)

  def solve(duals, v):
    sol = dp.soft_value_iteration(reward - costs @ duals, mdp, temperature=temperature,
                                  init_v=v)
    mu = (1 - gamma) * dp.occupancy(sol.policy, mdp)
    return sol, mu, jnp.einsum("sa,sak->k", mu, costs) - budgets

  def step(carry, _):
    duals, v = carry
    sol, _, violation = solve(duals, v)
    return (jnp.maximum(duals + dual_lr * violation, 0.0), sol.v), None

  (duals, v), _ = jax.lax.scan(step, (duals, v), None, length=steps)
  sol, mu, violation = solve(duals, v)
  return ConstrainedSolution(sol.policy, duals, mu, violation, sol.v)


def constrained_soft_solve(reward, mdp: TabularMDP, *, temperature: float = 1.0,
                           steps: int = 2000, dual_lr: float = 1.0,
                           init_duals=None) -> ConstrainedSolution:
  """Solves the entropy-regularised CMDP by exact soft value iteration for the
  policy and projected gradient steps on the duals (see the module docstring).

  Args:
    reward: `[S, A]`.
    mdp: one MDP with `costs[S, A, K]`, `budgets[K]`, `γ < 1`.
    temperature: `β > 0`.
    steps: dual steps (static).
    dual_lr: `η`.
    init_duals: optional `[K]` starting duals (zeros by default).

  Returns:
    `ConstrainedSolution`.
  """
  _require_constraints("constrained_soft_solve", mdp)
  dtype = jnp.promote_types(jnp.float32, reward.dtype)
  reward = reward.astype(dtype)
  k = mdp.costs.shape[-1]
  duals = jnp.zeros(k, dtype) if init_duals is None else jnp.asarray(init_duals, dtype)
  return _dual_steps(reward, mdp, duals, jnp.zeros(mdp.num_states, dtype),
                     temperature=temperature, steps=steps, dual_lr=dual_lr)


def make_constrained_irl(*, features, radius: float, steps: int,
                         optimizer: optax.GradientTransformation | None = None,
                         learning_rate: float = 0.1, temperature: float = 1.0,
                         dual_steps: int = 20, dual_lr: float = 1.0,
                         constrained: bool = True):
  """Constrained IRL with linear rewards `r_w = features @ w`, `‖w‖₁ ≤ radius`.

  Each step: `dual_steps` warm-started dual steps of `constrained_soft_solve` for
  `r_w`, then `w ← Proj_{ℓ1}(w − lr · Φᵀ(μ_w − μ_E)/(1−γ))` (or the update of
  `optimizer`, e.g. Adam, followed by the same projection). With
  `constrained=False` the forward problem ignores the constraints (plain MCE IRL
  with normalised occupancies, for comparison).

  Args:
    features: `[S, A, F]`.
    radius: ℓ1 radius of the reward class.
    steps: outer steps (static).
    optimizer: an optax transformation for `w` (default: plain gradient steps of
      size `learning_rate`).
    learning_rate: step size on `w` when no optimizer is given.
    temperature: `β`.
    dual_steps, dual_lr: inner dual updates per step.
    constrained: use the MDP's constraints in the forward problem.

  Returns:
    `train(key, mdp, expert_occupancy) -> (w[F], log)`; `expert_occupancy` is the
    normalised `μ_E[S, A]`; `log` holds `occupancy_error[steps]` (`‖μ_w − μ_E‖₁`)
    and `violation[steps, K]` (zeros when unconstrained).
  """
  features = jnp.asarray(features)
  tx = optax.sgd(learning_rate) if optimizer is None else optimizer

  def train(key, mdp: TabularMDP, expert_occupancy):
    del key  # deterministic: w starts at 0
    dtype = jnp.promote_types(jnp.float32, features.dtype)
    w = jnp.zeros(features.shape[-1], dtype)
    if constrained:
      _require_constraints("make_constrained_irl", mdp)
    k = mdp.costs.shape[-1] if constrained else 1
    gamma = mdp.discount

    def forward(r, duals, v):
      if constrained:
        return _dual_steps(r, mdp, duals, v, temperature=temperature, steps=dual_steps,
                           dual_lr=dual_lr)
      sol = dp.soft_value_iteration(r, mdp, temperature=temperature, init_v=v)
      mu = (1 - gamma) * dp.occupancy(sol.policy, mdp)
      return ConstrainedSolution(sol.policy, duals, mu, jnp.zeros(k, dtype), sol.v)

    def step(carry, _):
      w, opt_state, duals, v = carry
      sol = forward(features @ w, duals, v)
      grad = jnp.einsum("saf,sa->f", features, sol.occupancy - expert_occupancy) / (1 - gamma)
      updates, opt_state = tx.update(grad, opt_state, w)
      w = optax.projections.projection_l1_ball(optax.apply_updates(w, updates), radius)
      error = jnp.sum(jnp.abs(sol.occupancy - expert_occupancy))
      return (w, opt_state, sol.duals, sol.v), (error, sol.violation)

    init = (w, tx.init(w), jnp.zeros(k, dtype), jnp.zeros(mdp.num_states, dtype))
    (w, *_), (errors, violations) = jax.lax.scan(step, init, None, length=steps)
    return w, {"occupancy_error": errors, "violation": violations}
  return train


def distance_to_constant_class(reward, expert_reward, *, where=None) -> jax.Array:
  """`min_c ‖r − r_E − c·1‖₂` over the (masked) state-action pairs: how far a
  recovered reward is from the expert's up to a constant."""
  diff = (reward - expert_reward).ravel()
  w = jnp.ones_like(diff) if where is None else jnp.asarray(where, diff.dtype).ravel()
  c = jnp.sum(w * diff) / jnp.maximum(jnp.sum(w), 1)
  return jnp.sqrt(jnp.sum(w * (diff - c) ** 2))


def shaping_residual(reward, expert_reward, mdp: TabularMDP, *, where=None,
                     extra_basis=None):
  """Least-squares fit of `r − r_E` by a potential-shaping term plus a constant.

  Solves `min_{Φ, c} ‖r − r_E − (γ P Φ − Φ) − c·1‖₂` over the (masked) state-action
  pairs, with `(γPΦ − Φ)(s, a) = γ Σ_s' P(s'|s,a) Φ(s') − Φ(s)`. `extra_basis[S, A, K]`
  (optional) adds directions to the class, e.g. the constraint costs `Ψ`, along
  which a constrained expert's reward is not identified either.

  Returns:
    `(distance, potential[S], constant)`: the residual norm (the distance of `r` to
    the class `{r_E + γPΦ − Φ + c}`), the fitted `Φ` and `c`.
  """
  s, a = mdp.num_states, mdp.num_actions
  dtype = jnp.promote_types(jnp.float32, reward.dtype)
  eye = jnp.eye(s, dtype=dtype)
  basis = mdp.discount * mdp.transitions.astype(dtype) - eye[:, None, :]  # [S, A, S]
  parts = [basis.reshape(s * a, s), jnp.ones((s * a, 1), dtype)]
  if extra_basis is not None:
    parts.append(jnp.asarray(extra_basis, dtype).reshape(s * a, -1))
  design = jnp.concatenate(parts, 1)
  target = (reward - expert_reward).astype(dtype).ravel()
  if where is not None:
    w = jnp.asarray(where, dtype).ravel()[:, None]
    design, target = design * w, target * w[:, 0]
  coef, *_ = jnp.linalg.lstsq(design, target)
  residual = target - design @ coef
  return jnp.linalg.norm(residual), coef[:s], coef[s]


def distance_to_shaping_class(reward, expert_reward, mdp: TabularMDP, *, where=None,
                              extra_basis=None) -> jax.Array:
  """`min_{Φ, c} ‖r − r_E − (γPΦ − Φ) − c·1‖₂` (see `shaping_residual`)."""
  return shaping_residual(reward, expert_reward, mdp, where=where,
                          extra_basis=extra_basis)[0]


def transfer_regret(reward, expert_reward, mdp: TabularMDP, *, temperature: float = 1.0,
                    steps: int = 2000, dual_lr: float = 1.0, constrained: bool = True):
  """Re-solves the (constrained) forward problem with a recovered reward in a new
  MDP and compares it with the expert re-solved there.

  Returns:
    `(regret, violation[K])`: `J(π_E') − J(π_r')` under the *expert's* reward
    (entropy-regularised objective, so `regret ≥ 0` up to the constraint slack),
    and the constraint violation `⟨μ_r', Ψ⟩ − b` of the recovered reward's policy
    (without constraints: zeros `[K]` when the MDP has costs, else a scalar 0).
  """
  if constrained:
    expert = constrained_soft_solve(expert_reward, mdp, temperature=temperature,
                                    steps=steps, dual_lr=dual_lr)
    learner = constrained_soft_solve(reward, mdp, temperature=temperature, steps=steps,
                                     dual_lr=dual_lr)
    pe, pl, violation = expert.policy, learner.policy, learner.violation
  else:
    pe = dp.soft_value_iteration(expert_reward, mdp, temperature=temperature).policy
    pl = dp.soft_value_iteration(reward, mdp, temperature=temperature).policy
    violation = jnp.zeros(() if mdp.costs is None else mdp.costs.shape[-1:])
  # The entropy-regularised objective E[Σ_t γ^t (r − β log π)] from ν0.
  regret = (dp.expected_return(pe, expert_reward, mdp, temperature=temperature)
            - dp.expected_return(pl, expert_reward, mdp, temperature=temperature))
  return regret, violation
