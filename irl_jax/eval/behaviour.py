"""Behaviour evaluations in the model-written-evaluations format (Perez et al. 2022).

Perez et al. 2022, "Discovering Language Model Behaviors with Model-Written
Evaluations", publish behaviour sets as JSONL files, one question a line:

    {"question": "Is the following statement something you would say?\\n...",
     "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}

Either answer field may also be a non-empty list of strings (several answers
on that side). For a policy (an `irl_jax.models.Transformer` and its
tokenizer) this module measures, per question, how the probability the policy
puts on the answers splits between the two sides, and averages it per
behaviour set (one file, named by its stem, or a caller-named list of
records):

    log m_side = logsumexp_{a in side} log π(a | question)      (sum over a's tokens)
    p_match    = m_match / (m_match + m_not)
               = exp(log m_match − logaddexp(log m_match, log m_not))

- `load_behaviour_jsonl`: a file -> `BehaviourRecord`s; bad lines raise.
- `score_records`: per-answer log-probs from batched, jit-compiled forward
  passes, and per-question `p_match`, masses and the more likely side.
- `evaluate_behaviours`: several sets -> a summary per set (mean `p_match`
  with a t-interval, fraction of questions where the matching side is more
  likely, mean masses, count).
- `match_probability`: `p_match` from per-answer log-probs (stable).

Tokenisation. Each answer is scored as the continuation of its question:
`[BOS] + tokens(question) + answer tokens`, and only the answer tokens'
log-probs (float32 log-softmax of the model's logits) are summed. The answer
tokens are found by tokenising `question + answer` jointly, so the answer is
split as it would be in running text (SentencePiece tokenizers would add a
word-start marker to a separately encoded `" Yes"`); they are the joint
tokens after the question's own tokens. When the joint tokens do not start
with the question's tokens (a merge across the boundary, e.g. a question
ending in a space before an answer starting with a letter), or add no token
after them, that answer falls back to `tokens(question) + tokens(answer)`
encoded separately, and `split_tokenisation` marks it. BOS: as the data pipelines do
(`irl_jax.data.pipeline`), the tokenizer's BOS id (else the model config's)
is prepended by hand and texts are encoded with `add_special_tokens=False`.

Batching. All (question, answer) rows of a call are sorted by length and cut
into batches of `batch_size` rows; each batch is right-padded to a length
bucket (the next power of two, at least 16), so one compiled scoring function
serves every batch of a bucket: at most `log2(longest row)` compilations per
call whatever the number of records. Padding slots are segment 0: they are
neither attended to nor scored, so padding does not change the values.
Answers that are one token after the same context (the usual `" Yes"` /
`" No"`) share one forward pass over the context: the log-softmax at its last
position gives every one of them (the same values as scoring each row alone).

Dimensions: `N` questions, `R` answers (all sides of all questions).

Data licence: the published evaluations (github.com/anthropics/evals,
`persona/`, `sycophancy/`, `advanced-ai-risk/`, `winogenerated/`) are
CC-BY-4.0: results on them must attribute Anthropic's `evals` repository and
cite Perez et al. 2022 wherever they are published.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats
from flax import nnx

from irl_jax import losses
from irl_jax.data.formats import BadRowError, quote, read_jsonl

MATCHING = "answer_matching_behavior"
NOT_MATCHING = "answer_not_matching_behavior"

# Smallest padded length: shorter rows share one compiled function.
_MIN_BUCKET = 16


# --------------------------------------------------------------------------
# Records.


def _answers(value: Any, name: str, source: str) -> tuple[str, ...]:
  """A side's answers as a tuple of non-empty strings, else `BadRowError`."""
  if isinstance(value, str):
    value = [value]
  elif isinstance(value, (list, tuple)):
    if not value:
      raise BadRowError(source, "empty_answers", f"{name!r} is an empty list")
  else:
    raise BadRowError(
        source, "wrong_type",
        f"{name!r} must be a string or a list of strings, got {type(value).__name__}",
    )
  for i, answer in enumerate(value):
    if not isinstance(answer, str):
      raise BadRowError(
          source, "wrong_type",
          f"{name!r}[{i}] must be a string, got {type(answer).__name__} {answer!r}",
      )
    if not answer:
      raise BadRowError(source, "empty_answer", f"{name!r}[{i}] is the empty string")
  repeated = sorted({a for a in value if value.count(a) > 1})
  if repeated:
    raise BadRowError(
        source, "repeated_answer",
        f"{name!r} lists {quote(repeated[0])} more than once (its mass would count twice)",
    )
  return tuple(value)


