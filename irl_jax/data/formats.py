"""Line-by-line JSONL readers for the project's five data formats.

Every reader yields plain `dict` examples, one per good line, each carrying
`source = "path:line"` (1-based line number, counted in `\\n` characters as
`sed -n 'Np'` counts them) so that any later error can point back at the row.
Two example kinds come out:

* demonstration: `{"prompt": str, "response": str, "source": str, ...}`;
* preference:    `{"prompt": str, "responses": [str, ...], "source": str, ...}`
  with `responses` ranked best first (a pair is `[chosen, rejected]`), and
  `"margin": float` when the row gives one (`read_preferences`: an optional
  Bradley–Terry margin `m >= 0` by which the first response's reward should
  exceed the second's; a negative, non-finite or non-numeric one is a bad row,
  "bad_margin").

| reader | input row | example |
| --- | --- | --- |
| `read_demonstrations` | `{"prompt", "response"}` | demonstration |
| `read_preferences` | `{"prompt", "chosen", "rejected"}` / `{"prompt", "responses"}` | preference |
| `read_hh_rlhf` | `{"chosen", "rejected"}` full dialogues | preference pair |
| `read_gsm8k` | `{"question", "answer"}` | demonstration, `question`, `final_answer` |
| `read_model_written_evals` | persona-eval row | pair, `statement`, `label_confidence` |

Bad rows (invalid JSON or UTF-8, a row that is not an object, missing or
wrong-typed fields, empty responses, preferences between two identical
responses, HH-RLHF pairs without a shared prompt, GSM8K answers without a final
`#### <number>` line, ...) raise `BadRowError`, whose message starts with
`path:line`. With `on_bad_row="skip"` they are skipped instead and counted by
reason in a `RowCounts`, which is logged (absl) when the file has been read to
the end. Blank lines are not rows; they are counted (`RowCounts.blank_lines`)
and logged too. Nothing is dropped silently.

A file without a single row (empty, or only blank lines) raises
`NoExamplesError` naming it, whatever `on_bad_row` says.

Files may be gzip-compressed (detected from their first bytes, not their name).
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from absl import logging

OnBadRow = Literal["raise", "skip"]

ON_BAD_ROW_VALUES = ("raise", "skip")

# The template that turns a GSM8K question into a demonstration prompt. It ends
# in a newline so that the answer starts on a fresh line and no BPE merge can
# straddle the prompt/response boundary.
GSM8K_TEMPLATE = "Question: {question}\nAnswer:\n"

# The marker that opens an assistant turn in HH-RLHF dialogues.
HH_ASSISTANT = "\n\nAssistant:"

_GZIP_MAGIC = b"\x1f\x8b"
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")

Example = dict[str, Any]


class BadRowError(ValueError):
  """A row that cannot become an example.

  Attributes:
    source: `"path:line"` of the row (or of the example, in input pipelines).
    reason: a short stable code (`"invalid_json"`, `"missing_field"`,
      `"wrong_type"`, `"empty_response"`, `"identical_responses"`,
      `"no_shared_prompt"`, `"too_long"`, ...), the key under which
      `RowCounts` counts skipped rows.
    detail: what was wrong, in words.
  """

  def __init__(self, source: str, reason: str, detail: str):
    super().__init__(f"{source}: {detail} [{reason}]")
    self.source = source
    self.reason = reason
    self.detail = detail

  def __reduce__(self):
    # Keeps the three-argument constructor across pickling (worker processes).
    return (type(self), (self.source, self.reason, self.detail))


@dataclasses.dataclass
class RowCounts:
  """What happened to the rows of one or more files (or pipeline examples).

  Attributes:
    read: non-blank rows read.
    kept: rows that became examples.
    blank_lines: whitespace-only lines (not rows; counted so none vanish).
    skipped: reason -> number of rows skipped for it, e.g.
      `{"invalid_json": 2, "empty_response": 1}`.
    first_skipped: reason -> `source` of the first row skipped for it.
  """

  read: int = 0
  kept: int = 0
  blank_lines: int = 0
  skipped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
  first_skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  _lock: threading.Lock = dataclasses.field(
      default_factory=threading.Lock, repr=False, compare=False
  )

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def skip(self, error: BadRowError) -> None:
    """Counts one skipped row under `error.reason` (thread-safe)."""
    with self._lock:
      self.skipped[error.reason] += 1
      self.first_skipped.setdefault(error.reason, error.source)

  def reasons(self) -> str:
    """`"reason=n (first at path:line), ..."` for the skipped rows, by reason."""
    return ", ".join(
        f"{reason}={n} (first at {self.first_skipped[reason]})"
        for reason, n in sorted(self.skipped.items())
    )

  def summary(self, what: str) -> str:
    """One line: rows read, kept, skipped by reason (with a first example)."""
    parts = [f"{what}: {self.read} rows read, {self.kept} kept"]
    if self.skipped:
      parts.append(f"{self.num_skipped} skipped: {self.reasons()}")
    if self.blank_lines:
      parts.append(f"{self.blank_lines} blank lines ignored")
    return "; ".join(parts)

  def log(self, what: str) -> None:
    """Logs `summary(what)`: a warning if any row was skipped, else info."""
    if self.skipped:
      logging.warning("%s", self.summary(what))
    else:
      logging.info("%s", self.summary(what))

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class NoExamplesError(ValueError):
  """Data that yields not a single example.

  Raised for a file without rows (empty, or only blank lines), for a TFDS split
  whose every row was skipped (`on_bad_row="skip"`), and by the input
  pipelines when every example of a host's shard is skipped, where repeating
  forever (`num_epochs=None`) would otherwise search for an example forever.

  Attributes:
    sources: the files concerned, sorted (for in-memory examples, the names
      their `source` fields give).
    detail: what happened, in words.
    counts: a `RowCounts` of their rows: read, blank lines, skipped by reason
      with the first `path:line` skipped for each.
  """

  def __init__(self, sources: Sequence[str], detail: str, counts: RowCounts | None = None):
    self.sources = tuple(sources)
    self.detail = detail
    self.counts = RowCounts() if counts is None else counts
    shown = ", ".join(self.sources[:_SHOW_SOURCES])
    if len(self.sources) > _SHOW_SOURCES:
      shown += f" and {len(self.sources) - _SHOW_SOURCES} more"
    message = f"{shown}: {detail}"
    if self.counts.skipped:
      message += f": {self.counts.reasons()}"
    super().__init__(message)

  def __reduce__(self):
    return (type(self), (self.sources, self.detail, self.counts))


# Sources named in a `NoExamplesError` message (all are in `.sources`).
_SHOW_SOURCES = 5
# Characters of a field value quoted in a message.
_QUOTE = 80
# Field names listed in a "missing field" message.
_SHOW_FIELDS = 20


def quote(text: str, limit: int = _QUOTE) -> str:
  """`repr(text)`, cut to `limit` characters (with the full length) if longer."""
  if len(text) <= limit:
    return repr(text)
  return f"{text[:limit]!r}... ({len(text)} characters)"


def check_on_bad_row(on_bad_row: str) -> None:
  if on_bad_row not in ON_BAD_ROW_VALUES:
    raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW_VALUES}, got {on_bad_row!r}.")


# --------------------------------------------------------------------------
# Reading lines.


def open_binary(path: str | os.PathLike[str]):
  """Opens `path` for binary reading, decompressing gzip files transparently."""
  with open(path, "rb") as f:
    magic = f.read(2)
  return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def read_jsonl(
    path: str | os.PathLike[str],
    parse_row: Callable[[dict[str, Any], str], Example],
    *,
    on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
    what: str = "rows",
) -> Iterator[Example]:
  """Yields `parse_row(row, source)` for every JSON object line of `path`.

  Args:
    path: a JSONL file (optionally gzip-compressed).
    parse_row: turns one decoded JSON object into an example, raising
      `BadRowError` when it cannot.
    on_bad_row: `"raise"` (the first bad row raises `BadRowError`) or
      `"skip"` (bad rows are counted in `counts` and skipped).
    counts: where to count rows; a fresh `RowCounts` if `None`. Pass one to
      inspect the counts afterwards or to total several files.
    what: a word for the log line (`"HH-RLHF pairs"`).

  When the file has been read to the end, the counts are logged; a file
  without a single row (empty, or only blank lines) then raises
  `NoExamplesError` naming it.
  """
  check_on_bad_row(on_bad_row)
  counts = RowCounts() if counts is None else counts
  # Validated above, read lazily below: a bad argument fails at the call.
  return _iter_jsonl(path, parse_row, on_bad_row, counts, what)


def _iter_jsonl(path, parse_row, on_bad_row, counts, what) -> Iterator[Example]:
  # `path` as given (not resolved) so that sources read the way the user wrote them.
  name = os.fspath(path)
  # This file's own tallies: `counts` may total several files.
  rows = blank_lines = 0
  with open_binary(path) as f:
    for line_no, raw in enumerate(f, start=1):
      source = f"{name}:{line_no}"
      if line_no == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
      if not raw.strip():
        counts.blank_lines += 1
        blank_lines += 1
        continue
      counts.read += 1
      rows += 1
      try:
        example = parse_row(_decode_line(raw, source), source)
      except BadRowError as e:
        if on_bad_row == "raise":
          raise
        counts.skip(e)
        continue
      counts.kept += 1
      yield example
  counts.log(f"{name} ({what})")
  if not rows:
    plural = "" if blank_lines == 1 else "s"
    detail = (
        f"no {what}: the file has only {blank_lines} blank line{plural}" if blank_lines
        else f"no {what}: the file is empty"
    )
    raise NoExamplesError([name], detail, RowCounts(blank_lines=blank_lines))


def _decode_line(raw: bytes, source: str) -> dict[str, Any]:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadRowError(source, "invalid_utf8", f"line is not valid UTF-8 ({e})") from None
  try:
    row = json.loads(text)
  except json.JSONDecodeError as e:
    raise BadRowError(source, "invalid_json", f"invalid JSON ({e})") from None
  if not isinstance(row, dict):
    raise BadRowError(
        source, "not_an_object", f"expected a JSON object, got a JSON {_json_type(row)}"
    )
  return row


# --------------------------------------------------------------------------
# Field checks.


def _json_type(value: Any) -> str:
  if value is None:
    return "null"
  if isinstance(value, bool):
    return "boolean"
  if isinstance(value, (int, float)):
    return "number"
  if isinstance(value, str):
    return "string"
  if isinstance(value, list):
    return "array"
  if isinstance(value, dict):
    return "object"
  return type(value).__name__


def _present(row: dict[str, Any], name: str, source: str, expected: str = "") -> Any:
  if name not in row:
    fields = ", ".join(quote(k) for k in list(row)[:_SHOW_FIELDS]) or "none"
    if len(row) > _SHOW_FIELDS:
      fields += f" and {len(row) - _SHOW_FIELDS} more"
    hint = f" ({expected})" if expected else ""
    raise BadRowError(
        source, "missing_field", f"missing field {name!r}{hint}; fields present: {fields}"
    )
  return row[name]


def _string(row: dict[str, Any], name: str, source: str, expected: str = "") -> str:
  value = _present(row, name, source, expected)
  if not isinstance(value, str):
    raise BadRowError(
        source, "wrong_type", f"field {name!r} must be a string, got a JSON {_json_type(value)}"
    )
  return value


def _nonempty(value: str, name: str, source: str, reason: str = "empty_response") -> str:
  if not value.strip():
    raise BadRowError(source, reason, f"{name} is empty ({quote(value)})")
  return value


def first_tie(responses: Sequence[Any]) -> tuple[int, int] | None:
  """`(i, j)`, `i < j`, of the first response equal to an earlier one; `None` if all differ."""
  first: dict[Any, int] = {}
  for j, response in enumerate(responses):
    i = first.setdefault(response, j)
    if i != j:
      return i, j
  return None


def check_distinct(responses: list[str], names: Sequence[str], source: str) -> list[str]:
  """`responses`, or `BadRowError` (`identical_responses`) naming the first two equal ones."""
  # A preference between a text and itself teaches nothing (its loss has no
  # gradient to follow); a tie in a ranking contradicts the ranking.
  tie = first_tie(responses)
  if tie is not None:
    i, j = tie
    raise BadRowError(
        source, "identical_responses",
        f"{names[i]} and {names[j]} are the same text ({quote(responses[i])})",
    )
  return responses


def _number(row: dict[str, Any], name: str, source: str) -> float:
  value = _present(row, name, source)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRowError(
        source, "wrong_type", f"field {name!r} must be a number, got a JSON {_json_type(value)}"
    )
  if not math.isfinite(value):
    raise BadRowError(source, "wrong_type", f"field {name!r} must be finite, got {value}")
  return float(value)


# --------------------------------------------------------------------------
# Row parsers (row, source) -> example.


def parse_demonstration(row: dict[str, Any], source: str) -> Example:
  """`{"prompt": str, "response": str}` -> demonstration (the prompt may be empty)."""
  prompt = _string(row, "prompt", source)
  response = _nonempty(_string(row, "response", source), "'response'", source)
  return {"prompt": prompt, "response": response, "source": source}


def parse_preference(row: dict[str, Any], source: str) -> Example:
  """A pair `{"prompt", "chosen", "rejected"}` or a ranking `{"prompt", "responses"}`."""
  prompt = _string(row, "prompt", source)
  is_pair = "chosen" in row or "rejected" in row
  if is_pair and "responses" in row:
    raise BadRowError(
        source, "ambiguous_fields",
        "row has both 'responses' and 'chosen'/'rejected'; give one ranking form",
    )
  if "responses" in row:
    responses = row["responses"]
    if not isinstance(responses, list):
      raise BadRowError(
          source, "wrong_type",
          f"field 'responses' must be an array of strings, got a JSON {_json_type(responses)}",
      )
    if len(responses) < 2:
      raise BadRowError(
          source, "too_few_responses",
          f"'responses' must rank at least 2 responses, got {len(responses)}",
      )
    for i, r in enumerate(responses):
      if not isinstance(r, str):
        raise BadRowError(
            source, "wrong_type", f"'responses[{i}]' must be a string, got a JSON {_json_type(r)}"
        )
      _nonempty(r, f"'responses[{i}]'", source)
    names = [f"'responses[{i}]'" for i in range(len(responses))]
  else:
    expected = "a pair needs 'chosen' and 'rejected'; a ranking needs 'responses'"
    chosen = _string(row, "chosen", source, expected)
    rejected = _string(row, "rejected", source, expected)
    responses = [_nonempty(chosen, "'chosen'", source), _nonempty(rejected, "'rejected'", source)]
    names = ["'chosen'", "'rejected'"]
  responses = check_distinct(list(responses), names, source)
  example = {"prompt": prompt, "responses": responses, "source": source}
  if "margin" in row:
    example["margin"] = preference_margin(row["margin"], source)
  return example


def preference_margin(value: Any, source: str) -> float:
  """A row's Bradley–Terry margin `m` (the preferred response's reward should exceed the
  other's by it): a finite number `>= 0`, else `BadRowError` ("bad_margin")."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRowError(source, "bad_margin",
                      f"field 'margin' must be a number, got {type(value).__name__}")
  value = float(value)
  if not math.isfinite(value) or value < 0:
    raise BadRowError(source, "bad_margin", f"field 'margin' must be finite and >= 0, got "
                      f"{value}")
  return value


