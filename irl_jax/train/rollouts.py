"""Host-side batch preparation for objectives that need more than data.

- `ReferenceLogProbs`: sequence log-probs of a frozen reference model on
  preference batches, computed once per batch (DPO, IPO).
- `PolicySampler`: samples from the current policy for the prompts of a
  language-model batch and adds `sample_*` keys (online IQLearn), optionally
  with rewards, group advantages, old and reference log-probs (GRPO), or, for
  a policy with a value head, old values, token GAE advantages and returns on
  KL-shaped rewards (PPO, `ValueTargets`), and reports the samples' statistics
  (`PolicySampler.sample`) that the trainer's reward-hacking monitors read.
- `in_step_sampler`: the same `sample_*` keys drawn inside a compiled train
  step (`irl_jax.train.make_train_step(..., sampler=...)`), for objectives
  whose samples need no host-side scoring (online IQLearn).

Sampling carries no gradient (the step samples from stopped parameters),
and the reference is frozen.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax import losses
from irl_jax.models.heads import PolicyValueModel
from irl_jax.models.sampling import generate
from irl_jax.models.transformer import padded_positions
from irl_jax.train import lm
from irl_jax.train.objectives import policy_value_stats
from irl_jax.train.state import ModelDef


def policy_of(model):
  """The policy (`Transformer`) of a model: a `PolicyValueModel`'s `policy`, else the model."""
  return model.policy if isinstance(model, PolicyValueModel) else model


@dataclasses.dataclass(frozen=True)
class ValueTargets:
  """How `PolicySampler` turns a value-head policy's scored samples into PPO's targets.

  Per token, `r_t = −kl_coef·(log π_old − log π_ref) + [t = last]·R`
  (`irl_jax.losses.kl_shaped_rewards`); then `token_gae(r, V_old, gamma, lam)`
  gives the advantages and the returns, and with `whiten_advantages` the
  advantages are whitened over the whole batch (`irl_jax.losses.whiten`; the
  returns stay unwhitened).
  """

  kl_coef: float = 0.05
  gamma: float = 1.0
  lam: float = 0.95
  whiten_advantages: bool = True


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


def sample_arrays(out) -> dict:
  """The `sample_*` keys `[N, P + M]` (and `sample_terminal [N]`) of a
  `irl_jax.models.SampleOutput`, as the online objectives read them."""
  attention = out.attention_mask
  p = out.prompt_ids.shape[1]
  return {
      "sample_input_ids": out.sequences.astype(jnp.int32),
      "sample_segment_ids": attention.astype(jnp.int32),
      "sample_positions": padded_positions(attention).astype(jnp.int32),
      "sample_loss_mask": jnp.concatenate(
          [jnp.zeros((attention.shape[0], p), bool), out.response_mask], axis=1),
      "sample_terminal": out.terminal,
  }


def prompt_prefix(batch: dict, length: int):
  """`(prompt_ids, prompt_mask)` `[B, length]` of an unpacked language-model batch, inside
  `jit`: the first `length` columns, the mask on the real tokens before each row's first
  loss target. Every prompt must fit in `length` (check it with `check_prompt_lengths`
  on the host: a longer prompt would be cut here)."""
  ids = jnp.asarray(batch["input_ids"])[:, :length]
  before = jnp.cumsum(jnp.asarray(batch["loss_mask"]), axis=1) == 0
  mask = (jnp.asarray(batch["segment_ids"]) > 0) & before
  return ids, mask[:, :length]


def check_prompt_lengths(batch: dict, length: int) -> None:
  """Raise `ValueError` when a row of an (unpacked) batch holds more than `length` prompt
  tokens (BOS included) or packs several examples."""
  _, mask = prompts_of(batch)
  longest = int(mask.sum(1).max(initial=0))
  if longest > length:
    row = int(np.argmax(mask.sum(1)))
    raise ValueError(f"row {row} has a prompt of {longest} tokens (BOS included), longer than "
                     f"the sampler's prompt_len={length}.")


