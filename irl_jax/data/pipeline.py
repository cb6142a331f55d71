"""Grain input pipelines: tokenise, shard, shuffle, repeat, pad or pack, batch.

Dimensions: `B` rows per host batch (`batch_size`), `T` tokens per row (a
bucket length or `seq_len`), `K` ranked responses per example
(`max_responses`).

Sources are any random-access sequence of example dicts: a
`builders.DecodedSource`, a raw `tfds.data_source` split (its `bytes` text is
decoded here), or a plain Python list. Examples are the `formats` kinds:

* demonstrations: `{"prompt", "response"}`;
* preferences: `{"prompt", "responses": [best, ..., worst]}` or
  `{"prompt", "chosen", "rejected"}`;

with an optional `"source"` (`"file:line"`) used in error messages (without
one, an example is named `"example <index>"`).

Each example becomes `[BOS] + prompt tokens + response tokens + [EOS]`
(prompt and response tokenised separately, without special tokens); the
response tokens and the EOS are the loss targets. An example longer than the
largest bucket or `seq_len` raises `BadRowError` naming its source, or with
`on_bad_row="skip"` is skipped and counted (each distinct example once, under
`"too_long"`) in a `RowCounts`; it is never truncated. Where the tokenizer
bounds the characters one token can cover (`tokenizers.max_chars_per_token`),
a text too long to fit at that bound is rejected from its length in characters
before it is tokenised, so that the work and memory per example stay bounded
however long a row is. A preference example whose responses are the same text,
or tokenise to the same ids, is a bad row too (`"identical_responses"`).

If every example of this host's shard is skipped, iterating raises
`NoExamplesError` (naming the files, the counts by reason and the first
`file:line` of each) instead of searching forever for an example
(`num_epochs=None`) or ending without a batch.

Order of operations: indices `0..N-1` are sharded per host
(`shard_index::shard_count`, so hosts see disjoint examples), shuffled with
`seed` (a different permutation every epoch, the same for every run),
repeated `num_epochs` times (`None`: forever), read and tokenised (in
threads), then padded or packed into batches of `B` rows. The returned
`grain.IterDataset` gives iterators with `get_state()` / `set_state()`;
states are small JSON-serialisable dicts (`iterator_state_to_json`).

Batch contract (all NumPy):

`lm_batches` -> `{"input_ids": [B, T] int32, "segment_ids": [B, T] int32,
"positions": [B, T] int32, "loss_mask": [B, T] bool}`. `segment_ids` is 0 on
padding and k on the k-th example of a row (1 for every real token of an
unpacked row); `positions` restart at 0 at each segment's first token;
`loss_mask` is true exactly on response tokens and each example's EOS, never on
a segment's first token (its BOS). A trainer predicts `input_ids[:, 1:]` from
logits at `[:, :-1]` with `where=loss_mask[:, 1:]`; since every segment starts
with a non-target BOS, no target is ever predicted across a segment boundary.

`preference_batches` -> `{"input_ids", "segment_ids", "positions",
"loss_mask": [B, K, T], "rank_mask": [B, K] bool}`: item k of a row is the
prompt with the k-th best response (pairs: chosen at k = 0, rejected at
k = 1); `rank_mask` is true on the row's real responses, false on the padding
of rankings shorter than `K`.

A final batch with fewer examples than `B` is padded with empty rows
(`segment_ids` all 0, `loss_mask` and `rank_mask` all false) unless
`drop_remainder=True`, so shapes stay `[B, ...]` and no example is lost.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import grain
import jax
import numpy as np
from absl import logging

from irl_jax.data.formats import (
  BadRowError,
  NoExamplesError,
  OnBadRow,
  RowCounts,
  check_distinct,
  check_on_bad_row,
  first_tie,
  preference_margin,
  quote,
)
from irl_jax.data.tokenizers import chars_per_token_bound

Packing = Literal["first_fit", "greedy"]

LM_KEYS = ("input_ids", "segment_ids", "positions", "loss_mask")
PREFERENCE_KEYS = (*LM_KEYS, "rank_mask")

# Distinct skipped examples logged one by one before switching to summaries.
_LOG_FIRST_SKIPS = 10
_LOG_SKIP_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids the pipelines add: `bos` before the prompt, `eos` after the response."""

  bos: int
  eos: int
  pad: int


