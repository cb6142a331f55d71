"""Query-dependent prompt evaluation and selection from offline records (Prompt-OIRL).

Sun et al. 2023, "Query-Dependent Prompt Evaluation and Optimization with Offline
Inverse RL": offline records `(query x, prompt p, correct?)` from evaluations of a
language model train a reward model `R̂(x, p) ≈ P(correct | x, p)`, a gradient-boosted-tree
classifier on embeddings of the query and the prompt, with binary cross-entropy. At test
time the prompt `p* = argmax_p R̂(x, p)` among `P` candidates is chosen for each query
(best-of-N) and the language model is queried once, with `p*`.

This module holds the pieces, all host-side NumPy (not differentiated):

- `fit_prompt_reward_model`: the classifier (LightGBM, the optional extra
  `irl_jax[prompt_oirl]`) on `[query embedding, prompt embedding]` features;
  `PromptRewardModel.predict` scores every `(query, prompt)` pair of a table.
- `best_of_n`, `best_single_prompt`, `selection_accuracy`, `oracle_accuracy`: choosing
  prompts and scoring the choice on a correctness table `correct [Q, P]`.
- `binary_metrics`: accuracy, precision, recall, F1 and the base rate of a classifier's
  thresholded probabilities.

Dimensions: `Q` queries, `P` candidate prompts, `Dq`/`Dp` embedding sizes, `N` records.
Bad input raises `ValueError` naming the argument; no NaN is passed on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_DEFAULT_LIGHTGBM = dict(n_estimators=200, learning_rate=0.05, num_leaves=15,
                         min_child_samples=10, subsample=0.8, subsample_freq=1,
                         colsample_bytree=0.5, verbose=-1)


def _matrix(x, name: str, *, rows: int | None = None) -> np.ndarray:
  """`x` as a finite float32 `[N, D]` array (`N == rows` when given), else `ValueError`."""
  a = np.asarray(x, np.float32)
  if a.ndim != 2 or a.shape[1] < 1:
    raise ValueError(f"{name}: expected a [N, D] array with D >= 1, got shape {a.shape}.")
  if rows is not None and a.shape[0] != rows:
    raise ValueError(f"{name}: has {a.shape[0]} rows, expected {rows}.")
  if a.shape[0] < 1:
    raise ValueError(f"{name}: is empty (no rows).")
  bad = ~np.isfinite(a)
  if bad.any():
    raise ValueError(f"{name}: holds {int(bad.sum())} NaN or infinite values.")
  return a


def _binary(x, name: str, *, ndim: int) -> np.ndarray:
  """`x` as an int32 array of 0/1 with `ndim` dimensions, none of them empty."""
  a = np.asarray(x)
  if a.ndim != ndim or a.size == 0:
    raise ValueError(f"{name}: expected a non-empty {ndim}-D array, got shape {a.shape}.")
  if a.dtype == bool:
    return a.astype(np.int32)
  if not np.issubdtype(a.dtype, np.number) or not np.all((a == 0) | (a == 1)):
    raise ValueError(f"{name}: must hold only 0/1 (or booleans).")
  return a.astype(np.int32)


def _scores(x, name: str) -> np.ndarray:
  a = np.asarray(x, np.float32)
  if a.ndim != 2 or a.shape[0] < 1:
    raise ValueError(f"{name}: expected a [Q, P] array with Q >= 1, got shape {a.shape}.")
  if a.shape[1] < 1:
    raise ValueError(f"{name}: the candidate set is empty (P = 0).")
  if np.isnan(a).any():
    raise ValueError(f"{name}: holds {int(np.isnan(a).sum())} NaN values.")
  return a


def pair_features(query_emb, prompt_emb) -> np.ndarray:
  """Features `[Q·P, Dq + Dp]` of every (query, prompt) pair, query-major.

  Row `q·P + p` is `[query_emb[q], prompt_emb[p]]`, so `features.reshape(Q, P, -1)` indexes
  pairs as `[q, p]`.

  Args:
    query_emb: `[Q, Dq]` query embeddings.
    prompt_emb: `[P, Dp]` prompt embeddings.
  """
  qe = _matrix(query_emb, "query_emb")
  pe = _matrix(prompt_emb, "prompt_emb")
  q, p = len(qe), len(pe)
  return np.concatenate([np.repeat(qe, p, axis=0), np.tile(pe, (q, 1))], axis=1)


@dataclasses.dataclass(frozen=True)
class PromptRewardModel:
  """A fitted reward model `R̂(x, p)`: `predict(query_emb [Q, Dq], prompt_emb [P, Dp])` gives
  the probability `[Q, P]` that each prompt makes the language model answer each query
  correctly.

  Attributes:
    booster: the fitted `lightgbm.Booster` (binary objective: it predicts probabilities).
    query_dim: `Dq`, the query embedding size it was fitted on.
    prompt_dim: `Dp`, the prompt embedding size it was fitted on.
  """

  booster: object
  query_dim: int
  prompt_dim: int

  def predict(self, query_emb, prompt_emb) -> np.ndarray:
    """`[Q, P]` float32 probabilities `R̂(x_q, p)` for every query and candidate prompt."""
    qe = _matrix(query_emb, "query_emb")
    pe = _matrix(prompt_emb, "prompt_emb")
    if qe.shape[1] != self.query_dim or pe.shape[1] != self.prompt_dim:
      raise ValueError(f"query_emb/prompt_emb: embedding sizes ({qe.shape[1]}, {pe.shape[1]}) "
                       f"differ from the fitted ({self.query_dim}, {self.prompt_dim}).")
    probs = self.booster.predict(pair_features(qe, pe))
    return np.asarray(probs, np.float32).reshape(len(qe), len(pe))


def fit_prompt_reward_model(query_emb, prompt_emb, labels, **lightgbm_params) -> PromptRewardModel:
  """Fit `R̂(x, p)` by binary cross-entropy on offline records (Sun et al. 2023).

  The records are one row per (query, prompt) pair: features `[query_emb[i], prompt_emb[i]]`,
  label 1 when the language model answered the query correctly under the prompt. The
  classifier is LightGBM's gradient-boosted trees (`lightgbm.train` with `objective="binary"`,
  i.e. cross-entropy on the logits), with this module's defaults overridden by
  `lightgbm_params`: LightGBM parameters under any of their names (e.g. `num_leaves`,
  `learning_rate`, `random_state`, `n_jobs`); `n_estimators` is the number of boosting rounds.
  LightGBM uses every core unless told otherwise: on a shared machine pass `n_jobs=1` (its
  threads spin-wait, and small fits can then take seconds instead of milliseconds).

  Args:
    query_emb: `[N, Dq]` embedding of each record's query.
    prompt_emb: `[N, Dp]` embedding of each record's prompt.
    labels: `[N]` 0/1 (or bool): was the answer correct.
    **lightgbm_params: LightGBM parameters (`n_estimators`: boosting rounds).

  Returns:
    A `PromptRewardModel`.

  Raises:
    ImportError: LightGBM is not installed.
    ValueError: shapes that disagree, labels other than 0/1, a single class (nothing to
      separate), or NaN/infinite embeddings.
  """
  qe = _matrix(query_emb, "query_emb")
  pe = _matrix(prompt_emb, "prompt_emb", rows=len(qe))
  y = _binary(labels, "labels", ndim=1)
  if len(y) != len(qe):
    raise ValueError(f"labels: has {len(y)} entries, expected {len(qe)} (one per record).")
  if y.min() == y.max():
    raise ValueError(f"labels: all {len(y)} records have label {int(y[0])}; a classifier needs "
                     "both correct and incorrect records.")
  try:
    import lightgbm
  except ImportError as e:
    raise ImportError("fit_prompt_reward_model needs LightGBM: pip install "
                      "'irl_jax[prompt_oirl]' (or pip install lightgbm).") from e
  params = {**_DEFAULT_LIGHTGBM, **lightgbm_params, "objective": "binary"}
  rounds = int(params.pop("n_estimators", 100))
  train_set = lightgbm.Dataset(np.concatenate([qe, pe], axis=1), label=y, params=params)
  booster = lightgbm.train(params, train_set, num_boost_round=rounds)
  return PromptRewardModel(booster=booster, query_dim=qe.shape[1], prompt_dim=pe.shape[1])


def best_of_n(scores) -> np.ndarray:
  """`[Q]` int index of the highest-scoring prompt of each query (`argmax_p scores[q, p]`;
  ties go to the lowest index).

  Args:
    scores: `[Q, P]` reward-model scores of every candidate prompt for each query.
  """
  return np.argmax(_scores(scores, "scores"), axis=1).astype(np.int64)


def best_single_prompt(correct) -> int:
  """The prompt with the highest accuracy over all queries (ties: lowest index).

  Args:
    correct: `[Q, P]` 0/1, prompt `p` answered query `q` correctly. Pass mean reward-model
      scores to `best_single_prompt_by_score` instead when correctness is unknown.
  """
  c = _binary(correct, "correct", ndim=2)
  return int(np.argmax(c.mean(axis=0)))


def best_single_prompt_by_score(scores) -> int:
  """The prompt with the highest mean score over queries (ties: lowest index).

  Args:
    scores: `[Q, P]` reward-model scores.
  """
  return int(np.argmax(_scores(scores, "scores").mean(axis=0)))


def selection_accuracy(correct, chosen) -> float:
  """Fraction of queries answered correctly when query `q` is asked with prompt `chosen[q]`.

  Args:
    correct: `[Q, P]` 0/1 correctness table.
    chosen: `[Q]` int prompt index per query, or one int for every query.
  """
  c = _binary(correct, "correct", ndim=2)
  q, p = c.shape
  idx = np.asarray(chosen)
  if idx.ndim == 0:
    idx = np.full(q, idx)
  if idx.shape != (q,):
    raise ValueError(f"chosen: expected shape ({q},) (one prompt per query), got {idx.shape}.")
  if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= p:
    raise ValueError(f"chosen: must hold integer prompt indices in [0, {p}).")
  return float(c[np.arange(q), idx].mean())


def oracle_accuracy(correct) -> float:
  """Fraction of queries that some candidate prompt answers correctly (the best any
  per-query selection can reach).

  Args:
    correct: `[Q, P]` 0/1 correctness table.
  """
  return float(_binary(correct, "correct", ndim=2).max(axis=1).mean())


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict[str, float]:
  """Classification metrics of probabilities thresholded at `threshold` (`probs >= threshold`
  predicts 1).

  Precision is 0 when nothing is predicted positive, recall 0 when no label is positive, F1
  0 when precision + recall is 0 (never NaN).

  Args:
    labels: `[N]` 0/1 true labels.
    probs: `[N]` predicted probabilities of label 1, in [0, 1].
    threshold: decision threshold in (0, 1).

  Returns:
    `{"accuracy", "precision", "recall", "f1", "base_rate", "predicted_rate", "n"}`:
    `base_rate` is the fraction of positive labels (the accuracy of always predicting the
    majority class is `max(base_rate, 1 − base_rate)`), `predicted_rate` that of positive
    predictions.
  """
  y = _binary(labels, "labels", ndim=1)
  p = np.asarray(probs, np.float32)
  if p.shape != y.shape:
    raise ValueError(f"probs: shape {p.shape} differs from labels' {y.shape}.")
  if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
    raise ValueError("probs: must be probabilities in [0, 1] without NaN.")
  if not 0 < threshold < 1:
    raise ValueError(f"threshold: must lie in (0, 1), got {threshold!r}.")
  pred = (p >= threshold).astype(np.int32)
  tp = int(np.sum((pred == 1) & (y == 1)))
  fp = int(np.sum((pred == 1) & (y == 0)))
  fn = int(np.sum((pred == 0) & (y == 1)))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"accuracy": float(np.mean(pred == y)), "precision": float(precision),
          "recall": float(recall), "f1": float(f1), "base_rate": float(y.mean()),
          "predicted_rate": float(pred.mean()), "n": len(y)}
