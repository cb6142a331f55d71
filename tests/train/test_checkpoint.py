"""Tests for irl_jax/train/checkpoint.py: preservation, restore, corrupted fallback."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.train.checkpoint import CheckpointError, Checkpoints
from irl_jax.train.state import TrainState


def _state(step):
  return TrainState(step=jnp.int32(step),
                    params={"w": jnp.full((3, 4), float(step)), "layers": {0: {"b": jnp.ones(2)}}},
                    opt_state=(jnp.zeros(3) + step,),
                    rng=jax.random.key_data(jax.random.key(step)))


ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _save_run(directory, losses, **kw):
  ckpts = Checkpoints(directory, save_every=1, **kw)
  for step, loss in enumerate(losses, start=1):
    ckpts.maybe_save(step, _state(step), data_state={"position": step * 10},
                     metrics={"eval/loss": loss})
  ckpts.wait()
  return ckpts


def test_keeps_last_n_plus_best_and_restores_latest(tmp_path):
  ckpts = _save_run(str(tmp_path), [0.9, 0.2, 0.8, 0.7, 0.6, 0.5], keep_last=2,
                    best_metric="eval/loss")
  assert ckpts.steps == [2, 5, 6]  # best (0.2 at step 2) + the last two
  state, data, step = ckpts.restore_latest(ABSTRACT)
  assert step == 6 and data == {"position": 60}
  np.testing.assert_array_equal(state.params["w"], np.full((3, 4), 6.0))
  np.testing.assert_array_equal(jax.random.key_data(jax.random.wrap_key_data(state.rng)),
                                jax.random.key_data(jax.random.key(6)))
  # Data-iterator positions of pruned checkpoints are pruned too.
  kept = sorted(os.listdir(tmp_path / "data_state"))
  assert kept == [f"{s}.process_0.json" for s in (2, 5, 6)]
  ckpts.close()


def test_best_mode_max(tmp_path):
  ckpts = _save_run(str(tmp_path), [0.1, 0.9, 0.3, 0.2], keep_last=1, best_metric="eval/loss",
                    best_mode="max")
  assert ckpts.steps == [2, 4]
  ckpts.close()


def test_save_every_and_force(tmp_path):
  ckpts = Checkpoints(str(tmp_path), save_every=5)
  assert not ckpts.maybe_save(3, _state(3))
  assert ckpts.maybe_save(5, _state(5))
  assert ckpts.maybe_save(7, _state(7), force=True)
  assert not ckpts.maybe_save(7, _state(7), force=True)  # already saved
  ckpts.wait()
  assert ckpts.steps == [5, 7]
  ckpts.close()


def test_corrupted_latest_falls_back_with_warning(tmp_path, caplog):
  _save_run(str(tmp_path), [0.5, 0.4, 0.3], keep_last=3).close()
  # Damage every array file of the newest checkpoint.
  for f in glob.glob(str(tmp_path / "3" / "state" / "**" / "d" / "*"), recursive=True):
    with open(f, "wb") as fh:
      fh.write(b"garbage")
  ckpts = Checkpoints(str(tmp_path), save_every=1, keep_last=3)
  with caplog.at_level("WARNING"):
    state, data, step = ckpts.restore_latest(ABSTRACT)
  assert step == 2 and data == {"position": 20}
  np.testing.assert_array_equal(state.params["w"], np.full((3, 4), 2.0))
  assert any("step 3" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
  ckpts.close()


def test_missing_data_position_or_partial_save_is_skipped(tmp_path):
  _save_run(str(tmp_path), [0.5, 0.4], keep_last=3).close()
  os.remove(tmp_path / "data_state" / "2.process_0.json")
  # A save killed before commit leaves only an Orbax temporary directory.
  os.makedirs(tmp_path / "3.orbax-checkpoint-tmp-123" / "state")
  ckpts = Checkpoints(str(tmp_path), save_every=1)
  assert ckpts.steps == [1, 2]
  _, data, step = ckpts.restore_latest(ABSTRACT)
  assert step == 1 and data == {"position": 10}
  ckpts.close()


def test_nothing_restorable_raises_and_empty_dir_returns_none(tmp_path):
  empty = Checkpoints(str(tmp_path / "empty"), save_every=1)
  assert empty.restore_latest(ABSTRACT) is None
  empty.close()
  _save_run(str(tmp_path / "bad"), [0.5], keep_last=1).close()
  os.remove(tmp_path / "bad" / "data_state" / "1.process_0.json")
  ckpts = Checkpoints(str(tmp_path / "bad"), save_every=1)
  with pytest.raises(CheckpointError, match="step 1"):
    ckpts.restore_latest(ABSTRACT)
  ckpts.close()
  with pytest.raises(ValueError, match="best_mode"):
    Checkpoints(str(tmp_path / "x"), save_every=1, best_mode="lowest")
