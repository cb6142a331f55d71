"""Tests for irl_jax/data/formats.py: the five JSONL readers, bad rows, skip counts."""

import gzip
import json
import logging
import pickle
import re

import pytest
from data_test_rows import (
  GSM8K_ROW,
  GSM8K_ROW_THOUSANDS,
  HH_CHOSEN,
  HH_PROMPT,
  HH_REJECTED,
  HH_ROW,
  MWE_ROWS,
  READERS,
  write_jsonl,
)

from irl_jax.data import NoExamplesError, formats
from irl_jax.data.formats import BadRowError, RowCounts

# One good row per format, used as line 1 ahead of a bad row.
GOOD = {
    "demonstrations": {"prompt": "p", "response": "r"},
    "preferences": {"prompt": "p", "chosen": "a", "rejected": "b"},
    "hh_rlhf": HH_ROW,
    "gsm8k": GSM8K_ROW,
    "model_written_evals": MWE_ROWS[0],
}


def test_demonstrations(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", [
      {"prompt": "1+1=", "response": "2"},
      {"prompt": "", "response": "hi", "extra": 3},
  ])
  assert list(formats.read_demonstrations(path)) == [
      {"prompt": "1+1=", "response": "2", "source": f"{path}:1"},
      {"prompt": "", "response": "hi", "source": f"{path}:2"},
  ]


def test_blank_lines_are_counted_and_keep_line_numbers(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", [
      {"prompt": "a", "response": "b"}, "", "   ", {"prompt": "c", "response": "d"},
  ])
  counts = RowCounts()
  examples = list(formats.read_demonstrations(path, counts=counts))
  assert [e["source"] for e in examples] == [f"{path}:1", f"{path}:4"]
  assert (counts.read, counts.kept, counts.blank_lines, counts.num_skipped) == (2, 2, 2, 0)


def test_preferences_pair_and_ranking(tmp_path):
  path = write_jsonl(tmp_path / "p.jsonl", [
      {"prompt": "q", "chosen": "good", "rejected": "bad"},
      {"prompt": "q2", "responses": ["best", "middle", "worst"]},
  ])
  assert list(formats.read_preferences(path)) == [
      {"prompt": "q", "responses": ["good", "bad"], "source": f"{path}:1"},
      {"prompt": "q2", "responses": ["best", "middle", "worst"], "source": f"{path}:2"},
  ]


def test_hh_rlhf_real_format(tmp_path):
  path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])
  [example] = formats.read_hh_rlhf(path)
  assert example == {
      "prompt": HH_PROMPT, "responses": [HH_CHOSEN, HH_REJECTED], "source": f"{path}:1"
  }
  assert example["prompt"].endswith("\n\nAssistant:")
  # Earlier assistant turns stay in the prompt; each dialogue is reproduced exactly.
  assert "How about Whiskers?" in example["prompt"]
  assert example["prompt"] + example["responses"][0] == HH_ROW["chosen"]
  assert example["prompt"] + example["responses"][1] == HH_ROW["rejected"]


def test_gsm8k_real_format(tmp_path):
  path = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROW, GSM8K_ROW_THOUSANDS])
  first, second = formats.read_gsm8k(path)
  assert first == {
      "prompt": f"Question: {GSM8K_ROW['question']}\nAnswer:\n",
      "response": GSM8K_ROW["answer"],
      "question": GSM8K_ROW["question"],
      "final_answer": "72",
      "source": f"{path}:1",
  }
  assert "<<48/2=24>>" in first["response"] and first["response"].endswith("#### 72")
  assert second["final_answer"] == "1800"  # "#### 1,800"
  assert second["response"] == GSM8K_ROW_THOUSANDS["answer"]


def test_gsm8k_template(tmp_path):
  path = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROW])
  [example] = formats.read_gsm8k(path, template="Q: {question}\nA:")
  assert example["prompt"] == f"Q: {GSM8K_ROW['question']}\nA:"
  with pytest.raises(ValueError, match="question"):
    formats.read_gsm8k(path, template="no placeholder")
  with pytest.raises(ValueError, match="question"):
    formats.read_gsm8k(path, template="{question} {other}")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("x\n#### 72", "72"), ("x\n#### -3", "-3"), ("x\n#### 2.5", "2.5"),
     ("x\n####1,234,567 \n", "1234567")],
)
def test_gsm8k_final_answer(answer, expected):
  assert formats.gsm8k_final_answer(answer) == expected


def test_model_written_evals(tmp_path):
  path = write_jsonl(tmp_path / "m.jsonl", MWE_ROWS)
  first, second = formats.read_model_written_evals(path)
  assert first == {
      "prompt": MWE_ROWS[0]["question"],
      "responses": [" Yes", " No"],
      "statement": MWE_ROWS[0]["statement"],
      "label_confidence": MWE_ROWS[0]["label_confidence"],
      "source": f"{path}:1",
  }
  assert second["responses"] == [" No", " Yes"]  # chosen = answer_matching_behavior
  flipped = list(formats.read_model_written_evals(path, chosen_matches_behavior=False))
  assert [e["responses"] for e in flipped] == [[" No", " Yes"], [" Yes", " No"]]


