"""Generation-based evaluation of a policy: task accuracy, diversity, entropy, reward ranking.

The same functions serve the laptop-scale studies and the trainer's periodic
evaluation (`config.eval_generation`), so a study reports the same numbers
at any scale:

- `generation_metrics`: sample `num_samples` responses per prompt of a
  language-model batch, score them with a task checker (accuracy, mean
  score), measure their diversity (Self-BLEU within each prompt's samples,
  distinct-n over all), the policy's per-token entropy on its own samples,
  and the Spearman correlation, *within each prompt*, between the samples'
  extracted sequence rewards (`irl_jax.losses.sequence_rewards` at `gamma`)
  and their checker scores.
- `reward_ranking`: the same within-prompt correlation on given responses
  (e.g. correct and corrupted derivations of one prompt).

A checker is `checker(prompt, reference, response) -> (score, correct)`:
`score` a float (higher is better), `correct` a bool, `reference` the
batch's own response text for that prompt (a task with an exact checker may
ignore it).

Within-prompt correlations compare responses to the same prompt only: a
sequence reward summed with `gamma = 1` telescopes to the response's
log-likelihood plus the value of the prompt, so pooling prompts would mostly
rank prompts. Prompts whose responses all score alike (or all get one reward)
have no defined correlation and are left out; `reward_prompts` counts the
prompts that entered the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irl_jax import losses
from irl_jax.eval.metrics import distinct_n, self_bleu, spearman
from irl_jax.models.sampling import generate
from irl_jax.train import lm, rollouts

Checker = Callable[[str, str, str], tuple[float, bool]]


def decode_masked(tokenizer, ids, mask) -> str:
  """The text of the tokens of `ids` where `mask` is true (special tokens dropped)."""
  return tokenizer.decode([int(t) for t, keep in zip(ids, mask, strict=True) if keep],
                          skip_special_tokens=True)


def batch_texts(batch: dict, tokenizer) -> tuple[list[str], list[str]]:
  """`(prompts, references)`: each row's prompt text and its response text (unpacked rows)."""
  ids, prompt_mask = rollouts.prompts_of(batch)
  loss_mask = np.asarray(batch["loss_mask"])
  prompts = [decode_masked(tokenizer, r, m) for r, m in zip(ids, prompt_mask, strict=True)]
  refs = [decode_masked(tokenizer, r, m) for r, m in zip(ids, loss_mask, strict=True)]
  return prompts, refs


def within_group_spearman(values, scores, groups) -> tuple[float, int]:
  """`(mean Spearman over groups, number of groups with a defined correlation)`."""
  values, scores, groups = np.asarray(values), np.asarray(scores), np.asarray(groups)
  rhos = []
  for g in np.unique(groups):
    rho = spearman(values[groups == g], scores[groups == g])
    if not np.isnan(rho):
      rhos.append(rho)
  return (float(np.mean(rhos)) if rhos else float("nan")), len(rhos)


@nnx.jit(static_argnums=(2, 3))
def _rewards_jit(model, batch, gamma, chunk_size):
  stats = lm.lm_stats(model, batch["input_ids"], batch["segment_ids"], batch["positions"],
                      chunk_size=chunk_size)
  where = lm.lm_targets(batch["loss_mask"])
  terminal = batch.get("terminal")
  bootstrap = None if terminal is None else lm.bootstrap_values(stats.v, where)
  return losses.sequence_rewards(stats, where=where, gamma=gamma, terminal=terminal,
                                 bootstrap=bootstrap)


def _row_chunks(n: int, rows: int | None):
  rows = rows or n
  return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def sequence_rewards(model, batch: dict, *, gamma: float, terminal=None,
                     chunk_size: int | None = None, rows: int | None = None) -> np.ndarray:
  """`[B]` extracted sequence rewards of a language-model batch's responses.

  Without `terminal`, every response is taken to end with its EOS (a data
  batch's responses do). With `terminal [B]` (sampled responses), a row cut
  off before its EOS adds the discounted value of the state after its last
  token (`irl_jax.train.lm.bootstrap_values`), as the online objectives do.
  `chunk_size` computes the statistics in vocabulary chunks and `rows`
  processes that many rows at a time, so no `[B, T, V]` logits are held.
  """
  keys = ("input_ids", "segment_ids", "positions", "loss_mask")
  n = len(batch["input_ids"])
  out = []
  for part in _row_chunks(n, rows):
    arrays = {k: jnp.asarray(batch[k][part]) for k in keys}
    if terminal is not None:
      arrays["terminal"] = jnp.asarray(terminal[part]).astype(bool)
    out.append(np.asarray(_rewards_jit(model, arrays, float(gamma), chunk_size or None)))
  return np.concatenate(out)


def reward_ranking(model, batch: dict, scores, groups, *, gamma: float,
                   chunk_size: int | None = None, rows: int | None = None) -> dict:
  """How well extracted sequence rewards rank responses to the same prompt.

  Args:
    model: the policy.
    batch: a language-model batch of responses (unpacked rows).
    scores: `[B]` quality of each response (e.g. a checker's score).
    groups: `[B]` prompt index of each row: correlations are taken within groups.
    gamma: the discount of the extracted rewards.
    chunk_size, rows: as in `sequence_rewards` (memory bounds).

  Returns:
    `{"spearman": mean within-group Spearman, "groups": groups that entered it,
    "rewards": [B] the rewards}`.
  """
  rewards = sequence_rewards(model, batch, gamma=gamma, chunk_size=chunk_size, rows=rows)
  rho, n = within_group_spearman(rewards, scores, groups)
  return {"spearman": rho, "groups": n, "rewards": rewards}