def split_hh_dialogue(dialogue: str, name: str, source: str) -> tuple[str, str]:
  """`(prompt, response)`: the dialogue through its last `\\n\\nAssistant:`, and the rest."""
  cut = dialogue.rfind(HH_ASSISTANT)
  if cut < 0:
    raise BadRowError(source, "no_assistant_turn", f"{name!r} has no '\\n\\nAssistant:' turn")
  cut += len(HH_ASSISTANT)
  return dialogue[:cut], dialogue[cut:]


def parse_hh_rlhf(row: dict[str, Any], source: str) -> Example:
  """HH-RLHF `{"chosen", "rejected"}` dialogues -> preference pair.

  The prompt is the shared dialogue through the last `"\\n\\nAssistant:"`
  (kept verbatim, leading `"\\n\\nHuman:"` included) and the responses are the
  two final assistant turns, verbatim (usually starting with a space), so that
  `prompt + response` reproduces each original dialogue exactly.
  """
  chosen = _string(row, "chosen", source)
  rejected = _string(row, "rejected", source)
  prompt, chosen_response = split_hh_dialogue(chosen, "chosen", source)
  rejected_prompt, rejected_response = split_hh_dialogue(rejected, "rejected", source)
  if prompt != rejected_prompt:
    at = next(
        (i for i, (a, b) in enumerate(zip(prompt, rejected_prompt, strict=False)) if a != b),
        min(len(prompt), len(rejected_prompt)),
    )
    raise BadRowError(
        source, "no_shared_prompt",
        "'chosen' and 'rejected' do not share the dialogue up to their last "
        f"'\\n\\nAssistant:' turn (prompts of {len(prompt)} and {len(rejected_prompt)} "
        f"characters first differ at character {at})",
    )
  _nonempty(chosen_response, "final assistant turn of 'chosen'", source)
  _nonempty(rejected_response, "final assistant turn of 'rejected'", source)
  responses = check_distinct(
      [chosen_response, rejected_response],
      ["final assistant turns of 'chosen'", "'rejected'"], source,
  )
  return {"prompt": prompt, "responses": responses, "source": source}


