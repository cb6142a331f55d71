"""Tests for the trainer's guards in irl_jax/train/loop.py: config fields, work-directory
lock, vocabulary and token-id checks. Every error names what was wrong and where."""

import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from experiments.configs import smoke
from irl_jax.data import char_tokenizer
from irl_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**fields):
  c = smoke.get_config()
  c.progress_bar = False
  c.tensorboard = False
  c.update_from_flattened_dict({k.replace("__", "."): v for k, v in fields.items()})
  return c


@pytest.mark.parametrize("fields, message", [
    ({"checkpoint_every": 0}, "config.checkpoint_every=0: must be a positive integer"),
    ({"steps": 0}, "config.steps=0: must be a positive integer"),
    ({"steps": -5}, "config.steps=-5: must be a positive integer"),
    ({"log_every": 0}, "config.log_every=0"),
    ({"optimizer__micro_batches": 0}, "config.optimizer.micro_batches=0: must be a positive"),
    ({"optimizer__micro_batches": 3}, "config.data.batch_size=16: must be divisible by "
                                      "config.optimizer.micro_batches=3"),
    ({"data__batch_size": 0}, "config.data.batch_size=0"),
    ({"keep_checkpoints": 0}, "config.keep_checkpoints=0"),
    ({"optimizer__learning_rate": float("nan")}, "config.optimizer.learning_rate=nan"),
    ({"model__dtype": "float16"}, "config.model.dtype='float16': must be one of"),
    ({"objective__name": "iqlearn"}, "config.objective.name='iqlearn': unknown objective"),
    ({"mesh__data": 0}, "config.mesh.data=0"),
])
def test_bad_config_fields_are_named(fields, message):
  with pytest.raises(loop.ConfigError) as e:
    loop.check_config(_config(**fields))
  assert message in str(e.value)


def test_unknown_mesh_axis_is_named():
  c = _config()
  c.mesh.model = 2  # a user's config file may add any field
  with pytest.raises(loop.ConfigError, match=r"config.mesh=.*unknown mesh axes \['model'\]"):
    loop.check_config(c)


def test_batch_not_divisible_by_the_mesh_batch_axes_is_named():
  mesh = types.SimpleNamespace(shape={"data": 4, "fsdp": 2, "tensor": 1})
  with pytest.raises(loop.ConfigError, match=r"config.data.batch_size=12: must be divisible by "
                                             r"the mesh's batch axes \(data=4 x fsdp=2 = 8"):
    loop._check_mesh_batch(_config(data__batch_size=12), mesh)
  with pytest.raises(loop.ConfigError, match="each of the 2 micro-batches has 8 rows"):
    loop._check_mesh_batch(_config(data__batch_size=16, optimizer__micro_batches=2),
                           types.SimpleNamespace(shape={"data": 1, "fsdp": 16, "tensor": 1}))
  loop._check_mesh_batch(_config(data__batch_size=16), mesh)  # 16 = 2 x 8 is fine


def test_train_checks_the_config_before_writing_anything(tmp_path):
  with pytest.raises(loop.ConfigError, match=r"config\.checkpoint_every=0"):
    loop.train(_config(checkpoint_every=0), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def _batches(ids):
  while True:
    n = ids.shape[1]
    yield {"input_ids": ids, "segment_ids": np.ones_like(ids),
           "positions": np.tile(np.arange(n, dtype=np.int32), (ids.shape[0], 1)),
           "loss_mask": np.ones(ids.shape, bool)}


class _Iterator:
  def __init__(self, ids):
    self._it = _batches(ids)

  def __next__(self):
    return next(self._it)

  def get_state(self):
    return {}

  def set_state(self, state):
    pass


def test_tokenizer_larger_than_the_model_is_refused_at_start(tmp_path):
  c = _config()
  c.model.arch.vocab_size = 8  # the character tokenizer has 4 + 9 = 13 tokens
  tok = char_tokenizer(c.tokenizer.alphabet)
  data = (_Iterator(np.ones((16, 8), np.int32)), lambda: iter(()), tok)
  with pytest.raises(loop.VocabularyError, match=r"has 13 tokens but the model \(config.model.arch"
                                                 r"\) embeds only 8"):
    loop.train(c, str(tmp_path), data=data)


def test_out_of_vocabulary_ids_are_refused_at_the_data_boundary(tmp_path):
  c = _config(steps=2)
  tok = char_tokenizer(c.tokenizer.alphabet)
  for bad in (-1, 13, 500):
    ids = np.full((16, 8), 5, np.int32)
    ids[3, 6] = bad
    data = (_Iterator(ids), lambda: iter(()), tok)
    with pytest.raises(loop.VocabularyError) as e:
      loop.train(c, str(tmp_path / str(bad)), data=data)
    assert f"input_ids[3, 6] = {bad} is outside the model's vocabulary [0, 13)" in str(e.value)
    assert "step 1" in str(e.value)


def test_second_run_on_a_locked_workdir_fails_at_once(tmp_path):
  workdir = str(tmp_path)
  with loop.workdir_lock(workdir):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=experiments/configs/smoke.py",
         f"--workdir={workdir}", "--config.progress_bar=False"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
  assert proc.returncode != 0
  assert "WorkdirLockedError" in proc.stderr and "is in use by another run" in proc.stderr
  assert f"pid {os.getpid()}" in proc.stderr  # names the holder
  assert not os.path.exists(os.path.join(workdir, "tfds"))  # stopped before touching data
  assert elapsed < 120
  # Released: the next lock succeeds.
  with loop.workdir_lock(workdir):
    pass


def test_check_config_does_not_start_jax():
  # jax.distributed.initialize must still be callable after the config check.
  script = ("from experiments.configs import smoke; from irl_jax.train import loop; "
            "import jax._src.xla_bridge as xb; loop.check_config(smoke.get_config()); "
            "assert not xb.backends_are_initialized(), 'check_config started a backend'")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_flat_objective_fields_of_old_configs_are_refused():
  c = _config()
  c.objective.td_weight = 5.0  # where hyperparameters lived before the registry
  with pytest.raises(loop.ConfigError, match=r"config.objective has fields \['td_weight'\] that "
                                             r"no objective reads.*config.objective.iq_learn"):
    loop.check_config(c)


def test_best_metric_must_be_an_eval_metric():
  with pytest.raises(loop.ConfigError, match=r"config\.best_metric='train/loss'"):
    loop.check_config(_config(best_metric="train/loss"))


def test_eval_batch_not_divisible_by_the_mesh_is_named():
  mesh = types.SimpleNamespace(shape={"data": 6, "fsdp": 1, "tensor": 1})
  with pytest.raises(loop.ConfigError, match=r"config.data.eval_batch_size=32: eval batches of "
                                             r"32 rows must be divisible"):
    loop._check_mesh_batch(_config(data__batch_size=48), mesh)


def test_lock_on_an_unwritable_workdir_is_a_clear_error(tmp_path):
  if os.geteuid() == 0:
    target = tmp_path / "file"  # root may write anywhere: a path under a file fails instead
    target.write_text("")
    workdir = str(target / "run")
  else:
    workdir = str(tmp_path / "ro")
    os.makedirs(workdir)
    os.chmod(workdir, 0o500)
  with pytest.raises(loop.WorkdirLockedError, match="could not lock"):
    with loop.workdir_lock(workdir):
      pass