def special_ids(
    tokenizer, *, bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None
) -> SpecialIds:
  """The tokenizer's BOS/EOS/pad ids, each overridable.

  `pad_id` falls back to the EOS id when the tokenizer has no pad token (GPT-2):
  padding slots are masked by `segment_ids == 0`, so its value never matters.
  A tokenizer without a BOS token (Qwen2) needs an explicit `bos_id`, e.g.
  its EOS id: every example must start with a non-target token.
  """
  bos = tokenizer.bos_token_id if bos_id is None else bos_id
  eos = tokenizer.eos_token_id if eos_id is None else eos_id
  if eos is None:
    raise ValueError(
        f"{type(tokenizer).__name__} has no EOS token; pass eos_id= explicitly."
    )
  if bos is None:
    raise ValueError(
        f"{type(tokenizer).__name__} has no BOS token; pass bos_id= explicitly (e.g. the EOS "
        f"id {eos}): every example starts with one non-target token."
    )
  pad = tokenizer.pad_token_id if pad_id is None else pad_id
  pad = eos if pad is None else pad
  for name, value in (("bos_id", bos), ("eos_id", eos), ("pad_id", pad)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return SpecialIds(int(bos), int(eos), int(pad))


# --------------------------------------------------------------------------
# JSON-friendly iterator states.


def _jsonable(value: Any, where: str) -> Any:
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise TypeError(f"iterator state key {where}[{k!r}] is not a string")
      out[k] = _jsonable(v, f"{where}[{k!r}]")
    return out
  if isinstance(value, (list, tuple)):
    return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist(), where)
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise TypeError(
      f"iterator state {where} holds a {type(value).__name__}, which JSON cannot store"
  )


def iterator_state_to_json(state: Mapping[str, Any]) -> str:
  """`json.dumps` of an iterator state (`it.get_state()`), NumPy scalars made plain.

  Raises `TypeError` naming the entry if something cannot be stored as JSON.
  """
  return json.dumps(_jsonable(state, "state"), sort_keys=True)


def iterator_state_from_json(text: str) -> dict[str, Any]:
  """The state `iterator_state_to_json` wrote, ready for `it.set_state(...)`."""
  state = json.loads(text)
  if not isinstance(state, dict):
    raise ValueError(f"an iterator state is a JSON object, got {text[:80]!r}")
  return state


# --------------------------------------------------------------------------
# Reading and tokenising one example.


def _text(value: Any, field: str, source: str) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return _text(value.item(), field, source)
  if not isinstance(value, str):
    raise BadRowError(
        source, "wrong_type", f"field {field!r} must be a string, got {type(value).__name__}"
    )
  return value


def _field(example: Mapping[str, Any], field: str, source: str) -> Any:
  if field not in example:
    raise BadRowError(
        source, "missing_field", f"missing field {field!r}; fields present: {sorted(example)}"
    )
  return example[field]


def _ranking(example: Mapping[str, Any], source: str) -> tuple[str, list[str]]:
  prompt = _text(_field(example, "prompt", source), "prompt", source)
  if "responses" in example:
    raw = example["responses"]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (Sequence, np.ndarray)):
      raise BadRowError(
          source, "wrong_type", f"field 'responses' must be a list, got {type(raw).__name__}"
      )
    responses = [_text(r, f"responses[{i}]", source) for i, r in enumerate(raw)]
  else:
    responses = [
        _text(_field(example, "chosen", source), "chosen", source),
        _text(_field(example, "rejected", source), "rejected", source),
    ]
  names = [f"responses {i}" for i in range(len(responses))]
  return prompt, check_distinct(responses, names, source)


