"""One decoder configuration for the supported Hugging Face families.

`ModelConfig` describes a decoder-only transformer in architecture terms
(norm, MLP, positions, attention biases, embedding tying); `from_hf_config`
reads a Hugging Face `config.json` dict of a supported `model_type` into it,
and `to_hf_config` writes it back so that `transformers` opens the result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "qwen2", "mistral", "gemma")

_ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "GemmaForCausalLM",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer.

  Attributes mirror the Hugging Face fields; `model_type` selects the weight
  layout used by `from_pretrained`/`save_pretrained`.
  """

  model_type: str
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  max_position_embeddings: int
  norm: Literal["rms", "layer"] = "rms"
  norm_eps: float = 1e-6
  norm_offset: float = 0.0  # Gemma scales by (1 + w)
  mlp: Literal["gated", "plain"] = "gated"
  activation: Literal["silu", "gelu_tanh", "gelu"] = "silu"
  positions: Literal["rope", "learned"] = "rope"
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None  # sorted items of the dict
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  tie_embeddings: bool = False
  embed_scale: bool = False  # Gemma multiplies embeddings by sqrt(D)
  sliding_window: int | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return dict(self.rope_scaling) if self.rope_scaling else None

  def inverse_frequencies(self) -> np.ndarray:
    """RoPE inverse frequencies `[head_dim // 2]` in float32, as transformers computes them."""
    dim = self.head_dim
    inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv = inv.astype(np.float32)
    scaling = self.rope_scaling_dict
    if not scaling:
      return inv
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
      return inv
    if kind == "linear":
      return (inv / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
      factor = scaling["factor"]
      low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
      old_len = scaling["original_max_position_embeddings"]
      low_wavelen, high_wavelen = old_len / low, old_len / high
      wavelen = 2 * math.pi / inv
      scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
      smooth = (old_len / wavelen - low) / (high - low)
      smoothed = (1 - smooth) * scaled / factor + smooth * scaled
      medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
      return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(
        f"rope scaling type {kind!r} is not supported (supported: default, linear, llama3)."
    )


def _get(cfg: dict, *names, default=None):
  for n in names:
    if n in cfg and cfg[n] is not None:
      return cfg[n]
  return default


def _rope(cfg: dict) -> tuple[float, tuple | None]:
  """(theta, scaling) from either `rope_parameters` (transformers ≥ 5) or the older
  top-level `rope_theta` / `rope_scaling` fields of hub checkpoints."""
  params = cfg.get("rope_parameters") or {}
  theta = float(_get(params, "rope_theta", default=_get(cfg, "rope_theta", default=10000.0)))
  scaling = dict(params) if params else dict(cfg.get("rope_scaling") or {})
  scaling.pop("rope_theta", None)
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return theta, None
  return theta, tuple(sorted(scaling.items()))


def from_hf_config(cfg: dict) -> ModelConfig:
  """Read a Hugging Face `config.json` dict into a `ModelConfig`.

  Raises:
    ValueError: the `model_type` is not one of `SUPPORTED_MODEL_TYPES`, or a
      field of the config asks for a feature irl_jax does not implement.
  """
  model_type = cfg.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"unsupported architecture: model_type={model_type!r} (architectures="
        f"{cfg.get('architectures')}); irl_jax supports {', '.join(SUPPORTED_MODEL_TYPES)}."
    )
  ids = {
      "bos_token_id": cfg.get("bos_token_id"),
      "eos_token_id": tuple(cfg["eos_token_id"]) if isinstance(cfg.get("eos_token_id"), list)
      else cfg.get("eos_token_id"),
      "pad_token_id": cfg.get("pad_token_id"),
  }
  if model_type == "gpt2":
    if cfg.get("scale_attn_by_inverse_layer_idx") or not cfg.get("scale_attn_weights", True):
      raise ValueError("gpt2 configs with non-standard attention scaling are not supported.")
    act = cfg.get("activation_function", "gelu_new")
    d = cfg["n_embd"]
    return ModelConfig(
        model_type="gpt2", vocab_size=cfg["vocab_size"], hidden_size=d,
        num_layers=cfg["n_layer"], num_heads=cfg["n_head"], num_kv_heads=cfg["n_head"],
        head_dim=d // cfg["n_head"], intermediate_size=cfg.get("n_inner") or 4 * d,
        max_position_embeddings=cfg["n_positions"], norm="layer",
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5), mlp="plain",
        activation=_activation(act), positions="learned", qkv_bias=True, out_bias=True,
        mlp_bias=True, tie_embeddings=cfg.get("tie_word_embeddings", True), **ids,
    )
  heads = cfg["num_attention_heads"]
  theta, scaling = _rope(cfg)
  if cfg.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported.")
  sliding = None
  if model_type == "mistral":
    sliding = cfg.get("sliding_window")
  elif model_type == "qwen2" and cfg.get("use_sliding_window"):
    raise ValueError("qwen2 with use_sliding_window=True is not supported.")
  bias = bool(cfg.get("attention_bias", False))
  return ModelConfig(
      model_type=model_type, vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
      num_layers=cfg["num_hidden_layers"], num_heads=heads,
      num_kv_heads=cfg.get("num_key_value_heads") or heads,
      head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
      intermediate_size=cfg["intermediate_size"],
      max_position_embeddings=cfg.get("max_position_embeddings", 2048), norm="rms",
      norm_eps=cfg.get("rms_norm_eps", 1e-6), norm_offset=1.0 if model_type == "gemma" else 0.0,
      mlp="gated", activation=_activation(_get(cfg, "hidden_activation", "hidden_act",
                                               default="silu")),
      positions="rope", rope_theta=theta, rope_scaling=scaling,
      qkv_bias=True if model_type == "qwen2" else bias, out_bias=bias,
      mlp_bias=bool(cfg.get("mlp_bias", False)),
      tie_embeddings=cfg.get("tie_word_embeddings", model_type == "gemma"),
      embed_scale=model_type == "gemma", sliding_window=sliding, **ids,
  )


