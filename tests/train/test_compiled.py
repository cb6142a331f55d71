"""Tests for irl_jax/train/compiled.py: `make_train(...)` as a pure, vmap-able `train(key)`
that matches a hand-written loop over the trainer's own step; seeds spread over devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from irl_jax.models import ModelConfig, Transformer
from irl_jax.train import lm, optim, registry
from irl_jax.train.compiled import (
    compile_seeds,
    cpu_compiler_options,
    make_train,
    seed_devices,
    use_cpu_devices,
)
from irl_jax.train.state import TrainState, split_model
from irl_jax.train.step import make_train_step

CONFIG = ModelConfig(model_type="llama", vocab_size=13, hidden_size=16, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=16)
N, T = 8, 8


def _data(seed=0, n=N, t=T):
  rng = np.random.default_rng(seed)
  starts = rng.integers(2, 5, (n, 1))
  return {"row": np.arange(n, dtype=np.int32),
          "input_ids": rng.integers(1, CONFIG.vocab_size, (n, t)).astype(np.int32),
          "segment_ids": np.ones((n, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)),
          "loss_mask": np.arange(t)[None] >= starts}


def _init_params(key):
  return split_model(Transformer(CONFIG, rngs=nnx.Rngs(key)))[1]


@pytest.fixture(scope="module")
def parts():
  model_def, _ = split_model(Transformer(CONFIG, rngs=nnx.Rngs(0)))
  spec = registry.get("mle")
  mle = spec.build(spec.hyperparameters())

  def objective(model, batch, rng):
    loss, metrics = mle(model, batch, rng)
    # The batch's row ids (a data key of their own), one scalar metric per slot: the step
    # passes metrics through unaveraged, so the log shows which rows each step trained on.
    return loss, {**metrics, **{f"row{j}": batch["row"][j] for j in range(BATCH)}}

  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=2, total_steps=8)
  return model_def, objective, tx, schedule


def _eval_fn(model_def, data):
  batch = {k: jnp.asarray(v) for k, v in data.items() if k != "row"}

  def eval_fn(params):
    stats, where = lm.batch_stats(model_def.merge(params), batch)
    nll = jnp.sum(jnp.where(where, stats.v - stats.q, 0)) / jnp.sum(where)
    return {"nll": nll, "param_norm": optax.tree.norm(params)}

  return eval_fn


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


STEPS, BATCH, EVAL_EVERY = 8, 3, 4  # 24 rows of 8: 3 epochs, batches straddle epochs


@pytest.fixture(scope="module")
def run(parts):
  """One `train` (two evaluations), compiled once for the tests that share it."""
  model_def, objective, tx, schedule = parts
  data = _data()
  eval_fn = _eval_fn(model_def, data)
  train = make_train(_init_params, model_def, objective, tx, data, steps=STEPS,
                     batch_size=BATCH, eval_every=EVAL_EVERY, eval_fn=eval_fn, schedule=schedule)
  return train, jax.jit(train), data, eval_fn


def test_matches_a_python_loop_over_the_train_step(parts, run):
  """Same initial parameters, state key, permutation per epoch and step as a host loop."""
  model_def, objective, tx, schedule = parts
  _, train, data, eval_fn = run
  key = jax.random.key(7)
  state, log = train(key)

  # The reference: documented construction of the parameters, the state and the order.
  init_key, data_key, state_key = jax.random.split(key, 3)
  epochs = -(-STEPS * BATCH // N)
  assert epochs == 3
  order = np.concatenate([np.asarray(jax.random.permutation(k, N))
                          for k in jax.random.split(data_key, epochs)])
  params = _init_params(init_key)
  ref = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   rng=jax.random.key_data(state_key))
  step_fn = jax.jit(make_train_step(model_def, objective, tx, schedule))
  ref_metrics, ref_evals = [], []
  for t in range(STEPS):
    rows = order[t * BATCH:(t + 1) * BATCH]
    ref, m = step_fn(ref, {k: v[rows] for k, v in data.items()})
    ref_metrics.append(m)
    if (t + 1) % EVAL_EVERY == 0:
      ref_evals.append(jax.jit(eval_fn)(ref.params))

  assert int(state.step) == int(ref.step) == STEPS
  np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(ref.rng))
  _assert_trees_close(state.params, ref.params)
  _assert_trees_close(state.opt_state, ref.opt_state)
  assert set(log["train"]) == set(ref_metrics[0])
  for name, values in log["train"].items():
    assert values.shape == (STEPS,), name
    np.testing.assert_allclose(values, [m[name] for m in ref_metrics], rtol=1e-5, atol=1e-5,
                               err_msg=name)
  assert set(log["eval"]) == {"nll", "param_norm"}
  for name, values in log["eval"].items():
    assert values.shape == (STEPS // EVAL_EVERY,), name
    np.testing.assert_allclose(values, [e[name] for e in ref_evals], rtol=1e-5, atol=1e-5,
                               err_msg=name)
  # Every update was applied, on the schedule's learning rates.
  assert np.all(log["train"]["train/finite"] == 1.0)
  np.testing.assert_allclose(log["train"]["train/learning_rate"],
                             [schedule(i) for i in range(STEPS)], rtol=1e-6)


def test_eval_log_layout(run):
  _, train, _, _ = run
  state, log = train(jax.random.key(0))
  np.testing.assert_array_equal(log["eval_step"], [EVAL_EVERY, 2 * EVAL_EVERY])
  assert log["eval"]["nll"].shape == (STEPS // EVAL_EVERY,)
  # An evaluation sees the parameters after its step: the next step logs their norm first,
  # and the last one is the final state's.
  norms = np.asarray(log["train"]["train/param_norm"])
  np.testing.assert_allclose(log["eval"]["param_norm"][0], norms[EVAL_EVERY], rtol=1e-6)
  np.testing.assert_allclose(log["eval"]["param_norm"][-1], optax.tree.norm(state.params),
                             rtol=1e-6)
  assert np.all(np.isfinite(log["eval"]["nll"]))


def test_vmap_over_keys_equals_each_key_alone(run):
  raw, train, _, _ = run
  keys = jax.random.split(jax.random.key(3), 3)
  states, logs = jax.jit(jax.vmap(raw))(keys)
  np.testing.assert_array_equal(logs["eval_step"], np.tile([EVAL_EVERY, STEPS], (3, 1)))
  for i in range(len(keys)):
    state, log = train(keys[i])
    _assert_trees_close(jax.tree.map(lambda x, i=i: x[i], states.params), state.params)
    _assert_trees_close(jax.tree.map(lambda x, i=i: x[i], logs["train"]), log["train"])
    _assert_trees_close(jax.tree.map(lambda x, i=i: x[i], logs["eval"]), log["eval"])
    np.testing.assert_array_equal(np.asarray(states.rng[i]), np.asarray(state.rng))
  # Different seeds are different runs (initialisation and data order differ).
  assert not np.allclose(logs["train"]["train/loss"][0], logs["train"]["train/loss"][1])


def test_every_row_is_visited_once_per_epoch(run):
  _, train, _, _ = run
  key = jax.random.key(11)
  _, log = train(key)
  epochs = STEPS * BATCH // N
  assert epochs * N == STEPS * BATCH == 24
  visited = np.stack([np.asarray(log["train"][f"train/row{j}"]) for j in range(BATCH)],
                     axis=1).reshape(epochs, N).astype(int)
  for e in range(epochs):
    assert sorted(visited[e].tolist()) == list(range(N)), (e, visited[e])
  # A fresh order each epoch, the documented one.
  assert len({tuple(v) for v in visited.tolist()}) > 1
  _, data_key, _ = jax.random.split(key, 3)
  expected = [np.asarray(jax.random.permutation(k, N)) for k in jax.random.split(data_key, epochs)]
  np.testing.assert_array_equal(visited, np.stack(expected))


def test_default_eval_every_without_eval_fn(parts):
  model_def, objective, tx, _ = parts
  train = make_train(_init_params, model_def, objective, tx, _data(2), steps=2, batch_size=BATCH)
  # Shapes only (tracing, no compilation): one evaluation at the end, with nothing in it.
  state, log = jax.eval_shape(train, jax.random.key(0))
  assert log["eval"] == {}
  assert log["eval_step"].shape == (1,)
  assert log["train"]["train/loss"].shape == (2,) and state.step.shape == ()
  assert "train/learning_rate" not in log["train"]  # no schedule given


@pytest.mark.parametrize("kwargs, data, message", [
    ({"steps": 8, "batch_size": 2, "eval_every": 3}, None, "eval_every=3 must be a positive "
                                                           "divisor of steps=8"),
    ({"steps": 8, "batch_size": 2, "eval_every": 0}, None, "eval_every=0"),
    ({"steps": 4, "batch_size": N + 1}, None, f"batch_size={N + 1} exceeds the {N} rows"),
    ({"steps": 0, "batch_size": 2}, None, "steps must be a positive integer"),
    ({"steps": 4, "batch_size": 0}, None, "batch_size must be a positive integer"),
    ({"steps": 4, "batch_size": 2}, "mismatched", "disagree on their number of rows"),
])
def test_bad_arguments_are_refused(parts, kwargs, data, message):
  model_def, objective, tx, _ = parts
  arrays = _data()
  if data == "mismatched":
    arrays["loss_mask"] = arrays["loss_mask"][:-1]
  with pytest.raises(ValueError, match=message):
    make_train(_init_params, model_def, objective, tx, arrays, **kwargs)


@pytest.mark.parametrize("num_seeds, available, expected", [
    (5, 1, 1), (5, 2, 1), (5, 5, 5), (5, 8, 5), (6, 4, 3), (6, 8, 6), (4, 8, 4), (8, 4, 4),
    (7, 6, 1), (1, 8, 1),
])
def test_seed_devices_takes_the_largest_count_that_divides_the_seeds(num_seeds, available,
                                                                     expected):
  devices = [f"device{i}" for i in range(available)]
  assert seed_devices(num_seeds, devices) == devices[:expected]


@pytest.mark.parametrize("num_seeds, devices, message", [
    (0, ["d"], "num_seeds must be a positive integer, got 0"),
    (2.0, ["d"], "num_seeds must be a positive integer, got 2.0"),
    (True, ["d"], "num_seeds must be a positive integer, got True"),
    (2, [], "no devices given"),
])
def test_seed_devices_refuses_bad_arguments(num_seeds, devices, message):
  with pytest.raises(ValueError, match=message):
    seed_devices(num_seeds, devices)


@pytest.mark.parametrize("n", [0, -1, 2.5, "4", True])
def test_use_cpu_devices_refuses_a_bad_count(n):
  with pytest.raises(ValueError, match=f"n must be a positive integer, got {n!r}"):
    use_cpu_devices(n)


def test_seeds_spread_over_three_cpu_devices_match_one_device():
  """In a fresh process split into three CPU devices: six seeds run two per device and
  give the one-device run's losses and parameters (up to summation order); a loop with a
  per-seed trip count compiles without collectives (each device runs its own seeds)."""
  child = os.path.join(os.path.dirname(__file__), "seed_devices_child.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"  # CPU devices even on a machine with an accelerator
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's irl_jax
  proc = subprocess.run([sys.executable, child, "3"], capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 3
  assert out["key_devices"] == out["output_devices"] == 3  # the run was spread, and stays so
  loss_one, loss_many = np.asarray(out["loss_one"]), np.asarray(out["loss_many"])
  assert loss_one.shape == (6, 6) and np.all(np.isfinite(loss_one))
  np.testing.assert_allclose(loss_many, loss_one, rtol=1e-5, atol=1e-6)
  assert not np.allclose(loss_one[0], loss_one[1])  # six different seeds
  assert out["params_max_abs_diff"] < 1e-5
  np.testing.assert_allclose(out["scaled"], out["scaled_ref"], rtol=1e-6)
  assert out["scaled_devices"] == 3
  limits = np.asarray(out["loop_limits"])
  assert len(set(limits.tolist())) > 1  # the seeds' loops run different numbers of times
  np.testing.assert_array_equal(out["loop_counts"], limits)
  np.testing.assert_array_equal(out["loop_sums"], limits * (limits - 1) // 2)
  assert out["loop_collectives"] == []
  np.testing.assert_allclose(out["carry"], out["carry_ref"], rtol=1e-5)
  assert "argument 1 has a leaf of shape (5,)" in out["bad_arg"]
  assert "leading seed axis of 6" in out["bad_arg"]
  assert "JAX has already started" in out["late"]


class _Device:
  def __init__(self, platform):
    self.platform = platform


def test_cpu_compiler_options_apply_on_cpus_only():
  options = {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert cpu_compiler_options(options, [_Device("cpu")]) == options
  assert cpu_compiler_options(options, [_Device("gpu")]) is None
  assert cpu_compiler_options(options, [_Device("tpu"), _Device("tpu")]) is None
  assert cpu_compiler_options(None, [_Device("cpu")]) is None
  assert cpu_compiler_options({}, [_Device("cpu")]) is None
  expected = options if jax.devices()[0].platform == "cpu" else None
  assert cpu_compiler_options(options) == expected  # the default devices


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's YNNPACK fusions")
def test_compile_seeds_passes_compiler_options_to_xla():
  keys = jax.random.split(jax.random.key(0), 2)
  w = jnp.ones((96, 288))
  fn = lambda k: jax.random.normal(k, (64, 96)) @ w  # a matmul XLA:CPU gives to YNNPACK
  default, placed = compile_seeds(fn, keys)
  off, _ = compile_seeds(fn, keys, compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})
  assert "ynn_fusion" in default.as_text()
  assert "ynn_fusion" not in off.as_text()
  np.testing.assert_allclose(off(*placed), jax.vmap(fn)(keys), rtol=1e-5)
  # An option XLA does not know is refused by the compiler: the options reach it.
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    compile_seeds(fn, keys, compiler_options={"xla_cpu_no_such_option": True})


@pytest.mark.parametrize("keys, message", [
    (jax.random.key(0), "leading seed axis"),
    ([1, 2], "leading seed axis"),
    (jax.random.PRNGKey(0), "a single key is not a batch of seeds"),
])
def test_compile_seeds_refuses_keys_without_a_seed_axis(keys, message):
  with pytest.raises(ValueError, match=message):
    compile_seeds(lambda k: jax.random.normal(k), keys)
