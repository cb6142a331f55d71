"""Direct preference objectives: DPO, IPO and per-step negatives (docs/objectives.md §7).

With sequence log-probs summed over response tokens — `c, r` under the
policy for the chosen and rejected responses, `c_ref, r_ref` under the
reference — the implicit reward margin is

    h = (c − c_ref) − (r − r_ref).

- DPO (sigmoid), label smoothing `ε` (conservative DPO):
  `ℓ = −(1−ε)·log σ(βh) − ε·log σ(−βh)`.
- IPO: `ℓ = (h − 1/(2β))²`; optionally on length-averaged log-probs (TRL).
- Per-step negatives: a negative response is split into steps; `Q̂_i` is the
  success rate of SFT rollouts from the prefix ending at step `i`; the step
  advantage is `A_i = Q̂_i − Q̂_{i−1}` and the first "pit" is the first step
  with the lowest `Q̂`. The positive response is paired with the negative
  prefix up to the pit and DPO is applied with `π_ref = π_SFT`. The
  equivalent advantage-weighted form is
  `ℓ = −Σ_i min(exp(A_i/β), w_max) · log π(step_i)`.

The reference log-probs come from a frozen model: `dpo` and `ipo` stop their
gradient by default (`stop_reference_gradient=True`), as `grpo` and
`inverse_q_star` do.

Dimensions: `N` pairs, `B` rows, `T` positions, `S` steps per response.

References:
  Rafailov et al. 2023, "Direct Preference Optimization". Azar et al. 2023,
  "A General Theoretical Paradigm to Understand Learning from Human
  Preferences" (IPO). Setlur et al. 2024, "RL on Incorrect Synthetic Data
  Scales the Efficiency of LLM Math Reasoning by Eight-Fold".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks
from irl_jax.losses.reductions import safe_divide


def _margin(
    fn,
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    stop_reference_gradient: bool = False,
    chosen_lengths=None,
    rejected_lengths=None,
):
  _checks.check_rank(fn, "chosen_logps", chosen_logps, 1, "[N]")
  _checks.check_same_shape(
      fn,
      chosen_logps=chosen_logps,
      rejected_logps=rejected_logps,
      ref_chosen_logps=ref_chosen_logps,
      ref_rejected_logps=ref_rejected_logps,
  )
  dtype = _checks.compute_dtype(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
  c, r, cr, rr = (
      _checks.as_float(n, fn, x, dtype)
      for n, x in (
          ("chosen_logps", chosen_logps),
          ("rejected_logps", rejected_logps),
          ("ref_chosen_logps", ref_chosen_logps),
          ("ref_rejected_logps", ref_rejected_logps),
      )
  )
  if stop_reference_gradient:
    cr, rr = jax.lax.stop_gradient(cr), jax.lax.stop_gradient(rr)
  if (chosen_lengths is None) != (rejected_lengths is None):
    raise ValueError(
        f"{fn}: pass both `chosen_lengths` and `rejected_lengths` (length-averaged "
        "log-probs) or neither (summed log-probs)."
    )
  if chosen_lengths is not None:
    lc = _lengths(fn, "chosen_lengths", chosen_lengths, c.shape, dtype)
    lr = _lengths(fn, "rejected_lengths", rejected_lengths, c.shape, dtype)
    c, cr = safe_divide(c, lc), safe_divide(cr, lc)
    r, rr = safe_divide(r, lr), safe_divide(rr, lr)
  return (c - cr) - (r - rr)


def _lengths(fn, name, lengths, shape, dtype) -> jax.Array:
  """Response lengths `[N]` (integer or floating token counts) in the compute dtype."""
  lengths = jnp.asarray(lengths)
  if lengths.dtype == jnp.bool_ or not (
      jnp.issubdtype(lengths.dtype, jnp.integer) or jnp.issubdtype(lengths.dtype, jnp.floating)
  ):
    raise TypeError(
        f"{fn}: `{name}` must be integer or floating token counts, got dtype {lengths.dtype}."
    )
  if tuple(lengths.shape) != tuple(shape):
    raise ValueError(
        f"{fn}: `{name}` has shape {tuple(lengths.shape)}, expected {tuple(shape)} [N]."
    )
  return jax.lax.stop_gradient(lengths.astype(dtype))


def preference_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps):
  """The implicit reward margin `h = (c − c_ref) − (r − r_ref)`, `[N]`."""
  return _margin(
      "preference_margin", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
  )


def dpo(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    stop_reference_gradient: bool = True,
) -> jax.Array:
  """DPO (sigmoid) loss per pair: `ℓ = −(1−ε)·log σ(βh) − ε·log σ(−βh)`.

  Args:
    chosen_logps, rejected_logps: `[N]` policy sequence log-probs (summed over
      response tokens).
    ref_chosen_logps, ref_rejected_logps: `[N]` reference sequence log-probs.
    beta: `β > 0`, the KL strength.
    label_smoothing: `ε ∈ [0, 0.5]`, the assumed label-flip rate
      (conservative DPO); 0 is plain DPO.
    stop_reference_gradient: stop gradients into `ref_chosen_logps` and
      `ref_rejected_logps` (the reference is frozen); default True. False lets
      them through (`∂ℓ/∂c_ref = −∂ℓ/∂c`), e.g. to differentiate the margin in
      all four inputs.

  Returns:
    `[N]` float32 losses.

  Example:
    >>> loss = jnp.mean(dpo(c, r, c_ref, r_ref, beta=0.1))
  """
  fn = "dpo"
  _checks.check_scalar_range(fn, "beta", beta, 1e-12, float("inf"))
  _checks.check_scalar_range(fn, "label_smoothing", label_smoothing, 0.0, 0.5)
  h = _margin(
      fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
      stop_reference_gradient=stop_reference_gradient,
  )
  z = beta * h
  # −log σ(z) = softplus(−z): finite for any z.
  return (1 - label_smoothing) * jax.nn.softplus(-z) + label_smoothing * jax.nn.softplus(z)


def ipo(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta: float,
    stop_reference_gradient: bool = True,
    chosen_lengths=None,
    rejected_lengths=None,
) -> jax.Array:
  """IPO loss per pair: `ℓ = (h − 1/(2β))²`, minimised at margin `h = 1/(2β)`.

  With response lengths `L_c`, `L_r` the margin is taken on length-averaged
  log-probs, policy and reference alike:

      h = (c/L_c − c_ref/L_c) − (r/L_r − r_ref/L_r)

  Differs from TRL: by default (docs/objectives.md §7, the IPO paper) `h` is on summed
  log-probs; TRL's `DPOTrainer` with `loss_type="ipo"` divides every sequence
  log-prob by its number of response tokens first. Pass `chosen_lengths` and
  `rejected_lengths` to reproduce TRL; the target margin `1/(2β)` is then per
  token, so `β` is not comparable between the two forms.

  Args:
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps: `[N]`
      sequence log-probs summed over response tokens, as in `dpo`.
    beta: IPO's regularisation strength `β > 0` (its `τ`).
    stop_reference_gradient: as in `dpo`; default True.
    chosen_lengths, rejected_lengths: optional `[N]` integer or floating
      numbers of response tokens of each chosen and rejected response (the
      mask sums); both or neither. A length of 0 gives an averaged log-prob
      of 0.

  Returns:
    `[N]` float32 losses.

  Example:
    >>> loss = jnp.mean(ipo(c, r, c_ref, r_ref, beta=0.1,
    ...                     chosen_lengths=mask_c.sum(-1), rejected_lengths=mask_r.sum(-1)))
  """
  fn = "ipo"
  _checks.check_scalar_range(fn, "beta", beta, 1e-12, float("inf"))
  h = _margin(
      fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
      stop_reference_gradient=stop_reference_gradient,
      chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
  )
  return jnp.square(h - 1.0 / (2.0 * beta))


def step_log_probs(token_logps, step_ids, *, where, num_steps: int) -> jax.Array:
  """Sum token log-probs into per-step log-probs, `[B, S]`.

  Args:
    token_logps: `[B, T]` `log π(a_t|s_t)`.
    step_ids: `[B, T]` integer step index of each token (e.g. the line number
      of a derivation); ids outside `[0, num_steps)` are ignored.
    where: `[B, T]` response mask.
    num_steps: `S` (static).

  Returns:
    `[B, S]` `log π(step_i)`.
  """
  fn = "step_log_probs"
  _checks.check_rank(fn, "token_logps", token_logps, 2, "[B, T]")
  _checks.check_same_shape(fn, token_logps=token_logps, step_ids=step_ids)
  logps = _checks.as_float("token_logps", fn, token_logps)
  where = _checks.as_mask("where", fn, where, logps.shape)
  onehot = jax.nn.one_hot(step_ids, num_steps, dtype=logps.dtype)  # 0 rows for bad ids.
  return jnp.einsum("bt,bts->bs", jnp.where(where, logps, 0), onehot)


class StepAdvantages(NamedTuple):
  """Step-level credit of a negative response.

  Attributes:
    advantages: `[N, S]` `A_i = Q̂_i − Q̂_{i−1}` (zero where invalid).
    first_pit: `[N]` int, the first step with the lowest `Q̂` (−1 if no step).
  """

  advantages: jax.Array
  first_pit: jax.Array


def step_advantages(step_values, *, initial_values, where=None) -> StepAdvantages:
  """Advantages `A_i = Q̂_i − Q̂_{i−1}` and the first pit of each response.

  Args:
    step_values: `[N, S]` `Q̂_i`, the estimated success rate of rollouts from
      the prefix ending at step `i`.
    initial_values: `[N]` `Q̂_{−1}`, the success rate from the prompt alone.
    where: optional `[N, S]` bool, valid steps (a contiguous prefix).

  Returns:
    `StepAdvantages(advantages [N, S], first_pit [N])`.
  """
  fn = "step_advantages"
  _checks.check_rank(fn, "step_values", step_values, 2, "[N, S]")
  values = _checks.as_float("step_values", fn, step_values)
  init = _checks.as_float("initial_values", fn, initial_values, values.dtype)
  if init.shape != values.shape[:1]:
    raise ValueError(f"{fn}: `initial_values` has shape {init.shape}, expected {values.shape[:1]}.")
  where = jnp.ones(values.shape, bool) if where is None else _checks.as_mask(
      "where", fn, where, values.shape
  )
  values = jnp.where(where, values, 0)
  previous = jnp.concatenate([init[:, None], values[:, :-1]], axis=1)
  advantages = jnp.where(where, values - previous, 0)
  lowest = jnp.where(where, values, jnp.inf)
  pit = jnp.argmin(lowest, axis=1)  # argmin returns the first minimum.
  pit = jnp.where(jnp.any(where, axis=1), pit, -1)
  return StepAdvantages(advantages=advantages, first_pit=pit.astype(jnp.int32))


def prefix_mask(where, step_ids, last_step) -> jax.Array:
  """Response mask cut after step `last_step[b]`: pair a positive with the pit prefix.

  Args:
    where: `[B, T]` response mask of the negative responses.
    step_ids: `[B, T]` step index of each token.
    last_step: `[B]` last step to keep (e.g. `first_pit`); −1 keeps nothing.

  Returns:
    `[B, T]` bool mask of the prefix up to and including `last_step`, whose
    summed log-probs are the `rejected_logps` for `dpo`.
  """
  fn = "prefix_mask"
  where = _checks.as_mask("where", fn, where)
  _checks.check_rank(fn, "where", where, 2, "[B, T]")
  _checks.check_same_shape(fn, where=where, step_ids=step_ids)
  last_step = jnp.asarray(last_step)
  if last_step.shape != where.shape[:1]:
    raise ValueError(f"{fn}: `last_step` has shape {last_step.shape}, expected {where.shape[:1]}.")
  return where & (jnp.asarray(step_ids) <= last_step[:, None])


def advantage_weighted_steps(
    step_logps, advantages, *, where, beta: float, max_weight: float
) -> jax.Array:
  """Advantage-weighted step likelihood: `ℓ = −Σ_i min(exp(A_i/β), w_max) · log π(step_i)`.

  The weights are constants (stop-gradient). Equivalent in expectation to
  per-step DPO on first-pit pairs (Setlur et al. 2024).

  Args:
    step_logps: `[N, S]` `log π(step_i)` (see `step_log_probs`).
    advantages: `[N, S]` step advantages `A_i` (see `step_advantages`).
    where: `[N, S]` valid steps.
    beta: temperature `β > 0`.
    max_weight: `w_max > 0`, the weight clip.

  Returns:
    `[N]` float32 losses.
  """
  fn = "advantage_weighted_steps"
  _checks.check_rank(fn, "step_logps", step_logps, 2, "[N, S]")
  _checks.check_same_shape(fn, step_logps=step_logps, advantages=advantages)
  _checks.check_scalar_range(fn, "beta", beta, 1e-12, float("inf"))
  _checks.check_scalar_range(fn, "max_weight", max_weight, 1e-12, float("inf"))
  logps = _checks.as_float("step_logps", fn, step_logps)
  adv = jax.lax.stop_gradient(_checks.as_float("advantages", fn, advantages, logps.dtype))
  where = _checks.as_mask("where", fn, where, logps.shape)
  logps = jnp.where(where, logps, 0)
  # min(exp(x), w) = exp(min(x, log w)): no overflow for large advantages.
  weights = jnp.exp(jnp.minimum(jnp.where(where, adv, 0) / beta, jnp.log(max_weight)))
  return -jnp.sum(jnp.where(where, weights * logps, 0), axis=1)
