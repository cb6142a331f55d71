"""jit-compiled autoregressive sampling with a KV cache.

Prompts of different lengths are left-aligned internally (padding moved to the
front) so that every row decodes into the same cache slot at each step. Each
prompt is repeated `num_samples` times, contiguously, as GRPO groups expect.
Decoding stops at `max_new_tokens` or when every row has emitted an EOS.

Dimensions: `B` prompts, `N = B·num_samples` rows, `P` prompt length,
`M` max new tokens, `V` vocabulary.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from irl_jax.models.transformer import Transformer, padded_positions


class SampleOutput(NamedTuple):
  """Sampled responses.

  Attributes:
    tokens: `[N, M]` int32 response tokens; `pad_id` after a row's EOS.
    response_mask: `[N, M]` bool, true on generated tokens (EOS included).
    log_probs: `[N, M]` float32 log-probability of each token under the
      distribution it was drawn from (after temperature, top-k, top-p; for
      greedy decoding, under the model at temperature 1); 0 where masked.
    terminal: `[N]` bool, the row ended with EOS (false: cut at `M` tokens).
    prompt_ids: `[N, P]` the prompts, left-aligned and repeated.
    prompt_mask: `[N, P]` bool, their real tokens.
  """

  tokens: jax.Array
  response_mask: jax.Array
  log_probs: jax.Array
  terminal: jax.Array
  prompt_ids: jax.Array
  prompt_mask: jax.Array

  @property
  def sequences(self) -> jax.Array:
    """`[N, P + M]` prompt followed by response."""
    return jnp.concatenate([self.prompt_ids, self.tokens], axis=1)

  @property
  def attention_mask(self) -> jax.Array:
    """`[N, P + M]` real tokens of `sequences`."""
    return jnp.concatenate([self.prompt_mask, self.response_mask], axis=1)


def left_align(ids, mask):
  """Move padding to the front of each row, keeping the order of real tokens."""
  order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)
  return jnp.take_along_axis(ids, order, axis=1), jnp.take_along_axis(mask, order, axis=1)


def sampling_log_probs(logits, *, temperature: float, top_k: int | None, top_p: float | None):
  """Log-probabilities `[..., V]` of the sampling distribution, in float32."""
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    return jax.nn.log_softmax(logits, axis=-1)
  scaled = logits / temperature
  if top_k is not None and top_k < scaled.shape[-1]:
    kth = jax.lax.top_k(scaled, top_k)[0][..., -1:]
    scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
  if top_p is not None and top_p < 1.0:
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (at least one token).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    scaled = jnp.where(scaled < threshold, -jnp.inf, scaled)
  return jax.nn.log_softmax(scaled, axis=-1)


def generate(
    model: Transformer,
    prompt_ids,
    prompt_mask,
    key,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | tuple[int, ...] | None = None,
    pad_id: int = 0,
    num_samples: int = 1,
) -> SampleOutput:
  """Sample `num_samples` responses per prompt.

  Args:
    model: a `Transformer`.
    prompt_ids: `[B, P]` int prompt tokens (left or right padded).
    prompt_mask: `[B, P]` bool, real prompt tokens (each row at least one).
    key: PRNG key.
    max_new_tokens: `M` (static).
    temperature: 0 decodes greedily.
    top_k: keep the `k` most likely tokens.
    top_p: keep the smallest set of tokens with probability mass ≥ `p`.
    eos_id: token id(s) that end a response; default the config's EOS.
    pad_id: token written after a row's EOS.
    num_samples: samples per prompt, contiguous in the output.

  Returns:
    `SampleOutput`.
  """
  prompt_ids = jnp.asarray(prompt_ids)
  prompt_mask = jnp.asarray(prompt_mask).astype(bool)
  if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
    raise ValueError(
        f"generate: prompt_ids {prompt_ids.shape} and prompt_mask {prompt_mask.shape} must both "
        "be [B, P]."
    )
  if max_new_tokens < 1 or num_samples < 1:
    raise ValueError("generate: max_new_tokens and num_samples must be ≥ 1.")
  if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (
      top_k is not None and top_k < 1):
    raise ValueError(
        f"generate: invalid sampling settings temperature={temperature}, top_k={top_k}, "
        f"top_p={top_p}."
    )
  if eos_id is None:
    eos_id = model.config.eos_token_id
  eos = () if eos_id is None else (tuple(eos_id) if isinstance(eos_id, tuple | list)
                                   else (int(eos_id),))
  model._check_ids(prompt_ids)
  c = model.config
  if c.positions == "learned" and prompt_ids.shape[1] + max_new_tokens > c.max_position_embeddings:
    raise ValueError(
        f"generate: prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} "
        f"exceeds the model's {c.max_position_embeddings} learned positions."
    )
  graphdef, state = nnx.split(model)
  return _generate(
      graphdef, state, prompt_ids, prompt_mask, key, max_new_tokens=max_new_tokens,
      temperature=float(temperature), top_k=top_k, top_p=top_p, eos=eos, pad_id=pad_id,
      num_samples=num_samples,
  )


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("max_new_tokens", "temperature", "top_k", "top_p", "eos", "pad_id",
                     "num_samples"),
)
def _generate(graphdef, state, prompt_ids, prompt_mask, key, *, max_new_tokens, temperature,
              top_k, top_p, eos, pad_id, num_samples):
  model = nnx.merge(graphdef, state)
  ids, mask = left_align(prompt_ids, prompt_mask)
  ids = jnp.repeat(ids, num_samples, axis=0)
  mask = jnp.repeat(mask, num_samples, axis=0)
  n, p = ids.shape
  m = max_new_tokens
  cache = model.init_cache(n, p + m)
  key_mask = jnp.concatenate([mask, jnp.zeros((n, m), bool)], axis=1)
  logits, cache = model.decode(ids, positions=padded_positions(mask), key_mask=key_mask,
                               cache=cache, cache_index=0, last_only=True)
  first_pos = jnp.sum(mask, axis=1).astype(jnp.int32)
  eos_arr = jnp.asarray(eos if eos else (-1,), jnp.int32)

  def cond(carry):
    step, done = carry[0], carry[3]
    return (step < m) & ~jnp.all(done)

  def body(carry):
    step, tokens, logps, done, cache, key_mask, last, key = carry
    key, sub = jax.random.split(key)
    logp_all = sampling_log_probs(last, temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
      tok = jnp.argmax(last, axis=-1).astype(jnp.int32)
    else:
      tok = jax.random.categorical(sub, logp_all).astype(jnp.int32)
    logp = jnp.take_along_axis(logp_all, tok[:, None], axis=-1)[:, 0]
    live = ~done
    tok = jnp.where(live, tok, pad_id)
    tokens = tokens.at[:, step].set(tok)
    logps = logps.at[:, step].set(jnp.where(live, logp, 0.0))
    key_mask = key_mask.at[:, p + step].set(live)
    done = done | (live & jnp.any(tok[:, None] == eos_arr[None, :], axis=1))
    logits, cache = model.decode(tok[:, None], positions=(first_pos + step)[:, None],
                                 key_mask=key_mask, cache=cache, cache_index=p + step)
    return step + 1, tokens, logps, done, cache, key_mask, logits[:, 0], key

  init = (
      jnp.int32(0), jnp.full((n, m), pad_id, jnp.int32), jnp.zeros((n, m), jnp.float32),
      jnp.zeros((n,), bool), cache, key_mask, logits[:, -1], key,
  )
  _, tokens, logps, done, _, key_mask, _, _ = jax.lax.while_loop(cond, body, init)
  return SampleOutput(
      tokens=tokens, response_mask=key_mask[:, p:], log_probs=logps, terminal=done,
      prompt_ids=ids, prompt_mask=mask,
  )
