"""Tests for irl_jax/data/pipeline.py: tokenisation, masks, buckets, packing, order, state."""

import collections
import copy
import itertools
import json
import os
import pickle
import re
import types

import grain
import hypothesis
import numpy as np
import pytest
from data_test_rows import ALPHABET, DEMONSTRATION_ROWS, PREFERENCE_ROWS, deadline, write_jsonl
from hypothesis import strategies as st

from irl_jax.data import NoExamplesError, builders, formats, pipeline
from irl_jax.data.formats import BadRowError, RowCounts
from irl_jax.data.pipeline import (
    LM_KEYS,
    PREFERENCE_KEYS,
    iterator_state_from_json,
    iterator_state_to_json,
    lm_batches,
    preference_batches,
)

PAD, BOS, EOS = 0, 1, 2
ID = {c: 4 + i for i, c in enumerate(ALPHABET)}
CHAR = {i: c for c, i in ID.items()}


def ids(text: str) -> list[int]:
  return [ID[c] for c in text]


def text(token_ids) -> str:
  return "".join(CHAR[int(i)] for i in token_ids)


def demos(n: int, seed: int = 0) -> list[dict]:
  """`n` distinct demonstrations of varying lengths, each with a source."""
  rng = np.random.default_rng(seed)
  letters = "abcdefghij"
  out = []
  for i in range(n):
    prompt = "".join(rng.choice(list(letters), size=rng.integers(0, 4)))
    response = f"{i}" + "".join(rng.choice(list(letters), size=rng.integers(0, 4)))
    out.append({"prompt": prompt, "response": response, "source": f"demo.jsonl:{i + 1}"})
  return out


def segments(batch) -> list[tuple[str, str]]:
  """`(prompt, response)` of every segment, in row-major order, checking its layout."""
  out = []
  for row in range(batch["input_ids"].shape[0]):
    seg = batch["segment_ids"][row]
    real = np.flatnonzero(seg)
    for k in np.unique(seg[real]):
      span = np.flatnonzero(seg == k)
      assert np.array_equal(span, np.arange(span[0], span[-1] + 1)), "segment not contiguous"
      tokens = batch["input_ids"][row, span]
      mask = batch["loss_mask"][row, span]
      assert tokens[0] == BOS and tokens[-1] == EOS
      n_prompt = int(np.argmax(mask))  # BOS + prompt tokens precede the targets
      assert n_prompt >= 1 and mask[n_prompt:].all() and not mask[:n_prompt].any()
      out.append((text(tokens[1:n_prompt]), text(tokens[n_prompt:-1])))
  return out


def examples_in(batches) -> list[tuple[str, str]]:
  return [s for b in batches for s in segments(b)]


def as_lists(batches):
  return [{k: v.tolist() for k, v in b.items()} for b in batches]


# --------------------------------------------------------------------------
# Tokenisation, masks and buckets.


def test_unpacked_batch_by_hand(tok):
  examples = [{"prompt": "ab", "response": "c"}, {"prompt": "", "response": "de"}]
  [batch] = lm_batches(examples, tok, batch_size=2, buckets=[4, 8], shuffle=False)
  assert tuple(batch) == LM_KEYS
  a, b, c, d, e = ids("abcde")
  np.testing.assert_array_equal(batch["input_ids"], [
      [BOS, a, b, c, EOS, PAD, PAD, PAD],
      [BOS, d, e, EOS, PAD, PAD, PAD, PAD],
  ])
  np.testing.assert_array_equal(batch["segment_ids"], [
      [1, 1, 1, 1, 1, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0, 0],
  ])
  np.testing.assert_array_equal(batch["positions"], [
      [0, 1, 2, 3, 4, 0, 0, 0],
      [0, 1, 2, 3, 0, 0, 0, 0],
  ])
  np.testing.assert_array_equal(batch["loss_mask"], [
      [0, 0, 0, 1, 1, 0, 0, 0],  # response "c" and EOS
      [0, 1, 1, 1, 0, 0, 0, 0],  # empty prompt: BOS is still not a target
  ])
  assert batch["input_ids"].dtype == batch["segment_ids"].dtype == np.int32
  assert batch["positions"].dtype == np.int32 and batch["loss_mask"].dtype == np.bool_


def test_trainer_view_of_targets(tok):
  # The trainer predicts input_ids[:, 1:] where loss_mask[:, 1:]: exactly the
  # response and EOS, each predicted from the previous token of its example.
  [batch] = lm_batches(
      [{"prompt": "xy", "response": "z!"}], tok, batch_size=1, seq_len=8, shuffle=False
  )
  targets = batch["input_ids"][:, 1:][batch["loss_mask"][:, 1:]]
  assert targets.tolist() == [*ids("z!"), EOS]


