"""Rank statistics for reward recovery: how well extracted rewards order outputs."""

from __future__ import annotations

import numpy as np


def rankdata(x) -> np.ndarray:
  """Ranks `1..n` of a 1-D array, ties sharing their average rank."""
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"rankdata: expected a 1-D array, got shape {x.shape}.")
  if np.isnan(x).any():
    raise ValueError(f"rankdata: input holds {int(np.isnan(x).sum())} NaN values.")
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(1, len(x) + 1)
  # Average the ranks of each group of ties.
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  return sums[inverse] / counts[inverse]


def spearman(x, y) -> float:
  """Spearman rank correlation of two equally long 1-D arrays (NaN if either is constant)."""
  x, y = np.asarray(x), np.asarray(y)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman: expected two 1-D arrays of one length, got {x.shape}, {y.shape}.")
  rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
  denom = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
  return float(np.sum(rx * ry) / denom) if denom > 0 else float("nan")
