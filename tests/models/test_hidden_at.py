"""`Transformer.hidden_at` (the last block run at the read positions alone) equals the plain
forward pass gathered at those positions, in values and gradients, on every model family,
padding layout, packing, sliding window, rematerialisation and bfloat16; it does less
work; bad indices are refused; `RewardModel` reads its rewards through it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import losses, models
from irl_jax.models import ModelConfig, RewardModel, last_token_index

CONFIG = ModelConfig(model_type="llama", vocab_size=41, hidden_size=16, num_layers=3, num_heads=4,
                     num_kv_heads=2, head_dim=4, intermediate_size=32, max_position_embeddings=32)
GPT2_LIKE = dict(positions="learned", norm="layer", mlp="plain", activation="gelu_tanh",
                 qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True, num_kv_heads=4)
GEMMA_LIKE = dict(embed_scale=True, norm_offset=1.0, activation="gelu_tanh")
B, T = 4, 9


def _rows(layout, seed=0):
  """ids `[B, T]` and the keyword arguments of one padding layout."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, CONFIG.vocab_size, (B, T)).astype(np.int32)
  if layout == "right":
    mask = np.arange(T)[None] < np.array([[T], [6], [3], [1]])
    return np.where(mask, ids, 0), {"attention_mask": mask}
  if layout == "right_positions":  # explicit positions, as the reward-model objective gives
    mask = np.arange(T)[None] < np.array([[T], [6], [3], [1]])
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0) + np.array([[0], [2], [5], [1]])
    return np.where(mask, ids, 0), {"attention_mask": mask, "positions": positions}
  if layout == "left":
    mask = np.arange(T)[None] >= np.array([[0], [2], [5], [8]])
    return np.where(mask, ids, 0), {"attention_mask": mask}
  # packed: two or three segments per row, then padding
  seg = np.array([[1, 1, 1, 2, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1],
                  [1, 2, 2, 3, 3, 3, 3, 3, 0], [1, 1, 2, 2, 2, 2, 2, 2, 2]], np.int32)
  return np.where(seg > 0, ids, 0), {"segment_ids": seg}


def _index(kwargs, queries):
  real = kwargs["attention_mask"] if "attention_mask" in kwargs else kwargs["segment_ids"]
  last = np.asarray(last_token_index(np.asarray(real) > 0))
  if queries == "last":
    return last
  # several positions per row, repeated and out of order, padding positions included
  return np.stack([last, np.zeros(B, np.int64), last, np.full(B, T - 1)], axis=1)


@pytest.mark.parametrize("arch,window,remat,layout,queries", [
    ({}, None, False, "right", "last"),
    ({}, None, False, "left", "many"),
    ({}, None, True, "packed", "many"),
    ({}, 3, False, "right", "many"),
    (GPT2_LIKE, None, False, "left", "last"),
    (GEMMA_LIKE, None, True, "right", "many"),
    ({}, None, False, "right_positions", "last"),
])
def test_hidden_at_is_the_forward_pass_gathered(arch, window, remat, layout, queries):
  config = dataclasses.replace(CONFIG, sliding_window=window, **arch)
  model = models.Transformer(config, rngs=nnx.Rngs(1), remat=remat)
  ids, kwargs = _rows(layout)
  index = _index(kwargs, queries)
  kwargs = {k: jnp.asarray(v) for k, v in kwargs.items()}
  rows = np.arange(B) if index.ndim == 1 else np.arange(B)[:, None]

  def full(m):
    return m(jnp.asarray(ids), return_hidden=True, **kwargs)[rows, index]

  def read(m):
    return m.hidden_at(jnp.asarray(ids), jnp.asarray(index), **kwargs)

  want = np.asarray(jax.jit(full)(model))
  got = np.asarray(jax.jit(read)(model))
  assert got.shape == want.shape == (*index.shape, config.hidden_size)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)

  # Gradients of a nonlinear function of the read states, every parameter.
  model_def, params = nnx.split(model)
  weights = jnp.asarray(np.random.default_rng(3).normal(size=want.shape), jnp.float32)

  def grad(f):
    loss = lambda p: jnp.sum(jnp.sin(2.0 * f(nnx.merge(model_def, p))) * weights)
    return jax.jit(jax.grad(loss))(params)

  g_full, g_read = grad(full), grad(read)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_read), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(g_read))


