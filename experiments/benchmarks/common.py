"""Command-line flags every benchmark shares (defined once, so benchmarks import together)."""

from absl import flags

JSON = flags.DEFINE_bool("json", False, "Print one JSON object per measurement line.")
QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes for a smoke test.")
REPEATS = flags.DEFINE_integer(
    "repeats", None, "Timed repetitions per measurement (default: the benchmark's own)."
)


def run_main(main) -> None:
  """`absl.app.run(main)`, after re-executing the command with huge-page-backed host
  allocations where that applies (`experiments.host_memory`); every row records it."""
  from absl import app

  from experiments.host_memory import reexec_with_huge_pages

  reexec_with_huge_pages()
  app.run(main)
