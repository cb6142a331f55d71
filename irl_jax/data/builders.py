"""TFDS builders (array_record, no TensorFlow) for the five JSONL formats.

| builder | name | examples | public default (no local path) |
| --- | --- | --- | --- |
| `Demonstrations` | `demonstrations` | demonstration | none: needs a local path |
| `Preferences` | `preferences` | preference | none: needs a local path |
| `HhRlhf` | `hh_rlhf` | preference pair | Anthropic/hh-rlhf `harmless-base` (HF) |
| `Gsm8k` | `gsm8k` | demonstration | openai/grade-school-math (GitHub) |
| `ModelWrittenEvals` | `model_written_evals` | preference pair | anthropics/evals `persona/` |

Examples are those of `irl_jax.data.formats` (same fields, same order: the
builders keep file order, `disable_shuffling=True`), stored as array_record
and read back with `tfds.data_source` / `builder.as_data_source()` without
TensorFlow; strings come back as `bytes` there, and `prepare` wraps the source
so that they come back as `str`, exactly as the parsers yield them.

Where the data comes from, first match wins:
1. `config.path`: a JSONL file (one split, `config.split`, default `"train"`)
   or a folder whose `*.jsonl` / `*.jsonl.gz` files become one split each,
   named after the file (`test.jsonl` -> `"test"`);
2. `manual_dir` (`tfds.download.DownloadConfig(manual_dir=...)`), a folder as in 1;
3. the public download location, where the source has one.

`prepare(builder, path=..., data_dir=...)` names the config after a hash of
the path, the files' sizes and modification times and the options, so that a
different or edited file is never answered from a stale build.

A file without rows (empty, or only blank lines) or whose every row is skipped
(`on_bad_row="skip"`) fails the build with `formats.NoExamplesError` naming the
file and the counts by reason, rather than leaving an empty split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from irl_jax.data import formats

_HF_HH_RLHF = "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/{subset}/{split}.jsonl.gz"
_GSM8K = (
    "https://raw.githubusercontent.com/openai/grade-school-math/master/"
    "grade_school_math/data/{split}.jsonl"
)
_PERSONA = "https://raw.githubusercontent.com/anthropics/evals/main/persona/{behavior}.jsonl"

_MANUAL = (
    "Put the JSONL files in `manual_dir`, one file per split named after it "
    "(`train.jsonl`, `test.jsonl`, optionally gzip-compressed as `.jsonl.gz`)."
)


@dataclasses.dataclass(eq=False)
class JsonlConfig(tfds.core.BuilderConfig):
  """Where to read the JSONL data and what to do with bad rows.

  Attributes:
    path: a JSONL file or a folder of them (see the module docstring); `None`
      reads `manual_dir` or downloads the public source.
    split: the split name for a single file.
    on_bad_row: `"raise"` or `"skip"` (skipped rows are counted and logged).
  """

  path: str | None = None
  split: str = "train"
  on_bad_row: str = "raise"


@dataclasses.dataclass(eq=False)
class HhRlhfConfig(JsonlConfig):
  """`subset`: the hh-rlhf folder downloaded when no path is given."""

  subset: str = "harmless-base"


@dataclasses.dataclass(eq=False)
class Gsm8kConfig(JsonlConfig):
  """`template`: the prompt template, `formats.GSM8K_TEMPLATE` by default."""

  template: str = formats.GSM8K_TEMPLATE


@dataclasses.dataclass(eq=False)
class ModelWrittenEvalsConfig(JsonlConfig):
  """`behavior`: the persona file downloaded when no path is given.

  `chosen_matches_behavior`: chosen = `answer_matching_behavior` (default) or
  the other answer.
  """

  behavior: str = "agreeableness"
  chosen_matches_behavior: bool = True


def _demonstration_features(**extra) -> tfds.features.FeaturesDict:
  text = tfds.features.Text()
  return tfds.features.FeaturesDict(
      {"prompt": text, "response": text, "source": text, **extra}
  )


def _preference_features(**extra) -> tfds.features.FeaturesDict:
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "prompt": text, "responses": tfds.features.Sequence(text), "source": text, **extra
  })


def split_files(path: str | os.PathLike[str], split: str = "train") -> dict[str, str]:
  """`{split: file}` for a JSONL file or a folder of `*.jsonl` / `*.jsonl.gz` files."""
  path = os.fspath(path)
  if os.path.isfile(path):
    return {split: path}
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no JSONL file or folder at {path!r}")
  files: dict[str, str] = {}
  for name in sorted(os.listdir(path)):
    stem = name.removesuffix(".gz")
    if not stem.endswith(".jsonl"):
      continue
    split_name = re.sub(r"\W+", "_", stem.removesuffix(".jsonl"))
    if split_name in files:
      raise ValueError(
          f"{path!r}: {os.path.basename(files[split_name])!r} and {name!r} both give split "
          f"{split_name!r}"
      )
    files[split_name] = os.path.join(path, name)
  if not files:
    raise FileNotFoundError(f"no *.jsonl or *.jsonl.gz files in folder {path!r}")
  return files


class _JsonlBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared machinery: local path / manual_dir / download, then a `formats` reader."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS class attribute)
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIG_CLASS: type[JsonlConfig] = JsonlConfig
  BUILDER_CONFIGS = [JsonlConfig(name="default")]  # noqa: RUF012
  DESCRIPTION = ""
  HOMEPAGE: str | None = None
  CITATION = ""
  # TFDS's own `code_path` lookup (used to find checksum files) touches
  # `importlib_resources`, which TFDS only depends on for Python < 3.9; the
  # answer for a module in a package is simply this file.
  code_path = epath.Path(__file__)

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # split -> RowCounts of the last build, for inspection after preparation.
    self.row_counts: dict[str, formats.RowCounts] = {}

  # Subclasses define these three.
  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def _reader(self) -> Callable[..., Iterator[dict[str, Any]]]:
    """`reader(path, *, on_bad_row, counts)`, with this config's options bound."""
    raise NotImplementedError

  def _urls(self) -> dict[str, str]:
    """`{split: url}` of the public source; empty if it has none."""
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=self._features(),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        disable_shuffling=True,  # keep file order: example i is the i-th good row
    )

  def _files(self, dl_manager) -> dict[str, str]:
    config = self.builder_config
    if config.path:
      return split_files(config.path, config.split)
    try:
      # `<data_dir>/downloads/manual` unless a manual_dir was given; TFDS
      # raises if it is missing or empty, which here means "not used".
      manual_dir = dl_manager.manual_dir
    except AssertionError:
      manual_dir = None
    if manual_dir is not None:
      return split_files(os.fspath(manual_dir), config.split)
    urls = self._urls()
    if not urls:
      raise ValueError(
          f"{self.name}: this format has no public download location; give a local JSONL "
          "file or folder as the config's `path` (prepare(..., path=...)) or as `manual_dir`."
      )
    return {split: os.fspath(p) for split, p in dl_manager.download(urls).items()}

  def _split_generators(self, dl_manager):
    formats.check_on_bad_row(self.builder_config.on_bad_row)
    return {
        split: self._generate_examples(split, path)
        for split, path in self._files(dl_manager).items()
    }

  def _generate_examples(self, split: str, path: str):
    counts = self.row_counts[split] = formats.RowCounts()
    reader = self._reader()
    # The reader raises `NoExamplesError` itself for a file without rows.
    for example in reader(path, on_bad_row=self.builder_config.on_bad_row, counts=counts):
      # Line numbers are unique within a file and increasing, so with
      # `disable_shuffling` the stored order is the file order.
      yield int(example["source"].rsplit(":", 1)[1]), example
    if not counts.kept:
      raise formats.NoExamplesError(
          [path], f"split {split!r} would be empty: all {counts.read} rows were skipped", counts
      )


