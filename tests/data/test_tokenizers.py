"""Tests for irl_jax/data/tokenizers.py: the offline character-level tokenizer."""

import pytest
import transformers

from irl_jax.data import char_tokenizer


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
