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


def _ngrams(tokens, n):
  from collections import Counter

  return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis, references, *, max_n: int = 4, epsilon: float = 0.1) -> float:
  """Sentence BLEU of a token list against reference token lists.

  Uniform weights over 1..`max_n`-grams, clipped counts against the maximum
  reference count, brevity penalty against the closest reference length, and
  Chen & Cherry's smoothing 1 (`epsilon` matches for an n-gram order with none).
  """
  if not hypothesis or not references:
    return 0.0
  log_p = 0.0
  for n in range(1, max_n + 1):
    hyp = _ngrams(hypothesis, n)
    total = sum(hyp.values())
    if total == 0:
      log_p += np.log(epsilon / 1.0)
      continue
    best = {}
    for ref in references:
      for g, c in _ngrams(ref, n).items():
        best[g] = max(best.get(g, 0), c)
    matches = sum(min(c, best.get(g, 0)) for g, c in hyp.items())
    log_p += np.log((matches if matches else epsilon) / total)
  c = len(hypothesis)
  r = min((abs(len(ref) - c), len(ref)) for ref in references)[1]
  bp = 1.0 if c > r else float(np.exp(1 - r / c))
  return float(bp * np.exp(log_p / max_n))


def self_bleu(samples, *, max_n: int = 4) -> float:
  """Mean BLEU of each sample against all the others (lower is more diverse)."""
  if len(samples) < 2:
    raise ValueError(f"self_bleu needs at least 2 samples, got {len(samples)}.")
  return float(np.mean([bleu(s, samples[:i] + samples[i + 1:], max_n=max_n)
                        for i, s in enumerate(samples)]))


def distinct_n(samples, n: int) -> float:
  """Distinct n-grams over all n-grams in the samples (higher is more diverse; 0 if none)."""
  grams = [g for s in samples for g in (tuple(s[i:i + n]) for i in range(len(s) - n + 1))]
  return len(set(grams)) / len(grams) if grams else 0.0
