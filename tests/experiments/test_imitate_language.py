"""Smoke tests of the main job: the quick config end to end, and the Colab notebook."""

import json
import os

import pytest

from experiments import imitate_language as il
from experiments.configs.imitate_language import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_config_writes_table_plots_and_json(tmp_path):
  config = get_config()
  config.quick = True
  results = il.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "accuracy_vs_diversity.png",
               "learning_curves.png", "reward_vs_score.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  names = list(saved["methods"])
  assert names == ["MLE", "IQLearn λ=1.0 γ=0.9", "IQLearn λ=0.1 γ=1.0 online α=0.1"]
  table = (tmp_path / "results.md").read_text()
  for name in names:
    assert f"| {name} |" in table
  for r in saved["methods"].values():
    assert len(r["per_seed"]) == 3
    for key in ("accuracy_t1", "step_validity_t1", "accuracy_tlow", "distinct_2_t1"):
      assert 0.0 <= r["summary"][key][0] <= 1.0
    assert -1.0 <= r["summary"]["reward_spearman"][0] <= 1.0
    assert r["summary"]["entropy_t1"][0] > 0 and r["step_time"] > 0
  assert {r["size"] for r in saved["sweep"].values()} == {250, 1000}
  # Per-token rewards of one response: one per response character plus EOS.
  trained = results["trained"]["IQLearn λ=1.0 γ=0.9"]
  rewards = il.token_rewards(trained, results["tokenizer"], "+ 1 2 3\n", "1+2=3\n3+3=6\n#### 6",
                             gamma=0.9)
  assert len(rewards) == len("1+2=3\n3+3=6\n#### 6") + 1 and rewards[-1][0] == "<eos>"


def test_encode_rejects_overlong_examples():
  from experiments.tasks import arithmetic as task
  from irl_jax.data import char_tokenizer

  tok = char_tokenizer(task.ALPHABET)
  with pytest.raises(ValueError, match="does not fit seq_len=8"):
    il.encode([{"prompt": "+ 1 2\n", "response": "1+2=3\n#### 3"}], tok, seq_len=8, prompt_len=8)


def test_colab_notebook_executes():
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(os.path.join(ROOT, "colab", "imitate_language.ipynb"), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "sequence reward" in outputs and "sampled generation" in outputs
  images = [o for c in nb.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 3
