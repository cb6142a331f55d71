"""Multi-step arithmetic derivations: an expert program with diverse correct outputs.

A prompt lists the operands, e.g. `"+ 3 5 8 1\\n"`. The expert repeatedly picks
two of the remaining numbers in a random order, writes one step per line in
GSM8K calculator style (`3+8=11`), replaces them by the result, and ends with
`#### <answer>`:

    + 3 5 8 1
    3+8=11
    1+5=6
    11+6=17
    #### 17

Many derivations are correct, so diversity can be measured. `check` scores a
response exactly: step validity (each line is a correct operation on two
numbers still available) and final-answer correctness. Difficulty (operand
count, digits, operation) is a config field.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

ALPHABET = "0123456789+*=# \n"
_STEP = re.compile(r"^(\d+)([+*])(\d+)=(\d+)$")
_FINAL = re.compile(r"^#### (\d+)$")


@dataclasses.dataclass(frozen=True)
class Difficulty:
  min_operands: int = 3
  max_operands: int = 4
  digits: int = 1
  op: str = "+"  # "+" or "*"


def _apply(op: str, a: int, b: int) -> int:
  return a + b if op == "+" else a * b


def answer(op: str, operands) -> int:
  total = operands[0]
  for x in operands[1:]:
    total = _apply(op, total, x)
  return total


def make_prompt(op: str, operands) -> str:
  return f"{op} " + " ".join(str(x) for x in operands) + "\n"


def sample_problem(rng: np.random.Generator, difficulty: Difficulty) -> tuple[str, list[int]]:
  k = int(rng.integers(difficulty.min_operands, difficulty.max_operands + 1))
  lo = 1 if difficulty.digits == 1 else 10 ** (difficulty.digits - 1)
  operands = [int(x) for x in rng.integers(lo, 10**difficulty.digits, k)]
  return difficulty.op, operands


def expert_derivation(rng: np.random.Generator, op: str, operands) -> str:
  """One correct derivation, combining a random pair of remaining numbers at each step."""
  pool = list(operands)
  lines = []
  while len(pool) > 1:
    i, j = rng.choice(len(pool), 2, replace=False)
    a, b = pool[i], pool[j]
    c = _apply(op, a, b)
    lines.append(f"{a}{op}{b}={c}")
    pool = [x for t, x in enumerate(pool) if t not in (i, j)] + [c]
  lines.append(f"#### {pool[0]}")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Score:
  """Checker output: `step_validity` in [0, 1], `correct` final answer, `score` their mean."""

  step_validity: float
  correct: bool
  num_steps: int

  @property
  def score(self) -> float:
    return 0.5 * self.step_validity + 0.5 * float(self.correct)


def check(prompt: str, response: str) -> Score:
  """Score a response to `prompt` exactly.

  A step line `a<op>b=c` is valid when `a` and `b` are among the numbers still
  available (operands and earlier results, each usable once) and `c` is right;
  a valid step makes `c` available. Step validity is the fraction of valid
  steps over max(#steps written, #steps needed); the answer is correct when
  the response's last line is `#### <the true result>`. Lines that are
  neither steps nor the final answer count as invalid steps.
  """
  head = prompt.strip().split()
  op, operands = head[0], [int(x) for x in head[1:]]
  needed = len(operands) - 1
  pool = list(operands)
  lines = [ln.strip() for ln in response.strip().split("\n") if ln.strip()]
  final = None
  if lines and _FINAL.match(lines[-1]):
    final = int(_FINAL.match(lines[-1]).group(1))
    lines = lines[:-1]
  valid = 0
  for ln in lines:
    m = _STEP.match(ln)
    if not m:
      continue
    a, o, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    if o != op or c != _apply(op, a, b) or a not in pool:
      continue
    pool.remove(a)
    if b not in pool:
      pool.append(a)
      continue
    pool.remove(b)
    pool.append(c)
    valid += 1
  validity = valid / max(len(lines), needed) if max(len(lines), needed) else 1.0
  return Score(step_validity=validity, correct=final == answer(op, operands),
               num_steps=len(lines))


def corrupt(rng: np.random.Generator, response: str, kind: str) -> str:
  """A wrong variant: `"answer"` (final answer off), `"step"` (one step result off), `"both"`."""
  lines = response.split("\n")
  if kind in ("step", "both") and len(lines) > 1:
    i = int(rng.integers(len(lines) - 1))
    m = _STEP.match(lines[i])
    a, o, b, c = m.group(1), m.group(2), m.group(3), int(m.group(4))
    lines[i] = f"{a}{o}{b}={c + int(rng.integers(1, 4))}"
  if kind in ("answer", "both"):
    value = int(_FINAL.match(lines[-1]).group(1))
    lines[-1] = f"#### {value + int(rng.integers(1, 10))}"
  return "\n".join(lines)


def make_dataset(rng: np.random.Generator, n: int, difficulty: Difficulty):
  """`n` examples `{"prompt", "response"}` with fresh problems and random derivations."""
  out = []
  for _ in range(n):
    op, operands = sample_problem(rng, difficulty)
    out.append({"prompt": make_prompt(op, operands),
                "response": expert_derivation(rng, op, operands)})
  return out


def checker(prompt: str, reference: str, response: str) -> tuple[float, bool]:
  """`(score, correct)` in the form of `irl_jax.train.generation`'s checkers (exact from the
  prompt alone: `reference` is unused)."""
  del reference
  s = check(prompt, response)
  return s.score, s.correct
