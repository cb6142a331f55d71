"""Build the trainer's data from a config: tokenizer, TFDS sources, Grain iterators.

`config.data.format` names the reader (`demonstrations`, `preferences`,
`hh_rlhf`, `gsm8k`, `model_written_evals`); `config.data.path` the local
file or folder. With an empty path, the `task` the entry point passes (a data
generator, e.g. one of the tasks in the repository's `experiments/tasks/`)
writes the files into `<workdir>/data` first, so smoke runs and experiments
need no downloaded data. Each process builds the same TFDS dataset (process 0
first, the others after a barrier) and reads its own shard.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from irl_jax import data as data_lib
from irl_jax.train import registry

PREFERENCE_FORMATS = ("preferences", "hh_rlhf", "model_written_evals")


def load_tokenizer(config):
  """`config.tokenizer.path`: a Hugging Face tokenizer directory or a GGUF file (its
  embedded tokenizer); empty: the character tokenizer of `config.tokenizer.alphabet`."""
  path = config.tokenizer.get("path", "")
  if path and os.path.isfile(path):
    from irl_jax.models import gguf_tokenizer

    return gguf_tokenizer(path)
  if path:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
  return data_lib.char_tokenizer(config.tokenizer.alphabet)


def _barrier(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _generated_paths(config, workdir: str, preference: bool, task) -> tuple[str, str]:
  """Write the task's train/eval files (identical on every process) and return their paths."""
  folder = os.path.join(workdir, "data")
  kind = "preferences" if preference else "demonstrations"
  write = task.write_preferences if preference else task.write_demonstrations
  paths = []
  for split, n, seed in (("train", config.data.num_examples, config.seed),
                         ("eval", config.data.num_eval_examples, config.seed + 10_000)):
    path = os.path.join(folder, f"{kind}_{split}.jsonl")
    if not os.path.exists(path):
      tmp = f"{path}.{jax.process_index()}.tmp"
      write(tmp, num_examples=n, seed=seed)
      os.replace(tmp, path)
    paths.append(path)
  return paths[0], paths[1]


def build_data(config, workdir: str, *, task=None):
  """`(train_iterator, eval_batches_fn, tokenizer)` for `irl_jax.train.loop.train`.

  Args:
    config: the run's config (`config.data`, `config.tokenizer`, `config.objective.name`).
    workdir: the run's directory (generated data and TFDS builds go under it).
    task: a data generator used when `config.data.path` is empty: an object
      (e.g. a module) with `write_demonstrations(path, *, num_examples, seed)`
      and, for preference objectives, `write_preferences(path, *, num_examples,
      seed)`, each writing a JSONL file.
  """
  tokenizer = load_tokenizer(config)
  d = config.data
  preference = registry.get(config.objective.name).data == "preferences"
  fmt = d.get("format", "") or ("preferences" if preference else "demonstrations")
  if preference != (fmt in PREFERENCE_FORMATS):
    raise ValueError(f"objective {config.objective.name!r} cannot train on data.format={fmt!r}.")
  # Bradley–Terry with the data's margins: the batches carry `margin [B]`.
  margins = bool(config.objective.name == "bradley_terry" and config.objective.get(
      "bradley_terry", {}).get("use_margin", False))
  if margins and fmt != "preferences":
    raise ValueError("config.objective.bradley_terry.use_margin reads each pair's 'margin' "
                     f"field, which only data.format='preferences' stores, not {fmt!r}.")
  train_path, eval_path = d.get("path", ""), d.get("eval_path", "")
  if not train_path:
    if task is None:
      raise ValueError("config.data.path is empty and no task was given to generate data "
                       "(train(..., task=...); experiments/train.py passes config.data.task's).")
    train_path, eval_path = _generated_paths(config, workdir, preference, task)
  data_dir = os.path.join(workdir, "tfds")

  def source(path):
    return data_lib.prepare(fmt, path=path, data_dir=data_dir, split="train",
                            on_bad_row=d.get("on_bad_row", "raise"))

  if jax.process_index() == 0:
    train_src = source(train_path)
    eval_src = source(eval_path) if eval_path else None
  _barrier("irl_jax_data_prepared")
  if jax.process_index() != 0:
    train_src = source(train_path)
    eval_src = source(eval_path) if eval_path else None

  if margins and d.get("on_bad_row", "raise") == "raise":
    # Before the first step, not when the pair's batch comes up hours later.
    for src in (train_src, eval_src):
      for example in src or ():
        if "margin" not in example:
          raise data_lib.BadRowError(
              example.get("source", "<example>"), "missing_margin",
              "no 'margin' field, and config.objective.bradley_terry.use_margin needs one "
              "for every pair")

  if d.batch_size % jax.process_count():
    raise ValueError(f"data.batch_size={d.batch_size} does not split over "
                     f"{jax.process_count()} processes.")
  per_host = d.batch_size // jax.process_count()
  # Buckets (pad each batch to the smallest that fits) win over a fixed seq_len.
  buckets = tuple(d.get("buckets") or ()) or None
  common = dict(seq_len=None if buckets else d.seq_len, buckets=buckets,
                on_bad_row=d.get("on_bad_row", "raise"))
  if preference:
    make = lambda src, **kw: data_lib.preference_batches(
        src, tokenizer, max_responses=d.get("max_ranking", 2), margins=margins, **common, **kw)
  else:
    packing = d.get("packing") or None
    packing = "first_fit" if packing is True else packing
    make = lambda src, **kw: data_lib.lm_batches(src, tokenizer, packing=packing, **common, **kw)
  train_ds = make(train_src, batch_size=per_host, seed=config.seed, num_epochs=None,
                  shuffle=True, drop_remainder=True)
  train_iter = iter(train_ds)

  def eval_batches():
    if eval_src is None:
      return iter(())
    per_host_eval = max(d.get("eval_batch_size", d.batch_size) // jax.process_count(), 1)
    ds = make(eval_src, batch_size=per_host_eval, seed=0, num_epochs=1, shuffle=False,
              drop_remainder=False)
    return iter(ds)

  logging.info("data: %s (%s), %d rows per host per step", train_path, fmt, per_host)
  return train_iter, eval_batches, tokenizer
