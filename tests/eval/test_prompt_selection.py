"""Tests for irl_jax/eval/prompt_selection.py: prompt choice and scoring on hand-built tables,
binary metrics on a hand example and against an independent formula, and the LightGBM reward
model on a toy problem whose label is a known function of the features."""

import numpy as np
import pytest

from irl_jax.eval import prompt_selection as ps

# correct[q, p]: 5 queries, 3 prompts. Prompt 1 is best overall (3 of 5); prompt 0 alone
# answers query 3; no prompt answers query 2.
CORRECT = np.array([[1, 1, 0],
                    [0, 1, 1],
                    [0, 0, 0],
                    [1, 0, 0],
                    [0, 1, 0]])


def test_best_of_n_picks_the_row_argmax_with_ties_to_the_lowest_index():
  scores = np.array([[0.1, 0.9, 0.3],
                     [0.5, 0.2, 0.7],
                     [0.4, 0.4, 0.1],      # a tie: prompt 0
                     [0.8, 0.1, 0.05],
                     [0.2, 0.6, 0.1]])
  chosen = ps.best_of_n(scores)
  assert chosen.shape == (5,)
  np.testing.assert_array_equal(chosen, [1, 2, 0, 0, 1])
  # Queries 0, 1, 3, 4 are answered by their chosen prompt, query 2 by none.
  assert ps.selection_accuracy(CORRECT, chosen) == pytest.approx(4 / 5)


def test_best_single_prompt_oracle_and_selection_accuracy_on_a_hand_table():
  assert ps.best_single_prompt(CORRECT) == 1                # column means 2/5, 3/5, 1/5
  assert ps.selection_accuracy(CORRECT, 1) == pytest.approx(3 / 5)
  assert ps.selection_accuracy(CORRECT, [0, 0, 0, 0, 0]) == pytest.approx(2 / 5)
  assert ps.selection_accuracy(CORRECT, [2, 2, 1, 0, 1]) == pytest.approx(3 / 5)
  assert ps.oracle_accuracy(CORRECT) == pytest.approx(4 / 5)  # query 2 has no correct prompt
  # Ties between columns go to the lowest index.
  assert ps.best_single_prompt([[1, 1], [0, 0]]) == 0
  assert ps.best_single_prompt_by_score([[0.2, 0.9], [0.6, 0.1]]) == 1   # means 0.4, 0.5
  # Booleans are 0/1.
  assert ps.oracle_accuracy(CORRECT.astype(bool)) == pytest.approx(4 / 5)


def test_pair_features_are_query_major():
  qe = np.array([[1.0], [2.0]])
  pe = np.array([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]])
  f = ps.pair_features(qe, pe)
  assert f.shape == (6, 3) and f.dtype == np.float32
  np.testing.assert_array_equal(f.reshape(2, 3, 3)[1, 2], [2.0, 30.0, 31.0])
  np.testing.assert_array_equal(f.reshape(2, 3, 3)[0, 1], [1.0, 20.0, 21.0])


def test_binary_metrics_on_a_hand_example():
  labels = [1, 1, 1, 0, 0, 0, 0, 0]
  probs = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.0]
  # Threshold 0.5 (>=): predicted 1 at indices 0, 1, 3, 6 -> TP 2, FP 2, FN 1, TN 3.
  m = ps.binary_metrics(labels, probs)
  assert m["accuracy"] == pytest.approx(5 / 8)
  assert m["precision"] == pytest.approx(2 / 4)
  assert m["recall"] == pytest.approx(2 / 3)
  assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))   # 4/7
  assert m["f1"] == pytest.approx(4 / 7)
  assert m["base_rate"] == pytest.approx(3 / 8)
  assert m["predicted_rate"] == pytest.approx(4 / 8)
  assert m["n"] == 8
  # A higher threshold predicts 1 at index 0 only: TP 1, FP 0, FN 2.
  m = ps.binary_metrics(labels, probs, threshold=0.8)
  assert (m["precision"], m["recall"]) == (1.0, pytest.approx(1 / 3))


def test_binary_metrics_match_the_confusion_matrix_formula_on_random_data():
  rng = np.random.default_rng(0)
  for _ in range(20):
    y = rng.integers(0, 2, 200)
    p = rng.uniform(size=200)
    m = ps.binary_metrics(y, p, threshold=0.4)
    pred = p >= 0.4
    cm = np.zeros((2, 2), int)           # cm[true, predicted], counted independently
    np.add.at(cm, (y, pred.astype(int)), 1)
    _tn, fp, fn, tp = cm.ravel()
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    # F1 as the harmonic form 2TP / (2TP + FP + FN).
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_binary_metrics_are_zero_not_nan_without_positives():
  m = ps.binary_metrics([0, 0, 1], [0.1, 0.2, 0.3])          # nothing predicted positive
  assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
  assert m["accuracy"] == pytest.approx(2 / 3)
  m = ps.binary_metrics([0, 0], [0.9, 0.1])                  # no positive label
  assert m["recall"] == 0.0 and m["f1"] == 0.0 and m["base_rate"] == 0.0
  assert all(np.isfinite(v) for v in m.values())


