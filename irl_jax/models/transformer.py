"""A decoder-only transformer in Flax NNX covering GPT-2, Llama, Qwen2, Mistral and Gemma.

The families differ only in switches of `ModelConfig`: LayerNorm or RMSNorm
(Gemma's `1 + w`), plain GELU or gated SwiGLU/GeGLU MLPs, learned positions or
RoPE (with Llama-3 and linear scaling), grouped-query attention, attention
biases, tied or untied unembedding, Mistral's sliding window.

Inputs may be left- or right-padded (`attention_mask`) or packed (several
sequences per row with `segment_ids`; positions restart in each segment and
attention never crosses segments). Parameters carry logical partitioning
names (`vocab`, `embed`, `heads`, `kv_heads`, `mlp`) that the training
system maps to mesh axes.

Dimensions: `B` batch, `T` query positions, `S` key positions, `L` cache
length, `D` width, `H` query heads, `K` key/value heads, `G = H/K`,
`hd` head width, `F` MLP width, `V` vocabulary.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irl_jax.models.config import ModelConfig

Cache = list[dict[str, jax.Array]]

_INIT_STD = 0.02


def _param(rngs: nnx.Rngs | None, shape, dtype, sharding, init: str = "normal") -> nnx.Param:
  if init == "ones":
    value = jnp.ones(shape, dtype)
  elif init == "zeros" or rngs is None:
    value = jnp.zeros(shape, dtype)
  else:
    value = (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
  # Annotations only: the trainer places parameters on its mesh.
  return nnx.Param(value, out_sharding=sharding, eager_sharding=False)


def dense(x, kernel, *, preferred_element_type=None) -> jax.Array:
  """`x @ kernel` for `x [..., in]` and `kernel [in, out]`, as one 2-D matmul.

  The leading dimensions are flattened first: XLA:CPU runs `[N, in] @ [in, out]`
  and its two gradient matmuls markedly faster than the same contraction with
  `[B, T, in]` operands (elsewhere the reshapes are free). Same values.
  """
  y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel, preferred_element_type=preferred_element_type)
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


class Linear(nnx.Module):
  """`y = x @ kernel + bias` with `kernel [in, out]`."""

  def __init__(self, in_features, out_features, *, use_bias, sharding, rngs, param_dtype, dtype):
    self.kernel = _param(rngs, (in_features, out_features), param_dtype, sharding)
    self.bias = _param(None, (out_features,), param_dtype, sharding[-1:]) if use_bias else None
    self.dtype = dtype

  def __call__(self, x):
    y = dense(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class Norm(nnx.Module):
  """RMSNorm (`w·x/rms(x)`, Gemma: `(1 + w)·x/rms(x)`) or LayerNorm, computed in float32."""

  def __init__(self, config: ModelConfig, *, param_dtype):
    d = config.hidden_size
    self.kind = config.norm
    self.eps = config.norm_eps
    self.offset = config.norm_offset
    self.scale = _param(None, (d,), param_dtype, ("embed",), "zeros" if self.offset else "ones")
    self.bias = _param(None, (d,), param_dtype, ("embed",)) if self.kind == "layer" else None

  def __call__(self, x):
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    if self.kind == "layer":
      mean = jnp.mean(x32, -1, keepdims=True)
      var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
      y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
      return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
              ).astype(dtype)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.eps)
    if self.offset:
      return (y * (self.offset + self.scale[...].astype(jnp.float32))).astype(dtype)
    # transformers' Llama norm casts back to the input dtype before scaling.
    return self.scale[...].astype(dtype) * y.astype(dtype)


def _activation(name: str):
  return {
      "silu": jax.nn.silu,
      "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  }[name]


class MLP(nnx.Module):
  def __init__(self, config: ModelConfig, *, rngs, param_dtype, dtype):
    d, f, b = config.hidden_size, config.intermediate_size, config.mlp_bias
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, use_bias=b)
    self.gated = config.mlp == "gated"
    self.act = config.activation
    self.up = Linear(d, f, sharding=("embed", "mlp"), **kw)
    self.gate = Linear(d, f, sharding=("embed", "mlp"), **kw) if self.gated else None
    self.down = Linear(f, d, sharding=("mlp", "embed"), **kw)

  def __call__(self, x):
    act = _activation(self.act)
    h = act(self.gate(x)) * self.up(x) if self.gated else act(self.up(x))
    return self.down(h)


def rotate_half(x):
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class Attention(nnx.Module):
  def __init__(self, config: ModelConfig, *, rngs, param_dtype, dtype):
    c = config
    d, hd = c.hidden_size, c.head_dim
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, hd
    self.q = Linear(d, c.num_heads * hd, use_bias=c.qkv_bias, sharding=("embed", "heads"), **kw)
    self.k = Linear(d, c.num_kv_heads * hd, use_bias=c.qkv_bias, sharding=("embed", "kv_heads"),
                    **kw)
    self.v = Linear(d, c.num_kv_heads * hd, use_bias=c.qkv_bias, sharding=("embed", "kv_heads"),
                    **kw)
    self.o = Linear(c.num_heads * hd, d, use_bias=c.out_bias, sharding=("heads", "embed"), **kw)
    self.rope = c.positions == "rope"

  def __call__(self, x, rope, mask, cache=None, cache_index=None, queries=None):
    """Attention of `x [B, T, D]`; with `queries [B, Q]` (positions of `x`), only those
    positions query (keys and values are all of `x`), `mask` is `[B, Q, S]` and the
    output `[B, Q, D]`."""
    b, _, _ = x.shape
    k_heads, g, hd = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
    rows = None if queries is None else jnp.arange(b)[:, None]
    xq = x if queries is None else x[rows, queries]
    t = xq.shape[1]
    q = self.q(xq).reshape(b, t, k_heads, g, hd)
    k = self.k(x).reshape(b, x.shape[1], k_heads, hd)
    v = self.v(x).reshape(b, x.shape[1], k_heads, hd)
    if self.rope:
      cos, sin = rope
      cos_q, sin_q = (cos, sin) if queries is None else (cos[rows, queries], sin[rows, queries])
      q = q * cos_q[:, :, None, None] + rotate_half(q) * sin_q[:, :, None, None]
      k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
    new_cache = None
    if cache is not None:
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
      new_cache = {"k": k, "v": v}
      k, v = k.astype(x.dtype), v.astype(x.dtype)
    # Heads first, as plain batched matmuls over (b, k): queries `[B, K, G·T, hd]` against
    # keys `[B, K, S, hd]`. Same products as `btkgd,bskd->bkgts`, which XLA:CPU runs
    # markedly slower (forward and backward) than this layout.
    s = k.shape[1]
    q = q.transpose(0, 2, 3, 1, 4).reshape(b, k_heads, g * t, hd)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, k_heads, g, t, s) * (hd**-0.5)
    # A finite fill keeps rows with no visible key (padding queries) free of NaN.
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, k_heads, g * t, s)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, k_heads, g, t, hd)
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, -1)
    return self.o(out), new_cache


class Block(nnx.Module):
  def __init__(self, config: ModelConfig, *, rngs, param_dtype, dtype):
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.attn_norm = Norm(config, param_dtype=param_dtype)
    self.attn = Attention(config, **kw)
    self.mlp_norm = Norm(config, param_dtype=param_dtype)
    self.mlp = MLP(config, **kw)

  def __call__(self, x, rope, mask, cache=None, cache_index=None):
    h, new_cache = self.attn(self.attn_norm(x), rope, mask, cache, cache_index)
    x = x + h
    return x + self.mlp(self.mlp_norm(x)), new_cache

  def read(self, x, rope, mask, queries):
    """The block's output `[B, Q, D]` at positions `queries [B, Q]` alone: every position
    of `x` gives keys and values, only these query and go through the MLP. `mask` is
    `[B, Q, T]`."""
    h, _ = self.attn(self.attn_norm(x), rope, mask, queries=queries)
    x = x[jnp.arange(x.shape[0])[:, None], queries] + h
    return x + self.mlp(self.mlp_norm(x))


def _block_call(block, x, rope, mask, cache, cache_index):
  return block(x, rope, mask, cache, cache_index)


def _block_read_call(block, x, rope, mask, queries):
  return block.read(x, rope, mask, queries)


_remat_block_call = nnx.remat(_block_call)
_remat_block_read_call = nnx.remat(_block_read_call)


def segment_positions(segment_ids) -> jax.Array:
  """Position of each token within its (contiguous) segment, `[B, T]`."""
  t = segment_ids.shape[1]
  idx = jnp.broadcast_to(jnp.arange(t), segment_ids.shape)
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
  )
  return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def padded_positions(attention_mask) -> jax.Array:
  """Positions that count only real tokens (left padding starts real text at 0), `[B, T]`."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


