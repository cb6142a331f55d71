"""The main job: the quick config end to end, the verdict rules and the config checks (the
Colab notebook: test_imitate_language_notebook.py, a file of its own so that the two long
runs can go to different test workers)."""

import json

import numpy as np
import pytest

from experiments import imitate_language as il
from experiments.configs.imitate_language import get_config


def test_quick_config_writes_table_plots_json_and_verdicts(tmp_path):
  config = get_config()
  config.quick = True
  results = il.run(config, str(tmp_path), log=lambda *_: None)
  for name in ("results.md", "results.json", "accuracy_vs_diversity.png",
               "learning_curves.png", "reward_vs_score.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  names = list(saved["methods"])
  assert names == ["MLE", "IQLearn λ=0.1 γ=0.9", "IQLearn λ=0.1 γ=0.9 online α=0.1"]
  table = (tmp_path / "results.md").read_text()
  for name in names:
    assert f"| {name} |" in table
  for r in saved["methods"].values():
    assert len(r["per_seed"]) == 5  # five seeds, trained in one vmapped function
    for key in ("accuracy_t1", "score_t1", "accuracy_tlow", "distinct_2_t1"):
      mean, low, high, n = r["summary"][key]
      assert 0.0 <= mean <= 1.0 and low <= mean <= high and n == 5
    assert -1.0 <= r["summary"]["reward_spearman"][0] <= 1.0
    assert r["summary"]["entropy_t1"][0] > 0 and r["step_time"] > 0
    # Seeds differ: the vmapped runs are not copies of one another.
    assert len({row["heldout_nll"] for row in r["per_seed"]}) == 5
  # The quick config times only the two methods finding (5) compares in interleaved rounds;
  # the online method keeps its training run's step time and shows no ratio.
  assert saved["methods"]["MLE"]["step_time_over_mle"] == 1.0
  assert saved["methods"]["IQLearn λ=0.1 γ=0.9"]["step_time_over_mle"] > 0
  assert "step_time_over_mle" not in saved["methods"]["IQLearn λ=0.1 γ=0.9 online α=0.1"]
  assert "| IQLearn λ=0.1 γ=0.9 online α=0.1 |" in table
  assert next(line for line in table.splitlines()
              if line.startswith("| IQLearn λ=0.1 γ=0.9 online α=0.1 |")).endswith("| – |")
  assert {r["size"] for r in saved["sweep"].values()} == {250}
  verdicts = saved["verdicts"]
  assert [v["finding"][:3] for v in verdicts] == ["(1)", "(2)", "(3)", "(4)", "(5)"]
  for v in verdicts:
    assert v["verdict"] in ("reproduced", "not at this scale", "contradicted")
    assert f"**{v['verdict']}**" in table
  # Per-token rewards of one response: one per response character plus EOS.
  trained = results["trained"]["IQLearn λ=0.1 γ=0.9"]
  rewards = il.token_rewards(trained, results["tokenizer"], "+ 1 2 3\n", "1+2=3\n3+3=6\n#### 6",
                             gamma=0.9)
  assert len(rewards) == len("1+2=3\n3+3=6\n#### 6") + 1 and rewards[-1][0] == "<eos>"


def test_step_time_methods_every_method_by_default_and_the_compared_two_when_off():
  config = get_config()
  assert il.step_time_methods(config) == list(config.methods)
  config.step_time_all_methods = False
  assert [il.method_name(m) for m in il.step_time_methods(config)] == [
      "MLE", "IQLearn λ=0.1 γ=0.9"]


def _results(per_seed_by_method, **extra):
  methods = {name: {"per_seed": rows, "summary": il.summarise(rows, rows[0].keys()),
                    "step_time": rows[0].get("_time", 1.0)}
             for name, rows in per_seed_by_method.items()}
  return {"methods": methods, "sweep": {}, "step_time_source": "test", **extra}


def _rows(**columns):
  n = len(next(iter(columns.values())))
  return [{k: float(v[i]) for k, v in columns.items()} for i in range(n)]


def test_verdict_rules_decide_on_paired_intervals():
  config = get_config()
  base = dict(accuracy_tlow=[0.8, 0.7, 0.75, 0.72, 0.78], self_bleu_t1=[0.5] * 5,
              reward_spearman=[0.1, 0.0, 0.05, -0.05, 0.02])
  # IQLearn: same accuracy up to noise, clearly lower Self-BLEU, far better rewards.
  iq = dict(accuracy_tlow=[0.81, 0.69, 0.76, 0.71, 0.78], self_bleu_t1=[0.4, 0.41, 0.39, 0.4, 0.42],
            reward_spearman=[0.6, 0.65, 0.7, 0.55, 0.62])
  results = _results({"MLE": _rows(**base), "IQLearn λ=0.1 γ=0.9": _rows(**iq)})
  v = {x["finding"][:3]: x for x in il.verdicts(results, config)}
  assert v["(1)"]["verdict"] == "reproduced"
  assert v["(4)"]["verdict"] == "reproduced"
  assert v["(5)"]["verdict"] == "reproduced" and "1.000" in v["(5)"]["number"]
  # Clearly worse accuracy contradicts finding (1); worse rewards contradict (4).
  worse = dict(iq, accuracy_tlow=[0.5, 0.45, 0.5, 0.48, 0.52],
               reward_spearman=[-0.5, -0.4, -0.6, -0.45, -0.55])
  results = _results({"MLE": _rows(**base), "IQLearn λ=0.1 γ=0.9": _rows(**worse)})
  v = {x["finding"][:3]: x for x in il.verdicts(results, config)}
  assert v["(1)"]["verdict"] == "contradicted" and v["(4)"]["verdict"] == "contradicted"
  # Same accuracy and same diversity: (1) is not established at this scale.
  same = dict(base, accuracy_tlow=[0.79, 0.72, 0.74, 0.73, 0.77])
  results = _results({"MLE": _rows(**base), "IQLearn λ=0.1 γ=0.9": _rows(**same)})
  v = {x["finding"][:3]: x for x in il.verdicts(results, config)}
  assert v["(1)"]["verdict"] == "not at this scale"
  # Identical accuracy everywhere (saturated) and no diversity gain: still not established.
  flat = dict(base, accuracy_tlow=base["accuracy_tlow"])
  results = _results({"MLE": _rows(**base), "IQLearn λ=0.1 γ=0.9": _rows(**flat)})
  v = {x["finding"][:3]: x for x in il.verdicts(results, config)}
  assert v["(1)"]["verdict"] == "not at this scale"
  # An entropy bonus that buys as much diversity at no accuracy cost contradicts (1).
  ent = dict(base, self_bleu_t1=[0.38, 0.39, 0.37, 0.38, 0.4])
  results = _results({"MLE": _rows(**base), "IQLearn λ=0.1 γ=0.9": _rows(**iq),
                      "MLE + entropy 0.01": _rows(**ent)})
  v = {x["finding"][:3]: x for x in il.verdicts(results, config)}
  assert v["(1)"]["verdict"] == "contradicted"
  assert "MLE + entropy 0.01 − MLE" in v["(1)"]["number"]


def test_interval_is_a_t_interval():
  scipy_stats = pytest.importorskip("scipy.stats")
  x = np.array([0.1, 0.4, 0.35, 0.2, 0.3])
  mean, low, high, n = il.interval(x)
  lo, hi = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
  assert np.isclose(mean, x.mean()) and np.isclose(low, lo) and np.isclose(high, hi) and n == 5
  # An undefined seed is counted out, not silently averaged in.
  assert il.interval([0.1, float("nan"), 0.3])[3] == 2


def test_method_errors_name_the_config_field():
  with pytest.raises(ValueError, match=r"config\.methods: 'iq_learn' has no hyperparameters"):
    il.method_spec(dict(objective="iq_learn", lambda_=0.1))
  with pytest.raises(ValueError, match=r"config\.methods: 'dpo' needs more than demonstrations"):
    il.method_spec(dict(objective="dpo"))


def test_held_out_prompts_are_never_trained_on():
  from experiments.tasks import arithmetic

  config = il.resolve(get_config())
  with config.unlocked():
    config.num_demonstrations, config.num_heldout = 3000, 256
  study = il.make_data(config, arithmetic)
  train_prompts = {ex["prompt"] for ex in study.train_pool}
  held = {t.split("\n")[0] + "\n" for t in (
      study.tokenizer.decode([int(i) for i, s in zip(row, seg, strict=True) if s],
                             skip_special_tokens=True)
      for row, seg in zip(study.heldout["input_ids"], study.heldout["segment_ids"], strict=True))}
  assert len(study.train_pool) == 3000 and len(held) > 100
  assert not held & train_prompts
  # The probe: 4 responses per eval prompt, the correct one scoring highest.
  assert len(study.probe_scores) == 4 * config.num_eval_prompts
  assert np.all(study.probe_scores[::4] == 1.0) and np.all(study.probe_scores[1::4] < 1.0)


def test_duplicate_methods_and_a_missing_baseline_are_config_errors():
  config = get_config()
  config.methods = [dict(objective="mle"), dict(objective="mle", chunk_size=16)]
  with pytest.raises(ValueError, match=r"config\.methods: \['MLE'\] appear twice"):
    il.resolve(config)
  config = get_config()
  config.methods = [dict(objective="iq_learn", td_weight=0.1, gamma=0.9)]
  with pytest.raises(ValueError, match=r"config\.baseline: 'MLE' is not one of"):
    il.resolve(config)


def test_full_grid_adds_the_missing_grid_points_once():
  config = get_config()
  config.full_grid = True
  names = [il.method_name(m) for m in il.resolve(config).methods]
  assert len(names) == len(set(names))
  for lam in (0.01, 0.1, 1.0):
    for g in (0.9, 1.0):
      assert f"IQLearn λ={lam} γ={g}" in names
