"""Seed-vmappable tabular learners: `make_*(...) -> train(key, ...)` over `lax.scan`.

Each `make_*` fixes the static settings (steps, optimiser, temperature) and
returns a pure `train` function. Its data arguments (MDP, demonstrations) are
arrays, so `jax.jit(jax.vmap(train))(keys, ...)` runs many seeds, or many
demonstration sets, in one compiled program, and compiles once.

    train = make_mce_irl(reward_fn=linear_reward, init_fn=..., optimizer=optax.adam(0.1),
                         steps=300)
    params, log = jax.jit(jax.vmap(train, in_axes=(0, None, 0)))(keys, mdp, occupancies)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from irl_jax.tabular import dp, irl
from irl_jax.tabular.mdp import TabularMDP


class Transitions(NamedTuple):
  """Flat expert transitions, each `[B]`: `states`, `actions`, `next_states` (int),
  `dones` (bool: `next_state` is terminal, so no bootstrap), `where` (bool: a real
  transition, not padding) and optional `weights` (float: each transition's weight in
  the expert expectations; uniform when None)."""
  states: jax.Array
  actions: jax.Array
  next_states: jax.Array
  dones: jax.Array
  where: jax.Array
  weights: jax.Array | None = None


def transitions_from(trajectories: dp.Trajectories, *, terminal=None, where=None,
                     discount=None) -> Transitions:
  """Flattens `[N, T]` trajectories to `[N·T]` transitions. `terminal[S]` (bool,
  optional) marks terminal states: a transition into one is done. The last step
  of a trajectory cut by the horizon is not done (its next value bootstraps).
  With `discount`, step `t` gets weight `γ^t`, so expert expectations are taken
  under the discounted occupancy (the measure under which the value term
  telescopes to `(1 − γ)·E_ν0[V(s_0)]`)."""
  n, t = trajectories.states.shape
  s, a, s2 = (jnp.reshape(x, (-1,)) for x in trajectories)
  dones = (jnp.zeros_like(s, bool) if terminal is None
           else jnp.asarray(terminal, bool)[s2])
  w = jnp.ones_like(s, bool) if where is None else jnp.reshape(jnp.asarray(where, bool), (-1,))
  weights = None
  if discount is not None:
    steps = jnp.broadcast_to(jnp.arange(t), (n, t)).reshape(-1)
    weights = jnp.asarray(discount, jnp.float32) ** steps
  return Transitions(s, a, s2, dones, w, weights)


def linear_reward(features) -> Callable[[jax.Array], jax.Array]:
  """`r_w = features @ w` as a reward function of `w[F]`; `features[S, A, F]`."""
  return lambda w: features @ w


def _scan(loss_fn, optimizer, steps, params):
  opt_state = optimizer.init(params)

  def step(carry, _):
    params, opt_state = carry
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, aux)

  (params, _), (losses, aux) = jax.lax.scan(step, (params, opt_state), None, length=steps)
  return params, losses, aux


def make_mce_irl(*, reward_fn: Callable, init_fn: Callable, optimizer: optax.GradientTransformation,
                 steps: int, temperature: float = 1.0, horizon: int | None = None):
  """Maximum-causal-entropy IRL by gradient descent on `irl.mce_irl_loss`.

  Args:
    reward_fn: `params -> reward[S, A]` (linear: `linear_reward(features)`; neural:
      any network applied to state/action features).
    init_fn: `key -> params`.
    optimizer: an optax transformation.
    steps: gradient steps (static).
    temperature: `α`.
    horizon: `None` (discounted) or the finite horizon `T`.

  Returns:
    `train(key, mdp, expert_occupancy) -> (params, log)` with `log` holding
    `loss[steps]` and `occupancy_error[steps]` (`‖ρ_θ − ρ_E‖₁` before each step).
  """
  def train(key, mdp: TabularMDP, expert_occupancy):
    params = init_fn(key)
    opt_state = optimizer.init(params)

    def step(carry, _):
      # The soft values carry over between steps as the next solve's warm start.
      params, opt_state, v = carry

      def loss_fn(params):
        loss, extras = irl.mce_irl_loss(reward_fn(params), expert_occupancy, mdp,
                                        temperature=temperature, horizon=horizon,
                                        init_v=None if horizon is not None else v)
        return loss, extras

      (loss, extras), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      v = extras.values if horizon is None else v
      return (optax.apply_updates(params, updates), opt_state, v), (
          loss, extras.occupancy_error)

    reward0 = jax.eval_shape(reward_fn, params)
    v0 = jnp.zeros(mdp.num_states, jnp.promote_types(
        jnp.promote_types(jnp.float32, mdp.transitions.dtype), reward0.dtype))
    (params, _, _), (losses, errors) = jax.lax.scan(step, (params, opt_state, v0), None,
                                                    length=steps)
    return params, {"loss": losses, "occupancy_error": errors}
  return train


def make_iq_learn(*, num_states: int, num_actions: int, optimizer: optax.GradientTransformation,
                  steps: int, temperature: float = 1.0, chi2_coef: float = 0.5,
                  value_term: str = "expert", init_scale: float = 0.0):
  """Tabular IQ-Learn (χ²), full-batch gradient descent on a Q-table.

  `value_term="expert"`: the offline loss, value term on expert transitions.
  `value_term="initial"`: IQ-Learn's initial-state form, `(1−γ)·E_{ν0}[V(s_0)]`
  instead of the expert-state value term (needs the MDP's `ν0`); it matches the
  expert terms when those are weighted by the discounted occupancy
  (`transitions_from(..., discount=γ)`). Expert expectations use
  `transitions.weights` when given, uniform weights otherwise.

  Returns:
    `train(key, mdp, transitions) -> (q[S, A], log)`; only `mdp.discount` and,
    for `"initial"`, `mdp.initial` are read: IQ-Learn never sees the dynamics.
    `log["loss"][steps]`.
  """
  if value_term not in ("expert", "initial"):
    raise ValueError(f"make_iq_learn: value_term must be 'expert' or 'initial', got "
                     f"{value_term!r}.")

  def train(key, mdp: TabularMDP, transitions: Transitions):
    gamma = mdp.discount

    def loss_fn(q):
      per, extras = irl.tabular_iq_learn_loss(
          q, transitions.states, transitions.actions, transitions.next_states,
          transitions.dones, discount=gamma, temperature=temperature,
          chi2_coef=chi2_coef, where=transitions.where)
      weight = transitions.where.astype(per.dtype)
      if transitions.weights is not None:
        weight = weight * transitions.weights.astype(per.dtype)
      total = jnp.maximum(jnp.sum(weight), jnp.finfo(per.dtype).tiny)
      if value_term == "initial":
        v0 = jnp.dot(mdp.initial, irl.soft_values(q, temperature=temperature))
        per = per - extras.value_term
        return jnp.sum(weight * per) / total + (1 - gamma) * v0, None
      return jnp.sum(weight * per) / total, None

    q0 = init_scale * jax.random.normal(key, (num_states, num_actions))
    q, losses, _ = _scan(loss_fn, optimizer, steps, q0)
    return q, {"loss": losses}
  return train


def make_behaviour_cloning(*, num_states: int, num_actions: int,
                           optimizer: optax.GradientTransformation, steps: int):
  """Tabular behaviour cloning: softmax logits `[S, A]` fitted by maximum
  likelihood on the demonstrated (state, action) pairs; states never demonstrated
  keep uniform actions.

  Returns:
    `train(key, transitions) -> (logits[S, A], log)`.
  """
  def train(key, transitions: Transitions):
    del key  # zero init: unseen states stay uniform

    def loss_fn(logits):
      nll = irl.behaviour_cloning_loss(logits, transitions.states, transitions.actions,
                                       where=transitions.where)
      return jnp.sum(nll) / jnp.maximum(jnp.sum(transitions.where), 1), None

    logits, losses, _ = _scan(loss_fn, optimizer, steps,
                              jnp.zeros((num_states, num_actions)))
    return logits, {"loss": losses}
  return train
