"""Tests for irl_jax/data/tokenizers.py: the character-level tokenizer, characters per token."""

import sys
import types
import unicodedata

import hypothesis
import pytest
import tokenizers
import transformers
from hypothesis import strategies as st
from tokenizers import models, normalizers, pre_tokenizers, trainers

from irl_jax.data import char_tokenizer, max_chars_per_token
from irl_jax.data import tokenizers as tokenizer_lib


def test_ids_by_hand():
  tok = char_tokenizer("ab c\n")
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token] == [
      "<pad>", "<bos>", "<eos>", "<unk>"
  ]
  assert len(tok) == 4 + 5
  # a=4, b=5, " "=6, c=7, "\n"=8; "z" is unknown; no special tokens are added.
  assert tok.encode("ab c\nz", add_special_tokens=False) == [4, 5, 6, 7, 8, 3]
  assert tok("ab")["input_ids"] == [4, 5]
  assert tok.encode("", add_special_tokens=False) == []


def test_special_token_text_is_just_characters():
  tok = char_tokenizer("<eos>")
  # "<", "e", "o", "s", ">" = 4..8; the text never becomes the EOS id 2.
  assert tok.encode("<eos>", add_special_tokens=False) == [4, 5, 6, 7, 8]


def test_decode_concatenates_characters():
  tok = char_tokenizer("ab c\n")
  assert tok.decode([1, 4, 6, 5, 8, 7, 2, 0]) == "<bos>a b\nc<eos><pad>"
  assert tok.decode([1, 4, 6, 5, 2, 0], skip_special_tokens=True) == "a b"


def test_save_and_load_with_auto_tokenizer(tmp_path):
  tok = char_tokenizer("0123456789+=\n", model_max_length=64)
  tok.save_pretrained(tmp_path)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  text = "12+30=42\n7"
  assert loaded.encode(text, add_special_tokens=False) == tok.encode(
      text, add_special_tokens=False
  )
  assert loaded.encode(text, add_special_tokens=False)[:3] == [5, 6, 14]
  assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (
      0, 1, 2, 3
  )
  assert loaded.model_max_length == 64
  assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text
  assert loaded.encode("<eos>", add_special_tokens=False) == [3, 3, 3, 3, 3]


@pytest.mark.parametrize(("alphabet", "match"), [("", "non-empty"), ("abca", "repeats")])
def test_bad_alphabet(alphabet, match):
  with pytest.raises(ValueError, match=match):
    char_tokenizer(alphabet)


# --------------------------------------------------------------------------
# max_chars_per_token: a bound that never rejects a text that would fit.

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many.",
    "\n\nHuman: What is a good name for a cat?\n\nAssistant: How about Whiskers?",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u03b1\u03b2\u03b3 \u5b57\u6f22 \U0001f600",
    "====== ------ ======",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " * 4,
]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _trained(model, trainer, *, normalizer=None, pre_tokenizer=None, **fast_kwargs):
  tok = tokenizers.Tokenizer(model)
  if normalizer is not None:
    tok.normalizer = normalizer
  if pre_tokenizer is not None:
    tok.pre_tokenizer = pre_tokenizer
  tok.train_from_iterator(CORPUS * 5, trainer)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **fast_kwargs)


def _gpt2_like():
  return _trained(
      models.BPE(), trainers.BpeTrainer(
          vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
          special_tokens=["<|endoftext|>"],
      ),
      pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
  )


def _qwen_like():
  # NFC, a regex split, then byte-level BPE (Qwen2's pipeline).
  split = pre_tokenizers.Split(
      tokenizers.Regex(r"\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"), behavior="isolated"
  )
  return _trained(
      models.BPE(), trainers.BpeTrainer(
          vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
      ),
      normalizer=normalizers.NFC(),
      pre_tokenizer=pre_tokenizers.Sequence(
          [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
      ),
  )


def _llama_like():
  # SentencePiece BPE converted to tokenizers: "▁" for spaces, byte fallback.
  return _trained(
      models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True),
      trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", *BYTE_TOKENS]),
      normalizer=normalizers.Sequence(
          [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
      ),
  )


def _metaspace_nfkc():
  return _trained(
      models.BPE(unk_token="<unk>"), trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"]),
      normalizer=normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
      pre_tokenizer=pre_tokenizers.Metaspace(),
  )


def _char_with_special_text():
  tok = char_tokenizer("abc<eos>")
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok.backend_tokenizer, bos_token="<bos>", eos_token="<eos>",
      split_special_tokens=False,
  )


BOUNDED = {
    "char": lambda: char_tokenizer("abc \n\u00e9"),
    "char_special_text": _char_with_special_text,
    "gpt2_like": _gpt2_like,
    "qwen_like": _qwen_like,
    "llama_like": _llama_like,
    "metaspace_nfkc": _metaspace_nfkc,
}


@pytest.fixture(scope="module")
def bounded():
  return {name: make() for name, make in BOUNDED.items()}


def test_bound_by_hand(bounded):
  assert max_chars_per_token(bounded["char"]) == 1
  # "<eos>" typed in text is the EOS token when special tokens are not split.
  assert max_chars_per_token(bounded["char_special_text"]) == len("<eos>")
  assert bounded["char_special_text"].encode("a<eos>", add_special_tokens=False) == [4, 2]
  gpt2 = bounded["gpt2_like"]
  longest = max(len(t) for t in gpt2.get_vocab())
  assert max_chars_per_token(gpt2) == longest
  # NFC can compose up to 4 characters into one: the bound allows for it.
  qwen = bounded["qwen_like"]
  assert max_chars_per_token(qwen) == 4 * max(len(t) for t in qwen.get_vocab())