def test_hidden_at_in_bfloat16_stays_close_to_float32():
  ids, kwargs = _rows("right")
  index = jnp.asarray(_index(kwargs, "last"))
  f32 = models.Transformer(CONFIG, rngs=nnx.Rngs(2))
  bf16 = models.Transformer(CONFIG, rngs=nnx.Rngs(2), dtype=jnp.bfloat16)
  want = f32(jnp.asarray(ids), return_hidden=True, **kwargs)[jnp.arange(B), index]
  got = bf16.hidden_at(jnp.asarray(ids), index, **kwargs)
  full_bf16 = bf16(jnp.asarray(ids), return_hidden=True, **kwargs)[jnp.arange(B), index]
  assert got.dtype == jnp.bfloat16
  # As close to float32 as bfloat16's own full pass is.
  err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)))
  err_full = float(jnp.max(jnp.abs(full_bf16.astype(jnp.float32) - want)))
  assert err <= 2 * err_full + 1e-2


def test_hidden_at_without_blocks_reads_the_normed_embeddings():
  model = models.Transformer(dataclasses.replace(CONFIG, num_layers=0), rngs=nnx.Rngs(0))
  ids, kwargs = _rows("right")
  index = jnp.asarray(_index(kwargs, "many"))
  want = model(jnp.asarray(ids), return_hidden=True, **kwargs)[jnp.arange(B)[:, None], index]
  np.testing.assert_array_equal(model.hidden_at(jnp.asarray(ids), index, **kwargs), want)


def test_hidden_at_does_less_work_than_the_full_pass():
  config = dataclasses.replace(CONFIG, num_layers=2, hidden_size=64, head_dim=16,
                               intermediate_size=256)
  model = models.Transformer(config, rngs=nnx.Rngs(0))
  ids = jnp.ones((2, 32), jnp.int32)
  index = jnp.array([31, 7])

  def flops(f):
    return jax.jit(f).lower(model).compile().cost_analysis()["flops"]

  full = flops(lambda m: m(ids, return_hidden=True)[jnp.arange(2), index])
  read = flops(lambda m: m.hidden_at(ids, index))
  # The last of two blocks keeps only its key and value projections (2 of the 16·D² + ...
  # per token): well under 3/4 of the full pass's work.
  assert read < 0.75 * full, (read, full)


@pytest.mark.parametrize("index,match", [
    (np.zeros((B, 2, 1), np.int32), "integer \\[B\\] or \\[B, Q\\]"),
    (np.zeros((B + 1,), np.int32), "B=4"),
    (np.zeros((B,), np.float32), "integer"),
    (np.array([0, 1, T, 2]), "outside \\[0, 9\\)"),
    (np.array([0, -1, 2, 2]), "outside \\[0, 9\\)"),
])
def test_hidden_at_refuses_bad_indices(index, match):
  model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
  ids, kwargs = _rows("right")
  with pytest.raises(ValueError, match=match):
    model.hidden_at(jnp.asarray(ids), index, **kwargs)


def test_reward_model_reads_through_hidden_at_and_matches_the_full_pass():
  """Rewards and the Bradley–Terry gradient equal those of the full forward pass pooled at
  the last real token (the reference, written here without `hidden_at`)."""
  rm = RewardModel(models.Transformer(dataclasses.replace(CONFIG, **GEMMA_LIKE),
                                      rngs=nnx.Rngs(4)), rngs=nnx.Rngs(5))
  ids, kwargs = _rows("left")
  mask = jnp.asarray(kwargs["attention_mask"])

  def reference(m):
    h = m.backbone(jnp.asarray(ids), attention_mask=mask, return_hidden=True)
    pooled = h[jnp.arange(B), last_token_index(mask)]
    return m.score(pooled)[:, 0].astype(jnp.float32)

  def bt(f):
    def loss(m):
      r = f(m)
      return jnp.mean(losses.bradley_terry(r[0::2], r[1::2]))
    return loss

  np.testing.assert_allclose(rm(ids, attention_mask=mask), reference(rm), rtol=1e-5, atol=1e-6)
  g_ref = nnx.grad(bt(reference))(rm)
  g_rm = nnx.grad(bt(lambda m: m(ids, attention_mask=mask)))(rm)
  for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_rm), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