@pytest.mark.parametrize(
    ("longest_response", "expected_t"),
    [("a", 4), ("ab", 4), ("abc", 8), ("abcdefg", 16), ("abcdefghijklmn", 16)],
)
def test_batch_goes_to_the_smallest_bucket_that_fits(tok, longest_response, expected_t):
  # Row length = BOS + response + EOS = len + 2; buckets given unsorted.
  examples = [{"prompt": "", "response": "a"}, {"prompt": "", "response": longest_response}]
  [batch] = lm_batches(examples, tok, batch_size=2, buckets=[16, 4, 8], shuffle=False)
  assert batch["input_ids"].shape == (2, expected_t)


def test_each_batch_has_its_own_bucket_and_seq_len_is_fixed(tok):
  examples = [{"prompt": "", "response": "a"}] * 2 + [{"prompt": "", "response": "abcdef"}] * 2
  shapes = [b["input_ids"].shape for b in
            lm_batches(examples, tok, batch_size=2, buckets=[4, 8], shuffle=False)]
  assert shapes == [(2, 4), (2, 8)]
  shapes = [b["input_ids"].shape for b in
            lm_batches(examples, tok, batch_size=2, seq_len=12, shuffle=False)]
  assert shapes == [(2, 12), (2, 12)]


def test_final_batch_is_padded_with_empty_rows_or_dropped(tok):
  examples = demos(5)
  batches = list(lm_batches(examples, tok, batch_size=2, seq_len=12, shuffle=False))
  assert [b["input_ids"].shape for b in batches] == [(2, 12)] * 3
  last = batches[-1]
  assert not last["segment_ids"][1].any() and not last["loss_mask"][1].any()
  assert (last["input_ids"][1] == PAD).all()
  assert examples_in(batches) == [(e["prompt"], e["response"]) for e in examples]
  dropped = list(lm_batches(examples, tok, batch_size=2, seq_len=12, shuffle=False,
                            drop_remainder=True))
  assert len(dropped) == 2


def test_data_source_bytes_are_decoded(tok):
  raw = [{"prompt": b"ab", "response": b"c", "source": b"f:1"}]
  [batch] = lm_batches(raw, tok, batch_size=1, seq_len=6, shuffle=False)
  assert batch["input_ids"][0].tolist() == [BOS, *ids("abc"), EOS, PAD]


# --------------------------------------------------------------------------
# Packing.


PACK_EXAMPLES = [
    {"prompt": "ab", "response": "cd"},  # 6 tokens
    {"prompt": "ef", "response": "gh"},  # 6 tokens
    {"prompt": "", "response": "i"},     # 3 tokens
]