@dataclasses.dataclass(frozen=True)
class BehaviourRecord:
  """One question of a behaviour set and its answers on each side.

  A string answer is stored as a one-element tuple. Construction validates:
  the question is a non-empty string; each side is a non-empty tuple of
  distinct non-empty strings; no answer is on both sides. Violations raise
  `ValueError` (`irl_jax.data.BadRowError`) starting with `source`.

  Attributes:
    question: the prompt text, verbatim (e.g. ending in `"\\n\\nAnswer:"`).
    answer_matching_behavior: the answers that match the behaviour (`(" Yes",)`).
    answer_not_matching_behavior: the answers that do not.
    source: where the record came from (`"path:line"` for loaded files).
  """

  question: str
  answer_matching_behavior: tuple[str, ...]
  answer_not_matching_behavior: tuple[str, ...]
  source: str = "<record>"

  def __post_init__(self):
    source = self.source
    if not isinstance(self.question, str):
      raise BadRowError(
          source, "wrong_type", f"'question' must be a string, got {type(self.question).__name__}"
      )
    if not self.question:
      raise BadRowError(source, "empty_question", "'question' is the empty string")
    matching = _answers(self.answer_matching_behavior, MATCHING, source)
    not_matching = _answers(self.answer_not_matching_behavior, NOT_MATCHING, source)
    both = sorted(set(matching) & set(not_matching))
    if both:
      raise BadRowError(
          source, "identical_answers",
          f"{quote(both[0])} is both in {MATCHING!r} and in {NOT_MATCHING!r}",
      )
    object.__setattr__(self, MATCHING, matching)
    object.__setattr__(self, NOT_MATCHING, not_matching)

  @classmethod
  def from_row(cls, row: Mapping[str, Any], source: str) -> BehaviourRecord:
    """A record from one decoded JSON object (other fields are ignored)."""
    if not isinstance(row, Mapping):
      raise BadRowError(
          source, "not_an_object", f"expected a JSON object, got {type(row).__name__}"
      )
    for name in ("question", MATCHING, NOT_MATCHING):
      if name not in row:
        present = ", ".join(repr(k) for k in list(row)[:20]) or "none"
        raise BadRowError(
            source, "missing_field", f"missing field {name!r}; fields present: {present}"
        )
    return cls(row["question"], row[MATCHING], row[NOT_MATCHING], source)


def load_behaviour_jsonl(path: str | os.PathLike[str]) -> list[BehaviourRecord]:
  """All records of a model-written-evaluations JSONL file (optionally gzip-compressed).

  Args:
    path: the file; one JSON object per line with `question`,
      `answer_matching_behavior` and `answer_not_matching_behavior` (each
      answer field a string or a non-empty list of strings; other fields
      are ignored).

  Returns:
    `[N]` records in file order, each with `source = "path:line"`.

  Raises:
    ValueError: `irl_jax.data.BadRowError` (`"path:line: problem [reason]"`,
      1-based line) at the first bad line: invalid UTF-8 or JSON, not an
      object, a missing field, a non-string question or answer, an empty
      answer list or string, an answer repeated or on both sides;
      `irl_jax.data.NoExamplesError` naming the file when it has no line
      (empty, or only blank lines). Blank lines are not records; they are
      counted in the log line the reader writes. Nothing else is skipped.
  """
  return list(read_jsonl(path, BehaviourRecord.from_row, on_bad_row="raise",
                         what="behaviour questions"))


def _as_record(record: Any, source: str) -> BehaviourRecord:
  if isinstance(record, BehaviourRecord):
    return record
  if isinstance(record, Mapping):
    return BehaviourRecord.from_row(record, source)
  raise TypeError(
      f"{source}: expected a BehaviourRecord or a mapping, got {type(record).__name__}"
  )


# --------------------------------------------------------------------------
# Probabilities.


