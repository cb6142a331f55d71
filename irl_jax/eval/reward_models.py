"""Reward-model evaluation: preference accuracy and calibration, reward distributions, and
agreement of a recovered reward with a true one (host-side NumPy, not differentiated).

- `preference_metrics(chosen, rejected)`: held-out accuracy of a reward model on preference
  pairs, the calibration of its Bradley–Terry probabilities `σ(r_c − r_r)` (expected
  calibration error, Brier score, log loss) and the margin distribution;
- `reward_distribution(rewards)`: mean, spread and quantiles of a batch of rewards (the
  scale a policy stage sees; watch it drift between reward-model refreshes);
- `ranking_accuracy(pred, true)`: the fraction of pairs of items that a predicted reward
  orders as the true reward does (true ties left out, predicted ties count one half);
- `recovery_metrics(pred, true, labels, threshold)`: the reward-recovery report of
  max-margin IRL (`irl_jax.losses.max_margin`): ranking accuracy and Spearman correlation
  with the true reward, and accuracy/precision/recall/F1 of `pred ≥ threshold` as a
  classifier of the true labels.

Every function refuses NaN, shapes that differ and empty input with a `ValueError` naming
the argument.
"""

from __future__ import annotations

import numpy as np

from irl_jax.eval.metrics import spearman
from irl_jax.eval.prompt_selection import binary_metrics

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _vector(x, name: str, fn: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"{fn}: {name} must be 1-D, got shape {x.shape}.")
  if x.size == 0:
    raise ValueError(f"{fn}: {name} is empty.")
  if np.isnan(x).any():
    raise ValueError(f"{fn}: {name} holds {int(np.isnan(x).sum())} NaN values (first at "
                     f"index {int(np.argmax(np.isnan(x)))}).")
  return x


def _pair(fn: str, a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
  a, b = _vector(a, names[0], fn), _vector(b, names[1], fn)
  if a.shape != b.shape:
    raise ValueError(f"{fn}: {names[0]} {a.shape} and {names[1]} {b.shape} differ in shape.")
  return a, b


def reward_distribution(rewards) -> dict[str, float]:
  """`{"mean", "std", "min", "max", "q05", "q25", "q50", "q75", "q95", "n"}` of `[N]`
  rewards (finite or ±inf; NaN refused)."""
  r = _vector(rewards, "rewards", "reward_distribution")
  out = {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()),
         "max": float(r.max()), "n": int(r.size)}
  for q, v in zip(QUANTILES, np.quantile(r, QUANTILES), strict=True):
    out[f"q{round(100 * q):02d}"] = float(v)
  return out


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
  return -np.logaddexp(0.0, -x)


