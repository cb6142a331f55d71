"""Tests for irl_jax/data/pipeline.py's `lm_arrays`: a whole demonstration source as one
unpacked `[N, seq_len]` batch, in source order, encoded exactly as `lm_batches` encodes it."""

import numpy as np
import pytest

import irl_jax.data
from irl_jax.data import BadRowError, NoExamplesError, char_tokenizer, lm_arrays, lm_batches
from irl_jax.data.pipeline import LM_KEYS

TOKENIZER = char_tokenizer("abcdefgh=")
PAD, BOS, EOS = 0, 1, 2
SEQ_LEN = 10


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    s = "".join(rng.choice(list("abcdefgh"), int(rng.integers(1, 4))))
    out.append({"prompt": s + "=", "response": s[::-1], "source": f"rev.jsonl:{i + 1}"})
  return out


def _decode(arrays):
  """`(prompt, response)` of each row, checking the one-example-per-row layout."""
  out = []
  for ids, seg, mask in zip(arrays["input_ids"], arrays["segment_ids"], arrays["loss_mask"],
                            strict=True):
    real = np.flatnonzero(seg)
    assert set(seg[real].tolist()) == {1} and np.array_equal(real, np.arange(real.size))
    assert ids[0] == BOS and ids[real[-1]] == EOS
    first = int(np.argmax(mask))
    out.append((TOKENIZER.decode(ids[1:first].tolist()),
                TOKENIZER.decode(ids[first:real[-1]].tolist())))
  return out


def test_equals_one_unshuffled_lm_batches_batch_in_order():
  examples = _examples(7)
  arrays = lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN)
  batch = next(iter(lm_batches(examples, TOKENIZER, batch_size=len(examples), seq_len=SEQ_LEN,
                               shuffle=False, num_epochs=1)))
  assert set(arrays) == set(batch) == set(LM_KEYS)
  for k in LM_KEYS:
    assert arrays[k].shape == (len(examples), SEQ_LEN), k
    assert arrays[k].dtype == batch[k].dtype, k
    np.testing.assert_array_equal(arrays[k], batch[k], err_msg=k)
  assert _decode(arrays) == [(e["prompt"], e["response"]) for e in examples]
  assert irl_jax.data.lm_arrays is lm_arrays  # exported


def test_rows_keep_source_order_and_batching_options_are_refused():
  examples = _examples(9, seed=1)
  a = lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN)
  assert _decode(a) == [(e["prompt"], e["response"]) for e in examples]
  # Options that would reorder, pack or drop rows are not lm_batches pass-throughs.
  for option in (dict(seed=12345), dict(packing="first_fit"), dict(drop_remainder=True)):
    with pytest.raises(TypeError):
      lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN, **option)


def test_special_id_overrides_are_passed_on():
  examples = _examples(3)
  arrays = lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN, bos_id=3, eos_id=12, pad_id=7)
  assert (arrays["input_ids"][:, 0] == 3).all()
  real = arrays["segment_ids"] > 0
  last = real.sum(1) - 1
  assert (arrays["input_ids"][np.arange(3), last] == 12).all()
  assert (arrays["input_ids"][~real] == 7).all() and (~real).any()


def test_over_long_example_is_named():
  examples = _examples(4)
  examples[2] = {"prompt": "abcdefgh=", "response": "hgfedcba", "source": "rev.jsonl:3"}
  with pytest.raises(BadRowError, match=r"^rev\.jsonl:3: tokenised length") as info:
    lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN)
  assert info.value.reason == "too_long"
  assert f"seq_len = {SEQ_LEN}" in str(info.value)
  # Without a source field the example is named by its index.
  bare = [{k: v for k, v in e.items() if k != "source"} for e in examples]
  with pytest.raises(BadRowError, match=r"^example 2: "):
    lm_arrays(bare, TOKENIZER, seq_len=SEQ_LEN)


def test_skip_keeps_the_good_rows_in_order():
  examples = _examples(6, seed=2)
  long = {"prompt": "abcdefgh=", "response": "hgfedcba"}
  examples[1] = {**long, "source": "rev.jsonl:2"}
  examples[4] = {"prompt": "ab="}  # malformed: no response
  arrays = lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN, on_bad_row="skip")
  kept = [e for i, e in enumerate(examples) if i not in (1, 4)]
  for k in LM_KEYS:
    assert arrays[k].shape == (len(kept), SEQ_LEN), k
  assert (arrays["segment_ids"].max(axis=1) > 0).all()  # no padding rows left
  assert _decode(arrays) == [(e["prompt"], e["response"]) for e in kept]
  reference = lm_arrays(kept, TOKENIZER, seq_len=SEQ_LEN)
  for k in LM_KEYS:
    np.testing.assert_array_equal(arrays[k], reference[k], err_msg=k)
  # The first row bad too: still the kept rows, from the top.
  examples[0] = {**long, "source": "rev.jsonl:1"}
  arrays = lm_arrays(examples, TOKENIZER, seq_len=SEQ_LEN, on_bad_row="skip")
  assert _decode(arrays) == [(e["prompt"], e["response"]) for e in kept[1:]]


def test_empty_and_all_skipped_sources_are_errors():
  with pytest.raises(ValueError, match="lm_arrays: the source has no examples"):
    lm_arrays([], TOKENIZER, seq_len=SEQ_LEN)
  with pytest.raises(NoExamplesError):
    lm_arrays([{"prompt": "abcdefgh=", "response": "hgfedcba"}], TOKENIZER, seq_len=SEQ_LEN,
              on_bad_row="skip")
