"""Checkpointed, resumable control runs (`irl_jax.control.runner`): chunked runs compute
what `train` computes, an interrupted run resumes to the uninterrupted result bit for
bit, metrics are written once per iteration, and bad settings raise clearly. PPO and
GAIL/AIRL first, then BC, IQ-Learn (offline and online), SAC and the offline-RL
learners, whose `start`/`body` are their `train`'s scan."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import adversarial, data, envs, experts, imitation, offline, ppo, runner, sac
from irl_jax.control.types import Transitions
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


def interrupt_at_step_5(monkeypatch, run):
  """Calls `run()` with the metric writer raising `KeyboardInterrupt` at step 5, as an
  interruption after the checkpoint of step 4 would."""
  original = MetricWriter.write

  def crash_at_5(self, step, scalars):
    if step == 5:
      raise KeyboardInterrupt("simulated interruption")
    original(self, step, scalars)

  monkeypatch.setattr(MetricWriter, "write", crash_at_5)
  with pytest.raises(KeyboardInterrupt):
    run()
  monkeypatch.setattr(MetricWriter, "write", original)


def test_interrupted_run_resumes_exactly(env, reference, tmp_path, monkeypatch):
  learner, (state, metrics) = reference
  interrupt_at_step_5(monkeypatch, lambda: runner.run(
      learner.start, learner.body, jax.random.key(3), workdir=str(tmp_path), chunk=2,
      save_every=2, fingerprint={"ppo": "small"}))
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


# --- the other learners ---------------------------------------------------------------

STEPS = 6  # iterations of every run below: a chunk of 4 and one of 2


def uniform_transitions(env, key, num_envs=4, steps=32) -> Transitions:
  """Transitions of uniformly random actions (any data will do: the runs are compared
  with each other, not scored)."""
  spec = env.spec

  def act(k, obs):
    del obs
    if spec.action.discrete:
      return jax.random.randint(k, (), 0, spec.action.num_actions), jnp.zeros(())
    return jax.random.uniform(k, spec.action.shape, minval=jnp.asarray(spec.action.low),
                              maxval=jnp.asarray(spec.action.high)), jnp.zeros(())

  state, obs = jax.vmap(env.reset)(jax.random.split(key, num_envs))
  _, _, r = jax.vmap(lambda s, o, k: envs.rollout(env, act, s, o, k, steps))(
      state, obs, jax.random.split(jax.random.fold_in(key, 1), num_envs))
  r = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), r)
  return Transitions(r.obs, r.action, r.reward, r.next_obs, r.terminated, r.truncated,
                     r.log_prob, jnp.ones_like(r.reward))


def uniform_preferences(env, key, num_pairs=8, length=4) -> offline.Preferences:
  """Pairs of random segments, labelled by their true returns."""
  t = uniform_transitions(env, key, num_envs=2 * num_pairs, steps=length)
  pairs = jax.tree.map(lambda x: x.reshape((num_pairs, 2, length, *x.shape[1:])), t)
  returns = pairs.reward.sum(-1)
  return offline.Preferences(pairs.obs, pairs.action, pairs.next_obs, pairs.terminated,
                             jnp.ones((num_pairs, 2, length), bool),
                             (returns[:, 1] > returns[:, 0]).astype(jnp.float32))


@pytest.fixture(scope="module")
def cartpole():
  env = envs.make("gymnax/CartPole-v1")
  return env, uniform_transitions(env, jax.random.key(0))


@pytest.fixture(scope="module")
def pendulum():
  env = envs.make("gymnax/Pendulum-v1")
  return env, uniform_transitions(env, jax.random.key(1))


def make_case(name, cartpole, pendulum):
  """`(start, body, train, data)` of one small learner; `train(key, *data)`."""
  if name == "bc":
    env, demos = cartpole
    bc = imitation.make_bc(imitation.BCConfig(hidden=(16,), batch_size=16, num_steps=STEPS),
                           env.spec)
    return bc.start, bc.body, bc.train, (demos,)
  if name == "iq_offline":
    env, demos = pendulum  # continuous: the SAC-style critic and actor
    iq = imitation.make_iq_learn(imitation.IQLearnConfig(
        hidden=(16,), batch_size=16, num_steps=STEPS), env.spec)
    return iq.start, iq.body, iq.train, (demos,)
  if name == "iq_online":
    env, demos = cartpole
    iq = imitation.make_iq_learn(imitation.IQLearnConfig(
        online=True, hidden=(16,), batch_size=16, num_steps=STEPS, num_envs=2,
        replay_size=64, warmup_env_steps=8), env.spec)
    return (functools.partial(iq.start, env=env), functools.partial(iq.body, env=env),
            functools.partial(iq.train, env=env), (demos,))
  if name == "sac":
    env, _ = pendulum
    learner = sac.make_sac(sac.SACConfig(
        num_envs=2, total_timesteps=64 + 2 * STEPS, learning_starts=64, batch_size=32,
        buffer_size=128, hidden=(16,), updates_per_step=2), env)
    return learner.start, learner.body, learner.train, ()
  env, transitions = pendulum
  if name in ("ipl_iql", "ipl_awac", "reward_model"):
    prefs = uniform_preferences(env, jax.random.key(2))
    make = {"ipl_iql": offline.make_ipl_iql, "ipl_awac": offline.make_ipl_awac,
            "reward_model": offline.make_reward_model}[name]
    config = {"num_steps": STEPS, "pref_batch_size": 4, "hidden": (16,)}
    if name == "reward_model":
      learner = make(config, env.spec)
      return learner.start, learner.body, learner.train, (prefs,)
    learner = make({**config, "batch_size": 16}, env.spec)
    return learner.start, learner.body, learner.train, (prefs, transitions)
  make = {"iql": offline.make_iql, "td3_bc": offline.make_td3_bc, "awac": offline.make_awac}
  learner = make[name]({"num_steps": STEPS, "batch_size": 16, "hidden": (16,)}, env.spec)
  return learner.start, learner.body, learner.train, (transitions,)


CASES = ("bc", "iq_offline", "iq_online", "sac", "iql", "td3_bc", "awac", "ipl_iql", "ipl_awac",
         "reward_model")


@pytest.mark.parametrize("name", CASES)
def test_learner_chunked_run_equals_train(name, cartpole, pendulum, tmp_path):
  start, body, train, data = make_case(name, cartpole, pendulum)
  key = jax.random.key(7)
  want, want_metrics = jax.jit(train)(key, *data)
  carry, got_metrics = runner.run(start, body, key, *data, workdir=str(tmp_path), chunk=4,
                                  save_every=4)
  # `train` returns the learner's parameters; BC and IQ-Learn carry more (the optimiser,
  # the online learner's environments and replay) and keep the parameters in `.params`.
  got = carry.params if name in ("bc", "iq_offline", "iq_online") else carry
  assert_same(got, want)
  assert set(got_metrics) == set(want_metrics)
  for k in want_metrics:
    np.testing.assert_array_equal(got_metrics[k], np.asarray(want_metrics[k]), err_msg=k)
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines] == list(range(1, STEPS + 1))


@pytest.mark.parametrize("name", ("iq_online", "sac", "bc"))
def test_learner_interrupted_run_resumes_exactly(name, cartpole, pendulum, tmp_path, monkeypatch):
  start, body, _, data = make_case(name, cartpole, pendulum)
  key = jax.random.key(11)
  whole, whole_metrics = runner.run(start, body, key, *data, workdir=str(tmp_path / "whole"),
                                    chunk=2, save_every=2)
  interrupt_at_step_5(monkeypatch, lambda: runner.run(
      start, body, key, *data, workdir=str(tmp_path / "cut"), chunk=2, save_every=2,
      fingerprint={"learner": name}))
  logs = []
  got, got_metrics = runner.run(start, body, key, *data, workdir=str(tmp_path / "cut"),
                                chunk=2, save_every=2, fingerprint={"learner": name},
                                log=logs.append)
  assert logs == [f"runner: resumed {tmp_path / 'cut'} at iteration 4 of {STEPS}"]
  assert_same(got, whole)  # every leaf of the carry: replay, environments, keys, optimiser
  for k in whole_metrics:
    np.testing.assert_array_equal(got_metrics[k], whole_metrics[k][4:], err_msg=k)
  steps = [json.loads(line)["step"]
           for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, STEPS + 1))


def speed_reward(reward_params, obs, action, next_obs):
  """A learned-reward stand-in: `reward_params` times the pendulum's angular speed."""
  del action, obs
  return reward_params * jnp.abs(next_obs[..., 2])


