"""Max-margin reward recovery (docs/objectives.md §8).

A reward model `R̂` (LM backbone + scalar head pooled at the last real token)
separates an aligned policy's completions `o⁺` from a base policy's `o⁻` on
the same prompt. With `d = R̂(o⁺) − R̂(o⁻)` the asymmetric loss is

    ℓ(d) = −d    if d > 0
    ℓ(d) = −2d   otherwise

It is unbounded below: `R̂` can grow without limit on separated pairs. The
bounded alternatives are the hinge `max(0, m − d)` and the logistic
`log(1 + e^{−d})`. The recovered reward is not identifiable; report
`reward_accuracy` across seeds and stopping points, since its spread is part
of the result.

Dimensions: `N` prompt pairs.

References:
  Joselowitz et al. 2024, "Insights from the Inverse: Reconstructing LLM
  Training Goals Through Inverse RL".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks


def _difference(fn, aligned_rewards, base_rewards):
  _checks.check_rank(fn, "aligned_rewards", aligned_rewards, 1, "[N]")
  _checks.check_same_shape(fn, aligned_rewards=aligned_rewards, base_rewards=base_rewards)
  dtype = _checks.compute_dtype(aligned_rewards, base_rewards)
  return _checks.as_float("aligned_rewards", fn, aligned_rewards, dtype) - _checks.as_float(
      "base_rewards", fn, base_rewards, dtype
  )


def max_margin(
    aligned_rewards, base_rewards, *, hinge_margin: float | None = None, logistic: bool = False
) -> jax.Array:
  """Max-margin loss per pair, `[N]`.

  Default: the asymmetric, unbounded-below loss `ℓ(d) = −d if d > 0 else −2d`
  with `d = R̂(o⁺) − R̂(o⁻)`. Bounded options (at most one):

  - `hinge_margin=m`: `ℓ(d) = max(0, m − d)`;
  - `logistic=True`: `ℓ(d) = log(1 + e^{−d})` (Bradley–Terry on the pair).

  Args:
    aligned_rewards: `[N]` `R̂(o⁺)` of the aligned policy's completions.
    base_rewards: `[N]` `R̂(o⁻)` of the base policy's completions.
    hinge_margin: `m ≥ 0` for the hinge form.
    logistic: use the logistic form.

  Returns:
    `[N]` float32 losses.
  """
  fn = "max_margin"
  d = _difference(fn, aligned_rewards, base_rewards)
  if hinge_margin is not None and logistic:
    raise ValueError(f"{fn}: choose at most one bounded form (hinge_margin or logistic).")
  if hinge_margin is not None:
    _checks.check_scalar_range(fn, "hinge_margin", hinge_margin, 0.0, float("inf"))
    return jax.nn.relu(hinge_margin - d)
  if logistic:
    return jax.nn.softplus(-d)
  return jnp.where(d > 0, -d, -2.0 * d)


def reward_accuracy(aligned_rewards, base_rewards) -> jax.Array:
  """Fraction of pairs with `R̂(o⁺) > R̂(o⁻)` (ties count as errors), a scalar."""
  d = _difference("reward_accuracy", aligned_rewards, base_rewards)
  return jnp.mean((d > 0).astype(d.dtype))
