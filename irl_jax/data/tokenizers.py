"""A character-level Hugging Face tokenizer built offline with `tokenizers`.

Used by smoke configs and the arithmetic experiment, where a real BPE
vocabulary would be both unavailable offline and beside the point.
"""

from __future__ import annotations

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
