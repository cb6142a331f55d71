"""Tests for irl_jax/eval/metrics.py."""

import numpy as np
import pytest

from irl_jax.eval import rankdata, spearman


def test_rankdata_ties_get_average_rank():
  np.testing.assert_array_equal(rankdata([10, 20, 10, 30]), [1.5, 3, 1.5, 4])


def test_spearman_golden():
  # Ranks x: 1 2 3 4 5, y: 5 6 7 8 7 -> ranks 1 2 3.5 5 3.5.
  # Centred: [-2 -1 0 1 2] and [-2 -1 0.5 2 0.5]; Σ = 4+1+0+2+1 = 8;
  # Σx² = 10, Σy² = 4+1+0.25+4+0.25 = 9.5; ρ = 8 / sqrt(95) = 0.8207826816681233.
  assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
  assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    spearman([1.0, np.nan], [1.0, 2.0])
  with pytest.raises(ValueError, match=r"\(2,\), \(3,\)"):
    spearman([1, 2], [1, 2, 3])