def gsm8k_final_answer(answer: str, source: str = "<answer>") -> str:
  """The number on the final `#### <number>` line, thousands separators removed.

  >>> gsm8k_final_answer("48/2 = <<48/2=24>>24\\n#### 1,024")
  '1024'
  """
  last = answer.rstrip().rsplit("\n", 1)[-1].strip()
  if not last.startswith("####"):
    raise BadRowError(
        source, "no_final_answer",
        f"'answer' must end with a '#### <number>' line, its last line is {quote(last)}",
    )
  value = last.removeprefix("####").strip().replace(",", "")
  if not _NUMBER.fullmatch(value):
    raise BadRowError(
        source, "bad_final_answer", f"final answer {quote(last)} is not a number"
    )
  return value


def gsm8k_parser(template: str = GSM8K_TEMPLATE) -> Callable[[dict[str, Any], str], Example]:
  """A GSM8K row parser whose prompt is `template.format(question=question)`."""
  try:
    template.format(question="")
  except (KeyError, IndexError, ValueError) as e:
    raise ValueError(
        f"GSM8K template must contain '{{question}}' and no other fields, got {template!r} ({e})"
    ) from None
  if "{question}" not in template:
    raise ValueError(f"GSM8K template must contain '{{question}}', got {template!r}")

  def parse(row: dict[str, Any], source: str) -> Example:
    question = _nonempty(_string(row, "question", source), "'question'", source, "empty_question")
    answer = _nonempty(_string(row, "answer", source), "'answer'", source)
    return {
        "prompt": template.format(question=question),
        "response": answer,
        "question": question,
        "final_answer": gsm8k_final_answer(answer, source),
        "source": source,
    }

  return parse


