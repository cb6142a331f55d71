"""Tests for irl_jax/models/hf.py (and the Transformer it builds) against `transformers`.

Every family's tiny random checkpoint (`conftest.py`) is loaded into irl_jax and
compared with the torch model it was saved from, in float32, to 1e-4 in the
logits: unpadded, left- and right-padded, packed, through the hidden-state
path, after a save/load round trip (single file and sharded), in bfloat16,
and with rematerialisation.
"""

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import tokenizers
import torch
import transformers
from flax import nnx

from irl_jax import models
from irl_jax.losses import chunked_soft_q_stats, soft_q_stats

# Every family the loader supports, plus Llama-3 RoPE scaling and Llama with
# every bias and tied embeddings (built in conftest.py).
FAMILIES = ("gpt2", "llama", "llama3_scaled", "llama_bias", "qwen2", "mistral", "gemma")
VOCAB = 61  # as in conftest.py
ATOL = 1e-4  # float32 parity with transformers; never loosened


@nnx.jit(static_argnames="return_hidden")
def _apply(model, input_ids, attention_mask=None, segment_ids=None, return_hidden=False):
  return model(
      input_ids, attention_mask=attention_mask, segment_ids=segment_ids,
      return_hidden=return_hidden,
  )


def _torch_logits(model, input_ids, attention_mask=None, position_ids=None) -> np.ndarray:
  kw = {}
  if attention_mask is not None:
    kw["attention_mask"] = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  if position_ids is not None:
    kw["position_ids"] = torch.as_tensor(np.asarray(position_ids), dtype=torch.long)
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(np.asarray(input_ids), dtype=torch.long), **kw)
  return out.logits.float().numpy()


def _ids(seed, shape):
  return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# -- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_unpadded(hf_checkpoint, family):
  path, ref = hf_checkpoint(family)
  ids = _ids(0, (2, 9))
  got = _apply(models.from_pretrained(path), ids)
  want = _torch_logits(ref, ids)
  assert got.dtype == jnp.float32 and got.shape == (2, 9, VOCAB)
  # The reference is far from trivial: parity at 1e-4 means something.
  assert np.std(want) > 0.5
  assert _max_diff(got, want) <= ATOL


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_parity_padded(hf_checkpoint, family, side):
  path, ref = hf_checkpoint(family)
  ids = _ids(1, (3, 9))
  lengths = np.array([9, 6, 3])
  real = np.arange(9)[None, :] < lengths[:, None]
  mask = (real if side == "right" else real[:, ::-1]).astype(np.int32)
  # irl_jax's default positions count real tokens; give torch the same.
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  got = np.asarray(_apply(models.from_pretrained(path), ids, attention_mask=mask))
  want = _torch_logits(ref, ids, attention_mask=mask, position_ids=positions)
  keep = mask.astype(bool)
  assert np.all(np.isfinite(got))
  assert _max_diff(got[keep], want[keep]) <= ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_packed(hf_checkpoint, family):
  path, ref = hf_checkpoint(family)
  ids = _ids(2, (2, 9))
  segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 3], [1, 1, 1, 1, 1, 2, 2, 2, 0]], np.int32)
  got = np.asarray(_apply(models.from_pretrained(path), ids, segment_ids=segment_ids))
  checked = 0
  for row in range(2):
    for seg in set(segment_ids[row].tolist()) - {0}:
      cols = np.flatnonzero(segment_ids[row] == seg)
      want = _torch_logits(ref, ids[row : row + 1, cols])[0]
      assert _max_diff(got[row, cols], want) <= ATOL, (row, seg)
      checked += len(cols)
  assert checked == 17


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_path_matches_logits(hf_checkpoint, family):
  path, _ = hf_checkpoint(family)
  model = models.from_pretrained(path)
  ids = _ids(3, (2, 9))
  targets = _ids(4, (2, 9))
  logits = _apply(model, ids)
  hidden = _apply(model, ids, return_hidden=True)
  assert hidden.shape == (2, 9, 32)
  w = model.unembedding()
  assert w.shape == (32, VOCAB)
  assert _max_diff(hidden @ w, logits) <= 1e-5
  # chunk_size 16 does not divide V = 61: the overlapping last chunk is exercised.
  chunked = jax.jit(lambda h, w, t: chunked_soft_q_stats(h, w, t, chunk_size=16))(
      hidden, w, targets
  )
  dense = jax.jit(soft_q_stats)(logits, targets)
  np.testing.assert_allclose(chunked.q, dense.q, rtol=0, atol=1e-5)
  np.testing.assert_allclose(chunked.v, dense.v, rtol=0, atol=1e-5)


# -- saving -----------------------------------------------------------------------------------


