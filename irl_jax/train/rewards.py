"""Reward sources for policy stages: an exported reward model, a task's program, their sum.

A policy stage (an objective whose registry entry has `sampler=True` and
`reward_fn=True`, e.g. GRPO) scores its samples with

    score(prompt_ids [N, P], response_ids [N, M], response_mask [N, M]) -> [N] float32

(the sampler also passes `prompt_mask=[N, P]` to a scorer that takes it; see
`irl_jax.train.rollouts.PolicySampler`). The trainer takes a factory
`reward_fn(tokenizer) -> score` (`irl_jax.train.train(..., reward_fn=...)`);
this module builds the scorers and that factory:

- `reward_model_scorer(path, policy_tokenizer)`: a reward model exported as a
  Hugging Face `*ForSequenceClassification` directory (`irl_jax.models.
  save_pretrained` of a `RewardModel`, with the tokenizer it was trained on
  saved beside it), scoring prompt + response at the last real token. Its
  tokenizer must be the policy's (same vocabulary and special tokens); with
  `retokenize=True` a different one is accepted and the samples go through
  text instead.
- `combine(*scorers, weights=...)`: the weighted sum of several sources,
  refusing a reward of the wrong shape or a non-finite one (the error names
  the source and the row).
- `reward_fn_from_config(config, program=...)`: the factory of a config's
  `config.reward` block (`reward_config()` holds its fields and defaults),
  with a task's programmatic reward as the second source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irl_jax import models
from irl_jax.train.loop import ConfigError
from irl_jax.train.rollouts import accepts_prompt_mask

Scorer = Callable[..., np.ndarray]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                    "vocab.txt")
_SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class RewardSourceError(ValueError):
  """A reward source returned rewards of the wrong shape or a non-finite reward."""


# --- the reward model -----------------------------------------------------------------------


def _tokenizer_name(tokenizer) -> str:
  name = getattr(tokenizer, "name_or_path", "") or ""
  return repr(name) if name else f"a {type(tokenizer).__name__} built in memory"


def tokenizer_differences(reward_tokenizer, policy_tokenizer) -> list[str]:
  """What differs between two tokenizers, as phrases `"<what>: <reward model> vs <policy>"`
  (empty when both map every token to the same id and share their special token ids)."""
  out = []
  a, b = len(reward_tokenizer), len(policy_tokenizer)
  if a != b:
    out.append(f"vocabulary size: {a} vs {b}")
  va, vb = reward_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
  moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])
  if moved:
    shown = ", ".join(f"{t!r} is {va[t]} vs {vb[t]}" for t in moved[:3])
    out.append(f"{len(moved)} token(s) map to other ids ({shown}"
               + (", ..." if len(moved) > 3 else "") + ")")
  for side, have, other in (("the reward model's", va, vb), ("the policy's", vb, va)):
    only = sorted(set(have) - set(other))
    if only:
      out.append(f"{len(only)} token(s) only in {side} tokenizer ("
                 + ", ".join(repr(t) for t in only[:3]) + (", ..." if len(only) > 3 else "")
                 + ")")
  for name in _SPECIAL_IDS:
    x, y = getattr(reward_tokenizer, name, None), getattr(policy_tokenizer, name, None)
    if x != y:
      out.append(f"{name}: {x} vs {y}")
  return out


def _has_tokenizer_files(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES)


class RewardModelScorer:
  """`score(prompt_ids, response_ids, response_mask, prompt_mask=None) -> [N] float32` of an
  exported reward model; build it with `reward_model_scorer`.

  Attributes:
    model: the `irl_jax.models.RewardModel`.
    tokenizer: the reward model's tokenizer.
    retokenize: whether samples are re-tokenised through text.
    traces: how many times the forward pass was traced (once per padded shape).
  """

  name = "reward_model"

  def __init__(self, path: str, model, tokenizer, policy_tokenizer, *, batch_size: int,
               retokenize: bool, length_multiple: int):
    self.path, self.model, self.tokenizer = path, model, tokenizer
    self.policy_tokenizer = policy_tokenizer
    self.batch_size, self.retokenize, self.length_multiple = batch_size, retokenize, length_multiple
    config = model.backbone.config
    self._max_length = (config.max_position_embeddings if config.positions == "learned"
                        else None)
    self._vocab_size = config.vocab_size
    graphdef, self._state = nnx.split(model)
    self.traces = 0

    def forward(state, ids, mask):
      self.traces += 1  # runs only while tracing: once per new shape
      return nnx.merge(graphdef, state)(ids, attention_mask=mask)

    self._forward = jax.jit(forward)

  def __call__(self, prompt_ids, response_ids, response_mask, prompt_mask=None) -> np.ndarray:
    prompt_ids, response_ids = np.asarray(prompt_ids), np.asarray(response_ids)
    response_mask = np.asarray(response_mask, bool)
    n = prompt_ids.shape[0]
    if (prompt_ids.ndim != 2 or response_ids.ndim != 2 or response_ids.shape[0] != n
        or response_mask.shape != response_ids.shape):
      raise ValueError(f"reward model scorer: prompt_ids {prompt_ids.shape}, response_ids "
                       f"{response_ids.shape} and response_mask {response_mask.shape} must be "
                       "[N, P], [N, M] and [N, M].")
    if prompt_mask is None:
      prompt_mask = self._prompt_mask(prompt_ids)
    prompt_mask = np.asarray(prompt_mask, bool)
    if prompt_mask.shape != prompt_ids.shape:
      raise ValueError(f"reward model scorer: prompt_mask {prompt_mask.shape} must match "
                       f"prompt_ids {prompt_ids.shape}.")
    rows = [self._row(p[pm], r[rm]) for p, pm, r, rm in
            zip(prompt_ids, prompt_mask, response_ids, response_mask, strict=True)]
    return self.score_rows(rows)

  def _prompt_mask(self, prompt_ids: np.ndarray) -> np.ndarray:
    """Without a mask: every slot from a row's first non-pad token on (the sampler's prompts
    are left-aligned, padded with the policy's pad id)."""
    pad = self.policy_tokenizer.pad_token_id
    if pad is None:
      return np.ones(prompt_ids.shape, bool)
    return np.cumsum(prompt_ids != pad, axis=1) > 0

  def _row(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
    if not self.retokenize:
      return np.concatenate([prompt, response]).astype(np.int32)
    pol, rm = self.policy_tokenizer, self.tokenizer
    text = (pol.decode([int(t) for t in prompt], skip_special_tokens=True)
            + pol.decode([int(t) for t in response], skip_special_tokens=True))
    ids = list(rm.encode(text, add_special_tokens=False))
    # The project's pipelines add BOS and EOS themselves: carry them over as the policy's
    # row has them.
    if len(prompt) and pol.bos_token_id is not None and int(prompt[0]) == pol.bos_token_id \
        and rm.bos_token_id is not None:
      ids = [rm.bos_token_id, *ids]
    if len(response) and pol.eos_token_id is not None and int(response[-1]) == pol.eos_token_id \
        and rm.eos_token_id is not None:
      ids = [*ids, rm.eos_token_id]
    return np.asarray(ids, np.int32)

  def score_rows(self, rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rewards `[N]` of token rows (each the reward model's ids of prompt + response)."""
    n = len(rows)
    if not n:
      return np.zeros((0,), np.float32)
    lengths = np.array([len(r) for r in rows])
    if lengths.min() == 0:
      raise ValueError(f"reward model scorer: row {int(np.argmin(lengths))} has no tokens.")
    if self._max_length is not None and lengths.max() > self._max_length:
      row = int(np.argmax(lengths))
      raise ValueError(f"reward model scorer: row {row} has {lengths[row]} tokens, more than "
                       f"the reward model ({self.path}) has learned positions "
                       f"({self._max_length}).")
    top = max(int(max(r.max() for r in rows)), 0)
    if top >= self._vocab_size or min(int(r.min()) for r in rows) < 0:
      raise ValueError(f"reward model scorer: token id {top} is outside the reward model's "
                       f"vocabulary [0, {self._vocab_size}) ({self.path}).")
    m = self.length_multiple
    width = -(-int(lengths.max()) // m) * m
    if self._max_length is not None:
      width = min(width, self._max_length)
    pad = self.tokenizer.pad_token_id or 0
    out = np.empty((n,), np.float32)
    b = self.batch_size
    for start in range(0, n, b):
      chunk = rows[start:start + b]
      ids = np.full((b, width), pad, np.int32)
      mask = np.zeros((b, width), bool)
      mask[len(chunk):, 0] = True  # filler rows: one token, so no row is fully masked
      for i, r in enumerate(chunk):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = True
      scores = np.asarray(self._forward(self._state, ids, mask), np.float32)
      out[start:start + len(chunk)] = scores[:len(chunk)]
    return out


def reward_model_scorer(path: str, policy_tokenizer, *, batch_size: int = 32,
                        reward_tokenizer=None, retokenize: bool = False,
                        dtype: Any = "float32", length_multiple: int = 32) -> RewardModelScorer:
  """The scorer of an exported reward model (`*ForSequenceClassification`, one label).

  The prompt's real tokens followed by the response's are scored as one row,
  pooled at its last real token (the response's EOS when it ended), as the
  reward model was trained on prompt + response rows. Rows are right-padded to
  a multiple of `length_multiple` and scored `batch_size` at a time, so the
  jitted forward pass is traced once per padded width.

  Args:
    path: the reward model's directory (`irl_jax.models.save_pretrained`
      writes it; `save_pretrained(model, path, tokenizer=tok)` saves its
      tokenizer beside it, where it is read from).
    policy_tokenizer: the policy's tokenizer (whose ids the samples hold).
    batch_size: rows per forward pass.
    reward_tokenizer: the reward model's tokenizer when its directory holds
      none (default: read from `path`).
    retokenize: accept a reward tokenizer that differs from the policy's:
      each sample is decoded to text with the policy's tokenizer (special
      tokens dropped) and encoded with the reward model's, with its BOS and
      EOS where the policy's row had them.
    dtype: the reward model's parameter and compute dtype (`"float32"`,
      `"bfloat16"` or a JAX dtype).
    length_multiple: rows are padded to a multiple of this many tokens.

  Returns:
    A `RewardModelScorer`: `score(prompt_ids [N, P], response_ids [N, M],
    response_mask [N, M], prompt_mask=None) -> [N] float32`. Without
    `prompt_mask`, the prompt is every slot from the row's first token that is
    not the policy's pad id (left-aligned prompts, as the sampler gives).

  Raises:
    ValueError: `path` is not a reward model; no tokenizer is found for it;
      its tokenizer differs from the policy's (the message names both and
      what differs) and `retokenize` is False; its tokenizer has ids beyond the
      model's vocabulary.
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"reward_model_scorer: batch_size must be a positive integer, got "
                     f"{batch_size!r}.")
  if isinstance(length_multiple, bool) or not isinstance(length_multiple, int) \
      or length_multiple < 1:
    raise ValueError(f"reward_model_scorer: length_multiple must be a positive integer, got "
                     f"{length_multiple!r}.")
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f"reward_model_scorer: dtype {dtype!r} is not one of {sorted(_DTYPES)}.")
    dtype = _DTYPES[dtype]
  if not os.path.isdir(path):
    raise ValueError(f"reward model {path!r}: no such directory.")
  model = models.from_pretrained(path, dtype=dtype)
  if not isinstance(model, models.RewardModel):
    raise ValueError(f"{path} holds a causal language model, not a reward model: the scorer "
                     "needs a *ForSequenceClassification checkpoint with one label (save a "
                     "RewardModel with irl_jax.models.save_pretrained).")
  if reward_tokenizer is None:
    if not _has_tokenizer_files(path):
      raise ValueError(
          f"{path} holds no tokenizer files, so the reward model's token ids cannot be checked "
          "against the policy's tokenizer. Save the reward model with its tokenizer "
          "(irl_jax.models.save_pretrained(model, path, tokenizer=...)) or pass "
          "reward_tokenizer=.")
    from transformers import AutoTokenizer

    reward_tokenizer = AutoTokenizer.from_pretrained(path)
  vocab = model.backbone.config.vocab_size
  if len(reward_tokenizer) > vocab:
    raise ValueError(f"the reward model's tokenizer ({_tokenizer_name(reward_tokenizer)}) has "
                     f"{len(reward_tokenizer)} tokens but the reward model at {path} embeds "
                     f"only {vocab}.")
  diff = tokenizer_differences(reward_tokenizer, policy_tokenizer)
  if diff and not retokenize:
    raise ValueError(
        f"the reward model's tokenizer ({_tokenizer_name(reward_tokenizer)}, from {path}) differs "
        f"from the policy's tokenizer ({_tokenizer_name(policy_tokenizer)}) [reward model vs "
        f"policy]: {'; '.join(diff)}. The reward model would read the policy's token ids as "
        "other tokens. Use a reward model trained with the policy's tokenizer, or score through "
        "text with retokenize=True (config.reward.retokenize=True).")
  return RewardModelScorer(path, model, reward_tokenizer, policy_tokenizer,
                           batch_size=batch_size, retokenize=bool(retokenize and diff),
                           length_multiple=length_multiple)


# --- combining sources ------------------------------------------------------------------------


class CombinedReward:
  """`score(prompt_ids, response_ids, response_mask, prompt_mask=None) -> [N] float32`, the
  weighted sum of several sources; build it with `combine`.

  Attributes:
    names: the sources' names (in error messages).
    weights: their weights.
    last: the last call's rewards of each source, `{name: [N] float32}`.
  """

  def __init__(self, scorers, weights, names):
    self.scorers, self.weights, self.names = tuple(scorers), tuple(weights), tuple(names)
    self._takes_mask = tuple(accepts_prompt_mask(s) for s in self.scorers)
    self.last: dict[str, np.ndarray] = {}

  def __call__(self, prompt_ids, response_ids, response_mask, prompt_mask=None) -> np.ndarray:
    n = np.shape(prompt_ids)[0]
    total = np.zeros((n,), np.float64)
    last = {}
    for scorer, weight, name, takes in zip(self.scorers, self.weights, self.names,
                                           self._takes_mask, strict=True):
      kwargs = {"prompt_mask": prompt_mask} if takes and prompt_mask is not None else {}
      raw = scorer(prompt_ids, response_ids, response_mask, **kwargs)
      try:
        r = np.asarray(raw, np.float64)
      except (TypeError, ValueError):
        raise RewardSourceError(f"reward source {name!r} returned {type(raw).__name__}, not "
                                f"{n} numbers.") from None
      if r.shape != (n,):
        raise RewardSourceError(f"reward source {name!r} returned rewards of shape {r.shape} "
                                f"for {n} samples; expected ({n},).")
      bad = np.flatnonzero(~np.isfinite(r))
      if bad.size:
        more = f" (and {bad.size - 1} more rows: {bad[1:6].tolist()})" if bad.size > 1 else ""
        raise RewardSourceError(
            f"reward source {name!r} returned {r[bad[0]]} for row {int(bad[0])}{more}; rewards "
            "must be finite.")
      last[name] = r.astype(np.float32)
      total += weight * r
    self.last = last
    return total.astype(np.float32)


def combine(*scorers: Scorer, weights: Sequence[float] | None = None,
            names: Sequence[str] | None = None) -> CombinedReward:
  """The weighted sum `Σ_i w_i · score_i` of reward sources.

  Args:
    *scorers: each `score(prompt_ids, response_ids, response_mask) -> [N]`
      (given `prompt_mask=` too when it takes that keyword).
    weights: one finite number per scorer (default: all 1).
    names: one name per scorer for error messages (default: the scorer's
      `name` attribute, else `"source <i>"`).

  Returns:
    A `CombinedReward`, itself a scorer (float32 `[N]`).

  Raises:
    ValueError: no scorers, or weights or names of the wrong length, or a
      non-finite weight.
    RewardSourceError (a ValueError), when called: a source returned rewards
      of another shape than `[N]` or a non-finite reward (naming the source and
      the row).
  """
  if not scorers:
    raise ValueError("combine: give at least one reward source.")
  for i, s in enumerate(scorers):
    if not callable(s):
      raise ValueError(f"combine: source {i} is a {type(s).__name__}, not a scorer.")
  weights = (1.0,) * len(scorers) if weights is None else tuple(weights)
  if len(weights) != len(scorers):
    raise ValueError(f"combine: {len(weights)} weights for {len(scorers)} sources.")
  for i, w in enumerate(weights):
    if isinstance(w, bool) or not isinstance(w, int | float | np.integer | np.floating) \
        or not math.isfinite(w):
      raise ValueError(f"combine: weight {i} must be a finite number, got {w!r}.")
  if names is None:
    names = [getattr(s, "name", None) or f"source {i}" for i, s in enumerate(scorers)]
  names = tuple(names)
  if len(names) != len(scorers):
    raise ValueError(f"combine: {len(names)} names for {len(scorers)} sources.")
  return CombinedReward(scorers, [float(w) for w in weights], names)


# --- the config block ---------------------------------------------------------------------------


def reward_config():
  """The `config.reward` block of the training configs, with its defaults.

  Fields:
    model_path: an exported reward model's directory (`""`: none).
    model_weight: the reward model's weight in the sum.
    program_weight: the weight of the task's programmatic reward
      (`make_reward_fn`), when the entry point has one.
    batch_size: reward-model rows per forward pass.
    retokenize: score through text when the reward model's tokenizer differs
      from the policy's (otherwise that is an error).
    tokenizer_path: the reward model's tokenizer directory when the model's
      own directory holds none (`""`: read it from `model_path`).
    dtype: the reward model's dtype, `"float32"` or `"bfloat16"`.
  """
  import ml_collections

  return ml_collections.ConfigDict(dict(
      model_path="", model_weight=1.0, program_weight=1.0, batch_size=32, retokenize=False,
      tokenizer_path="", dtype="float32"))


def _check_reward_block(block) -> dict[str, Any]:
  defaults = reward_config().to_dict()
  values = dict(defaults)
  if block is not None:
    raw = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
      raise ConfigError(f"config.reward has unknown fields {unknown}; it takes "
                        f"{sorted(defaults)}.")
    values.update(raw)

  def need(ok, name, what):
    if not ok:
      raise ConfigError(f"config.reward.{name}={values[name]!r}: {what}.")

  for name in ("model_weight", "program_weight"):
    v = values[name]
    need(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v), name,
         "must be a finite number")
  v = values["batch_size"]
  need(isinstance(v, int) and not isinstance(v, bool) and v > 0, "batch_size",
       "must be a positive integer")
  need(isinstance(values["retokenize"], bool), "retokenize", "must be True or False")
  need(values["dtype"] in _DTYPES, "dtype", f"must be one of {sorted(_DTYPES)}")
  for name in ("model_path", "tokenizer_path"):
    need(isinstance(values[name], str), name, "must be a path (a string; empty: none)")
  if values["model_path"]:
    need(os.path.isdir(values["model_path"]), "model_path",
         "no such directory (an exported reward model's directory)")
  if values["tokenizer_path"]:
    need(os.path.exists(values["tokenizer_path"]), "tokenizer_path", "no such path")
  return values


def reward_fn_from_config(config, *, program: Callable | None = None) -> Callable | None:
  """The trainer's `reward_fn` factory of `config.reward` (`reward_config()`'s fields).

  Sources: the reward model at `config.reward.model_path` (when set and its
  weight is not 0) and `program` (when given and `program_weight` is not 0),
  summed with their weights by `combine` (so a non-finite reward names its
  source and row, even with one source).

  Args:
    config: the run's config; a missing `config.reward` takes the defaults.
    program: the task's programmatic reward factory, `program(tokenizer) ->
      score` (a task's `make_reward_fn`), or None.

  Returns:
    `factory(tokenizer) -> score` for `irl_jax.train.train(..., reward_fn=)`,
    or None when there is no source. The reward model is loaded (and its
    tokenizer checked against the policy's) when the trainer calls the
    factory.

  Raises:
    ConfigError: a `config.reward` field is unusable (the message names it); at
      the factory's call, the reward model cannot be used with this policy.
  """
  values = _check_reward_block(config.get("reward") if hasattr(config, "get") else None)
  use_model = bool(values["model_path"]) and values["model_weight"] != 0
  use_program = program is not None and values["program_weight"] != 0
  if values["model_path"] and not use_model and not use_program:
    raise ConfigError("config.reward.model_weight=0 and no other reward source (config.reward."
                      "program_weight=0 or the task has no programmatic reward): nothing would "
                      "score the samples.")
  if not (use_model or use_program):
    return None

  def factory(tokenizer):
    scorers, weights, names = [], [], []
    if use_model:
      reward_tokenizer = None
      if values["tokenizer_path"]:
        from transformers import AutoTokenizer

        reward_tokenizer = AutoTokenizer.from_pretrained(values["tokenizer_path"])
      try:
        scorer = reward_model_scorer(values["model_path"], tokenizer,
                                     batch_size=values["batch_size"],
                                     reward_tokenizer=reward_tokenizer,
                                     retokenize=values["retokenize"], dtype=values["dtype"])
      except ValueError as e:
        raise ConfigError(f"config.reward.model_path={values['model_path']!r}: {e}") from None
      scorers.append(scorer)
      weights.append(values["model_weight"])
      names.append("reward_model")
    if use_program:
      scorers.append(program(tokenizer))
      weights.append(values["program_weight"])
      names.append("program")
    return combine(*scorers, weights=weights, names=names)

  return factory
