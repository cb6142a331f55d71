"""Fixtures for the data tests: small JSONL files written in the real formats."""

import pytest
from data_test_rows import (
    ALPHABET,
    DEMONSTRATION_ROWS,
    GSM8K_ROW,
    GSM8K_ROW_THOUSANDS,
    HH_ROW,
    MWE_ROWS,
    PREFERENCE_ROWS,
    write_jsonl,
)

from irl_jax.data import char_tokenizer


@pytest.fixture(scope="session")
def tok():
  return char_tokenizer(ALPHABET)


@pytest.fixture(scope="session")
def fixture_files(tmp_path_factory):
  """`{format: path}` of one small good file per format."""
  root = tmp_path_factory.mktemp("jsonl")
  return {
      "demonstrations": write_jsonl(root / "demonstrations.jsonl", DEMONSTRATION_ROWS),
      "preferences": write_jsonl(root / "preferences.jsonl", PREFERENCE_ROWS),
      "hh_rlhf": write_jsonl(root / "hh.jsonl", [HH_ROW, HH_ROW]),
      "gsm8k": write_jsonl(root / "gsm8k.jsonl", [GSM8K_ROW, GSM8K_ROW_THOUSANDS]),
      "model_written_evals": write_jsonl(root / "persona.jsonl", MWE_ROWS),
  }