def _hf_load(path):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
  )
  # A key transformers did not find would be silently re-initialised.
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trip(hf_checkpoint, tmp_path, family):
  path, ref = hf_checkpoint(family)
  model = models.from_pretrained(path)
  ids = _ids(5, (2, 9))
  want = _torch_logits(ref, ids)

  models.save_pretrained(model, tmp_path / "single")
  assert sorted(os.listdir(tmp_path / "single")) == ["config.json", "model.safetensors"]
  reloaded = _hf_load(tmp_path / "single")
  assert type(reloaded) is type(ref)
  assert _max_diff(_torch_logits(reloaded, ids), want) <= 1e-5

  models.save_pretrained(model, tmp_path / "sharded", max_shard_size=2000)
  files = sorted(os.listdir(tmp_path / "sharded"))
  shards = [f for f in files if f.endswith(".safetensors")]
  assert "model.safetensors.index.json" in files and "model.safetensors" not in files
  assert len(shards) > 1
  n = len(shards)
  assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
  with open(tmp_path / "sharded" / "model.safetensors.index.json") as f:
    weight_map = json.load(f)["weight_map"]
  assert sorted(set(weight_map.values())) == shards
  assert _max_diff(_torch_logits(_hf_load(tmp_path / "sharded"), ids), want) <= 1e-5
  np.testing.assert_array_equal(
      _apply(models.from_pretrained(tmp_path / "sharded"), ids), _apply(model, ids)
  )


def _tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
  words = ["[UNK]", "[PAD]", "<s>", "</s>", "the", "cat", "sat", "on", "mat", "a", "dog"]
  core = tokenizers.Tokenizer(
      tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
  )
  core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
      eos_token="</s>",
  )


def test_save_pretrained_writes_tokenizer(hf_checkpoint, tmp_path):
  path, _ = hf_checkpoint("llama")
  tok = _tiny_tokenizer()
  models.save_pretrained(models.from_pretrained(path), tmp_path, tokenizer=tok)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  text = "the cat sat on a zebra mat"
  want = [4, 5, 6, 7, 9, 0, 8]
  assert tok(text)["input_ids"] == want
  assert loaded(text)["input_ids"] == want
  assert loaded.pad_token == "[PAD]" and loaded.eos_token == "</s>"
  assert loaded.decode(want) == tok.decode(want)
  # The weights are still there and still load.
  assert models.from_pretrained(tmp_path).config == models.from_pretrained(path).config


# -- dtypes and remat -------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16(hf_checkpoint, family):
  path, _ = hf_checkpoint(family)
  ids = _ids(6, (2, 9))
  model = models.from_pretrained(path, dtype=jnp.bfloat16)
  assert model.embed[...].dtype == jnp.bfloat16
  got = np.asarray(_apply(model, ids))
  want = np.asarray(_apply(models.from_pretrained(path), ids))
  assert got.dtype == np.float32
  assert np.all(np.isfinite(got))
  # bfloat16's unit round-off is u = 2^-9 ≈ 0.002. Weights, embeddings and
  # every matmul, softmax and residual output are rounded: ~25 roundings on
  # the way to a logit, which add up like a random walk to ~√25·u ≈ 1% of the
  # logit scale on a typical token (measured: 1.1–1.7% of std(logits)) and a
  # ~3.5σ tail over the 1098 logits here (measured: ≤ 3.5% of max |logit|).
  # The bounds leave 2–3x margin; a wrong weight, mask or rotation moves
  # logits by O(std), 30 times more.
  err = np.abs(got.astype(np.float64) - want)
  assert np.mean(err) <= 0.03 * np.std(want)
  assert np.max(err) <= 0.1 * np.max(np.abs(want))
  # And no worse than transformers itself in bfloat16 on the same checkpoint
  # (measured: irl_jax's mean error is 0.9–1.0x transformers').
  hf_bf16 = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.bfloat16, attn_implementation="eager"
  ).eval()
  hf_err = np.abs(_torch_logits(hf_bf16, ids).astype(np.float64) - want)
  assert np.mean(err) <= 1.5 * np.mean(hf_err)


def test_remat_same_logits_and_gradients(hf_checkpoint):
  path, _ = hf_checkpoint("llama")
  ids = _ids(7, (2, 9))
  targets = _ids(8, (2, 9))

  def loss(model):
    stats = soft_q_stats(model(ids), targets)
    return jnp.mean(stats.v - stats.q)

  results = []
  for remat in (False, True):
    model = models.from_pretrained(path, remat=remat)
    assert model.remat is remat
    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    grads = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    results.append((np.asarray(_apply(model, ids)), np.asarray(value), grads))
  (l0, v0, g0), (l1, v1, g1) = results
  np.testing.assert_array_equal(l1, l0)
  assert g1.keys() == g0.keys() and len(g0) == 21
  assert all(np.any(g != 0) for g in g0.values())
  # Op by op, remat=True recomputes bit-identical values. Compiled, the
  # checkpointed backward pass is fused differently, which moves float32
  # round-off by ~1e-6 of each gradient's scale (as much as jit vs op by op
  # does without remat); 1e-5 of the scale bounds that.
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  for p in g0:
    np.testing.assert_allclose(
        g1[p], g0[p], rtol=0, atol=1e-5 * np.max(np.abs(g0[p])), err_msg=str(p)
    )


