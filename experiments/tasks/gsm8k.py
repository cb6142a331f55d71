"""GSM8K's checker for generation metrics: a response is correct when its final answer
equals the reference's.

The reference is the dataset's own answer (its last line is `#### <number>`).
A response's final answer is the number on its last `#### ` line, or, without
one, the last number it contains (models fine-tuned for a few steps often
omit the marker); thousands separators are ignored and numbers compare as
values (`72.0` equals `72`). The score is 1 for a correct answer, 0.5 for a
response that states a `####` answer that is wrong, 0 otherwise.
"""

from __future__ import annotations

import re

from irl_jax.data import gsm8k_final_answer

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_answer(response: str) -> tuple[str | None, bool]:
  """`(number, marked)`: the response's final answer and whether a `####` line gave it."""
  for line in reversed(response.strip().split("\n")):
    if line.strip().startswith("####"):
      found = _NUMBER.findall(line)
      return (found[0].replace(",", "") if found else None), True
  found = _NUMBER.findall(response)
  return (found[-1].replace(",", "") if found else None), False


def _same(a: str, b: str) -> bool:
  try:
    return float(a) == float(b)
  except ValueError:
    return a == b


def checker(prompt: str, reference: str, response: str) -> tuple[float, bool]:
  """`(score, correct)` of `response` against the reference answer (`prompt` is unused)."""
  del prompt
  want = gsm8k_final_answer(reference)
  got, marked = final_answer(response)
  correct = got is not None and _same(got, want)
  return (1.0 if correct else 0.5 if marked and got is not None else 0.0), correct