def _toy(rng, n_queries, n_prompts, specialised=False):
  """Queries and prompts in 3-D; prompt `p` suits query `q` when `p[0] > 0` for queries with
  `q[0] > 0` and when `p[1] > 0` for the others (a known function of the features, with a
  query-dependent best prompt); the third coordinates are noise. `specialised` prompts suit
  one kind of query only (`p[0]` and `p[1]` of opposite signs)."""
  def away_from_zero(n):   # coordinates in ±[0.25, 1.25]: a margin around every boundary
    return (rng.choice([-1, 1], (n, 3)) * rng.uniform(0.25, 1.25, (n, 3))).astype(np.float32)

  qe, pe = away_from_zero(n_queries), away_from_zero(n_prompts)
  if specialised:
    pe[:, 1] = -np.sign(pe[:, 0]) * np.abs(pe[:, 1])
  correct = np.where(qe[:, :1] > 0, pe[None, :, 0] > 0, pe[None, :, 1] > 0).astype(int)
  return qe, pe, correct


def test_reward_model_separates_a_toy_problem_and_picks_the_right_prompts():
  pytest.importorskip("lightgbm")
  rng = np.random.default_rng(1)
  qe, pe, correct = _toy(rng, 100, 40)
  feats = ps.pair_features(qe, pe)
  rm = ps.fit_prompt_reward_model(feats[:, :3], feats[:, 3:], correct.reshape(-1),
                                  random_state=0, n_jobs=1)
  # Held-out queries and held-out prompts.
  qt, pt, ct = _toy(rng, 100, 6, specialised=True)
  probs = rm.predict(qt, pt)
  assert probs.shape == (100, 6) and probs.dtype == np.float32
  assert np.all((probs >= 0) & (probs <= 1))
  m = ps.binary_metrics(ct.reshape(-1), probs.reshape(-1))
  assert m["accuracy"] >= 0.9 and m["f1"] >= 0.9
  # No single specialised prompt suits both kinds of query; best-of-N picks per query.
  single = ps.selection_accuracy(ct, ps.best_single_prompt(ct))
  assert single < 0.8
  assert ps.selection_accuracy(ct, ps.best_of_n(probs)) >= 0.9 > single
  # Parameters pass through: a single boosting round of a single leaf predicts one value.
  flat = ps.fit_prompt_reward_model(feats[:, :3], feats[:, 3:], correct.reshape(-1),
                                    n_estimators=1, num_leaves=2, min_child_samples=10000,
                                    n_jobs=1)
  assert np.unique(flat.predict(qt, pt)).size == 1


def test_fit_raises_naming_the_argument():
  pytest.importorskip("lightgbm")
  qe = np.zeros((4, 2))
  pe = np.ones((4, 3))
  y = np.array([0, 1, 0, 1])
  with pytest.raises(ValueError, match="prompt_emb"):
    ps.fit_prompt_reward_model(qe, pe[:3], y)
  with pytest.raises(ValueError, match="labels"):
    ps.fit_prompt_reward_model(qe, pe, y[:3])
  with pytest.raises(ValueError, match=r"labels.*0/1"):
    ps.fit_prompt_reward_model(qe, pe, [0, 2, 1, 0])
  with pytest.raises(ValueError, match=r"labels.*both"):
    ps.fit_prompt_reward_model(qe, pe, [1, 1, 1, 1])
  bad = qe.copy()
  bad[1, 0] = np.nan
  with pytest.raises(ValueError, match=r"query_emb.*NaN"):
    ps.fit_prompt_reward_model(bad, pe, y)
  with pytest.raises(ValueError, match="query_emb"):
    ps.fit_prompt_reward_model(np.zeros(4), pe, y)
  rm = ps.fit_prompt_reward_model(np.arange(8.0).reshape(4, 2), pe, y, min_child_samples=1,
                                  n_jobs=1)
  with pytest.raises(ValueError, match="query_emb/prompt_emb"):
    rm.predict(np.zeros((2, 3)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"prompt_emb.*NaN"):
    rm.predict(np.zeros((2, 2)), np.full((2, 3), np.nan))


def test_selection_functions_raise_naming_the_argument():
  with pytest.raises(ValueError, match=r"scores.*empty"):
    ps.best_of_n(np.zeros((3, 0)))
  with pytest.raises(ValueError, match=r"scores.*NaN"):
    ps.best_of_n([[0.1, np.nan]])
  with pytest.raises(ValueError, match="scores"):
    ps.best_of_n([0.1, 0.2])
  with pytest.raises(ValueError, match="correct"):
    ps.best_single_prompt(np.zeros((2, 0)))
  with pytest.raises(ValueError, match=r"correct.*0/1"):
    ps.oracle_accuracy([[0.5, 1.0]])
  with pytest.raises(ValueError, match="chosen"):
    ps.selection_accuracy(CORRECT, [0, 1])
  with pytest.raises(ValueError, match="chosen"):
    ps.selection_accuracy(CORRECT, [0, 1, 2, 3, 0])       # prompt 3 does not exist
  with pytest.raises(ValueError, match="chosen"):
    ps.selection_accuracy(CORRECT, [0.0, 1.0, 0.0, 1.0, 0.0])
  with pytest.raises(ValueError, match="probs"):
    ps.binary_metrics([0, 1], [0.5])
  with pytest.raises(ValueError, match="probs"):
    ps.binary_metrics([0, 1], [0.5, np.nan])
  with pytest.raises(ValueError, match="labels"):
    ps.binary_metrics([0, 3], [0.5, 0.5])
  with pytest.raises(ValueError, match="threshold"):
    ps.binary_metrics([0, 1], [0.5, 0.5], threshold=1.0)


def test_missing_lightgbm_names_the_extra(monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "lightgbm", None)   # `import lightgbm` now fails
  with pytest.raises(ImportError, match=r"irl_jax\[prompt_oirl\]"):
    ps.fit_prompt_reward_model(np.zeros((2, 1)), np.ones((2, 1)), [0, 1])
