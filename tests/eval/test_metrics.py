"""Tests for irl_jax/eval/metrics.py: golden values computed by hand, and agreement with the
former hand-written implementations (kept below as oracles) where the definitions coincide."""

import math
import re
import warnings
from collections import Counter

import numpy as np
import pytest

from irl_jax.eval import bleu, distinct_n, rankdata, self_bleu, spearman

# The tokenisation experiments/imitate_language.py scores diversity on (`words`).
_words = re.compile(r"\d+|[+*=#]|\n").findall

# Four sampled derivations for the prompt "+ 3 5 8 1" (the last one wrong).
DERIVATIONS = [
    _words("8+1=9\n9+3=12\n12+5=17\n#### 17"),
    _words("3+5=8\n8+8=16\n16+1=17\n#### 17"),
    _words("5+8=13\n13+1=14\n14+3=17\n#### 17"),
    _words("1+3=4\n4+5=9\n9+8=18\n#### 18"),
]


def _old_ranks(v):
  """Average ranks by their definition: values below, plus the mean position among ties."""
  v = np.asarray(v, np.float64)
  return np.array([np.sum(v < a) + (np.sum(v == a) + 1) / 2 for a in v])


def _old_spearman(x, y):
  """The former hand-written Spearman: Pearson correlation of average ranks."""
  rx, ry = _old_ranks(x) - (len(x) + 1) / 2, _old_ranks(y) - (len(y) + 1) / 2
  return float(np.sum(rx * ry) / np.sqrt(np.sum(rx * rx) * np.sum(ry * ry)))


def _old_bleu(hyp, refs, max_n=4, epsilon=0.1):
  """The former hand-written sentence BLEU (Chen & Cherry smoothing 1, no effective order)."""
  def grams(s, n):
    return Counter(tuple(s[i:i + n]) for i in range(len(s) - n + 1))

  log_p = 0.0
  for n in range(1, max_n + 1):
    h, total = grams(hyp, n), max(len(hyp) - n + 1, 0)
    best = Counter()
    for r in refs:
      best |= grams(r, n)
    matches = sum(min(c, best[g]) for g, c in h.items())
    log_p += math.log((matches or epsilon) / max(total, 1))
  r = min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
  bp = 1.0 if len(hyp) >= r else math.exp(1 - r / len(hyp))
  return bp * math.exp(log_p / max_n)


# -- rank statistics ----------------------------------------------------------------------


def test_rankdata_ties_get_average_rank():
  np.testing.assert_array_equal(rankdata([10, 20, 10, 30]), [1.5, 3, 1.5, 4])
  np.testing.assert_array_equal(rankdata([3.0, 3.0, 3.0]), [2, 2, 2])
  assert rankdata([2, 1]).dtype == np.float64
  assert rankdata([]).shape == (0,)


def test_spearman_golden():
  # Ranks x: 1 2 3 4 5, y: 5 6 7 8 7 -> ranks 1 2 3.5 5 3.5.
  # Centred: [-2 -1 0 1 2] and [-2 -1 0.5 2 0.5]; Σ = 4+1+0+2+1 = 8;
  # Σx² = 10, Σy² = 4+1+0.25+4+0.25 = 9.5; ρ = 8 / sqrt(95) = 0.8207826816681233.
  assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-15)
  # Ties in both: x ranks 1 2.5 2.5 4, y ranks 1.5 1.5 3 4; centred [-1.5 0 0 1.5] and
  # [-1 -1 0.5 1.5]; Σ = 1.5 + 2.25 = 3.75, Σx² = Σy² = 4.5; ρ = 3.75 / 4.5 = 5/6.
  assert spearman([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(5 / 6, abs=1e-15)
  assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0, abs=1e-15)
  assert spearman([0.1, 5.0], [-3, 7]) == pytest.approx(1.0, abs=1e-15)
  # Monotone transforms leave it unchanged.
  assert spearman([1, 10, 100, 1000], [4, 3, 1, 2]) == spearman([1, 2, 3, 4], [4, 3, 1, 2])


def test_spearman_undefined_is_nan_without_warning():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # scipy's ConstantInputWarning must not leak
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(spearman([1.0, 2.0, 3.0], [7.5, 7.5, 7.5]))
    assert np.isnan(spearman([4], [2]))
    assert np.isnan(spearman([], []))
  assert isinstance(spearman([1, 2], [2, 1]), float)


def test_spearman_matches_old_implementation():
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(2, 30))
    x, y = rng.integers(0, 4, n), rng.normal(size=n).round(1)  # many ties
    if len(set(x)) == 1 or len(set(y)) == 1:
      continue
    assert spearman(x, y) == pytest.approx(_old_spearman(x, y), abs=1e-12)
    np.testing.assert_array_equal(rankdata(x), _old_ranks(x))
    np.testing.assert_array_equal(rankdata(y), _old_ranks(y))


