"""Reward and value heads usable on any `Transformer` backbone.

`RewardModel` pools the final hidden state at each row's last real token and
maps it to a scalar (the layout of Hugging Face `*ForSequenceClassification`
with one label, so `save_pretrained` writes a checkpoint `transformers` opens
as a reward model). `ValueModel` maps every position to a scalar value.
`PolicyValueModel` is a policy and a value head on its final hidden states
(one backbone, one forward pass for logits and values: PPO's actor-critic);
`save_pretrained` writes its policy alone, as a causal LM.

Dimensions: `B` batch, `T` positions, `D` width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from irl_jax.models.transformer import Linear, Transformer


def last_token_index(attention_mask) -> jax.Array:
  """Index of each row's last real token, `[B]` (left or right padding; 0 if none)."""
  mask = jnp.asarray(attention_mask).astype(bool)
  idx = jnp.arange(mask.shape[1])
  return jnp.max(jnp.where(mask, idx, 0), axis=1)


class RewardModel(nnx.Module):
  """Scalar reward `R(x, y)` from the hidden state at the last real token.

  Example:
    >>> rm = RewardModel(backbone, rngs=nnx.Rngs(0))
    >>> rewards = rm(input_ids, attention_mask=mask)                # [B] float32
    >>> loss = jnp.mean(bradley_terry(rewards[:n], rewards[n:]))
  """

  def __init__(self, backbone: Transformer, *, rngs: nnx.Rngs):
    self.backbone = backbone
    d = backbone.config.hidden_size
    # No bias: the layout of transformers' `score` head.
    self.score = Linear(d, 1, use_bias=False, sharding=("embed", None), rngs=rngs,
                        param_dtype=backbone.param_dtype, dtype=backbone.dtype)

  def __call__(self, input_ids, *, attention_mask=None, positions=None) -> jax.Array:
    """Rewards `[B]` in float32."""
    input_ids = jnp.asarray(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones(input_ids.shape, bool)
    # The last block runs at the pooled position alone (`Transformer.hidden_at`).
    pooled = self.backbone.hidden_at(input_ids, last_token_index(attention_mask),
                                     attention_mask=attention_mask, positions=positions)
    return self.score(pooled)[:, 0].astype(jnp.float32)


class ValueModel(nnx.Module):
  """Per-token values `V(s_t)` from a linear head on every hidden state."""

  def __init__(self, backbone: Transformer, *, rngs: nnx.Rngs):
    self.backbone = backbone
    self.value = Linear(backbone.config.hidden_size, 1, use_bias=True, sharding=("embed", None),
                        rngs=rngs, param_dtype=backbone.param_dtype, dtype=backbone.dtype)

  def __call__(self, input_ids, *, attention_mask=None, positions=None,
               segment_ids=None) -> jax.Array:
    """Values `[B, T]` in float32."""
    h = self.backbone(input_ids, attention_mask=attention_mask, positions=positions,
                      segment_ids=segment_ids, return_hidden=True)
    return self.value(h)[..., 0].astype(jnp.float32)


class PolicyValueModel(nnx.Module):
  """A `Transformer` policy and a linear value head on its final hidden states.

  The backbone is shared: one forward pass gives the policy's logits and the
  values `V(s_t)` of every position (`s_t` the prefix up to and including
  token `t`, the state whose next token the logits at `t` predict). The head
  computes in float32 whatever the backbone's dtype. `save_pretrained` (and
  the trainer's export) writes `policy` alone, as `*ForCausalLM`; the head
  lives in the trainer's checkpoints.

  Example:
    >>> model = PolicyValueModel(Transformer(config, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    >>> logits, values = model(input_ids, attention_mask=mask)    # [B, T, V], [B, T]
    >>> hidden, values = model(input_ids, attention_mask=mask, return_hidden=True)
  """

  def __init__(self, policy: Transformer, *, rngs: nnx.Rngs):
    self.policy = policy
    self.value_head = Linear(policy.config.hidden_size, 1, use_bias=True,
                             sharding=("embed", None), rngs=rngs,
                             param_dtype=policy.param_dtype, dtype=jnp.float32)

  def values(self, hidden) -> jax.Array:
    """Values `[B, T]` in float32 from final hidden states `[B, T, D]`."""
    return self.value_head(hidden.astype(jnp.float32))[..., 0]

  def __call__(self, input_ids, *, attention_mask=None, positions=None, segment_ids=None,
               return_hidden: bool = False) -> tuple[jax.Array, jax.Array]:
    """`(logits [B, T, V] float32, values [B, T] float32)` from one forward pass; with
    `return_hidden`, the final hidden states `[B, T, D]` in place of the logits (for
    chunked token statistics). Arguments as `Transformer.__call__`."""
    h = self.policy(input_ids, attention_mask=attention_mask, positions=positions,
                    segment_ids=segment_ids, return_hidden=True)
    return (h if return_hidden else self.policy.logits(h)), self.values(h)