class Transformer(nnx.Module):
  """Decoder-only language model.

  Example:
    >>> model = Transformer(config, rngs=nnx.Rngs(0))
    >>> logits = model(input_ids, attention_mask=mask)              # [B, T, V] float32
    >>> hidden = model(input_ids, attention_mask=mask, return_hidden=True)
    >>> stats = chunked_soft_q_stats(hidden, model.unembedding(), targets)
  """

  def __init__(
      self,
      config: ModelConfig,
      *,
      rngs: nnx.Rngs,
      param_dtype: Any = jnp.float32,
      dtype: Any = jnp.float32,
      remat: bool = False,
  ):
    c = config
    self.config = c
    self.param_dtype, self.dtype, self.remat = param_dtype, dtype, remat
    self.embed = _param(rngs, (c.vocab_size, c.hidden_size), param_dtype, ("vocab", "embed"))
    self.pos_embed = (
        _param(rngs, (c.max_position_embeddings, c.hidden_size), param_dtype, (None, "embed"))
        if c.positions == "learned" else None
    )
    kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
    self.layers = nnx.List([Block(c, **kw) for _ in range(c.num_layers)])
    self.final_norm = Norm(c, param_dtype=param_dtype)
    self.lm_head = (
        None if c.tie_embeddings
        else _param(rngs, (c.hidden_size, c.vocab_size), param_dtype, ("embed", "vocab"))
    )

  # -- public API -------------------------------------------------------------

  def unembedding(self) -> jax.Array:
    """The output projection `[D, V]` in the compute dtype (tied: the embedding's transpose)."""
    w = self.embed[...].T if self.lm_head is None else self.lm_head[...]
    return w.astype(self.dtype)

  def logits(self, hidden) -> jax.Array:
    """Float32 logits `[..., V]` from final hidden states `[..., D]` (`return_hidden=True`)."""
    return dense(hidden, self.unembedding(), preferred_element_type=jnp.float32)

  def __call__(
      self,
      input_ids,
      *,
      attention_mask=None,
      positions=None,
      segment_ids=None,
      return_hidden: bool = False,
  ) -> jax.Array:
    """Logits `[B, T, V]` in float32, or final hidden states `[B, T, D]`.

    Args:
      input_ids: `[B, T]` token ids in `[0, V)`. An id outside that range
        (negative ones included) raises `ValueError` when the ids are
        concrete; under `jit` it embeds as NaN, so the logits of its whole row
        (attention mixes the NaN into every position, packed neighbours
        included), and any loss over them, are NaN: never a silently wrapped
        or clipped row of the embedding.
      attention_mask: `[B, T]` true on real tokens (left or right padding).
      positions: `[B, T]` position ids; default counts real tokens (so left
        padding starts real text at 0) or restarts in each segment.
      segment_ids: `[B, T]` for packed rows: tokens attend only within their
        segment; id 0 marks padding.
      return_hidden: return the final (normed) hidden states instead of logits.
    """
    input_ids = self._check_ids(input_ids)
    positions, mask = self._positions_and_mask(input_ids, attention_mask, positions, segment_ids)
    h, _ = self._run(input_ids, positions, mask, None, None)
    return h if return_hidden else self.logits(h)

  def hidden_at(self, input_ids, index, *, attention_mask=None, positions=None,
                segment_ids=None) -> jax.Array:
    """Final (normed) hidden states at positions `index` alone: `[B, D]` for `index [B]`,
    `[B, Q, D]` for `index [B, Q]`.

    Equal, up to float32 summation order, to `self(..., return_hidden=True)` gathered at
    `index`, for cheaper: the last block runs its queries, attention output and MLP on
    these positions only (every position still gives it keys and values), so a reward
    model's pass skips a little under `1/num_layers` of the backbone's work, forward and
    backward.
    Takes `attention_mask`, `positions` and `segment_ids` as `__call__` does.
    """
    input_ids = self._check_ids(input_ids)
    index = jnp.asarray(index)
    b, t = input_ids.shape
    if not jnp.issubdtype(index.dtype, jnp.integer) or index.ndim not in (1, 2) or (
        index.shape[0] != b):
      raise ValueError(f"hidden_at: index must be integer [B] or [B, Q] with B={b}, got "
                       f"shape {index.shape} dtype {index.dtype}.")
    if not isinstance(index, jax.core.Tracer) and index.size and (
        int(np.min(np.asarray(index))) < 0 or int(np.max(np.asarray(index))) >= t):
      raise ValueError(f"hidden_at: index holds a position outside [0, {t}).")
    queries = index[:, None] if index.ndim == 1 else index
    positions, mask = self._positions_and_mask(input_ids, attention_mask, positions, segment_ids)
    h, _ = self._run(input_ids, positions, mask, None, None, read=queries)
    return h[:, 0] if index.ndim == 1 else h

  def init_cache(self, batch: int, length: int, dtype=None) -> Cache:
    """An empty KV cache of `length` slots per row."""
    c = self.config
    shape = (batch, length, c.num_kv_heads, c.head_dim)
    dtype = dtype or self.dtype
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in self.layers]

  def decode(self, input_ids, *, positions, key_mask, cache: Cache, cache_index,
             last_only: bool = False):
    """Run `T` new tokens against the cache; returns `(logits [B, T, V], cache)`.

    With `last_only`, only the last position's logits are computed (`[B, 1, V]`): a
    prompt's prefill needs no more, and holds no `[B, T, V]` array.

    Args:
      input_ids: `[B, T]` new tokens, written to slots `cache_index + [0, T)`.
      positions: `[B, T]` their position ids.
      key_mask: `[B, L]` slots holding real tokens once these are written.
      cache: from `init_cache` or a previous `decode`.
      cache_index: scalar int, the first slot to write.
    """
    input_ids = self._check_ids(input_ids)
    t = input_ids.shape[1]
    length = cache[0]["k"].shape[1]
    mask = self._slot_mask(cache_index + jnp.arange(t), jnp.arange(length),
                           jnp.asarray(key_mask, bool))
    h, cache = self._run(input_ids, jnp.asarray(positions), mask, cache, cache_index)
    return self.logits(h[:, -1:] if last_only else h), cache

  def grouped_prefix_hidden(self, input_ids, *, segment_ids, positions, prefix_len: int,
                            group_size: int) -> jax.Array:
    """Final hidden states `[B, T, D]` of rows whose first `prefix_len` columns repeat
    within consecutive groups of `group_size` rows, with each group's prefix run once.

    The samplers' GRPO groups have this layout (`[prompt | response]` rows, each prompt
    repeated `num_samples` times, contiguously). The prefix of every group's first row
    runs through the model once into a KV cache; the cache is repeated `group_size`
    times and the suffixes (`T − prefix_len` columns of every row) run against it. The
    result equals `self(input_ids, segment_ids=..., positions=..., return_hidden=True)`
    at every real position, up to float32 summation order, when the rows hold one
    segment each (`segment_ids` in {0, 1}) and the prefix columns of `input_ids`,
    `segment_ids` and `positions` are identical within each group; other rows of a group
    use the first row's prefix. Padding positions hold unspecified (finite) values.
    The prefix costs `1/group_size` of its tokens' work, forward and backward.

    Args:
      input_ids, segment_ids, positions: `[B, T]`, `B` a multiple of `group_size`.
      prefix_len: static, `0 < prefix_len < T`.
      group_size: static, `≥ 1`.
    """
    input_ids = self._check_ids(input_ids)
    b, t = input_ids.shape
    g, p = group_size, prefix_len
    if not (isinstance(g, int) and g >= 1 and b % g == 0):
      raise ValueError(f"grouped_prefix_hidden: group_size={g!r} must be a positive int "
                       f"dividing the {b} rows.")
    if not (isinstance(p, int) and 0 < p < t):
      raise ValueError(f"grouped_prefix_hidden: prefix_len={p!r} must be an int in (0, {t}).")
    segment_ids, positions = jnp.asarray(segment_ids), jnp.asarray(positions)
    for name, x in (("segment_ids", segment_ids), ("positions", positions)):
      if x.shape != (b, t):
        raise ValueError(f"grouped_prefix_hidden: {name} has shape {x.shape}, "
                         f"expected {(b, t)}.")
    keys = segment_ids != 0
    # The prefixes, one per group, against a cache of their own length.
    first = slice(None, None, g)
    prefix_slots = jnp.arange(p)
    h_prefix, cache = self._run(
        input_ids[first, :p], positions[first, :p],
        self._slot_mask(prefix_slots, prefix_slots, keys[first, :p]),
        self.init_cache(b // g, p), 0, allow_remat=True)
    # Each group's cache serves its `g` rows; the suffixes fill slots [p, T).
    cache = [{k: jnp.repeat(jnp.pad(v, ((0, 0), (0, t - p), (0, 0), (0, 0))), g, axis=0)
              for k, v in layer.items()} for layer in cache]
    h_suffix, _ = self._run(input_ids[:, p:], positions[:, p:],
                            self._slot_mask(p + jnp.arange(t - p), jnp.arange(t), keys),
                            cache, p, allow_remat=True)
    return jnp.concatenate([jnp.repeat(h_prefix, g, axis=0), h_suffix], axis=1)

  # -- internals ----------------------------------------------------------------

  def _positions_and_mask(self, input_ids, attention_mask, positions, segment_ids):
    """`__call__`'s position ids `[B, T]` and attention mask `[B, T, T]`."""
    b, t = input_ids.shape
    key_valid = jnp.ones((b, t), bool) if attention_mask is None else jnp.asarray(
        attention_mask).astype(bool)
    if key_valid.shape != (b, t):
      raise ValueError(f"attention_mask has shape {key_valid.shape}, expected {(b, t)}.")
    idx = jnp.arange(t)
    mask = (idx[None, :, None] >= idx[None, None, :]) & key_valid[:, None, :]
    if segment_ids is not None:
      segment_ids = jnp.asarray(segment_ids)
      if segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids has shape {segment_ids.shape}, expected {(b, t)}.")
      key_valid = key_valid & (segment_ids != 0)
      mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :]) & key_valid[:, None, :]
      if positions is None:
        positions = segment_positions(segment_ids)
    if positions is None:
      positions = padded_positions(key_valid)
    if self.config.sliding_window is not None:
      mask = mask & ((idx[:, None] - idx[None, :]) < self.config.sliding_window)[None]
    return jnp.asarray(positions), mask

  def _slot_mask(self, q_slot, k_slot, key_mask) -> jax.Array:
    """`[B, Q, K]` attention mask over cache slots: causal by slot number, keys where
    `key_mask [B, K]` holds, and within the sliding window if the model has one."""
    mask = (k_slot[None, :] <= q_slot[:, None])[None] & key_mask[:, None, :]
    if self.config.sliding_window is not None:
      mask = mask & ((q_slot[:, None] - k_slot[None, :]) < self.config.sliding_window)[None]
    return mask

  def _check_ids(self, input_ids):
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(
          f"input_ids must be integer [B, T], got shape {input_ids.shape} dtype {input_ids.dtype}."
      )
    if not isinstance(input_ids, jax.core.Tracer) and input_ids.size:
      hi, lo = int(np.max(np.asarray(input_ids))), int(np.min(np.asarray(input_ids)))
      if hi >= self.config.vocab_size or lo < 0:
        raise ValueError(
            f"input_ids hold token id {hi if hi >= self.config.vocab_size else lo}, outside the "
            f"vocabulary [0, {self.config.vocab_size})."
        )
    return input_ids

  def _rope(self, positions):
    if self.config.positions != "rope":
      return None
    inv = jnp.asarray(self.config.inverse_frequencies())
    freqs = positions.astype(jnp.float32)[..., None] * inv
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(self.dtype), jnp.sin(emb).astype(self.dtype)

  def _run(self, input_ids, positions, mask, cache, cache_index, *, allow_remat=False,
           read=None):
    """The blocks and final norm; with `read [B, Q]` (no cache), the last block runs at
    those positions only and the result is `[B, Q, D]`."""
    c = self.config
    # Bad ids are an error where they can be seen (`_check_ids` on concrete
    # ids). Under `jit` they cannot raise: every id outside [0, V), negative
    # ones included (jnp.take would wrap -1 to the last row), embeds as NaN, so
    # the loss is NaN and the trainer's non-finite guard refuses the update.
    valid = (input_ids >= 0) & (input_ids < c.vocab_size)
    h = jnp.take(self.embed[...], jnp.where(valid, input_ids, c.vocab_size), axis=0,
                 mode="fill", fill_value=jnp.nan)
    if c.embed_scale:
      h = h * jnp.asarray(c.hidden_size**0.5, self.param_dtype)
    if self.pos_embed is not None:
      h = h + jnp.take(self.pos_embed[...], positions, axis=0)
    h = h.astype(self.dtype)
    rope = self._rope(positions)
    new_cache = [] if cache is not None else None
    # Decoding with a cache never runs a backward pass, so it needs no rematerialisation
    # (and nnx.remat cannot run inside the sampler's while_loop); a cache that carries
    # gradients (`grouped_prefix_hidden`) allows it.
    call = (_remat_block_call if self.remat and (cache is None or allow_remat)
            else _block_call)
    layers = list(self.layers)
    if read is not None and not layers:  # no block: the read positions' embeddings
      h, read = h[jnp.arange(h.shape[0])[:, None], read], None
    if read is not None:
      layers, last = layers[:-1], layers[-1]
    for i, layer in enumerate(layers):
      h, layer_cache = call(layer, h, rope, mask, None if cache is None else cache[i], cache_index)
      if cache is not None:
        new_cache.append(layer_cache)
    if read is not None:
      read_call = _remat_block_read_call if self.remat else _block_read_call
      h = read_call(last, h, rope, mask[jnp.arange(h.shape[0])[:, None], read], read)
    return self.final_norm(h), new_cache
