"""Tests for irl_jax/models/heads.py: reward-model parity with transformers, value head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoModelForSequenceClassification, GPT2Config, LlamaConfig

from irl_jax import losses, models
from irl_jax.models import RewardModel, ValueModel, last_token_index

IDS = np.array([[5, 6, 7, 8, 0, 0], [0, 0, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18]])
MASK = IDS != 0


def _hf_reward_checkpoint(family, path):
  if family == "llama":
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
  else:
    cfg = GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=4, n_positions=16, num_labels=1,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2)
  torch.manual_seed(0)
  ref = AutoModelForSequenceClassification.from_config(cfg)
  with torch.no_grad():
    for p in ref.parameters():
      p.normal_(0, 0.3)
  ref.eval()
  ref.save_pretrained(path)
  return ref


def _torch_rewards(ref):
  positions = np.maximum(MASK.cumsum(1) - 1, 0)
  with torch.no_grad():
    out = ref(torch.tensor(IDS), attention_mask=torch.tensor(MASK.astype(np.int64)),
              position_ids=torch.tensor(positions))
  return out.logits[:, 0].numpy()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_reward_model_matches_transformers_and_round_trips(family, tmp_path):
  ref = _hf_reward_checkpoint(family, tmp_path / "in")
  rm = models.from_pretrained(str(tmp_path / "in"))
  assert isinstance(rm, RewardModel)
  want = _torch_rewards(ref)
  got = jax.jit(lambda m, i, a: m(i, attention_mask=a))(rm, IDS, MASK)
  assert got.shape == (3,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=1e-5)

  models.save_pretrained(rm, str(tmp_path / "out"))
  again = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
  np.testing.assert_allclose(_torch_rewards(again), want, atol=1e-6)


def test_last_token_index_and_bradley_terry_gradient():
  np.testing.assert_array_equal(last_token_index(MASK), [3, 5, 5])
  np.testing.assert_array_equal(last_token_index(np.zeros((1, 4), bool)), [0])
  backbone = models.Transformer(
      models.ModelConfig(model_type="llama", vocab_size=40, hidden_size=16, num_layers=1,
                         num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                         max_position_embeddings=16),
      rngs=nnx.Rngs(0))
  rm = RewardModel(backbone, rngs=nnx.Rngs(1))

  def loss(rm):
    r = rm(IDS, attention_mask=MASK)
    return jnp.mean(losses.bradley_terry(r[:1], r[1:2]))

  grads = nnx.grad(loss)(rm)
  assert float(jnp.abs(grads.score.kernel[...]).sum()) > 0
  assert float(jnp.abs(grads.backbone.embed[...]).sum()) > 0
  # Padding never changes a reward: extra right padding leaves row 0 unchanged.
  padded = np.concatenate([IDS, np.zeros((3, 2), IDS.dtype)], 1)
  r1 = rm(IDS, attention_mask=MASK)
  r2 = rm(padded, attention_mask=padded != 0)
  np.testing.assert_allclose(r1, r2, atol=1e-6)


def test_value_model_per_token():
  backbone = models.Transformer(
      models.ModelConfig(model_type="gpt2", vocab_size=40, hidden_size=16, num_layers=1,
                         num_heads=2, num_kv_heads=2, head_dim=8, intermediate_size=32,
                         max_position_embeddings=16, norm="layer", mlp="plain",
                         activation="gelu_tanh", positions="learned", tie_embeddings=True),
      rngs=nnx.Rngs(0))
  vm = ValueModel(backbone, rngs=nnx.Rngs(1))
  values = vm(IDS, attention_mask=MASK)
  assert values.shape == IDS.shape and values.dtype == jnp.float32
  # Causal: a value at t depends only on tokens ≤ t.
  changed = IDS.copy()
  changed[2, 4:] = 1
  v2 = vm(changed, attention_mask=changed != 0)
  np.testing.assert_allclose(values[2, :4], v2[2, :4], atol=1e-6)
  assert not np.allclose(values[2, 4:], v2[2, 4:])