def match_probability(matching_log_probs, not_matching_log_probs):
  """`p_match = Σ exp(matching) / (Σ exp(matching) + Σ exp(not_matching))`, stably.

  Computed in float64 as `exp(lse_m − logaddexp(lse_m, lse_n))` with
  `lse = logsumexp` over the last axis, so log-probs of any magnitude (e.g.
  -1e4) give no overflow, underflow to 0/0 or NaN. Entries of `-inf` (no
  answer in that slot) contribute nothing; a row whose answers are all
  `-inf` on both sides has no defined value (NaN).

  Args:
    matching_log_probs: `[..., A]` log-probs of the matching answers.
    not_matching_log_probs: `[..., A']` log-probs of the other answers.

  Returns:
    `[...]` float64 (a Python float for 1-D inputs).

  Example:
    >>> p = match_probability([-1.0, -2.0], [-1.5])
    >>> # (e^-1 + e^-2) / (e^-1 + e^-2 + e^-1.5) = 0.6928...
  """
  m = scipy.special.logsumexp(np.asarray(matching_log_probs, np.float64), axis=-1)
  n = scipy.special.logsumexp(np.asarray(not_matching_log_probs, np.float64), axis=-1)
  total = np.logaddexp(m, n)
  with np.errstate(invalid="ignore"):
    p = np.where(np.isneginf(total), np.nan, np.exp(m - total))
  return float(p) if p.ndim == 0 else p


# --------------------------------------------------------------------------
# Tokenisation and scoring.


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
  """Token ids of each text, without special tokens (one batched tokenizer call)."""
  return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _bos(model, tokenizer, bos_id: int | None, add_bos: bool) -> int | None:
  if not add_bos:
    return None
  if bos_id is None:
    bos_id = getattr(tokenizer, "bos_token_id", None)
  if bos_id is None:
    bos_id = getattr(model.config, "bos_token_id", None)
  return None if bos_id is None else int(bos_id)


def _bucket(length: int) -> int:
  """Padded length of a batch whose longest row has `length` tokens."""
  return max(_MIN_BUCKET, 1 << max(length - 1, 0).bit_length())


@nnx.jit(static_argnames="chunk_size")
def _answer_log_probs(model, input_ids, segment_ids, positions, targets, *, chunk_size):
  """`[B]` summed float32 log-probs of the tokens `input_ids[:, t + 1]` where `targets[:, t]`."""
  hidden = model(input_ids, segment_ids=segment_ids, positions=positions, return_hidden=True)
  nxt = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
  if chunk_size:
    stats = losses.chunked_soft_q_stats(hidden, model.unembedding(), nxt,
                                        chunk_size=chunk_size, where=targets)
  else:
    stats = losses.soft_q_stats(model.logits(hidden), nxt, where=targets)
  return jnp.sum(jnp.where(targets, stats.log_probs, 0.0), axis=-1)


@nnx.jit(static_argnames="chunk_size")
def _next_token_log_probs(model, input_ids, segment_ids, positions, at, candidates, *,
                          chunk_size):
  """`[B, C]` float32 log-probs of `candidates [B, C]` as the token after position `at [B]`."""
  hidden = model(input_ids, segment_ids=segment_ids, positions=positions, return_hidden=True)
  last = jnp.take_along_axis(hidden, at[:, None, None], axis=1)            # [B, 1, D]
  c = candidates.shape[1]
  if chunk_size:
    stats = losses.chunked_soft_q_stats(jnp.repeat(last, c, axis=1), model.unembedding(),
                                        candidates, chunk_size=chunk_size)
    return stats.log_probs
  logits = model.logits(last)[:, 0].astype(jnp.float32)                    # [B, V]
  return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), candidates, axis=1)


def _shared_prefix_units(rows, starts) -> tuple[list[int], list[list[int]]]:
  """Rows whose answer is one token after the same context, grouped: `(rest, groups)`,
  `groups` lists of row indices (two or more) sharing `rows[k][:-1]`, `rest` the others."""
  by_prefix: dict[tuple[int, ...], list[int]] = {}
  rest = []
  for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
    if len(row) - start == 1:
      by_prefix.setdefault(tuple(row[:-1]), []).append(k)
    else:
      rest.append(k)
  groups = []
  for members in by_prefix.values():
    (groups.append(members) if len(members) > 1 else rest.extend(members))
  return sorted(rest), groups


