"""Read GGUF files (llama.cpp's format) into irl_jax models, dequantised to float32, without torch.

`read_gguf(path)` turns a GGUF file's metadata into a Hugging Face style
`config.json` dict and its tensors into float32 NumPy arrays under Hugging Face
names and layouts; `from_pretrained(path_to.gguf)` (in `hf.py`) builds the
`Transformer` from them with the same machinery as a safetensors directory,
and `save_pretrained` then writes a checkpoint `transformers` opens.
`gguf_tokenizer(path)` returns the tokenizer (with its chat template) stored
in the same file.

Quantised tensors are expanded with the `gguf` package's NumPy dequantisers,
so every type it implements loads; the model is then an ordinary float model
(quantisation is not kept). Needs the optional `gguf` package
(`pip install gguf`). Only the `llama` GGUF architecture is read.

Dimensions: `H` attention heads (query or key/value), `Dh` head size.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from irl_jax.models.config import ModelConfig, from_hf_config

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_ARCHITECTURES = ("llama",)

# GGUF tensor names (llama.cpp's `gguf-py/gguf/tensor_mapping.py`) -> Hugging Face names.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+?)(\.weight|\.bias)$")


def _import_gguf():
  try:
    import gguf
  except ImportError as e:
    raise ImportError("reading GGUF files needs the `gguf` package (pip install gguf).") from e
  return gguf


def _check_magic(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such GGUF file.")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != GGUF_MAGIC:
    raise ValueError(
        f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
        "from_pretrained takes a GGUF file or a Hugging Face checkpoint directory."
    )


def _open(path: str):
  """A `gguf.GGUFReader` for `path`; errors name the file."""
  gguf = _import_gguf()
  _check_magic(path)
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # gguf raises bare ValueError/IndexError with no file name
    raise ValueError(
        f"{path} ({os.path.getsize(path)} bytes) is not a readable GGUF file: "
        f"{type(e).__name__}: {e} (truncated or damaged?)"
    ) from e


_MISSING = object()


def _field(reader, path: str, key: str, default: Any = _MISSING) -> Any:
  field = reader.fields.get(key)
  if field is None:
    if default is _MISSING:
      raise ValueError(f"{path}: GGUF metadata has no {key!r}.")
    return default
  return field.contents()


def _int_field(reader, path: str, key: str, default: Any = _MISSING) -> Any:
  value = _field(reader, path, key, default)
  if value is not None and not isinstance(value, int | np.integer):
    # Some architectures store per-layer lists (e.g. head counts); llama never does.
    raise ValueError(f"{path}: GGUF metadata {key!r} is {value!r}; expected one integer.")
  return None if value is None else int(value)


def _hf_config(reader, path: str) -> dict:
  """A Hugging Face `config.json` dict for the GGUF file's metadata."""
  arch = _field(reader, path, "general.architecture")
  if arch not in SUPPORTED_GGUF_ARCHITECTURES:
    raise ValueError(
        f"{path}: unsupported GGUF architecture {arch!r}; irl_jax reads GGUF files of "
        f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)}."
    )
  names = {t.name for t in reader.tensors}
  if "token_embd.weight" not in names:
    raise ValueError(f"{path}: no tensor 'token_embd.weight'.")
  if "rope_freqs.weight" in names:
    raise ValueError(
        f"{path}: tensor 'rope_freqs.weight' (Llama 3.1-style RoPE frequency factors) is not "
        "supported."
    )
  embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
  hidden = _int_field(reader, path, f"{arch}.embedding_length")
  heads = _int_field(reader, path, f"{arch}.attention.head_count")
  head_dim = _int_field(reader, path, f"{arch}.attention.key_length", hidden // heads)
  rotary = _int_field(reader, path, f"{arch}.rope.dimension_count", head_dim)
  if rotary != head_dim:
    raise ValueError(
        f"{path}: RoPE on {rotary} of {head_dim} head dimensions (partial rotary) is not "
        "supported."
    )
  if _int_field(reader, path, f"{arch}.attention.value_length", head_dim) != head_dim:
    raise ValueError(f"{path}: key and value head sizes differ; not supported.")
  scaling_type = _field(reader, path, f"{arch}.rope.scaling.type", "none")
  if scaling_type == "none":
    scaling = None
  elif scaling_type == "linear":
    scaling = {"rope_type": "linear",
               "factor": float(_field(reader, path, f"{arch}.rope.scaling.factor"))}
  else:
    raise ValueError(
        f"{path}: RoPE scaling {scaling_type!r} is not supported (supported: none, linear)."
    )
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      # The embedding's rows: GGUF shapes list the fastest-varying dimension first.
      "vocab_size": _int_field(reader, path, f"{arch}.vocab_size", int(embed.shape[-1])),
      "hidden_size": hidden,
      "num_hidden_layers": _int_field(reader, path, f"{arch}.block_count"),
      "num_attention_heads": heads,
      "num_key_value_heads": _int_field(reader, path, f"{arch}.attention.head_count_kv", heads),
      "head_dim": head_dim,
      "intermediate_size": _int_field(reader, path, f"{arch}.feed_forward_length"),
      "max_position_embeddings": _int_field(reader, path, f"{arch}.context_length", 2048),
      "rms_norm_eps": float(_field(reader, path, f"{arch}.attention.layer_norm_rms_epsilon")),
      "rope_theta": float(_field(reader, path, f"{arch}.rope.freq_base", 10000.0)),
      "rope_scaling": scaling,
      "hidden_act": "silu",
      "attention_bias": "blk.0.attn_q.bias" in names,
      "mlp_bias": "blk.0.ffn_up.bias" in names,
      "tie_word_embeddings": "output.weight" not in names,
      "bos_token_id": _int_field(reader, path, "tokenizer.ggml.bos_token_id", None),
      "eos_token_id": _int_field(reader, path, "tokenizer.ggml.eos_token_id", None),
      "pad_token_id": _int_field(reader, path, "tokenizer.ggml.padding_token_id", None),
  }


