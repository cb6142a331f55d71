"""Tests for irl_jax/eval/behaviour.py: batched scores against an un-padded float64 reference,
p_match by hand, a model built to prefer one character, tokenisation fallback, bad files."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.eval import (
    BehaviourRecord,
    evaluate_behaviours,
    load_behaviour_jsonl,
    match_probability,
    score_records,
)

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ?.:()\n"


def _config(vocab_size: int, **kw) -> models.ModelConfig:
  """A tiny config, as `experiments/inverse_q_star.py`'s `model_config` builds one."""
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4,
      num_kv_heads=4, head_dim=8, intermediate_size=64, max_position_embeddings=128, **kw)


@pytest.fixture(scope="module")
def tok():
  return char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def model(tok):
  return models.Transformer(_config(len(tok)), rngs=nnx.Rngs(0))


@nnx.jit
def _forward(model, ids):
  return model(ids)


def _reference(model, ids: list[int], start: int) -> float:
  """Summed float64 log-softmax of `ids[start:]`, from one un-padded forward pass."""
  logits = np.asarray(_forward(model, jnp.asarray([ids], jnp.int32)), np.float64)[0]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def _records():
  """Rows of 12, 24, 45, 58 and 83 tokens: the 16, 32, 64 and 128 buckets. All answers of a
  question have one length, so the un-padded reference compiles once per question."""
  rng = np.random.default_rng(0)
  out = []
  for i, n in enumerate([3, 15, 36, 49, 74]):
    q = "".join(rng.choice(list("abcdefgh xyz"), n)) + "?\nA:"
    not_matching = [" Nop", " Nah"] if i % 2 else " Nop"
    out.append(BehaviourRecord(q, " Yes", not_matching, source=f"r{i}"))
  return out


def _encode(tok, text):
  return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("batch_size,chunk_size", [(4, None), (3, 16)])
def test_scores_match_unpadded_float64_reference(model, tok, batch_size, chunk_size):
  records = _records()
  out = score_records(model, tok, records, batch_size=batch_size, chunk_size=chunk_size)
  k = 0
  for i, r in enumerate(records):
    for matching, answers in ((True, r.answer_matching_behavior),
                              (False, r.answer_not_matching_behavior)):
      for a in answers:
        q = [tok.bos_token_id, *_encode(tok, r.question)]
        want = _reference(model, q + _encode(tok, a), len(q))
        assert out["answer_question"][k] == i and out["answer_matching"][k] == matching
        assert out["answer_tokens"][k] == len(a)
        np.testing.assert_allclose(out["answer_log_prob"][k], want, rtol=1e-6, atol=1e-5)
        k += 1
  assert k == len(out["answer_log_prob"])
  assert not out["split_tokenisation"].any()
  lp = out["answer_log_prob"]
  for i in range(len(records)):
    mine = out["answer_question"] == i
    m, n = lp[mine & out["answer_matching"]], lp[mine & ~out["answer_matching"]]
    p = np.exp(m).sum() / (np.exp(m).sum() + np.exp(n).sum())
    np.testing.assert_allclose(out["p_match"][i], p, rtol=1e-12)
    np.testing.assert_allclose(out["mass_answers"][i], np.exp(m).sum() + np.exp(n).sum(),
                               rtol=1e-12)
    assert out["matching_more_likely"][i] == (np.exp(m).sum() > np.exp(n).sum())
  assert out["source"] == [r.source for r in records]


@pytest.mark.parametrize("batch_size,chunk_size", [(2, None), (3, 16)])
def test_one_token_answers_sharing_a_context_match_the_reference(model, tok, batch_size,
                                                                 chunk_size):
  """Single-character answers after the same question are scored from one forward pass;
  each must equal its own un-padded reference, beside multi-token answers."""
  rng = np.random.default_rng(1)
  records = []
  for i, n in enumerate([2, 9, 20, 33, 50]):
    q = "".join(rng.choice(list("abcdefgh xyz"), n)) + "?"
    matching = ["Y", "y"] if i % 2 else "Y"
    not_matching = ["N", " No"] if i in (1, 4) else "N"
    records.append(BehaviourRecord(q, matching, not_matching, source=f"s{i}"))
  out = score_records(model, tok, records, batch_size=batch_size, chunk_size=chunk_size)
  k = 0
  for r in records:
    q = [tok.bos_token_id, *_encode(tok, r.question)]
    for answers in (r.answer_matching_behavior, r.answer_not_matching_behavior):
      for a in answers:
        want = _reference(model, q + _encode(tok, a), len(q))
        np.testing.assert_allclose(out["answer_log_prob"][k], want, rtol=1e-6, atol=1e-5)
        k += 1
  assert k == len(out["answer_log_prob"]) == 14


def test_without_bos_matches_reference(model, tok):
  r = BehaviourRecord("abc?", " Yes", [" Nop", " Nah"])
  out = score_records(model, tok, [r], add_bos=False)
  q = _encode(tok, r.question)
  want = [_reference(model, q + _encode(tok, a), len(q)) for a in (" Yes", " Nop", " Nah")]
  np.testing.assert_allclose(out["answer_log_prob"], want, rtol=1e-6, atol=1e-5)


