"""Objectives in the trainer's form `objective(model, batch, rng) -> (loss, metrics)`.

Each wraps a pure loss from `irl_jax.losses` around a model call. Losses come
back as `MaskedMean(sum, count)` so that means are exact across devices and
micro-batches. Batches follow `irl_jax.data`'s contract:

- language-model batches: `input_ids`, `segment_ids` (0 = padding),
  `positions`, `loss_mask` — `[B, T]`; logits at `t` predict `input_ids[t+1]`,
  and `loss_mask[:, 1:]` marks the targets;
- preference batches: the same keys `[B, K, T]` plus `rank_mask [B, K]`;
- on-policy batches (online IQLearn, GRPO) add `sample_*` keys produced by the
  host-side samplers in `irl_jax.train.rollouts`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_jax import losses
from irl_jax.losses import MaskedMean, masked_sum_count
from irl_jax.models.heads import last_token_index


def lm_stats(model, input_ids, segment_ids, positions, *, chunk_size: int | None):
  """Token statistics at every position `[B, T]` (the last column's target is a dummy).

  Returns `(stats, hidden_dtype)`; `stats.q[:, t]` is the logit of
  `input_ids[:, t+1]` and `stats.v[:, t]` the soft value of the state after
  token `t`.
  """
  hidden = model(input_ids, segment_ids=segment_ids, positions=positions, return_hidden=True)
  targets = _next_tokens(input_ids)
  # Padding slots hold no state: their statistics are zero and no gradient
  # (not even a NaN one from non-finite logits there) flows through them.
  real = jnp.asarray(segment_ids) > 0
  if chunk_size:
    return losses.chunked_soft_q_stats(hidden, model.unembedding(), targets,
                                       chunk_size=chunk_size, where=real)
  logits = jnp.dot(hidden, model.unembedding(), preferred_element_type=jnp.float32)
  return losses.soft_q_stats(logits, targets, where=real)


def _next_tokens(input_ids):
  """`input_ids` shifted left by one; the last column's target is a dummy 0."""
  return jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)


def lm_targets(loss_mask):
  """`where [B, T]`: position `t` is trained iff `input_ids[t+1]` is a loss target."""
  return jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)


def _lm_batch_stats(model, batch, chunk_size):
  stats = lm_stats(model, batch["input_ids"], batch["segment_ids"], batch["positions"],
                   chunk_size=chunk_size)
  return stats, lm_targets(batch["loss_mask"].astype(bool))


def mle_objective(*, chunk_size: int | None = None, entropy_bonus: float = 0.0):
  """Token-mean negative log-likelihood of the response tokens (optionally minus an
  entropy bonus, which needs dense logits)."""

  def objective(model, batch, rng):
    del rng
    metrics = {}
    if entropy_bonus:
      # One forward pass: the entropy needs the dense logits, so the stats come from them too.
      hidden = model(batch["input_ids"], segment_ids=batch["segment_ids"],
                     positions=batch["positions"], return_hidden=True)
      logits = jnp.dot(hidden, model.unembedding(), preferred_element_type=jnp.float32)
      where = lm_targets(batch["loss_mask"].astype(bool))
      stats = losses.soft_q_stats(logits, _next_tokens(batch["input_ids"]))
      nll = losses.mle(stats, where=where)
      entropy = losses.token_entropy(logits, where=where)
      metrics["entropy"] = losses.token_mean(entropy, where)
      per_token = nll - entropy_bonus * entropy
    else:
      stats, where = _lm_batch_stats(model, batch, chunk_size)
      nll = per_token = losses.mle(stats, where=where)
    loss = masked_sum_count(per_token, where)
    metrics["nll"] = losses.token_mean(nll, where)
    metrics["tokens"] = loss.count
    return loss, metrics

  return objective


def iq_learn_objective(*, gamma: float, td_weight: float, chunk_size: int | None = None):
  """Offline IQLearn on demonstrations (every span ends with EOS: terminal)."""

  def objective(model, batch, rng):
    del rng
    stats, where = _lm_batch_stats(model, batch, chunk_size)
    per_token, extras = losses.iq_learn(stats, where=where, gamma=gamma, td_weight=td_weight)
    loss = masked_sum_count(per_token, where)
    return loss, {
        "nll": losses.token_mean(extras.nll, where),
        "td_penalty": losses.token_mean(extras.td_penalty, where),
        "implied_reward": losses.token_mean(extras.implied_rewards, where),
        "value": losses.token_mean(extras.values, where),
        "tokens": loss.count,
    }

  return objective


def bootstrap_values(v, where):
  """`[B]` soft value of the state after each row's last target (for truncated rows).

  With `where[:, t]` marking the target `input_ids[t+1]`, the state after the
  last target is the one whose value is `v[:, t_last + 1]`.
  """
  last = last_token_index(where)
  return v[jnp.arange(v.shape[0]), jnp.minimum(last + 1, where.shape[1] - 1)]