def _file(source: str) -> str:
  """The file of a `"path:line"` source (the source itself if it has no line number)."""
  path, _, line = source.rpartition(":")
  return path if path and line.isdigit() else source


# Names the examples without a `source` field in a `NoExamplesError`.
_NO_SOURCE = "examples without a 'source'"


class _Encode:
  """`index -> tokens` for one shard of a source: reads, tokenises, checks the length.

  Returns `None` for an example skipped under `on_bad_row="skip"` (Grain
  filters those out); raises `BadRowError` under `"raise"`, and
  `NoExamplesError` once every index of the shard has been skipped.
  """

  def __init__(
      self, source, tokenizer, ids: SpecialIds, *, limit: int, limit_name: str,
      kind: Literal["lm", "preference"], max_responses: int, on_bad_row: OnBadRow,
      counts: RowCounts, shard: tuple[int, int, int], margins: bool = False,
  ):
    self._source = source
    self._margins = margins
    # A private copy used under a lock: Hugging Face fast tokenizers reset
    # truncation/padding state on the shared Rust object inside `encode`, which
    # fails ("Already borrowed") when Grain's reader threads call it at once,
    # and the caller's own tokenizer stays free for other threads.
    self._tokenizer = copy.deepcopy(tokenizer)
    self._max_chars, why = chars_per_token_bound(self._tokenizer)
    if self._max_chars is None:
      logging.log_first_n(
          logging.WARNING,
          "Texts are tokenised whole before their length is checked (no bound on characters "
          "per token: %s); an over-long row costs time and memory in proportion.", 1, why,
      )
    self._ids = ids
    self._limit = limit
    self._limit_name = limit_name
    self._kind = kind
    self._max_responses = max_responses
    self._on_bad_row = on_bad_row
    self.counts = counts
    # (shard index, shard count, examples in the shard), and what was skipped
    # in it: every example skipped means that no batch can ever be made.
    self._shard = shard
    self._skipped_indices: set[int] = set()
    self._shard_counts = RowCounts()
    self._files: set[str] = set()
    self._no_examples: tuple[list[str], str, RowCounts] | None = None  # NoExamplesError args
    self._tokenizer_lock = threading.Lock()
    self._skip_lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_tokenizer_lock"], state["_skip_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._tokenizer_lock = threading.Lock()
    self._skip_lock = threading.Lock()

  def _tokens(self, text: str) -> list[int]:
    with self._tokenizer_lock:
      return list(self._tokenizer.encode(text, add_special_tokens=False))

  def _check_chars(self, prompt: str, response: str, source: str, what: str) -> None:
    """Rejects a text too long to fit at `max_chars_per_token`, without tokenising it."""
    if self._max_chars is None:
      return
    # Each token covers at most `max_chars` characters, so a text of `c`
    # characters has at least ceil(c / max_chars) tokens.
    least = 2 + math.ceil(len(prompt) / self._max_chars) + math.ceil(
        len(response) / self._max_chars
    )
    if least > self._limit:
      raise BadRowError(
          source, "too_long",
          f"{what}tokenised length {least} or more (BOS + EOS + {len(prompt)} prompt and "
          f"{len(response)} response characters, each token covering at most "
          f"{self._max_chars}) exceeds {self._limit_name} = {self._limit}; rejected on its "
          "length in characters before tokenisation",
      )

  def _item(self, prompt: list[int], response: list[int], source: str, what: str):
    length = len(prompt) + len(response) + 2
    if length > self._limit:
      raise BadRowError(
          source, "too_long",
          f"{what}tokenised length {length} (BOS + {len(prompt)} prompt + {len(response)} "
          f"response + EOS tokens) exceeds {self._limit_name} = {self._limit}",
      )
    ids = np.array([self._ids.bos, *prompt, *response, self._ids.eos], np.int32)
    mask = np.zeros(length, np.bool_)
    mask[1 + len(prompt):] = True  # response tokens and the EOS
    return ids, mask

  def _encode(self, example: Any, source: str) -> dict[str, Any]:
    if not isinstance(example, Mapping):
      raise BadRowError(
          source, "not_an_object", f"an example must be a dict, got {type(example).__name__}"
      )
    if self._kind == "lm":
      prompt = _text(_field(example, "prompt", source), "prompt", source)
      response = _text(_field(example, "response", source), "response", source)
      self._check_chars(prompt, response, source, "")
      ids, mask = self._item(self._tokens(prompt), self._tokens(response), source, "")
      return {"ids": ids, "mask": mask}
    prompt, responses = _ranking(example, source)
    if len(responses) < 2:
      raise BadRowError(
          source, "too_few_responses", f"a ranking needs at least 2 responses, got {len(responses)}"
      )
    if len(responses) > self._max_responses:
      raise BadRowError(
          source, "too_many_responses",
          f"{len(responses)} ranked responses exceed max_responses = {self._max_responses}",
      )
    for k, r in enumerate(responses):
      self._check_chars(prompt, r, source, f"response {k}: ")
    prompt_ids = self._tokens(prompt)
    response_ids = [self._tokens(r) for r in responses]
    tie = first_tie([tuple(r) for r in response_ids])
    if tie is not None:
      i, j = tie
      raise BadRowError(
          source, "identical_responses",
          f"responses {i} and {j} tokenise to the same ids ({quote(responses[i])} and "
          f"{quote(responses[j])})",
      )
    items = [
        self._item(prompt_ids, r, source, f"response {k}: ") for k, r in enumerate(response_ids)
    ]
    out = {"ids": [i for i, _ in items], "mask": [m for _, m in items]}
    if self._margins:
      margin = example.get("margin")
      # A prepared TFDS split stores NaN for a row that gave no margin.
      if margin is None or (isinstance(margin, (float, np.floating)) and np.isnan(margin)):
        raise BadRowError(source, "missing_margin",
                          "no 'margin' field, and margins were asked for (each pair needs one)")
      out["margin"] = preference_margin(
          margin.item() if isinstance(margin, np.generic) else margin, source)
    return out

  def __call__(self, index: int) -> dict[str, Any] | None:
    index = int(index)  # an element of range(N): epochs are handled upstream
    with self._skip_lock:
      no_examples, known = self._no_examples, index in self._skipped_indices
    if no_examples is not None:
      raise NoExamplesError(*no_examples)
    if known:
      # Skipped in an earlier pass, and encoding is deterministic: not read
      # again (a huge row costs its reading only once).
      return None
    example = self._source[index]
    source = example.get("source") if isinstance(example, Mapping) else None
    file = _NO_SOURCE if source is None else None
    source = f"example {index}" if source is None else _text(source, "source", f"example {index}")
    try:
      return self._encode(example, source)
    except BadRowError as e:
      if self._on_bad_row == "raise":
        raise
      self._skip(e, index, file or _file(source))
      return None

  def _skip(self, error: BadRowError, index: int, file: str) -> None:
    shard_index, shard_count, shard_size = self._shard
    with self._skip_lock:
      # Each distinct example counts once, whether it is seen again in a later
      # epoch, after a restore, or by two reader threads at once.
      new = index not in self._skipped_indices
      if new:
        self._skipped_indices.add(index)
        self._shard_counts.read += 1
        self._shard_counts.skip(error)
        self._files.add(file)
      if len(self._skipped_indices) == shard_size and self._no_examples is None:
        # Encoding is deterministic: no later pass can keep an example either.
        self._no_examples = (
            sorted(self._files),
            f"all {shard_size} examples of shard {shard_index} of {shard_count} were "
            "skipped, so no batch can ever be made",
            copy.deepcopy(self._shard_counts),
        )
      no_examples = self._no_examples
      n = len(self._skipped_indices)
    if new:
      self.counts.skip(error)
      if n <= _LOG_FIRST_SKIPS:
        logging.warning("Skipping %s", error)
      if n == _LOG_FIRST_SKIPS or n % _LOG_SKIP_EVERY == 0:
        logging.warning(
            "Skipped %d distinct examples so far: %s", n, dict(self.counts.skipped)
        )
    if no_examples is not None:
      raise NoExamplesError(*no_examples)