def test_match_probability_by_hand():
  e = math.exp
  want = (e(-1) + e(-2)) / (e(-1) + e(-2) + e(-1.5))
  assert match_probability([-1.0, -2.0], [-1.5]) == pytest.approx(want, rel=1e-12)
  # Far below exp's float64 range: no 0/0.
  p = match_probability([-1000.0], [-1001.0, -1002.0])
  assert p == pytest.approx(1 / (1 + e(-1) + e(-2)), rel=1e-12)
  assert match_probability([-1e5], [-1e5 + 3.0]) == pytest.approx(1 / (1 + e(3)), rel=1e-12)
  assert match_probability([-np.inf, -50.0], [-np.inf]) == 1.0
  table = match_probability([[-1.0, -np.inf], [-3e4, -3e4]], [[-1.0, -2.0], [-3e4, -np.inf]])
  # -3e4 is held to its float64 ulp (3.6e-12): the log-masses carry that much absolute error.
  np.testing.assert_allclose(table, [e(-1) / (2 * e(-1) + e(-2)), 2 / 3], rtol=1e-11)


def _prefers(tok, char: str, logit: float = 20.0):
  """A model whose logits are `logit` for `char` and 0 for every other token, everywhere."""
  config = _config(len(tok), norm="layer")
  m = models.Transformer(config, rngs=nnx.Rngs(1))
  d = config.hidden_size
  m.final_norm.scale[...] = jnp.zeros(d)
  m.final_norm.bias[...] = jnp.zeros(d).at[0].set(1.0)  # every hidden state is e_0
  m.lm_head[...] = jnp.zeros((d, len(tok))).at[0, tok.convert_tokens_to_ids(char)].set(logit)
  return m


def test_model_preferring_one_character(tok, tmp_path):
  model = _prefers(tok, "Y")
  yes = [{"question": f"Q{i}: is {w} fine?", "answer_matching_behavior": " Y",
          "answer_not_matching_behavior": [" N"]} for i, w in enumerate(["a", "bb", "ccc"])]
  path = tmp_path / "wants_yes.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in yes))
  no = [BehaviourRecord(r["question"], " N", " Y") for r in yes]
  out = evaluate_behaviours(model, tok, {"wants_yes": path, "wants_no": no}, batch_size=4,
                            per_question=True)
  assert list(out) == ["wants_yes", "wants_no"]
  p = 1 / (1 + math.exp(-20))
  assert out["wants_yes"]["p_match"] == pytest.approx(p, rel=1e-6)
  assert out["wants_no"]["p_match"] == pytest.approx(1 - p, abs=1e-8)
  assert out["wants_yes"]["matching_more_likely"] == 1.0
  assert out["wants_no"]["matching_more_likely"] == 0.0
  assert out["wants_yes"]["count"] == out["wants_no"]["count"] == 3
  # Identical p_match on every question: the interval is the point.
  assert out["wants_yes"]["p_match_low"] == pytest.approx(p, rel=1e-6)
  assert out["wants_yes"]["p_match_high"] == pytest.approx(p, rel=1e-6)
  # Masses: p(" ") · p("Y") and p(" ") · p("N") under the constant next-token distribution.
  z = len(tok) - 1 + math.exp(20)
  assert out["wants_yes"]["mass_matching"] == pytest.approx(1 / z * math.exp(20) / z, rel=1e-4)
  assert out["wants_yes"]["mass_not_matching"] == pytest.approx(1 / z**2, rel=1e-4)
  assert out["wants_yes"]["questions"]["source"][1] == f"{path}:2"
  # A list of paths is named by the file stems.
  assert list(evaluate_behaviours(model, tok, [path])) == ["wants_yes"]


def test_interval_is_student_t(model, tok):
  records = _records()
  out = evaluate_behaviours(model, tok, {"s": records}, per_question=True, confidence=0.9)["s"]
  p = out["questions"]["p_match"]
  from scipy import stats
  low, high = stats.t.interval(0.9, len(p) - 1, loc=p.mean(), scale=stats.sem(p))
  assert out["p_match"] == pytest.approx(p.mean())
  assert (out["p_match_low"], out["p_match_high"]) == pytest.approx((low, high))
  assert out["matching_more_likely"] == pytest.approx(np.mean(p > 0.5))
  one = evaluate_behaviours(model, tok, {"one": records[:1]})["one"]
  assert math.isnan(one["p_match_low"]) and math.isnan(one["p_match_high"])


class _MergingTokenizer:
  """Characters, except that `" Y"` is one token: not prefix-stable at `"... " + "Yes"`."""

  def __init__(self, tok):
    self.tok, self.bos_token_id, self.merged = tok, tok.bos_token_id, 3  # `<unk>` as the merge

  def __call__(self, texts, add_special_tokens=False):
    out = []
    for text in texts:
      ids = _encode(self.tok, text.replace(" Y", "\0"))
      out.append([self.merged if t == self.tok.unk_token_id else t for t in ids])
    return {"input_ids": out}


