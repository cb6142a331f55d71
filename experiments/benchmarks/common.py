"""Command-line flags every benchmark shares (defined once, so benchmarks import together)."""

from absl import flags

JSON = flags.DEFINE_bool("json", False, "Print one JSON object per measurement line.")
QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes for a smoke test.")
REPEATS = flags.DEFINE_integer(
    "repeats", None, "Timed repetitions per measurement (default: the benchmark's own)."
)