# --------------------------------------------------------------------------
# Batching.


def _check_lengths(
    *, seq_len: int | None, buckets: Sequence[int] | None, packing: str | None
) -> tuple[int, ...]:
  """The sorted bucket lengths (packing: `(seq_len,)`)."""
  if packing is not None:
    if packing not in ("first_fit", "greedy"):
      raise ValueError(f"packing must be 'first_fit', 'greedy' or None, got {packing!r}")
    if seq_len is None or buckets is not None:
      raise ValueError(
          f"packing={packing!r} needs seq_len (and no buckets), got seq_len={seq_len!r}, "
          f"buckets={buckets!r}"
      )
    lengths: Sequence[int] = (seq_len,)
  elif (seq_len is None) == (buckets is None):
    raise ValueError(
        "give exactly one of seq_len (pad every batch to it) and buckets (pad each batch to "
        f"the smallest bucket that fits), got seq_len={seq_len!r}, buckets={buckets!r}"
    )
  else:
    lengths = (seq_len,) if buckets is None else tuple(buckets)
  if not lengths:
    raise ValueError("buckets must not be empty")
  for t in lengths:
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 2:
      raise ValueError(
          f"sequence lengths must be integers >= 2 (BOS + EOS), got {list(lengths)!r}"
      )
  return tuple(sorted({int(t) for t in lengths}))


