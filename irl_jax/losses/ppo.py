"""PPO for language models with a learned value head (docs/objectives.md §9.4).

Each sampled response is one episode of the token MDP (§1.3): state
`s_t = (x, y_<t)`, action `y_t`, and the episode ends after the row's last
response token (the value after it is 0). The sequence score `R` of a reward
function is paid at that last token and every token pays a KL penalty to the
frozen reference (the InstructGPT / TRL reward shaping):

    r_t = −β·(log π_old(y_t|s_t) − log π_ref(y_t|s_t)) + [t = last]·R

Generalised advantage estimation runs backwards over the response tokens:

    δ_t = r_t + γ·V_old(s_t') − V_old(s_t)    (t' the row's next response token; V = 0 after
    A_t = δ_t + γλ·A_t'                         the last one, where the episode ends)
    R_t = A_t + V_old(s_t)                      (the value target, "returns")

and the loss per token, with `ρ_t = π_θ/π_old`, is the clipped surrogate plus
the clipped value loss:

    ℓ_t = −min(ρ_t Â_t, clip(ρ_t, 1−ε, 1+ε) Â_t)
          + c_V · ½·max((V_t − R_t)², (clip(V_t, V_old,t − κ, V_old,t + κ) − R_t)²)

reduced by an explicit normaliser (`irl_jax.losses.reductions.Normaliser`).
`Â` is usually `whiten(A, where)`.

Dimensions: `N` rows (sampled responses), `T` positions aligned with the
targets (position `t` scores the token `y_t`).

References:
  Schulman et al. 2017, "Proximal Policy Optimization Algorithms"; Schulman et
  al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation"; Ouyang et al. 2022, "Training language models to follow
  instructions with human feedback" (InstructGPT); Huang et al. 2024, "The N+
  Implementation Details of RLHF with PPO".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.losses import _checks
from irl_jax.losses.reductions import MaskedMean, Normaliser, masked_sum_count, normalise


def _masked(name: str, fn: str, x, where, dtype) -> jax.Array:
  return jnp.where(where, _checks.as_float(name, fn, x, dtype), 0)


def kl_shaped_rewards(scores, log_probs, ref_log_probs, *, where, kl_coef: float) -> jax.Array:
  """Per-token rewards `[N, T]`: a KL penalty on every response token, the score at the last.

      r_t = −β·(log π_old(y_t|s_t) − log π_ref(y_t|s_t)) + [t = last response token]·R

  Args:
    scores: `[N]` sequence scores `R` (the reward function's output).
    log_probs: `[N, T]` log-probs of the sampled tokens under the sampling
      policy `π_old`.
    ref_log_probs: `[N, T]` log-probs under the frozen reference.
    where: `[N, T]` response mask; a row's last true position receives its
      score.
    kl_coef: `β ≥ 0`.

  Returns:
    `[N, T]` float32 rewards, 0 where masked; a row with no response token is
    all zeros (its score is dropped).
  """
  fn = "kl_shaped_rewards"
  _checks.check_rank(fn, "scores", scores, 1, "[N]")
  _checks.check_rank(fn, "log_probs", log_probs, 2, "[N, T]")
  n, t = _checks.check_same_shape(fn, log_probs=log_probs, ref_log_probs=ref_log_probs)
  if jnp.shape(scores)[0] != n:
    raise ValueError(f"{fn}: `scores` has shape {tuple(jnp.shape(scores))}, expected "
                     f"[N]=({n},) to match log_probs {(n, t)}.")
  _checks.check_scalar_range(fn, "kl_coef", kl_coef, 0.0, float("inf"))
  dtype = _checks.compute_dtype(scores, log_probs, ref_log_probs)
  where = _checks.as_mask("where", fn, where, (n, t))
  lp = _masked("log_probs", fn, log_probs, where, dtype)
  lr = _masked("ref_log_probs", fn, ref_log_probs, where, dtype)
  score = _checks.as_float("scores", fn, scores, dtype)
  idx = jnp.arange(t)
  last = jnp.max(jnp.where(where, idx, -1), axis=1)  # -1: an empty row has no last token
  at_last = idx[None, :] == last[:, None]
  return jnp.where(where, -kl_coef * (lp - lr), 0) + jnp.where(at_last, score[:, None], 0)


def token_gae(rewards, values, *, where, gamma: float, lam: float
              ) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimates over each row's response tokens.

      δ_t = r_t + γ·V(s_t') − V(s_t),   A_t = δ_t + γλ·A_t',   R_t = A_t + V(s_t)

  where `t'` is the row's next response token; after the last one the episode
  has ended (`V = 0`, `A = 0`). Positions outside `where` are skipped by the
  recursion (their rewards and values are never read) and get `A = R = 0`.
  Computed with one reverse `lax.scan` over `T`.

  Args:
    rewards: `[N, T]` per-token rewards (e.g. `kl_shaped_rewards`).
    values: `[N, T]` `V_old(s_t)` of the sampling policy's value head.
    where: `[N, T]` response mask.
    gamma: discount `γ` in [0, 1].
    lam: GAE `λ` in [0, 1] (1: Monte Carlo returns minus `V`; 0: one-step TD).

  Returns:
    `(advantages, returns)`, both `[N, T]` float32, 0 where masked.
  """
  fn = "token_gae"
  _checks.check_rank(fn, "rewards", rewards, 2, "[N, T]")
  shape = _checks.check_same_shape(fn, rewards=rewards, values=values)
  _checks.check_scalar_range(fn, "gamma", gamma, 0.0, 1.0)
  _checks.check_scalar_range(fn, "lam", lam, 0.0, 1.0)
  dtype = _checks.compute_dtype(rewards, values)
  where = _checks.as_mask("where", fn, where, shape)
  r = _masked("rewards", fn, rewards, where, dtype)
  v = _masked("values", fn, values, where, dtype)

  def body(carry, x):
    next_value, next_adv = carry
    r_t, v_t, w_t = x
    adv = r_t + gamma * next_value - v_t + gamma * lam * next_adv
    adv = jnp.where(w_t, adv, 0)
    return (jnp.where(w_t, v_t, next_value), jnp.where(w_t, adv, next_adv)), adv

  zeros = jnp.zeros(shape[:1], dtype)
  _, adv = jax.lax.scan(body, (zeros, zeros), (r.T, v.T, where.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(where, adv + v, 0)


def whiten(x, where, *, shift_mean: bool = True, ddof: int = 0, eps: float = 1e-8) -> jax.Array:
  """Masked normalisation to zero mean and unit variance over all positions of `where`.

      μ = Σ w·x / Σ w,   σ² = Σ w·(x − μ)² / (Σ w − ddof),   x̂ = (x − μ) / sqrt(σ² + eps)

  (`x̂ + μ` with `shift_mean=False`, which rescales but keeps the mean). The
  statistics pool every row, so call it on the whole batch (the trainer's
  sampler does), not on micro-batches.

  Args:
    x: values of any shape (e.g. `[N, T]` advantages).
    where: mask of `x`'s shape.
    shift_mean: subtract the mean (True) or keep it.
    ddof: delta degrees of freedom of the variance (static): 0 population
      (default), 1 sample (TRL's `masked_whiten`).
    eps: added to the variance.

  Returns:
    Float32 (at least) values of `x`'s shape, 0 where masked; all zeros when
    `where` is empty. With `Σ w ≤ ddof` the variance is taken as 0.
  """
  fn = "whiten"
  if not isinstance(ddof, int | np.integer) or ddof < 0:
    raise ValueError(f"{fn}: `ddof` must be a non-negative int, got ddof={ddof!r}.")
  _checks.check_scalar_range(fn, "eps", eps, 0.0, float("inf"))
  dtype = _checks.compute_dtype(x)
  where = _checks.as_mask("where", fn, where, jnp.shape(x))
  x = _masked("x", fn, x, where, dtype)
  mean = masked_sum_count(x, where).mean()
  centred = jnp.where(where, x - mean, 0)
  count = jnp.sum(where, dtype=dtype)
  dof = count - ddof
  variance = jnp.where(dof > 0, jnp.sum(jnp.square(centred)) / jnp.where(dof > 0, dof, 1), 0)
  out = centred * jax.lax.rsqrt(variance + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(where, out, 0)


class PPOExtras(NamedTuple):
  """Diagnostics of `ppo_losses`.

  Attributes:
    per_token_loss: `[N, T]` `ℓ_t` (policy term plus `vf_coef` × value term),
      zero where masked.
    loss_terms: the `(sum, count)` of the loss under the chosen normaliser;
      sum across devices/micro-batches, then `.mean()`.
    policy_loss: the clipped-surrogate term under the same normaliser
      (`loss = policy_loss + vf_coef·value_loss`).
    value_loss: the clipped value loss `½·max(...)` under the same normaliser.
    clip_fraction: token fraction where the clipped policy branch is active.
    approx_kl: token mean of `(ρ − 1) − log ρ`, an unbiased non-negative
      estimate of `KL(π_old ‖ π_θ)` on the samples of `π_old`.
    value_clip_fraction: token fraction where the clipped value branch is the
      larger one.
    ratio: `[N, T]` `ρ_t`, one where masked.
  """

  per_token_loss: jax.Array
  loss_terms: MaskedMean
  policy_loss: MaskedMean
  value_loss: MaskedMean
  clip_fraction: MaskedMean
  approx_kl: MaskedMean
  value_clip_fraction: MaskedMean
  ratio: jax.Array


def ppo_losses(
    log_probs,
    old_log_probs,
    advantages,
    values,
    old_values,
    returns,
    *,
    where,
    clip_epsilon: float = 0.2,
    value_clip: float | None = 0.2,
    vf_coef: float = 0.1,
    normaliser: Normaliser = "token",
    log_ratio_clip: float | None = 20.0,
) -> tuple[jax.Array, PPOExtras]:
  """PPO's clipped surrogate plus its clipped value loss, reduced by an explicit normaliser.

      ℓ_t = −min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t)
            + c_V·½·max((V_t − R_t)², (clip(V_t, V_old,t − κ, V_old,t + κ) − R_t)²)

  Args:
    log_probs: `[N, T]` `log π_θ` of the sampled tokens (differentiated).
    old_log_probs: `[N, T]` log-probs under the sampling policy (stop-gradient).
    advantages: `[N, T]` `A_t` (usually whitened; stop-gradient).
    values: `[N, T]` `V_θ(s_t)` of the value head (differentiated).
    old_values: `[N, T]` `V_old(s_t)` at sampling time (stop-gradient).
    returns: `[N, T]` value targets `R_t` (stop-gradient).
    where: `[N, T]` response mask.
    clip_epsilon: `ε ≥ 0`.
    value_clip: `κ ≥ 0`, the value clip around `V_old`; None: the plain
      `½(V − R)²`.
    vf_coef: `c_V ≥ 0`.
    normaliser: `"token"` (default, TRL's token mean), `"sequence"`,
      `"sequence_all_rows"` or a positive constant (§1.6).
    log_ratio_clip: numerical guard: `log ρ` is clamped to this magnitude
      before `exp` (as in `grpo`). None disables.

  Returns:
    `(loss, PPOExtras)`, `loss` a float32 scalar.
  """
  fn = "ppo_losses"
  _checks.check_rank(fn, "log_probs", log_probs, 2, "[N, T]")
  shape = _checks.check_same_shape(
      fn, log_probs=log_probs, old_log_probs=old_log_probs, advantages=advantages,
      values=values, old_values=old_values, returns=returns)
  _checks.check_scalar_range(fn, "clip_epsilon", clip_epsilon, 0.0, float("inf"))
  if value_clip is not None:
    _checks.check_scalar_range(fn, "value_clip", value_clip, 0.0, float("inf"))
  _checks.check_scalar_range(fn, "vf_coef", vf_coef, 0.0, float("inf"))
  dtype = _checks.compute_dtype(log_probs, old_log_probs, advantages, values, old_values,
                                returns)
  where = _checks.as_mask("where", fn, where, shape)
  lp = _masked("log_probs", fn, log_probs, where, dtype)
  v = _masked("values", fn, values, where, dtype)
  lo, adv, v_old, ret = (
      jax.lax.stop_gradient(_masked(n, fn, x, where, dtype))
      for n, x in (("old_log_probs", old_log_probs), ("advantages", advantages),
                   ("old_values", old_values), ("returns", returns)))

  log_ratio = lp - lo
  if log_ratio_clip is not None:
    log_ratio = jnp.clip(log_ratio, -log_ratio_clip, log_ratio_clip)
  ratio = jnp.exp(log_ratio)
  clipped = jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
  policy = jnp.where(where, -jnp.minimum(ratio * adv, clipped * adv), 0)

  unclipped_sq = jnp.square(v - ret)
  if value_clip is None:
    value_sq, clipped_value_sq = unclipped_sq, unclipped_sq
  else:
    clipped_value_sq = jnp.square(jnp.clip(v, v_old - value_clip, v_old + value_clip) - ret)
    value_sq = jnp.maximum(unclipped_sq, clipped_value_sq)
  value = jnp.where(where, 0.5 * value_sq, 0)

  per_token = policy + vf_coef * value
  terms = normalise(per_token, where, normaliser)
  extras = PPOExtras(
      per_token_loss=per_token,
      loss_terms=terms,
      policy_loss=normalise(policy, where, normaliser),
      value_loss=normalise(value, where, normaliser),
      clip_fraction=masked_sum_count((clipped * adv < ratio * adv).astype(dtype), where),
      approx_kl=masked_sum_count(jax.lax.stop_gradient((ratio - 1) - log_ratio), where),
      value_clip_fraction=masked_sum_count((clipped_value_sq > unclipped_sq).astype(dtype),
                                           where),
      ratio=jnp.where(where, ratio, 1),
  )
  return terms.mean(), extras
