"""Tests for irl_jax/eval/reward_models.py and the trainer's `max_margin` objective, against
references written out loop by loop from the definitions."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import eval as ev
from irl_jax import models
from irl_jax.train import registry


def _ranking_reference(pred, true):
  agree = pairs = 0.0
  for i, j in itertools.combinations(range(len(pred)), 2):
    if true[i] == true[j]:
      continue
    pairs += 1
    if pred[i] == pred[j]:
      agree += 0.5
    elif (pred[i] > pred[j]) == (true[i] > true[j]):
      agree += 1
  return agree / pairs


def test_ranking_accuracy_matches_pair_by_pair_count():
  rng = np.random.default_rng(0)
  true = rng.integers(0, 4, 40).astype(float)     # many ties in the true reward
  pred = np.round(true + rng.normal(0, 1.5, 40))   # and some in the prediction
  assert ev.ranking_accuracy(pred, true) == pytest.approx(_ranking_reference(pred, true), 1e-12)
  assert ev.ranking_accuracy(true, true) == 1.0
  assert ev.ranking_accuracy(-true, true) == 0.0
  assert ev.ranking_accuracy(np.zeros(40), true) == 0.5
  assert math.isnan(ev.ranking_accuracy(pred, np.ones(40)))


def test_preference_metrics_accuracy_calibration_and_distribution():
  rng = np.random.default_rng(1)
  chosen, rejected = rng.normal(0.5, 1, 200), rng.normal(0, 1, 200)
  rejected[:3] = chosen[:3]                                            # three ties
  m = ev.preference_metrics(chosen, rejected, num_bins=5)
  d = chosen - rejected
  assert m["accuracy"] == pytest.approx((np.sum(d > 0) + 1.5) / 200)
  assert m["ties"] == 3
  p = 1 / (1 + np.exp(-d))
  # ECE over both orders, bin by bin.
  ece = 0.0
  for b in range(5):
    lo, hi = b / 5, (b + 1) / 5
    probs = np.concatenate([p, 1 - p])
    outcome = np.concatenate([np.ones(200), np.zeros(200)])
    inside = (probs >= lo) & ((probs < hi) if b < 4 else (probs <= hi))
    if inside.any():
      ece += inside.sum() / 400 * abs(probs[inside].mean() - outcome[inside].mean())
  assert m["ece"] == pytest.approx(ece, abs=1e-12)
  assert m["brier"] == pytest.approx(np.mean((1 - p) ** 2))
  assert m["log_loss"] == pytest.approx(np.mean(np.log1p(np.exp(-d))))
  assert sum(m["bins"]["count"]) == 400
  assert m["margin"]["q50"] == pytest.approx(np.median(d))
  # A reward model whose probabilities are right is calibrated: outcomes drawn from them.
  d = rng.normal(0, 2, 20000)
  won = rng.random(20000) < 1 / (1 + np.exp(-d))
  calibrated = ev.preference_metrics(np.where(won, d, 0.0), np.where(won, 0.0, d))
  assert calibrated["ece"] < 0.02
  overconfident = ev.preference_metrics(np.where(won, 5 * d, 0.0), np.where(won, 0.0, 5 * d))
  assert overconfident["ece"] > 0.1


def test_reward_distribution_quantiles():
  r = np.arange(101, dtype=float)
  out = ev.reward_distribution(r)
  assert (out["mean"], out["min"], out["max"], out["n"]) == (50.0, 0.0, 100.0, 101)
  assert (out["q05"], out["q25"], out["q50"], out["q75"], out["q95"]) == (5, 25, 50, 75, 95)
  assert out["std"] == pytest.approx(np.std(r))


def test_recovery_metrics_classifier_and_rank_agreement():
  true = np.array([0.0, -1.0, -2.0, 0.0, -0.5, -3.0])
  labels = (true == 0).astype(int)
  pred = np.array([2.0, 0.5, -1.0, 1.0, 1.5, -2.0])
  out = ev.recovery_metrics(pred, true, labels, threshold=1.0)
  # pred >= 1: rows 0, 3, 4 -> tp 2 (rows 0, 3), fp 1 (row 4), fn 0.
  assert out["accuracy"] == pytest.approx(5 / 6)
  assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == 1.0
  assert out["f1"] == pytest.approx(0.8)
  assert out["ranking_accuracy"] == pytest.approx(_ranking_reference(pred, true))
  assert out["spearman"] == pytest.approx(ev.spearman(pred, true))


@pytest.mark.parametrize("call, message", [
    (lambda: ev.ranking_accuracy([1.0, np.nan], [0.0, 1.0]), "pred holds 1 NaN values"),
    (lambda: ev.ranking_accuracy([1.0, 2.0], [0.0]), "differ in shape"),
    (lambda: ev.preference_metrics([], []), "chosen_rewards is empty"),
    (lambda: ev.preference_metrics([1.0], [2.0], num_bins=0), "num_bins"),
    (lambda: ev.preference_metrics([np.inf], [np.inf]), "must be finite"),
    (lambda: ev.recovery_metrics([1.0, 2.0], [0.0, 1.0], [0, 1, 1], 0.5), "labels"),
    (lambda: ev.recovery_metrics([1.0, 2.0], [0.0, 1.0], [0, 1], float("nan")), "threshold"),
    (lambda: ev.reward_distribution(np.zeros((2, 2))), "must be 1-D"),
])
def test_bad_inputs_name_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def _tiny_reward_model():
  cfg = models.ModelConfig(model_type="llama", vocab_size=11, hidden_size=16, num_layers=1,
                           num_heads=2, num_kv_heads=2, head_dim=8, intermediate_size=32,
                           max_position_embeddings=16)
  return models.RewardModel(models.Transformer(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))


@pytest.mark.parametrize("loss, reference", [
    ("asymmetric", lambda d: -d if d > 0 else -2 * d),
    ("hinge", lambda d: max(0.0, 0.7 - d)),
    ("logistic", lambda d: math.log1p(math.exp(-d))),
])
def test_max_margin_objective_is_the_loss_of_the_first_over_the_second(loss, reference):
  rm = _tiny_reward_model()
  rng = np.random.default_rng(2)
  ids = rng.integers(1, 11, (4, 2, 6)).astype(np.int32)
  seg = np.ones_like(ids)
  seg[1, 1, 4:] = 0                                            # a shorter base completion
  batch = {"input_ids": ids, "segment_ids": seg,
           "positions": np.broadcast_to(np.arange(6, dtype=np.int32), ids.shape).copy(),
           "rank_mask": np.array([[1, 1], [1, 1], [1, 1], [1, 0]], np.int32)}  # row 3: no pair
  spec = registry.get("max_margin")
  objective = spec.build(spec.hyperparameters(loss=loss, hinge_margin=0.7))
  (total, count), metrics = objective(rm, batch, jax.random.key(0))
  flat = ids.reshape(8, 6)
  r = np.asarray(rm(flat, attention_mask=seg.reshape(8, 6) > 0,
                    positions=batch["positions"].reshape(8, 6))).reshape(4, 2)
  d = (r[:, 0] - r[:, 1]).astype(np.float64)
  assert float(count) == 3
  assert float(total) == pytest.approx(sum(reference(x) for x in d[:3]), rel=1e-5, abs=1e-6)
  assert float(metrics["accuracy"]) == pytest.approx(np.mean(d[:3] > 0))
  grads = nnx.grad(lambda m: objective(m, batch, None)[0][0])(rm)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_max_margin_objective_refuses_bad_hyperparameters():
  with pytest.raises(ValueError, match=r"config\.objective\.max_margin\.loss: unknown loss 'hing'"):
    registry.get("max_margin").make(loss="hing")
  with pytest.raises(ValueError, match="hinge_margin must be >= 0"):
    registry.get("max_margin").make(loss="hinge", hinge_margin=-1.0)
