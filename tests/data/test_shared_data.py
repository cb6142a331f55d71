"""Smoke tests on the real slices in /work/shared/data (skipped when it is absent)."""

import itertools
import os

import numpy as np
import pytest

from irl_jax.data import char_tokenizer, formats, lm_batches, preference_batches

ROOT = os.environ.get("IRL_JAX_SHARED_DATA", "/work/shared/data")
N = 50

pytestmark = pytest.mark.skipif(not os.path.isdir(ROOT), reason=f"{ROOT} is absent")


def _first(reader, relative, **kwargs):
  path = os.path.join(ROOT, relative)
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  return list(itertools.islice(reader(path, **kwargs), N)), path


def _tokenizer(examples):
  chars = set()
  for e in examples:
    chars.update(e["prompt"])
    for r in e.get("responses", [e.get("response", "")]):
      chars.update(r)
  return char_tokenizer("".join(sorted(chars)))


def test_hh_rlhf():
  examples, path = _first(formats.read_hh_rlhf, "hh_rlhf_harmless/pairs.jsonl")
  assert len(examples) == N
  assert examples[0]["source"] == f"{path}:1"
  for e in examples:
    assert e["prompt"].startswith("\n\nHuman:") and e["prompt"].endswith("\n\nAssistant:")
    assert len(e["responses"]) == 2 and all(r.strip() for r in e["responses"])
  batches = list(preference_batches(examples, _tokenizer(examples), batch_size=8,
                                    buckets=[512, 1024, 2048, 4096], seed=0))
  assert sum(int(b["rank_mask"][:, 0].sum()) for b in batches) == N


def test_hh_rlhf_bad_rows_in_the_whole_slice():
  # Measured on the 1,800-row slice: four pairs whose chosen final turn is a
  # lone space, two whose dialogues differ before the last turn, and no pair
  # whose two final turns are the same text ("identical_responses").
  path = os.path.join(ROOT, "hh_rlhf_harmless/pairs.jsonl")
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  counts = formats.RowCounts()
  examples = list(formats.read_hh_rlhf(path, on_bad_row="skip", counts=counts))
  assert (counts.read, counts.kept, len(examples)) == (1800, 1794, 1794)
  assert counts.skipped == {"empty_response": 4, "no_shared_prompt": 2}
  assert counts.first_skipped == {
      "empty_response": f"{path}:87", "no_shared_prompt": f"{path}:1255"
  }
  assert all(len(set(e["responses"])) == 2 for e in examples)


def test_gsm8k():
  examples, _ = _first(formats.read_gsm8k, "gsm8k/train.jsonl")
  assert len(examples) == N
  for e in examples:
    assert e["prompt"] == formats.GSM8K_TEMPLATE.format(question=e["question"])
    last_line = e["response"].rstrip().rsplit("\n", 1)[-1]
    assert last_line.replace(",", "") == f"#### {e['final_answer']}"
    float(e["final_answer"])
  assert examples[0]["final_answer"] == "72" and "<<48/2=24>>" in examples[0]["response"]
  batches = list(lm_batches(examples, _tokenizer(examples), batch_size=4, seq_len=2048,
                            packing="first_fit", seed=0))
  assert sum(int(b["segment_ids"].max(axis=1).sum()) for b in batches) == N
  assert all(not b["loss_mask"][b["positions"] == 0].any() for b in batches)


@pytest.mark.parametrize("name", ["agreeableness", "desire-for-acquiring-power"])
def test_model_written_evals(name):
  examples, _ = _first(formats.read_model_written_evals,
                          f"model_written_evals/{name}.jsonl")
  assert len(examples) == N
  for e in examples:
    assert sorted(e["responses"]) == [" No", " Yes"]
    assert 0.0 <= e["label_confidence"] <= 1.0
  flipped, _ = _first(formats.read_model_written_evals, f"model_written_evals/{name}.jsonl",
                      chosen_matches_behavior=False)
  assert all(f["responses"] == e["responses"][::-1] for e, f in zip(examples, flipped,
                                                                     strict=True))
  assert np.mean([e["responses"][0] == " Yes" for e in examples]) not in (0.0, 1.0)
