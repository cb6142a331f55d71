"""Tokenizer helpers: an offline character-level tokenizer; a bound on characters per token.

`char_tokenizer` is used by smoke configs and the arithmetic experiment, where
a real BPE vocabulary would be both unavailable offline and beside the point.

`max_chars_per_token` bounds how many characters of input text one token of a
Hugging Face fast tokenizer can stand for, read off its vocabulary and
pipeline, so that the input pipelines can reject a text that cannot fit in
`T` tokens from its length alone, without tokenising it (a 10 MB line would
otherwise cost gigabytes of memory to find out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3


def char_tokenizer(
    alphabet: str, *, model_max_length: int | None = None
) -> transformers.PreTrainedTokenizerFast:
  """A tokenizer whose tokens are the characters of `alphabet`.

  Ids: `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3, then `alphabet[i]` = 4 + i.
  Every character of the input is one token (newlines and spaces included);
  characters outside the alphabet become `<unk>`. Encoding adds no special
  tokens (the input pipelines add BOS/EOS themselves), and the text `"<eos>"`
  is five characters, never the EOS token (`split_special_tokens=True`), so
  data cannot inject control tokens. Decoding concatenates characters.

  Args:
    alphabet: the characters, each once, in id order.
    model_max_length: stored in the tokenizer config (`None`: unlimited).

  Returns:
    A `transformers.PreTrainedTokenizerFast`; `save_pretrained(dir)` then
    `transformers.AutoTokenizer.from_pretrained(dir)` gives it back.

  Example:
    >>> tok = char_tokenizer("0123456789+=")
    >>> tok.encode("12+3", add_special_tokens=False)
    [5, 6, 14, 7]
  """
  if not isinstance(alphabet, str) or not alphabet:
    raise ValueError(f"char_tokenizer: alphabet must be a non-empty string, got {alphabet!r}")
  seen: set[str] = set()
  duplicates = sorted({c for c in alphabet if c in seen or seen.add(c)})
  if duplicates:
    raise ValueError(f"char_tokenizer: alphabet repeats the characters {duplicates!r}")
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
  vocab.update({c: len(SPECIAL_TOKENS) + i for i, c in enumerate(alphabet)})

  tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  # One piece per character; `[\s\S]` rather than `.` so newlines are pieces too.
  tokenizer.pre_tokenizer = pre_tokenizers.Split(
      tokenizers.Regex(r"[\s\S]"), behavior="isolated"
  )
  tokenizer.decoder = decoders.Fuse()
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer,
      pad_token=PAD,
      bos_token=BOS,
      eos_token=EOS,
      unk_token=UNK,
      split_special_tokens=True,
      padding_side="right",
      **kwargs,
  )


# --------------------------------------------------------------------------
# Characters per token.

# The longest full canonical decomposition of a code point (U+1F82 and its
# kin: 4 code points). Canonical composition (NFC, NFKC) turns each output
# character back from at most this many, and decompositions never shorten
# text, so an NF(K)C-normalised text keeps at least 1/4 of its characters.
MAX_CANONICAL_DECOMPOSITION = 4

# Regular expressions that match exactly one character, whatever it is.
_ONE_CHARACTER = frozenset({
    r"[\s\S]", r"[\S\s]", r"[\w\W]", r"[\W\w]", r"[\d\D]", r"[\D\d]", r"(?s:.)", r"(?s).",
})
# Normalizers and pre-tokenizers that never remove or merge away a character.
_LENGTH_KEEPING_NORMALIZERS = frozenset({"Lowercase", "NFD", "NFKD", "Prepend", "ByteLevel"})
_COMPOSING_NORMALIZERS = frozenset({"NFC", "NFKC"})
_KEEPING_PRE_TOKENIZERS = frozenset({"ByteLevel", "Metaspace", "Digits", "UnicodeScripts"})
_DROPPING_PRE_TOKENIZERS = frozenset({
    "Whitespace", "WhitespaceSplit", "BertPreTokenizer", "CharDelimiterSplit",
})


class _Unbounded(Exception):
  """No bound can be proven; the message says why."""


def max_chars_per_token(tokenizer: Any) -> int | None:
  """The most characters of input text that one token of `tokenizer` can stand for.

  For a text `x` tokenised to `n` tokens, `len(x) <= n * max_chars_per_token`,
  so a text longer than `T * max_chars_per_token` characters cannot fit in `T`
  tokens and can be rejected unread. The bound is read from the tokenizer's
  `backend_tokenizer` (its serialised pipeline) and is conservative, never
  small enough to reject a text that would fit:

  * each model token covers at most as many characters as its vocabulary
    string has (byte-level BPE strings have one character per byte, and a
    character is at least one byte; `"##"`, `"</w>"` and `"<0x41>"` byte
    tokens only overstate), an unfused unknown token one character;
  * a pre-tokenizer that cuts text into single characters (`Split` on
    `[\\s\\S]`, as in `char_tokenizer`) bounds every token to one character;
  * added tokens matched in text cover their own length (special ones are not
    matched when `split_special_tokens` is set);
  * NFC/NFKC can shorten text by at most `MAX_CANONICAL_DECOMPOSITION`, which
    multiplies the bound.

  Returns `None` where no bound holds or none can be proven: an unknown
  tokenizer type; normalizers that can delete characters (`Strip`,
  `StripAccents`, `BertNormalizer`, `Precompiled`, regex `Replace`, ...);
  pre-tokenizers that drop text (`Whitespace`, `BertPreTokenizer`, ...);
  unknown tokens that swallow a whole word (WordPiece, WordLevel) or a run of
  unknown characters (fused `unk` without complete byte fallback); added tokens
  that strip surrounding whitespace. Texts are then tokenised whole.

  Args:
    tokenizer: a Hugging Face fast tokenizer (`transformers.PreTrainedTokenizerFast`).

  Example:
    >>> max_chars_per_token(char_tokenizer("ab"))
    1
  """
  return chars_per_token_bound(tokenizer)[0]


def chars_per_token_bound(tokenizer: Any) -> tuple[int | None, str]:
  """`(max_chars_per_token(tokenizer), why)`: why the bound is `None`, else `""`."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if not isinstance(backend, tokenizers.Tokenizer):
    return None, f"{type(tokenizer).__name__} has no Hugging Face `backend_tokenizer`"
  spec = json.loads(backend.to_str())
  split_special = bool(getattr(tokenizer, "split_special_tokens", False))
  try:
    shrink = _normalizer_shrink(spec.get("normalizer"))
    piece = _piece_bound(spec.get("pre_tokenizer"))
    byte_level = _has_type(spec.get("normalizer"), "ByteLevel") or _has_type(
        spec.get("pre_tokenizer"), "ByteLevel"
    )
    bound = _model_bound(spec["model"], piece, byte_level=byte_level)
    for added in spec.get("added_tokens") or ():
      if added.get("special") and split_special:
        continue  # never matched in text
      if added.get("lstrip") or added.get("rstrip"):
        raise _Unbounded(
            f"added token {added['content']!r} absorbs any run of whitespace beside it"
        )
      bound = max(bound, len(added["content"]))
  except _Unbounded as e:
    return None, str(e)
  return shrink * bound, ""


def _normalizer_shrink(normalizer: Mapping[str, Any] | None) -> int:
  """`s` such that the normalised text has at least `len(text) / s` characters."""
  if normalizer is None:
    return 1
  kind = normalizer["type"]
  if kind == "Sequence":
    return math.prod(_normalizer_shrink(n) for n in normalizer["normalizers"])
  if kind in _LENGTH_KEEPING_NORMALIZERS:
    return 1
  if kind in _COMPOSING_NORMALIZERS:
    return MAX_CANONICAL_DECOMPOSITION
  if kind == "Replace":
    pattern = normalizer["pattern"].get("String")
    if pattern and len(normalizer["content"]) >= len(pattern):
      return 1
  raise _Unbounded(f"the {kind} normalizer can delete characters")


def _piece_bound(pre_tokenizer: Mapping[str, Any] | None) -> int | None:
  """The most characters in one pre-tokenised piece, `None` if unbounded.

  Raises `_Unbounded` for pre-tokenizers that drop characters.
  """
  if pre_tokenizer is None:
    return None
  kind = pre_tokenizer["type"]
  if kind == "Sequence":
    # Later steps only cut pieces further, never join them.
    bounds = [_piece_bound(p) for p in pre_tokenizer["pretokenizers"]]
    finite = [b for b in bounds if b is not None]
    return min(finite) if finite else None
  if kind in _KEEPING_PRE_TOKENIZERS:
    return None
  if kind == "FixedLength":
    return int(pre_tokenizer["length"])
  if kind in ("Split", "Punctuation") and pre_tokenizer.get("behavior") != "Removed":
    if (
        kind == "Split" and pre_tokenizer["behavior"] == "Isolated"
        and not pre_tokenizer.get("invert")
        and pre_tokenizer["pattern"].get("Regex") in _ONE_CHARACTER
    ):
      return 1
    return None
  if kind in _DROPPING_PRE_TOKENIZERS or kind in ("Split", "Punctuation"):
    raise _Unbounded(f"the {kind} pre-tokenizer drops characters")
  raise _Unbounded(f"unknown pre-tokenizer {kind}")


def _has_type(step: Mapping[str, Any] | None, kind: str) -> bool:
  """Whether a normalizer or pre-tokenizer (or a step of its sequence) is of `kind`."""
  if step is None:
    return False
  steps = step.get("normalizers") or step.get("pretokenizers") or ()
  return step["type"] == kind or any(_has_type(s, kind) for s in steps)


def _model_bound(model: Mapping[str, Any], piece: int | None, *, byte_level: bool) -> int:
  """The most characters one model token covers, given pieces of at most `piece` characters.

  `byte_level`: the text reaches the model as byte-level characters (GPT-2's
  256-character alphabet).
  """
  kind = model["type"]
  bound: int | None = None
  why = ""
  if kind in ("BPE", "Unigram"):
    if kind == "BPE":
      vocab = set(model["vocab"])
      has_unk = model.get("unk_token") is not None
      fused_unk = has_unk and bool(model.get("fuse_unk"))
    else:
      vocab = {token for token, _ in model["vocab"]}
      has_unk = model.get("unk_id") is not None
      fused_unk = has_unk  # Unigram always fuses consecutive unknown characters
    # Where every character the model can meet is in the vocabulary (as itself
    # or as byte tokens), the unknown token is never used.
    all_known = (
        bool(model.get("byte_fallback")) and {f"<0x{b:02X}>" for b in range(256)} <= vocab
    ) or (byte_level and set(pre_tokenizers.ByteLevel.alphabet()) <= vocab)
    if all_known or (has_unk and not fused_unk):
      bound = max(max(map(len, vocab), default=1), 1)  # an unfused unk covers 1
    elif has_unk:
      why = f"the {kind} model fuses a run of unknown characters into one token"
    else:
      why = f"the {kind} model drops characters missing from its vocabulary"
  elif kind in ("WordLevel", "WordPiece"):
    why = f"the {kind} model's unknown token covers a whole word"
  else:
    raise _Unbounded(f"unknown model {kind}")
  bounds = [b for b in (bound, piece) if b is not None]
  if not bounds:
    raise _Unbounded(why)
  return min(bounds)