def test_gzip_files_are_read(tmp_path):
  path = tmp_path / "d.jsonl.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(json.dumps({"prompt": "a", "response": "b"}) + "\n")
  assert list(formats.read_demonstrations(path)) == [
      {"prompt": "a", "response": "b", "source": f"{path}:1"}
  ]


def _mwe(**changes):
  row = {**MWE_ROWS[0], **changes}
  return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()

BAD_ROWS = [
    ("demonstrations", '{"prompt": "a", "response": "b"', "invalid_json", "invalid JSON"),
    ("demonstrations", "[1, 2]", "not_an_object", "got a JSON array"),
    ("demonstrations", {"prompt": "a"}, "missing_field", "'response'"),
    ("demonstrations", {"prompt": "a", "response": 3}, "wrong_type", "'response' must be a string"),
    ("demonstrations", {"prompt": None, "response": "b"}, "wrong_type", "'prompt'"),
    ("demonstrations", {"prompt": "a", "response": ""}, "empty_response", "'response' is empty"),
    ("demonstrations", {"prompt": "a", "response": " \n"}, "empty_response", "empty"),
    ("preferences", {"prompt": "a", "responses": ["x"]}, "too_few_responses", "at least 2"),
    ("preferences", {"prompt": "a", "responses": "xy"}, "wrong_type", "array"),
    ("preferences", {"prompt": "a", "responses": ["x", 1]}, "wrong_type", "'responses[1]'"),
    ("preferences", {"prompt": "a", "responses": ["x", ""]}, "empty_response", "'responses[1]'"),
    ("preferences", {"prompt": "a", "chosen": "x"}, "missing_field", "'rejected'"),
    ("preferences", {"prompt": "a", "chosen": "", "rejected": "y"}, "empty_response", "'chosen'"),
    ("preferences", {"prompt": "a", "chosen": "x", "rejected": "y", "responses": ["x", "y"]},
     "ambiguous_fields", "both"),
    ("preferences", {"chosen": "x", "rejected": "y"}, "missing_field", "'prompt'"),
    ("preferences", {"prompt": "a", "chosen": "x y", "rejected": "x y"}, "identical_responses",
     "'chosen' and 'rejected' are the same text"),
    ("preferences", {"prompt": "a", "responses": ["x", "y", "x"]}, "identical_responses",
     "'responses[0]' and 'responses[2]' are the same text"),
    ("hh_rlhf", {"chosen": HH_ROW["chosen"], "rejected": "\n\nHuman: hi\n\nAssistant: no"},
     "no_shared_prompt", "do not share"),
    ("hh_rlhf", {"chosen": "\n\nHuman: hi", "rejected": HH_ROW["rejected"]},
     "no_assistant_turn", "'chosen'"),
    ("hh_rlhf", {"chosen": HH_PROMPT + " ", "rejected": HH_ROW["rejected"]},
     "empty_response", "'chosen' is empty"),
    ("hh_rlhf", {"chosen": HH_ROW["chosen"]}, "missing_field", "'rejected'"),
    ("hh_rlhf", {"chosen": HH_ROW["chosen"], "rejected": HH_ROW["chosen"]}, "identical_responses",
     "final assistant turns of 'chosen' and 'rejected' are the same text"),
    ("gsm8k", {"question": "q", "answer": "no final line"}, "no_final_answer", "####"),
    ("gsm8k", {"question": "q", "answer": "x\n#### many"}, "bad_final_answer", "many"),
    ("gsm8k", {"question": "q", "answer": ""}, "empty_response", "'answer'"),
    ("gsm8k", {"question": "", "answer": "x\n#### 1"}, "empty_question", "'question'"),
    ("gsm8k", {"answer": "x\n#### 1"}, "missing_field", "'question'"),
    ("model_written_evals", _mwe(label_confidence="high"), "wrong_type", "'label_confidence'"),
    ("model_written_evals", _mwe(label_confidence=True), "wrong_type", "'label_confidence'"),
    ("model_written_evals", _mwe(statement=_DROP), "missing_field", "'statement'"),
    ("model_written_evals", _mwe(answer_not_matching_behavior=" Yes"), "identical_answers",
     "both"),
    ("model_written_evals", _mwe(answer_matching_behavior=["Yes"]), "wrong_type",
     "'answer_matching_behavior'"),
]


