"""The accelerator config's single run (`:trainer`) runs as written: a pretrained checkpoint,
GSM8K through TFDS, FSDP, bf16 compute, chunked statistics, generation metrics with GSM8K's
checker at every evaluation, export — here on a tiny checkpoint and file the test makes."""

import json
import os
import subprocess
import sys

from irl_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gsm8k_config_trains_from_a_pretrained_checkpoint(tmp_path, tiny_gsm8k):
  ckpt, data = tiny_gsm8k
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "experiments.train",
         "--config=experiments/configs/imitate_language_gsm8k.py:trainer",
         f"--workdir={workdir}",
         f"--config.model.pretrained={ckpt}", f"--config.tokenizer.path={ckpt}",
         f"--config.data.path={data}", f"--config.data.eval_path={data}",
         "--config.steps=2", "--config.eval_every=2", "--config.checkpoint_every=2",
         "--config.data.batch_size=8", "--config.data.eval_batch_size=16",
         "--config.data.buckets=(64, 96)", "--config.progress_bar=False",
         "--config.objective.iq_learn.chunk_size=16",
         "--config.eval_generation.num_prompts=4", "--config.eval_generation.num_samples=2",
         "--config.eval_generation.max_new_tokens=8"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  final = json.loads(proc.stdout.strip().splitlines()[-1])["final"]
  assert final["train/finite"] == 1.0 and "eval/loss" in final
  # Generation metrics with GSM8K's checker at the evaluation, samples written beside them.
  assert 0.0 <= final["eval/gen_accuracy"] <= 1.0
  samples = (workdir / "samples" / "2.jsonl").read_text().splitlines()
  assert len(samples) == 4 * 2
  assert all(json.loads(line)["step"] == 2 for line in samples)
  exported = models.from_pretrained(str(workdir / "export"))
  assert exported.config.vocab_size == models.from_pretrained(str(ckpt)).config.vocab_size
