"""The reward-model report of two processes joined by `jax.distributed` (real gloo collectives
over 127.0.0.1, each feeding half the rows) equals the report of one process on all rows."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "rm_report.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _flat(report, prefix=""):
  out = {}
  for key, value in report.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def test_two_processes_report_what_one_does(tmp_path):
  single = tmp_path / "single.json"
  subprocess.run([sys.executable, SCRIPT, f"--out={single}"], check=True, cwd=ROOT,
                 timeout=240, capture_output=True)
  one = json.loads(single.read_text())

  port = _free_port()
  out = tmp_path / "multi.json"
  common = [sys.executable, SCRIPT, f"--out={out}", "--devices=1", "--mesh=data:2",
            "--num_processes=2", f"--coordinator=127.0.0.1:{port}"]
  procs = [subprocess.Popen([*common, f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT) for i in range(2)]
  try:
    logs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
  two = json.loads(out.read_text())
  assert (one["processes"], two["processes"], two["devices"]) == (1, 2, 2)

  a, b = _flat(one["report"]), _flat(two["report"])
  assert sorted(a) == sorted(b)
  # 24 rankings, of which those with two or more responses are pairs: the count must be the
  # whole eval set's, not one process's half.
  assert a["n"] == b["n"] and 12 < a["n"] < 24
  assert a["rewards/n"] == b["rewards/n"] > a["n"]
  for key in a:
    np.testing.assert_allclose(np.asarray(b[key], float), np.asarray(a[key], float), rtol=1e-5,
                               atol=1e-6, err_msg=key)