def test_first_fit_packing_by_hand(tok):
  [batch] = lm_batches(PACK_EXAMPLES, tok, batch_size=2, seq_len=10, packing="first_fit",
                       shuffle=False)
  a, b, c, d, e, f, g, h, i = ids("abcdefghi")
  # The 3-token example goes back to row 0, the first row with room.
  np.testing.assert_array_equal(batch["input_ids"], [
      [BOS, a, b, c, d, EOS, BOS, i, EOS, PAD],
      [BOS, e, f, g, h, EOS, PAD, PAD, PAD, PAD],
  ])
  np.testing.assert_array_equal(batch["segment_ids"], [
      [1, 1, 1, 1, 1, 1, 2, 2, 2, 0],
      [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
  ])
  np.testing.assert_array_equal(batch["positions"], [
      [0, 1, 2, 3, 4, 5, 0, 1, 2, 0],
      [0, 1, 2, 3, 4, 5, 0, 0, 0, 0],
  ])
  np.testing.assert_array_equal(batch["loss_mask"], [
      [0, 0, 0, 1, 1, 1, 0, 1, 1, 0],
      [0, 0, 0, 1, 1, 1, 0, 0, 0, 0],
  ])


def test_greedy_packing_by_hand(tok):
  [batch] = lm_batches(PACK_EXAMPLES, tok, batch_size=2, seq_len=10, packing="greedy",
                       shuffle=False)
  # Row 0 is closed once example 1 overflows it; example 2 joins row 1.
  np.testing.assert_array_equal(batch["segment_ids"], [
      [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 1, 1, 2, 2, 2, 0],
  ])
  assert segments(batch) == [("ab", "cd"), ("ef", "gh"), ("", "i")]


@pytest.mark.parametrize("packing", ["first_fit", "greedy"])
def test_a_batch_is_emitted_when_nothing_fits(tok, packing):
  batches = list(lm_batches(PACK_EXAMPLES, tok, batch_size=1, seq_len=10, packing=packing,
                            shuffle=False))
  assert [segments(b) for b in batches] == [[("ab", "cd")], [("ef", "gh"), ("", "i")]]


@hypothesis.given(
    lengths=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), min_size=1, max_size=25),
    batch_size=st.integers(1, 3),
    seq_len=st.integers(14, 24),  # the longest example is 14 tokens
    packing=st.sampled_from(["first_fit", "greedy"]),
    num_epochs=st.integers(1, 2),
)
def test_packing_invariants(tok, lengths, batch_size, seq_len, packing, num_epochs):
  examples = [
      {"prompt": "p" * n_prompt, "response": f"{i}." + "r" * n_response}
      for i, (n_prompt, n_response) in enumerate(lengths)
  ]
  batches = list(lm_batches(examples, tok, batch_size=batch_size, seq_len=seq_len,
                            packing=packing, seed=3, num_epochs=num_epochs))
  for batch in batches:
    assert batch["input_ids"].shape == (batch_size, seq_len)
    seg, pos, mask = batch["segment_ids"], batch["positions"], batch["loss_mask"]
    for row in range(batch_size):
      n = int((seg[row] > 0).sum())
      assert (seg[row, n:] == 0).all() and (seg[row, :n] > 0).all()  # padding at the end
      # Segment ids count 1, 2, ...; positions restart at each segment's start.
      starts = np.flatnonzero(np.diff(seg[row, :n], prepend=0) != 0)
      assert seg[row, starts].tolist() == list(range(1, len(starts) + 1))
      expected_pos = np.arange(n) - np.repeat(starts, np.diff([*starts, n]))
      np.testing.assert_array_equal(pos[row, :n], expected_pos)
      assert not mask[row, starts].any() and not mask[row, n:].any()
      # No target is predicted from a token of another example.
      targets = np.flatnonzero(mask[row])
      assert (seg[row, targets - 1] == seg[row, targets]).all()
  # Every example exactly once per epoch: none lost, none duplicated.
  got = collections.Counter(examples_in(batches))
  assert got == collections.Counter(
      {(e["prompt"], e["response"]): num_epochs for e in examples}
  )


# --------------------------------------------------------------------------
# Over-long examples.


@pytest.mark.parametrize(
    ("kwargs", "limit"),
    [(dict(seq_len=8), "seq_len = 8"), (dict(buckets=[4, 8]), "the largest bucket = 8"),
     (dict(seq_len=8, packing="first_fit"), "seq_len = 8"),
     (dict(seq_len=8, packing="greedy"), "seq_len = 8")],
)
def test_over_long_example_raises_with_file_and_line(tmp_path, tok, kwargs, limit):
  path = write_jsonl(tmp_path / "d.jsonl", [
      {"prompt": "ab", "response": "c"}, {"prompt": "abc", "response": "defg"},
  ])
  examples = list(formats.read_demonstrations(path))
  with pytest.raises(BadRowError) as info:
    list(lm_batches(examples, tok, batch_size=1, shuffle=False, **kwargs))
  assert str(info.value).startswith(f"{path}:2: ")
  assert info.value.reason == "too_long"
  assert "tokenised length 9" in str(info.value) and limit in str(info.value)


def test_example_without_source_is_named_by_index(tok):
  with pytest.raises(BadRowError, match=r"^example 1: .*tokenised length 9"):
    list(lm_batches([{"prompt": "", "response": "a"}, {"prompt": "abc", "response": "defg"}],
                    tok, batch_size=1, seq_len=8))


def test_fitting_exactly_is_not_over_long(tok):
  [batch] = lm_batches([{"prompt": "abc", "response": "def"}], tok, batch_size=1, seq_len=8)
  assert batch["segment_ids"].all()


def test_skip_counts_each_over_long_example_once(tok):
  examples = demos(6)
  examples[2] = {**examples[2], "response": "x" * 20}
  examples[4] = {**examples[4], "response": "y" * 20}
  counts = RowCounts()
  ds = lm_batches(examples, tok, batch_size=2, seq_len=10, packing="first_fit", num_epochs=3,
                  on_bad_row="skip", counts=counts)
  assert ds.counts is counts
  got = collections.Counter(examples_in(ds))
  kept = [e for i, e in enumerate(examples) if i not in (2, 4)]
  assert got == collections.Counter({(e["prompt"], e["response"]): 3 for e in kept})
  assert counts.skipped == {"too_long": 2}
  assert counts.first_skipped["too_long"] in {"demo.jsonl:3", "demo.jsonl:5"}


