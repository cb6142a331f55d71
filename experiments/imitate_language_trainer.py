"""The imitation study through the sharded trainer (`config.backend = "trainer"`).

`experiments.imitate_language.run` hands a config with `backend="trainer"` here
(see `experiments/configs/imitate_language_gsm8k.py`). Each method and seed is
one run of `irl_jax.train.train` on `config.trainer` (a pretrained checkpoint,
the data files, the mesh, checkpoints, resumption): the method sets
`config.trainer.objective`, the seed `config.trainer.seed`, and
`config.trainer.eval_generation` makes every evaluation report the generation
metrics (`eval/gen_*`). After training, the exported policy is measured on the
eval prompts with the same functions as the laptop study
(`irl_jax.train.generation`) at T=1 and the low temperature; the table and
the verdicts are the laptop study's. The within-prompt reward correlation is
taken over each prompt's samples, scored by the task's checker.
"""

from __future__ import annotations

import os
import re
import time

import jax
import numpy as np

from experiments import imitate_language as il
from experiments.tasks import load as load_task
from irl_jax import models
from irl_jax.train import generation, loop
from irl_jax.train.data_setup import build_data
from irl_jax.train.metrics import read_metrics

GEN_KEYS = ("accuracy", "score", "self_bleu", "distinct_2", "distinct_3", "entropy",
            "reward_spearman", "mean_length")


def slug(name: str) -> str:
  """A directory name for a method: `IQLearn λ=0.1 γ=0.9` -> `IQLearn_lambda=0.1_gamma=0.9`."""
  for greek, latin in (("λ", "lambda"), ("γ", "gamma"), ("α", "alpha")):
    name = name.replace(greek, latin)
  return re.sub(r"[^A-Za-z0-9.=]+", "_", name).strip("_")


def run_config(config, method, seed: int):
  """`config.trainer` with the method's objective and hyperparameters and the seed."""
  spec, _ = il.method_spec(method)  # validates the method's fields
  c = config.trainer.copy_and_resolve_references()
  with c.unlocked():
    c.seed = int(seed)
    c.objective.name = spec.name
    # Only what the method sets: the trainer config's own settings (chunk sizes, sampling)
    # stay as configured.
    for field, value in dict(method).items():
      if field not in ("objective", "label"):
        c.objective[spec.name][field] = value
    c.eval_generation.gamma = float(config.reward_gamma)
  return c


def last_logged(run_dir: str) -> dict:
  """The run's last logged value of every metric, and the median of its logged
  `train/step_seconds` (read back from `metrics.jsonl`, so that a finished run that is
  resumed, and returns no metrics, is measured the same)."""
  last, seconds = {}, []
  for row in read_metrics(run_dir):
    last.update({k: v for k, v in row.items() if k != "step"})
    if "train/step_seconds" in row:
      seconds.append(row["train/step_seconds"])
  if not seconds or "eval/nll" not in last:
    raise ValueError(f"{run_dir}/metrics.jsonl has no train/step_seconds or eval/nll: the run "
                     "needs an eval set (config.trainer.data.eval_path) and eval_every > 0.")
  last["train/step_seconds_median"] = float(np.median(seconds))
  return last


def run(config, workdir: str, *, log=print) -> dict:
  task = load_task(config.task)
  if task is None or not hasattr(task, "checker"):
    raise ValueError(f"config.task={config.task!r} must name a task with a checker.")
  for field in ("path", "eval_path"):
    if not config.trainer.data.get(field):
      raise ValueError(f"config.trainer.data.{field} is empty: the study reads the task's "
                       "train and eval files.")
  os.makedirs(workdir, exist_ok=True)
  results = {"config": config.to_dict(), "backend": "trainer", "device": str(jax.devices()[0]),
             "methods": {}, "sweep": {}}
  for m in config.methods:
    name = il.method_name(m)
    per_seed, seconds = [], []
    for seed in range(config.num_seeds):
      c = run_config(config, m, config.seed + seed)
      run_dir = os.path.join(workdir, slug(name), f"seed_{seed}")
      t0 = time.perf_counter()
      loop.train(c, run_dir, task=task, checker=task.checker)
      final = last_logged(run_dir)
      seconds.append(final["train/step_seconds_median"])
      _, eval_batches, tokenizer = build_data(c, run_dir, task=task)
      prompts = loop.eval_prompts(eval_batches, int(config.num_eval_prompts))
      if prompts is None:
        raise ValueError("config.trainer.data.eval_path: the study needs an eval set.")
      policy = models.from_pretrained(os.path.join(run_dir, "export"))
      # The objective's NLL term (IQLearn's eval/loss adds its TD penalty), averaged
      # over eval batches by the trainer.
      row = {"seed": seed, "heldout_nll": final["eval/nll"]}
      gen = c.eval_generation
      for label, temp in (("t1", 1.0), ("tlow", config.low_temperature)):
        metrics = generation.generation_metrics(
            policy, prompts, tokenizer, checker=task.checker,
            key=jax.random.fold_in(jax.random.key(config.seed), 1000 * seed + 7),
            temperature=temp, num_samples=config.num_samples,
            max_new_tokens=config.max_new_tokens, gamma=config.reward_gamma,
            prompt_len=int(gen.get("prompt_len", 0) or 0) or None,
            rows=int(gen.get("rows", 0) or 0) or None)
        responses = metrics.pop("responses")
        row.update({f"{k}_{label}": v for k, v in metrics.items()})
        if label == "t1":
          row["examples"] = responses[:config.num_samples]
      row["reward_spearman"] = row["reward_spearman_t1"]
      per_seed.append(row)
      log(f"{name} seed {seed}: acc T={config.low_temperature} {row['accuracy_tlow']:.3f} "
          f"({time.perf_counter() - t0:.0f} s)")
    keys = [k for k in il.SUMMARY_KEYS if all(k in r for r in per_seed)]
    results["methods"][name] = {
        "method": dict(m), "per_seed": per_seed, "summary": il.summarise(per_seed, keys),
        "curve": [], "step_time": float(np.median(seconds)),
    }
  base = results["methods"][il.method_name(config.baseline)]["step_time"]
  for r in results["methods"].values():
    r["step_time_over_mle"] = r["step_time"] / base
  results["step_time_source"] = ("medians over seeds of each run's median logged "
                                 "train/step_seconds (host-side sampling included, evaluation "
                                 "and checkpoints not)")
  results["verdicts"] = il.verdicts(results, config)
  il.write_results(results, workdir)
  return results
