"""Tests for irl_jax/models/sampling.py: cache consistency, stopping, truncation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax.models import ModelConfig, Transformer, generate
from irl_jax.models.sampling import left_align, sampling_log_probs

V = 23


def tiny_model(family: str, seed: int = 0) -> Transformer:
  common = dict(vocab_size=V, hidden_size=32, num_layers=2, head_dim=8,
                intermediate_size=48, max_position_embeddings=64, eos_token_id=3)
  if family == "gpt2":
    config = ModelConfig(model_type="gpt2", num_heads=4, num_kv_heads=4, norm="layer",
                         mlp="plain", activation="gelu_tanh", positions="learned",
                         qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True,
                         **common)
  else:  # Mistral-like: GQA, RoPE, sliding window shorter than the sequences.
    config = ModelConfig(model_type="mistral", num_heads=4, num_kv_heads=2, sliding_window=5,
                         **common)
  model = Transformer(config, rngs=nnx.Rngs(seed))
  # Larger weights than the 0.02 init so that distributions are far from uniform
  # and greedy choices are not decided by round-off.
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda x: x * 15 if x.ndim == 2 else x, state)
  return nnx.merge(graphdef, state)


MODELS = {f: tiny_model(f) for f in ("gpt2", "mistral")}
PROMPTS = jnp.array([[5, 6, 7, 8, 9], [0, 0, 10, 11, 12], [13, 14, 0, 0, 0]])
PROMPT_MASK = jnp.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], bool)


@nnx.jit
def forward(model, ids, mask):
  """The whole-sequence forward pass the sampler is checked against, compiled once per
  shape (run op by op, the step-by-step check below takes most of this file's time)."""
  return model(ids, attention_mask=mask)


def full_forward_log_probs(model, out):
  """Log-probs of each response token recomputed by one forward pass of the whole sequence."""
  logits = forward(model, out.sequences, out.attention_mask)
  p = out.prompt_ids.shape[1]
  logp = jax.nn.log_softmax(logits[:, p - 1 : -1], axis=-1)
  return jnp.take_along_axis(logp, out.tokens[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_greedy_equals_stepwise_argmax_of_full_forward(family):
  model = MODELS[family]
  out = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(0), max_new_tokens=8,
                 temperature=0.0, eos_id=-1)
  ids, mask = left_align(PROMPTS, PROMPT_MASK)
  for step in range(8):
    logits = forward(model, ids, mask)
    nxt = jnp.argmax(logits[:, -1], axis=-1)
    np.testing.assert_array_equal(out.tokens[:, step], nxt, err_msg=f"step {step}")
    ids = jnp.concatenate([ids, nxt[:, None].astype(ids.dtype)], axis=1)
    mask = jnp.concatenate([mask, jnp.ones((3, 1), bool)], axis=1)
  assert bool(jnp.all(out.response_mask)) and not bool(jnp.any(out.terminal))


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_sampled_log_probs_match_full_forward(family):
  model = MODELS[family]
  out = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(1), max_new_tokens=10,
                 temperature=1.0, num_samples=4)
  assert out.tokens.shape == (12, 10)
  recomputed = full_forward_log_probs(model, out)
  got = np.where(out.response_mask, out.log_probs, 0)
  want = np.where(out.response_mask, recomputed, 0)
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert np.all(np.asarray(out.log_probs)[~np.asarray(out.response_mask)] == 0)


def test_eos_stops_rows_and_marks_terminal():
  model = MODELS["mistral"]
  out = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(2), max_new_tokens=12,
                 temperature=1.5, num_samples=6, eos_id=(3, 4), pad_id=0)
  tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
  for row in range(tokens.shape[0]):
    hits = np.nonzero(np.isin(tokens[row], [3, 4]) & mask[row])[0]
    if len(hits):
      end = hits[0]
      assert out.terminal[row]
      assert mask[row, : end + 1].all() and not mask[row, end + 1 :].any()  # EOS included
      assert (tokens[row, end + 1 :] == 0).all()
    else:
      assert not out.terminal[row] and mask[row].all()
  assert np.asarray(out.terminal).any(), "temperature 1.5 over 72 rows should hit EOS somewhere"


def test_groups_are_contiguous_and_key_determines_samples():
  model = MODELS["gpt2"]
  a = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(3), max_new_tokens=6, num_samples=5)
  b = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(3), max_new_tokens=6, num_samples=5)
  c = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(4), max_new_tokens=6, num_samples=5)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  ids, _ = left_align(PROMPTS, PROMPT_MASK)
  np.testing.assert_array_equal(a.prompt_ids, np.repeat(np.asarray(ids), 5, axis=0))
  # Samples within a group differ (temperature 1 over a 23-token vocabulary).
  assert len({tuple(r) for r in np.asarray(a.tokens[:5])}) > 1


def test_top_k_and_top_p_restrict_support():
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
  lp = sampling_log_probs(logits, temperature=1.0, top_k=2, top_p=None)
  np.testing.assert_allclose(jnp.exp(lp), [[2 / 3, 1 / 3, 0, 0]], rtol=1e-6)
  # top_p = 0.7: 0.5 < 0.7, 0.5 + 0.25 ≥ 0.7 -> keep two tokens.
  lp = sampling_log_probs(logits, temperature=1.0, top_k=None, top_p=0.7)
  np.testing.assert_allclose(jnp.exp(lp), [[2 / 3, 1 / 3, 0, 0]], rtol=1e-6)
  lp = sampling_log_probs(logits, temperature=1.0, top_k=None, top_p=0.3)  # at least one
  np.testing.assert_allclose(jnp.exp(lp), [[1, 0, 0, 0]], rtol=1e-6)
  lp = sampling_log_probs(logits, temperature=0.5, top_k=None, top_p=None)
  np.testing.assert_allclose(jnp.exp(lp), jax.nn.softmax(2 * logits), rtol=1e-6)

  model = MODELS["mistral"]
  out = generate(model, PROMPTS, PROMPT_MASK, jax.random.key(5), max_new_tokens=6,
                 temperature=1.0, top_k=3, num_samples=4, eos_id=-1)
  recomputed_logits = forward(model, out.sequences, out.attention_mask)
  p = out.prompt_ids.shape[1]
  top3 = jax.lax.top_k(recomputed_logits[:, p - 1 : -1], 3)[1]
  assert bool(jnp.all(jnp.any(top3 == out.tokens[..., None], axis=-1)))


def test_bad_arguments():
  model = MODELS["gpt2"]
  with pytest.raises(ValueError, match="learned positions"):
    generate(model, PROMPTS, PROMPT_MASK, jax.random.key(0), max_new_tokens=64)
  with pytest.raises(ValueError, match="top_p"):
    generate(model, PROMPTS, PROMPT_MASK, jax.random.key(0), max_new_tokens=2, top_p=1.5)
  with pytest.raises(ValueError, match=r"\[B, P\]"):
    generate(model, PROMPTS, PROMPT_MASK[:, :3], jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    generate(model, PROMPTS + V, PROMPT_MASK, jax.random.key(0), max_new_tokens=2)
