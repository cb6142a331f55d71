"""Training part of a model: `partition_params`, `merge_params` and `PartialModelDef` with
`make_train`, against the full model trained with a masked optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.train import (
    PartialModelDef,
    merge_params,
    partition_params,
    registry,
    split_model,
)
from irl_jax.train.compiled import make_train

CFG = models.ModelConfig(model_type="llama", vocab_size=11, hidden_size=16, num_layers=3,
                         num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                         max_position_embeddings=32)


def top_layer(name):
  return name.startswith("layers/2/") or name.startswith("final_norm/")


def lm_data(n=16, t=10, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, CFG.vocab_size, (n, t)).astype(np.int32)
  ids[:, 0] = 1
  loss = np.zeros((n, t), bool)
  loss[:, 4:] = True
  return {"input_ids": ids, "segment_ids": np.ones((n, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)), "loss_mask": loss}


def test_partition_and_merge_round_trip():
  _, params = split_model(models.Transformer(CFG, rngs=nnx.Rngs(0)))
  train, frozen = partition_params(params, top_layer)
  names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(train)}
  assert names and all("[2]" in n or "final_norm" in n for n in names)
  assert len(jax.tree.leaves(train)) + len(jax.tree.leaves(frozen)) == len(
      jax.tree.leaves(params))
  merged = merge_params(train, frozen)
  jax.tree.map(np.testing.assert_array_equal, merged, params)
  with pytest.raises(ValueError, match="no parameter is trainable"):
    partition_params(params, lambda name: False)


def test_partial_training_matches_a_masked_optimizer_on_the_full_model():
  model_def, params = split_model(models.Transformer(CFG, rngs=nnx.Rngs(0)))
  train0, frozen = partition_params(params, top_layer)
  data = lm_data()
  objective = registry.get("mle").build()
  tx = optax.adam(1e-2)
  run = make_train(lambda _: train0, PartialModelDef(model_def, frozen), objective, tx, data,
                   steps=6, batch_size=4)
  state, log = jax.jit(run)(jax.random.key(3))
  # Independent reference: the whole model, with the frozen leaves' updates set to zero.
  labels = jax.tree.map(lambda t, f: "train" if t is not None else "frozen",
                        train0, frozen, is_leaf=lambda x: x is None)
  masked = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  full = make_train(lambda _: params, model_def, objective, masked, data, steps=6,
                    batch_size=4)
  ref_state, ref_log = jax.jit(full)(jax.random.key(3))
  np.testing.assert_allclose(log["train"]["train/loss"], ref_log["train"]["train/loss"],
                             rtol=1e-5)
  ref_train, ref_frozen = partition_params(ref_state.params, top_layer)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               state.params, ref_train)
  jax.tree.map(np.testing.assert_array_equal, ref_frozen, frozen)
  # The trainable half moved, and only it is in the train state.
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.params, train0)
  assert max(jax.tree.leaves(moved)) > 1e-3
  assert len(jax.tree.leaves(state.params)) == len(jax.tree.leaves(train0))
  # Seeds vmapped over the trainable half share the frozen one (an unbatched argument).

  def one(frozen_half, key):
    run = make_train(lambda _: train0, PartialModelDef(model_def, frozen_half), objective,
                     tx, data, steps=2, batch_size=4)
    return run(key)[0].params

  out = jax.jit(jax.vmap(one, in_axes=(None, 0)))(frozen, jax.random.split(jax.random.key(0),
                                                                           3))
  assert all(x.shape[0] == 3 for x in jax.tree.leaves(out))
