"""Memory and step-time benchmark of dense vs chunked soft-Q losses (MLE, IQLearn).

    python -m experiments.benchmarks.losses            # human-readable table
    python -m experiments.benchmarks.losses --json     # one JSON measurement per line
    python -m experiments.benchmarks.losses --quick    # tiny sizes, smoke test (< 60 s)

Two kinds of token statistics feed the same losses:

- dense: `logits = hidden @ unembedding`, then `soft_q_stats(logits, targets)`;
- chunked: `chunked_soft_q_stats(hidden, unembedding, targets, chunk_size=C)`.

Each is followed by `token_mean(mle(stats, where=mask), mask)` (MLE) or
`token_mean(iq_learn(stats, where=mask, gamma=0.99, td_weight=0.1)[0], mask)`
(IQLearn), differentiated with `jax.value_and_grad` w.r.t. `(hidden, unembedding)`.

Measurements:

1. XLA temporary memory of IQLearn loss+gradient, dense vs chunked, from
   `compile().memory_analysis()` on abstract `jax.ShapeDtypeStruct` arguments
   (compiled, never run: the dense logits alone are `N·V·4` bytes).
2. Median wall-clock step time of MLE and IQLearn loss+gradient, dense and
   chunked, with the four functions interleaved within each repeat round so
   that load drift on a shared machine hits all of them alike.

Dimensions: `B` batch rows, `T` positions, `N = B·T` tokens, `D` model width,
`V` vocabulary, `C` vocabulary chunk size.

Every JSON line holds one measurement with keys `metric`, `value`, `unit`, and
context keys (`V`, `tokens`, `D`, `chunk_size`, ...); lines with a target also
carry `target` (an upper bound) and `passed`. Metric names (quick mode uses the
same names, with its own V in the memory ratio names):

    temp_memory_dense, temp_memory_chunked                     bytes, per V
    chunked_over_dense_temp_memory_v{V}                        ratio, per V
    step_time_{mle,iq_learn}_{dense,chunked}                   s
    iq_learn_over_mle_time_{dense,chunked}                     ratio
    chunked_over_dense_time_iq_learn                           ratio
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.benchmarks.common import JSON as _JSON
from experiments.benchmarks.common import QUICK as _QUICK
from experiments.benchmarks.common import REPEATS as _REPEATS
from experiments.benchmarks.common import run_main
from irl_jax import losses

_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", 4096, "Vocabulary chunk size C of the chunked statistics (quick default: 1024)."
)

GAMMA = 0.99
TD_WEIGHT = 0.1
LOSS_KINDS = ("mle", "iq_learn")
STATS_KINDS = ("dense", "chunked")

# Upper bounds; a measurement passes when its value is at most the target.
MEMORY_RATIO_TARGET = 0.10  # At the largest V of the memory sweep (131072 in full mode).
IQ_OVER_MLE_TIME_TARGET = 1.05
CHUNKED_OVER_DENSE_TIME_TARGET = 1.3

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Sizes of one benchmark run."""

  memory_batch: int
  memory_seq_len: int
  memory_dim: int
  memory_vocabs: tuple[int, ...]
  time_batch: int
  time_seq_len: int
  time_dim: int
  time_vocab: int
  chunk_size: int
  repeats: int


FULL = BenchConfig(
    memory_batch=8,
    memory_seq_len=1024,
    memory_dim=1024,
    memory_vocabs=(32768, 131072),
    time_batch=2,
    time_seq_len=1024,
    time_dim=512,
    time_vocab=32768,
    chunk_size=4096,
    repeats=11,
)

QUICK = BenchConfig(
    memory_batch=2,
    memory_seq_len=128,
    memory_dim=64,
    memory_vocabs=(4096, 8192),
    time_batch=2,
    time_seq_len=128,
    time_dim=64,
    time_vocab=8192,
    chunk_size=1024,
    repeats=3,
)


def make_loss(loss_kind: str, stats_kind: str, *, chunk_size: int) -> Callable[..., jax.Array]:
  """`f(hidden [B,T,D], unembedding [D,V], targets [B,T], mask [B,T]) -> scalar loss`."""
  if loss_kind not in LOSS_KINDS:
    raise ValueError(f"make_loss: loss_kind must be one of {LOSS_KINDS}, got {loss_kind!r}.")
  if stats_kind not in STATS_KINDS:
    raise ValueError(f"make_loss: stats_kind must be one of {STATS_KINDS}, got {stats_kind!r}.")

  def stats_fn(hidden, unembedding, targets):
    if stats_kind == "dense":
      return losses.soft_q_stats(hidden @ unembedding, targets)
    return losses.chunked_soft_q_stats(hidden, unembedding, targets, chunk_size=chunk_size)

  def loss_fn(hidden, unembedding, targets, mask):
    stats = stats_fn(hidden, unembedding, targets)
    if loss_kind == "mle":
      per_token = losses.mle(stats, where=mask)
    else:
      per_token, _ = losses.iq_learn(stats, where=mask, gamma=GAMMA, td_weight=TD_WEIGHT)
    return losses.token_mean(per_token, mask)

  return loss_fn