def _hf_name(name: str) -> str | None:
  if name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[name]
  m = _BLOCK.fullmatch(name)
  if m is None:
    return None
  layer, part, suffix = m.groups()
  if part + suffix in _BLOCK_NAMES:
    return f"model.layers.{layer}.{_BLOCK_NAMES[part + suffix]}"
  if part in _BLOCK_NAMES:
    return f"model.layers.{layer}.{_BLOCK_NAMES[part]}{suffix}"
  return None


def _unpermute_rope(x: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's reordering of Q/K output rows `[H·Dh, ...]` for its RoPE.

  Hugging Face Llama rotates dimension `j` of a head with `j + Dh/2`
  (`rotate_half`); llama.cpp rotates adjacent pairs `(2j, 2j + 1)`, so its
  converter stores row `j` of each head at `2j` and row `j + Dh/2` at
  `2j + 1`. Reading each head as `[Dh/2, 2]` and transposing to `[2, Dh/2]`
  restores the original order.
  """
  half = x.shape[0] // num_heads // 2
  return x.reshape(num_heads, half, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def read_gguf(path: str) -> tuple[ModelConfig, dict, dict[str, np.ndarray]]:
  """Read a GGUF file as a Hugging Face checkpoint: config and float32 tensors.

  Every tensor is dequantised to float32 (`gguf.quants.dequantize`), renamed
  to its Hugging Face Llama name, and Q/K projections are put back into
  Hugging Face's RoPE layout. NumPy shapes are GGUF's dimension list reversed,
  which is already torch's `[out, in]` for linear weights.

  Args:
    path: a `.gguf` file of a supported architecture (`llama`).

  Returns:
    `(config, hf_config, tensors)`: the `ModelConfig`, the Hugging Face
    `config.json` dict it was read from, and `{hf_name: float32 array}`.

  Raises:
    ImportError: the `gguf` package is not installed.
    FileNotFoundError: no such file.
    ValueError: not a GGUF file, an unsupported architecture or feature, an
      unknown tensor, or a tensor type the `gguf` package cannot dequantise
      (the message names the file and the tensor).
  """
  gguf = _import_gguf()
  path = os.fspath(path)
  reader = _open(path)
  raw = _hf_config(reader, path)
  try:
    config = from_hf_config(raw)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from e
  rotated = {"q_proj": config.num_heads, "k_proj": config.num_kv_heads}
  tensors = {}
  for t in reader.tensors:
    hf_name = _hf_name(t.name)
    if hf_name is None:
      raise ValueError(f"{path}: tensor {t.name!r} has no Hugging Face Llama counterpart.")
    qtype = gguf.GGMLQuantizationType(t.tensor_type)
    try:
      x = gguf.quants.dequantize(t.data, qtype)
    except NotImplementedError as e:
      raise ValueError(
          f"{path}: tensor {t.name!r} is stored as {qtype.name}, which the gguf package cannot "
          f"dequantise ({e})."
      ) from e
    # A copy: F32 tensors come back as views of the memory-mapped file.
    x = np.array(x, dtype=np.float32)
    heads = rotated.get(hf_name.split(".")[-2])
    if heads is not None:
      if x.shape[0] != heads * config.head_dim:
        raise ValueError(
            f"{path}: tensor {t.name!r} has {x.shape[0]} rows; {heads} heads of "
            f"{config.head_dim} need {heads * config.head_dim}."
        )
      x = _unpermute_rope(x, heads)
    tensors[hf_name] = x
  return config, raw, tensors


def gguf_tokenizer(path: str):
  """The `transformers` tokenizer stored in a GGUF file (vocabulary, merges, chat template).

  Example:
    >>> model = models.from_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> tokenizer = models.gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> models.save_pretrained(model, "out/", tokenizer=tokenizer)
  """
  import transformers

  path = os.fspath(path)
  _import_gguf()  # clear errors for a missing package or file, or one that is not GGUF
  _check_magic(path)
  folder, name = os.path.split(os.path.abspath(path))
  return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