def test_malformed_example_in_a_list(tok):
  with pytest.raises(BadRowError, match=r"^x:1: missing field 'response'"):
    list(lm_batches([{"prompt": "a", "source": "x:1"}], tok, batch_size=1, seq_len=8))
  ds = lm_batches([{"prompt": "a", "source": "x:1"}, {"prompt": "a", "response": "b"}], tok,
                  batch_size=1, seq_len=8, on_bad_row="skip")
  assert examples_in(ds) == [("a", "b")] and ds.counts.skipped == {"missing_field": 1}


class _Recording:
  """A tokenizer that records the length of every text it is asked to encode."""

  def __init__(self, tokenizer, lengths: list[int] | None = None):
    self._tokenizer = tokenizer
    self.lengths = [] if lengths is None else lengths

  def __getattr__(self, name):
    if name == "_tokenizer":
      raise AttributeError(name)
    return getattr(self._tokenizer, name)

  def __deepcopy__(self, memo):
    # The pipeline works on a copy of its tokenizer; the copy records here too.
    return _Recording(copy.deepcopy(self._tokenizer, memo), self.lengths)

  def encode(self, text, **kwargs):
    self.lengths.append(len(text))
    return self._tokenizer.encode(text, **kwargs)


class _CountingSource(list):
  """A list source that counts how often each index is read."""

  def __init__(self, examples):
    super().__init__(examples)
    self.reads = collections.Counter()

  def __getitem__(self, index):
    self.reads[index] += 1
    return super().__getitem__(index)


HUGE = "ab c" * 250_000  # a million characters


def test_huge_text_is_rejected_before_it_is_tokenised(tok):
  recording = _Recording(tok)
  good = demos(3)
  examples = [
      *good, {"prompt": "", "response": HUGE, "source": "h.jsonl:9"},
      {"prompt": HUGE, "response": "a", "source": "h.jsonl:10"},
  ]
  source = _CountingSource(examples)
  ds = lm_batches(source, recording, batch_size=2, seq_len=16, num_epochs=3, on_bad_row="skip")
  got = examples_in(ds)
  assert sorted(got) == sorted(3 * [(e["prompt"], e["response"]) for e in good])
  assert ds.counts.skipped == {"too_long": 2}
  # A skipped example is not even read again in later epochs.
  assert source.reads == {0: 3, 1: 3, 2: 3, 3: 1, 4: 1}
  # One character per token: no text longer than the 14 tokens between BOS and EOS is encoded.
  assert recording.lengths and max(recording.lengths) <= 14
  with pytest.raises(BadRowError) as info:
    list(lm_batches(examples[3:4], recording, batch_size=1, seq_len=16))
  error = info.value
  assert error.reason == "too_long" and str(error).startswith("h.jsonl:9: ")
  assert "tokenised length 1000002 or more" in str(error)
  assert "rejected on its length in characters before tokenisation" in str(error)
  assert max(recording.lengths) <= 14


def test_huge_preference_text_is_rejected_before_it_is_tokenised(tok):
  recording = _Recording(tok)
  examples = [
      {"prompt": HUGE, "chosen": "a", "rejected": "b", "source": "p.jsonl:1"},
      {"prompt": "q", "responses": ["a", "b", HUGE], "source": "p.jsonl:2"},
      {"prompt": "q", "chosen": "a", "rejected": "b", "source": "p.jsonl:3"},
  ]
  ds = preference_batches(examples, recording, batch_size=1, max_responses=3, seq_len=16,
                          on_bad_row="skip")
  assert len(list(ds)) == 1 and ds.counts.skipped == {"too_long": 2}
  assert max(recording.lengths) <= 14
  with pytest.raises(BadRowError, match=r"^p\.jsonl:2: response 2: tokenised length 1000003 or "
                                        r"more .*before tokenisation"):
    list(preference_batches(examples[1:2], recording, batch_size=1, max_responses=3, seq_len=16))
  assert max(recording.lengths) <= 14


# --------------------------------------------------------------------------
# Every example skipped: an error, never an endless search for one.


def _too_long_file(tmp_path, n=3):
  """A file of `n` demonstrations of 10 tokens each (too long for seq_len=8)."""
  path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "abc", "response": "defgh"}] * n)
  return path, list(formats.read_demonstrations(path))