@nnx.jit(static_argnums=2)
def _score_samples(model, batch, gamma):
  """`(summed per-token entropy, [N] extracted sequence rewards)` of sampled rows, both
  from one forward pass (the entropy needs these rows' dense logits anyway)."""
  hidden = model(batch["input_ids"], segment_ids=batch["segment_ids"],
                 positions=batch["positions"], return_hidden=True)
  logits = model.logits(hidden)
  stats = losses.soft_q_stats(logits, lm.next_tokens(batch["input_ids"]),
                              where=batch["segment_ids"] > 0)
  where = lm.lm_targets(batch["loss_mask"])
  entropy = losses.token_entropy(logits, where=where)
  rewards = losses.sequence_rewards(stats, where=where, gamma=gamma,
                                    terminal=batch["terminal"],
                                    bootstrap=lm.bootstrap_values(stats.v, where))
  return jnp.sum(jnp.where(where, entropy, 0.0)), rewards


def generation_metrics(
    model, batch: dict, tokenizer, *, checker: Checker, key: jax.Array, temperature: float,
    num_samples: int, max_new_tokens: int, gamma: float,
    words: Callable[[str], Sequence] = str.split, prompt_len: int | None = None,
    rows: int | None = None,
) -> dict:
  """Sample the policy on a batch's prompts and measure the samples.

  Args:
    model: the policy (`irl_jax.models.Transformer`).
    batch: an unpacked language-model batch; each row's prompt is sampled
      and its response is the checker's reference.
    tokenizer: decodes tokens to text.
    checker: `checker(prompt, reference, response) -> (score, correct)`.
    key: PRNG key of the samples.
    temperature: sampling temperature (0: greedy).
    num_samples: responses per prompt (≥ 2 for Self-BLEU and the reward
      correlation).
    max_new_tokens: longest response.
    gamma: discount of the extracted sequence rewards.
    words: splits a response into the units of the diversity metrics.
    prompt_len: keep only the first `prompt_len` columns for the prompts
      (they must fit; default: the whole row).
    rows: score this many samples at a time (entropy and rewards, from one
      forward pass with dense logits): memory then grows with `rows · T · V`,
      not with all samples' (default: all at once).

  Returns:
    `accuracy`, `score` (means over samples), `self_bleu`, `distinct_2`,
    `distinct_3`, `entropy` (per response token), `reward_spearman` (mean
    within-prompt correlation of extracted rewards with checker scores),
    `reward_prompts`, `mean_length` (tokens per response) and `responses`
    (the decoded samples, `num_samples` per prompt in order).
  """
  real = {k: np.asarray(v) for k, v in batch.items()}
  real = {k: v[np.asarray(real["segment_ids"]).max(axis=1) > 0] for k, v in real.items()}
  if not len(real["input_ids"]):
    raise ValueError("generation_metrics: the batch has no examples.")
  prompts, refs = batch_texts(real, tokenizer)
  length = real["input_ids"].shape[1] if prompt_len is None else prompt_len
  rollouts.check_prompt_lengths(real, length)
  ids, mask = rollouts.prompt_prefix(real, length)
  out = generate(model, ids, mask, key, max_new_tokens=max_new_tokens, temperature=temperature,
                 num_samples=num_samples, eos_id=tokenizer.eos_token_id,
                 pad_id=tokenizer.pad_token_id or 0)
  tokens, response_mask = np.asarray(out.tokens), np.asarray(out.response_mask)
  responses = [decode_masked(tokenizer, t, m) for t, m in zip(tokens, response_mask, strict=True)]
  owner = np.repeat(np.arange(len(prompts)), num_samples)
  checked = [checker(prompts[i], refs[i], r) for i, r in zip(owner, responses, strict=True)]
  scores = np.asarray([float(s) for s, _ in checked])
  split = [[words(r) for r in responses[i:i + num_samples]]
           for i in range(0, len(responses), num_samples)]
  diverse = [g for g in split if sum(map(len, g))] if num_samples > 1 else []
  sample = {k.removeprefix("sample_"): jnp.asarray(v)
            for k, v in rollouts.sample_arrays(out).items()}
  entropy_sum, rewards = 0.0, []
  for part in _row_chunks(len(responses), rows):
    e, r = _score_samples(model, {k: v[part] for k, v in sample.items()}, float(gamma))
    entropy_sum += float(e)
    rewards.append(np.asarray(r))
  entropy = entropy_sum / max(int(response_mask.sum()), 1)
  rewards = np.concatenate(rewards)
  rho, n = within_group_spearman(rewards, scores, owner)
  return {
      "accuracy": float(np.mean([c for _, c in checked])),
      "score": float(scores.mean()),
      "self_bleu": float(np.mean([self_bleu(g) for g in diverse])) if diverse else float("nan"),
      "distinct_2": distinct_n([w for g in split for w in g], 2),
      "distinct_3": distinct_n([w for g in split for w in g], 3),
      "entropy": float(entropy),
      "reward_spearman": rho,
      "reward_prompts": n,
      "mean_length": float(response_mask.sum(1).mean()),
      "responses": responses,
  }