def model_written_evals_parser(
    *, chosen_matches_behavior: bool = True
) -> Callable[[dict[str, Any], str], Example]:
  """A persona-eval row parser: prompt = question; chosen = the behaviour-matching answer.

  With `chosen_matches_behavior=False` the pair is flipped (chosen = the answer
  that does not match the behaviour).
  """

  def parse(row: dict[str, Any], source: str) -> Example:
    question = _nonempty(_string(row, "question", source), "'question'", source, "empty_question")
    statement = _string(row, "statement", source)
    confidence = _number(row, "label_confidence", source)
    matching = _nonempty(
        _string(row, "answer_matching_behavior", source), "'answer_matching_behavior'", source
    )
    not_matching = _nonempty(
        _string(row, "answer_not_matching_behavior", source),
        "'answer_not_matching_behavior'", source,
    )
    if matching == not_matching:
      raise BadRowError(
          source, "identical_answers",
          "'answer_matching_behavior' and 'answer_not_matching_behavior' are both "
          f"{quote(matching)}",
      )
    pair = [matching, not_matching] if chosen_matches_behavior else [not_matching, matching]
    return {
        "prompt": question,
        "responses": pair,
        "statement": statement,
        "label_confidence": confidence,
        "source": source,
    }

  return parse


# --------------------------------------------------------------------------
# Readers.


