"""Checkpointed, resumable control runs (`irl_jax.control.runner`): chunked runs compute
what `train` computes, an interrupted run resumes to the uninterrupted result bit for
bit, metrics are written once per iteration, and bad settings raise clearly."""

import json

import jax
import numpy as np
import pytest

from irl_jax.control import adversarial, data, envs, experts, ppo, runner
from irl_jax.train.checkpoint import ConfigMismatchError
from irl_jax.train.metrics import MetricWriter

CONFIG = ppo.PPOConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 6, update_epochs=2,
                       num_minibatches=2)


@pytest.fixture(scope="module")
def env():
  return envs.make("gymnax/CartPole-v1")


@pytest.fixture(scope="module")
def reference(env):
  learner = ppo.make_ppo(CONFIG, env)
  return learner, jax.jit(learner.train)(jax.random.key(3))


def assert_same(a, b):
  a, b = runner.storable(a), runner.storable(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_chunked_run_equals_train(env, reference, tmp_path):
  learner, (state, metrics) = reference
  got, got_metrics = runner.run(learner.start, learner.body, jax.random.key(3),
                                workdir=str(tmp_path), chunk=4, save_every=4)
  assert_same(got, state)  # 6 iterations as a chunk of 4 and one of 2
  for k in metrics:
    np.testing.assert_array_equal(got_metrics[k], np.asarray(metrics[k]))
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([r["recent_return"] for r in lines], metrics["recent_return"],
                             rtol=1e-6)


def test_interrupted_run_resumes_exactly(env, reference, tmp_path, monkeypatch):
  learner, (state, metrics) = reference
  original = MetricWriter.write

  def crash_at_5(self, step, scalars):
    if step == 5:
      raise KeyboardInterrupt("simulated interruption")
    original(self, step, scalars)

  monkeypatch.setattr(MetricWriter, "write", crash_at_5)
  with pytest.raises(KeyboardInterrupt):
    runner.run(learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path),
               chunk=2, save_every=2, fingerprint={"ppo": "small"})
  monkeypatch.setattr(MetricWriter, "write", original)
  # Iterations 1-4 are checkpointed (saves at 2 and 4); step 5 was never written.
  logs = []
  got, got_metrics = runner.run(learner.start, learner.body, jax.random.key(3),
                                workdir=str(tmp_path), chunk=2, save_every=2,
                                fingerprint={"ppo": "small"}, log=logs.append)
  assert logs == [f"runner: resumed {tmp_path} at iteration 4 of 6"]
  assert_same(got, state)
  np.testing.assert_array_equal(got_metrics["recent_return"],
                                np.asarray(metrics["recent_return"])[4:])
  steps = [json.loads(line)["step"]
           for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]
  # A finished run called again does nothing more and returns the final state.
  again, m = runner.run(learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path),
                        chunk=2, save_every=2, fingerprint={"ppo": "small"})
  assert_same(again, state)
  assert m == {}
  # Another configuration in the same workdir is refused, naming the field.
  with pytest.raises(ConfigMismatchError, match="ppo"):
    runner.run(learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path),
               chunk=2, save_every=2, fingerprint={"ppo": "large"})


def test_metric_lines_past_the_checkpoint_are_dropped(env, reference, tmp_path):
  learner, (state, _) = reference
  runner.run(learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path), chunk=2,
             save_every=2)
  # As if iterations 5-6 had been logged but their checkpoint lost: keep 2 and 4 only.
  import shutil
  shutil.rmtree(tmp_path / "checkpoints" / "6")
  (tmp_path / "checkpoints" / "meta" / "6.json").unlink(missing_ok=True)
  got, m = runner.run(learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path),
                      chunk=2, save_every=2)
  assert_same(got, state)
  assert len(m["recent_return"]) == 2
  steps = [json.loads(line)["step"]
           for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_adversarial_run_with_data_equals_train(env, tmp_path):
  expert = experts.train_expert(env, jax.random.key(0), CONFIG, eval_episodes=2)
  demos = data.to_transitions(experts.demonstrations(env, expert, jax.random.key(1), 2))
  adv = adversarial.make_adversarial(adversarial.AdversarialConfig(
      method="airl", ppo=CONFIG, disc_batch_size=32, disc_updates=2), env)
  state, metrics = jax.jit(adv.train)(jax.random.key(5), demos)
  got, got_metrics = runner.run(adv.start, adv.body, jax.random.key(5), demos,
                                workdir=str(tmp_path), chunk=3, save_every=3)
  assert_same(got, state)
  np.testing.assert_array_equal(got_metrics["recent_return"], metrics["recent_return"])


def test_bad_settings(env, reference, tmp_path):
  learner, _ = reference
  for kwargs, match in (({"chunk": 0}, "chunk must be a positive integer"),
                        ({"chunk": 4, "save_every": 6}, "must be a multiple of chunk"),
                        ({"save_every": 2.0}, "save_every must be a positive integer")):
    with pytest.raises(ValueError, match=match):
      runner.run(learner.start, learner.body, jax.random.key(0), workdir=str(tmp_path),
                 **{"chunk": 2, "save_every": 2, **kwargs})