def _bucket(longest: int, buckets: tuple[int, ...]) -> int:
  for t in buckets:
    if longest <= t:
      return t
  # Over-long examples were rejected by `_Encode`; reaching here is a bug.
  raise AssertionError(f"row of {longest} tokens exceeds the largest bucket {buckets[-1]}")


def _empty(shape: tuple[int, ...], pad_id: int) -> dict[str, np.ndarray]:
  return {
      "input_ids": np.full(shape, pad_id, np.int32),
      "segment_ids": np.zeros(shape, np.int32),
      "positions": np.zeros(shape, np.int32),
      "loss_mask": np.zeros(shape, np.bool_),
  }


def _put(batch: dict[str, np.ndarray], at: tuple, start: int, ids, mask, segment: int) -> None:
  """Writes one example at `batch[key][at + (start:start+L,)]`."""
  span = (*at, slice(start, start + len(ids)))
  batch["input_ids"][span] = ids
  batch["segment_ids"][span] = segment
  batch["positions"][span] = np.arange(len(ids), dtype=np.int32)
  batch["loss_mask"][span] = mask


class _PadLm:
  """Batch function: up to `B` encoded examples -> one padded `[B, T]` batch."""

  def __init__(self, batch_size: int, buckets: tuple[int, ...], pad_id: int):
    self._batch_size, self._buckets, self._pad_id = batch_size, buckets, pad_id

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    t = _bucket(max(len(e["ids"]) for e in elements), self._buckets)
    batch = _empty((self._batch_size, t), self._pad_id)
    for row, e in enumerate(elements):
      _put(batch, (row,), 0, e["ids"], e["mask"], 1)
    return batch


class _PadPreferences:
  """Batch function: up to `B` encoded rankings -> one padded `[B, K, T]` batch."""

  def __init__(self, batch_size: int, max_responses: int, buckets: tuple[int, ...], pad_id: int,
               margins: bool = False):
    self._batch_size, self._k, self._buckets, self._pad_id = (
        batch_size, max_responses, buckets, pad_id
    )
    self._margins = margins

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    t = _bucket(max(len(ids) for e in elements for ids in e["ids"]), self._buckets)
    batch = _empty((self._batch_size, self._k, t), self._pad_id)
    batch["rank_mask"] = np.zeros((self._batch_size, self._k), np.bool_)
    for row, e in enumerate(elements):
      for k, (ids, mask) in enumerate(zip(e["ids"], e["mask"], strict=True)):
        _put(batch, (row, k), 0, ids, mask, 1)
        batch["rank_mask"][row, k] = True
    if self._margins:
      batch["margin"] = np.zeros((self._batch_size,), np.float32)
      for row, e in enumerate(elements):
        batch["margin"][row] = e["margin"]
    return batch