def preference_metrics(chosen_rewards, rejected_rewards, *, num_bins: int = 10) -> dict:
  """Accuracy and calibration of a reward model on held-out preference pairs.

  The model's probability that the chosen response wins is `p = σ(r_c − r_r)`
  (Bradley–Terry). Calibration is measured on both orders of each pair (`p` with
  outcome 1 and `1 − p` with outcome 0), so a model is judged on the probabilities it
  states, not on which side the data lists first.

  Args:
    chosen_rewards: `[N]` rewards of the preferred responses.
    rejected_rewards: `[N]` rewards of the others.
    num_bins: equal-width probability bins of the expected calibration error.

  Returns:
    `{"accuracy", "ties", "ece", "brier", "log_loss", "margin": reward_distribution of
    r_c − r_r, "bins": {"confidence", "frequency", "count"}, "n"}`: `accuracy` counts a
    tie as one half (the trainer's `train/accuracy` of the reward objectives counts it as
    a miss); `ece = Σ_b (n_b / 2N) |mean p_b − frequency_b|`.
  """
  fn = "preference_metrics"
  c, r = _pair(fn, chosen_rewards, rejected_rewards, ("chosen_rewards", "rejected_rewards"))
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"{fn}: num_bins must be a positive int, got {num_bins!r}.")
  with np.errstate(invalid="ignore"):
    d = c - r
  if not np.isfinite(d).all():
    raise ValueError(f"{fn}: the reward differences must be finite ({int((~np.isfinite(d)).sum())}"
                     " are not).")
  p = np.exp(_log_sigmoid(d))
  probs = np.concatenate([p, 1.0 - p])
  outcomes = np.concatenate([np.ones_like(p), np.zeros_like(p)])
  index = np.minimum((probs * num_bins).astype(np.int64), num_bins - 1)
  count = np.bincount(index, minlength=num_bins)
  conf = np.bincount(index, probs, minlength=num_bins)
  freq = np.bincount(index, outcomes, minlength=num_bins)
  safe = np.maximum(count, 1)
  ece = float(np.sum(np.abs(conf - freq)) / probs.size)
  return {"accuracy": float(np.mean((d > 0) + 0.5 * (d == 0))), "ties": int(np.sum(d == 0)),
          "ece": ece, "brier": float(np.mean((p - 1.0) ** 2)),
          "log_loss": float(-np.mean(_log_sigmoid(d))),
          "margin": reward_distribution(d),
          "bins": {"confidence": (conf / safe).tolist(), "frequency": (freq / safe).tolist(),
                   "count": count.tolist()},
          "n": int(d.size)}


def ranking_accuracy(pred, true, *, max_items: int = 8192) -> float:
  """Fraction of the pairs `(i, j)` with `true_i ≠ true_j` that `pred` orders the same way;
  a pair `pred` ties counts one half. NaN when every `true` value is equal.

  Exact over all pairs (`O(N²)` memory in blocks of rows); `N ≤ max_items`.
  """
  fn = "ranking_accuracy"
  p, t = _pair(fn, pred, true, ("pred", "true"))
  if p.size > max_items:
    raise ValueError(f"{fn}: {p.size} items exceed max_items={max_items} (all pairs are "
                     "compared); subsample or raise max_items.")
  agree, pairs = 0.0, 0
  block = max(1, 2 ** 22 // p.size)
  for start in range(0, p.size, block):
    dt = np.sign(t[start:start + block, None] - t[None, :])
    dp = np.sign(p[start:start + block, None] - p[None, :])
    counted = dt != 0
    pairs += int(counted.sum())
    agree += float(np.sum((dp == dt) & counted) + 0.5 * np.sum((dp == 0) & counted))
  return agree / pairs if pairs else float("nan")


def recovery_metrics(pred, true, labels, threshold: float) -> dict[str, float]:
  """How well a recovered reward `pred` agrees with the true reward on the same items.

  Args:
    pred: `[N]` recovered rewards.
    true: `[N]` true rewards.
    labels: `[N]` 0/1 true classes (e.g. 1 = "no toxic token"), the classification target.
    threshold: `pred ≥ threshold` predicts class 1 (e.g. the midpoint between the mean
      recovered reward of the two policies' training completions: no true label used).

  Returns:
    `{"ranking_accuracy", "spearman"}` against `true` and `{"accuracy", "precision",
    "recall", "f1", "base_rate", "predicted_rate", "n"}` of the classifier
    (`irl_jax.eval.binary_metrics`); the majority-class accuracy is
    `max(base_rate, 1 − base_rate)`.
  """
  fn = "recovery_metrics"
  p, t = _pair(fn, pred, true, ("pred", "true"))
  if not np.isfinite(threshold):
    raise ValueError(f"{fn}: threshold must be finite, got {threshold!r}.")
  y = np.asarray(labels)
  if y.shape != p.shape:
    raise ValueError(f"{fn}: labels {y.shape} and pred {p.shape} differ in shape.")
  out = binary_metrics(y, (p >= threshold).astype(np.float32))
  out["ranking_accuracy"] = ranking_accuracy(p, t)
  out["spearman"] = spearman(p, t)
  return out
