"""Huge-page-backed host allocations for CPU runs of the entry points.

XLA:CPU allocates each run of a compiled program's temporary buffers afresh (one
block, hundreds of MB for a training step of the benchmarks' model) and frees it
after: glibc maps such a block with `mmap` and unmaps it on `free`, so every step
touches new pages, and with 4 KiB pages that is about a quarter of a million page
faults per GB, each one zeroing its page. glibc (2.35 and later) can ask the
kernel for transparent huge pages on the blocks it maps
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), which cut the faults about 250-fold there.
On a 2-core AMD EPYC (family 26, model 2) it took a compiled MLE step of the
peers benchmark from about 1.04 s to 0.76 s. The values computed are the same:
only where the memory comes from changes.

glibc reads its tunables when a process starts, so `reexec_with_huge_pages()`
re-executes the current command with the tunable added, once. Entry points call it
before their work; it does nothing where it cannot apply (not Linux, no glibc 2.35+,
transparent huge pages `never`), where the tunable is already set, or when
`IRL_JAX_HUGE_PAGES=0`. Child processes (the peers' virtual environments) inherit
the setting, so both sides of a benchmark run with the same allocator behaviour.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "IRL_JAX_HUGE_PAGES"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_ENABLED) -> str | None:
  """The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), or None."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
  """`(major, minor)` of the running glibc, or None (another C library, or not Linux)."""
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION")  # e.g. "glibc 2.36"
  except (AttributeError, ValueError, OSError):
    return None
  if not name or not name.startswith("glibc "):
    return None
  try:
    major, minor = name.split()[1].split(".")[:2]
    return int(major), int(minor)
  except ValueError:
    return None


def huge_pages_active(env=None) -> bool:
  """Whether this process runs with glibc's hugetlb tunable on a kernel that honours it."""
  env = os.environ if env is None else env
  return TUNABLE in env.get("GLIBC_TUNABLES", "").split(":") and thp_mode() in (
      "always", "madvise")


def reexec_with_huge_pages(*, env=None, execve=os.execve, orig_argv=None) -> bool:
  """Re-execute this command with `GLIBC_TUNABLES` holding `glibc.malloc.hugetlb=1`.

  Returns False (and does nothing) where it does not apply, see the module doc; the
  real `execve` never returns otherwise. `env`, `execve` and `orig_argv` are for tests.
  """
  env = dict(os.environ if env is None else env)
  if env.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
    return False
  tunables = env.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables:
    return False  # already chosen, by us (after the re-exec) or by the user
  version = glibc_version()
  if version is None or version < (2, 35) or thp_mode() not in ("always", "madvise"):
    return False
  argv = list(sys.orig_argv if orig_argv is None else orig_argv)
  if not argv:
    return False
  env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
  sys.stdout.flush()
  sys.stderr.flush()
  execve(sys.executable, [sys.executable, *argv[1:]], env)
  return True
