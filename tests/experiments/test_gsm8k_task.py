"""GSM8K's checker: the final answer of a response (a `####` line, else the last number),
compared by value with the reference's `#### <number>` line."""

import pytest

from experiments.tasks import gsm8k
from irl_jax.data import BadRowError

REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 72"


@pytest.mark.parametrize("response, expected", [
    ("She sold 24 and 48.\n#### 72", ("72", True)),
    ("#### 72\n", ("72", True)),
    ("  ####   -3 apples", ("-3", True)),
    ("It costs $1,024 in all.\n#### 1,024", ("1024", True)),
    # The last `####` line wins, even with text after it.
    ("#### 5\n#### 6\nso that is it: 7", ("6", True)),
    # No marker: the last number, separators removed.
    ("48 + 24 = 72, then 1,000 more", ("1000", False)),
    ("The answer is 72.5.", ("72.5", False)),
    ("#### no number here", (None, True)),
    ("no digits at all", (None, False)),
    ("", (None, False)),
])
def test_final_answer(response, expected):
  assert gsm8k.final_answer(response) == expected


@pytest.mark.parametrize("response, expected", [
    ("48+24=72\n#### 72", (1.0, True)),
    ("#### 72.0", (1.0, True)),       # compared as values
    ("#### 72.00", (1.0, True)),
    ("so 72", (1.0, True)),           # no marker: the last number
    ("I think 70, no wait, 72.0", (1.0, True)),
    ("#### 71", (0.5, False)),        # a stated, wrong answer
    ("#### 7.2", (0.5, False)),
    ("the answer is 71", (0.0, False)),  # wrong and unmarked
    ("#### seventy-two", (0.0, False)),  # marked but no number
    ("I don't know", (0.0, False)),
    ("", (0.0, False)),
])
def test_checker(response, expected):
  assert gsm8k.checker("How many clips?", REFERENCE, response) == expected


def test_checker_thousands_separators_on_either_side():
  assert gsm8k.checker("", "2*512=1024\n#### 1,024", "#### 1024") == (1.0, True)
  assert gsm8k.checker("", "#### 1024", "so 1,024 in all\n#### 1,024") == (1.0, True)
  assert gsm8k.checker("", "#### 1024", "it is 1,024") == (1.0, True)
  assert gsm8k.checker("", "#### -5", "#### -5") == (1.0, True)
  assert gsm8k.checker("", "#### -5", "#### 5") == (0.5, False)


def test_checker_ignores_the_prompt():
  assert gsm8k.checker("What is 1 + 1? #### 2", "#### 3", "3") == (1.0, True)


@pytest.mark.parametrize("reference", ["48+24=72", "#### 72\nand some more text", ""])
def test_reference_without_a_final_answer_line_raises(reference):
  with pytest.raises(BadRowError):
    gsm8k.checker("", reference, "#### 72")