@pytest.mark.parametrize(
    "kwargs",
    [
        # What the trainer asks for: forever, shuffled, full batches, Grain's threads.
        dict(num_epochs=None, shuffle=True, drop_remainder=True),
        dict(num_epochs=None, shuffle=False),
        dict(num_epochs=None, shuffle=True, packing="first_fit", drop_remainder=True),
        dict(num_epochs=None, shuffle=True, read_options=grain.ReadOptions(num_threads=0)),
        dict(num_epochs=None, shuffle=True, read_options=grain.ReadOptions(
            num_threads=2, prefetch_buffer_size=3)),
        dict(num_epochs=3, shuffle=True),
        dict(num_epochs=1, shuffle=False),
    ],
)
def test_every_example_skipped_is_an_error_not_a_hang(tmp_path, tok, kwargs):
  path, examples = _too_long_file(tmp_path)
  examples.append({"prompt": "a", "source": "other.jsonl:4"})  # missing_field
  ds = lm_batches(examples, tok, batch_size=2, seq_len=8, on_bad_row="skip", seed=1, **kwargs)
  with deadline(60, "iterating a pipeline whose every example is skipped"):
    with pytest.raises(NoExamplesError) as info:
      next(iter(ds))
  error = info.value
  assert isinstance(error, ValueError)
  message = str(error)
  # The files, the counts by reason and the first offending row of each reason.
  assert error.sources == tuple(sorted([path, "other.jsonl"]))
  assert path in message and "other.jsonl" in message
  assert error.counts.skipped == {"too_long": 3, "missing_field": 1}
  assert re.search(rf"too_long=3 \(first at {re.escape(path)}:[123]\)", message), message
  assert "missing_field=1 (first at other.jsonl:4)" in message
  assert "all 4 examples of shard 0 of 1" in message
  assert ds.counts.skipped == {"too_long": 3, "missing_field": 1}


def test_every_preference_skipped_is_an_error(tok):
  examples = [
      {"prompt": "q", "chosen": "a", "rejected": "abcdefghijk", "source": "p.jsonl:1"},
      {"prompt": "q", "responses": ["a", "b", "c"], "source": "p.jsonl:2"},
  ]
  ds = preference_batches(examples, tok, batch_size=2, seq_len=8, num_epochs=None,
                          drop_remainder=True, on_bad_row="skip")
  with deadline(60, "iterating preferences whose every example is skipped"):
    with pytest.raises(NoExamplesError, match=r"^p\.jsonl: .*too_long=1 \(first at p\.jsonl:1\)"):
      next(iter(ds))


def test_examples_without_a_file_are_named_in_the_error(tok):
  ds = lm_batches([{"prompt": "abcdefgh", "response": "i"}] * 2, tok, batch_size=1, seq_len=8,
                  num_epochs=None, on_bad_row="skip")
  with deadline(60, "iterating a pipeline whose every example is skipped"):
    with pytest.raises(NoExamplesError, match=r"too_long=2 \(first at example [01]\)"):
      next(iter(ds))


def test_only_the_shard_without_examples_fails(tok):
  examples = demos(6)
  for i in (1, 3, 5):  # shard 1 of 2
    examples[i] = {**examples[i], "response": "x" * 20}
  kw = dict(batch_size=2, seq_len=12, num_epochs=None, drop_remainder=True, on_bad_row="skip",
            shard_count=2)
  with deadline(60, "iterating shards"):
    good = list(itertools.islice(lm_batches(examples, tok, shard_index=0, **kw), 5))
    assert len(good) == 5
    with pytest.raises(NoExamplesError, match="all 3 examples of shard 1 of 2 were skipped"):
      next(iter(lm_batches(examples, tok, shard_index=1, **kw)))


def test_one_kept_example_among_many_skipped_is_enough(tok):
  examples = [{"prompt": "", "response": "x" * 20, "source": f"l.jsonl:{i}"} for i in range(30)]
  examples[17] = {"prompt": "", "response": "ok", "source": "l.jsonl:17"}
  ds = lm_batches(examples, tok, batch_size=4, seq_len=8, num_epochs=None, drop_remainder=True,
                  on_bad_row="skip")
  with deadline(60, "iterating a pipeline with one kept example"):
    batches = list(itertools.islice(ds, 3))
  assert examples_in(batches) == [("", "ok")] * 12
  assert ds.counts.skipped == {"too_long": 29}


def test_every_built_example_too_long_names_the_file(tmp_path, tok):
  # Good rows for the build, all too long for the pipeline: the trainer's path.
  path, _ = _too_long_file(tmp_path)
  source = builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds",
                            on_bad_row="skip")
  ds = lm_batches(source, tok, batch_size=2, seq_len=8, num_epochs=None, shuffle=True,
                  drop_remainder=True, on_bad_row="skip")
  with deadline(60, "iterating a built source whose every example is skipped"):
    with pytest.raises(NoExamplesError) as info:
      next(iter(ds))
  assert info.value.sources == (os.path.abspath(path),)
  assert f"too_long=3 (first at {os.path.abspath(path)}:" in str(info.value)