def test_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    spearman([1.0, np.nan], [1.0, 2.0])
  with pytest.raises(ValueError, match=r"\(2,\), \(3,\)"):
    spearman([1, 2], [1, 2, 3])
  with pytest.raises(ValueError, match="1-D"):
    rankdata([[1, 2], [3, 4]])
  with pytest.raises(ValueError, match="1-D"):
    spearman([[1, 2]], [[1, 2]])


# -- BLEU ---------------------------------------------------------------------------------


def test_bleu_golden_floor_smoothing_and_brevity_penalty():
  # hyp a b c d vs ref a b x d e (max_n 4): p1 = 3/4 (a b d), p2 = 1/3 (ab),
  # p3 = 0.1/2 and p4 = 0.1/1 (no match: floor ε / count), c = 4 < r = 5: BP = exp(1 - 5/4).
  want = math.exp(-0.25) * (3 / 4 * 1 / 3 * 0.1 / 2 * 0.1 / 1) ** (1 / 4)
  assert want == pytest.approx(0.14643803168582153, abs=1e-15)
  assert bleu(list("abcd"), [list("abxde")]) == pytest.approx(want, abs=1e-12)
  # ε is the floor: ε = 0.2 doubles p3 and p4.
  want = math.exp(-0.25) * (3 / 4 * 1 / 3 * 0.2 / 2 * 0.2 / 1) ** (1 / 4)
  assert bleu(list("abcd"), [list("abxde")], epsilon=0.2) == pytest.approx(want, abs=1e-12)
  # p1 = 3/4 (a b c), p2 = 2/3 (ab bc), equal lengths: sqrt(1/2).
  assert bleu(list("abcd"), [list("abce")], max_n=2) == pytest.approx(math.sqrt(0.5), abs=1e-12)
  # One unigram, reference of length 2: BP = exp(1 - 2/1).
  assert bleu(["a"], [["a", "b"]], max_n=1) == pytest.approx(math.exp(-1), abs=1e-12)


def test_bleu_golden_clipping_closest_reference_and_effective_order():
  # hyp a a b vs refs [a b], [b a b b]: unigrams clipped by the max count in one reference
  # (a: 1, b: 3) -> p1 = 2/3; bigrams aa, ab -> p2 = 1/2; trigram aab unmatched -> 0.1/1;
  # no 4-gram in a 3-token hypothesis: that order is left out (effective order), so the
  # geometric mean is over 3 orders. Both references are 1 token off: the shorter (2) is
  # taken, c = 3 > 2: BP = 1.
  want = (2 / 3 * 1 / 2 * 0.1) ** (1 / 3)
  assert want == pytest.approx(0.3218297948685433, abs=1e-15)
  assert bleu(list("aab"), [list("ab"), list("babb")]) == pytest.approx(want, abs=1e-12)
  # A perfect match shorter than max_n scores 1 (the former code floored the missing orders:
  # 0.1 ** (2/4) = 0.316).
  assert bleu(list("ab"), [list("ab")]) == pytest.approx(1.0, abs=1e-12)