def in_step_sampler(*, max_new_tokens: int, prompt_len: int, temperature: float = 1.0,
                    num_samples: int = 1, num_prompts: int | None = None, eos_id=None,
                    pad_id: int = 0):
  """`sampler(model, batch, key) -> batch` adding the policy's `sample_*` keys, pure and
  jit-compatible (pass it to `make_train_step(..., sampler=...)`).

  Prompts are the first `prompt_len` columns of each row (`prompt_prefix`);
  check them once with `check_prompt_lengths`. With `num_prompts`, only the
  first `num_prompts` rows of each batch are sampled (batches are shuffled,
  so these are a random subset), which bounds the cost of decoding.
  """

  def sampler(model, batch: dict, key) -> dict:
    ids, mask = prompt_prefix(batch, prompt_len)
    if num_prompts is not None:
      ids, mask = ids[:num_prompts], mask[:num_prompts]
    out = generate(model, ids, mask, key, max_new_tokens=max_new_tokens,
                   temperature=temperature, num_samples=num_samples, eos_id=eos_id,
                   pad_id=pad_id)
    return {**batch, **sample_arrays(out)}

  return sampler


def prompts_of(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """`(prompt_ids, prompt_mask)` `[B, T]` of an unpacked LM batch: the real tokens before
  each row's first loss target."""
  seg = np.asarray(batch["segment_ids"])
  if np.any(seg > 1):
    raise ValueError("sampling needs unpacked batches (one example per row); set "
                     "data.packing=False for online objectives.")
  before = np.cumsum(np.asarray(batch["loss_mask"]), axis=1) == 0
  return np.asarray(batch["input_ids"]), (seg > 0) & before


def accepts_prompt_mask(fn) -> bool:
  """Whether a reward function takes the keyword `prompt_mask` (named, or through `**kwargs`)."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # builtins and other callables without a signature
    return False
  return any((p.name == "prompt_mask" and p.kind != p.POSITIONAL_ONLY)
             or p.kind == p.VAR_KEYWORD for p in params)


# Evaluation samples fold this into the seed's key first (training's fold the step alone,
# and no run reaches 2**31 - 1 steps), so the two streams never share a key.
_EVAL_STREAM = 2**31 - 1

# Log-ratios are clamped to this magnitude in the sampled KL, as `losses.grpo` does.
_LOG_RATIO_CLIP = 20.0


class PolicySampler:
  """Samples responses of the current policy to the batch's prompts.

  Adds `sample_input_ids`, `sample_segment_ids`, `sample_positions`,
  `sample_loss_mask` (`[N, P + M]`), `sample_terminal [N]`; with a
  `reward_fn`, also `sample_rewards`, `sample_advantages [N]` (group
  advantages), `sample_old_logps` and `sample_ref_logps` (`[N, P + M]`,
  aligned with the targets as `irl_jax.train.lm.lm_targets` are; only the last
  `M + 1` positions, where the targets are, are scored, and the log-probs before
  them are 0: see `irl_jax.train.lm.response_window`).

  With `value_targets` (the model is a `PolicyValueModel`; PPO), the
  advantages are per token instead: `sample_advantages [N, P + M]` from GAE on
  KL-shaped rewards (see `ValueTargets`), with `sample_old_values` and
  `sample_returns` (`[N, P + M]`, aligned likewise; 0 outside the targets).
  The log-probs and old values come from one forward pass of the current
  model; the reference log-probs from the policy of `ref_params` (its value
  head plays no part). Samples are drawn from the policy alone.

  The reward function is called as `reward_fn(prompt_ids [N, P], response_ids
  [N, M], response_mask [N, M]) -> [N]`, plus `prompt_mask=[N, P]` (bool,
  the real prompt tokens) when it takes that keyword. The prompts are
  left-aligned and every slot that is not a prompt token holds `pad_id` (the
  batch's other tokens, such as a demonstration's answer, never reach the
  reward function).

  Args:
    seed: the samples of `sample(..., step=s)` are drawn with
      `fold_in(key(seed), s)`, so a resumed run draws the same samples at each
      step as an uninterrupted one; evaluation samples (`sample(..., step=s,
      eval_batch=i)`) come from their own stream, keyed likewise; calls without a
      step (`__call__`) split a running key instead.
    value_targets: PPO's targets (needs a `reward_fn` and a `PolicyValueModel`).
  """

  def __init__(self, model_def: ModelDef, *, max_new_tokens: int, temperature: float = 1.0,
               num_samples: int = 1, eos_id=None, pad_id: int = 0,
               reward_fn: Callable[..., np.ndarray] | None = None, ref_params=None,
               scale_by_std: bool = True, chunk_size: int | None = None, seed: int = 0,
               value_targets: ValueTargets | None = None):
    if value_targets is not None and reward_fn is None:
      raise ValueError("PolicySampler: value_targets (PPO) need a reward_fn to score the "
                       "samples.")
    self.model_def = model_def
    self.max_new_tokens, self.temperature = max_new_tokens, temperature
    self.num_samples, self.eos_id, self.pad_id = num_samples, eos_id, pad_id
    self.reward_fn, self.ref_params, self.scale_by_std = reward_fn, ref_params, scale_by_std
    self._reward_takes_mask = reward_fn is not None and accepts_prompt_mask(reward_fn)
    self.seed = seed
    self.key = jax.random.key(seed)
    self.value_targets = value_targets

    # The rows are [prompt | response] with the response in the last max_new_tokens columns
    # (`sample_arrays`): only those positions' log-probs are computed, the rest are 0.
    def logps(params, ids, seg, pos):
      stats = lm.lm_stats(policy_of(model_def.merge(params)), ids, seg, pos,
                          chunk_size=chunk_size,
                          last=lm.response_window(max_new_tokens, ids.shape[1]),
                          temperature=temperature)
      return stats.log_probs

    self._logps = jax.jit(logps)
    if value_targets is not None:
      vt = value_targets

      def logps_values(params, ids, seg, pos):
        model = model_def.merge(params)
        if not isinstance(model, PolicyValueModel):
          raise TypeError("PolicySampler: value_targets need a PolicyValueModel, got "
                          f"{type(model).__name__}.")
        stats, values = policy_value_stats(
            model, ids, seg, pos, chunk_size=chunk_size,
            last=lm.response_window(max_new_tokens, ids.shape[1]), temperature=temperature)
        return stats.log_probs, values

      def targets(scores, old_logps, ref_logps, old_values, loss_mask):
        where = lm.lm_targets(loss_mask)
        rewards = losses.kl_shaped_rewards(scores, old_logps, ref_logps, where=where,
                                           kl_coef=vt.kl_coef)
        adv, returns = losses.token_gae(rewards, old_values, where=where, gamma=vt.gamma,
                                        lam=vt.lam)
        if vt.whiten_advantages:
          adv = losses.whiten(adv, where)
        return adv, returns, jnp.where(where, old_values, 0)

      self._logps_values = jax.jit(logps_values)
      self._targets = jax.jit(targets)

  def __call__(self, batch: dict, params) -> dict:
    return self.sample(batch, params)[0]

  def sample(self, batch: dict, params, *, step: int | None = None,
             eval_batch: int | None = None) -> tuple[dict, dict[str, float]]:
    """`(batch with the sample_* keys, statistics of the samples)`.

    The statistics (host floats) are `response_length` (mean number of
    response tokens, EOS included) and `entropy` (per-token entropy of the
    sampling distribution, estimated as `−mean log π` of the sampled response
    tokens); with a `reward_fn`, also `proxy_reward` (the mean reward) and
    `kl` (KL to the reference per sequence, in nats: the k3 estimator
    `exp(r) − r − 1`, `r = log π_ref − log π`, summed over each response at
    the sampling temperature and averaged over the samples), for GRPO and PPO alike.

    Args:
      batch: an unpacked language-model batch (host arrays).
      params: the current policy's parameters.
      step: the training step; given, the samples are a function of `(seed,
        step)` alone (see the class docstring).
      eval_batch: with `step`, sample for evaluation batch `eval_batch` at that step:
        from `(seed, step, eval_batch)` on a key stream of their own, apart from the
        training samples', so the evaluations of a resumed run draw what an
        uninterrupted run's do.
    """
    prompt_ids, prompt_mask = prompts_of(batch)
    if eval_batch is not None and step is None:
      raise ValueError("PolicySampler.sample: eval_batch needs the step it evaluates.")
    if step is None:
      self.key, key = jax.random.split(self.key)
    elif eval_batch is not None:
      key = jax.random.fold_in(jax.random.fold_in(
          jax.random.fold_in(jax.random.key(self.seed), _EVAL_STREAM), step), eval_batch)
    else:
      key = jax.random.fold_in(jax.random.key(self.seed), step)
    model = policy_of(self.model_def.merge(params))
    out = generate(model, prompt_ids, prompt_mask, key, max_new_tokens=self.max_new_tokens,
                   temperature=self.temperature, num_samples=self.num_samples,
                   eos_id=self.eos_id, pad_id=self.pad_id)
    sample = {k: np.asarray(v) for k, v in sample_arrays(out).items()}
    response_mask = np.asarray(out.response_mask)
    tokens = response_mask.sum(axis=1)
    stats = {
        "response_length": float(tokens.mean()),
        "entropy": float(-np.sum(np.where(response_mask, np.asarray(out.log_probs, np.float64),
                                          0.0)) / max(int(tokens.sum()), 1)),
    }
    ids = sample["sample_input_ids"]
    if self.reward_fn is not None:
      rewards = self._score(out, response_mask)
      sample["sample_rewards"] = rewards
      args = (ids, sample["sample_segment_ids"], sample["sample_positions"])
      ref = self.ref_params if self.ref_params is not None else params
      if self.value_targets is None:  # GRPO: one advantage per sample, from its group
        sample["sample_advantages"] = np.asarray(losses.grpo_advantages(
            jnp.asarray(rewards), group_size=self.num_samples, scale_by_std=self.scale_by_std))
        sample["sample_old_logps"] = np.asarray(self._logps(params, *args))
        sample["sample_ref_logps"] = np.asarray(self._logps(ref, *args))
      else:  # PPO: per-token advantages and returns from the value head
        old_logps, old_values = self._logps_values(params, *args)
        ref_logps = self._logps(ref, *args)
        adv, returns, old_values = self._targets(rewards, old_logps, ref_logps, old_values,
                                                 sample["sample_loss_mask"])
        sample.update(sample_advantages=np.asarray(adv), sample_old_logps=np.asarray(old_logps),
                      sample_ref_logps=np.asarray(ref_logps),
                      sample_old_values=np.asarray(old_values),
                      sample_returns=np.asarray(returns))
      stats["proxy_reward"] = float(np.mean(rewards, dtype=np.float64))
      stats["kl"] = sequence_kl(sample["sample_old_logps"], sample["sample_ref_logps"],
                                sample["sample_loss_mask"])
    out_batch = dict(batch)
    out_batch.update(sample)
    return out_batch, stats

  def _score(self, out, response_mask) -> np.ndarray:
    prompt_mask = np.asarray(out.prompt_mask)
    prompts = np.where(prompt_mask, np.asarray(out.prompt_ids), self.pad_id)
    kwargs = {"prompt_mask": prompt_mask} if self._reward_takes_mask else {}
    rewards = np.asarray(self.reward_fn(prompts, np.asarray(out.tokens), response_mask,
                                        **kwargs), np.float32)
    n = prompts.shape[0]
    if rewards.shape != (n,):
      raise ValueError(f"the reward function returned rewards of shape {rewards.shape} for "
                       f"{n} samples; it must return one reward per sample, shape ({n},).")
    return rewards


def sequence_kl(logps, ref_logps, loss_mask) -> float:
  """Mean over rows of the summed k3 KL estimate `exp(r) − r − 1`, `r = ref − logps`
  (clamped to ±20), over each row's targets (`loss_mask[:, 1:]`, as `lm.lm_targets`)."""
  where = np.concatenate([np.asarray(loss_mask, bool)[:, 1:],
                          np.zeros((np.shape(loss_mask)[0], 1), bool)], axis=1)
  r = np.clip(np.asarray(ref_logps, np.float64) - np.asarray(logps, np.float64),
              -_LOG_RATIO_CLIP, _LOG_RATIO_CLIP)
  k3 = np.where(where, np.expm1(r) - r, 0.0)
  return float(np.mean(np.sum(k3, axis=1)))
