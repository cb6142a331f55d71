"""Tiny random Hugging Face checkpoints, built once per family per test session.

Each family is a `transformers` model with 2 layers, width 32 and a 61-token
vocabulary whose parameters are redrawn from N(0, 0.3²) (norm weights from
1 ± 0.1, Gemma's `1 + w` norms from 0 ± 0.1): with the default 0.02 init the
logits are nearly zero and a parity test would pass for almost any model.
"""

import zlib

import pytest
import torch
import transformers

VOCAB = 61

_DECODER = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
)


def _hf_config(family: str) -> transformers.PretrainedConfig:
  if family == "gpt2":
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )
  if family == "llama":
    return transformers.LlamaConfig(**_DECODER)
  if family == "llama3_scaled":
    # A small theta makes the scaled frequencies matter within a few positions.
    scaling = {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    return transformers.LlamaConfig(**_DECODER, rope_theta=500.0, rope_scaling=scaling)
  if family == "llama_bias":
    return transformers.LlamaConfig(
        **_DECODER, attention_bias=True, mlp_bias=True, tie_word_embeddings=True
    )
  if family == "qwen2":
    return transformers.Qwen2Config(**_DECODER)  # q/k/v always carry biases
  if family == "mistral":
    # A window of 4 is exercised by any sequence longer than 4 tokens.
    return transformers.MistralConfig(**_DECODER, sliding_window=4)
  if family == "gemma":
    return transformers.GemmaConfig(**{**_DECODER, "num_key_value_heads": 1}, head_dim=8)
  raise ValueError(f"unknown family {family!r}")


def _reinitialise(model: torch.nn.Module, *, gemma_norms: bool) -> None:
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or ".ln_" in name:
        if name.endswith("weight"):
          p.normal_(0.0 if gemma_norms else 1.0, 0.1)
        else:
          p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, 0.3)


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
  """`get(family) -> (checkpoint_dir, torch_model)`, each built on first use."""
  cache = {}

  def get(family: str):
    if family not in cache:
      config = _hf_config(family)
      torch.manual_seed(zlib.crc32(family.encode()))
      model = transformers.AutoModelForCausalLM.from_config(
          config, dtype=torch.float32, attn_implementation="eager"
      )
      _reinitialise(model, gemma_norms=family == "gemma")
      model.eval()
      path = tmp_path_factory.mktemp(f"hf_{family}")
      model.save_pretrained(path)
      cache[family] = (str(path), model)
    return cache[family]

  return get
