"""End-to-end runs of `python -m experiments.train` with the smoke config, as a user runs it:
kill-and-resume equality, corrupted-checkpoint fallback, NaN guard, bad rows, two processes."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = ["--config=experiments/configs/smoke.py", "--config.progress_bar=False",
        "--config.tensorboard=False"]


def _cmd(workdir, *overrides):
  return [sys.executable, "-m", "experiments.train", *BASE, f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, check=True, env=None, timeout=300):
  proc = subprocess.run(_cmd(workdir, *overrides), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env)
  if check and proc.returncode:
    raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


def _export(workdir):
  return safetensors.numpy.load_file(os.path.join(workdir, "export", "model.safetensors"))


def _assert_bitwise_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


LONG = ["--config.steps=150", "--config.checkpoint_every=25", "--config.eval_every=50",
        "--config.log_every=5"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _run(workdir, *LONG)
  return workdir


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.strip()]


def _kill_after(workdir, logged_step, checkpoint=None):
  """Start the long run and SIGKILL it once `logged_step` has been logged and, if given,
  `checkpoint` has been committed (its directory appears only at commit)."""
  proc = subprocess.Popen(_cmd(workdir, *LONG), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    def ready():
      committed = checkpoint is None or os.path.isdir(workdir / "checkpoints" / str(checkpoint))
      return committed and max(_logged_steps(workdir), default=0) >= logged_step

    while not ready() and proc.poll() is None:
      assert time.time() < deadline, "run made no progress"
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(workdir / "export"), "the run finished before it was killed"


def test_export_opens_in_transformers(uninterrupted):
  from transformers import AutoModelForCausalLM, AutoTokenizer

  from irl_jax import models

  path = str(uninterrupted / "export")
  tokenizer = AutoTokenizer.from_pretrained(path)
  ids = tokenizer("abc=", return_tensors="np")["input_ids"]
  ours = np.asarray(models.from_pretrained(path)(ids))
  torch_model = AutoModelForCausalLM.from_pretrained(path).eval()
  import torch

  with torch.no_grad():
    theirs = torch_model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_sigkill_mid_run_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
  _kill_after(tmp_path, 65)
  resumed = _run(tmp_path, *LONG)
  assert "resumed from step" in resumed.stdout + resumed.stderr
  _assert_bitwise_equal(_export(tmp_path), _export(uninterrupted))


def test_corrupted_latest_checkpoint_is_skipped(uninterrupted, tmp_path):
  _kill_after(tmp_path, 105, checkpoint=100)
  damaged = glob.glob(str(tmp_path / "checkpoints" / "100" / "state" / "**" / "d" / "*"),
                      recursive=True)
  assert damaged, "checkpoint 100 should exist after step 105"
  for f in damaged:
    with open(f, "wb") as fh:
      fh.write(b"\0" * 7)
  proc = _run(tmp_path, *LONG)
  log = proc.stdout + proc.stderr
  assert "step 100" in log and "unreadable" in log and "resumed from step 75" in log
  # Resuming from the previous checkpoint still reproduces the uninterrupted run exactly.
  _assert_bitwise_equal(_export(tmp_path), _export(uninterrupted))


def _flip_one_bit(step_dir):
  data = max(glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True),
             key=os.path.getsize)
  raw = bytearray(open(data, "rb").read())
  raw[len(raw) // 2] ^= 0x10
  with open(data, "wb") as fh:
    fh.write(raw)


def test_flipped_bit_in_final_checkpoint_is_caught_and_rewritten(uninterrupted, tmp_path):
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted, workdir)
  shutil.rmtree(workdir / "export")
  _flip_one_bit(workdir / "checkpoints" / "150")
  proc = _run(workdir, *LONG)
  log = proc.stdout + proc.stderr
  assert "step 150" in log and "checksum" in log and "resumed from step 125" in log
  # The run re-reached step 150 and wrote a good final checkpoint there ...
  _assert_bitwise_equal(_export(workdir), _export(uninterrupted))
  assert os.path.isdir(workdir / "checkpoints" / "invalid" / "150")
  # ... so the next run resumes from it instead of falling back again.
  again = _run(workdir, *LONG)
  log = again.stdout + again.stderr
  assert "resumed from step 150" in log and "checksum" not in log


def test_resume_with_another_model_config_is_refused_and_checkpoints_stay(tmp_path):
  _run(tmp_path, "--config.steps=10", "--config.checkpoint_every=10", "--config.eval_every=0",
       "--config.export_hf=False")
  ckpts = tmp_path / "checkpoints"
  before = {p: open(p, "rb").read() for p in glob.glob(str(ckpts / "**"), recursive=True)
            if os.path.isfile(p)}
  # Same tensor shapes (4 x 16 = 8 x 8 per head group), a different attention layout.
  layout = _run(tmp_path, "--config.steps=20", "--config.model.arch.num_heads=8",
                "--config.model.arch.num_kv_heads=4", "--config.model.arch.head_dim=8",
                check=False)
  assert layout.returncode != 0
  assert "ConfigMismatchError" in layout.stderr
  assert "model.architecture.num_heads: checkpoint 4, now 8" in layout.stderr
  assert "model.architecture.head_dim: checkpoint 16, now 8" in layout.stderr
  assert "intact" in layout.stderr and "unreadable" not in layout.stderr
  wider = _run(tmp_path, "--config.steps=20", "--config.model.arch.hidden_size=128", check=False)
  assert wider.returncode != 0
  assert "model.architecture.hidden_size: checkpoint 64, now 128" in wider.stderr
  assert "intact" in wider.stderr and "unreadable" not in wider.stderr
  after = {p: open(p, "rb").read() for p in glob.glob(str(ckpts / "**"), recursive=True)
           if os.path.isfile(p)}
  assert after == before
  # The original configuration still resumes.
  ok = _run(tmp_path, "--config.steps=20", "--config.checkpoint_every=10",
            "--config.eval_every=0", "--config.export_hf=False")
  assert "resumed from step 10" in ok.stdout + ok.stderr


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
  proc = _run(tmp_path, "--config.optimizer.learning_rate=1e38",
              "--config.optimizer.warmup_steps=1", "--config.optimizer.clip_norm=0",
              "--config.checkpoint_every=1", check=False)
  assert proc.returncode != 0
  assert "non-finite loss or gradient at step 3" in proc.stderr
  assert "Last good checkpoint: step 2" in proc.stderr
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps == [1, 2]
  assert not os.path.exists(tmp_path / "export")


def test_bad_row_names_file_and_line(tmp_path):
  path = tmp_path / "demos.jsonl"
  path.write_text('{"prompt": "ab=", "response": "ba"}\n{"prompt": "abc=", "response": "cba"}\n'
                  '{"prompt": "x=", "response": \n')
  proc = _run(tmp_path / "run", f"--config.data.path={path}", "--config.data.eval_path=",
              "--config.steps=2", check=False)
  assert proc.returncode != 0
  assert f"{path}:3" in proc.stderr


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_resume_and_export(tmp_path):
  def launch(steps):
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen(
        _cmd(tmp_path, f"--config.steps={steps}", "--config.checkpoint_every=10",
             "--config.eval_every=10", "--config.mesh.fsdp=2",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
             f"--config.distributed.coordinator_address=127.0.0.1:{port}"),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    return logs

  launch(10)
  logs = launch(20)
  assert "resumed from step 10" in logs[0]  # process 0 reports for the job
  assert sorted(os.listdir(tmp_path / "checkpoints" / "data_state")) == [
      "10.process_0.json", "10.process_1.json", "20.process_0.json", "20.process_1.json"]
  weights = _export(tmp_path)
  assert all(np.all(np.isfinite(w)) for w in weights.values())
  losses = [m["train/loss"] for m in map(json.loads, open(tmp_path / "metrics.jsonl"))
            if "train/loss" in m]
  assert losses[-1] < losses[0]
