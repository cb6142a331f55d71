"""Masked reductions that stay exact across devices and micro-batches.

Objectives return per-token `[B, T]` or per-example `[B]` values; the caller
reduces them. A masked mean is carried as a `MaskedMean(sum, count)` pair:
pairs from different devices or micro-batches add element-wise, and the mean
is taken once at the end, so a mean over a sharded or accumulated batch equals
the mean over the whole batch. An empty mean (count 0) is 0, never NaN.

Dimensions: `B` batch rows, `T` response positions.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks

Normaliser = Literal["token", "sequence", "sequence_all_rows"] | float
"""How a per-token loss becomes a scalar.

- `"token"`: token mean over the batch, `Σ where·ℓ / Σ where`.
- `"sequence"`: mean over non-empty rows of each row's token mean.
- `"sequence_all_rows"`: mean over all rows of each row's token mean, an empty
  row counting as 0 (TRL's GRPO convention, `Σ_b row_mean_b / B`).
- a positive float `c`: `Σ where·ℓ / c` (a constant normaliser, e.g. the
  maximum number of response tokens, as in Dr. GRPO).
"""


class MaskedMean(NamedTuple):
  """A masked mean carried as `(sum, count)`; add pairs, then call `.mean()`."""

  sum: jax.Array
  count: jax.Array

  def mean(self) -> jax.Array:
    return safe_divide(self.sum, self.count)

  def __add__(self, other):  # type: ignore[override]
    if not isinstance(other, MaskedMean):
      return NotImplemented
    return MaskedMean(self.sum + other.sum, self.count + other.count)


def safe_divide(numerator, denominator) -> jax.Array:
  """`numerator / denominator`, and 0 where the denominator is 0 (gradient too)."""
  denominator = jnp.asarray(denominator)
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def masked_sum_count(values, where, axis=None) -> MaskedMean:
  """`(Σ where·values, Σ where)` over `axis` (all axes by default).

  Values at masked positions are replaced by 0 before summing, so a NaN or
  infinity in a masked slot never reaches the sum or its gradient.
  """
  values = jnp.asarray(values)
  where = _checks.as_mask("where", "masked_sum_count", where, values.shape)
  total = jnp.sum(jnp.where(where, values, 0), axis=axis)
  count = jnp.sum(where, axis=axis, dtype=total.dtype if jnp.issubdtype(
      total.dtype, jnp.floating) else jnp.float32)
  return MaskedMean(total, count)


def token_mean(values, where) -> jax.Array:
  """Token mean over the whole batch: `Σ where·values / Σ where` (0 if empty)."""
  return masked_sum_count(values, where).mean()


def sequence_mean(values, where, *, count_empty_rows: bool = False) -> jax.Array:
  """Mean over non-empty rows (all rows with `count_empty_rows`) of each row's
  token mean. `values`, `where`: `[B, T]`."""
  return sequence_sum_count(values, where, count_empty_rows=count_empty_rows).mean()


def sequence_sum_count(values, where, *, count_empty_rows: bool = False) -> MaskedMean:
  """`(Σ_rows row token mean, number of rows)` for `[B, T]` inputs.

  The count is the number of non-empty rows, or every row `B` with
  `count_empty_rows=True` (an empty row's mean is 0; TRL's convention).
  """
  _checks.check_rank("sequence_sum_count", "values", values, 2, "[B, T]")
  rows = masked_sum_count(values, where, axis=-1)
  row_means = rows.mean()
  counted = jnp.ones_like(rows.count, bool) if count_empty_rows else rows.count > 0
  return MaskedMean(jnp.sum(row_means), jnp.sum(counted, dtype=row_means.dtype))


def normalise(values, where, normaliser: Normaliser) -> MaskedMean:
  """Reduce `[B, T]` per-token values with an explicit `Normaliser`.

  Returns the `(sum, count)` pair whose `.mean()` is the scalar loss; the pair
  adds exactly across devices and micro-batches for every normaliser (for a
  constant `c`, the count is `c` per batch, so accumulated batches divide by
  the sum of their constants).
  """
  _checks.check_rank("normalise", "values", values, 2, "[B, T]")
  if isinstance(normaliser, str):
    if normaliser == "token":
      return masked_sum_count(values, where)
    if normaliser == "sequence":
      return sequence_sum_count(values, where)
    if normaliser == "sequence_all_rows":
      return sequence_sum_count(values, where, count_empty_rows=True)
    raise ValueError(
        f"normalise: unknown normaliser {normaliser!r}; use 'token', 'sequence', "
        "'sequence_all_rows' or a positive constant."
    )
  _checks.check_scalar_range("normalise", "normaliser", normaliser, 1e-30, float("inf"))
  total = masked_sum_count(values, where).sum
  return MaskedMean(total, jnp.asarray(normaliser, total.dtype))
