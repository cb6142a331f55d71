"""`experiments.study.command_line`: a study run as a program, with `config.cpu_devices`
splitting the host CPU into JAX devices before the study starts."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG = '''
import ml_collections


def get_config():
  return ml_collections.ConfigDict(dict(cpu_devices={cpu_devices}, seeds=6))
'''

DRIVER = '''
import sys

import jax

from experiments import study


def run(config, workdir):
  # The study's first JAX operation: the devices are whatever command_line left.
  return {{"devices": jax.device_count(), "sum": float(jax.numpy.arange(config.seeds).sum())}}


study.command_line(run, lambda results, config: f"table {{results}}", {config!r}, {workdir!r})
'''


def _run(tmp_path, cpu_devices):
  config = tmp_path / "config.py"
  config.write_text(CONFIG.format(cpu_devices=cpu_devices))
  driver = tmp_path / "driver.py"
  driver.write_text(DRIVER.format(config=str(config), workdir=str(tmp_path / "work")))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"  # CPU devices even on a machine with an accelerator
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                        timeout=120, cwd=str(tmp_path), env=env)


@pytest.mark.parametrize("cpu_devices, devices", [(3, 3), (0, 1)])
def test_cpu_devices_sets_the_device_count_before_the_study(tmp_path, cpu_devices, devices):
  proc = _run(tmp_path, cpu_devices)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"table {{'devices': {devices}, 'sum': 15.0}}" in proc.stdout
  assert "wrote " in proc.stdout


def test_a_bad_cpu_devices_names_the_config_field(tmp_path):
  proc = _run(tmp_path, -2)
  assert proc.returncode != 0
  assert "config.cpu_devices=-2" in proc.stderr
  assert "n must be a positive integer, got -2" in proc.stderr


def test_cpu_model_names_the_family_and_model_of_the_first_processor(tmp_path):
  from experiments.study import cpu_model

  block = "processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: {f}\nmodel\t\t: 2\n" \
          "model name\t: AMD EPYC\nflags\t\t: fpu avx512f\n\n"
  info = tmp_path / "cpuinfo"
  info.write_text(block.format(i=0, f=26) + block.format(i=1, f=25))
  assert cpu_model(str(info)) == "AMD EPYC (family 26, model 2)"
  info.write_text("processor\t: 0\nmodel name\t: Some CPU\n\n")
  assert cpu_model(str(info)) == "Some CPU"
  assert cpu_model(str(tmp_path / "missing"))  # falls back to the platform's name