def iq_learn_online_objective(*, gamma: float, td_weight: float, mix: float,
                              chunk_size: int | None = None, chi2_on_mixture: bool = False):
  """Online IQLearn: demonstrations plus the current policy's samples (`sample_*` keys)."""

  def objective(model, batch, rng):
    del rng
    stats, where = _lm_batch_stats(model, batch, chunk_size)
    p_stats = lm_stats(model, batch["sample_input_ids"], batch["sample_segment_ids"],
                       batch["sample_positions"], chunk_size=chunk_size)
    p_where = lm_targets(batch["sample_loss_mask"].astype(bool))
    terminal = batch["sample_terminal"].astype(bool)
    loss, extras = losses.iq_learn_online(
        stats, p_stats, expert_where=where, policy_where=p_where, mix=mix, gamma=gamma,
        td_weight=td_weight, policy_terminal=terminal,
        policy_bootstrap=bootstrap_values(p_stats.v, p_where), chi2_on_mixture=chi2_on_mixture)
    # The scalar loss mixes means of two batches: report it with count 1.
    return MaskedMean(loss, jnp.float32(1.0)), {
        "nll": extras.expert_nll.mean(),
        "expert_chi2": extras.expert_chi2.mean(),
        "policy_value_gap": extras.policy_value_gap.mean(),
        "expert_value_gap": extras.expert_value_gap.mean(),
    }

  return objective


def _flatten_k(batch, key):
  x = batch[key]
  return x.reshape(-1, x.shape[-1])


def sequence_log_probs(model, batch, *, chunk_size: int | None = None):
  """`[B, K]` summed response log-probs of preference batches `[B, K, T]`."""
  b, k, _ = batch["input_ids"].shape
  stats = lm_stats(model, _flatten_k(batch, "input_ids"), _flatten_k(batch, "segment_ids"),
                   _flatten_k(batch, "positions"), chunk_size=chunk_size)
  where = lm_targets(_flatten_k(batch, "loss_mask").astype(bool))
  return jnp.sum(jnp.where(where, stats.log_probs, 0), axis=-1).reshape(b, k)


def reward_model_objective(*, ranking: str = "plackett_luce"):
  """Reward-model training on rankings: Bradley–Terry (pairs) or Plackett–Luce (K-wise)."""
  if ranking not in ("bradley_terry", "plackett_luce", "pairwise_split"):
    raise ValueError(f"unknown ranking loss {ranking!r}.")

  def objective(reward_model, batch, rng):
    del rng
    b, k, _ = batch["input_ids"].shape
    rewards = reward_model(_flatten_k(batch, "input_ids"),
                           attention_mask=_flatten_k(batch, "segment_ids") > 0,
                           positions=_flatten_k(batch, "positions")).reshape(b, k)
    rank_mask = batch["rank_mask"].astype(bool)
    if ranking == "bradley_terry":
      per_example = losses.bradley_terry(rewards[:, 0], rewards[:, 1])
    elif ranking == "plackett_luce":
      per_example = losses.plackett_luce(rewards, where=rank_mask)
    else:
      per_example = losses.pairwise_split(rewards, where=rank_mask)
    # Rows without a pair (padding rows of a last eval batch) do not count.
    valid = jnp.sum(rank_mask, axis=1) >= 2
    loss = masked_sum_count(per_example, valid)
    correct = (rewards[:, 0] > rewards[:, 1]).astype(jnp.float32)
    return loss, {"accuracy": losses.token_mean(correct, valid),
                  "reward_margin": losses.token_mean(rewards[:, 0] - rewards[:, 1], valid)}

  return objective


def direct_preference_objective(*, kind: str, beta: float, label_smoothing: float = 0.0,
                                chunk_size: int | None = None):
  """DPO or IPO on pairs; needs `ref_logps [B, 2]` precomputed by the frozen reference."""
  if kind not in ("dpo", "ipo"):
    raise ValueError(f"unknown direct preference objective {kind!r}.")

  def objective(model, batch, rng):
    del rng
    logps = sequence_log_probs(model, batch, chunk_size=chunk_size)
    ref = jax.lax.stop_gradient(batch["ref_logps"])
    args = (logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1])
    if kind == "dpo":
      per_pair = losses.dpo(*args, beta=beta, label_smoothing=label_smoothing)
    else:
      per_pair = losses.ipo(*args, beta=beta)
    margin = losses.preference_margin(*args)
    valid = jnp.all(batch["rank_mask"][:, :2].astype(bool), axis=1)
    return masked_sum_count(per_pair, valid), {
        "accuracy": losses.token_mean((margin > 0).astype(jnp.float32), valid),
        "margin": losses.token_mean(margin, valid),
    }

  return objective


def grpo_objective(*, clip_epsilon: float, kl_coef: float, normaliser="token",
                   chunk_size: int | None = None):
  """GRPO on sampled groups: `sample_*` tokens with `sample_old_logps`, `sample_ref_logps`
  (`[N, T]`, aligned with the targets) and `sample_advantages [N]`."""

  def objective(model, batch, rng):
    del rng
    stats = lm_stats(model, batch["sample_input_ids"], batch["sample_segment_ids"],
                     batch["sample_positions"], chunk_size=chunk_size)
    where = lm_targets(batch["sample_loss_mask"].astype(bool))
    loss, extras = losses.grpo(
        stats.log_probs, batch["sample_old_logps"], batch["sample_ref_logps"],
        batch["sample_advantages"], where=where, normaliser=normaliser,
        clip_epsilon=clip_epsilon, kl_coef=kl_coef)
    return extras.loss_terms, {"kl": extras.mean_kl.mean(),
                               "clip_fraction": extras.clip_fraction.mean(),
                               "loss_mean": loss}

  return objective