def read_demonstrations(
    path: str | os.PathLike[str], *, on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
) -> Iterator[Example]:
  """Demonstrations `{"prompt": str, "response": str}` -> `{"prompt", "response", "source"}`.

  Args:
    path: JSONL file (optionally gzip-compressed).
    on_bad_row: `"raise"` or `"skip"` (see the module docstring).
    counts: a `RowCounts` to count rows in (a fresh one if `None`).
  """
  return read_jsonl(
      path, parse_demonstration, on_bad_row=on_bad_row, counts=counts, what="demonstrations"
  )


def read_preferences(
    path: str | os.PathLike[str], *, on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
) -> Iterator[Example]:
  """Pairs or rankings -> `{"prompt", "responses": [best, ..., worst], "source"}`.

  A row is either `{"prompt", "chosen", "rejected"}` (-> `responses =
  [chosen, rejected]`) or `{"prompt", "responses": [str, ...]}` ranked best
  first with at least two responses. Two responses of a row that are the same
  text (chosen == rejected, a tie in a ranking) make it a bad row
  (`identical_responses`). Arguments as in `read_demonstrations`.
  """
  return read_jsonl(
      path, parse_preference, on_bad_row=on_bad_row, counts=counts, what="preferences"
  )


def read_hh_rlhf(
    path: str | os.PathLike[str], *, on_bad_row: OnBadRow = "raise",
    counts: RowCounts | None = None,
) -> Iterator[Example]:
  """HH-RLHF `{"chosen", "rejected"}` dialogues -> preference pairs.

  Yields `{"prompt", "responses": [chosen_turn, rejected_turn], "source"}`
  (see `parse_hh_rlhf`). A pair whose dialogues differ before the last
  `"\\n\\nAssistant:"` is a bad row (`no_shared_prompt`), and so is one whose
  two final turns are the same text (`identical_responses`).
  """
  return read_jsonl(
      path, parse_hh_rlhf, on_bad_row=on_bad_row, counts=counts, what="HH-RLHF pairs"
  )


