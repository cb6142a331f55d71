"""The tabular IRL tutorial notebook (`colab/tabular_irl.ipynb`) executes and prints what it
claims."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(ROOT, "colab", "tabular_irl.ipynb")


def _number(outputs, label):
  """The first number printed after `label`."""
  match = re.search(re.escape(label) + r"[^0-9+-]*([-+]?[0-9.]+(?:e[-+]?[0-9]+)?)", outputs)
  assert match, f"{label!r} not printed"
  return float(match.group(1))


def test_notebook_is_stored_without_outputs():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(PATH, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None


def test_colab_notebook_executes():
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(PATH, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  for text in ("S = 36 states, A = 4 actions", "transitions: (36, 4, 36)",
               "demonstrations: (5, 20, 60)", "expert occupancies: (5, 36, 4)",
               "MCE IRL expert-normalised return per seed",
               "occupancy mismatch max abs difference",
               "shaped reward, same dynamics: max policy difference",
               "shaped reward, new dynamics: max policy difference",
               "distance_to_constant_class", "distance_to_shaping_class (new dynamics)",
               "IQ-Learn greedy-action agreement", "IQ-Learn expert-normalised return"):
    assert text in outputs, text
  # The gradient of the MCE IRL loss is the occupancy mismatch (ρ_θ − ρ_E)/α.
  assert _number(outputs, "float32: occupancy mismatch max abs difference") < 1e-3
  assert _number(outputs, "float64: occupancy mismatch max abs difference") < 1e-9
  # Shaping leaves the soft-optimal policy unchanged, until the dynamics change.
  assert _number(outputs, "shaped reward, same dynamics: max policy difference") < 1e-4
  assert _number(outputs, "shaped reward, new dynamics: max policy difference") > 0.1
  assert _number(outputs, "distance_to_constant_class:") > 1.0
  assert _number(outputs, "distance_to_shaping_class (training dynamics):") < 1e-3
  assert _number(outputs, "distance_to_shaping_class (new dynamics):") > 0.1
  # The learners imitate: near-expert returns.
  assert _number(outputs, "MCE IRL expert-normalised return: mean") > 0.8
  assert _number(outputs, "IQ-Learn expert-normalised return:") > 0.8
  images = [o for c in nb.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 3