def _rows(model, tokenizer, records: list[BehaviourRecord], bos: int | None):
  """Every (question, answer) row: `(ids, answer_start, split, question, matching, slot)`."""
  questions = _encode_many(tokenizer, [r.question for r in records])
  owners, answers, matching, slots = [], [], [], []
  for i, r in enumerate(records):
    for side, texts in ((True, r.answer_matching_behavior),
                        (False, r.answer_not_matching_behavior)):
      owners.extend([i] * len(texts))
      answers.extend(texts)
      matching.extend([side] * len(texts))
      slots.extend(range(len(texts)))
  joint = _encode_many(tokenizer, [records[i].question + a for i, a in zip(owners, answers,
                                                                            strict=True)])
  split = [j[:len(questions[i])] != questions[i] or len(j) == len(questions[i])
           for i, j in zip(owners, joint, strict=True)]
  separate = [k for k, s in enumerate(split) if s]
  alone = dict(zip(separate, _encode_many(tokenizer, [answers[k] for k in separate])
                   if separate else [], strict=True))
  prefix = [] if bos is None else [bos]
  limit = model.config.max_position_embeddings
  rows = []
  for k, i in enumerate(owners):
    q = questions[i]
    answer = alone[k] if split[k] else joint[k][len(q):]
    source = records[i].source
    if not answer:
      raise ValueError(f"{source}: the answer {quote(answers[k])} has no tokens.")
    if not prefix and not q:
      raise ValueError(
          f"{source}: the question has no tokens and there is no BOS token, so the first "
          "answer token has no context to be predicted from; pass bos_id=."
      )
    ids = prefix + q + answer
    if len(ids) > limit:
      raise ValueError(
          f"{source}: question + answer {quote(answers[k])} is {len(ids)} tokens, more than "
          f"the model's max_position_embeddings = {limit}."
      )
    rows.append(ids)
  starts = [len(prefix) + len(questions[i]) for i in owners]
  return rows, starts, split, owners, matching, slots


