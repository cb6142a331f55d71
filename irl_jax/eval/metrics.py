"""Evaluation statistics: reward-ranking quality (Spearman) and sample diversity (BLEU, distinct-n).

The rank statistics wrap `scipy.stats` and BLEU wraps `sacrebleu`; this module only fixes their
conventions (documented on each function) and validates inputs. `distinct_n` has no maintained
equivalent and is computed here.
"""

from __future__ import annotations

import functools

import numpy as np
import sacrebleu
import scipy.stats


def rankdata(x) -> np.ndarray:
  """Ranks `1..n` of a 1-D array, ties sharing their average rank (`scipy.stats.rankdata`).

  Values are compared as float64. Raises `ValueError` for input that is not 1-D or holds NaN
  (scipy would propagate NaN ranks instead).
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"rankdata: expected a 1-D array, got shape {x.shape}.")
  if np.isnan(x).any():
    raise ValueError(f"rankdata: input holds {int(np.isnan(x).sum())} NaN values.")
  return scipy.stats.rankdata(x, method="average").astype(np.float64)


def spearman(x, y) -> float:
  """Spearman rank correlation of two equally long 1-D arrays (`scipy.stats.spearmanr`).

  Ties share their average rank (the Pearson correlation of the `rankdata` ranks). Returns NaN,
  without a warning, when the correlation is undefined: fewer than 2 values, or either input
  constant (scipy would emit a `ConstantInputWarning`). Raises `ValueError` for inputs of
  different shapes, not 1-D, or holding NaN.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman: expected two 1-D arrays of one length, got {x.shape}, {y.shape}.")
  rx, ry = rankdata(x), rankdata(y)  # validates NaN; ranks are constant iff the values are
  if len(rx) < 2 or np.all(rx == rx[0]) or np.all(ry == ry[0]):
    return float("nan")
  return float(scipy.stats.spearmanr(rx, ry).statistic)


@functools.cache
def _bleu_metric(max_n: int, epsilon: float) -> sacrebleu.metrics.BLEU:
  return sacrebleu.metrics.BLEU(tokenize="none", smooth_method="floor", smooth_value=epsilon,
                                max_ngram_order=max_n, effective_order=True)


def bleu(hypothesis, references, *, max_n: int = 4, epsilon: float = 0.1) -> float:
  """Sentence BLEU in [0, 1] of a token sequence against reference token sequences (`sacrebleu`).

  Inputs are sequences of hashable tokens (words, token ids, ...), already tokenised: tokens are
  compared by equality only. Each distinct token is mapped to one whitespace-free symbol and the
  sequences are scored as space-joined strings by `sacrebleu.metrics.BLEU` with
  `tokenize="none"` (no further tokenisation, case kept), so tokens holding spaces, empty
  tokens and `1` vs `"1"` stay distinct.

  Conventions (sacrebleu's): uniform weights over 1..`max_n`-grams; counts clipped by the
  maximum count in any one reference; brevity penalty `exp(1 - r / c)` when `c < r`, with `r`
  the reference length closest to the hypothesis length `c` (the shorter on a tie); smoothing
  "floor" = Chen & Cherry (2014) method 1: an order with n-grams but no match gets precision
  `epsilon / count`; effective order: orders the hypothesis is too short to have (`n > c`)
  are left out of the geometric mean rather than scored. A hypothesis sharing no token with any
  reference, and an empty hypothesis or reference list, score 0.
  """
  if max_n < 1:
    raise ValueError(f"bleu: max_n must be at least 1, got {max_n}.")
  hypothesis, references = list(hypothesis), [list(r) for r in references]
  if not hypothesis or not references:
    return 0.0
  symbols = {}
  for seq in (hypothesis, *references):
    for token in seq:
      symbols.setdefault(token, str(len(symbols)))

  def text(seq):
    return " ".join(symbols[t] for t in seq)

  metric = _bleu_metric(max_n, epsilon)
  score = metric.sentence_score(text(hypothesis), [text(r) for r in references]).score
  return min(score / 100.0, 1.0)  # sacrebleu's percent can round to 1 ulp above 100


def self_bleu(samples, *, max_n: int = 4) -> float:
  """Mean `bleu` of each sample against all the others (lower is more diverse)."""
  samples = list(samples)
  if len(samples) < 2:
    raise ValueError(f"self_bleu needs at least 2 samples, got {len(samples)}.")
  return float(np.mean([bleu(s, samples[:i] + samples[i + 1:], max_n=max_n)
                        for i, s in enumerate(samples)]))


def distinct_n(samples, n: int) -> float:
  """Distinct n-grams over all n-grams in the samples (higher is more diverse; 0 if none)."""
  grams = [g for s in samples for g in (tuple(s[i:i + n]) for i in range(len(s) - n + 1))]
  return len(set(grams)) / len(grams) if grams else 0.0
