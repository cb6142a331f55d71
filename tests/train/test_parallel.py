"""Same loss trajectory on 1 device, 8 fake CPU devices (data and FSDP meshes), and two
processes joined by jax.distributed (real gloo collectives over 127.0.0.1)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from processes import ROOT, run_processes

SCRIPT = os.path.join(os.path.dirname(__file__), "trajectory.py")


def _run(tmp_path, name, *args, timeout=240):
  out = tmp_path / f"{name}.json"
  cmd = [sys.executable, SCRIPT, f"--out={out}", *args]
  subprocess.run(cmd, check=True, cwd=ROOT, timeout=timeout, capture_output=True)
  return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("single"), "single")


@pytest.mark.parametrize("mesh", ["data:8", "fsdp:8", "data:2,fsdp:4"])
def test_eight_devices_match_one(single_device, tmp_path, mesh):
  result = _run(tmp_path, "eight", "--devices=8", f"--mesh={mesh}")
  assert result["devices"] == 8
  if "fsdp" in mesh:
    assert "fsdp" in result["specs"]["embed"]  # parameters really are sharded
  np.testing.assert_allclose(result["losses"], single_device["losses"], rtol=2e-6)


def test_micro_batches_match_one_big_batch(single_device, tmp_path):
  result = _run(tmp_path, "micro", "--micro_batches=4")
  np.testing.assert_allclose(result["losses"], single_device["losses"], rtol=2e-6)


def test_two_processes_match_one(single_device, tmp_path):
  out = tmp_path / "multi.json"
  run_processes([sys.executable, SCRIPT, f"--out={out}", "--devices=2", "--mesh=data:2,fsdp:2"])
  result = json.loads(out.read_text())
  assert result["processes"] == 2 and result["devices"] == 4
  np.testing.assert_allclose(result["losses"], single_device["losses"], rtol=2e-6)