def read_gsm8k(
    path: str | os.PathLike[str], *, template: str = GSM8K_TEMPLATE,
    on_bad_row: OnBadRow = "raise", counts: RowCounts | None = None,
) -> Iterator[Example]:
  """GSM8K `{"question", "answer"}` -> demonstrations.

  Yields `{"prompt": template.format(question=...), "response": answer,
  "question", "final_answer", "source"}`. The response is the answer verbatim:
  worked solution, calculator annotations `<<48/2=24>>` and the final
  `#### <number>` line. `final_answer` is that number as a string with
  thousands separators removed (`"#### 1,200"` -> `"1200"`). The default
  template is `GSM8K_TEMPLATE`, `"Question: {question}\\nAnswer:\\n"`.
  """
  return read_jsonl(
      path, gsm8k_parser(template), on_bad_row=on_bad_row, counts=counts, what="GSM8K problems"
  )


def read_model_written_evals(
    path: str | os.PathLike[str], *, chosen_matches_behavior: bool = True,
    on_bad_row: OnBadRow = "raise", counts: RowCounts | None = None,
) -> Iterator[Example]:
  """Model-written (persona) evaluations -> preference pairs.

  Rows are `{"question", "statement", "label_confidence",
  "answer_matching_behavior", "answer_not_matching_behavior"}`; yields
  `{"prompt": question, "responses": [chosen, rejected], "statement",
  "label_confidence", "source"}` with chosen = `answer_matching_behavior`
  (verbatim, e.g. `" Yes"`), or the other answer if
  `chosen_matches_behavior=False`.

  References: Perez et al. 2022, "Discovering Language Model Behaviors with
  Model-Written Evaluations" (CC-BY-4.0; cite wherever results are shown).
  """
  return read_jsonl(
      path, model_written_evals_parser(chosen_matches_behavior=chosen_matches_behavior),
      on_bad_row=on_bad_row, counts=counts, what="model-written evaluations",
  )
