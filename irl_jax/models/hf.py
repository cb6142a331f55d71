"""Read and write Hugging Face checkpoints (config.json + safetensors) without torch.

`from_pretrained(path)` loads a local directory in Hugging Face layout —
`config.json` and `model.safetensors` or shards `model-0000x-of-0000y.safetensors`
with `model.safetensors.index.json` — into a `Transformer`. `save_pretrained`
writes the same layout, so a trained policy opens in `transformers` unchanged.
Tokenizer files in the directory are left to `transformers.AutoTokenizer`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from irl_jax.models import gguf
from irl_jax.models.config import ModelConfig, from_hf_config, to_hf_config
from irl_jax.models.heads import PolicyValueModel, RewardModel
from irl_jax.models.transformer import Transformer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# Buffers some checkpoints store that carry no parameters.
_IGNORED = (
    re.compile(r"(^|\.)h\.\d+\.attn\.(masked_)?bias$"),
    re.compile(r"rotary_emb\.inv_freq$"),
)


def _model_layout(config: ModelConfig, reward: bool) -> Iterator[tuple[str, str, str]]:
  """`_layout` of a causal LM, or of a reward model (`backbone/` paths plus `score`)."""
  if not reward:
    yield from _layout(config)
    return
  for hf_key, ours, transform in _layout(config):
    yield hf_key, "backbone/" + ours, transform
  yield "score.weight", "score/kernel", "T"


def _is_reward_checkpoint(raw: dict) -> bool:
  arch = (raw.get("architectures") or [""])[0]
  return arch.endswith("ForSequenceClassification")


def _layout(config: ModelConfig) -> Iterator[tuple[str, str, str]]:
  """`(hf_key, irl_jax path, transform)` for every tensor of the family.

  Transforms: "" (as is), "T" (torch Linear `[out, in]` <-> kernel `[in, out]`),
  "qkv:i" (slice i of GPT-2's fused `c_attn`).
  """
  c = config
  if c.model_type == "gpt2":
    yield "wte.weight", "embed", ""
    yield "wpe.weight", "pos_embed", ""
    for i in range(c.num_layers):
      p, q = f"h.{i}.", f"layers/{i}/"
      for hf, ours in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
        yield p + hf + ".weight", q + ours + "/scale", ""
        yield p + hf + ".bias", q + ours + "/bias", ""
      for j, name in enumerate("qkv"):
        yield p + "attn.c_attn.weight", q + f"attn/{name}/kernel", f"qkv:{j}"
        yield p + "attn.c_attn.bias", q + f"attn/{name}/bias", f"qkv:{j}"
      for hf, ours in (("attn.c_proj", "attn/o"), ("mlp.c_fc", "mlp/up"),
                       ("mlp.c_proj", "mlp/down")):
        yield p + hf + ".weight", q + ours + "/kernel", ""  # Conv1D is already [in, out]
        yield p + hf + ".bias", q + ours + "/bias", ""
    yield "ln_f.weight", "final_norm/scale", ""
    yield "ln_f.bias", "final_norm/bias", ""
  else:
    yield "model.embed_tokens.weight", "embed", ""
    for i in range(c.num_layers):
      p, q = f"model.layers.{i}.", f"layers/{i}/"
      yield p + "input_layernorm.weight", q + "attn_norm/scale", ""
      yield p + "post_attention_layernorm.weight", q + "mlp_norm/scale", ""
      for name in "qkvo":
        yield p + f"self_attn.{name}_proj.weight", q + f"attn/{name}/kernel", "T"
        if (c.qkv_bias and name != "o") or (c.out_bias and name == "o"):
          yield p + f"self_attn.{name}_proj.bias", q + f"attn/{name}/bias", ""
      for name in ("gate", "up", "down"):
        yield p + f"mlp.{name}_proj.weight", q + f"mlp/{name}/kernel", "T"
        if c.mlp_bias:
          yield p + f"mlp.{name}_proj.bias", q + f"mlp/{name}/bias", ""
    yield "model.norm.weight", "final_norm/scale", ""
  if not c.tie_embeddings:
    yield "lm_head.weight", "lm_head", "T"


def _read_tensors(path: str) -> dict[str, np.ndarray]:
  index = os.path.join(path, INDEX_NAME)
  single = os.path.join(path, WEIGHTS_NAME)
  if os.path.exists(index):
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index}: no 'weight_map' object; not a safetensors index.")
    files = sorted(set(weight_map.values()))
  elif os.path.exists(single):
    files = [WEIGHTS_NAME]
  else:
    raise FileNotFoundError(
        f"no weights in {path}: expected {WEIGHTS_NAME} or {INDEX_NAME} with its shards "
        "(irl_jax reads safetensors only)."
    )
  tensors = {}
  for name in files:
    file = os.path.join(path, name)
    if not os.path.exists(file):
      raise FileNotFoundError(f"{INDEX_NAME} in {path} lists shard {name}, which is missing.")
    try:
      with safetensors.safe_open(file, framework="numpy") as f:
        for key in f.keys():
          tensors[key] = f.get_tensor(key)
    except Exception as e:  # safetensors raises its own SafetensorError with no file name
      size = os.path.getsize(file)
      raise ValueError(f"{file} ({size} bytes) is not a readable safetensors file: "
                       f"{type(e).__name__}: {e} (truncated or damaged?)") from e
  return tensors


def _read_json(file: str) -> dict:
  """A JSON object from `file`; errors name the file (and line and column)."""
  try:
    with open(file, encoding="utf-8") as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}).") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{file}: not UTF-8 text ({e}).") from None
  if not isinstance(raw, dict):
    raise ValueError(f"{file}: expected a JSON object, got {type(raw).__name__}.")
  return raw


def read_config(path: str) -> tuple[ModelConfig, dict]:
  file = os.path.join(path, CONFIG_NAME)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{file} not found: not a Hugging Face model directory.")
  raw = _read_json(file)
  try:
    return from_hf_config(raw), raw
  except (KeyError, TypeError, ValueError) as e:
    detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
    raise ValueError(f"{file}: {detail}") from e


def from_pretrained(
    path: str,
    *,
    dtype: Any = jnp.float32,
    compute_dtype: Any | None = None,
    remat: bool = False,
) -> Transformer | RewardModel:
  """Load a Hugging Face checkpoint directory, or a GGUF file, into a `Transformer`.

  A `*ForSequenceClassification` checkpoint with one label loads as a
  `RewardModel` (its `score` head on the backbone).

  A file (or a path ending in `.gguf`) is read as GGUF, llama.cpp's format
  (`llama` architecture; needs the `gguf` package): every tensor is
  dequantised to float32 and then cast to `dtype` (see
  `irl_jax.models.gguf`). Its tokenizer comes from
  `irl_jax.models.gguf_tokenizer(path)`; a directory's from
  `transformers.AutoTokenizer.from_pretrained(path)`.

  Args:
    path: local directory with `config.json` and safetensors weights, or a
      `.gguf` file.
    dtype: parameter dtype (weights are cast to it).
    compute_dtype: activation dtype; defaults to `dtype`. Logits and token
      statistics are float32 regardless.
    remat: rematerialise each block in the backward pass.

  Raises:
    FileNotFoundError: no config or weights (or a shard listed in the index
      is missing).
    ImportError: a GGUF file without the `gguf` package installed.
    ValueError: unsupported architecture, or weights that do not match the
      config — the message lists missing and unexpected keys and shape
      mismatches; a file that is not GGUF, or a GGUF tensor type that cannot
      be dequantised (the message names the file and the tensor).
  """
  if os.path.isfile(path) or (not os.path.isdir(path) and os.fspath(path).endswith(".gguf")):
    path = os.fspath(path)
    config, raw, tensors = gguf.read_gguf(path)
    return _from_tensors(path, config, raw, tensors, reward=False, dtype=dtype,
                         compute_dtype=compute_dtype, remat=remat)
  config, raw = read_config(path)
  reward = _is_reward_checkpoint(raw)
  if reward:
    labels = raw.get("num_labels", len(raw.get("id2label") or {"0": 0}))
    if labels != 1:
      raise ValueError(f"{path}: a reward model needs one label, the checkpoint has {labels}.")
    config = dataclasses.replace(config, tie_embeddings=True)  # no LM head to load
  tensors = _read_tensors(path)
  return _from_tensors(path, config, raw, tensors, reward=reward, dtype=dtype,
                       compute_dtype=compute_dtype, remat=remat)


def _from_tensors(
    path: str,
    config: ModelConfig,
    raw: dict,
    tensors: dict[str, np.ndarray],
    *,
    reward: bool,
    dtype: Any,
    compute_dtype: Any | None,
    remat: bool,
) -> Transformer | RewardModel:
  """The model for `config` from host arrays under Hugging Face names (`path` names the
  source in errors; `raw` is the `config.json` dict kept for `save_pretrained`)."""
  # Names as the file stores them, for error messages (GPT-2 files may or may
  # not carry the "transformer." prefix).
  file_key = {k: k for k in tensors}
  if config.model_type == "gpt2":
    file_key = {k.removeprefix("transformer."): k for k in tensors}
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  entries, used, problems = {}, set(), []
  for hf_key, ours, transform in _model_layout(config, reward):
    if hf_key not in tensors:
      problems.append(f"missing: {hf_key}")
      continue
    used.add(hf_key)
    entries[ours] = (hf_key, transform)
  unexpected = [
      k for k in tensors
      if k not in used and not any(p.search(k) for p in _IGNORED)
      and not (config.tie_embeddings and k == "lm_head.weight")
  ]
  problems += [f"unexpected: {file_key[k]}" for k in sorted(unexpected)]

  def build():
    backbone = Transformer(config, rngs=nnx.Rngs(0), param_dtype=dtype,
                           dtype=compute_dtype or dtype, remat=remat)
    return RewardModel(backbone, rngs=nnx.Rngs(0)) if reward else backbone

  model = nnx.eval_shape(build)
  graphdef, state = nnx.split(model)
  flat = nnx.to_flat_state(state)
  for p, var in flat:
    key = "/".join(str(x) for x in p)
    if key not in entries:
      continue  # reported as missing above
    hf_key, transform = entries[key]
    x = tensors[hf_key]
    want = tuple(var.get_value().shape)
    # The shape the checkpoint should store, in its own layout.
    if transform == "T":
      stored = want[::-1]
    elif transform.startswith("qkv:"):
      stored = (*want[:-1], 3 * want[-1])
    else:
      stored = want
    if tuple(x.shape) != stored:
      problems.append(
          f"shape mismatch: {file_key[hf_key]} has {tuple(x.shape)}, config implies {stored}")
      continue
    if transform == "T":
      x = x.T
    elif transform.startswith("qkv:"):
      x = np.split(x, 3, axis=-1)[int(transform[4:])]
    var.set_value(jnp.asarray(x, dtype))
  if problems:
    shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
    raise ValueError(
        f"weights in {path} do not match its {config.model_type} config "
        f"({len(problems)} problems):\n  {shown}"
    )
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))
  model.hf_config_json = json.dumps(raw)
  return model


def _parse_size(size: int | str) -> int:
  if isinstance(size, int):
    return size
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", size.upper())
  if not m:
    raise ValueError(f"max_shard_size {size!r}: use bytes or a string like '5GB'.")
  return int(float(m.group(1)) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)])


def hf_state_dict(model: Transformer | RewardModel | PolicyValueModel) -> dict[str, np.ndarray]:
  """The model's parameters under Hugging Face names and layouts (host NumPy arrays).

  A `PolicyValueModel` gives its policy's parameters alone (a causal LM's)."""
  if isinstance(model, PolicyValueModel):
    model = model.policy
  reward = isinstance(model, RewardModel)
  config = model.backbone.config if reward else model.config
  flat = {
      "/".join(str(x) for x in p): v.get_value()
      for p, v in nnx.to_flat_state(nnx.state(model))
  }
  out: dict[str, np.ndarray] = {}
  fused: dict[str, list] = {}
  prefix = "transformer." if config.model_type == "gpt2" else ""
  for hf_key, ours, transform in _model_layout(config, reward):
    x = np.asarray(jax.device_get(flat[ours]))
    if hf_key in ("lm_head.weight", "score.weight"):
      out[hf_key] = np.ascontiguousarray(x.T)
    elif transform == "T":
      out[prefix + hf_key] = np.ascontiguousarray(x.T)
    elif transform.startswith("qkv:"):
      fused.setdefault(prefix + hf_key, [None] * 3)[int(transform[4:])] = x
    else:
      out[prefix + hf_key] = np.ascontiguousarray(x)
  for key, parts in fused.items():
    out[key] = np.concatenate(parts, axis=-1)
  return out


def save_pretrained(
    model: Transformer | RewardModel | PolicyValueModel,
    path: str,
    *,
    tokenizer=None,
    max_shard_size: int | str = "5GB",
) -> None:
  """Write `model` as a Hugging Face checkpoint directory `transformers` can open.

  A `RewardModel` is written as `*ForSequenceClassification` with one label. A
  `PolicyValueModel` is written as its policy alone (`*ForCausalLM`, which
  `from_pretrained` loads as a `Transformer`); its value head is not saved.

  Args:
    model: a `Transformer`, `RewardModel` (e.g. from `from_pretrained`) or
      `PolicyValueModel`.
    path: output directory (created).
    tokenizer: optional `transformers` tokenizer saved alongside.
    max_shard_size: above this many bytes the weights are split into shards
      with an index file, as `transformers` does.
  """
  if isinstance(model, PolicyValueModel):
    model = model.policy
  os.makedirs(path, exist_ok=True)
  reward = isinstance(model, RewardModel)
  backbone = model.backbone if reward else model
  base = json.loads(getattr(model, "hf_config_json", None) or getattr(
      backbone, "hf_config_json", "{}"))
  config = to_hf_config(backbone.config, base)
  if reward:
    config["architectures"] = [config["architectures"][0].replace(
        "LMHeadModel", "ForSequenceClassification").replace("ForCausalLM",
                                                            "ForSequenceClassification")]
    config["id2label"], config["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
    config["tie_word_embeddings"] = base.get("tie_word_embeddings", False)
  dtype = np.dtype(jax.dtypes.canonicalize_dtype(backbone.param_dtype))
  config["dtype"] = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(
      dtype.name, "float32")
  tensors = hf_state_dict(model)
  limit = _parse_size(max_shard_size)
  shards, current, size = [], {}, 0
  for key in sorted(tensors):
    nbytes = tensors[key].nbytes
    if current and size + nbytes > limit:
      shards.append(current)
      current, size = {}, 0
    current[key] = tensors[key]
    size += nbytes
  shards.append(current)
  for stale in (WEIGHTS_NAME, INDEX_NAME):
    if os.path.exists(os.path.join(path, stale)):
      os.remove(os.path.join(path, stale))
  if len(shards) == 1:
    safetensors.numpy.save_file(shards[0], os.path.join(path, WEIGHTS_NAME),
                                metadata={"format": "pt"})
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      safetensors.numpy.save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
      weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.nbytes for t in tensors.values())
    with open(os.path.join(path, INDEX_NAME), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  with open(os.path.join(path, CONFIG_NAME), "w") as f:
    json.dump(config, f, indent=2)
  if tokenizer is not None:
    tokenizer.save_pretrained(path)
