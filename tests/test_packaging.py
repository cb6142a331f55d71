"""A regular (non-editable) wheel ships every module of irl_jax and nothing else at top level,
and the installed wheel imports every subpackage from outside the repository."""

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules_in_checkout():
  out = set()
  for folder, dirs, files in os.walk(os.path.join(ROOT, "irl_jax")):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for name in files:
      if name.endswith(".py"):
        out.add(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/"))
  return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("wheel")
  # Built from a clean copy: setuptools' build/ folder would otherwise be left in the
  # checkout, and a stale one could ship modules that no longer exist.
  src = out / "src"
  shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
      ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "workdir*"))
  # The build backend (setuptools, wheel) is a test dependency: no isolated download.
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                         "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  wheels = list(out.glob("irl_jax-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0]


def test_wheel_ships_every_module_and_no_experiments(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  expected = _modules_in_checkout()
  assert "irl_jax/train/__init__.py" in expected  # every subpackage is a package
  missing = sorted(expected - names)
  assert not missing, f"modules missing from {wheel.name}: {missing}"
  top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
  assert top == {"irl_jax"}, top


def test_every_folder_of_the_package_is_a_package():
  for folder, dirs, files in os.walk(os.path.join(ROOT, "irl_jax")):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    if any(f.endswith(".py") for f in files):
      assert "__init__.py" in files, f"{folder} has modules but no __init__.py"


def test_installed_wheel_imports_every_subpackage_outside_the_repository(wheel, tmp_path):
  target = tmp_path / "site"
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                         "--target", str(target), str(wheel)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  script = textwrap.dedent("""
      import importlib, pkgutil, sys
      import irl_jax
      assert irl_jax.__file__.startswith(sys.argv[1]), irl_jax.__file__
      names = [m.name for m in pkgutil.walk_packages(irl_jax.__path__, "irl_jax.")]
      for name in names:
          module = importlib.import_module(name)
          assert module.__file__.startswith(sys.argv[1]), module.__file__
      from irl_jax import data, eval, losses, models, tabular, train
      assert callable(train.train) and callable(models.from_pretrained)
      assert callable(tabular.soft_value_iteration)
      print(len(names), "modules")
  """)
  env = dict(os.environ, PYTHONPATH=str(target))
  run = subprocess.run([sys.executable, "-c", script, str(target)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  n = len([m for m in _modules_in_checkout() if not m.endswith("__init__.py")])
  n += len([m for m in _modules_in_checkout() if m.endswith("/__init__.py")]) - 1
  assert f"{n} modules" in run.stdout, (n, run.stdout)
