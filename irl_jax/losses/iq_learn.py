"""IQLearn for language: TD-regularised maximum likelihood (docs/objectives.md §4).

IQ-Learn maximises over the soft Q-function (here: the LM logits), with
`π = softmax(Q)` and `V = logsumexp Q`,

    J(Q) = E_ρE[ φ(Q(s,a) − γ V(s')) ] − E_ρ[ V(s) − γ V(s') ],
    φ(r) = r − λ r²        (the χ² divergence, λ = 1/(4α): the TD weight).

The implied reward is the inverse soft-Bellman residual — the TD residual of
`Q` under zero reward — `r̂_t = q_t − γ · v_next_t`.

Offline (`ρ = ρE`) the first two terms collapse to the log-likelihood, and the
per-token loss is `ℓ_t = (v_t − q_t) + λ · r̂_t²`; `λ = 0` is exactly MLE.
Gradients flow through `v_next`.

Expectations are uniform token averages: the `γ^t` occupancy weights of the
discounted objective are dropped, as in the language-model formulation of
Wulfmeier et al. With `λ = 0` the per-state logit offset, hence `r̂`, is not
identified: implied rewards are meaningful only for `λ > 0`.

Next-state values (docs/objectives.md §1): `v_next[b,t] = v[b,t+1]` inside the response;
after the last response token a *terminal* row (ended with EOS) has
`v_next = 0` and a *truncated* row uses the caller's `bootstrap[b]`.

Dimensions: `B` batch rows, `T` response positions.

References:
  Wulfmeier et al. 2024, "Imitating Language via Scalable Inverse
  Reinforcement Learning". Garg et al. 2021, "IQ-Learn: Inverse soft-Q
  Learning for Imitation".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.losses import _checks
from irl_jax.losses.mle import check_stats
from irl_jax.losses.reductions import MaskedMean, masked_sum_count
from irl_jax.losses.token_stats import TokenStats


class IQLearnExtras(NamedTuple):
  """Per-token diagnostics of `iq_learn`, each `[B, T]` and zero where masked.

  Attributes:
    nll: `v − q`, the MLE part of the loss.
    implied_rewards: `r̂ = q − γ·v_next`, the TD residual of `Q` under zero
      reward (the inverse soft-Bellman operator).
    td_penalty: `λ · r̂²`, the χ² regulariser.
    values: `v = V(s_t)`.
    next_values: `v_next = V(s_{t+1})` (0 or the bootstrap after the last token).
    value_gap: `v − γ·v_next`, the integrand of the value term of `J`.
  """

  nll: jax.Array
  implied_rewards: jax.Array
  td_penalty: jax.Array
  values: jax.Array
  next_values: jax.Array
  value_gap: jax.Array

  @property
  def td_residual(self) -> jax.Array:
    """`q − γ·v_next`: the soft-Bellman (TD) residual of `Q` under zero reward,
    which is by definition the implied reward."""
    return self.implied_rewards


def next_state_values(values, *, where, terminal=None, bootstrap=None) -> jax.Array:
  """`V(s_{t+1})` for every response token, `[B, T]`, zero where masked.

  Args:
    values: `[B, T]` soft values `v`.
    where: `[B, T]` bool; each row holds one contiguous response span.
    terminal: `[B]` bool, true where the response ended with EOS (absorbing
      next state, value 0). Default: every row is terminal.
    bootstrap: `[B]` value of the state after the last token of each
      truncated row. Required whenever `terminal` may be false somewhere;
      there is no silent default. Ignored on terminal rows.

  Returns:
    `[B, T]` next-state values.
  """
  fn = "next_state_values"
  _checks.check_rank(fn, "values", values, 2, "[B, T]")
  values = jnp.asarray(values)
  where = _checks.as_mask("where", fn, where, values.shape)
  boundary = _boundary_values(fn, values.shape[0], values.dtype, terminal, bootstrap)
  values = jnp.where(where, values, 0)
  inside = jnp.zeros_like(where)
  inside = inside.at[:, :-1].set(where[:, 1:]) & where
  last = where & ~inside
  shifted = jnp.zeros_like(values).at[:, :-1].set(values[:, 1:])
  return jnp.where(inside, shifted, jnp.where(last, boundary[:, None], 0))


def _boundary_values(fn, batch, dtype, terminal, bootstrap) -> jax.Array:
  """`[B]` value after the last token: 0 on terminal rows, bootstrap otherwise."""
  if terminal is None:
    if bootstrap is not None:
      raise ValueError(
          f"{fn}: `bootstrap` was given without `terminal`; pass terminal=[B] bool "
          "(true where the row ended with EOS) so the bootstrap applies to truncated rows."
      )
    return jnp.zeros((batch,), dtype)
  terminal = _checks.as_mask("terminal", fn, terminal, (batch,))
  if bootstrap is None:
    if _checks.is_concrete(terminal) and bool(np.all(np.asarray(terminal))):
      return jnp.zeros((batch,), dtype)
    raise ValueError(
        f"{fn}: `terminal` marks rows that may be truncated (no EOS) but `bootstrap` "
        f"is None; pass bootstrap=[{batch}] values of the state after each row's last "
        "token (a truncated row has no silent default)."
    )
  bootstrap = _checks.as_float("bootstrap", fn, bootstrap, dtype)
  if tuple(bootstrap.shape) != (batch,):
    raise ValueError(f"{fn}: `bootstrap` has shape {tuple(bootstrap.shape)}, expected ({batch},).")
  return jnp.where(terminal, 0, bootstrap)


def _td_terms(fn, stats, where, gamma, terminal, bootstrap):
  _checks.check_scalar_range(fn, "gamma", gamma, 0.0, 1.0)
  q, v, where = check_stats(fn, stats, where)
  v_next = next_state_values(v, where=where, terminal=terminal, bootstrap=bootstrap)
  rewards = jnp.where(where, q - gamma * v_next, 0)
  return q, v, v_next, rewards, where


def implied_rewards(
    stats: TokenStats, *, where, gamma: float, terminal=None, bootstrap=None
) -> jax.Array:
  """Per-token implied rewards `r̂_t = q_t − γ · v_next_t`, `[B, T]`.

  The inverse soft-Bellman operator applied to the LM's Q-values. With
  `γ = 1` on a terminal row the sequence sum telescopes to
  `Σ_t log π(a_t|s_t) + v_0`. Meaningful only for a policy trained with a
  positive TD weight (docs/objectives.md §4).

  Args:
    stats: `TokenStats` `[B, T]`.
    where: `[B, T]` response mask.
    gamma: discount in `[0, 1]`.
    terminal, bootstrap: see `next_state_values`.

  Returns:
    `[B, T]` float32, zero where masked.
  """
  return _td_terms("implied_rewards", stats, where, gamma, terminal, bootstrap)[3]


def sequence_rewards(
    stats: TokenStats, *, where, gamma: float, terminal=None, bootstrap=None
) -> jax.Array:
  """Per-sequence reward `R(y) = Σ_t where·r̂_t`, `[B]` (see `implied_rewards`)."""
  r = _td_terms("sequence_rewards", stats, where, gamma, terminal, bootstrap)[3]
  return jnp.sum(r, axis=-1)


def iq_learn(
    stats: TokenStats,
    *,
    where,
    gamma: float,
    td_weight: float,
    terminal=None,
    bootstrap=None,
) -> tuple[jax.Array, IQLearnExtras]:
  """Offline IQLearn: `ℓ_t = (v_t − q_t) + λ · (q_t − γ · v_next_t)²`.

  Args:
    stats: expert-token `TokenStats` `[B, T]` (from `soft_q_stats` or
      `chunked_soft_q_stats`, given the same `where` so that non-finite
      logits at masked positions stay out of the gradient).
    where: `[B, T]` bool response mask (final EOS included).
    gamma: discount `γ ∈ [0, 1]`.
    td_weight: `λ = 1/(4α) ≥ 0`; 0 gives MLE exactly.
    terminal: `[B]` bool, rows that ended with EOS; default all.
    bootstrap: `[B]` next-state values for truncated rows (required if any row
      may be truncated).

  Returns:
    `(per_token_loss [B, T], IQLearnExtras)`; the loss is zero where masked.
    Reduce with `token_mean`/`sequence_mean` or `masked_sum_count`.

  Example:
    >>> loss, extras = iq_learn(stats, where=mask, gamma=0.99, td_weight=0.1)
    >>> scalar = token_mean(loss, mask)
  """
  fn = "iq_learn"
  _checks.check_scalar_range(fn, "td_weight", td_weight, 0.0, float("inf"))
  q, v, v_next, rewards, where = _td_terms(fn, stats, where, gamma, terminal, bootstrap)
  nll = jnp.where(where, v - q, 0)
  penalty = td_weight * jnp.square(rewards)
  extras = IQLearnExtras(
      nll=nll,
      implied_rewards=rewards,
      td_penalty=penalty,
      values=v,
      next_values=v_next,
      value_gap=jnp.where(where, v - gamma * v_next, 0),
  )
  return nll + penalty, extras


class IQLearnOnlineExtras(NamedTuple):
  """The terms of `iq_learn_online` as exact `(sum, count)` means, plus rewards.

  Sum the `MaskedMean` fields across devices or micro-batches, then call
  `iq_learn_online_from_terms` for the exact loss of the whole batch.

  Attributes:
    expert_nll: `E_E[v − q]`.
    expert_chi2: `E_E[r̂²]`.
    policy_chi2: `E_π[r̂²]`.
    expert_value_gap: `E_E[v − γ v_next]`.
    policy_value_gap: `E_π[v − γ v_next]`.
    expert_implied_rewards: `[B_E, T_E]` per-token `r̂` on expert tokens.
    policy_implied_rewards: `[B_π, T_π]` per-token `r̂` on policy tokens.
  """

  expert_nll: MaskedMean
  expert_chi2: MaskedMean
  policy_chi2: MaskedMean
  expert_value_gap: MaskedMean
  policy_value_gap: MaskedMean
  expert_implied_rewards: jax.Array
  policy_implied_rewards: jax.Array


def iq_learn_online_from_terms(
    extras: IQLearnOnlineExtras, *, mix: float, td_weight: float, chi2_on_mixture: bool = False
) -> jax.Array:
  """The scalar online IQLearn loss from its (possibly cross-device summed) terms."""
  chi2 = extras.expert_chi2.mean()
  if chi2_on_mixture:
    chi2 = (1 - mix) * chi2 + mix * extras.policy_chi2.mean()
  value_term = extras.policy_value_gap.mean() - extras.expert_value_gap.mean()
  return extras.expert_nll.mean() + td_weight * chi2 + mix * value_term


def iq_learn_online(
    expert_stats: TokenStats,
    policy_stats: TokenStats,
    *,
    expert_where,
    policy_where,
    mix: float,
    gamma: float,
    td_weight: float,
    expert_terminal=None,
    expert_bootstrap=None,
    policy_terminal=None,
    policy_bootstrap=None,
    chi2_on_mixture: bool = False,
) -> tuple[jax.Array, IQLearnOnlineExtras]:
  """Online IQLearn: expert tokens plus tokens sampled from the current policy.

      L = E_E[v − q] + λ·E_E[r̂²] + α·( E_π[v − γ v_next] − E_E[v − γ v_next] )

  The value term is taken on the mixture `(1−α)ρE + αρπ`; `α = 0` gives the
  offline loss. With `chi2_on_mixture=True` the χ² term is `λ·E_mix[r̂²]`.
  Each `E` is a masked token mean over its own batch. Sampling carries no
  gradient (the policy tokens are data); `policy_stats` must come from the
  current model so that the value term trains it.

  Args:
    expert_stats: `TokenStats` `[B_E, T_E]` on demonstrations.
    policy_stats: `TokenStats` `[B_π, T_π]` on policy samples (any shape).
    expert_where, policy_where: response masks matching each batch.
    mix: policy mix-in `α ∈ [0, 1]`.
    gamma: discount `γ ∈ [0, 1]`.
    td_weight: `λ ≥ 0`.
    expert_terminal, expert_bootstrap, policy_terminal, policy_bootstrap:
      per batch, as in `next_state_values` (sampled responses cut at the
      length limit are truncated and need a bootstrap).
    chi2_on_mixture: put the χ² term on the mixture instead of expert tokens.

  Returns:
    `(loss, IQLearnOnlineExtras)`, `loss` a float32 scalar.
  """
  fn = "iq_learn_online"
  _checks.check_scalar_range(fn, "mix", mix, 0.0, 1.0)
  _checks.check_scalar_range(fn, "td_weight", td_weight, 0.0, float("inf"))
  eq, ev, ev_next, er, ew = _td_terms(
      fn, expert_stats, expert_where, gamma, expert_terminal, expert_bootstrap
  )
  _, pv, pv_next, pr, pw = _td_terms(
      fn, policy_stats, policy_where, gamma, policy_terminal, policy_bootstrap
  )
  extras = IQLearnOnlineExtras(
      expert_nll=masked_sum_count(ev - eq, ew),
      expert_chi2=masked_sum_count(jnp.square(er), ew),
      policy_chi2=masked_sum_count(jnp.square(pr), pw),
      expert_value_gap=masked_sum_count(ev - gamma * ev_next, ew),
      policy_value_gap=masked_sum_count(pv - gamma * pv_next, pw),
      expert_implied_rewards=er,
      policy_implied_rewards=pr,
  )
  loss = iq_learn_online_from_terms(
      extras, mix=mix, td_weight=td_weight, chi2_on_mixture=chi2_on_mixture
  )
  return loss, extras