class _Rows:
  """`B` rows of capacity `T` being filled with whole examples."""

  def __init__(self, batch_size: int, seq_len: int, packing: Packing):
    self._packing = packing
    self._capacity = seq_len
    self.rows: list[list[dict[str, Any]]] = [[] for _ in range(batch_size)]
    self._used = [0] * batch_size
    self._open = 0  # greedy: the row being filled; earlier rows are closed

  def add(self, element: dict[str, Any]) -> bool:
    """Places `element` in a row; `False` if it fits in none (the batch is full)."""
    n = len(element["ids"])
    if self._packing == "first_fit":
      candidates = range(len(self.rows))
    else:  # greedy (next-fit): fill one row until the next example overflows it
      candidates = range(self._open, len(self.rows))
    for r in candidates:
      if self._used[r] + n <= self._capacity:
        self.rows[r].append(element)
        self._used[r] += n
        self._open = r
        return True
    return False

  @property
  def empty(self) -> bool:
    return not any(self._used)


class _PackIterator(grain.DatasetIterator):
  """Packs whole encoded examples into `[B, T]` batches.

  State: the parent's state before the first example not yet emitted (at most
  one example is held back: the one that did not fit in the last batch), so
  restoring re-reads it and repacks identically.
  """

  def __init__(
      self, parent: grain.DatasetIterator, *, batch_size: int, seq_len: int, packing: Packing,
      pad_id: int, drop_remainder: bool,
  ):
    super().__init__(parent)
    self._batch_size, self._seq_len, self._packing = batch_size, seq_len, packing
    self._pad_id, self._drop_remainder = pad_id, drop_remainder
    self._carry: dict[str, Any] | None = None
    self._carry_state: dict[str, Any] | None = None

  def __next__(self) -> dict[str, np.ndarray]:
    rows = _Rows(self._batch_size, self._seq_len, self._packing)
    exhausted = False
    while True:
      if self._carry is None:
        state = self._parent.get_state()
        try:
          element = next(self._parent)
        except StopIteration:
          exhausted = True
          break
        self._carry, self._carry_state = element, state
      if not rows.add(self._carry):
        break  # the carried example opens the next batch
      self._carry = self._carry_state = None
    if rows.empty or (exhausted and self._drop_remainder):
      raise StopIteration
    batch = _empty((self._batch_size, self._seq_len), self._pad_id)
    for r, row in enumerate(rows.rows):
      start = 0
      for segment, e in enumerate(row, start=1):
        _put(batch, (r,), start, e["ids"], e["mask"], segment)
        start += len(e["ids"])
    return batch

  def get_state(self) -> dict[str, Any]:
    parent = self._carry_state if self._carry is not None else self._parent.get_state()
    return {"packing": self._packing, "parent": parent}

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, Mapping) or state.get("packing") != self._packing:
      raise ValueError(
          f"not a state of a {self._packing!r} packing iterator: {str(state)[:200]}"
      )
    self._parent.set_state(state["parent"])
    self._carry = self._carry_state = None

  def __str__(self) -> str:
    return f"PackIterator(packing={self._packing!r}, B={self._batch_size}, T={self._seq_len})"


class _PackIterDataset(grain.IterDataset):
  def __init__(self, parent: grain.IterDataset, **kwargs):
    super().__init__(parent)
    self._kwargs = kwargs

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), **self._kwargs)

  def __str__(self) -> str:
    return f"PackIterDataset({self._kwargs['packing']!r})"


# --------------------------------------------------------------------------
# Pipelines.


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  if not (isinstance(count, int) and count >= 1 and isinstance(index, int)
          and 0 <= index < count):
    raise ValueError(
        f"need 0 <= shard_index < shard_count, got shard_index={index!r}, shard_count={count!r}"
    )
  return index, count


