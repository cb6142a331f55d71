"""Group-relative policy optimisation and dynamic reward scaling (docs/objectives.md §9).

For a group of `G` responses to one prompt with rewards `R_i`,

    A_i = (R_i − mean_G R) / (std_G R + eps)        (or without the std),

and per token, with `ρ_t = π_θ/π_old`,

    J_t = min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A) − β·KL_t,
    KL_t = π_ref/π_θ − log(π_ref/π_θ) − 1             (the "k3" estimator).

The normaliser that turns `J_t` into a scalar is an explicit argument (see
`irl_jax.losses.reductions.Normaliser`). Groups with zero reward spread have
zero advantages and carry no signal.

GRPO-S (DR-IRL) scales each prompt's advantages, `A_i ← α(q)·A_i`, with
`α = α_D · α_M` normalised to batch mean 1: the data hardness
`α_D = s(δ)/mean_category s(δ)` with `δ = 1 − W` (`W` the mean over
demonstration sentences of the maximum cosine similarity to the policy's
sentences) and the model responsiveness `α_M`, the ratio of the prompt's
reward gap to its category's mean gap. The squashing `s` (a sigmoid) is a
**reconstruction**.

Dimensions: `B` rows (`B = P·G`, groups contiguous), `T` positions, `G`
group size, `P` prompts, `S` sentences, `E` embedding width, `C` categories.

References:
  Shao et al. 2024, "DeepSeekMath" (GRPO). "Inverse RL with Dynamic Reward
  Scaling for LLM Alignment" (DR-IRL, GRPO-S).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.losses import _checks
from irl_jax.losses.reductions import (
  MaskedMean,
  Normaliser,
  masked_sum_count,
  normalise,
  safe_divide,
)


def grpo_advantages(
    rewards,
    *,
    group_size: int,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    std_ddof: int = 0,
) -> jax.Array:
  """Group-relative advantages `A_i = (R_i − mean_G R) / (std_G R + eps)`, `[B]`.

      std_G R = sqrt( Σ_i (R_i − mean_G R)² / (G − std_ddof) )

  Differs from TRL: TRL's `GRPOTrainer` uses `torch.std`'s default, the sample
  standard deviation (`std_ddof=1`, Bessel-corrected), and `eps = 1e-4`; the
  default here is the population standard deviation (`std_ddof=0`) and
  `eps = 1e-6`. Pass `std_ddof=1, eps=1e-4` to reproduce TRL's advantages.
  The two differ by the factor `sqrt((G − 1)/G)` on the std (≈ 13% for G = 4).

  Args:
    rewards: `[B]` sequence rewards, `B = P·G`, each group's `G` samples
      contiguous (as the sampler returns them).
    group_size: `G` (static).
    scale_by_std: divide by the group's standard deviation; False gives the
      mean-centred variant.
    eps: added to the standard deviation.
    std_ddof: delta degrees of freedom of the standard deviation (static):
      0 (default) population, 1 sample (TRL). Must be less than `G`.

  Returns:
    `[B]` float32 advantages; 0 for every member of a zero-spread group.
  """
  fn = "grpo_advantages"
  _checks.check_rank(fn, "rewards", rewards, 1, "[B]")
  rewards = _checks.as_float("rewards", fn, rewards)
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(
        f"{fn}: batch of {rewards.shape[0]} rewards is not a whole number of groups of "
        f"group_size={group_size}."
    )
  if not isinstance(std_ddof, int | np.integer) or std_ddof < 0:
    raise ValueError(f"{fn}: `std_ddof` must be a non-negative int, got std_ddof={std_ddof!r}.")
  if scale_by_std and std_ddof >= group_size:
    raise ValueError(
        f"{fn}: std_ddof={std_ddof} leaves no degrees of freedom in groups of "
        f"group_size={group_size}; the sample std needs group_size ≥ 2."
    )
  groups = rewards.reshape(-1, group_size)
  # Centre on each group's first reward before averaging: a zero-spread group
  # then has exactly zero deviations (a float32 mean of G equal values is off
  # by an ulp, which the division by std + eps would magnify).
  shifted = groups - groups[:, :1]
  centred = shifted - jnp.mean(shifted, axis=1, keepdims=True)
  if scale_by_std:
    variance = jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (group_size - std_ddof)
    centred = centred / (jnp.sqrt(variance) + eps)
  return centred.reshape(-1)


class GRPOExtras(NamedTuple):
  """Diagnostics of `grpo`.

  Attributes:
    per_token_loss: `[B, T]` `−J_t`, zero where masked.
    loss_terms: the `(sum, count)` of the loss under the chosen normaliser;
      sum across devices/micro-batches, then `.mean()`.
    kl: `[B, T]` `KL_t` (k3), zero where masked.
    ratio: `[B, T]` `ρ_t`, one where masked.
    mean_kl: token mean of `KL_t` as `(sum, count)`.
    clip_fraction: token fraction where the clipped branch is active.
  """

  per_token_loss: jax.Array
  loss_terms: MaskedMean
  kl: jax.Array
  ratio: jax.Array
  mean_kl: MaskedMean
  clip_fraction: MaskedMean


def grpo(
    logps,
    old_logps,
    ref_logps,
    advantages,
    *,
    where,
    normaliser: Normaliser,
    clip_epsilon: float = 0.2,
    kl_coef: float = 0.04,
    log_ratio_clip: float | None = 20.0,
) -> tuple[jax.Array, GRPOExtras]:
  """GRPO clipped surrogate with the k3 KL, reduced by an explicit normaliser.

      loss = −normalise( min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A) − β·KL_t )

  Args:
    logps: `[B, T]` `log π_θ(a_t|s_t)` of the sampled tokens (differentiated).
    old_logps: `[B, T]` log-probs under the sampling policy `π_old`
      (stop-gradient).
    ref_logps: `[B, T]` log-probs under the frozen reference (stop-gradient).
    advantages: `[B]` per sequence (e.g. `grpo_advantages`) or `[B, T]`.
    where: `[B, T]` response mask.
    normaliser: `"token"` (token mean over the batch), `"sequence"` (mean
      over non-empty rows of per-sequence means, which for equal groups is
      the group mean of sequence means), `"sequence_all_rows"` (the same
      with every row counted, an empty row as 0: TRL's "grpo" loss), or a
      positive constant (sum over a constant).
    clip_epsilon: `ε`.
    kl_coef: `β ≥ 0`.
    log_ratio_clip: numerical guard: log-ratios are clamped to this magnitude
      before `exp` (gradients vanish beyond it), so that `ρ·A` with `A = 0`
      or a far-off reference never produces inf·0 = NaN. None disables.

  Returns:
    `(loss, GRPOExtras)`, `loss` a float32 scalar.

  Differs from TRL: with `normaliser="sequence"` the mean of per-sequence
  means is over the rows that hold at least one response token, whereas
  TRL's `loss_type="grpo"` averages over all rows (an empty completion
  contributes 0 and still counts); the two agree when no row is empty.
  `normaliser="sequence_all_rows"` reproduces TRL. TRL's advantages use the
  sample std (see `grpo_advantages`).
  """
  fn = "grpo"
  _checks.check_rank(fn, "logps", logps, 2, "[B, T]")
  _checks.check_same_shape(fn, logps=logps, old_logps=old_logps, ref_logps=ref_logps)
  _checks.check_scalar_range(fn, "clip_epsilon", clip_epsilon, 0.0, float("inf"))
  _checks.check_scalar_range(fn, "kl_coef", kl_coef, 0.0, float("inf"))
  dtype = _checks.compute_dtype(logps, old_logps, ref_logps, advantages)
  where = _checks.as_mask("where", fn, where, jnp.shape(logps))
  lp, lo, lr = (
      jnp.where(where, _checks.as_float(n, fn, x, dtype), 0)
      for n, x in (("logps", logps), ("old_logps", old_logps), ("ref_logps", ref_logps))
  )
  lo, lr = jax.lax.stop_gradient(lo), jax.lax.stop_gradient(lr)
  adv = jax.lax.stop_gradient(_checks.as_float("advantages", fn, advantages, dtype))
  if adv.shape == lp.shape[:1]:
    adv = adv[:, None]
  elif adv.shape != lp.shape:
    raise ValueError(
        f"{fn}: `advantages` has shape {adv.shape}, expected [B]={lp.shape[:1]} or "
        f"[B, T]={lp.shape}."
    )

  def clamp(x):
    return x if log_ratio_clip is None else jnp.clip(x, -log_ratio_clip, log_ratio_clip)

  ratio = jnp.exp(clamp(lp - lo))
  clipped = jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
  surrogate = jnp.minimum(ratio * adv, clipped * adv)
  ref_log_ratio = clamp(lr - lp)
  kl = jnp.exp(ref_log_ratio) - ref_log_ratio - 1
  per_token = jnp.where(where, -(surrogate - kl_coef * kl), 0)
  terms = normalise(per_token, where, normaliser)
  is_clipped = (clipped * adv < ratio * adv).astype(dtype)
  extras = GRPOExtras(
      per_token_loss=per_token,
      loss_terms=terms,
      kl=jnp.where(where, kl, 0),
      ratio=jnp.where(where, ratio, 1),
      mean_kl=masked_sum_count(kl, where),
      clip_fraction=masked_sum_count(is_clipped, where),
  )
  return terms.mean(), extras


def demo_policy_similarity(
    demo_embeddings, policy_embeddings, *, demo_where, policy_where
) -> jax.Array:
  """`W` per prompt: mean over demonstration sentences of the max cosine
  similarity to the policy's sentences, `[P]` (any text encoder's embeddings).

  Args:
    demo_embeddings: `[P, S_d, E]` sentence embeddings of the demonstrations.
    policy_embeddings: `[P, S_π, E]` sentence embeddings of policy responses.
    demo_where, policy_where: `[P, S_d]`, `[P, S_π]` valid sentences.

  Returns:
    `[P]` similarities in `[−1, 1]`; 0 for a prompt with no valid sentence on
    either side.
  """
  fn = "demo_policy_similarity"
  _checks.check_rank(fn, "demo_embeddings", demo_embeddings, 3, "[P, S_d, E]")
  _checks.check_rank(fn, "policy_embeddings", policy_embeddings, 3, "[P, S_π, E]")
  dtype = _checks.compute_dtype(demo_embeddings, policy_embeddings)
  d = _checks.as_float("demo_embeddings", fn, demo_embeddings, dtype)
  p = _checks.as_float("policy_embeddings", fn, policy_embeddings, dtype)
  if d.shape[0] != p.shape[0] or d.shape[2] != p.shape[2]:
    raise ValueError(f"{fn}: embeddings disagree on P or E: {d.shape} vs {p.shape}.")
  dw = _checks.as_mask("demo_where", fn, demo_where, d.shape[:2])
  pw = _checks.as_mask("policy_where", fn, policy_where, p.shape[:2])

  def unit(x):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))

  cos = jnp.einsum("pie,pje->pij", unit(d), unit(p))
  best = jnp.max(jnp.where(pw[:, None, :], cos, -jnp.inf), axis=-1)
  best = jnp.where(jnp.any(pw, axis=-1)[:, None], best, 0)
  return masked_sum_count(best, dw, axis=-1).mean()


def dynamic_reward_scale(
    similarity, reward_gaps, categories, *, num_categories: int
) -> jax.Array:
  """GRPO-S per-prompt advantage scale `α = α_D·α_M`, normalised to batch mean 1.

      δ = 1 − W,  α_D = s(δ) / mean_{category} s(δ),   s = sigmoid (reconstruction)
      α_M = gap⁺ / mean_{category} gap⁺,   gap⁺ = max(gap, 0)

  Category means are over the prompts of the batch. Multiply each group's
  advantages by its prompt's `α` (`jnp.repeat(alpha, G) * advantages`).

  `α` is a magnitude: it must never flip the sign of an advantage, so it is
  kept non-negative. The gap is the room left to improve on a prompt; a
  negative gap (the policy's response already out-scores the demonstration)
  means no room, the same as a zero gap. Concrete `reward_gaps` with a
  negative entry raise a `ValueError` (usually a sign-convention slip: the gap
  is demonstration minus policy); traced ones are clamped at 0, so such a
  prompt gets `α = 0` and its advantages are switched off rather than
  reversed.

  Args:
    similarity: `[P]` `W` from `demo_policy_similarity`.
    reward_gaps: `[P]` the prompt's non-negative reward gap (reward of the
      demonstration minus reward of the policy's response).
    categories: `[P]` integer category of each prompt in `[0, C)`.
    num_categories: `C` (static).

  Returns:
    `[P]` non-negative scales with mean 1 (0 where a category's mean gap is
    0; all 0 if every gap is 0).
  """
  fn = "dynamic_reward_scale"
  _checks.check_rank(fn, "similarity", similarity, 1, "[P]")
  _checks.check_same_shape(
      fn, similarity=similarity, reward_gaps=reward_gaps, categories=categories
  )
  w = _checks.as_float("similarity", fn, similarity)
  gaps = _checks.as_float("reward_gaps", fn, reward_gaps, w.dtype)
  categories = jnp.asarray(categories)
  if not jnp.issubdtype(categories.dtype, jnp.integer):
    raise TypeError(f"{fn}: `categories` must be integers, got dtype {categories.dtype}.")
  if _checks.is_concrete(gaps) and gaps.size:
    lowest = float(jnp.min(gaps))
    if lowest < 0:
      raise ValueError(
          f"{fn}: `reward_gaps` contains the negative reward gap {lowest:g}; a gap is "
          "reward(demonstration) − reward(policy) ≥ 0 (a negative α would flip the sign "
          "of the advantages). Clamp it with jnp.maximum(gaps, 0) if intended."
      )
  gaps = jnp.maximum(gaps, 0)
  onehot = jax.nn.one_hot(categories, num_categories, dtype=w.dtype)  # [P, C]

  def category_mean(x):
    per_cat = safe_divide(onehot.T @ x, jnp.sum(onehot, axis=0))
    return onehot @ per_cat

  hardness = jax.nn.sigmoid(1.0 - w)
  alpha = safe_divide(hardness, category_mean(hardness)) * safe_divide(gaps, category_mean(gaps))
  return safe_divide(alpha, jnp.mean(alpha))
