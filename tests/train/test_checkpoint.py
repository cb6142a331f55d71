"""Tests for irl_jax/train/checkpoint.py: preservation, restore, corrupted fallback."""

import glob
import os
import subprocess
import sys
import textwrap

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


# -- integrity, identity and replacement of invalid checkpoints ---------------------

_RANDOM_W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)


def _random_state(step):
  # Incompressible weights, so that a flipped byte in the data file lands in array data.
  return TrainState(step=jnp.int32(step), params={"w": jnp.asarray(_RANDOM_W + step)},
                    opt_state=(jnp.zeros(3) + step,),
                    rng=jax.random.key_data(jax.random.key(step)))


RANDOM_ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _random_state(0))


def _flip_one_bit(step_dir, fraction):
  data = max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
             key=os.path.getsize)
  raw = bytearray(open(data, "rb").read())
  raw[int(len(raw) * fraction)] ^= 0x10
  with open(data, "wb") as f:
    f.write(raw)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_flipped_bit_on_disk_is_detected_falls_back_and_is_replaced(tmp_path, caplog, fraction):
  ckpts = Checkpoints(str(tmp_path), save_every=1, keep_last=3)
  for step in (1, 2):
    ckpts.maybe_save(step, _random_state(step), data_state={"position": step})
  ckpts.close()
  # Orbax decodes these damaged files without complaint: only the checksums notice.
  _flip_one_bit(str(tmp_path / "2"), fraction)
  ckpts = Checkpoints(str(tmp_path), save_every=1, keep_last=3)
  with caplog.at_level("WARNING"):
    state, data, step = ckpts.restore_latest(RANDOM_ABSTRACT)
  assert step == 1 and data == {"position": 1}
  np.testing.assert_array_equal(state.params["w"], _RANDOM_W + 1)
  log = "\n".join(r.getMessage() for r in caplog.records)
  assert "step 2" in log and str(tmp_path / "2") in log and "checksum" in log
  # Nothing is moved while restoring (a failure may be transient), but step 2 is due
  # again: the run that re-reaches it moves the bad one aside (kept for inspection) and
  # writes a good one.
  assert ckpts.steps == [1, 2] and not os.path.exists(tmp_path / "invalid")
  assert ckpts.due(2)
  assert ckpts.maybe_save(2, _random_state(2), data_state={"position": 2})
  ckpts.wait()
  assert os.path.isdir(tmp_path / "invalid" / "2") and ckpts.steps == [1, 2]
  ckpts.close()
  again = Checkpoints(str(tmp_path), save_every=1, keep_last=3)
  state, data, step = again.restore_latest(RANDOM_ABSTRACT)
  assert step == 2 and data == {"position": 2}
  np.testing.assert_array_equal(state.params["w"], _RANDOM_W + 2)
  again.close()


def test_array_checksums_see_every_single_bit_flip_and_swaps():
  from irl_jax.train.checkpoint import array_checksums

  rng = np.random.default_rng(1)
  for dtype in (np.float32, np.int32, np.uint32, jnp.bfloat16, np.int8, np.bool_):
    x = rng.integers(0, 2, (7, 5)).astype(dtype) if dtype == np.bool_ else \
        (rng.standard_normal((7, 5)) * 50).astype(dtype)
    base = array_checksums({"x": jnp.asarray(x)})
    bits = x.view(np.uint8).copy() if dtype != np.bool_ else x.astype(np.uint8)
    for i in rng.choice(bits.size, 12, replace=False):
      for b in ((0,) if dtype == np.bool_ else range(8)):
        flipped = bits.copy()
        flipped.flat[i] ^= np.uint8(1 << b)
        if dtype == np.bool_:
          y = flipped.astype(np.bool_)
        else:
          y = flipped.view(x.dtype).reshape(x.shape)
        assert array_checksums({"x": jnp.asarray(y)}) != base, (dtype, i, b)
  x = np.arange(12, dtype=np.float32)
  swapped = x.copy()
  swapped[[3, 7]] = swapped[[7, 3]]
  assert array_checksums({"x": jnp.asarray(x)}) != array_checksums({"x": jnp.asarray(swapped)})


def _tree_bytes(root):
  out = {}
  for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
    if os.path.isfile(path):
      out[os.path.relpath(path, root)] = open(path, "rb").read()
  return out


FINGERPRINT = {"model": {"model_type": "llama", "num_heads": 4, "head_dim": 16},
               "objective": {"name": "iq_learn", "td_weight": 0.1}}