def _encoded(
    source: Sequence[Any], tokenizer, ids: SpecialIds, *, seed: int, shuffle: bool,
    num_epochs: int | None, shard_index: int | None, shard_count: int | None,
    read_options: grain.ReadOptions | None, **encode_options: Any,
) -> grain.IterDataset:
  """Sharded, shuffled, repeated, encoded examples (skipped ones filtered out).

  `encode_options`: the keyword arguments of `_Encode` but `shard`.
  """
  if not isinstance(seed, int) or not 0 <= seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
  if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
    raise ValueError(f"num_epochs must be a positive integer or None (forever), got {num_epochs!r}")
  index, count = _shard(shard_index, shard_count)
  n = len(source)
  ds = grain.MapDataset.range(n)[index::count]
  if len(ds) == 0:
    raise ValueError(f"shard {index} of {count} has no examples (the source has {n})")
  encode = _Encode(source, tokenizer, ids, shard=(index, count, len(ds)), **encode_options)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs).map(encode).filter(lambda e: e is not None)
  return ds.to_iter_dataset(read_options)


def _check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def lm_batches(
    source: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    batch_size: int,
    seq_len: int | None = None,
    buckets: Sequence[int] | None = None,
    packing: Packing | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = False,
    on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
  """Demonstration batches for maximum likelihood (see the module docstring).

  Args:
    source: random-access demonstrations `{"prompt", "response"[, "source"]}`.
    tokenizer: a Hugging Face tokenizer (`encode(text, add_special_tokens=False)`).
    batch_size: `B`, rows per batch on this host.
    seq_len: without packing, pad every batch to `T = seq_len`; with packing,
      the row length `T` to pack into.
    buckets: (without packing) bucket lengths; each batch is padded to the
      smallest one that fits its longest example.
    packing: `None` (one example per row), `"first_fit"` (each example goes to
      the first of the batch's `B` rows with room) or `"greedy"` (rows are
      filled in order; an example that does not fit the current row starts the
      next). Either way a batch is emitted when an example fits in none of its
      rows, and examples are never split.
    seed: shuffling seed in `[0, 2**32)`.
    shuffle: shuffle (per epoch) or keep source order.
    num_epochs: passes over the data; `None` repeats forever.
    shard_index, shard_count: this host's shard; default
      `jax.process_index()`, `jax.process_count()`.
    drop_remainder: drop a final batch that the end of the data left short,
      instead of padding it with empty rows.
    on_bad_row: `"raise"` or `"skip"` for over-long or malformed examples.
    counts: a `RowCounts` whose `skipped` / `first_skipped` count the skipped
      examples, each distinct example once however often it is read (one is
      made if `None`; it is `.counts` on the returned dataset). Counting
      happens where tokenisation runs: in this process, in Grain's threads.
    bos_id, eos_id, pad_id: override the tokenizer's (see `special_ids`).
    read_options: Grain threading/prefetch options for reading and tokenising.

  Returns:
    A `grain.IterDataset` of `{"input_ids", "segment_ids", "positions",
    "loss_mask"}` `[B, T]` batches; `iter(ds)` has `get_state`/`set_state`.

  Example:
    >>> ds = lm_batches(examples, char_tokenizer("ab"), batch_size=2, seq_len=8)
    >>> batch = next(iter(ds))
  """
  _check_batch_size(batch_size)
  check_on_bad_row(on_bad_row)
  lengths = _check_lengths(seq_len=seq_len, buckets=buckets, packing=packing)
  ids = special_ids(tokenizer, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
  counts = RowCounts() if counts is None else counts
  ds = _encoded(
      source, tokenizer, ids, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      shard_index=shard_index, shard_count=shard_count, read_options=read_options,
      limit=lengths[-1],
      limit_name="seq_len" if packing or buckets is None else "the largest bucket",
      kind="lm", max_responses=1, on_bad_row=on_bad_row, counts=counts,
  )
  if packing is None:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  batch_fn=_PadLm(batch_size, lengths, ids.pad))
  else:
    ds = _PackIterDataset(
        ds, batch_size=batch_size, seq_len=lengths[0], packing=packing, pad_id=ids.pad,
        drop_remainder=drop_remainder,
    )
  ds.counts = counts
  return ds


def preference_batches(
    source: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    batch_size: int,
    max_responses: int = 2,
    seq_len: int | None = None,
    buckets: Sequence[int] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = False,
    on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    read_options: grain.ReadOptions | None = None,
    margins: bool = False,
) -> grain.IterDataset:
  """Preference pair / ranking batches (see the module docstring); no packing.

  Args:
    source: random-access examples `{"prompt", "responses": [best, ...]}` or
      `{"prompt", "chosen", "rejected"}`, optionally with `"source"`.
    max_responses: `K`; rankings with fewer responses are padded
      (`rank_mask` false), longer ones are bad rows (`"too_many_responses"`).
    seq_len, buckets: exactly one; pad every batch to `T = seq_len`, or to the
      smallest bucket that fits the batch's longest prompt + response.
    margins: add `"margin": [B]` float32, each example's Bradley–Terry margin
      (its `"margin"` field, `>= 0`; 0 in padding rows). An example without one
      (or with NaN, as a prepared TFDS split stores a missing margin) is a bad
      row, "missing_margin"; a negative or non-finite one, "bad_margin".
    Other arguments: as in `lm_batches`.

  Returns:
    A `grain.IterDataset` of `{"input_ids", "segment_ids", "positions",
    "loss_mask": [B, K, T], "rank_mask": [B, K]}` batches (and `"margin": [B]`
    with `margins`).
  """
  _check_batch_size(batch_size)
  check_on_bad_row(on_bad_row)
  if not isinstance(max_responses, int) or max_responses < 2:
    raise ValueError(f"max_responses must be an integer >= 2, got {max_responses!r}")
  lengths = _check_lengths(seq_len=seq_len, buckets=buckets, packing=None)
  ids = special_ids(tokenizer, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
  counts = RowCounts() if counts is None else counts
  ds = _encoded(
      source, tokenizer, ids, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      shard_index=shard_index, shard_count=shard_count, read_options=read_options,
      limit=lengths[-1], limit_name="seq_len" if buckets is None else "the largest bucket",
      kind="preference", max_responses=max_responses, on_bad_row=on_bad_row, counts=counts,
      margins=bool(margins),
  )
  ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                batch_fn=_PadPreferences(batch_size, max_responses, lengths, ids.pad,
                                         margins=bool(margins)))
  ds.counts = counts
  return ds


def lm_arrays(
    source: Sequence[Mapping[str, Any]], tokenizer, *, seq_len: int,
    on_bad_row: OnBadRow = "raise", counts: RowCounts | None = None,
    bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None,
) -> dict[str, np.ndarray]:
  """Every demonstration of `source` as one unpacked `[N, seq_len]` batch, in order.

  The same encoding as `lm_batches` (one example per row, its errors), for
  data that live on the device whole, e.g. the laptop-scale studies'
  `irl_jax.train.compiled.make_train`. With `on_bad_row="skip"` the skipped
  examples are left out (`N` is the number kept) and counted in `counts`,
  with the first skipped example of each reason; rows no longer line up with
  source indices then, so code that pairs rows with other per-example data
  should keep the default `"raise"`.
  """
  n = len(source)
  if n == 0:
    raise ValueError("lm_arrays: the source has no examples.")
  ds = lm_batches(source, tokenizer, batch_size=n, seq_len=seq_len, shuffle=False,
                  num_epochs=1, shard_index=0, shard_count=1, on_bad_row=on_bad_row,
                  counts=counts, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
  batch = next(iter(ds))
  kept = int(np.sum(batch["segment_ids"].max(axis=1) > 0))
  return {k: v[:kept] for k, v in batch.items()}
