"""Adversarial IRL for continuous and deep control: GAIL, AIRL and the gradient penalty.

A discriminator `D = σ(l)`, parameterised by its logit `l`, separates expert
transitions (label 1) from policy transitions (label 0):

    max_D  E_E[log D] + E_π[log(1 − D)].

Minimised as binary cross-entropy on logits, per example:

    expert:  −log σ(l_E)     = softplus(−l_E)
    policy:  −log(1 − σ(l_P)) = softplus(l_P)

and the discriminator loss is `mean(expert) + mean(policy)`, each mean over its
own valid entries.

- GAIL. The policy reward is `−log(1 − D) = softplus(l)` (`gail_reward`),
  which is positive: a survival bonus in tasks with early termination. The
  alternatives are `log D = −softplus(−l)` (negative: a termination bonus)
  and the logit `l = log D − log(1 − D)` itself, which needs no function.
- Gradient penalty, on random interpolates `x̂ = ε·x_E + (1 − ε)·x_π` with
  `ε ~ U(0, 1)` per example: `(‖∇_x l(x̂)‖₂ − c)²` (WGAN-GP, `c = 1`).
  With `policy_inputs = expert_inputs` the interpolate is the expert sample
  itself, and `c = 0` gives R1: `‖∇_x l(x_E)‖₂²`.
- AIRL. `D = exp f / (exp f + π(a|s))` with the shaped reward

      f(s, a, s') = g(s, a) + γ(1 − done)·h(s') − h(s),

  so `logit D = f − log π(a|s)`; the discriminator is trained with the same
  BCE on that logit. The policy reward `log D − log(1 − D) = f − log π` is the
  logit; `g` is the transferable reward (a state-only `g(s)` is the caller's
  choice of network). `log π(a|s)` is an input: stored at sampling time for
  policy transitions, evaluated by the current policy on expert transitions.
  It enters as given: it should be held fixed in the discriminator update, so
  pass it with the gradient stopped (`jax.lax.stop_gradient`) when it comes
  from live policy parameters.

Masks (`where=`) mark valid entries; masked outputs are 0 and the values in
masked slots never reach the result or its gradients.

Dimensions: `B_E` expert transitions, `B_P` policy transitions, `B`
transitions of a single batch.

References:
  Ho & Ermon 2016, "Generative Adversarial Imitation Learning".
  Fu, Luo & Levine 2018, "Learning Robust Rewards with Adversarial Inverse
  Reinforcement Learning".
  Gulrajani et al. 2017, "Improved Training of Wasserstein GANs".
  Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do
  actually Converge?" (R1).
  Kostrikov et al. 2019, "Discriminator-Actor-Critic" (reward bias of
  `−log(1 − D)` and `log D`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks


class DiscriminatorLoss(NamedTuple):
  """Per-example binary cross-entropy terms; the loss is `mean(expert) + mean(policy)`.

  Attributes:
    expert: `[B_E]` `−log D = softplus(−l_E)`, zero where masked.
    policy: `[B_P]` `−log(1 − D) = softplus(l_P)`, zero where masked.
  """

  expert: jax.Array
  policy: jax.Array


class DiscriminatorExtras(NamedTuple):
  """Per-example diagnostics, zero where masked.

  Attributes:
    expert_accuracy: `[B_E]` 1 where `l_E > 0` (`D > 1/2`), else 0.
    policy_accuracy: `[B_P]` 1 where `l_P < 0` (`D < 1/2`), else 0. Ties
      (`l = 0`) count as errors on both sides.
    expert_logits: `[B_E]` the logits `l_E` (for AIRL, `f − log π`).
    policy_logits: `[B_P]` the logits `l_P` (for AIRL, `f − log π`: the
      policy reward).
  """

  expert_accuracy: jax.Array
  policy_accuracy: jax.Array
  expert_logits: jax.Array
  policy_logits: jax.Array


def _vector(fn, name, x, dims, dtype):
  _checks.check_rank(fn, name, x, 1, dims)
  return _checks.as_float(name, fn, x, dtype)


def _mask(fn, name, where, shape):
  if where is None:
    return jnp.ones(shape, bool)
  return _checks.as_mask(name, fn, where, shape)


def _bce(fn, expert_logits, policy_logits, expert_where, policy_where):
  """The shared discriminator BCE on already-checked float logits."""
  expert_where = _mask(fn, "expert_where", expert_where, expert_logits.shape)
  policy_where = _mask(fn, "policy_where", policy_where, policy_logits.shape)
  le = jnp.where(expert_where, expert_logits, 0)
  lp = jnp.where(policy_where, policy_logits, 0)
  losses = DiscriminatorLoss(
      expert=jnp.where(expert_where, jax.nn.softplus(-le), 0),
      policy=jnp.where(policy_where, jax.nn.softplus(lp), 0),
  )
  extras = DiscriminatorExtras(
      expert_accuracy=(expert_where & (le > 0)).astype(le.dtype),
      policy_accuracy=(policy_where & (lp < 0)).astype(lp.dtype),
      expert_logits=le,
      policy_logits=lp,
  )
  return losses, extras


def gail_discriminator_loss(
    expert_logits, policy_logits, *, expert_where=None, policy_where=None
) -> tuple[DiscriminatorLoss, DiscriminatorExtras]:
  """GAIL discriminator BCE per example (expert label 1, policy label 0).

      expert: −log σ(l_E) = softplus(−l_E),   policy: −log(1 − σ(l_P)) = softplus(l_P)

  Args:
    expert_logits: `[B_E]` discriminator logits on expert transitions.
    policy_logits: `[B_P]` discriminator logits on policy transitions.
    expert_where: optional `[B_E]` bool, valid expert entries.
    policy_where: optional `[B_P]` bool, valid policy entries.

  Returns:
    `(DiscriminatorLoss(expert [B_E], policy [B_P]), DiscriminatorExtras)`,
    float32 (float64 under x64), zero where masked. The loss to minimise is
    the masked mean of `expert` plus the masked mean of `policy`.

  Example:
    >>> losses, extras = gail_discriminator_loss(d(expert_batch), d(policy_batch))
    >>> loss = jnp.mean(losses.expert) + jnp.mean(losses.policy)
  """
  fn = "gail_discriminator_loss"
  dtype = _checks.compute_dtype(expert_logits, policy_logits)
  le = _vector(fn, "expert_logits", expert_logits, "[B_E]", dtype)
  lp = _vector(fn, "policy_logits", policy_logits, "[B_P]", dtype)
  return _bce(fn, le, lp, expert_where, policy_where)


def gail_reward(policy_logits, *, where=None) -> jax.Array:
  """GAIL policy reward `r = −log(1 − D) = −log(1 − σ(l)) = softplus(l)`, `[B]`.

  Always positive. The logit `l = log D − log(1 − D)` is the signed
  alternative (and the AIRL reward); use it directly.

  Args:
    policy_logits: `[B]` discriminator logits on the transitions to reward.
    where: optional `[B]` bool, valid entries.

  Returns:
    `[B]` float32 rewards, zero where masked.
  """
  fn = "gail_reward"
  logits = _vector(fn, "policy_logits", policy_logits, "[B]", None)
  where = _mask(fn, "where", where, logits.shape)
  return jnp.where(where, jax.nn.softplus(jnp.where(where, logits, 0)), 0)


def gradient_penalty(
    discriminator_fn: Callable,
    expert_inputs,
    policy_inputs,
    key,
    *,
    target: float = 1.0,
    where=None,
) -> jax.Array:
  """Gradient penalty on random interpolates, per example `[B]`.

      x̂ = ε·x_E + (1 − ε)·x_π,   ε = jax.random.uniform(key, (B,)),
      penalty = (‖∇_x̂ l(x̂)‖₂ − c)²

  The norm runs over all non-batch axes of all input leaves together. With
  `policy_inputs = expert_inputs` and `target=0` this is R1,
  `‖∇_x l(x_E)‖₂²`. Where the input gradient is exactly 0 the norm's
  subgradient 0 is used, so gradients stay finite.

  The per-example input gradients are the gradient of `Σ_b l(x̂)_b`, which
  requires the rows of `discriminator_fn` to be independent (no normalisation
  across the batch). The result is differentiable w.r.t. parameters that
  `discriminator_fn` closes over (double backpropagation).

  Args:
    discriminator_fn: maps a batch shaped like `expert_inputs` (an array
      `[B, ...]` or a pytree of them, e.g. `(obs, act)`) to `[B]` logits.
    expert_inputs: `[B, ...]` floating array or pytree of them (one-hot any
      discrete part).
    policy_inputs: the same structure and shapes as `expert_inputs`.
    key: PRNG key for `ε`.
    target: `c ≥ 0`; 1 for WGAN-GP, 0 for R1-style.
    where: optional `[B]` bool, valid examples; masked rows are evaluated on
      zero inputs and give 0.

  Returns:
    `[B]` float32 penalties (float64 under x64), zero where masked.
  """
  fn = "gradient_penalty"
  _checks.check_scalar_range(fn, "target", target, 0.0, float("inf"))
  e_leaves, e_tree = jax.tree.flatten(expert_inputs)
  p_leaves, p_tree = jax.tree.flatten(policy_inputs)
  if e_tree != p_tree:
    raise ValueError(
        f"{fn}: `expert_inputs` and `policy_inputs` must share one structure, got {e_tree} "
        f"and {p_tree}."
    )
  if not e_leaves:
    raise ValueError(f"{fn}: `expert_inputs` holds no arrays.")
  batch = None
  for i, (xe, xp) in enumerate(zip(e_leaves, p_leaves, strict=True)):
    se, sp = tuple(jnp.shape(xe)), tuple(jnp.shape(xp))
    if se != sp:
      raise ValueError(
          f"{fn}: leaf {i} of `expert_inputs` has shape {se} but `policy_inputs` has {sp}."
      )
    if len(se) < 1:
      raise ValueError(f"{fn}: leaf {i} of `expert_inputs` must be [B, ...], got shape {se}.")
    if batch is None:
      batch = se[0]
    elif se[0] != batch:
      raise ValueError(
          f"{fn}: leaves of `expert_inputs` disagree on the batch size: leaf 0 has {batch}, "
          f"leaf {i} has shape {se}."
      )
  dtype = _checks.compute_dtype(*e_leaves, *p_leaves)
  e_leaves = [_checks.as_float("expert_inputs", fn, x, dtype) for x in e_leaves]
  p_leaves = [_checks.as_float("policy_inputs", fn, x, dtype) for x in p_leaves]
  where = _mask(fn, "where", where, (batch,))
  eps = jax.random.uniform(key, (batch,), dtype)

  def mix(xe, xp):
    rows = (batch,) + (1,) * (xe.ndim - 1)
    keep = where.reshape(rows)
    xe, xp = jnp.where(keep, xe, 0), jnp.where(keep, xp, 0)
    # x_π + ε(x_E − x_π): exactly x_E when the two inputs are equal (R1).
    return xp + eps.reshape(rows) * (xe - xp)

  mixed = [mix(xe, xp) for xe, xp in zip(e_leaves, p_leaves, strict=True)]
  x_hat = jax.tree.unflatten(e_tree, mixed)

  def total(x):
    logits = discriminator_fn(x)
    if tuple(jnp.shape(logits)) != (batch,):
      raise ValueError(
          f"{fn}: `discriminator_fn` must return [B] = ({batch},) logits, got shape "
          f"{tuple(jnp.shape(logits))}."
      )
    return jnp.sum(_checks.as_float("discriminator_fn output", fn, logits, dtype))

  grads = jax.tree.leaves(jax.grad(total)(x_hat))
  sq = sum(jnp.sum(jnp.square(g).reshape(batch, -1), axis=1) for g in grads)
  # Safe sqrt: at a zero gradient both branches see constants (subgradient 0).
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)
  return jnp.where(where, jnp.square(norm - target), 0)


def airl_potential_shaping(g, h_s, h_next, discount_t, *, where=None) -> jax.Array:
  """AIRL's shaped reward `f = g(s, a) + γ_t·h(s') − h(s)`, `[B]`.

  Pass `discount_t = γ·(1 − done)`: terminal transitions (`γ_t = 0`) do not
  bootstrap, and there `h_next` never reaches the result or its gradients
  (it may be garbage, even non-finite).

  Args:
    g: `[B]` reward term `g(s, a)` (or `g(s)`).
    h_s: `[B]` shaping potential `h(s)`.
    h_next: `[B]` shaping potential `h(s')`.
    discount_t: scalar or `[B]` per-transition discount `γ·(1 − done)`.
    where: optional `[B]` bool, valid entries.

  Returns:
    `[B]` float32 `f`, zero where masked.
  """
  fn = "airl_potential_shaping"
  _checks.check_rank(fn, "g", g, 1, "[B]")
  _checks.check_same_shape(fn, g=g, h_s=h_s, h_next=h_next)
  # A Python-float discount does not promote float32 inputs under x64.
  dtype = _checks.compute_dtype(g, h_s, h_next)
  g = _checks.as_float("g", fn, g, dtype)
  h_s = _checks.as_float("h_s", fn, h_s, dtype)
  h_next = _checks.as_float("h_next", fn, h_next, dtype)
  discount_t = _checks.as_float("discount_t", fn, discount_t, dtype)
  if discount_t.ndim not in (0, 1) or (discount_t.ndim == 1 and discount_t.shape != g.shape):
    raise ValueError(
        f"{fn}: `discount_t` must be a scalar or {g.shape}, got {discount_t.shape}."
    )
  where = _mask(fn, "where", where, g.shape)
  bootstrap = where & (discount_t != 0)
  f = (
      jnp.where(where, g, 0)
      + jnp.where(bootstrap, discount_t, 0) * jnp.where(bootstrap, h_next, 0)
      - jnp.where(where, h_s, 0)
  )
  return jnp.where(where, f, 0)


def _airl_logits(fn, f, log_pi, f_name, log_pi_name, dims, dtype=None):
  _checks.check_rank(fn, f_name, f, 1, dims)
  _checks.check_same_shape(fn, **{f_name: f, log_pi_name: log_pi})
  dtype = dtype if dtype is not None else _checks.compute_dtype(f, log_pi)
  return _checks.as_float(f_name, fn, f, dtype) - _checks.as_float(log_pi_name, fn, log_pi, dtype)


def _masked_airl_logits(fn, f, log_pi, where):
  logits = _airl_logits(fn, f, log_pi, "f", "log_pi", "[B]")
  return jnp.where(_mask(fn, "where", where, logits.shape), logits, 0)


def airl_logits(f, log_pi, *, where=None) -> jax.Array:
  """AIRL discriminator logit `logit D = f − log π(a|s)`, `[B]`.

  From `D = exp f / (exp f + π(a|s))`. Example: `f = 0`, `π = 0.5` gives
  `D = 1/(1 + 0.5) = 2/3` and logit `log 2`.

  Args:
    f: `[B]` shaped reward (`airl_potential_shaping`).
    log_pi: `[B]` `log π(a|s)` of the transitions' actions.
    where: optional `[B]` bool, valid entries.

  Returns:
    `[B]` float32 logits, zero where masked.
  """
  return _masked_airl_logits("airl_logits", f, log_pi, where)


def airl_reward(f, log_pi, *, where=None) -> jax.Array:
  """AIRL policy reward `r = log D − log(1 − D) = f − log π(a|s)`, `[B]`.

  The same number as `airl_logits`; as a reward it should be held fixed in
  the policy update (this function does not stop gradients: pass `log_pi`
  stopped, or stop the result). Adding `log π` back, `f` alone is the
  entropy-regularised reward; `g` is the part meant to transfer.

  Args:
    f: `[B]` shaped reward.
    log_pi: `[B]` `log π(a|s)` stored at sampling time.
    where: optional `[B]` bool, valid entries.

  Returns:
    `[B]` float32 rewards, zero where masked.
  """
  return _masked_airl_logits("airl_reward", f, log_pi, where)


def airl_discriminator_loss(
    expert_f,
    expert_log_pi,
    policy_f,
    policy_log_pi,
    *,
    expert_where=None,
    policy_where=None,
) -> tuple[DiscriminatorLoss, DiscriminatorExtras]:
  """AIRL discriminator BCE on the logits `l = f − log π` (expert 1, policy 0).

      expert: −log D_E = softplus(−(f_E − log π_E)),
      policy: −log(1 − D_P) = softplus(f_P − log π_P)

  Example: `f = 0`, `log π = log 0.5` gives `D = 2/3`, an expert term
  `−log(2/3)` and a policy term `log 3`.

  Args:
    expert_f: `[B_E]` `f` on expert transitions.
    expert_log_pi: `[B_E]` current policy's `log π(a_E|s_E)`; pass it with the
      gradient stopped (this function differentiates whatever it is given).
    policy_f: `[B_P]` `f` on policy transitions.
    policy_log_pi: `[B_P]` `log π(a|s)` stored at sampling time.
    expert_where: optional `[B_E]` bool, valid expert entries.
    policy_where: optional `[B_P]` bool, valid policy entries.

  Returns:
    `(DiscriminatorLoss, DiscriminatorExtras)` as in `gail_discriminator_loss`;
    `extras.policy_logits` is the policy reward `f − log π`.
  """
  fn = "airl_discriminator_loss"
  dtype = _checks.compute_dtype(expert_f, expert_log_pi, policy_f, policy_log_pi)
  le = _airl_logits(fn, expert_f, expert_log_pi, "expert_f", "expert_log_pi", "[B_E]", dtype)
  lp = _airl_logits(fn, policy_f, policy_log_pi, "policy_f", "policy_log_pi", "[B_P]", dtype)
  return _bce(fn, le, lp, expert_where, policy_where)
