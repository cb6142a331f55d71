"""Host-side batch preparation for objectives that need more than data.

- `ReferenceLogProbs`: sequence log-probs of a frozen reference model on
  preference batches, computed once per batch (DPO, IPO).
- `PolicySampler`: samples from the current policy for the prompts of a
  language-model batch and adds `sample_*` keys (online IQLearn), optionally
  with rewards, group advantages, old and reference log-probs (GRPO).

Everything here runs outside the differentiated step: sampling carries no
gradient, and the reference is frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax import losses
from irl_jax.models.sampling import generate
from irl_jax.models.transformer import padded_positions
from irl_jax.train import lm
from irl_jax.train.state import ModelDef


class ReferenceLogProbs:
  """Adds `ref_logps [B, K]` (summed response log-probs under frozen parameters)."""

  def __init__(self, model_def: ModelDef, ref_params, *, chunk_size: int | None = None):
    self.ref_params = ref_params
    self._fn = jax.jit(lambda p, b: lm.sequence_log_probs(
        model_def.merge(p), b, chunk_size=chunk_size))

  def __call__(self, batch: dict, params=None) -> dict:
    del params
    keys = ("input_ids", "segment_ids", "positions", "loss_mask")
    out = dict(batch)
    out["ref_logps"] = np.asarray(self._fn(self.ref_params, {k: batch[k] for k in keys}))
    return out


def prompts_of(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """`(prompt_ids, prompt_mask)` `[B, T]` of an unpacked LM batch: the real tokens before
  each row's first loss target."""
  seg = np.asarray(batch["segment_ids"])
  if np.any(seg > 1):
    raise ValueError("sampling needs unpacked batches (one example per row); set "
                     "data.packing=False for online objectives.")
  before = np.cumsum(np.asarray(batch["loss_mask"]), axis=1) == 0
  return np.asarray(batch["input_ids"]), (seg > 0) & before


class PolicySampler:
  """Samples responses of the current policy to the batch's prompts.

  Adds `sample_input_ids`, `sample_segment_ids`, `sample_positions`,
  `sample_loss_mask` (`[N, P + M]`), `sample_terminal [N]`; with a
  `reward_fn`, also `sample_rewards`, `sample_advantages [N]`,
  `sample_old_logps` and `sample_ref_logps` (`[N, P + M]`, aligned with the
  targets as `irl_jax.train.lm.lm_targets` are).
  """

  def __init__(self, model_def: ModelDef, *, max_new_tokens: int, temperature: float = 1.0,
               num_samples: int = 1, eos_id=None, pad_id: int = 0,
               reward_fn: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]
               | None = None, ref_params=None, scale_by_std: bool = True,
               chunk_size: int | None = None, seed: int = 0):
    self.model_def = model_def
    self.max_new_tokens, self.temperature = max_new_tokens, temperature
    self.num_samples, self.eos_id, self.pad_id = num_samples, eos_id, pad_id
    self.reward_fn, self.ref_params, self.scale_by_std = reward_fn, ref_params, scale_by_std
    self.key = jax.random.key(seed)

    def logps(params, ids, seg, pos):
      stats = lm.lm_stats(model_def.merge(params), ids, seg, pos, chunk_size=chunk_size)
      return stats.log_probs

    self._logps = jax.jit(logps)

  def __call__(self, batch: dict, params) -> dict:
    prompt_ids, prompt_mask = prompts_of(batch)
    self.key, key = jax.random.split(self.key)
    model = self.model_def.merge(params)
    out = generate(model, prompt_ids, prompt_mask, key, max_new_tokens=self.max_new_tokens,
                   temperature=self.temperature, num_samples=self.num_samples,
                   eos_id=self.eos_id, pad_id=self.pad_id)
    p = out.prompt_ids.shape[1]
    attention = np.asarray(out.attention_mask)
    ids = np.asarray(out.sequences, np.int32)
    sample = {
        "sample_input_ids": ids,
        "sample_segment_ids": attention.astype(np.int32),
        "sample_positions": np.asarray(padded_positions(jnp.asarray(attention)), np.int32),
        "sample_loss_mask": np.concatenate(
            [np.zeros((ids.shape[0], p), bool), np.asarray(out.response_mask)], axis=1),
        "sample_terminal": np.asarray(out.terminal),
    }
    if self.reward_fn is not None:
      rewards = np.asarray(self.reward_fn(np.asarray(out.prompt_ids), np.asarray(out.tokens),
                                          np.asarray(out.response_mask)), np.float32)
      sample["sample_rewards"] = rewards
      sample["sample_advantages"] = np.asarray(losses.grpo_advantages(
          jnp.asarray(rewards), group_size=self.num_samples, scale_by_std=self.scale_by_std))
      args = (ids, sample["sample_segment_ids"], sample["sample_positions"])
      sample["sample_old_logps"] = np.asarray(self._logps(params, *args))
      ref = self.ref_params if self.ref_params is not None else params
      sample["sample_ref_logps"] = np.asarray(self._logps(ref, *args))
    out_batch = dict(batch)
    out_batch.update(sample)
    return out_batch