def test_no_examples_error_pickles():
  counts = RowCounts(read=2)
  counts.skip(BadRowError("f.jsonl:1", "too_long", "long"))
  error = NoExamplesError(["f.jsonl"], "all 2 examples were skipped", counts)
  again = pickle.loads(pickle.dumps(error))
  assert (again.sources, str(again), again.counts.skipped) == (
      error.sources, str(error), error.counts.skipped
  )


# --------------------------------------------------------------------------
# Preferences.


def test_preference_batch_by_hand(tok):
  examples = [
      {"prompt": "a", "chosen": "b", "rejected": "cd"},
      {"prompt": "", "responses": ["e", "f", "gh"]},
  ]
  [batch] = preference_batches(examples, tok, batch_size=3, max_responses=3, buckets=[4, 6],
                               shuffle=False)
  assert tuple(batch) == PREFERENCE_KEYS
  a, b, c, d, e, f, g, h = ids("abcdefgh")
  np.testing.assert_array_equal(batch["input_ids"], [
      [[BOS, a, b, EOS, PAD, PAD], [BOS, a, c, d, EOS, PAD], [PAD] * 6],
      [[BOS, e, EOS, PAD, PAD, PAD], [BOS, f, EOS, PAD, PAD, PAD], [BOS, g, h, EOS, PAD, PAD]],
      [[PAD] * 6] * 3,  # padding row of the short final batch
  ])
  np.testing.assert_array_equal(batch["segment_ids"], [
      [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0] * 6],
      [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]],
      [[0] * 6] * 3,
  ])
  np.testing.assert_array_equal(batch["positions"], [
      [[0, 1, 2, 3, 0, 0], [0, 1, 2, 3, 4, 0], [0] * 6],
      [[0, 1, 2, 0, 0, 0], [0, 1, 2, 0, 0, 0], [0, 1, 2, 3, 0, 0]],
      [[0] * 6] * 3,
  ])
  np.testing.assert_array_equal(batch["loss_mask"], [
      [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0] * 6],
      [[0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]],
      [[0] * 6] * 3,
  ])
  np.testing.assert_array_equal(batch["rank_mask"], [[1, 1, 0], [1, 1, 1], [0, 0, 0]])
  assert batch["rank_mask"].dtype == np.bool_ and batch["input_ids"].dtype == np.int32


def test_pair_forms_agree_and_chosen_is_first(tok):
  pair = [{"prompt": "q", "chosen": "good", "rejected": "bad"}]
  ranking = [{"prompt": "q", "responses": ["good", "bad"]}]
  kw = dict(batch_size=1, seq_len=10, shuffle=False)
  [x] = preference_batches(pair, tok, **kw)
  [y] = preference_batches(ranking, tok, **kw)
  assert as_lists([x]) == as_lists([y])
  assert x["input_ids"].shape == (1, 2, 10)
  assert text(x["input_ids"][0, 0, 2:6]) == "good"


def test_preference_errors_name_the_source(tok):
  too_many = [{"prompt": "q", "responses": ["a", "b", "c"], "source": "p.jsonl:7"}]
  with pytest.raises(BadRowError, match=r"^p.jsonl:7: 3 ranked responses exceed max_responses"):
    list(preference_batches(too_many, tok, batch_size=1, seq_len=10))
  too_long = [{"prompt": "q", "responses": ["a", "bcdefghij"], "source": "p.jsonl:8"}]
  with pytest.raises(BadRowError, match=r"^p.jsonl:8: response 1: tokenised length 12"):
    list(preference_batches(too_long, tok, batch_size=1, seq_len=10))
  ds = preference_batches(too_many + too_long + [{"prompt": "q", "chosen": "a", "rejected": "b"}],
                          tok, batch_size=1, seq_len=10, on_bad_row="skip")
  assert len(list(ds)) == 1
  assert ds.counts.skipped == {"too_many_responses": 1, "too_long": 1}


@pytest.mark.parametrize(
    ("example", "detail"),
    [
        ({"prompt": "q", "chosen": "ab", "rejected": "ab"},
         "responses 0 and responses 1 are the same text"),
        ({"prompt": "q", "responses": ["a", "b", "a"]},
         "responses 0 and responses 2 are the same text"),
        ({"prompt": "q", "responses": [b"b", "a", "b"]},
         "responses 0 and responses 2 are the same text"),
        # Different text, the same tokens: both characters are unknown to the tokenizer.
        ({"prompt": "q", "chosen": "\u00e9", "rejected": "\u00fc"},
         "responses 0 and 1 tokenise to the same ids"),
    ],
)
def test_degenerate_preferences_are_bad_rows(tok, example, detail):
  example = {**example, "source": "p.jsonl:3"}
  kw = dict(batch_size=1, max_responses=3, seq_len=10)
  with pytest.raises(BadRowError, match=rf"^p\.jsonl:3: {detail}") as info:
    list(preference_batches([example], tok, **kw))
  assert info.value.reason == "identical_responses"
  ds = preference_batches([example, {"prompt": "q", "chosen": "a", "rejected": "b"}], tok,
                          on_bad_row="skip", **kw)
  assert len(list(ds)) == 1 and ds.counts.skipped == {"identical_responses": 1}


