"""The arithmetic task's checker and the diversity metrics on hand-computed cases."""

import numpy as np
import pytest

from experiments.tasks import arithmetic as task
from irl_jax.eval import bleu, distinct_n, self_bleu

PROMPT = "+ 3 5 8 1\n"


@pytest.mark.parametrize(("response", "validity", "correct"), [
    ("3+8=11\n1+5=6\n11+6=17\n#### 17", 1.0, True),            # a correct derivation
    ("8+1=9\n9+5=14\n3+14=17\n#### 17", 1.0, True),             # another correct order
    ("3+8=12\n1+5=6\n12+6=18\n#### 18", 1 / 3, False),          # wrong sum, then uses it
    ("3+3=6\n6+5=11\n11+8=19\n#### 19", 0.0, False),            # 3 used twice; 6 never valid
    ("#### 17", 0.0, True),                                     # answer without steps
    ("3+8=11\nhello\n1+5=6\n11+6=17\n#### 17", 0.75, True),     # a junk line counts
    ("3+8=11\n1+5=6\n11+6=17", 1.0, False),                     # no final answer
    ("3*8=24\n1+5=6\n24+6=30\n#### 30", 1 / 3, False),          # wrong op; 24 never exists
])
def test_checker_on_hand_written_derivations(response, validity, correct):
  s = task.check(PROMPT, response)
  assert s.step_validity == pytest.approx(validity)
  assert s.correct is correct
  assert s.score == pytest.approx(0.5 * validity + 0.5 * correct)


def test_expert_is_always_right_and_diverse_and_corruptions_are_caught():
  rng = np.random.default_rng(0)
  levels = (task.Difficulty(), task.Difficulty(3, 5, 2, "+"), task.Difficulty(3, 3, 1, "*"))
  for difficulty in levels:
    for _ in range(50):
      op, operands = task.sample_problem(rng, difficulty)
      prompt = task.make_prompt(op, operands)
      response = task.expert_derivation(rng, op, operands)
      assert task.check(prompt, response).score == 1.0, (prompt, response)
      assert task.check(prompt, task.corrupt(rng, response, "answer")).score == 0.5
      assert task.check(prompt, task.corrupt(rng, response, "step")).step_validity < 1
  derivations = {task.expert_derivation(rng, "+", [3, 5, 8, 1]) for _ in range(200)}
  assert len(derivations) > 10  # many correct orders


def test_bleu_hand_computed():
  # p1 = 3/4 (a, b, c match), p2 = 2/3 (ab, bc match), equal lengths: BLEU = sqrt(1/2).
  assert bleu(list("abcd"), [list("abce")], max_n=2) == pytest.approx(0.7071067811865476)
  # One unigram, reference of length 2: brevity penalty exp(1 - 2/1).
  assert bleu(["a"], [["a", "b"]], max_n=1) == pytest.approx(0.36787944117144233)
  # No unigram matches: sacrebleu scores 0 (floor smoothing applies only to higher orders).
  assert bleu(list("ab"), [list("cd")], max_n=1) == 0.0


def test_self_bleu_and_distinct_n_hand_computed():
  assert self_bleu([list("ab"), list("ab")], max_n=2) == pytest.approx(1.0)
  assert self_bleu([list("ab"), list("cd")], max_n=1) == 0.0
  assert distinct_n([list("abab")], 2) == pytest.approx(2 / 3)  # ab, ba, ab
  assert distinct_n([list("abab")], 1) == pytest.approx(0.5)
  assert distinct_n([list("ab"), list("cd")], 2) == pytest.approx(1.0)
  assert distinct_n([[]], 2) == 0.0
  with pytest.raises(ValueError, match="at least 2"):
    self_bleu([list("ab")])
