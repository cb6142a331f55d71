"""`experiments.host_memory`: when the entry points re-execute with glibc's heap tunables
(and when not), the parsing of the kernel's and glibc's settings, and that the
re-executed process runs the same compiled program with far fewer page faults."""

import json
import os
import subprocess
import sys

import pytest

from experiments import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("text,want", [("always [madvise] never\n", "madvise"),
                                       ("[always] madvise never\n", "always"),
                                       ("always madvise [never]\n", "never"),
                                       ("garbage\n", None)])
def test_thp_mode_reads_the_bracketed_choice(tmp_path, text, want):
  path = tmp_path / "enabled"
  path.write_text(text)
  assert host_memory.thp_mode(str(path)) == want
  assert host_memory.thp_mode(str(tmp_path / "missing")) is None


class _Exec:
  def __init__(self):
    self.calls = []

  def __call__(self, path, argv, env):
    self.calls.append((path, argv, env))


@pytest.fixture
def applies(monkeypatch):
  monkeypatch.setattr(host_memory, "thp_mode", lambda path=None: "madvise")
  monkeypatch.setattr(host_memory, "glibc_version", lambda: (2, 36))
  monkeypatch.setattr(sys, "platform", "linux")


ARGV = ["python3", "-m", "experiments.benchmarks.peers", "--json"]


ALL = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
       "glibc.malloc.trim_threshold=137438953472:glibc.malloc.hugetlb=1")


@pytest.mark.parametrize("tunables,want", [
    (None, ALL), ("glibc.malloc.tcache_count=0", "glibc.malloc.tcache_count=0:" + ALL)])
def test_reexec_adds_the_tunable_and_keeps_the_command(applies, tunables, want):
  env = {"PATH": "/bin", "IRL_JAX_X": "1"} | ({"GLIBC_TUNABLES": tunables} if tunables else {})
  execve = _Exec()
  assert host_memory.reexec_with_huge_pages(env=env, execve=execve, orig_argv=ARGV)
  (path, argv, new_env), = execve.calls
  assert path == sys.executable and argv == [sys.executable, *ARGV[1:]]
  assert new_env["GLIBC_TUNABLES"] == want
  assert new_env["PATH"] == "/bin" and new_env["IRL_JAX_X"] == "1"
  assert "GLIBC_TUNABLES" not in env or env["GLIBC_TUNABLES"] == tunables  # caller's untouched


@pytest.mark.parametrize("why", ["opted_out", "already_set", "user_chose_off",
                                 "user_chose_arenas", "thp_never", "old_glibc", "no_glibc",
                                 "not_linux", "accelerator", "stdin_script"])
def test_reexec_does_nothing_where_it_does_not_apply(applies, monkeypatch, why):
  env = {"PATH": "/bin"}
  if why == "opted_out":
    env["IRL_JAX_HUGE_PAGES"] = "0"
  elif why == "already_set":
    env["GLIBC_TUNABLES"] = ALL
  elif why == "user_chose_off":
    env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"
  elif why == "user_chose_arenas":
    env["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=4"
  elif why == "thp_never":
    monkeypatch.setattr(host_memory, "thp_mode", lambda path=None: "never")
  elif why == "old_glibc":
    monkeypatch.setattr(host_memory, "glibc_version", lambda: (2, 34))
  elif why == "no_glibc":
    monkeypatch.setattr(host_memory, "glibc_version", lambda: None)
  elif why == "accelerator":
    env["JAX_PLATFORMS"] = "cuda"
  elif why == "not_linux":
    monkeypatch.setattr(sys, "platform", "darwin")
  argv = ["python3", "-"] if why == "stdin_script" else ARGV
  execve = _Exec()
  assert not host_memory.reexec_with_huge_pages(cpu_only=True, env=env, execve=execve,
                                                orig_argv=argv)
  assert execve.calls == []


def test_cpu_only_reexecs_where_jax_has_only_the_cpu_and_the_benchmarks_always(applies):
  env = {"PATH": "/bin", "JAX_PLATFORMS": "cpu"}
  execve = _Exec()
  assert host_memory.reexec_with_huge_pages(cpu_only=True, env=env, execve=execve,
                                            orig_argv=ARGV)
  env["JAX_PLATFORMS"] = "cuda,cpu"
  assert not host_memory.reexec_with_huge_pages(cpu_only=True, env=env, execve=execve,
                                                orig_argv=ARGV)
  assert host_memory.reexec_with_huge_pages(env=env, execve=execve, orig_argv=ARGV)
  assert len(execve.calls) == 2


@pytest.mark.parametrize("env,modules,want", [
    ({"JAX_PLATFORMS": "cpu"}, ["jax_cuda12_plugin"], False),
    ({"JAX_PLATFORMS": "tpu"}, [], True),
    ({}, ["numpy", "jax"], False),
    ({}, ["numpy", "jax_cuda12_plugin"], True),
    ({}, ["libtpu"], True),
    ({}, ["xla_cuda12"], True)])
def test_may_use_accelerator(env, modules, want):
  assert host_memory.may_use_accelerator(env, modules) is want


def test_a_failed_reexec_runs_on(applies):
  def failing(path, argv, env):
    raise OSError("exec format error")

  assert not host_memory.reexec_with_huge_pages(env={"PATH": "/bin"}, execve=failing,
                                                orig_argv=ARGV)


CHILD = """
import json, os, resource, sys
from experiments.host_memory import huge_pages_active, reexec_with_huge_pages
if sys.argv[1] == "reexec":
  reexec_with_huge_pages()
import jax, jax.numpy as jnp
# A program whose temporaries (about 200 MB) are allocated afresh at every call.
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) @ x) + jnp.sum(jnp.exp(x @ x.T)))
x = jnp.ones((4096, 64))
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"active": huge_pages_active(), "faults": faults,
                  "tunables": os.environ.get("GLIBC_TUNABLES")}))
"""


# Under transparent huge pages `always` the plain child's temporaries get huge pages too.
@pytest.mark.skipif(not sys.platform.startswith("linux") or host_memory.thp_mode() != "madvise"
                    or (host_memory.glibc_version() or (0, 0)) < (2, 35),
                    reason="needs Linux, glibc 2.35+ and transparent huge pages on madvise")
def test_the_reexecuted_child_runs_the_same_program_with_far_fewer_page_faults():
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "IRL_JAX_HUGE_PAGES")}
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")

  def child(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])

  plain, huge = child("plain"), child("reexec")
  assert not plain["active"] and plain["tunables"] is None
  assert huge["active"] and huge["tunables"] == ALL
  # Plain: a fault per 4 KiB page of every step's fresh temporaries. Re-executed: the
  # freed temporaries stay in the (huge-page) heap for the next step.
  assert plain["faults"] > 20_000, plain
  assert huge["faults"] * 20 < plain["faults"], (plain, huge)
