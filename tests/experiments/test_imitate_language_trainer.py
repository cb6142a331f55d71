"""The imitation study through the sharded trainer (`backend="trainer"`, the GSM8K config):
every method and seed a run of `irl_jax.train.train` from a pretrained checkpoint, measured
with the generation metrics — here on a tiny checkpoint and GSM8K file the test makes."""

import json
import math

from experiments import imitate_language as il
from experiments import imitate_language_trainer
from experiments.configs import imitate_language_gsm8k

MLE = dict(objective="mle")
IQ = dict(objective="iq_learn", td_weight=0.1, gamma=0.9)


def _tiny_study_config(ckpt, data):
  config = imitate_language_gsm8k.get_config()
  with config.unlocked():
    config.num_seeds = 2
    config.methods = [dict(MLE), dict(IQ)]
    config.baseline = dict(MLE)
    config.main_iq_learn = dict(IQ)
    config.num_eval_prompts = 4
    config.num_samples = 2
    config.max_new_tokens = 8
    t = config.trainer
    t.steps = 2
    t.eval_every = 2
    t.checkpoint_every = 2
    t.progress_bar = False
    t.tensorboard = False
    t.data.batch_size = 8
    t.data.eval_batch_size = 16
    t.data.buckets = (64, 96)
    t.data.path = str(data)
    t.data.eval_path = str(data)
    t.tokenizer.path = str(ckpt)
    t.model.pretrained = str(ckpt)
    t.model.compute_dtype = "float32"
    t.model.remat = False
    for name in ("mle", "iq_learn", "iq_learn_online"):
      t.objective[name].chunk_size = 16
    t.eval_generation.num_prompts = 4
    t.eval_generation.num_samples = 2
    t.eval_generation.max_new_tokens = 8
  return config


def test_trainer_backend_runs_the_study_end_to_end(tmp_path, tiny_gsm8k):
  ckpt, data = tiny_gsm8k
  config = _tiny_study_config(ckpt, data)
  workdir = tmp_path / "study"
  lines = []
  results = il.run(config, str(workdir), log=lines.append)
  assert results["backend"] == "trainer"
  for name in ("results.md", "results.json"):
    assert (workdir / name).stat().st_size > 0, name
  saved = json.loads((workdir / "results.json").read_text())
  names = [il.method_name(MLE), il.method_name(IQ)]
  assert list(saved["methods"]) == names
  table = (workdir / "results.md").read_text()
  for name in names:
    assert f"| {name} |" in table
    r = saved["methods"][name]
    assert [row["seed"] for row in r["per_seed"]] == [0, 1]
    for row in r["per_seed"]:
      for key in ("accuracy_t1", "accuracy_tlow", "score_t1", "score_tlow"):
        assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
      # Present; NaN when no prompt's samples have distinct scores.
      assert "reward_spearman" in row
      rho = row["reward_spearman"]
      assert math.isnan(rho) or -1.0 <= rho <= 1.0
      assert math.isfinite(row["heldout_nll"])
      assert len(row["examples"]) == config.num_samples
    assert r["step_time"] > 0 and r["step_time_over_mle"] > 0
    for seed in range(config.num_seeds):
      run_dir = workdir / imitate_language_trainer.slug(name) / f"seed_{seed}"
      assert (run_dir / "export").is_dir()
      # The trainer's own evaluation logged the generation metrics and wrote the samples.
      assert (run_dir / "samples" / "2.jsonl").exists()
      # The table's held-out NLL is the run's last eval/nll (not IQLearn's eval/loss).
      logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
      nll = [row["eval/nll"] for row in logged if "eval/nll" in row][-1]
      assert r["per_seed"][seed]["heldout_nll"] == nll
  assert saved["methods"][names[0]]["step_time_over_mle"] == 1.0
  findings = [v["finding"][:3] for v in saved["verdicts"]]
  assert {"(1)", "(4)", "(5)"} <= set(findings)
  for v in saved["verdicts"]:
    assert v["verdict"] in ("reproduced", "not at this scale", "contradicted")
    assert f"**{v['verdict']}**" in table
  assert len(lines) == 4  # one line per method and seed


def test_run_config_keeps_the_trainer_objective_settings():
  """A method sets only its own hyperparameters: the trainer config's other objective
  settings (chunked statistics, online sampling) stay as configured."""
  config = imitate_language_gsm8k.get_config()
  want = config.trainer.objective
  c = imitate_language_trainer.run_config(config, IQ, seed=3).objective
  assert c.name == "iq_learn" and (c.iq_learn.td_weight, c.iq_learn.gamma) == (0.1, 0.9)
  assert c.iq_learn.chunk_size == want.iq_learn.chunk_size == 8192
  c = imitate_language_trainer.run_config(config, MLE, seed=0).objective
  assert c.mle.chunk_size == want.mle.chunk_size == 8192
  online = dict(objective="iq_learn_online", td_weight=0.1, gamma=0.9, mix=0.1,
                max_new_tokens=256)
  c = imitate_language_trainer.run_config(config, online, seed=0).objective.iq_learn_online
  assert c.max_new_tokens == 256 and c.mix == 0.1
  assert (c.chunk_size, c.num_samples) == (want.iq_learn_online.chunk_size,
                                           want.iq_learn_online.num_samples)
  assert imitate_language_trainer.run_config(config, MLE, seed=3).seed == 3
