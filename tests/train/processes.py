"""Helpers for the tests that join local processes with `jax.distributed` (127.0.0.1).

`process_args()` parses the flags every such script takes and sets the fake device count
(before JAX starts); `initialize(args)` joins the processes; `run_processes(cmd)` starts one
process per `--process_id` and waits for all of them.
"""

import argparse
import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def process_args(parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
  """`--out`, `--mesh`, `--devices`, `--num_processes`, `--process_id`, `--coordinator` (and
  the parser's own flags); sets `XLA_FLAGS` to `--devices` fake CPU devices."""
  p = parser or argparse.ArgumentParser()
  p.add_argument("--out", required=True)
  p.add_argument("--mesh", default="data:1")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--coordinator", default="")
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  return args


def initialize(args: argparse.Namespace) -> None:
  """`jax.distributed.initialize` when the script runs as one of several processes."""
  if args.num_processes > 1:
    import jax

    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(command: list[str], num_processes: int = 2, timeout: float = 240) -> None:
  """Run `command` once per process (adding `--num_processes`, `--coordinator` on a free
  local port and `--process_id`) from the repository root; raise with both logs' tails if
  any process fails."""
  common = [*command, f"--num_processes={num_processes}",
            f"--coordinator=127.0.0.1:{free_port()}"]
  procs = [subprocess.Popen([*common, f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT) for i in range(num_processes)]
  try:
    logs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:
      p.kill()
  if any(p.returncode != 0 for p in procs):
    raise AssertionError("".join(log[-3000:] for log in logs))