def _activation(name: str) -> str:
  table = {"silu": "silu", "swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh":
           "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}
  if name not in table:
    raise ValueError(f"activation {name!r} is not supported (supported: {sorted(table)}).")
  return table[name]


def to_hf_config(config: ModelConfig, base: dict | None = None) -> dict:
  """A Hugging Face `config.json` dict for `config` (`base` keeps extra fields)."""
  out = dict(base or {})
  c = config
  out.update({
      "model_type": c.model_type, "architectures": [_ARCHITECTURES[c.model_type]],
      "vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_embeddings,
      "bos_token_id": c.bos_token_id, "pad_token_id": c.pad_token_id,
      "eos_token_id": list(c.eos_token_id) if isinstance(c.eos_token_id, tuple)
      else c.eos_token_id,
  })
  if c.model_type == "gpt2":
    act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "silu": "silu"}[c.activation]
    out.update({
        "n_embd": c.hidden_size, "n_layer": c.num_layers, "n_head": c.num_heads,
        "n_inner": c.intermediate_size, "n_positions": c.max_position_embeddings,
        "layer_norm_epsilon": c.norm_eps, "activation_function": act,
    })
    return out
  act = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}[c.activation]
  rope = {"rope_theta": c.rope_theta, "rope_type": "default"}
  if c.rope_scaling:
    rope.update(dict(c.rope_scaling))
  out.pop("rope_scaling", None)
  out.pop("rope_theta", None)
  out.update({
      "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
      "head_dim": c.head_dim, "intermediate_size": c.intermediate_size,
      "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.norm_eps,
      "hidden_act": act, "rope_parameters": rope, "mlp_bias": c.mlp_bias,
  })
  if c.model_type in ("llama", "gemma"):
    out["attention_bias"] = c.out_bias
  if c.model_type == "mistral":
    out["sliding_window"] = c.sliding_window
  return out