# -- bad input --------------------------------------------------------------------------------


def _copy_checkpoint(src, dst):
  shutil.copytree(src, dst)
  return dst


def _rewrite_weights(path, edit):
  file = os.path.join(path, "model.safetensors")
  tensors = safetensors.numpy.load_file(file)
  edit(tensors)
  safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


def test_missing_weight(hf_checkpoint, tmp_path):
  path = _copy_checkpoint(hf_checkpoint("llama")[0], tmp_path / "ckpt")
  key = "model.layers.1.mlp.up_proj.weight"
  _rewrite_weights(path, lambda t: t.pop(key))
  with pytest.raises(ValueError, match=re.escape(f"missing: {key}")):
    models.from_pretrained(path)


def test_unexpected_weight(hf_checkpoint, tmp_path):
  path = _copy_checkpoint(hf_checkpoint("llama")[0], tmp_path / "ckpt")
  key = "model.layers.0.self_attn.extra.weight"
  _rewrite_weights(path, lambda t: t.update({key: np.zeros((3,), np.float32)}))
  with pytest.raises(ValueError, match=re.escape(f"unexpected: {key}")):
    models.from_pretrained(path)


@pytest.mark.parametrize(
    "family, key, shape",
    [
        pytest.param(
            "llama", "model.layers.0.self_attn.k_proj.weight", (16, 31),
        ),
        pytest.param(
            "llama", "model.embed_tokens.weight", (60, 32),
        ),
        pytest.param(
            "gpt2", "transformer.h.0.attn.c_attn.weight", (32, 95),
        ),
    ],
)
def test_wrong_shape(hf_checkpoint, tmp_path, family, key, shape):
  path = _copy_checkpoint(hf_checkpoint(family)[0], tmp_path / "ckpt")
  tensors = safetensors.numpy.load_file(os.path.join(path, "model.safetensors"))
  expected = tensors[key].shape
  _rewrite_weights(path, lambda t: t.update({key: np.zeros(shape, np.float32)}))
  with pytest.raises(ValueError) as info:
    models.from_pretrained(path)
  # The message names the checkpoint's key and both shapes as the checkpoint
  # stores them, so that the user can find the offending tensor.
  message = str(info.value)
  assert key in message, message
  assert str(shape) in message and str(expected) in message, message


def test_unsupported_model_type(hf_checkpoint, tmp_path):
  path = _copy_checkpoint(hf_checkpoint("llama")[0], tmp_path / "ckpt")
  with open(path / "config.json") as f:
    config = json.load(f)
  config.update(model_type="bert", architectures=["BertForMaskedLM"])
  with open(path / "config.json", "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match="bert"):
    models.from_pretrained(path)


def test_missing_files(hf_checkpoint, tmp_path):
  src = hf_checkpoint("llama")[0]
  no_config = _copy_checkpoint(src, tmp_path / "no_config")
  os.remove(no_config / "config.json")
  with pytest.raises(FileNotFoundError, match=re.escape("config.json")):
    models.from_pretrained(no_config)
  no_weights = _copy_checkpoint(src, tmp_path / "no_weights")
  os.remove(no_weights / "model.safetensors")
  with pytest.raises(FileNotFoundError, match=re.escape("model.safetensors")):
    models.from_pretrained(no_weights)


@pytest.mark.parametrize("bad", [VOCAB, VOCAB + 100, -1])
def test_out_of_vocabulary_ids(hf_checkpoint, bad):
  model = models.from_pretrained(hf_checkpoint("gpt2")[0])
  ids = _ids(9, (2, 5))
  ids[1, 3] = bad
  with pytest.raises(ValueError, match=re.escape(str(bad))):
    model(ids)


def test_truncated_safetensors_names_the_file(hf_checkpoint, tmp_path):
  path = _copy_checkpoint(hf_checkpoint("llama")[0], tmp_path / "ckpt")
  file = os.path.join(path, "model.safetensors")
  size = os.path.getsize(file)
  with open(file, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(ValueError) as info:
    models.from_pretrained(path)
  message = str(info.value)
  assert file in message and "not a readable safetensors file" in message


@pytest.mark.parametrize("text, expect", [
    ('{"model_type": "llama", "hidden_size": ', r"config.json:1:\d+: invalid JSON"),
    ("[1, 2]", "config.json: expected a JSON object"),
    ('{"model_type": "llama"}', "config.json: missing field"),
])
def test_broken_config_json_names_the_file(hf_checkpoint, tmp_path, text, expect):
  path = _copy_checkpoint(hf_checkpoint("llama")[0], tmp_path / "ckpt")
  with open(path / "config.json", "w") as f:
    f.write(text)
  with pytest.raises(ValueError, match=expect) as info:
    models.from_pretrained(path)
  assert str(path / "config.json") in str(info.value)
