"""Tests for irl_jax/data/builders.py: array_record builds read back without TensorFlow."""

import glob
import gzip
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_test_rows import DEMONSTRATION_ROWS, GSM8K_ROW, MWE_ROWS, READERS, write_jsonl

from irl_jax.data import NoExamplesError, builders
from irl_jax.data.formats import BadRowError


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def built(fixture_files, data_dir):
  """`{format: DecodedSource}`, each builder built once per session."""
  return {
      name: builders.prepare(name, path=path, data_dir=data_dir)
      for name, path in fixture_files.items()
  }


@pytest.mark.parametrize("name", sorted(READERS))
def test_build_reads_back_the_parser_examples(built, fixture_files, name):
  source = built[name]
  path = os.path.abspath(fixture_files[name])
  expected = list(READERS[name](path))
  assert len(source) == len(expected) > 0
  assert [source[i] for i in range(len(source))] == expected  # same examples, file order
  assert list(source) == expected
  assert source[-1] == expected[-1]
  assert source[0:2] == expected[:2]
  with pytest.raises(IndexError):
    source[len(expected)]
  assert source.__getitems__([1, 0]) == [expected[1], expected[0]]
  assert isinstance(source.builder, builders.BUILDERS[name])
  # Stored as array_record (no TFRecord, no TensorFlow).
  files = os.listdir(source.builder.data_dir)
  assert any(".array_record-" in f for f in files), files
  assert not any(".tfrecord" in f for f in files), files


@pytest.mark.parametrize("name", sorted(READERS))
def test_tfds_data_source_reads_the_build(built, fixture_files, data_dir, name):
  b = built[name].builder
  raw = tfds.data_source(
      f"{b.name}/{b.builder_config.name}", data_dir=data_dir, split="train", download=False
  )
  expected = list(READERS[name](os.path.abspath(fixture_files[name])))
  assert len(raw) == len(expected)
  # The raw TFDS source returns bytes; DecodedSource gives back the parser's str.
  assert isinstance(raw[0]["source"], bytes)
  assert [builders.DecodedSource(raw)[i] for i in range(len(raw))] == expected
  assert b.as_data_source("train")[0]["source"] == expected[0]["source"].encode()


def test_label_confidence_keeps_float64(built):
  confidence = built["model_written_evals"][0]["label_confidence"]
  assert confidence == MWE_ROWS[0]["label_confidence"]  # not rounded to float32
  assert float(np.float32(confidence)) != confidence


def test_prepare_reuses_a_build_and_rebuilds_an_edited_file(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", DEMONSTRATION_ROWS)
  data_dir = str(tmp_path / "tfds")
  first = builders.prepare(builders.Demonstrations, path=path, data_dir=data_dir)
  assert first.builder.row_counts["train"].kept == len(DEMONSTRATION_ROWS)
  again = builders.prepare("demonstrations", path=path, data_dir=data_dir)
  assert again.builder.row_counts == {}  # nothing regenerated
  assert again.builder.builder_config.name == first.builder.builder_config.name
  write_jsonl(path, [{"prompt": "new", "response": "row"}])
  edited = builders.prepare("demonstrations", path=path, data_dir=data_dir)
  assert edited.builder.builder_config.name != first.builder.builder_config.name
  assert [e["prompt"] for e in edited] == ["new"]


def test_skip_mode_counts_in_the_builder(tmp_path, caplog):
  path = write_jsonl(tmp_path / "d.jsonl", [
      {"prompt": "a", "response": "b"}, "{oops", {"prompt": "c", "response": ""},
      {"prompt": "d", "response": "e"},
  ])
  source = builders.prepare(
      "demonstrations", path=path, data_dir=tmp_path / "tfds", on_bad_row="skip"
  )
  assert [e["source"] for e in source] == [f"{path}:1", f"{path}:4"]
  counts = source.builder.row_counts["train"]
  assert counts.skipped == {"invalid_json": 1, "empty_response": 1}
  assert (counts.read, counts.kept) == (4, 2)


def test_every_row_skipped_fails_the_build_with_file_and_counts(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", ["{oops", {"prompt": "c", "response": ""}, "{"])
  with pytest.raises(NoExamplesError) as info:
    builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds", on_bad_row="skip")
  error = info.value
  assert error.sources == (path,)
  assert error.counts.skipped == {"invalid_json": 2, "empty_response": 1}
  message = str(error)
  assert message.startswith(f"{path}: ")
  assert f"invalid_json=2 (first at {path}:1)" in message
  assert f"empty_response=1 (first at {path}:2)" in message
  # Nothing half-built is left to be answered from later.
  with pytest.raises(NoExamplesError):
    builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds", on_bad_row="skip")


@pytest.mark.parametrize(
    ("content", "detail"),
    [(b"", "is empty"), (b"\n", "only 1 blank line"), (b"\n  \n\t\n", "only 3 blank lines"),
     (gzip.compress(b"", mtime=0), "is empty")],
)
def test_empty_file_fails_the_build_naming_it(tmp_path, content, detail):
  path = tmp_path / "empty.jsonl"
  path.write_bytes(content)
  with pytest.raises(NoExamplesError, match=rf"^{re.escape(str(path))}: .*{detail}") as info:
    builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds")
  assert info.value.sources == (str(path),)


def test_empty_split_file_in_a_folder_fails_the_build_naming_it(tmp_path):
  folder = tmp_path / "data"
  folder.mkdir()
  write_jsonl(folder / "train.jsonl", DEMONSTRATION_ROWS)
  (folder / "test.jsonl").write_bytes(b"")
  with pytest.raises(NoExamplesError, match=r"test\.jsonl: .*is empty"):
    builders.prepare("demonstrations", path=folder, data_dir=tmp_path / "tfds")


def test_raise_mode_fails_the_build_with_file_and_line(tmp_path):
  path = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROW, {"question": "q", "answer": "no end"}])
  with pytest.raises(BadRowError, match=rf"^{path}:2: .*####"):
    builders.prepare("gsm8k", path=path, data_dir=tmp_path / "tfds")


def test_folder_gives_one_split_per_file(tmp_path):
  folder = tmp_path / "persona"
  folder.mkdir()
  write_jsonl(folder / "agreeableness.jsonl", MWE_ROWS)
  write_jsonl(folder / "desire-for-power.jsonl", MWE_ROWS[:1])
  (folder / "README.md").write_text("not data")
  data_dir = tmp_path / "tfds"
  power = builders.prepare(
      "model_written_evals", path=folder, data_dir=data_dir, split="desire_for_power",
      chosen_matches_behavior=False,
  )
  assert sorted(power.builder.info.splits) == ["agreeableness", "desire_for_power"]
  assert len(power) == 1
  assert power[0]["responses"] == [" No", " Yes"]  # flipped by the config option
  agree = builders.prepare(
      "model_written_evals", path=folder, data_dir=data_dir, split="agreeableness",
      chosen_matches_behavior=False,
  )
  assert len(agree) == 2
  # Both splits come from one build of the folder.
  assert agree.builder.builder_config.name == power.builder.builder_config.name
  with pytest.raises(ValueError, match="no split 'test'"):
    builders.prepare("model_written_evals", path=folder, data_dir=data_dir, split="test",
                     chosen_matches_behavior=False)


def test_options_reach_the_parser(tmp_path):
  path = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROW])
  source = builders.prepare(
      "gsm8k", path=path, data_dir=tmp_path / "tfds", template="Q: {question}"
  )
  assert source[0]["prompt"] == f"Q: {GSM8K_ROW['question']}"
  with pytest.raises(TypeError, match="unknown config option"):
    builders.prepare("gsm8k", path=path, data_dir=tmp_path / "tfds", behaviour="x")


