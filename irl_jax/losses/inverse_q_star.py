"""Inverse-Q*: token-level RL without preference data (docs/objectives.md §5).

**Reconstruction.** The form below is reconstructed from the paper's
description (no reward or value model; a conditionally optimal policy `π̂*`
estimated from the model's own responses; token-wise imitation of the
rewards it implies); it could not be checked against the paper's method text.

On tokens sampled from the current policy, with the frozen reference
`π_ref` and a frozen estimate `π̂*` of the optimal policy, the token reward is

    r̂_t = β · (log π̂*(a_t|s_t) − log π_ref(a_t|s_t))

(the token-level view of DPO, where `β·log π*/π_ref` is an advantage), and the
reward-imitation loss per token is

    ℓ_t = ( β·(log π_θ(a_t|s_t) − log π_ref(a_t|s_t)) − r̂_t )².

In it `π_ref` cancels, so it is the distillation limit. The token-level
RL form (`inverse_q_star_policy_gradient`) uses `r̂_t` as a dense reward, less the KL
penalty `β·(log π_θ − log π_ref)`, in REINFORCE with returns-to-go; its optimum is
`π̂*`. The distributional form, when full `π̂*` logits are available, is the
per-token `KL(π̂*(·|s_t) ‖ π_θ(·|s_t))`.

The `π̂*` pass often has a longer prefix (the conditioning context that
elicits the preferred behaviour); `gather_response` aligns its outputs with
the policy's response positions.

Dimensions: `B` batch rows, `T` response positions, `T'` positions in a pass
with a longer prefix, `V` vocabulary.

References:
  Xia et al. 2024, "Inverse-Q*: Token Level Reinforcement Learning for
  Aligning Large Language Models Without Preference Data".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks


class InverseQStarExtras(NamedTuple):
  """Per-token diagnostics, each `[B, T]`, zero where masked.

  Attributes:
    token_rewards: `r̂_t = β·(log π̂* − log π_ref)` (the imitation target).
    policy_rewards: `β·(log π_θ − log π_ref)`, the policy's implied reward.
  """

  token_rewards: jax.Array
  policy_rewards: jax.Array


def _token_inputs(fn, policy_logps, ref_logps, optimal_logps, where, beta):
  """The three `[B, T]` log-prob inputs checked, in the compute dtype and zeroed where
  masked, and the mask."""
  _checks.check_rank(fn, "policy_logps", policy_logps, 2, "[B, T]")
  _checks.check_same_shape(
      fn, policy_logps=policy_logps, ref_logps=ref_logps, optimal_logps=optimal_logps
  )
  _checks.check_scalar_range(fn, "beta", beta, 1e-12, float("inf"))
  dtype = _checks.compute_dtype(policy_logps, ref_logps, optimal_logps)
  where = _checks.as_mask("where", fn, where, jnp.shape(policy_logps))
  lp, lr, lo = (
      jnp.where(where, _checks.as_float(n, fn, x, dtype), 0)
      for n, x in (
          ("policy_logps", policy_logps),
          ("ref_logps", ref_logps),
          ("optimal_logps", optimal_logps),
      )
  )
  return lp, lr, lo, where


def inverse_q_star(
    policy_logps,
    ref_logps,
    optimal_logps,
    *,
    where,
    beta: float,
    stop_gradient_targets: bool = True,
) -> tuple[jax.Array, InverseQStarExtras]:
  """Reward-imitation Inverse-Q* loss, `[B, T]` (form reconstructed; see module doc).

      ℓ_t = ( β·(log π_θ − log π_ref) − β·(log π̂* − log π_ref) )²

  Args:
    policy_logps: `[B, T]` `log π_θ(a_t|s_t)` of the sampled tokens.
    ref_logps: `[B, T]` `log π_ref(a_t|s_t)` (frozen reference).
    optimal_logps: `[B, T]` `log π̂*(a_t|s_t)` of the same tokens, aligned to
      the same response positions (see `gather_response`).
    where: `[B, T]` bool response mask.
    beta: `β > 0`.
    stop_gradient_targets: stop gradients into `ref_logps` and
      `optimal_logps` (both frozen); default True.

  Returns:
    `(per_token_loss [B, T], InverseQStarExtras)`.
  """
  lp, lr, lo, where = _token_inputs("inverse_q_star", policy_logps, ref_logps, optimal_logps,
                                    where, beta)
  if stop_gradient_targets:
    lr, lo = jax.lax.stop_gradient(lr), jax.lax.stop_gradient(lo)
  token_rewards = beta * (lo - lr)
  policy_rewards = beta * (lp - lr)
  loss = jnp.where(where, jnp.square(policy_rewards - token_rewards), 0)
  return loss, InverseQStarExtras(
      token_rewards=jnp.where(where, token_rewards, 0),
      policy_rewards=jnp.where(where, policy_rewards, 0),
  )


class InverseQStarPGExtras(NamedTuple):
  """Per-token diagnostics of the policy-gradient form, each `[B, T]`, zero where masked.

  Attributes:
    token_rewards: `r̂_t = β·(log π̂* − log π_ref)`.
    returns: `G_t`, the KL-regularised discounted returns-to-go.
    advantages: `G_t − b_t`, the returns less the leave-one-out baseline.
  """

  token_rewards: jax.Array
  returns: jax.Array
  advantages: jax.Array


def inverse_q_star_policy_gradient(
    policy_logps,
    ref_logps,
    optimal_logps,
    *,
    where,
    beta: float,
    gamma: float = 1.0,
    baseline: bool = True,
) -> tuple[jax.Array, InverseQStarPGExtras]:
  """Token-level RL form of Inverse-Q* (reconstructed; see module doc), `[B, T]`.

  The dense reward `r̂_t = β·(log π̂* − log π_ref)` of the sampled tokens, less the
  KL penalty `β·(log π_θ − log π_ref)`, summed into discounted returns-to-go

      G_t = Σ_{t' ≥ t} γ^{t'−t} ( r̂_{t'} − β·(log π_θ − log π_ref)(a_{t'}|s_{t'}) )

  (no gradient through `G_t`), and the REINFORCE loss per token

      ℓ_t = −(G_t − b_t) · log π_θ(a_t|s_t),

  with `b_t` the leave-one-out mean of `G_t` over the other rows valid at `t` (an
  unbiased baseline; 0 with `baseline=False` or a single valid row). Its expected
  gradient is that of `E[Σ_t r̂_t] − β·KL(π_θ ‖ π_ref) = −β·KL(π_θ ‖ π̂*)` per
  sequence (for `γ = 1`), whose optimum is `π̂*`. Reduce with a token mean.

  Args:
    policy_logps: `[B, T]` `log π_θ(a_t|s_t)` of tokens sampled from `π_θ`.
    ref_logps: `[B, T]` `log π_ref` of the same tokens (frozen).
    optimal_logps: `[B, T]` `log π̂*` of the same tokens at the same response
      positions (frozen; see `gather_response`).
    where: `[B, T]` bool response mask (a row's valid tokens form a prefix).
    beta: `β > 0`.
    gamma: discount `γ ∈ [0, 1]`.
    baseline: subtract the leave-one-out baseline.

  Returns:
    `(per_token_loss [B, T], InverseQStarPGExtras)`.
  """
  fn = "inverse_q_star_policy_gradient"
  _checks.check_scalar_range(fn, "gamma", gamma, 0.0, 1.0)
  lp, lr, lo, where = _token_inputs(fn, policy_logps, ref_logps, optimal_logps, where, beta)
  dtype = lp.dtype
  lr, lo = jax.lax.stop_gradient(lr), jax.lax.stop_gradient(lo)
  token_rewards = beta * (lo - lr)
  net = jnp.where(where, token_rewards - beta * (jax.lax.stop_gradient(lp) - lr), 0)

  def back(carry, x):
    g = x + gamma * carry
    return g, g

  _, returns = jax.lax.scan(back, jnp.zeros(net.shape[:1], dtype), net.T, reverse=True)
  returns = jnp.where(where, returns.T, 0)
  if baseline:
    count = jnp.sum(where, axis=0, keepdims=True)
    others = jnp.sum(returns, axis=0, keepdims=True) - returns
    base = jnp.where(count > 1, others / jnp.maximum(count - 1, 1), 0)
    advantages = jnp.where(where, returns - base, 0)
  else:
    advantages = returns
  loss = jnp.where(where, -advantages * lp, 0)
  return loss, InverseQStarPGExtras(token_rewards=jnp.where(where, token_rewards, 0),
                                    returns=returns, advantages=advantages)


def inverse_q_star_kl(policy_logits, optimal_logits, *, where) -> jax.Array:
  """Distributional Inverse-Q*: per-token `KL(π̂*(·|s_t) ‖ π_θ(·|s_t))`, `[B, T]`.

      KL_t = Σ_v π̂*(v|s_t) · (log π̂*(v|s_t) − log π_θ(v|s_t))

  Form reconstructed from the paper's description (see module doc).
  `optimal_logits` is frozen (stop-gradient). Computed in float32.

  Args:
    policy_logits: `[B, T, V]` logits of `π_θ`.
    optimal_logits: `[B, T, V]` logits of `π̂*` at the same response positions.
    where: `[B, T]` bool response mask.

  Returns:
    `[B, T]` KL per token, zero where masked.
  """
  fn = "inverse_q_star_kl"
  _checks.check_rank(fn, "policy_logits", policy_logits, 3, "[B, T, V]")
  _checks.check_same_shape(fn, policy_logits=policy_logits, optimal_logits=optimal_logits)
  dtype = _checks.compute_dtype(policy_logits, optimal_logits)
  where = _checks.as_mask("where", fn, where, jnp.shape(policy_logits)[:2])
  # Masked rows are zeroed before the softmax: NaN or inf there would otherwise
  # reach the gradient as 0·NaN through log_softmax's backward pass.
  logp = jax.nn.log_softmax(jnp.where(
      where[..., None], _checks.as_float("policy_logits", fn, policy_logits, dtype), 0), -1)
  logo = jax.nn.log_softmax(jnp.where(where[..., None], jax.lax.stop_gradient(
      _checks.as_float("optimal_logits", fn, optimal_logits, dtype)), 0), -1)
  # 0·log 0 = 0 for tokens π̂* rules out (-inf logits); the inner `where`
  # keeps NaN out of the gradient w.r.t. the policy.
  support = jnp.isfinite(logo)
  logo = jnp.where(support, logo, 0)
  logp = jnp.where(support, logp, 0)
  kl = jnp.sum(jnp.where(support, jnp.exp(logo) * (logo - logp), 0), axis=-1)
  return jnp.where(where, kl, 0)


def gather_response(values, start, *, length: int) -> jax.Array:
  """`values[b, start[b] + t]` for `t < length`: align a longer-prefix pass.

  A `π̂*` pass that conditions on an extra context has its response at a
  per-row offset; this gathers its per-position outputs (log-probs `[B, T']`
  or logits `[B, T', V]`) at the policy's `length` response positions.

  Args:
    values: `[B, T', ...]`.
    start: `[B]` integer offset of each row's first response position.
    length: number of positions `T` to gather (static).

  Returns:
    `[B, T, ...]`. Positions past `T'` are clamped to the last position;
    mask them with the response mask.
  """
  fn = "gather_response"
  values = jnp.asarray(values)
  if values.ndim < 2:
    raise ValueError(f"{fn}: `values` must be [B, T', ...], got shape {tuple(values.shape)}.")
  start = jnp.asarray(start)
  if start.shape != values.shape[:1] or not jnp.issubdtype(start.dtype, jnp.integer):
    raise ValueError(
        f"{fn}: `start` must be integer [B]={values.shape[:1]}, got shape "
        f"{tuple(start.shape)} dtype {start.dtype}."
    )
  idx = jnp.clip(start[:, None] + jnp.arange(length)[None, :], 0, values.shape[1] - 1)
  idx = idx.reshape(idx.shape + (1,) * (values.ndim - 2))
  return jnp.take_along_axis(values, idx, axis=1)
