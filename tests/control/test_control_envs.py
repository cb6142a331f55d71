"""The environment adapter (`irl_jax.control.envs`) over gymnax and Brax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import envs


@pytest.mark.parametrize("name, discrete, obs_shape, max_steps", [
    ("CartPole-v1", True, (4,), 500), ("Acrobot-v1", True, (6,), 500),
    ("Pendulum-v1", False, (3,), 200), ("MountainCarContinuous-v0", False, (2,), 999)])
def test_laptop_suite_specs(name, discrete, obs_shape, max_steps):
  env = envs.make(f"gymnax/{name}")
  assert name in envs.GYMNAX_SUITE
  assert env.spec.name == f"gymnax/{name}"
  assert env.spec.obs_shape == obs_shape and env.spec.max_steps == max_steps
  assert env.spec.action.discrete == discrete
  if not discrete:
    assert env.spec.action.shape == (1,)
    assert np.all(env.spec.action.low < env.spec.action.high)
  state, obs = env.reset(jax.random.key(0))
  assert obs.shape == obs_shape and obs.dtype == jnp.float32
  np.testing.assert_array_equal(env.observe(state), obs)


def test_step_separates_termination_truncation_and_resets():
  """CartPole under a constant action falls over (terminated), its final observation is
  the fallen state, and the next policy input is a fresh episode's."""
  env = envs.make("gymnax/CartPole-v1")
  state, obs = env.reset(jax.random.key(0))
  act = lambda k, o: (jnp.int32(1), jnp.zeros(()))
  _, _, r = jax.jit(lambda s, o, k: envs.rollout(env, act, s, o, k, 60))(
      state, obs, jax.random.key(1))
  t = int(np.argmax(np.asarray(r.terminated)))
  assert r.terminated[t] and not r.truncated[t]
  assert not np.asarray(r.terminated[:t]).any()
  # The pole angle at the end is past the 12° threshold; the next input is a new episode.
  assert abs(float(r.next_obs[t, 2])) > 0.2094
  assert abs(float(r.obs[t + 1, 2])) <= 0.05
  # Inside the episode the successor is the next input.
  np.testing.assert_allclose(r.next_obs[:t], r.obs[1:t + 1], atol=1e-6)
  assert r.reward.dtype == jnp.float32 and r.reward.shape == (60,)


def test_time_limit_truncates():
  env = envs.make("gymnax/Pendulum-v1")
  state, obs = env.reset(jax.random.key(0))
  act = lambda k, o: (jnp.zeros((1,)), jnp.zeros(()))
  _, _, r = jax.jit(lambda s, o, k: envs.rollout(env, act, s, o, k, 450))(
      state, obs, jax.random.key(1))
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(r.truncated)), [199, 399])
  assert not np.asarray(r.terminated).any()


def test_actions_are_clipped_to_the_box():
  env = envs.make("gymnax/Pendulum-v1")
  state, _ = env.reset(jax.random.key(0))
  _, big = env.step(jax.random.key(1), state, jnp.array([100.0]))
  _, edge = env.step(jax.random.key(1), state, jnp.array([2.0]))
  np.testing.assert_allclose(big.final_obs, edge.final_obs)
  np.testing.assert_allclose(big.reward, edge.reward)


def test_environment_parameters_change_the_dynamics():
  light = envs.make("gymnax/Pendulum-v1")
  heavy = envs.make("gymnax/Pendulum-v1", params={"m": 2.0})
  assert float(heavy.params.m) == 2.0
  state, _ = light.reset(jax.random.key(0))
  a = jnp.array([1.5])
  _, s1 = light.step(jax.random.key(1), state, a)
  _, s2 = heavy.step(jax.random.key(1), state, a)
  assert not np.allclose(s1.final_obs, s2.final_obs)
  with pytest.raises(ValueError, match=r"unknown environment parameter.*'mass'"):
    envs.make("gymnax/Pendulum-v1", params={"mass": 2.0})


def test_bad_names_are_refused():
  with pytest.raises(ValueError, match="gymnax/<id>"):
    envs.make("CartPole-v1")
  with pytest.raises(ValueError, match="unknown gymnax environment 'CartPole-v9'"):
    envs.make("gymnax/CartPole-v9")


def test_episode_returns_of_a_constant_policy():
  """CartPole pays 1 per step until it falls: the return is the episode's length."""
  env = envs.make("gymnax/CartPole-v1")
  returns = envs.episode_returns(env, lambda k, o: jnp.int32(0), jax.random.key(0), 3)
  assert returns.shape == (3,)
  assert np.all((np.asarray(returns) >= 8) & (np.asarray(returns) <= 12))


def test_vmapped_environments():
  env = envs.make("gymnax/Acrobot-v1")
  state, _obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 4))
  state, step = jax.vmap(env.step)(jax.random.split(jax.random.key(1), 4), state,
                                   jnp.array([0, 1, 2, 1]))
  assert step.obs.shape == (4, 6) and step.reward.shape == (4,)


def test_brax_adapter():
  pytest.importorskip("brax")
  env = envs.make("brax/inverted_pendulum", backend="generalized", episode_length=30)
  assert env.spec.name == "brax/inverted_pendulum" and env.spec.max_steps == 30
  assert not env.spec.action.discrete and env.spec.action.shape == (1,)
  state, obs = env.reset(jax.random.key(0))
  assert obs.shape == env.spec.obs_shape
  act = lambda k, o: (jnp.zeros((1,)), jnp.zeros(()))
  _, _, r = jax.jit(lambda s, o, k: envs.rollout(env, act, s, o, k, 70))(
      state, obs, jax.random.key(1))
  # Balancing with no force: it either falls (terminated) or reaches the time limit.
  done = np.asarray(r.terminated | r.truncated)
  assert done.sum() >= 2
  assert not np.asarray(r.terminated & r.truncated).any()
  np.testing.assert_array_equal(np.asarray(r.reward)[:3], 1.0)