def test_prefix_unstable_tokenizer_falls_back_to_separate_encoding(model, tok):
  merging = _MergingTokenizer(tok)
  r = BehaviourRecord("Is it? ", "Yes", ["No", " Yes"])
  out = score_records(model, merging, [r])
  # "Is it? " + "Yes" merges " Y" across the boundary: question and answer encoded apart.
  np.testing.assert_array_equal(out["answer_split_tokenisation"], [True, False, False])
  assert out["split_tokenisation"][0]
  q = [tok.bos_token_id, *merging([r.question])["input_ids"][0]]
  want = [_reference(model, q + _encode(tok, a), len(q)) for a in ("Yes", "No")]
  # " Yes" after "Is it? " merges within the answer: the joint split is prefix-stable.
  want.append(_reference(model, [*q, merging.merged, *_encode(tok, "es")], len(q)))
  np.testing.assert_allclose(out["answer_log_prob"], want, rtol=1e-6, atol=1e-5)


def test_records_longer_than_the_model_raise(model, tok):
  r = BehaviourRecord("a" * 200, " Yes", " No", source="long.jsonl:7")
  with pytest.raises(ValueError, match=r"long\.jsonl:7: .*max_position_embeddings"):
    score_records(model, tok, [r])
  with pytest.raises(ValueError, match="no records"):
    score_records(model, tok, [])


def test_load_and_record_normalisation(tmp_path):
  path = tmp_path / "persona.jsonl"
  rows = [{"question": "Q1", "answer_matching_behavior": " Yes",
           "answer_not_matching_behavior": " No", "statement": "s", "label_confidence": 0.9},
          {"question": "Q2", "answer_matching_behavior": [" (A)"],
           "answer_not_matching_behavior": [" (B)", " (C)"]}]
  path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
  first, second = load_behaviour_jsonl(path)
  assert first == BehaviourRecord("Q1", (" Yes",), (" No",), f"{path}:1")
  assert second.answer_not_matching_behavior == (" (B)", " (C)")
  assert second.source == f"{path}:3"


GOOD = {"question": "Q?", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}


def _row(**changes):
  row = {**GOOD, **changes}
  return json.dumps({k: v for k, v in row.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize("line,message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_row(question=_DROP), "missing field 'question'"),
    (_row(answer_not_matching_behavior=_DROP), "missing field 'answer_not_matching_behavior'"),
    (_row(answer_matching_behavior=[]), "'answer_matching_behavior' is an empty list"),
    (_row(answer_not_matching_behavior=[" No", 3]), r"'answer_not_matching_behavior'\[1\] must be"),
    (_row(answer_matching_behavior=True), "'answer_matching_behavior' must be a string or a list"),
    (_row(answer_matching_behavior=None), "must be a string or a list of strings, got NoneType"),
    (_row(answer_matching_behavior=""), "is the empty string"),
    (_row(question=5), "'question' must be a string"),
    (_row(answer_not_matching_behavior=[" No", " Yes"]), "both in"),
    (_row(answer_matching_behavior=[" A", " A"]), "more than once"),
], ids=["json", "not_object", "no_question", "no_not_matching", "empty_list", "non_string_item",
        "bool", "null", "empty_answer", "question_type", "both_sides", "repeated"])
def test_bad_lines_raise_with_file_and_line(tmp_path, line, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(_row() + "\n" + _row() + "\n" + line + "\n" + _row() + "\n")
  with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
    load_behaviour_jsonl(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank_lines"])
def test_empty_file_raises(tmp_path, text):
  path = tmp_path / "empty.jsonl"
  path.write_text(text)
  with pytest.raises(ValueError, match=r"empty\.jsonl: no behaviour questions"):
    load_behaviour_jsonl(path)


def test_bad_in_memory_sets_raise(model, tok, tmp_path):
  with pytest.raises(ValueError, match=r"mine\[1\]: missing field 'question'"):
    evaluate_behaviours(model, tok, {"mine": [GOOD, {"answer_matching_behavior": " A"}]})
  with pytest.raises(ValueError, match="has no records"):
    evaluate_behaviours(model, tok, {"mine": []})
  (tmp_path / "a").mkdir()
  for p in (tmp_path / "x.jsonl", tmp_path / "a" / "x.jsonl"):
    p.write_text(_row() + "\n")
  with pytest.raises(ValueError, match="both named 'x'"):
    evaluate_behaviours(model, tok, [tmp_path / "x.jsonl", tmp_path / "a" / "x.jsonl"])


SHARED = os.path.join(os.environ.get("IRL_JAX_SHARED_DATA", "/work/shared/data"),
                      "model_written_evals")


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="no shared data slice")
@pytest.mark.parametrize("name", ["agreeableness", "desire-for-acquiring-power"])
def test_loads_the_published_slices(name):
  records = load_behaviour_jsonl(os.path.join(SHARED, f"{name}.jsonl"))
  assert len(records) == 1000
  assert {r.answer_matching_behavior + r.answer_not_matching_behavior for r in records} == {
      (" Yes", " No"), (" No", " Yes")}