def make_step(loss_kind: str, stats_kind: str, *, chunk_size: int) -> Callable[..., Any]:
  """Jitted `(loss, (d_hidden, d_unembedding))` of `make_loss`."""
  loss_fn = make_loss(loss_kind, stats_kind, chunk_size=chunk_size)
  return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))


def make_inputs(key: jax.Array, *, batch: int, seq_len: int, dim: int, vocab: int):
  """Random `(hidden, unembedding, targets, mask)`, float32.

  Each mask row hides a random prompt prefix and is true from there to the last
  position: one contiguous response span per row, so every row is terminal.
  """
  k_h, k_w, k_t, k_p = jax.random.split(key, 4)
  hidden = jax.random.normal(k_h, (batch, seq_len, dim), jnp.float32)
  # Scaled so logits have unit variance, as in a trained model's output layer.
  unembedding = jax.random.normal(k_w, (dim, vocab), jnp.float32) / jnp.sqrt(dim)
  targets = jax.random.randint(k_t, (batch, seq_len), 0, vocab, jnp.int32)
  prompt_len = jax.random.randint(k_p, (batch,), 1, seq_len // 2 + 1)
  mask = jnp.arange(seq_len)[None, :] >= prompt_len[:, None]
  return hidden, unembedding, targets, mask


def abstract_inputs(*, batch: int, seq_len: int, dim: int, vocab: int):
  """`jax.ShapeDtypeStruct`s matching `make_inputs`."""
  return (
      jax.ShapeDtypeStruct((batch, seq_len, dim), jnp.float32),
      jax.ShapeDtypeStruct((dim, vocab), jnp.float32),
      jax.ShapeDtypeStruct((batch, seq_len), jnp.int32),
      jax.ShapeDtypeStruct((batch, seq_len), jnp.bool_),
  )


def compiled_memory(step: Callable[..., Any], args: Sequence[Any]) -> dict[str, int]:
  """XLA's memory analysis of `step` compiled for `args` (compiled, not run)."""
  analysis = step.lower(*args).compile().memory_analysis()
  if analysis is None:
    raise RuntimeError("compiled_memory: this backend provides no memory_analysis().")
  return {
      "temp_bytes": int(analysis.temp_size_in_bytes),
      "argument_bytes": int(analysis.argument_size_in_bytes),
      "output_bytes": int(analysis.output_size_in_bytes),
  }


def _ratio_record(metric: str, value: float, target: float | None, **context) -> Record:
  record: Record = {"metric": metric, "value": value, "unit": "ratio", **context}
  if target is not None:
    record["target"] = target
    record["passed"] = bool(value <= target)
  return record


def measure_memory(
    *, batch: int, seq_len: int, dim: int, vocabs: Sequence[int], chunk_size: int
) -> list[Record]:
  """Temporary memory of IQLearn loss+gradient, dense vs chunked, per vocabulary size.

  The ratio target applies at the largest vocabulary of the sweep.
  """
  records: list[Record] = []
  tokens = batch * seq_len
  for vocab in vocabs:
    args = abstract_inputs(batch=batch, seq_len=seq_len, dim=dim, vocab=vocab)
    context = {"V": vocab, "tokens": tokens, "B": batch, "T": seq_len, "D": dim,
               "dtype": "float32", "loss": "iq_learn"}
    temp = {}
    for stats_kind in STATS_KINDS:
      step = make_step("iq_learn", stats_kind, chunk_size=chunk_size)
      memory = compiled_memory(step, args)
      temp[stats_kind] = memory["temp_bytes"]
      records.append({
          "metric": f"temp_memory_{stats_kind}",
          "value": memory["temp_bytes"],
          "unit": "bytes",
          **context,
          "chunk_size": chunk_size if stats_kind == "chunked" else None,
          "argument_bytes": memory["argument_bytes"],
          "output_bytes": memory["output_bytes"],
          # One float32 [N, V] array, the dense logits, for scale.
          "logits_bytes": tokens * vocab * 4,
      })
    ratio = temp["chunked"] / temp["dense"]
    target = MEMORY_RATIO_TARGET if vocab == max(vocabs) else None
    records.append(_ratio_record(
        f"chunked_over_dense_temp_memory_v{vocab}", ratio, target, **context,
        chunk_size=chunk_size,
    ))
  return records


def _timed_call(step: Callable[..., Any], args: Sequence[Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(step(*args))
  return time.perf_counter() - start


def measure_step_times(
    *, batch: int, seq_len: int, dim: int, vocab: int, chunk_size: int, repeats: int,
    warmup_rounds: int = 1, seed: int = 0,
) -> list[Record]:
  """Median step times of MLE and IQLearn loss+gradient, dense and chunked.

  All four functions see the same inputs. Each is compiled and run once, then
  `warmup_rounds` untimed rounds run (on a freshly booted VM the first rounds
  after compilation were seen to run up to 2x slower); then every repeat round
  calls each function once, MLE and IQLearn back to back per statistics kind,
  in an order that alternates between rounds. Ratios are of medians;
  `paired_median` is the median of the per-round ratios, which cancels slow
  load drift further.
  """
  if repeats < 1:
    raise ValueError(f"measure_step_times: repeats must be >= 1, got {repeats}.")
  args = make_inputs(jax.random.key(seed), batch=batch, seq_len=seq_len, dim=dim, vocab=vocab)
  jax.block_until_ready(args)
  names = [(loss_kind, stats_kind) for stats_kind in STATS_KINDS for loss_kind in LOSS_KINDS]
  steps = {name: make_step(*name, chunk_size=chunk_size) for name in names}
  compile_s = {name: _timed_call(steps[name], args) for name in names}

  times: dict[tuple[str, str], list[float]] = {name: [] for name in names}
  for r in range(warmup_rounds + repeats):
    order = names if r % 2 == 0 else names[::-1]
    for name in order:
      elapsed = _timed_call(steps[name], args)
      if r >= warmup_rounds:
        times[name].append(elapsed)

  context = {"V": vocab, "tokens": batch * seq_len, "B": batch, "T": seq_len, "D": dim,
             "dtype": "float32", "chunk_size": chunk_size, "repeats": repeats,
             "warmup_rounds": warmup_rounds}
  median = {name: statistics.median(ts) for name, ts in times.items()}
  records: list[Record] = []
  for loss_kind, stats_kind in names:
    name = (loss_kind, stats_kind)
    records.append({
        "metric": f"step_time_{loss_kind}_{stats_kind}",
        "value": median[name],
        "unit": "s",
        **context,
        "min": min(times[name]),
        "max": max(times[name]),
        "first_call_s": compile_s[name],
    })

  def paired(num, den):
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))

  for stats_kind in STATS_KINDS:
    num, den = ("iq_learn", stats_kind), ("mle", stats_kind)
    records.append(_ratio_record(
        f"iq_learn_over_mle_time_{stats_kind}", median[num] / median[den],
        IQ_OVER_MLE_TIME_TARGET, **context, paired_median=paired(num, den),
    ))
  num, den = ("iq_learn", "chunked"), ("iq_learn", "dense")
  records.append(_ratio_record(
      "chunked_over_dense_time_iq_learn", median[num] / median[den],
      CHUNKED_OVER_DENSE_TIME_TARGET, **context, paired_median=paired(num, den),
  ))
  return records


def run_benchmarks(config: BenchConfig) -> list[Record]:
  """All measurements of one configuration."""
  memory = measure_memory(
      batch=config.memory_batch,
      seq_len=config.memory_seq_len,
      dim=config.memory_dim,
      vocabs=config.memory_vocabs,
      chunk_size=config.chunk_size,
  )
  timing = measure_step_times(
      batch=config.time_batch,
      seq_len=config.time_seq_len,
      dim=config.time_dim,
      vocab=config.time_vocab,
      chunk_size=config.chunk_size,
      repeats=config.repeats,
  )
  return memory + timing


def _format_value(record: Record) -> str:
  value, unit = record["value"], record["unit"]
  if unit == "bytes":
    return f"{value / 2**20:,.1f} MiB"
  if unit == "s":
    return f"{value * 1e3:,.1f} ms"
  return f"{value:.3f}"


def format_table(records: Sequence[Record]) -> str:
  """A fixed-width table: metric, context, value, target, pass status, paired ratio."""
  rows = [("metric", "context", "value", "target", "status", "paired")]
  for record in records:
    context = []
    for key in ("V", "tokens", "D", "chunk_size"):
      if record.get(key) is not None:
        context.append(f"{key}={record[key]}")
    target = record.get("target")
    status = "" if target is None else ("PASS" if record["passed"] else "MISS")
    rows.append((
        record["metric"],
        " ".join(context),
        _format_value(record),
        "" if target is None else f"<= {target:g}",
        status,
        f"{record['paired_median']:.3f}" if "paired_median" in record else "",
    ))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
           for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def config_from_flags() -> BenchConfig:
  """`FULL` or `QUICK`, with `--chunk_size` / `--repeats` applied where given."""
  config = QUICK if _QUICK.value else FULL
  overrides = {}
  if not _QUICK.value or flags.FLAGS["chunk_size"].present:
    overrides["chunk_size"] = _CHUNK_SIZE.value
  if _REPEATS.value is not None:
    overrides["repeats"] = _REPEATS.value
  return dataclasses.replace(config, **overrides)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = config_from_flags()
  start = time.perf_counter()
  records = run_benchmarks(config)
  elapsed = time.perf_counter() - start
  if _JSON.value:
    for record in records:
      print(json.dumps(record), flush=True)
  else:
    mode = "quick (targets are set for full-mode sizes)" if _QUICK.value else "full"
    print(f"irl_jax.losses benchmark: {mode}; {jax.devices()[0].platform}; {elapsed:.1f} s")
    print(format_table(records))


if __name__ == "__main__":
  run_main(main)
