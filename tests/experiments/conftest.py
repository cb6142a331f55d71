"""Fixtures shared by the experiment tests."""

import json

import pytest
from flax import nnx

from irl_jax import models
from irl_jax.data import char_tokenizer


@pytest.fixture
def tiny_gsm8k(tmp_path):
  """`(checkpoint directory, GSM8K-format train.jsonl)`: 36 addition questions and a tiny
  random Llama checkpoint whose character tokenizer covers their text."""
  rows = [{"question": f"What is {a} plus {b}?",
           "answer": f"{a}+{b}=<<{a}+{b}={a + b}>>{a + b}\n#### {a + b}"}
          for a in range(1, 7) for b in range(1, 7)]
  data = tmp_path / "train.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  text = "".join(r["question"] + r["answer"] for r in rows) + "Question: \nAnswer:\n"
  tokenizer = char_tokenizer("".join(sorted(set(text))))
  config = models.ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=32,
                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                              intermediate_size=64, max_position_embeddings=256)
  ckpt = tmp_path / "ckpt"
  models.save_pretrained(models.Transformer(config, rngs=nnx.Rngs(0)), str(ckpt),
                         tokenizer=tokenizer)
  return ckpt, data