def test_bound_survives_save_and_load(tmp_path, bounded):
  for name in ("char", "llama_like"):
    bounded[name].save_pretrained(tmp_path / name)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / name)
    assert max_chars_per_token(loaded) == max_chars_per_token(bounded[name])


# Characters chosen to stress the bound: multi-byte, composing (NFC turns
# "\u1100\u1161\u11a8" and "\u03b1\u0313\u0300\u0345" into one character each),
# expanding under lower-casing ("\u0130"), unknown to the vocabularies, spaces.
TRICKY = [
    "a", "b", "c", " ", "  ", "\n", "\t", "e\u0301", "\u00e9", "\u1100\u1161\u11a8",
    "\u03b1\u0313\u0300\u0345", "\u0130", "\u5b57", "\U0001f600", "\ufb01", "<eos>", "<unk>",
    "<0x41>", "\u2581", "====", "the ", "quick", "\x00", "\u200b",
]


@pytest.mark.parametrize("name", sorted(BOUNDED))
@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(pieces=st.lists(st.sampled_from(TRICKY), min_size=1, max_size=60))
def test_no_text_has_more_characters_than_the_bound_allows(bounded, name, pieces):
  tok = bounded[name]
  text = "".join(pieces)
  n_tokens = len(tok.encode(text, add_special_tokens=False))
  assert len(text) <= max_chars_per_token(tok) * n_tokens


@pytest.mark.parametrize("name", sorted(BOUNDED))
@pytest.mark.parametrize("unit", ["\u1100\u1161\u11a8", "\u03b1\u0313\u0300\u0345", " ", "a"])
def test_long_runs_stay_within_the_bound(bounded, name, unit):
  tok = bounded[name]
  text = unit * 500
  assert len(text) <= max_chars_per_token(tok) * len(tok.encode(text, add_special_tokens=False))


def test_max_canonical_decomposition_matches_unicodedata():
  longest = max(
      len(unicodedata.normalize("NFD", chr(c)))
      for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000
  )
  assert longest == tokenizer_lib.MAX_CANONICAL_DECOMPOSITION


def _fast(tok, **kwargs):
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _word_level(pre_tokenizer):
  tok = tokenizers.Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizer
  return _fast(tok)


def _bpe(*, normalizer=None, **model_kwargs):
  tok = tokenizers.Tokenizer(models.BPE({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")],
                                        **model_kwargs))
  tok.normalizer = normalizer
  return _fast(tok)


def _with_lstrip_token():
  tok = char_tokenizer("b <mask>")
  fast = _fast(tok.backend_tokenizer)
  fast.add_tokens([transformers.AddedToken("<mask>", lstrip=True)])
  return fast


UNBOUNDED = {
    # An unknown word of any length is one "<unk>".
    "word_level_whitespace": (lambda: _word_level(pre_tokenizers.WhitespaceSplit()), "drops"),
    "word_level_metaspace": (lambda: _word_level(pre_tokenizers.Metaspace()), "whole word"),
    "word_piece": (lambda: _fast(tokenizers.Tokenizer(models.WordPiece(
        {"[UNK]": 0, "a": 1}, unk_token="[UNK]"))), "whole word"),
    # A run of unknown characters is one fused "<unk>".
    "bpe_fused_unk": (lambda: _bpe(unk_token="<unk>", fuse_unk=True), "fuses"),
    # Characters missing from the vocabulary vanish.
    "bpe_no_unk": (lambda: _bpe(), "drops characters"),
    "unigram": (lambda: _fast(tokenizers.Tokenizer(models.Unigram(
        [("<unk>", 0.0), ("a", -1.0)], unk_id=0, byte_fallback=False))), "fuses"),
    # Normalizers that delete characters.
    "strip": (lambda: _bpe(unk_token="<unk>", normalizer=normalizers.Strip()), "Strip"),
    "bert": (lambda: _bpe(unk_token="<unk>", normalizer=normalizers.BertNormalizer()),
             "BertNormalizer"),
    "replace_regex": (lambda: _bpe(unk_token="<unk>", normalizer=normalizers.Replace(
        tokenizers.Regex(" +"), " ")), "Replace"),
    "lstrip_token": (_with_lstrip_token, "whitespace"),
}


@pytest.mark.parametrize("name", sorted(UNBOUNDED))
def test_no_bound_where_none_holds(name):
  make, why = UNBOUNDED[name]
  tok = make()
  assert max_chars_per_token(tok) is None
  bound, reason = tokenizer_lib.chars_per_token_bound(tok)
  assert bound is None and why in reason


def test_the_unbounded_cases_really_are_unbounded():
  # What the `None`s guard against: far more characters than tokens.
  word_level = _word_level(pre_tokenizers.WhitespaceSplit())
  assert word_level.encode("x" * 1000, add_special_tokens=False) == [0]
  fused = _bpe(unk_token="<unk>", fuse_unk=True)
  assert fused.encode("x" * 1000, add_special_tokens=False) == [0]
  assert _with_lstrip_token().encode(" " * 100 + "<mask>", add_special_tokens=False) == [
      len(char_tokenizer("b <mask>"))
  ]


def test_no_bound_without_a_backend_tokenizer():
  assert max_chars_per_token(types.SimpleNamespace(encode=lambda text, **kw: [])) is None