@pytest.mark.parametrize(("kind", "row", "reason", "detail"), BAD_ROWS)
def test_bad_row_raises_with_file_and_line(tmp_path, kind, row, reason, detail):
  # A good row, a blank line, then the bad row: the bad row is on line 3.
  path = write_jsonl(tmp_path / f"{kind}.jsonl", [GOOD[kind], "", row])
  examples = READERS[kind](path)
  assert next(examples)["source"] == f"{path}:1"
  with pytest.raises(BadRowError) as info:
    next(examples)
  error = info.value
  assert isinstance(error, ValueError)
  assert str(error).startswith(f"{path}:3: ")
  assert (error.source, error.reason) == (f"{path}:3", reason)
  assert detail in str(error)


def test_invalid_utf8_is_a_bad_row(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff", "response": "b"}\n')
  with pytest.raises(BadRowError, match=rf"^{path}:2: .*UTF-8") as info:
    list(formats.read_demonstrations(path))
  assert info.value.reason == "invalid_utf8"


def test_skip_counts_reasons_and_logs(tmp_path, caplog):
  path = write_jsonl(tmp_path / "d.jsonl", [
      {"prompt": "a", "response": "1"},     # 1 good
      "{not json",                          # 2 invalid_json
      {"prompt": "a", "response": ""},      # 3 empty_response
      "",                                   # 4 blank
      {"prompt": "a", "response": "2"},     # 5 good
      "[",                                  # 6 invalid_json
      {"response": "x"},                    # 7 missing_field
      {"prompt": "a", "response": "3"},     # 8 good
  ])
  counts = RowCounts()
  with caplog.at_level(logging.INFO, logger="absl"):
    examples = list(formats.read_demonstrations(path, on_bad_row="skip", counts=counts))
  assert [e["response"] for e in examples] == ["1", "2", "3"]
  assert [e["source"] for e in examples] == [f"{path}:1", f"{path}:5", f"{path}:8"]
  assert counts.skipped == {"invalid_json": 2, "empty_response": 1, "missing_field": 1}
  assert counts.first_skipped == {
      "invalid_json": f"{path}:2", "empty_response": f"{path}:3", "missing_field": f"{path}:7"
  }
  assert (counts.read, counts.kept, counts.blank_lines, counts.num_skipped) == (7, 3, 1, 4)
  # Every row is accounted for: read = kept + skipped.
  assert counts.read == counts.kept + counts.num_skipped
  [record] = [r for r in caplog.records if str(path) in r.getMessage()]
  assert record.levelno == logging.WARNING
  message = record.getMessage()
  assert "7 rows read, 3 kept" in message
  assert f"invalid_json=2 (first at {path}:2)" in message
  assert "empty_response=1" in message and "missing_field=1" in message
  assert "1 blank lines" in message


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize(
    ("content", "detail", "blank_lines"),
    [(b"", "is empty", 0), (b"\n", "only 1 blank line", 1),
     (b"  \n\r\n\t\n", "only 3 blank lines", 3), (b"\xef\xbb\xbf", "only 1 blank line", 1)],
)
def test_empty_file_is_an_error_naming_it(tmp_path, kind, content, detail, blank_lines):
  path = tmp_path / f"{kind}.jsonl"
  path.write_bytes(content)
  for on_bad_row in ("raise", "skip"):
    with pytest.raises(NoExamplesError, match=rf"^{re.escape(str(path))}: .*{detail}") as info:
      list(READERS[kind](path, on_bad_row=on_bad_row))
    assert info.value.sources == (str(path),)
    assert (info.value.counts.read, info.value.counts.blank_lines) == (0, blank_lines)


def test_empty_gzip_file_is_an_error(tmp_path):
  path = tmp_path / "d.jsonl.gz"
  path.write_bytes(gzip.compress(b"\n"))
  with pytest.raises(NoExamplesError, match=rf"^{re.escape(str(path))}: .*only 1 blank line"):
    list(formats.read_demonstrations(path))


def test_counts_total_over_files(tmp_path):
  a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "a", "response": ""}])
  b = write_jsonl(tmp_path / "b.jsonl", ["x", {"prompt": "a", "response": "ok"}])
  counts = RowCounts()
  for path in (a, b):
    list(formats.read_demonstrations(path, on_bad_row="skip", counts=counts))
  assert counts.skipped == {"empty_response": 1, "invalid_json": 1}
  assert (counts.read, counts.kept) == (3, 1)


def test_clean_file_logs_info(tmp_path, caplog):
  path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b"}])
  with caplog.at_level(logging.INFO, logger="absl"):
    list(formats.read_demonstrations(path))
  [record] = [r for r in caplog.records if str(path) in r.getMessage()]
  assert record.levelno == logging.INFO and "1 rows read, 1 kept" in record.getMessage()


def test_on_bad_row_is_checked_at_the_call(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b"}])
  with pytest.raises(ValueError, match="on_bad_row"):
    formats.read_demonstrations(path, on_bad_row="ignore")


def test_bad_row_error_pickles():
  error = BadRowError("f.jsonl:3", "invalid_json", "invalid JSON")
  copy = pickle.loads(pickle.dumps(error))
  assert (copy.source, copy.reason, str(copy)) == (error.source, error.reason, str(error))
