"""What every study shares: intervals over seeds, verdict rules and result files."""

from __future__ import annotations

import json
import math
import os
import platform
import time

import numpy as np
import scipy.stats

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def interval(values, confidence: float = 0.95) -> tuple[float, float, float, int]:
  """`(mean, low, high, n)`: a t-interval over seeds (`scipy.stats.t`) of the `n` values
  that are defined (a seed whose value is NaN is counted out, and `n` says so)."""
  v = np.asarray(values, float).ravel()
  v = v[~np.isnan(v)]
  if len(v) == 0:
    return float("nan"), float("nan"), float("nan"), 0
  mean = float(v.mean())
  if len(v) < 2:
    return mean, float("nan"), float("nan"), 1
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1)
               / np.sqrt(len(v)))
  return mean, mean - half, mean + half, len(v)


def decide(ci) -> str:
  """A claimed positive quantity: reproduced when its 95% interval lies above 0,
  contradicted when below, otherwise (or with fewer than 2 defined seeds) not at this
  scale."""
  _, low, high, n = ci
  if n < 2 or np.isnan(low):
    return "not at this scale"
  return "reproduced" if low > 0 else "contradicted" if high < 0 else "not at this scale"


def equivalence(diff, margin: float) -> tuple[str, tuple]:
  """`(verdict, interval of diff)` for "diff ≈ 0 within ±margin": reproduced when both
  one-sided claims `margin − d > 0` and `margin + d > 0` are (the 95% interval of `d` lies
  inside ±margin); contradicted when `d − margin > 0` or `−d − margin > 0` is (it lies
  wholly beyond the margin on one side)."""
  d = np.asarray(diff, float)
  inside = [decide(interval(margin - d)), decide(interval(margin + d))]
  beyond = [decide(interval(d - margin)), decide(interval(-d - margin))]
  if all(v == "reproduced" for v in inside):
    verdict = "reproduced"
  elif "reproduced" in beyond:
    verdict = "contradicted"
  else:
    verdict = "not at this scale"
  return verdict, interval(d)


def fmt_pm(ci, digits: int = 3) -> str:
  """`mean ± half-width` of an `interval`, or `mean (n=...)` when it has no width."""
  m, lo, hi, n = ci
  if np.isnan(lo):
    return f"{m:.{digits}f} (n={n})"
  return f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def errorbars(ax, xs, cis, **kwargs):
  """Means with their interval as error bars (`cis` from `interval`)."""
  mean = np.array([c[0] for c in cis])
  err = np.nan_to_num(np.array([[c[0] - c[1], c[2] - c[0]] for c in cis]).T)
  return ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, **kwargs)


def command_line(run, table, default_config: str, default_workdir: str) -> None:
  """Runs a study as a program: `--config` (a config file; fields override as
  `--config.field=value`) and `--workdir`; prints the study's table and where its
  files went.

  The flags are defined here, when a study runs as a program, not when its module
  is imported, so that several studies import together (tests, notebooks).
  `table(results, config)` renders the results table. A config field
  `cpu_devices` > 0 splits the host CPU into that many JAX devices before the
  study starts (`irl_jax.train.use_cpu_devices`), so that vmapped seeds run
  side by side on the cores; callers of `run` in a running process (tests,
  notebooks) call `use_cpu_devices` themselves, before JAX's first operation.
  """
  from absl import app, flags, logging
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_file("config", default_config, "Study config file.")
  workdir = flags.DEFINE_string("workdir", default_workdir, "Output directory.")

  def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    t0 = time.perf_counter()
    cpu_devices = config.value.get("cpu_devices", 0)
    if cpu_devices:
      from irl_jax.train.compiled import use_cpu_devices

      try:
        use_cpu_devices(cpu_devices)
      except (ValueError, RuntimeError) as e:
        raise SystemExit(f"config.cpu_devices={cpu_devices!r}: {e}") from e
    results = run(config.value, workdir.value)
    print(table(results, config.value))
    print(f"wrote {workdir.value}/results.md, results.json and plots in "
          f"{time.perf_counter() - t0:.0f} s")

  app.run(main)