def test_preference_files_through_the_pipeline(tmp_path, tok):
  path = write_jsonl(tmp_path / "p.jsonl", PREFERENCE_ROWS)
  examples = list(formats.read_preferences(path))
  [batch] = preference_batches(examples, tok, batch_size=2, max_responses=3, seq_len=16,
                               shuffle=False)
  assert batch["rank_mask"].tolist() == [[True, True, False], [True, True, True]]
  assert text(batch["input_ids"][1, 2, 6:7]) == "1"


# --------------------------------------------------------------------------
# Order: seeds, epochs, shards.


def _run(tok, examples, **kwargs):
  kwargs = {"batch_size": 3, "seq_len": 12, **kwargs}
  return as_lists(lm_batches(examples, tok, **kwargs))


def test_same_seed_same_batches_different_seed_different_order(tok):
  examples = demos(30)
  first = _run(tok, examples, seed=7)
  assert first == _run(tok, examples, seed=7)
  assert first != _run(tok, examples, seed=8)
  # A different order of the same examples.
  order = lambda seed: examples_in(lm_batches(examples, tok, batch_size=3, seq_len=12, seed=seed))
  assert order(7) != order(8) and sorted(order(7)) == sorted(order(8))


def test_no_shuffle_keeps_source_order(tok):
  examples = demos(7)
  got = examples_in(lm_batches(examples, tok, batch_size=3, seq_len=12, shuffle=False))
  assert got == [(e["prompt"], e["response"]) for e in examples]


def test_epochs_are_reshuffled_and_complete(tok):
  examples = demos(12)
  got = examples_in(lm_batches(examples, tok, batch_size=4, seq_len=12, num_epochs=2, seed=1))
  everything = sorted((e["prompt"], e["response"]) for e in examples)
  assert sorted(got[:12]) == everything and sorted(got[12:]) == everything
  assert got[:12] != got[12:]


def test_repeat_forever(tok):
  it = iter(lm_batches(demos(3), tok, batch_size=2, seq_len=12, num_epochs=None))
  assert len([next(it) for _ in range(10)]) == 10


@pytest.mark.parametrize("n", [10, 11])
@pytest.mark.parametrize("packing", [None, "first_fit"])
def test_shards_are_disjoint_and_cover_the_epoch(tok, n, packing):
  examples = demos(n)
  shards = [
      examples_in(lm_batches(examples, tok, batch_size=2, seq_len=12, packing=packing, seed=5,
                             shard_index=i, shard_count=2))
      for i in range(2)
  ]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted((e["prompt"], e["response"]) for e in examples)
  assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_default_shard_is_this_process(tok):
  # On one CPU process: jax.process_index() == 0, jax.process_count() == 1.
  examples = demos(9)
  assert _run(tok, examples) == _run(tok, examples, shard_index=0, shard_count=1)


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard(tok, index, count):
  with pytest.raises(ValueError, match="shard_index"):
    lm_batches(demos(4), tok, batch_size=1, seq_len=12, shard_index=index, shard_count=count)


def test_empty_shard_is_an_error(tok):
  with pytest.raises(ValueError, match="shard 2 of 3 has no examples"):
    lm_batches(demos(2), tok, batch_size=1, seq_len=12, shard_index=2, shard_count=3)


# --------------------------------------------------------------------------
# Checkpointable iterators.


PIPELINES = {
    "buckets": lambda tok, ex: lm_batches(ex, tok, batch_size=3, buckets=[6, 9, 12], seed=4,
                                          num_epochs=2),
    "first_fit": lambda tok, ex: lm_batches(ex, tok, batch_size=2, seq_len=16,
                                            packing="first_fit", seed=4, num_epochs=2),
    "greedy": lambda tok, ex: lm_batches(ex, tok, batch_size=2, seq_len=16, packing="greedy",
                                         seed=4, num_epochs=2),
    "preference": lambda tok, ex: preference_batches(
        # "-" keeps one-character (palindromic) responses from being their own rejection.
        [{"prompt": e["prompt"], "chosen": e["response"], "rejected": "-" + e["response"][::-1]}
         for e in ex], tok, batch_size=3, buckets=[6, 9, 12], seed=4, num_epochs=2),
}


