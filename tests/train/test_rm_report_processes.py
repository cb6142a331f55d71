"""The reward-model report of two processes joined by `jax.distributed` (real gloo collectives
over 127.0.0.1, each feeding half the rows) equals the report of one process on all rows."""

import json
import os
import subprocess
import sys

import numpy as np
from processes import ROOT, run_processes

SCRIPT = os.path.join(os.path.dirname(__file__), "rm_report.py")


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
  proc = subprocess.run([sys.executable, SCRIPT, f"--out={single}"], cwd=ROOT, timeout=240,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  one = json.loads(single.read_text())

  out = tmp_path / "multi.json"
  run_processes([sys.executable, SCRIPT, f"--out={out}", "--devices=1", "--mesh=data:2"])
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