def test_bleu_edge_cases():
  # No token in common: sacrebleu scores 0 (the former code gave ε / 2 = 0.05 here).
  assert bleu(list("ab"), [list("cd")], max_n=1) == 0.0
  assert bleu([], [list("ab")]) == 0.0
  assert bleu(list("ab"), []) == 0.0
  assert bleu(list("ab"), [[]]) == 0.0  # an empty reference matches nothing
  assert 0.0 <= bleu(list("abcde"), [list("abcde")]) <= 1.0
  assert bleu(list("abcde"), [list("abcde")]) == pytest.approx(1.0, abs=1e-12)
  with pytest.raises(ValueError, match="max_n"):
    bleu(list("ab"), [list("ab")], max_n=0)


def test_bleu_tokens_compared_by_equality_only():
  # Token ids (ints, NumPy arrays): same score as the same sequence of strings.
  assert bleu(np.array([5, 6, 7, 9]), [np.array([5, 6, 7, 8])], max_n=2) == pytest.approx(
      bleu(list("abcd"), [list("abce")], max_n=2))
  # A line-break token and a token holding a space are tokens like any other (joining them
  # with spaces unmapped would lose or split them).
  assert bleu(["\n", "7"], [["\n", "7"]], max_n=2) == pytest.approx(1.0, abs=1e-12)
  assert bleu(["a b", "c"], [["a", "b", "c"]], max_n=1) == pytest.approx(
      math.exp(1 - 3 / 2) * 1 / 2, abs=1e-12)
  # 1 and "1" differ; upper and lower case differ.
  assert bleu([1, "1"], [[1, 1]], max_n=1) == pytest.approx(0.5, abs=1e-12)
  assert bleu(["A", "b"], [["a", "b"]], max_n=1) == pytest.approx(0.5, abs=1e-12)


def test_bleu_matches_old_implementation_where_definitions_coincide():
  # They coincide when the hypothesis has at least max_n tokens and shares one with a
  # reference; they differ only when nothing matches or the hypothesis is shorter.
  rng = np.random.default_rng(0)
  checked = 0
  for _ in range(300):
    max_n = int(rng.integers(1, 5))
    hyp = list(rng.integers(0, 4, rng.integers(max_n, 12)))
    refs = [list(rng.integers(0, 4, rng.integers(0, 12))) for _ in range(rng.integers(1, 4))]
    if not set(hyp) & {t for r in refs for t in r}:
      continue
    assert bleu(hyp, refs, max_n=max_n) == pytest.approx(_old_bleu(hyp, refs, max_n), abs=1e-12)
    checked += 1
  assert checked > 250


def test_self_bleu_pinned_on_derivations():
  # Values the former implementation gave (equal up to float rounding).
  assert self_bleu(DERIVATIONS) == pytest.approx(0.5119571316122238, abs=1e-12)
  assert self_bleu(DERIVATIONS, max_n=2) == pytest.approx(0.7532689997724842, abs=1e-12)
  per_sample = [0.6217171101538904, 0.4871622030691689, 0.47821964744966794, 0.4607295657761677]
  for i, s in enumerate(DERIVATIONS):
    assert bleu(s, DERIVATIONS[:i] + DERIVATIONS[i + 1:]) == pytest.approx(per_sample[i], abs=1e-12)


def test_self_bleu_hand_computed():
  assert self_bleu([list("ab"), list("ab")], max_n=2) == pytest.approx(1.0)
  assert self_bleu((list("ab"), list("ab"), list("cd")), max_n=1) == pytest.approx(2 / 3)
  assert self_bleu([list("ab"), list("cd")], max_n=1) == 0.0
  with pytest.raises(ValueError, match="at least 2"):
    self_bleu([list("ab")])


def test_distinct_n_hand_computed():
  assert distinct_n([list("abab")], 2) == pytest.approx(2 / 3)  # ab, ba, ab
  assert distinct_n([list("abab")], 1) == pytest.approx(0.5)
  assert distinct_n([list("ab"), list("cd")], 2) == pytest.approx(1.0)
  assert distinct_n([[]], 2) == 0.0
  assert distinct_n(DERIVATIONS, 3) == pytest.approx(
      len({tuple(s[i:i + 3]) for s in DERIVATIONS for i in range(len(s) - 2)})
      / sum(len(s) - 2 for s in DERIVATIONS))