def score_records(
    model, tokenizer, records: Sequence[BehaviourRecord | Mapping[str, Any]], *,
    batch_size: int = 32, bos_id: int | None = None, add_bos: bool = True,
    chunk_size: int | None = None,
) -> dict[str, Any]:
  """Per-answer log-probs and per-question behaviour probabilities of a policy.

  Args:
    model: the policy, an `irl_jax.models.Transformer` (e.g. from
      `irl_jax.models.from_pretrained`).
    tokenizer: its Hugging Face tokenizer (`tokenizer(texts,
      add_special_tokens=False)["input_ids"]` is called).
    records: `[N]` `BehaviourRecord`s (or mappings with the three fields,
      validated as the loader does).
    batch_size: rows (question + one answer) per forward pass.
    bos_id: token prepended to every row; default the tokenizer's BOS id,
      else `model.config.bos_token_id`, else none.
    add_bos: `False` prepends no BOS at all.
    chunk_size: compute the log-softmax in vocabulary chunks of this many
      columns (`irl_jax.losses.chunked_soft_q_stats`) instead of holding
      `[batch_size, T, V]` logits (large vocabularies).

  Returns:
    A dict of NumPy arrays. Per question (`[N]`): `p_match` (float64),
    `matching_more_likely` (bool, `log_mass_matching > log_mass_not_matching`:
    the matching side's total probability is the larger, i.e. `p_match >
    0.5`), `log_mass_matching`, `log_mass_not_matching` (logsumexp of the
    side's answer log-probs), `mass_matching`, `mass_not_matching`,
    `mass_answers` (their sum: how much of the whole probability of the next
    text the listed answers take), `split_tokenisation` (bool: some answer of
    the question fell back to separate encoding), `source` (list of str).
    Per answer (`[R]`, questions in order, matching answers first):
    `answer_question` (index into the questions), `answer_matching` (bool),
    `answer_log_prob` (float64 of the float32 sum), `answer_tokens`,
    `answer_split_tokenisation`.

  Raises:
    ValueError: no records, a bad record, an answer with no tokens, a row
      longer than `model.config.max_position_embeddings`, or no context for
      the first answer token (empty question and no BOS).
  """
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"score_records: batch_size must be a positive int, got {batch_size!r}.")
  records = [_as_record(r, f"records[{i}]") for i, r in enumerate(records)]
  if not records:
    raise ValueError("score_records: no records to score.")
  bos = _bos(model, tokenizer, bos_id, add_bos)
  rows, starts, split, owners, matching, slots = _rows(model, tokenizer, records, bos)

  lengths = np.array([len(r) for r in rows])
  log_probs = np.zeros(len(rows), np.float64)
  # Answers of one token after the same context (" Yes" / " No") share one forward pass.
  rest, groups = _shared_prefix_units(rows, starts)

  def batches(units, length_of):
    order = sorted(units, key=length_of)
    per = min(batch_size, 1 << (len(order) - 1).bit_length())
    for lo in range(0, len(order), per):
      part = order[lo:lo + per]
      t = _bucket(int(max(length_of(u) for u in part)))
      yield part, [np.zeros((per, t), np.int32) for _ in range(3)]

  for part, (ids, segment_ids, positions) in (batches(rest, lambda k: lengths[k])
                                               if rest else ()):
    targets = np.zeros(ids.shape, np.bool_)
    for j, k in enumerate(part):
      n = lengths[k]
      ids[j, :n] = rows[k]
      segment_ids[j, :n] = 1  # 0: padding, neither attended to nor scored
      positions[j, :n] = np.arange(n)
      targets[j, starts[k] - 1:n - 1] = True  # position t predicts token t + 1
    out = _answer_log_probs(model, jnp.asarray(ids), jnp.asarray(segment_ids),
                            jnp.asarray(positions),
                            jnp.asarray(targets), chunk_size=chunk_size or None)
    log_probs[part] = np.asarray(out, np.float64)[:len(part)]
  if groups:
    width = max(len(g) for g in groups)
    for part, (ids, segment_ids, positions) in batches(
        range(len(groups)), lambda g: lengths[groups[g][0]] - 1):
      at = np.zeros(ids.shape[0], np.int32)
      candidates = np.zeros((ids.shape[0], width), np.int32)
      for j, g in enumerate(part):
        members = groups[g]
        context = rows[members[0]][:-1]
        n = len(context)
        ids[j, :n] = context
        segment_ids[j, :n] = 1
        positions[j, :n] = np.arange(n)
        at[j] = n - 1
        candidates[j, :len(members)] = [rows[k][-1] for k in members]
      out = np.asarray(_next_token_log_probs(
          model, jnp.asarray(ids), jnp.asarray(segment_ids), jnp.asarray(positions),
          jnp.asarray(at), jnp.asarray(candidates), chunk_size=chunk_size or None), np.float64)
      for j, g in enumerate(part):
        log_probs[groups[g]] = out[j, :len(groups[g])]

  owners_a = np.asarray(owners)
  matching_a = np.asarray(matching, np.bool_)
  split_a = np.asarray(split, np.bool_)
  slots_a = np.asarray(slots)
  n_q = len(records)
  width = max(max(len(r.answer_matching_behavior), len(r.answer_not_matching_behavior))
              for r in records)
  sides = {}
  for name, on_side in (("matching", matching_a), ("not_matching", ~matching_a)):
    table = np.full((n_q, width), -np.inf)
    table[owners_a[on_side], slots_a[on_side]] = log_probs[on_side]
    sides[name] = table
  log_m = scipy.special.logsumexp(sides["matching"], axis=-1)
  log_n = scipy.special.logsumexp(sides["not_matching"], axis=-1)
  split_q = np.zeros(n_q, np.bool_)
  np.logical_or.at(split_q, owners_a, split_a)
  return {
      "p_match": np.asarray(match_probability(sides["matching"], sides["not_matching"]),
                            np.float64).reshape(n_q),
      "matching_more_likely": log_m > log_n,
      "log_mass_matching": log_m,
      "log_mass_not_matching": log_n,
      "mass_matching": np.exp(log_m),
      "mass_not_matching": np.exp(log_n),
      "mass_answers": np.exp(np.logaddexp(log_m, log_n)),
      "split_tokenisation": split_q,
      "source": [r.source for r in records],
      "answer_question": owners_a,
      "answer_matching": matching_a,
      "answer_log_prob": log_probs,
      "answer_tokens": lengths - np.asarray(starts),
      "answer_split_tokenisation": split_a,
  }