def fmt_ci(ci, digits: int = 3, signed: bool = True) -> str:
  m, lo, hi, n = ci
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}] (n={n})"


def resolve_quick(config):
  """A resolved copy of `config` with `config.quick_settings` applied when
  `config.quick` is True."""
  config = config.copy_and_resolve_references()
  if config.get("quick"):
    with config.unlocked():
      for k, v in config.quick_settings.items():
        if k not in config:
          raise ValueError(f"config.quick_settings.{k}: no such config field.")
        config[k] = v
  return config


def positive_int(value, field: str) -> None:
  """Raises `ValueError` naming `config.<field>` unless `value` is an integer >= 1."""
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")


def int_at_least(config, field: str, low: int) -> None:
  """Raises `ValueError` naming `config.<field>` unless it is an integer >= `low`."""
  v = config[field]
  if not isinstance(v, int) or isinstance(v, bool) or v < low:
    raise ValueError(f"config.{field} must be an integer >= {low}, got {v!r}.")


def finite_positive(config, field: str) -> None:
  """Raises `ValueError` naming `config.<field>` unless it is a finite number > 0."""
  v = config[field]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
    raise ValueError(f"config.{field} must be a finite number > 0, got {v!r}.")


def in_open_unit(config, field: str) -> None:
  """Raises `ValueError` naming `config.<field>` unless it lies in (0, 1)."""
  v = config[field]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
    raise ValueError(f"config.{field} must lie in (0, 1), got {v!r}.")


def increasing_ints(config, field: str, low: int, at_least: int = 2) -> None:
  """Raises `ValueError` naming `config.<field>` unless it is `at_least` or more strictly
  increasing integers >= `low`."""
  v = list(config[field])
  if (len(v) < at_least or any(not isinstance(n, int) or isinstance(n, bool) or n < low
                               for n in v) or v != sorted(set(v))):
    raise ValueError(f"config.{field} must be {at_least} or more increasing integers >= "
                     f"{low}, got {tuple(v)!r}.")


def save(results: dict, workdir: str, table: str, plot) -> dict:
  """Writes `results.json`, the `results.md` `table` and the plots (`plot()`); returns
  `results`."""
  write_json(results, workdir)
  write_text(table, workdir)
  plot()
  return results


def learner_config(cls, settings, field: str, **extra):
  """`cls(**settings, **extra)` for a study's config block `config.<field>`; a bad value
  raises `ValueError` naming `config.<field>` and the library's message."""
  try:
    return cls(**{**dict(settings), **extra})
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.{field}: {e}") from None


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name with its family and model numbers (from /proc/cpuinfo on Linux),
  for every timing figure: a virtual machine's name alone ("AMD EPYC") does not tell CPU
  generations apart (family 25 is Zen 3/4, family 26 Zen 5)."""
  fields = {}
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu family", "model") and key not in fields:
          fields[key] = value.strip()
        if not line.strip() and fields:
          break  # the first processor's block is enough
  except OSError:
    pass
  name = fields.get("model name")
  if not name:
    return platform.processor() or platform.machine()
  if "cpu family" in fields and "model" in fields:
    name += f" (family {fields['cpu family']}, model {fields['model']})"
  return name


def write_json(results: dict, workdir: str, name: str = "results.json") -> str:
  """Writes `results` (NumPy values converted) to `workdir/name`; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)

  def default(x):
    if isinstance(x, np.ndarray):
      return x.tolist()
    if isinstance(x, np.generic):
      return x.item()
    return float(x)

  with open(path, "w") as f:
    json.dump(results, f, indent=1, default=default)
  return path


def write_text(text: str, workdir: str, name: str = "results.md") -> str:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  with open(path, "w") as f:
    f.write(text)
  return path
