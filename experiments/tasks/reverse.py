"""A tiny generated task for smoke runs: reverse a string.

Prompt `"abc="`, response `"cba"`. Demonstrations, preference pairs (the
correct reversal against a corrupted one) and a reward (fraction of correct
characters) all come from one seeded generator, so smoke runs need no files.
"""

from __future__ import annotations

import json
import os

import numpy as np

ALPHABET = "abcdefgh"


def _strings(rng, n, min_len, max_len, alphabet):
  for _ in range(n):
    length = int(rng.integers(min_len, max_len + 1))
    yield "".join(rng.choice(list(alphabet), length))


def _corrupt(rng, text, alphabet):
  chars = list(text)
  i = int(rng.integers(len(chars)))
  chars[i] = alphabet[(alphabet.index(chars[i]) + 1 + int(rng.integers(len(alphabet) - 1)))
                      % len(alphabet)]
  return "".join(chars)


def write_demonstrations(path, *, num_examples, seed, min_len=3, max_len=8, alphabet=ALPHABET):
  """JSONL of `{"prompt": "abc=", "response": "cba"}`."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    for s in _strings(rng, num_examples, min_len, max_len, alphabet):
      f.write(json.dumps({"prompt": s + "=", "response": s[::-1]}) + "\n")
  return path


def write_preferences(path, *, num_examples, seed, min_len=3, max_len=8, alphabet=ALPHABET):
  """JSONL of `{"prompt", "chosen": correct reversal, "rejected": one character wrong}`."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    for s in _strings(rng, num_examples, min_len, max_len, alphabet):
      f.write(json.dumps({"prompt": s + "=", "chosen": s[::-1],
                          "rejected": _corrupt(rng, s[::-1], alphabet)}) + "\n")
  return path


def score(prompt: str, response: str) -> float:
  """Fraction of positions where `response` matches the reversal of the prompt."""
  target = prompt.rstrip("=")[::-1]
  if not target:
    return 0.0
  hits = sum(a == b for a, b in zip(response, target, strict=False))
  return hits / max(len(target), len(response))


def make_reward_fn(tokenizer):
  """`reward_fn(prompt_ids, response_ids, response_mask) -> [N]` for the GRPO sampler."""

  def reward_fn(prompt_ids, response_ids, response_mask):
    out = []
    for p, r, m in zip(prompt_ids, response_ids, response_mask, strict=True):
      prompt = tokenizer.decode([int(t) for t in p if t != tokenizer.pad_token_id],
                                skip_special_tokens=True)
      response = tokenizer.decode([int(t) for t, keep in zip(r, m, strict=True) if keep],
                                  skip_special_tokens=True)
      out.append(score(prompt.replace(" ", ""), response.replace(" ", "")))
    return np.asarray(out, np.float32)

  return reward_fn
