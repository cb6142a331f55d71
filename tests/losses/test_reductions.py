"""Tests for irl_jax/losses/reductions.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.losses import (
    MaskedMean,
    masked_sum_count,
    normalise,
    safe_divide,
    sequence_mean,
    token_mean,
)

VALUES = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]], np.float32)
WHERE = np.array([[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)


def test_golden_means():
  # token mean: (2 + 3 + 4 + 10 + 20) / 5 = 7.8
  np.testing.assert_allclose(token_mean(VALUES, WHERE), 7.8, rtol=1e-7)
  # sequence mean over non-empty rows: (3 + 15) / 2 = 9
  np.testing.assert_allclose(sequence_mean(VALUES, WHERE), 9.0, rtol=1e-7)
  s = masked_sum_count(VALUES, WHERE)
  np.testing.assert_allclose((s.sum, s.count), (39.0, 5.0))
  # constant normaliser: 39 / 12
  np.testing.assert_allclose(normalise(VALUES, WHERE, 12.0).mean(), 39.0 / 12.0, rtol=1e-7)
  np.testing.assert_allclose(normalise(VALUES, WHERE, "token").mean(), 7.8, rtol=1e-7)
  np.testing.assert_allclose(normalise(VALUES, WHERE, "sequence").mean(), 9.0, rtol=1e-7)


def test_sequence_all_rows_golden():
  # TRL's convention: every row counts, an empty row as 0: (3 + 15 + 0) / 3 = 6.
  terms = normalise(VALUES, WHERE, "sequence_all_rows")
  np.testing.assert_allclose((terms.sum, terms.count), (18.0, 3.0), rtol=1e-7)
  np.testing.assert_allclose(terms.mean(), 6.0, rtol=1e-7)
  np.testing.assert_allclose(sequence_mean(VALUES, WHERE, count_empty_rows=True), 6.0, rtol=1e-7)


@pytest.mark.parametrize("normaliser", ["token", "sequence", "sequence_all_rows", 16.0])
def test_split_batches_add_exactly(normaliser):
  rng = np.random.default_rng(0)
  values = rng.standard_normal((8, 6)).astype(np.float32)
  where = rng.random((8, 6)) < 0.6
  where[3] = False  # an empty row
  whole = jax.jit(lambda v, w: normalise(v, w, normaliser))(values, where)
  parts = [normalise(values[i : i + 2], where[i : i + 2], normaliser) for i in range(0, 8, 2)]
  total = parts[0]
  for p in parts[1:]:
    total = total + p
  if isinstance(normaliser, float):
    # Four micro-batches of a constant normaliser c each divide by 4c.
    np.testing.assert_allclose(total.mean() * 4, whole.mean(), rtol=1e-6)
  else:
    np.testing.assert_allclose(total.mean(), whole.mean(), rtol=1e-6)


def test_empty_and_nan_slots():
  values = jnp.array([[jnp.nan, jnp.inf], [1.0, 2.0]])
  where = jnp.array([[False, False], [False, False]])
  assert float(token_mean(values, where)) == 0.0
  assert float(sequence_mean(values, where)) == 0.0
  grad = jax.grad(lambda v: token_mean(v, where))(values)
  assert np.all(np.asarray(grad) == 0)
  where = jnp.array([[False, False], [True, False]])
  np.testing.assert_allclose(token_mean(values, where), 1.0)
  grad = jax.grad(lambda v: sequence_mean(v, where))(values)
  np.testing.assert_array_equal(grad, [[0, 0], [1, 0]])


def test_safe_divide_and_masked_mean_add():
  np.testing.assert_array_equal(safe_divide(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])), [0, 0.5])
  g = jax.grad(lambda d: safe_divide(1.0, d))(0.0)
  assert float(g) == 0.0
  m = MaskedMean(jnp.float32(3.0), jnp.float32(2.0)) + MaskedMean(jnp.float32(1), jnp.float32(2))
  np.testing.assert_allclose(m.mean(), 1.0)


def test_bad_inputs():
  with pytest.raises(ValueError, match="unknown normaliser 'batch'"):
    normalise(VALUES, WHERE, "batch")
  with pytest.raises(ValueError, match="normaliser"):
    normalise(VALUES, WHERE, -1.0)
  with pytest.raises(TypeError, match="bool"):
    token_mean(VALUES, WHERE.astype(np.float32))
  with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
    token_mean(VALUES, WHERE[:, :3])
