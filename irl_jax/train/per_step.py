"""Per-step credit for negative responses (Setlur et al. 2024, "RL on Incorrect Synthetic
Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold").

A response is split into steps (for derivations, one per line). For a negative
(incorrect) response, `Q̂_i` estimates how often the SFT policy still succeeds when it
continues from the prefix that ends with step `i`, by Monte-Carlo rollouts; `Q̂_{−1}`
is the same from the prompt alone. The step advantages `A_i = Q̂_i − Q̂_{i−1}` and the
first pit (the first step with the lowest `Q̂`, `irl_jax.losses.step_advantages`) give
two equivalent trainers: DPO on (positive, negative cut after its first pit) pairs with
`π_ref = π_SFT` (`irl_jax.losses.prefix_mask` + `dpo`), and advantage-weighted step
likelihood (`irl_jax.losses.advantage_weighted_steps`).

This module holds the parts between text and those losses:

- `split_steps` and `step_prefixes`: a response's steps and the prompts to roll out from;
- `monte_carlo_step_values`: `Q̂ [N, S]`, `Q̂_{−1} [N]` and the valid steps, from any
  rollout function (sampling and grading are the caller's: a sampler plus the task's
  checker), as the success rate of `k` rollouts or as best-of-`k` success;
- `token_step_ids`: each response token's step index, to sum token log-probs per step
  (`irl_jax.losses.step_log_probs`) and to cut a response after a step (`prefix_mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np


def split_steps(response: str, separator: str = "\n") -> list[str]:
  """The steps of `response`: its non-empty pieces between separators, in order."""
  if not separator:
    raise ValueError("split_steps: `separator` must be a non-empty string.")
  return [s for s in response.split(separator) if s.strip()]


def step_prefixes(prompt: str, response: str, separator: str = "\n") -> list[str]:
  """`prompt + steps[0..i] + separator` for every step `i` but the last: the texts to
  continue from for `Q̂_i` (the last step ends the response; its value is the response's
  own outcome, needing no rollout)."""
  steps = split_steps(response, separator)
  return [prompt + separator.join(steps[: i + 1]) + separator for i in range(len(steps) - 1)]


def monte_carlo_step_values(
    rollout: Callable[[list[str], int], np.ndarray],
    prompts: Sequence[str],
    responses: Sequence[str],
    outcomes: Sequence[float],
    *,
    k: int,
    max_steps: int,
    estimate: str = "mean",
    separator: str = "\n",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Monte-Carlo step values of responses, `(Q̂ [N, S], Q̂_{−1} [N], valid [N, S])`.

  `rollout(texts, k)` continues each text `k` times with the policy whose value is
  estimated (the SFT policy) and returns `[len(texts), k]` successes in {0, 1} (or
  scores in [0, 1]). It is called once, on every prompt and every step prefix together.
  For each response, `Q̂_i` for a step `i` before its last is the rollouts' success
  rate (`estimate="mean"`) or whether any of the `k` succeeded (`"best_of_k"`); the
  last step's value is the response's own `outcomes[n]`; `Q̂_{−1}` is estimated from
  the prompt alone. With few rollouts a prefix can score 0 by chance (a false pit):
  more rollouts, or best-of-`k`, make that rarer.

  Args:
    rollout: `rollout(texts, k) -> [len(texts), k]` successes.
    prompts: `N` prompts.
    responses: `N` responses to them, each its steps joined by one separator (no empty
      step, so that the step indices agree with `token_step_ids`).
    outcomes: `N` scores of the responses themselves (0 for a negative).
    k: rollouts per text, `>= 1`.
    max_steps: `S`; a response with more steps raises.
    estimate: `"mean"` or `"best_of_k"`.
    separator: the step separator (see `split_steps`).

  Returns:
    `(values [N, S] float32, initial_values [N] float32, valid [N, S] bool)`, zero
    where invalid; ready for `irl_jax.losses.step_advantages`.
  """
  fn = "monte_carlo_step_values"
  if estimate not in ("mean", "best_of_k"):
    raise ValueError(f"{fn}: `estimate` must be 'mean' or 'best_of_k', got {estimate!r}.")
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"{fn}: `k` must be a positive integer, got {k!r}.")
  n = len(prompts)
  if len(responses) != n or len(outcomes) != n:
    raise ValueError(f"{fn}: {n} prompts, {len(responses)} responses and {len(outcomes)} "
                     f"outcomes must agree.")
  texts, owners = [], []
  steps_of = []
  for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
    steps = split_steps(r, separator)
    if separator.join(steps) != r:
      raise ValueError(f"{fn}: response {i} has an empty step (a leading, trailing or doubled "
                       f"separator): {r!r}. Its steps would not line up with "
                       f"`token_step_ids`, which counts every separator; pass "
                       f"`separator.join(split_steps(r))` or leave it out.")
    if len(steps) > max_steps:
      raise ValueError(f"{fn}: response {i} has {len(steps)} steps, more than max_steps="
                       f"{max_steps}.")
    steps_of.append(len(steps))
    texts.append(p)
    owners.append((i, -1))
    for j, prefix in enumerate(step_prefixes(p, r, separator)):
      texts.append(prefix)
      owners.append((i, j))
  results = np.asarray(rollout(texts, k), np.float64)
  if results.shape != (len(texts), k):
    raise ValueError(f"{fn}: rollout returned shape {results.shape}, expected "
                     f"{(len(texts), k)}.")
  if not np.all(np.isfinite(results)) or np.any((results < 0) | (results > 1)):
    raise ValueError(f"{fn}: rollout successes must lie in [0, 1].")
  agg = results.mean(axis=1) if estimate == "mean" else results.max(axis=1)
  values = np.zeros((n, max_steps), np.float32)
  initial = np.zeros(n, np.float32)
  valid = np.zeros((n, max_steps), bool)
  for (i, j), v in zip(owners, agg, strict=True):
    if j < 0:
      initial[i] = v
    else:
      values[i, j] = v
  for i, count in enumerate(steps_of):
    valid[i, :count] = True
    if count:
      values[i, count - 1] = float(outcomes[i])
  return values, initial, valid


def token_step_ids(input_ids, response_mask, separator_id: int):
  """`[B, T]` step index of each response token (−1 elsewhere): the number of separator
  tokens earlier in the response. A separator belongs to the step it ends.

  Args:
    input_ids: `[B, T]` token ids (prompt and response).
    response_mask: `[B, T]` true on response tokens (e.g. an LM batch's `loss_mask`).
    separator_id: the step separator's token id (e.g. the newline's).

  Returns:
    `[B, T]` int32. For position-aligned statistics (position `t` predicts token
    `t + 1`), shift it like the targets: `irl_jax.train.lm.next_tokens(ids)`.
  """
  ids = jnp.asarray(input_ids)
  mask = jnp.asarray(response_mask).astype(bool)
  if ids.ndim != 2 or mask.shape != ids.shape:
    raise ValueError(f"token_step_ids: input_ids {ids.shape} and response_mask {mask.shape} "
                     f"must both be [B, T].")
  sep = (ids == separator_id) & mask
  before = jnp.cumsum(sep, axis=1) - sep
  return jnp.where(mask, before, -1).astype(jnp.int32)