@pytest.mark.parametrize("name", ("sac", "ppo"))
def test_runs_with_a_learned_reward_pass_its_parameters(name, pendulum, tmp_path):
  env, _ = pendulum
  if name == "sac":
    learner = sac.make_sac(sac.SACConfig(
        num_envs=2, total_timesteps=64 + 2 * STEPS, learning_starts=64, batch_size=32,
        buffer_size=128, hidden=(16,)), env, reward_fn=speed_reward)
  else:
    learner = ppo.make_ppo(ppo.PPOConfig(num_envs=2, num_steps=8, total_timesteps=16 * STEPS,
                                         update_epochs=1, num_minibatches=2, hidden=(16,)),
                           env, reward_fn=speed_reward)
  key = jax.random.key(5)
  scale = jnp.float32(3.0)
  want, want_metrics = jax.jit(learner.train)(key, scale)
  got, got_metrics = runner.run(learner.start, learner.body, key, scale, workdir=str(tmp_path),
                                chunk=4, save_every=4)
  assert_same(got, want)
  for k in want_metrics:
    np.testing.assert_array_equal(got_metrics[k], np.asarray(want_metrics[k]), err_msg=k)
  # The parameters matter: another scale trains differently.
  other, _ = jax.jit(learner.train)(key, jnp.float32(0.0))
  assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(runner.storable(other.params)),
      jax.tree.leaves(runner.storable(want.params)), strict=True))


def test_all_padding_data_is_refused_before_anything_runs(pendulum, tmp_path):
  env, transitions = pendulum
  learner = offline.make_iql({"num_steps": STEPS, "batch_size": 16, "hidden": (16,)}, env.spec)
  padding = transitions._replace(weight=jnp.zeros_like(transitions.weight))
  with pytest.raises(ValueError, match=r"iql: `transitions\.weight` has no row with weight > 0"):
    runner.run(learner.start, learner.body, jax.random.key(0), padding, workdir=str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_online_iq_learn_needs_the_environment(cartpole):
  env, demos = cartpole
  iq = imitation.make_iq_learn(imitation.IQLearnConfig(
      online=True, hidden=(16,), batch_size=16, num_steps=2, num_envs=2, replay_size=64,
      warmup_env_steps=8), env.spec)
  match = r"online=True: .* needs the env .*functools\.partial"
  with pytest.raises(ValueError, match=match):
    iq.start(jax.random.key(0), demos)
  with pytest.raises(ValueError, match=match):
    iq.train(jax.random.key(0), demos)
  carry, keys = iq.start(jax.random.key(0), demos, env)
  with pytest.raises(ValueError, match=match):
    iq.body(carry, keys[0], demos)


def test_reward_model_iql_has_no_single_scan():
  spec = envs.make("gymnax/Pendulum-v1").spec
  learner = offline.make_reward_model_iql({}, spec)
  assert learner.start is None and learner.body is None
  assert offline.make_ipl_iql({}, spec).start is not None
