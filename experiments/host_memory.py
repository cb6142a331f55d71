"""A retained, huge-page-backed heap for CPU runs of the entry points.

XLA:CPU allocates each run of a compiled program's temporary buffers afresh (one
block, hundreds of MB for a training step of the peers benchmark's model) from a
worker thread, and frees it after. glibc serves such a block with its own `mmap`
and unmaps it on `free`, so every step touches new pages: with 4 KiB pages about a
quarter of a million page faults per GB, each zeroing its page. Four glibc tunables
(glibc 2.35 and later) stop that:

- `glibc.malloc.arena_max=1`: every thread allocates from the main heap;
- `glibc.malloc.mmap_max=0`: large blocks come from that heap, not from `mmap`;
- `glibc.malloc.trim_threshold=<128 GiB>`: freed memory stays in the heap for the next
  step instead of going back to the kernel;
- `glibc.malloc.hugetlb=1`: the heap is backed by transparent huge pages (2 MiB), so
  the first touch of new memory faults 512 times less often and the TLB covers more.

On a 2-core AMD EPYC (family 26, model 2), in one process running the peers
benchmark's compiled MLE and reward-model steps one after the other, the page faults
per pair of steps went from about 341,000 to 0, and the steps from about 1.04 s and
0.66 s to 0.81 s and 0.51 s. Alone, `hugetlb=1` made the steps as fast, but a JAX step
right after a PyTorch step in the same process then took about twice as long; the
retained heap removed that. The values computed are the same: only where the memory
comes from changes. The cost: the process keeps its peak memory until it exits.

glibc reads its tunables when a process starts, so `reexec_with_huge_pages()`
re-executes the current command with them added, once. Entry points call it before
their work; it does nothing where it cannot apply (not Linux, no glibc 2.35+,
transparent huge pages `never`), where `GLIBC_TUNABLES` already sets any of these
four, or when `IRL_JAX_HUGE_PAGES=0`. `experiments.train` asks for it only where JAX
can run on nothing but the CPU (`cpu_only=True`); the benchmarks, which compare CPU
steps, always. Child processes (the peers' virtual environments) inherit the
setting, so both sides of a benchmark run with the same allocator.
"""

from __future__ import annotations

import os
import pkgutil
import sys

TUNABLES = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
            f"glibc.malloc.trim_threshold={128 << 30}", "glibc.malloc.hugetlb=1")
_NAMES = tuple(t.split("=")[0] for t in TUNABLES)
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
  """Whether this process runs with all of `TUNABLES` on a kernel with transparent huge
  pages."""
  env = os.environ if env is None else env
  have = env.get("GLIBC_TUNABLES", "").split(":")
  return all(t in have for t in TUNABLES) and thp_mode() in ("always", "madvise")


_ACCELERATOR_PLUGINS = ("jax_cuda", "jax_rocm", "libtpu")


def may_use_accelerator(env=None, modules=None) -> bool:
  """Whether JAX in this environment may run on an accelerator: `JAX_PLATFORMS` names
  another platform than `cpu`, or, with it unset, a CUDA, ROCm or TPU plugin is
  installed. Reads no more than module names (imports nothing)."""
  env = os.environ if env is None else env
  platforms = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return any(p != "cpu" for p in platforms)
  if modules is None:
    modules = [m.name for m in pkgutil.iter_modules()]
    try:
      import jax_plugins  # namespace package of the PJRT plugins, if any

      modules += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
    except ImportError:
      pass
  return any(name.startswith(prefix) for name in modules
             for prefix in (*_ACCELERATOR_PLUGINS, "xla_cuda", "xla_rocm"))


def reexec_with_huge_pages(*, cpu_only: bool = False, env=None, execve=os.execve,
                           orig_argv=None) -> bool:
  """Re-execute this command with `TUNABLES` added to `GLIBC_TUNABLES`.

  Returns False (and does nothing) where it does not apply, see the module doc, and
  with `cpu_only` where JAX may run on an accelerator (`may_use_accelerator`: there the
  host heap matters less and keeping its peak is a cost for nothing); also when the
  re-execution itself fails. The real `execve` never returns otherwise. `env`,
  `execve` and `orig_argv` are for tests.
  """
  env = dict(os.environ if env is None else env)
  if env.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
    return False
  if cpu_only and may_use_accelerator(env):
    return False
  tunables = env.get("GLIBC_TUNABLES", "")
  if any(f"{name}=" in tunables for name in _NAMES):
    return False  # already chosen, by us (after the re-exec) or by the user
  version = glibc_version()
  if version is None or version < (2, 35) or thp_mode() not in ("always", "madvise"):
    return False
  argv = list(sys.orig_argv if orig_argv is None else orig_argv)
  # A bare interpreter, or a script read from standard input, cannot be run again.
  if len(argv) < 2 or argv[1] == "-" or not sys.executable:
    return False
  env["GLIBC_TUNABLES"] = ":".join([tunables, *TUNABLES] if tunables else TUNABLES)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    execve(sys.executable, [sys.executable, *argv[1:]], env)
  except OSError:
    return False  # run on, with the default heap
  return True