def test_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  write_jsonl(manual / "train.jsonl", DEMONSTRATION_ROWS)
  write_jsonl(manual / "test.jsonl", DEMONSTRATION_ROWS[:1])
  source = builders.prepare(
      "demonstrations", data_dir=tmp_path / "tfds", manual_dir=manual, split="test"
  )
  assert source.builder.builder_config.name.startswith("local_")
  assert [e["source"] for e in source] == [f"{manual / 'test.jsonl'}:1"]


def test_local_only_formats_need_a_path(tmp_path):
  with pytest.raises(ValueError, match="no public download location"):
    builders.prepare("preferences", data_dir=tmp_path / "tfds")


def test_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    builders.prepare("demonstrations", path=tmp_path / "nope.jsonl", data_dir=tmp_path / "tfds")


def test_download_locations():
  # The download path is never exercised (no network); its URLs are checked here.
  hh = builders.HhRlhf(config=builders.make_config("hh_rlhf"), data_dir="/nonexistent")
  assert hh._urls() == {
      "train": "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/"
               "harmless-base/train.jsonl.gz",
      "test": "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/"
              "harmless-base/test.jsonl.gz",
  }
  gsm = builders.Gsm8k(config=builders.make_config("gsm8k"), data_dir="/nonexistent")
  assert gsm._urls()["test"] == (
      "https://raw.githubusercontent.com/openai/grade-school-math/master/"
      "grade_school_math/data/test.jsonl"
  )
  mwe = builders.ModelWrittenEvals(
      config=builders.make_config("model_written_evals", behavior="desire-for-acquiring-power"),
      data_dir="/nonexistent",
  )
  assert mwe._urls() == {
      "train": "https://raw.githubusercontent.com/anthropics/evals/main/persona/"
               "desire-for-acquiring-power.jsonl"
  }
  assert builders.make_config("gsm8k").name.startswith("remote_")
  assert not glob.glob("/nonexistent*")


def test_unknown_builder():
  with pytest.raises(ValueError, match="unknown builder 'nope'"):
    builders.prepare("nope", path="x", data_dir="y")


def test_single_file_split_name(tmp_path):
  path = write_jsonl(tmp_path / "d.jsonl", DEMONSTRATION_ROWS)
  source = builders.prepare("demonstrations", path=path, data_dir=tmp_path / "tfds",
                            split="validation")
  assert list(source.builder.info.splits) == ["validation"]
  assert len(source) == len(DEMONSTRATION_ROWS)
