"""Objectives in the trainer's form `objective(model, batch, rng) -> (loss, metrics)`.

Each wraps a pure loss from `irl_jax.losses` around a model call (through the
adapters in `irl_jax.train.lm`) and registers itself in
`irl_jax.train.registry` with its typed hyperparameters, right below it.

Return contract: `loss` is a `MaskedMean(sum, count)`, or a tuple of them
whose means add up to the loss (one per token population, e.g. the expert
and the policy tokens of online IQLearn; such an objective also carries
`objective.counts(batch)`, the populations' counts from the masks alone).
Either way means are exact across devices and micro-batches: sums and counts
add, and each mean is taken once. `metrics` is a dict of scalars.

Batches follow `irl_jax.data`'s contract:

- language-model batches: `input_ids`, `segment_ids` (0 = padding),
  `positions`, `loss_mask` — `[B, T]`; logits at `t` predict `input_ids[t+1]`,
  and `loss_mask[:, 1:]` marks the targets;
- preference batches: the same keys `[B, K, T]` plus `rank_mask [B, K]`;
- on-policy batches (online IQLearn, GRPO, PPO) add `sample_*` keys produced by
  the host-side samplers in `irl_jax.train.rollouts`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from irl_jax import losses
from irl_jax.losses import MaskedMean, masked_sum_count
from irl_jax.train.lm import (
    PROMPT_GROUPS_BROKEN,
    TARGETS_BEFORE_RESPONSE,
    batch_stats,
    bootstrap_values,
    flatten_responses,
    grouped_prompts,
    lm_stats,
    lm_targets,
    next_tokens,
    response_window,
    sequence_log_probs,
    shares_prompts,
    targets_before,
    window_stats,
)
from irl_jax.train.registry import ObjectiveSpec, register

__all__ = ["bootstrap_values", "lm_stats", "lm_targets", "policy_value_stats",
           "sequence_log_probs"]


def _chunk(chunk_size: int) -> int | None:
  return int(chunk_size) or None


# -- maximum likelihood ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MLEConfig:
  """`chunk_size > 0`: chunked soft-Q statistics; `entropy_bonus`: weight of the policy
  entropy subtracted from the loss (needs dense logits)."""

  chunk_size: int = 0
  entropy_bonus: float = 0.0


def mle_objective(*, chunk_size: int | None = 0, entropy_bonus: float = 0.0):
  """Token-mean negative log-likelihood of the response tokens (optionally minus an
  entropy bonus, which needs dense logits)."""
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    metrics = {}
    if entropy_bonus:
      # One forward pass: the entropy needs the dense logits, so the stats come from them too.
      hidden = model(batch["input_ids"], segment_ids=batch["segment_ids"],
                     positions=batch["positions"], return_hidden=True)
      logits = model.logits(hidden)
      where = lm_targets(batch["loss_mask"])
      stats = losses.soft_q_stats(logits, next_tokens(batch["input_ids"]),
                                  where=jnp.asarray(batch["segment_ids"]) > 0)
      nll = losses.mle(stats, where=where)
      entropy = losses.token_entropy(logits, where=where)
      metrics["entropy"] = losses.token_mean(entropy, where)
      per_token = nll - entropy_bonus * entropy
    else:
      stats, where = batch_stats(model, batch, chunk_size=chunk)
      nll = per_token = losses.mle(stats, where=where)
    loss = masked_sum_count(per_token, where)
    metrics["nll"] = losses.token_mean(nll, where)
    metrics["tokens"] = loss.count
    return loss, metrics

  return objective


register(ObjectiveSpec(
    name="mle", make=mle_objective, hyperparameters=MLEConfig, data="demonstrations",
    summary="maximum likelihood on demonstrations (optionally with an entropy bonus)"))


# -- IQLearn ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IQLearnConfig:
  """Offline IQLearn: discount `gamma`, TD (χ²) weight `td_weight` (λ)."""

  gamma: float = 0.99
  td_weight: float = 0.1
  chunk_size: int = 0


def iq_learn_objective(*, gamma: float, td_weight: float, chunk_size: int | None = 0):
  """Offline IQLearn on demonstrations (every span ends with EOS: terminal)."""
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    stats, where = batch_stats(model, batch, chunk_size=chunk)
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


register(ObjectiveSpec(
    name="iq_learn", make=iq_learn_objective, hyperparameters=IQLearnConfig,
    data="demonstrations", summary="offline IQLearn: maximum likelihood with a TD penalty"))


@dataclasses.dataclass(frozen=True)
class IQLearnOnlineConfig:
  """Online IQLearn: `mix` (α) of the current policy's samples in the value term; the
  sampler draws `num_samples` responses of up to `max_new_tokens` per prompt at
  `temperature`. The loss uses no sampling probabilities (its `Q` is the untempered logits
  everywhere), so `temperature` only chooses where the policy's states come from; at τ ≠ 1
  they are those of the tempered policy, not of the policy whose soft values are learned."""

  gamma: float = 0.99
  td_weight: float = 0.1
  mix: float = 0.1
  chi2_on_mixture: bool = False
  chunk_size: int = 0
  max_new_tokens: int = 32
  temperature: float = 1.0
  num_samples: int = 1


def iq_learn_online_objective(*, gamma: float, td_weight: float, mix: float,
                              chunk_size: int | None = 0, chi2_on_mixture: bool = False,
                              **sampling):
  """Online IQLearn: demonstrations plus the current policy's samples (`sample_*` keys).

  The loss is the sum of two token-population means, expert and policy, each
  returned as its own `MaskedMean`:

      S_E = Σ_E [ (v − q) + λ·c·r̂² − α·(v − γ v') ],   c = 1 − α on the mixture, else 1
      S_π = Σ_π [ α·(v − γ v') + λ·α·r̂² (on the mixture only) ]

  so that `S_E / N_E + S_π / N_π` is `losses.iq_learn_online`'s loss, exact
  across micro-batches (`objective.counts` gives `N_E, N_π` from the masks).
  `sampling` (max_new_tokens, temperature, num_samples) configures the
  trainer's sampler, not the loss.
  """
  del sampling
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    stats, where = batch_stats(model, batch, chunk_size=chunk)
    p_stats = lm_stats(model, batch["sample_input_ids"], batch["sample_segment_ids"],
                       batch["sample_positions"], chunk_size=chunk)
    p_where = lm_targets(batch["sample_loss_mask"])
    terminal = batch["sample_terminal"].astype(bool)
    _, extras = losses.iq_learn_online(
        stats, p_stats, expert_where=where, policy_where=p_where, mix=mix, gamma=gamma,
        td_weight=td_weight, policy_terminal=terminal,
        policy_bootstrap=bootstrap_values(p_stats.v, p_where), chi2_on_mixture=chi2_on_mixture)
    chi2_expert = (1 - mix) if chi2_on_mixture else 1.0
    expert = MaskedMean(
        extras.expert_nll.sum + td_weight * chi2_expert * extras.expert_chi2.sum
        - mix * extras.expert_value_gap.sum, extras.expert_nll.count)
    policy_sum = mix * extras.policy_value_gap.sum
    if chi2_on_mixture:
      policy_sum = policy_sum + td_weight * mix * extras.policy_chi2.sum
    policy = MaskedMean(policy_sum, extras.policy_value_gap.count)
    return (expert, policy), {
        "nll": extras.expert_nll.mean(),
        "expert_chi2": extras.expert_chi2.mean(),
        "policy_value_gap": extras.policy_value_gap.mean(),
        "expert_value_gap": extras.expert_value_gap.mean(),
        "tokens": expert.count,
    }

  def counts(batch):
    return (jnp.sum(lm_targets(batch["loss_mask"])).astype(jnp.float32),
            jnp.sum(lm_targets(batch["sample_loss_mask"])).astype(jnp.float32))

  objective.counts = counts
  return objective


register(ObjectiveSpec(
    name="iq_learn_online", make=iq_learn_online_objective,
    hyperparameters=IQLearnOnlineConfig, data="demonstrations", sampler=True,
    summary="online IQLearn: demonstrations plus the current policy's samples"))


# -- reward models on rankings ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  """Reward-model training has no hyperparameters beyond the optimizer's."""


@dataclasses.dataclass(frozen=True)
class BradleyTerryConfig:
  """Bradley–Terry reward model.

  Attributes:
    use_margin: subtract each pair's margin `m` read from the data,
      `ℓ = −log σ(r_c − r_r − m)` (a row's `"margin"` field, `>= 0`; the trainer's
      preference batches then carry `margin [B]` and a pair without one is a bad row).
  """

  use_margin: bool = False


def reward_model_objective(*, ranking: str = "plackett_luce", use_margin: bool = False):
  """Reward-model training on rankings: Bradley–Terry (pairs, optionally with the data's
  margins) or Plackett–Luce (K-wise)."""
  if ranking not in ("bradley_terry", "plackett_luce", "pairwise_split"):
    raise ValueError(f"unknown ranking loss {ranking!r}.")
  if use_margin and ranking != "bradley_terry":
    raise ValueError(f"use_margin is for the Bradley–Terry loss, not {ranking!r}.")

  def objective(reward_model, batch, rng):
    del rng
    b, k, _ = batch["input_ids"].shape
    rewards = reward_model(flatten_responses(batch["input_ids"]),
                           attention_mask=flatten_responses(batch["segment_ids"]) > 0,
                           positions=flatten_responses(batch["positions"])).reshape(b, k)
    rank_mask = batch["rank_mask"].astype(bool)
    if ranking == "bradley_terry":
      margin = None
      if use_margin:
        if "margin" not in batch:
          raise ValueError(
              "config.objective.bradley_terry.use_margin is True but the batch has no "
              "'margin': give every pair a 'margin' field (the trainer then reads it; "
              "irl_jax.data.preference_batches(..., margins=True) elsewhere).")
        margin = batch["margin"]
      per_example = losses.bradley_terry(rewards[:, 0], rewards[:, 1], margin=margin)
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


register(ObjectiveSpec(
    name="bradley_terry",
    make=lambda use_margin=False: reward_model_objective(ranking="bradley_terry",
                                                         use_margin=use_margin),
    hyperparameters=BradleyTerryConfig, data="preferences", reward_head=True,
    summary="reward model, Bradley–Terry on the first pair of each ranking (optionally "
            "with the data's margins)"))
for _ranking, _summary in (
    ("plackett_luce", "reward model, Plackett–Luce on K-wise rankings"),
    ("pairwise_split", "reward model, Bradley–Terry on every pair a ranking implies")):
  register(ObjectiveSpec(
      name=_ranking, make=lambda _r=_ranking: reward_model_objective(ranking=_r),
      hyperparameters=RewardModelConfig, data="preferences", reward_head=True,
      summary=_summary))


# -- max-margin reward recovery --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MaxMarginConfig:
  """Max-margin reward recovery: `loss` "asymmetric" (unbounded below), "hinge" (with
  `hinge_margin`) or "logistic"; each batch row ranks an aligned policy's completion
  first and a base policy's second."""

  loss: Literal["asymmetric", "hinge", "logistic"] = "asymmetric"
  hinge_margin: float = 1.0


def max_margin_objective(*, loss: str = "asymmetric", hinge_margin: float = 1.0):
  """Max-margin IRL (docs/objectives.md): a reward model separating each row's first response
  (the aligned policy's completion) from its second (the base policy's, same prompt)."""
  if loss not in ("asymmetric", "hinge", "logistic"):
    raise ValueError(f"config.objective.max_margin.loss: unknown loss {loss!r}; expected "
                     "'asymmetric', 'hinge' or 'logistic'.")
  if not hinge_margin >= 0:
    raise ValueError(f"config.objective.max_margin.hinge_margin must be >= 0, got "
                     f"{hinge_margin!r}.")

  def objective(reward_model, batch, rng):
    del rng
    b, k, _ = batch["input_ids"].shape
    rewards = reward_model(flatten_responses(batch["input_ids"]),
                           attention_mask=flatten_responses(batch["segment_ids"]) > 0,
                           positions=flatten_responses(batch["positions"])).reshape(b, k)
    per_pair = losses.max_margin(
        rewards[:, 0], rewards[:, 1], hinge_margin=hinge_margin if loss == "hinge" else None,
        logistic=loss == "logistic")
    valid = jnp.all(batch["rank_mask"][:, :2].astype(bool), axis=1)
    d = rewards[:, 0] - rewards[:, 1]
    return masked_sum_count(per_pair, valid), {
        "accuracy": losses.token_mean((d > 0).astype(jnp.float32), valid),
        "reward_margin": losses.token_mean(d, valid)}

  return objective


register(ObjectiveSpec(
    name="max_margin", make=max_margin_objective, hyperparameters=MaxMarginConfig,
    data="preferences", reward_head=True,
    summary="reward recovery: max-margin IRL on (aligned, base) completion pairs"))


# -- direct preference optimisation -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DPOConfig:
  """DPO: inverse temperature `beta`, conservative `label_smoothing`."""

  beta: float = 0.1
  label_smoothing: float = 0.0
  chunk_size: int = 0


@dataclasses.dataclass(frozen=True)
class IPOConfig:
  """IPO: regularisation `beta` (the squared margin's target is 1/(2β))."""

  beta: float = 0.1
  chunk_size: int = 0


def direct_preference_objective(*, kind: str, beta: float, label_smoothing: float = 0.0,
                                chunk_size: int | None = 0):
  """DPO or IPO on pairs; needs `ref_logps [B, 2]` precomputed by the frozen reference."""
  if kind not in ("dpo", "ipo"):
    raise ValueError(f"unknown direct preference objective {kind!r}.")
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    logps = sequence_log_probs(model, batch, chunk_size=chunk)
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


register(ObjectiveSpec(
    name="dpo", make=lambda **hp: direct_preference_objective(kind="dpo", **hp),
    hyperparameters=DPOConfig, data="preferences", reference=True,
    summary="direct preference optimisation against the frozen initial policy"))
register(ObjectiveSpec(
    name="ipo", make=lambda **hp: direct_preference_objective(kind="ipo", **hp),
    hyperparameters=IPOConfig, data="preferences", reference=True,
    summary="identity preference optimisation against the frozen initial policy"))


# -- GRPO -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """GRPO: clipping `clip_epsilon`, KL weight `kl_coef`, the loss `normaliser`; the sampler
  draws groups of `num_samples` responses per prompt at `temperature`, scored by the reward
  function. The old, reference and current log-probs are all those of the logits divided
  by `temperature`, the distribution the responses were drawn from, so the ratio and the
  KL term are of that policy at any temperature."""

  clip_epsilon: float = 0.2
  kl_coef: float = 0.04
  normaliser: Literal["token", "sequence", "sequence_all_rows"] = "token"
  chunk_size: int = 0
  max_new_tokens: int = 32
  temperature: float = 1.0
  num_samples: int = 4
  # Each group's prompt runs through the model once (`irl_jax.train.lm.model_hidden`): the
  # rows must be the samplers' groups of `num_samples` sharing their prompt (the loss is NaN,
  # and the trainer's error says so, for rows that are not). It changes how the loss is
  # computed, not its value, so it stays out of the checkpoints' fingerprint: runs resume
  # across it, and from checkpoints made before it existed.
  share_prompts: bool = dataclasses.field(default=True, metadata={"fingerprint": False})

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"config.objective.grpo.temperature={self.temperature!r}: must be > 0 "
                       "(the log-probs are those of the logits divided by it; greedy "
                       "decoding has none).")


def grpo_objective(*, clip_epsilon: float, kl_coef: float, normaliser="token",
                   chunk_size: int | None = 0, share_prompts: bool = True, **sampling):
  """GRPO on sampled groups: `sample_*` tokens with `sample_old_logps`, `sample_ref_logps`
  (`[N, T]`, aligned with the targets) and `sample_advantages [N]`.

  With `max_new_tokens` (of the sampling keywords), the rows are the samplers'
  `[prompt | response]` and only the last `max_new_tokens + 1` positions are unembedded
  and scored (`irl_jax.train.lm.response_window`); a target before them makes the loss
  NaN (see `_response_guard`), never a silently dropped token. With `share_prompts`,
  `max_new_tokens` and `num_samples > 1` (and rows a multiple of it), each group of
  `num_samples` consecutive rows runs its prompt (the first `T − max_new_tokens` columns)
  once, as the samplers lay groups out; rows that are not such groups make the loss NaN
  and set the `prompt_groups_broken` metric, never a loss computed from the wrong prompt.
  """
  max_new_tokens = sampling.get("max_new_tokens")
  temperature = sampling.get("temperature", 1.0)
  group = int(sampling.get("num_samples") or 1)
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    where = lm_targets(batch["sample_loss_mask"])
    t = where.shape[1]
    last = response_window(max_new_tokens, t)
    groups = (t - max_new_tokens, group) if share_prompts and last is not None else None
    rows = (batch["sample_input_ids"], batch["sample_segment_ids"], batch["sample_positions"])
    stats = lm_stats(model, *rows, chunk_size=chunk, last=last, temperature=temperature,
                     prompt_groups=groups)
    loss, extras = losses.grpo(
        stats.log_probs, batch["sample_old_logps"], batch["sample_ref_logps"],
        batch["sample_advantages"], where=where, normaliser=normaliser,
        clip_epsilon=clip_epsilon, kl_coef=kl_coef)
    terms, outside = _response_guard(extras.loss_terms, where, last)
    metrics = {"kl": extras.mean_kl.mean(), "clip_fraction": extras.clip_fraction.mean(),
               "loss_mean": loss, TARGETS_BEFORE_RESPONSE: outside}
    if shares_prompts(model, where.shape, groups):
      broken = ~grouped_prompts(*rows, prompt_len=groups[0], group_size=groups[1])
      terms = _poison(terms, broken)
      metrics[PROMPT_GROUPS_BROKEN] = broken.astype(jnp.float32)
    return terms, metrics

  return objective


register(ObjectiveSpec(
    name="grpo", make=grpo_objective, hyperparameters=GRPOConfig, data="demonstrations",
    reference=True, sampler=True, reward_fn=True,
    summary="group-relative policy optimisation on the prompts of the data"))


# -- PPO with a value head ------------------------------------------------------------------


def policy_value_stats(model, input_ids, segment_ids, positions, *, chunk_size: int | None,
                       last: int | None = None, temperature: float = 1.0):
  """`(TokenStats [B, T], values [B, T])` of an `irl_jax.models.PolicyValueModel` in one
  forward pass, aligned as `irl_jax.train.lm.lm_stats` (position `t` scores
  `input_ids[t+1]`; `values[:, t]` is `V` of the state the logits at `t` act in); with
  `last`, only the last `last` positions are scored (the statistics before them are zero,
  the values are computed everywhere); with `temperature`, the statistics are those of the
  logits divided by it (the values are not).

  The PPO objective and its sampler (`irl_jax.train.rollouts.PolicySampler`) both call
  it, so the old and the new log-probs and values are computed the same way.
  """
  hidden, values = model(input_ids, segment_ids=segment_ids, positions=positions,
                         return_hidden=True)
  stats = window_stats(hidden, model.policy.unembedding, model.policy.logits, input_ids,
                       segment_ids, chunk_size=chunk_size, last=last, temperature=temperature)
  return stats, values


def _response_guard(terms, where, last: int | None):
  """`(terms, count)`: the loss terms, made NaN when `count > 0` targets lie before the
  scored window of `last` positions, so the trainer stops with its non-finite error (which
  names them) instead of training on a loss that left them out."""
  outside = targets_before(where, last)
  if last is None:
    return terms, outside.astype(jnp.float32)
  return _poison(terms, outside > 0), outside.astype(jnp.float32)


def _poison(terms, flag):
  """The loss terms with NaN sums where `flag` (a `[]` bool) is set. Only the sums: the
  counts stay exact."""
  poison = lambda m: m._replace(sum=jnp.where(flag, jnp.nan, m.sum))
  return poison(terms) if isinstance(terms, MaskedMean) else tuple(map(poison, terms))


def _check_ppo_field(name: str, value, low: float, *, strict: bool = False,
                     high: float | None = None) -> None:
  """`low <= value` (`<` if strict, and `<= high` if given), else a `ValueError` naming
  `config.objective.ppo.<name>`."""
  ok = value > low if strict else value >= low
  if high is not None:
    ok = ok and value <= high
  if not ok:
    bound = (f"in [{low}, {high}]" if high is not None
             else f"{'>' if strict else '>='} {low}")
    raise ValueError(f"config.objective.ppo.{name}={value!r}: must be {bound}.")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO with a value head on the policy (RLHF): the ratio clip `clip_epsilon`, the value
  clip `value_clip` around the sampling-time values, the value-loss weight `vf_coef`, the
  per-token KL penalty `kl_coef` in the shaped rewards, GAE's `gamma` and `lam`, whether
  the sampler whitens the advantages over the batch, the loss `normaliser`; the sampler
  draws `num_samples` responses per prompt, scored by the reward function. Each sample
  batch is used for `ppo_epochs` passes, each cut into `num_minibatches` minibatches (in a
  fresh order), one optimizer update per minibatch: with more than one update the ratio
  and value clips act on the later ones (the first starts at ratio 1). The trainer sizes
  its learning-rate schedule for `steps * ppo_epochs * num_minibatches` updates.

  The defaults are TRL's `PPOConfig` ones (`cliprange`, `cliprange_value`, `vf_coef`,
  `kl_coef`, `gamma`, `lam`; whitened advantages, token-mean loss), except `ppo_epochs=1`
  (TRL's `num_ppo_epochs` is 4) and `num_minibatches=1` (as TRL's); `num_samples=1`
  because the value head, not a group, is the baseline. The old, reference and current
  log-probs (hence the ratio and the KL-shaped rewards) are all those of the logits divided
  by `temperature`, the distribution the tokens were drawn from. Out-of-range
  values raise `ValueError` naming `config.objective.ppo.<field>`.
  """

  clip_epsilon: float = 0.2
  value_clip: float = 0.2
  vf_coef: float = 0.1
  kl_coef: float = 0.05
  gamma: float = 1.0
  lam: float = 0.95
  whiten_advantages: bool = True
  normaliser: Literal["token", "sequence", "sequence_all_rows"] = "token"
  chunk_size: int = 0
  max_new_tokens: int = 32
  temperature: float = 1.0
  num_samples: int = 1
  ppo_epochs: int = 1
  num_minibatches: int = 1

  def __post_init__(self):
    _check_ppo_field("clip_epsilon", self.clip_epsilon, 0.0, strict=True)
    for name in ("ppo_epochs", "num_minibatches"):
      _check_ppo_field(name, getattr(self, name), 1)
    for name in ("value_clip", "vf_coef", "kl_coef"):
      _check_ppo_field(name, getattr(self, name), 0.0)
    for name in ("gamma", "lam"):
      _check_ppo_field(name, getattr(self, name), 0.0, high=1.0)
    _check_ppo_field("temperature", self.temperature, 0.0, strict=True)
    _check_ppo_field("chunk_size", self.chunk_size, 0)
    for name in ("max_new_tokens", "num_samples"):
      _check_ppo_field(name, getattr(self, name), 1)


def ppo_objective(*, clip_epsilon: float, value_clip: float, vf_coef: float,
                  normaliser="token", chunk_size: int | None = 0, **sampling):
  """PPO on the sampler's rows: `sample_*` tokens with `sample_old_logps`,
  `sample_old_values`, `sample_advantages` and `sample_returns` (`[N, T]`, aligned with
  the targets), on a `PolicyValueModel` (one forward pass for log-probs and values).

  `sampling` (kl_coef, gamma, lam, whiten_advantages, max_new_tokens, temperature,
  num_samples, ppo_epochs, num_minibatches) configures the sampler's advantages and
  samples and the trainer's updates per batch, not the loss; `max_new_tokens` also bounds
  the positions scored, as in `grpo_objective`.
  """
  max_new_tokens = sampling.get("max_new_tokens")
  temperature = sampling.get("temperature", 1.0)
  chunk = _chunk(chunk_size or 0)

  def objective(model, batch, rng):
    del rng
    where = lm_targets(batch["sample_loss_mask"])
    last = response_window(max_new_tokens, where.shape[1])
    stats, values = policy_value_stats(model, batch["sample_input_ids"],
                                       batch["sample_segment_ids"], batch["sample_positions"],
                                       chunk_size=chunk, last=last,
                                       temperature=temperature)
    loss, extras = losses.ppo_losses(
        stats.log_probs, batch["sample_old_logps"], batch["sample_advantages"], values,
        batch["sample_old_values"], batch["sample_returns"], where=where,
        clip_epsilon=clip_epsilon, value_clip=value_clip, vf_coef=vf_coef,
        normaliser=normaliser)
    terms, outside = _response_guard(extras.loss_terms, where, last)
    return terms, {
        TARGETS_BEFORE_RESPONSE: outside,
        "policy_loss": extras.policy_loss.mean(),
        "value_loss": extras.value_loss.mean(),
        "clip_fraction": extras.clip_fraction.mean(),
        "value_clip_fraction": extras.value_clip_fraction.mean(),
        "approx_kl": extras.approx_kl.mean(),
        "value": losses.token_mean(values, where),
        "loss_mean": loss,
    }

  return objective


register(ObjectiveSpec(
    name="ppo", make=ppo_objective, hyperparameters=PPOConfig, data="demonstrations",
    reference=True, sampler=True, reward_fn=True, value_head=True,
    summary="PPO with a value head and token GAE on KL-shaped rewards (RLHF policy stage)"))