@pytest.mark.parametrize("kind", sorted(PIPELINES))
@pytest.mark.parametrize("stop", [1, 4, 7])  # mid-epoch, and past the first epoch
def test_state_json_round_trip_restores_identical_batches(tok, kind, stop):
  examples = demos(17)
  it = iter(PIPELINES[kind](tok, examples))
  for _ in range(stop):
    next(it)
  saved = iterator_state_to_json(it.get_state())
  assert isinstance(saved, str) and json.loads(saved) == iterator_state_from_json(saved)
  rest = as_lists(it)
  assert rest, "the test should stop before the end"
  # A fresh pipeline (as after a restart) restored from JSON continues identically.
  resumed = iter(PIPELINES[kind](tok, examples))
  resumed.set_state(iterator_state_from_json(saved))
  assert as_lists(resumed) == rest
  # And the whole run equals the uninterrupted one.
  full = as_lists(PIPELINES[kind](tok, examples))
  assert full[stop:] == rest


def test_state_rewinds_the_same_iterator(tok):
  it = iter(PIPELINES["first_fit"](tok, demos(17)))
  next(it)
  state = it.get_state()
  ahead = as_lists([next(it), next(it)])
  it.set_state(state)
  assert as_lists([next(it), next(it)]) == ahead


def test_packing_state_is_checked(tok):
  it = iter(PIPELINES["first_fit"](tok, demos(5)))
  with pytest.raises(ValueError, match="first_fit"):
    it.set_state({"packing": "greedy", "parent": {"next_index": 0}})


def test_state_to_json_handles_numpy_and_rejects_objects():
  assert json.loads(iterator_state_to_json({"a": np.int64(3), "b": [np.float32(0.5)]})) == {
      "a": 3, "b": [0.5]
  }
  with pytest.raises(TypeError, match=r"state\['a'\]"):
    iterator_state_to_json({"a": object()})


# --------------------------------------------------------------------------
# Sources from the builders, special ids, arguments.


def test_builder_sources_give_the_same_batches(tmp_path, tok):
  path = write_jsonl(tmp_path / "d.jsonl", DEMONSTRATION_ROWS)
  source = builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds")
  parsed = list(formats.read_demonstrations(os.path.abspath(path)))
  kw = dict(batch_size=2, seq_len=20, packing="first_fit", seed=3, num_epochs=2)
  expected = as_lists(lm_batches(parsed, tok, **kw))
  assert as_lists(lm_batches(source, tok, **kw)) == expected
  assert as_lists(lm_batches(source.data_source, tok, **kw)) == expected  # raw bytes source


def test_special_ids_fall_back_and_override():
  gpt2_like = types.SimpleNamespace(bos_token_id=50256, eos_token_id=50256, pad_token_id=None)
  assert pipeline.special_ids(gpt2_like) == pipeline.SpecialIds(50256, 50256, 50256)
  assert pipeline.special_ids(gpt2_like, pad_id=0).pad == 0
  qwen_like = types.SimpleNamespace(bos_token_id=None, eos_token_id=7, pad_token_id=7)
  with pytest.raises(ValueError, match="no BOS token; pass bos_id"):
    pipeline.special_ids(qwen_like)
  assert pipeline.special_ids(qwen_like, bos_id=7) == pipeline.SpecialIds(7, 7, 7)


def test_override_ids_reach_the_batch(tok):
  [batch] = lm_batches([{"prompt": "", "response": "a"}], tok, batch_size=1, seq_len=4,
                       bos_id=9, eos_id=8, pad_id=7)
  assert batch["input_ids"].tolist() == [[9, ID["a"], 8, 7]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(seq_len=8, buckets=[8]), "exactly one of seq_len"),
        (dict(), "exactly one of seq_len"),
        (dict(buckets=[8], packing="first_fit"), "needs seq_len"),
        (dict(seq_len=8, packing="best"), "packing must be"),
        (dict(buckets=[]), "must not be empty"),
        (dict(seq_len=1), ">= 2"),
        (dict(seq_len=8, batch_size=0), "batch_size"),
        (dict(seq_len=8, seed=-1), "seed"),
        (dict(seq_len=8, num_epochs=0), "num_epochs"),
        (dict(seq_len=8, on_bad_row="drop"), "on_bad_row"),
    ],
)
def test_bad_arguments(tok, kwargs, match):
  kwargs = {"batch_size": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    lm_batches(demos(3), tok, **kwargs)


def test_bad_max_responses(tok):
  with pytest.raises(ValueError, match="max_responses"):
    preference_batches(PREFERENCE_ROWS, tok, batch_size=1, seq_len=8, max_responses=1)
