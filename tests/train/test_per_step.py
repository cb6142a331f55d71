"""Per-step credit (irl_jax.train.per_step) on hand-built cases: steps and prefixes, Monte-Carlo
step values from a scripted rollout, the first pit and advantages they give, token step ids."""

import numpy as np
import pytest

from irl_jax import losses
from irl_jax.train import per_step


def test_split_steps_and_prefixes():
  response = "3+5=8\n8+1=9\n#### 9"
  assert per_step.split_steps(response) == ["3+5=8", "8+1=9", "#### 9"]
  assert per_step.split_steps("a\n\nb\n") == ["a", "b"]
  assert per_step.step_prefixes("+ 3 5 1\n", response) == [
      "+ 3 5 1\n3+5=8\n", "+ 3 5 1\n3+5=8\n8+1=9\n"]
  with pytest.raises(ValueError, match="separator"):
    per_step.split_steps(response, separator="")


def _scripted_rollout(table):
  """A rollout whose k successes for each text are given by `table[text]`."""
  calls = []

  def rollout(texts, k):
    calls.append((list(texts), k))
    return np.array([table[t][:k] for t in texts], np.float32)

  return rollout, calls


def test_monte_carlo_values_first_pit_and_advantages():
  # Negative: "3+5=8" is right, "8+1=10" is the wrong step, "#### 10" the wrong answer.
  prompt, response = "+ 3 5 1\n", "3+5=8\n8+1=10\n#### 10"
  table = {prompt: [1, 1, 0, 1],                      # Q̂_{−1}: 3/4, best-of-4: 1
           prompt + "3+5=8\n": [1, 0, 1, 1],           # Q̂_0: 3/4
           prompt + "3+5=8\n8+1=10\n": [0, 0, 0, 0]}   # Q̂_1: 0 (no way back)
  rollout, calls = _scripted_rollout(table)
  values, initial, valid = per_step.monte_carlo_step_values(
      rollout, [prompt], [response], [0.0], k=4, max_steps=4)
  assert len(calls) == 1 and calls[0][1] == 4                 # one batched call
  np.testing.assert_allclose(values, [[0.75, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(initial, [0.75])
  np.testing.assert_array_equal(valid, [[True, True, True, False]])
  adv = losses.step_advantages(values, initial_values=initial, where=valid)
  # A = [0.75 − 0.75, 0 − 0.75, 0 − 0] and the first pit is the wrong step (index 1),
  # not the final answer that also scores 0.
  np.testing.assert_allclose(adv.advantages, [[0.0, -0.75, 0.0, 0.0]])
  assert int(adv.first_pit[0]) == 1
  best, init_best, _ = per_step.monte_carlo_step_values(
      rollout, [prompt], [response], [0.0], k=4, max_steps=4, estimate="best_of_k")
  np.testing.assert_allclose(best, [[1.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(init_best, [1.0])


def test_monte_carlo_values_several_responses_and_outcomes():
  prompts = ["a\n", "b\n"]
  responses = ["x\ny", "z"]            # 2 steps, 1 step (no rollout needed for it)
  table = {"a\n": [1, 0], "a\nx\n": [0, 0], "b\n": [1, 1]}
  rollout, calls = _scripted_rollout(table)
  values, initial, valid = per_step.monte_carlo_step_values(
      rollout, prompts, responses, [0.0, 1.0], k=2, max_steps=3)
  assert sorted(calls[0][0]) == sorted(table)
  np.testing.assert_allclose(values, [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  np.testing.assert_allclose(initial, [0.5, 1.0])
  np.testing.assert_array_equal(valid, [[True, True, False], [True, False, False]])


def test_monte_carlo_values_bad_inputs():
  rollout, _ = _scripted_rollout({"p": [1], "p1\n": [1]})
  with pytest.raises(ValueError, match="max_steps"):
    per_step.monte_carlo_step_values(rollout, ["p"], ["1\n2\n3"], [0.0], k=1, max_steps=2)
  with pytest.raises(ValueError, match="estimate"):
    per_step.monte_carlo_step_values(rollout, ["p"], ["1"], [0.0], k=1, max_steps=2,
                                     estimate="max")
  with pytest.raises(ValueError, match="agree"):
    per_step.monte_carlo_step_values(rollout, ["p"], ["1", "2"], [0.0], k=1, max_steps=2)
  with pytest.raises(ValueError, match="shape"):
    per_step.monte_carlo_step_values(lambda t, k: np.zeros((1, 3)), ["p"], ["1\n2"], [0.0],
                                     k=1, max_steps=2)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    per_step.monte_carlo_step_values(lambda t, k: np.full((len(t), k), 2.0), ["p"], ["1"],
                                     [0.0], k=1, max_steps=2)


def test_token_step_ids_and_prefix_cut():
  nl = 9
  # prompt tokens (mask 0), then response "a b NL c NL d" (mask 1), then padding.
  ids = np.array([[5, 6, 1, 2, nl, 3, nl, 4, 0]])
  mask = np.array([[0, 0, 1, 1, 1, 1, 1, 1, 0]], bool)
  steps = np.asarray(per_step.token_step_ids(ids, mask, nl))
  np.testing.assert_array_equal(steps, [[-1, -1, 0, 0, 0, 1, 1, 2, -1]])
  # Cutting after step 1 (the first pit) keeps the first two steps and their separators.
  cut = np.asarray(losses.prefix_mask(mask, steps, np.array([1])))
  np.testing.assert_array_equal(cut, [[0, 0, 1, 1, 1, 1, 1, 0, 0]])
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    per_step.token_step_ids(ids[0], mask[0], nl)


def test_monte_carlo_values_refuse_empty_steps():
  # A blank line would make `split_steps` (2 steps) and `token_step_ids` (3 ids) disagree.
  rollout, _ = _scripted_rollout({})
  with pytest.raises(ValueError, match="empty step"):
    per_step.monte_carlo_step_values(rollout, ["p\n"], ["3+5=8\n\n#### 8"], [0.0], k=1,
                                     max_steps=4)