class Demonstrations(_JsonlBuilder):
  """Demonstrations `{"prompt", "response"}` (`formats.read_demonstrations`)."""

  DESCRIPTION = "Prompt/response demonstrations read from local JSONL files."

  def _features(self):
    return _demonstration_features()

  def _reader(self):
    return formats.read_demonstrations


def _with_margin(path, **kwargs) -> Iterator[dict[str, Any]]:
  """`formats.read_preferences`, each example with a `margin` (NaN where the row gave none:
  TFDS stores a value for every example)."""
  for example in formats.read_preferences(path, **kwargs):
    yield {**example, "margin": example.get("margin", math.nan)}


class Preferences(_JsonlBuilder):
  """Preference pairs or rankings (`formats.read_preferences`), with their optional
  Bradley–Terry margins (stored as NaN where a row gives none; `DecodedSource` leaves
  those out, so examples read back as the reader yielded them)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {  # noqa: RUF012 (TFDS class attribute)
      "1.0.0": "Initial release.",
      "1.1.0": "Stores each row's optional 'margin' (NaN when absent).",
  }
  DESCRIPTION = (
      "Preference pairs {prompt, chosen, rejected} or rankings {prompt, responses} "
      "(best first) read from local JSONL files; pairs are stored as responses = "
      "[chosen, rejected]; margin: the row's optional Bradley–Terry margin (NaN if none)."
  )

  def _features(self):
    return _preference_features(margin=tfds.features.Tensor(shape=(), dtype=np.float32))

  def _reader(self):
    return _with_margin


class HhRlhf(_JsonlBuilder):
  """Anthropic HH-RLHF dialogue pairs (`formats.read_hh_rlhf`); default `harmless-base`."""

  BUILDER_CONFIG_CLASS = HhRlhfConfig
  BUILDER_CONFIGS = [HhRlhfConfig(name="default")]  # noqa: RUF012
  DESCRIPTION = (
      "Anthropic HH-RLHF preference pairs: prompt = the shared dialogue through the last "
      "'\\n\\nAssistant:', responses = [chosen, rejected] final assistant turns. MIT licence."
  )
  HOMEPAGE = "https://github.com/anthropics/hh-rlhf"
  CITATION = """@article{bai2022training,
  title={Training a Helpful and Harmless Assistant with Reinforcement Learning from Human Feedback},
  author={Bai, Yuntao and others},
  journal={arXiv preprint arXiv:2204.05862},
  year={2022}
}"""

  def _features(self):
    return _preference_features()

  def _reader(self):
    return formats.read_hh_rlhf

  def _urls(self):
    subset = self.builder_config.subset
    return {s: _HF_HH_RLHF.format(subset=subset, split=s) for s in ("train", "test")}


class Gsm8k(_JsonlBuilder):
  """GSM8K grade-school math as demonstrations (`formats.read_gsm8k`)."""

  BUILDER_CONFIG_CLASS = Gsm8kConfig
  BUILDER_CONFIGS = [Gsm8kConfig(name="default")]  # noqa: RUF012
  DESCRIPTION = (
      "GSM8K: prompt = the question in a fixed template, response = the worked answer with "
      "calculator annotations and the final '#### <number>'; final_answer = that number. "
      "MIT licence."
  )
  HOMEPAGE = "https://github.com/openai/grade-school-math"
  CITATION = """@article{cobbe2021gsm8k,
  title={Training Verifiers to Solve Math Word Problems},
  author={Cobbe, Karl and others},
  journal={arXiv preprint arXiv:2110.14168},
  year={2021}
}"""

  def _features(self):
    return _demonstration_features(
        question=tfds.features.Text(), final_answer=tfds.features.Text()
    )

  def _reader(self):
    parse = formats.gsm8k_parser(self.builder_config.template)
    return lambda path, **kw: formats.read_jsonl(path, parse, what="GSM8K problems", **kw)

  def _urls(self):
    return {s: _GSM8K.format(split=s) for s in ("train", "test")}


class ModelWrittenEvals(_JsonlBuilder):
  """Model-written persona evaluations as preference pairs (`formats.read_model_written_evals`).

  Perez et al. 2022 (CC-BY-4.0): cite wherever results on them are shown.
  """

  BUILDER_CONFIG_CLASS = ModelWrittenEvalsConfig
  BUILDER_CONFIGS = [  # noqa: RUF012
      ModelWrittenEvalsConfig(name="agreeableness", behavior="agreeableness"),
      ModelWrittenEvalsConfig(
          name="desire_for_acquiring_power", behavior="desire-for-acquiring-power"
      ),
  ]
  DESCRIPTION = (
      "Anthropic model-written persona evaluations: prompt = question, responses = "
      "[answer_matching_behavior, answer_not_matching_behavior] (flipped if "
      "chosen_matches_behavior=False). CC-BY-4.0."
  )
  HOMEPAGE = "https://github.com/anthropics/evals"
  CITATION = """@article{perez2022discovering,
  title={Discovering Language Model Behaviors with Model-Written Evaluations},
  author={Perez, Ethan and others},
  journal={arXiv preprint arXiv:2212.09251},
  year={2022}
}"""

  def _features(self):
    return _preference_features(
        statement=tfds.features.Text(),
        # BYTES keeps all 64 bits; the default encoding stores a float32.
        label_confidence=tfds.features.Tensor(
            shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES
        ),
    )

  def _reader(self):
    parse = formats.model_written_evals_parser(
        chosen_matches_behavior=self.builder_config.chosen_matches_behavior
    )
    return lambda path, **kw: formats.read_jsonl(
        path, parse, what="model-written evaluations", **kw
    )

  def _urls(self):
    return {"train": _PERSONA.format(behavior=self.builder_config.behavior)}


BUILDERS: dict[str, type[_JsonlBuilder]] = {
    b.name: b for b in (Demonstrations, Preferences, HhRlhf, Gsm8k, ModelWrittenEvals)
}


def builder_class(builder: str | type[_JsonlBuilder]) -> type[_JsonlBuilder]:
  """The builder class for a name in `BUILDERS` (or the class itself)."""
  if isinstance(builder, type) and issubclass(builder, _JsonlBuilder):
    return builder
  if isinstance(builder, str) and builder in BUILDERS:
    return BUILDERS[builder]
  raise ValueError(f"unknown builder {builder!r}; expected one of {sorted(BUILDERS)} or a class")


# --------------------------------------------------------------------------
# Reading back.


def _decode_example(row: Any) -> dict[str, Any]:
  """A stored example as the `formats` reader yielded it (a NaN margin, stored for a row
  that gave none, is left out again; a given margin comes back as float32's value)."""
  example = _decode(row)
  margin = example.get("margin") if isinstance(example, dict) else None
  if isinstance(margin, float) and math.isnan(margin):
    del example["margin"]
  return example


def _decode(value: Any) -> Any:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, Mapping):
    return {k: _decode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
    return [_decode(v) for v in value]
  if isinstance(value, np.generic | np.ndarray):
    return value.item()
  return value


class DecodedSource(Sequence[dict[str, Any]]):
  """A random-access source whose examples have `str` (not `bytes`) text.

  Wraps a TFDS `ArrayRecordDataSource`; `source[i]` is the i-th example with
  the same fields and values the `formats` reader yields. Supports `len`,
  iteration, integer (and negative) indexing, slices and `__getitems__` (used
  by Grain for batched reads).

  Attributes:
    data_source: the wrapped TFDS source.
    builder: the TFDS builder it was read from (or `None`).
  """

  def __init__(self, data_source: Sequence[Any], builder: tfds.core.DatasetBuilder | None = None):
    self.data_source = data_source
    self.builder = builder

  def __len__(self) -> int:
    return len(self.data_source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"index {index} out of range for a source of {n} examples")
    return _decode_example(self.data_source[index % n])

  def __iter__(self) -> Iterator[dict[str, Any]]:
    for i in range(len(self)):
      yield self[i]

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    getitems = getattr(self.data_source, "__getitems__", None)
    rows = getitems(indices) if getitems else [self.data_source[i] for i in indices]
    return [_decode_example(r) for r in rows]

  def __repr__(self) -> str:
    return f"DecodedSource({self.data_source!r})"


def _fingerprint(paths: Sequence[str], options: Mapping[str, Any]) -> str:
  files = []
  for path in paths:
    for split, f in sorted(split_files(path, options.get("split", "train")).items()):
      stat = os.stat(f)
      files.append([split, f, stat.st_size, stat.st_mtime_ns])
  blob = json.dumps({"paths": list(paths), "files": files, "options": options}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_config(
    builder: str | type[_JsonlBuilder], *, path: str | os.PathLike[str] | None = None,
    on_bad_row: formats.OnBadRow = "raise", manual_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> JsonlConfig:
  """A config for `builder` named after a fingerprint of its inputs.

  Args:
    builder: a name in `BUILDERS` or a builder class.
    path: a JSONL file or folder (absolutised); `None` for manual_dir/download.
    on_bad_row: `"raise"` or `"skip"`.
    manual_dir: the manual_dir the build will get, if any (only fingerprinted).
    **options: further config fields (`split`, `template`, `behavior`,
      `chosen_matches_behavior`, `subset`).

  The name is `"local_<hash>"` (with a path or manual_dir; the hash covers the
  files' sizes and modification times) or `"remote_<hash>"`.
  """
  cls = builder_class(builder)
  formats.check_on_bad_row(on_bad_row)
  fields = {f.name for f in dataclasses.fields(cls.BUILDER_CONFIG_CLASS)}
  unknown = set(options) - (fields - {"name", "path", "on_bad_row"})
  if unknown:
    raise TypeError(
        f"{cls.__name__}: unknown config option(s) {sorted(unknown)}; "
        f"{cls.BUILDER_CONFIG_CLASS.__name__} has {sorted(fields)}"
    )
  path = None if path is None else os.path.abspath(os.fspath(path))
  local = [p for p in (path, manual_dir) if p is not None]
  local = [os.path.abspath(os.fspath(p)) for p in local]
  kind = "local" if local else "remote"
  name = f"{kind}_{_fingerprint(local, {'on_bad_row': on_bad_row, **options})}"
  return cls.BUILDER_CONFIG_CLASS(
      name=name, path=path, on_bad_row=on_bad_row,
      description=f"{cls.__name__} from {path or 'its public source'}", **options,
  )


def prepare(
    builder: str | type[_JsonlBuilder],
    *,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str],
    split: str = "train",
    on_bad_row: formats.OnBadRow = "raise",
    manual_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DecodedSource:
  """Builds (unless already built) and returns one split as a random-access source.

  Args:
    builder: a name in `BUILDERS` (`"hh_rlhf"`) or a builder class (`HhRlhf`).
    path: a local JSONL file or folder; `None` reads `manual_dir` or, failing
      that, downloads the public source (HH-RLHF, GSM8K, persona evals).
    data_dir: where TFDS writes and finds the array_record files.
    split: the split to return (for a single file it is also its split name).
    on_bad_row: `"raise"` (the first bad row fails the build with its
      file:line) or `"skip"` (bad rows are counted by reason and logged).
    manual_dir: a folder of `<split>.jsonl` files, used when `path` is `None`.
    **options: further config fields, e.g. `template=` (GSM8K),
      `chosen_matches_behavior=` / `behavior=` (model-written evals).

  Returns:
    A `DecodedSource` over the split: `len(src)` examples, `src[i]` a dict
    equal to the i-th example the matching `formats` reader yields.
  """
  cls = builder_class(builder)
  if manual_dir is not None and not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"manual_dir {os.fspath(manual_dir)!r} is not a folder")
  if path is not None and os.path.isfile(path):
    # A single file's split is named by the config; folders name their own,
    # so asking for another split of a folder reuses the same build.
    options = {"split": split, **options}
  config = make_config(cls, path=path, on_bad_row=on_bad_row, manual_dir=manual_dir, **options)
  b = cls(config=config, data_dir=os.fspath(data_dir))
  download_config = tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir)
  )
  b.download_and_prepare(download_config=download_config)
  if split not in b.info.splits:
    raise ValueError(
        f"{cls.__name__}: no split {split!r} in {b.data_dir}; it has {sorted(b.info.splits)}"
    )
  return DecodedSource(b.as_data_source(split), builder=b)
