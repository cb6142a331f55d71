"""Trace-time argument checks shared by the objectives.

Every check runs on static shapes and dtypes, so it costs nothing under
`jax.jit` and raises before any computation with a message that names the
function, the argument and the shapes involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def compute_dtype(*arrays) -> jnp.dtype:
  """float32 for any floating input of lower precision; float64 stays float64.

  Objectives compute in at least float32 even when parameters and activations
  are bfloat16. float64 only occurs with `jax_enable_x64`, where it is kept so
  that gradients can be checked in double precision.
  """
  dtype = jnp.float32
  for a in arrays:
    if a is not None:
      dtype = jnp.promote_types(dtype, jnp.result_type(a))
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return dtype


def as_float(name: str, fn: str, x, dtype=None) -> jax.Array:
  """`x` as a floating array in the compute dtype; integer or bool inputs raise."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{fn}: `{name}` must be a floating array, got dtype {x.dtype}.")
  return x.astype(dtype if dtype is not None else compute_dtype(x))


def as_mask(name: str, fn: str, where, shape: Sequence[int] | None = None) -> jax.Array:
  """A boolean mask; bool and integer (0/1) inputs are accepted, floats raise."""
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_ and not jnp.issubdtype(where.dtype, jnp.integer):
    raise TypeError(
        f"{fn}: `{name}` must be a bool (or 0/1 integer) mask, got dtype {where.dtype}."
    )
  if shape is not None and tuple(where.shape) != tuple(shape):
    raise ValueError(f"{fn}: `{name}` has shape {tuple(where.shape)}, expected {tuple(shape)}.")
  return where.astype(jnp.bool_)


def check_rank(fn: str, name: str, x, rank: int, dims: str) -> None:
  if jnp.ndim(x) != rank:
    raise ValueError(
        f"{fn}: `{name}` must have rank {rank} {dims}, got shape {tuple(jnp.shape(x))}."
    )


def check_same_shape(fn: str, **arrays) -> tuple[int, ...]:
  """All named arrays (None skipped) share one shape; returns it."""
  items = [(k, tuple(jnp.shape(v))) for k, v in arrays.items() if v is not None]
  shapes = {s for _, s in items}
  if len(shapes) > 1:
    desc = ", ".join(f"{k}{list(s)}" for k, s in items)
    raise ValueError(f"{fn}: shapes must match, got {desc}.")
  return items[0][1]


def check_scalar_range(fn: str, name: str, value, lo: float, hi: float) -> None:
  """A Python-number hyperparameter within [lo, hi]; traced values are not checked."""
  if isinstance(value, jax.core.Tracer):
    return
  v = np.asarray(value)
  if v.ndim != 0:
    raise ValueError(f"{fn}: `{name}` must be a scalar, got shape {v.shape}.")
  if not (lo <= float(v) <= hi):
    raise ValueError(f"{fn}: `{name}`={float(v)} is outside [{lo}, {hi}].")


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)