def test_config_fingerprint_mismatch_lists_fields_and_leaves_checkpoints_intact(tmp_path, caplog):
  from irl_jax.train.checkpoint import ConfigMismatchError

  ckpts = Checkpoints(str(tmp_path), save_every=1, fingerprint=FINGERPRINT)
  ckpts.maybe_save(1, _state(1))
  ckpts.close()
  before = _tree_bytes(str(tmp_path))
  other = {"model": {"model_type": "llama", "num_heads": 8, "head_dim": 8},
           "objective": {"name": "iq_learn", "td_weight": 0.1}}
  ckpts = Checkpoints(str(tmp_path), save_every=1, fingerprint=other)
  with pytest.raises(ConfigMismatchError) as e:
    ckpts.restore_latest(ABSTRACT)
  message = str(e.value)
  assert "model.num_heads: checkpoint 4, now 8" in message
  assert "model.head_dim: checkpoint 16, now 8" in message
  assert "objective" not in message.split("differ")[1].split("intact")[0]  # only what differs
  assert "intact" in message
  ckpts.close()
  assert _tree_bytes(str(tmp_path)) == before
  # The same fingerprint restores; an explicit override resumes with a warning.
  same = Checkpoints(str(tmp_path), save_every=1, fingerprint=FINGERPRINT)
  assert same.restore_latest(ABSTRACT)[2] == 1
  same.close()
  anyway = Checkpoints(str(tmp_path), save_every=1, fingerprint=other, allow_config_change=True)
  with caplog.at_level("WARNING"):
    assert anyway.restore_latest(ABSTRACT)[2] == 1
  assert any("model.num_heads" in r.getMessage() for r in caplog.records)
  anyway.close()


def test_shape_change_is_a_config_mismatch_not_unreadable_checkpoints(tmp_path):
  from irl_jax.train.checkpoint import ConfigMismatchError

  _save_run(str(tmp_path), [0.5, 0.4], keep_last=3).close()
  before = _tree_bytes(str(tmp_path))
  wider = ABSTRACT._replace(params={"w": jax.ShapeDtypeStruct((3, 8), jnp.float32),
                                    "layers": ABSTRACT.params["layers"]})
  ckpts = Checkpoints(str(tmp_path), save_every=1)
  with pytest.raises(ConfigMismatchError, match=r"\.params\['w'\]: checkpoint \[\[3, 4\]"):
    ckpts.restore_latest(wider)
  ckpts.close()
  assert _tree_bytes(str(tmp_path)) == before


def test_missing_integrity_record_is_an_invalid_checkpoint(tmp_path):
  _save_run(str(tmp_path), [0.5, 0.4], keep_last=3).close()
  os.remove(tmp_path / "meta" / "2.json")
  ckpts = Checkpoints(str(tmp_path), save_every=1)
  assert ckpts.restore_latest(ABSTRACT)[2] == 1
  ckpts.close()


def test_bad_arguments_name_the_argument(tmp_path):
  with pytest.raises(ValueError, match="save_every must be a positive integer, got 0"):
    Checkpoints(str(tmp_path), save_every=0)
  with pytest.raises(ValueError, match="keep_last"):
    Checkpoints(str(tmp_path), save_every=1, keep_last=0)


def test_unclosed_checkpoints_finish_their_save_at_exit_without_tracebacks(tmp_path):
  # A script that starts an asynchronous save and exits without wait() or close().
  script = textwrap.dedent(f"""
      import jax, jax.numpy as jnp
      from irl_jax.train.checkpoint import Checkpoints
      from irl_jax.train.state import TrainState
      state = TrainState(step=jnp.int32(1), params={{"w": jnp.ones((256, 256))}},
                         opt_state=(jnp.zeros(3),), rng=jax.random.key_data(jax.random.key(0)))
      Checkpoints({str(tmp_path)!r}, save_every=1).maybe_save(1, state, data_state={{"p": 1}})
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
  assert "was not closed; finishing its pending saves at exit" in proc.stderr
  ckpts = Checkpoints(str(tmp_path), save_every=1)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                        params={"w": jax.ShapeDtypeStruct((256, 256), jnp.float32)},
                        opt_state=(jax.ShapeDtypeStruct((3,), jnp.float32),),
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  state, data, step = ckpts.restore_latest(abstract)
  assert step == 1 and data == {"p": 1}
  np.testing.assert_array_equal(state.params["w"], np.ones((256, 256)))
  ckpts.close()


def test_a_transient_load_failure_moves_nothing(tmp_path, monkeypatch):
  _save_run(str(tmp_path), [0.5, 0.4], keep_last=3).close()
  ckpts = Checkpoints(str(tmp_path), save_every=1)
  real = ckpts._ckptr.load_checkpointables
  calls = []

  def flaky(step, *args, **kwargs):
    calls.append(step)
    if len(calls) == 1:
      raise OSError(5, "Input/output error")
    return real(step, *args, **kwargs)

  monkeypatch.setattr(ckpts._ckptr, "load_checkpointables", flaky)
  assert ckpts.restore_latest(ABSTRACT)[2] == 1
  ckpts.close()
  assert not os.path.exists(tmp_path / "invalid")
  again = Checkpoints(str(tmp_path), save_every=1)  # the next start loads step 2 again
  assert again.restore_latest(ABSTRACT)[2] == 2
  again.close()
