"""Tests for irl_jax/train/refresh.py: nearest-response similarity, the top-N plus anchors
selection, and the reward-model fine-tune on the selected records."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from irl_jax import losses, models
from irl_jax.train import refresh, registry
from irl_jax.train.state import split_model


def test_nearest_similarity_is_the_best_cosine_over_valid_responses():
  rng = np.random.default_rng(0)
  rec, pol = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
  where = np.array([True, False, True, True])
  got = np.asarray(refresh.nearest_similarity(rec, pol, policy_where=where))
  for i in range(7):
    cos = [rec[i] @ pol[j] / np.linalg.norm(rec[i]) / np.linalg.norm(pol[j])
           for j in range(4) if where[j]]
    assert got[i] == pytest.approx(max(cos), abs=1e-5)
  with pytest.raises(ValueError, match="one E"):
    refresh.nearest_similarity(rec, pol[:, :3])


def test_selection_takes_the_top_n_then_uniform_anchors_from_the_valid_rest():
  sim = jnp.array([0.1, 0.9, 0.5, 0.8, -0.2, 0.3, 0.7, 0.0])
  valid = jnp.array([True, True, True, False, True, True, True, True])   # record 3 filtered
  draws = np.asarray(jax.vmap(lambda k: refresh.select_for_refresh(
      sim, k, top_n=3, num_anchors=2, valid=valid))(jax.random.split(jax.random.key(0), 400)))
  picks = np.zeros(8)
  for idx in draws:
    assert idx[:3].tolist() == [1, 6, 2]                  # the three best valid records
    assert len(set(idx.tolist())) == 5 and 3 not in idx
    picks[idx[3:]] += 1
  # The anchors are uniform over the 4 remaining valid records (2 of 4 each time: p = 0.5).
  rest = [0, 4, 5, 7]
  np.testing.assert_allclose(picks[rest] / 400, 0.5, atol=0.1)
  assert picks[[1, 2, 3, 6]].sum() == 0


def test_selection_under_jit_and_its_errors():
  sim = jnp.linspace(0, 1, 6)
  fn = jax.jit(lambda s, k, v: refresh.select_for_refresh(s, k, top_n=2, num_anchors=1,
                                                          valid=v))
  idx = np.asarray(fn(sim, jax.random.key(0), jnp.ones(6, bool)))
  assert idx[:2].tolist() == [5, 4] and idx[2] < 4
  with pytest.raises(ValueError, match="2 records are left after filtering; a refresh needs "
                                       "top_n \\+ num_anchors = 3"):
    refresh.select_for_refresh(sim, jax.random.key(0), top_n=2, num_anchors=1,
                               valid=jnp.array([1, 1, 0, 0, 0, 0], bool))
  with pytest.raises(ValueError, match="The filter left no record at all"):
    refresh.select_for_refresh(sim, jax.random.key(0), top_n=1, num_anchors=0,
                               valid=jnp.zeros(6, bool))
  with pytest.raises(ValueError, match="exceeds the 6 records"):
    refresh.select_for_refresh(sim, jax.random.key(0), top_n=5, num_anchors=2)
  with pytest.raises(ValueError, match="top_n must be an int >= 1"):
    refresh.select_for_refresh(sim, jax.random.key(0), top_n=0, num_anchors=2)


def _preferences(rng, n, t=6, vocab=11):
  ids = rng.integers(1, vocab, (n, 2, t)).astype(np.int32)
  return {"input_ids": ids, "segment_ids": np.ones_like(ids),
          "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape).copy(),
          "rank_mask": np.ones((n, 2), np.int32)}


def test_refresh_trains_from_the_current_weights_on_the_selected_records_only():
  cfg = models.ModelConfig(model_type="llama", vocab_size=11, hidden_size=16, num_layers=1,
                           num_heads=2, num_kv_heads=2, head_dim=8, intermediate_size=32,
                           max_position_embeddings=16)
  rm_def, params = split_model(models.RewardModel(models.Transformer(cfg, rngs=nnx.Rngs(0)),
                                                  rngs=nnx.Rngs(1)))
  data = _preferences(np.random.default_rng(0), 8)
  bt = registry.get("bradley_terry")
  fn = jax.jit(refresh.make_refresh(rm_def, bt.build(bt.hyperparameters()),
                                    optax.adam(1e-2), steps=30, batch_size=4))
  new, metrics = fn(params, data, jnp.array([3]), jax.random.key(0))
  # Every row of every batch is record 3: the first loss is its Bradley–Terry loss under
  # the weights the refresh started from.
  r = rm_def.merge(params)(data["input_ids"][3], attention_mask=jnp.ones((2, 6), bool))
  assert float(metrics["train/loss"][0]) == pytest.approx(
      float(losses.bradley_terry(r[:1], r[1:])[0]), rel=1e-5)
  assert float(metrics["train/loss"][-1]) < float(metrics["train/loss"][0])
  r_new = rm_def.merge(new)(data["input_ids"][3], attention_mask=jnp.ones((2, 6), bool))
  assert float(r_new[0] - r_new[1]) > float(r[0] - r[1])
  with pytest.raises(ValueError, match="steps must be a positive int"):
    refresh.make_refresh(rm_def, bt.build(bt.hyperparameters()), optax.adam(1e-2), steps=0,
                         batch_size=4)