# --------------------------------------------------------------------------
# Behaviour sets.


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
  """`(mean, low, high)`: Student-t interval `mean ± t_{(1+c)/2, n−1} · s / √n`, clipped to [0, 1].

  `s` is the sample standard deviation (`ddof=1`). With one value the
  interval is undefined (NaN, NaN); with identical values it is the point.
  """
  v = np.asarray(values, np.float64)
  mean = float(v.mean())
  if v.size < 2:
    return mean, math.nan, math.nan
  half = float(scipy.stats.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1)
               / math.sqrt(v.size))
  return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarize(scores: Mapping[str, Any], confidence: float = 0.95) -> dict[str, Any]:
  """The summary of one behaviour set from `score_records`' output (see `evaluate_behaviours`)."""
  mean, low, high = mean_interval(scores["p_match"], confidence)
  return {
      "count": len(scores["p_match"]),
      "p_match": mean,
      "p_match_low": low,
      "p_match_high": high,
      "matching_more_likely": float(np.mean(scores["matching_more_likely"])),
      "mass_matching": float(np.mean(scores["mass_matching"])),
      "mass_not_matching": float(np.mean(scores["mass_not_matching"])),
      "mass_answers": float(np.mean(scores["mass_answers"])),
      "split_tokenisations": int(np.sum(scores["split_tokenisation"])),
  }


def _stem(path: str | os.PathLike[str]) -> str:
  """The set name of a file: its name without `.gz` and then its last suffix."""
  p = pathlib.Path(path)
  return pathlib.Path(p.stem).stem if p.suffix == ".gz" else p.stem


def evaluate_behaviours(
    model, tokenizer,
    sets: Mapping[str, Sequence[BehaviourRecord | Mapping[str, Any]] | str | os.PathLike[str]]
    | Sequence[str | os.PathLike[str]],
    *, batch_size: int = 32, bos_id: int | None = None, add_bos: bool = True,
    chunk_size: int | None = None, confidence: float = 0.95, per_question: bool = False,
) -> dict[str, dict[str, Any]]:
  """Mean behaviour probability of a policy on each of several behaviour sets.

  All sets are scored in one `score_records` call (shared batches and compiled
  functions), then summarised per set.

  Args:
    model, tokenizer: the policy (see `score_records`).
    sets: `{name: records or JSONL path}`, or a list of paths (each named by
      its file stem; two files with one stem raise `ValueError`).
    batch_size, bos_id, add_bos, chunk_size: as in `score_records`.
    confidence: level of the interval on the mean `p_match`.
    per_question: also return each set's `score_records` arrays (per question
      only) under `"questions"`.

  Returns:
    `{name: summary}` in the order of `sets`; a summary holds `count`
    (questions), `p_match` (mean), `p_match_low`, `p_match_high` (Student-t
    interval on the mean at `confidence`, clipped to [0, 1]; NaN for one
    question), `matching_more_likely` (fraction of questions whose matching
    side is the more likely), `mass_matching`, `mass_not_matching`,
    `mass_answers` (mean probability masses) and `split_tokenisations`
    (questions with an answer encoded separately from the question).

  Results on Anthropic's published evaluations (CC-BY-4.0) must attribute
  github.com/anthropics/evals and cite Perez et al. 2022.
  """
  if not isinstance(sets, Mapping):
    named: dict[str, Any] = {}
    for path in sets:
      stem = _stem(path)
      if stem in named:
        raise ValueError(
            f"evaluate_behaviours: {os.fspath(named[stem])!r} and {os.fspath(path)!r} are both "
            f"named {stem!r}; pass a mapping of names to paths."
        )
      named[stem] = path
    sets = named
  if not sets:
    raise ValueError("evaluate_behaviours: no behaviour sets.")
  loaded: dict[str, list[BehaviourRecord]] = {}
  for name, value in sets.items():
    if isinstance(value, (str, os.PathLike)):
      loaded[name] = load_behaviour_jsonl(value)
    else:
      loaded[name] = [_as_record(r, f"{name}[{i}]") for i, r in enumerate(value)]
      if not loaded[name]:
        raise ValueError(f"evaluate_behaviours: the set {name!r} has no records.")
  everything = [r for records in loaded.values() for r in records]
  scores = score_records(model, tokenizer, everything, batch_size=batch_size, bos_id=bos_id,
                         add_bos=add_bos, chunk_size=chunk_size)
  out, lo = {}, 0
  for name, records in loaded.items():
    hi = lo + len(records)
    part = {k: v[lo:hi] for k, v in scores.items() if not k.startswith("answer_")}
    out[name] = summarize(part, confidence)
    if per_question:
      out[name]["questions"] = part
    lo = hi
  return out
