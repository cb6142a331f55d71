"""Expert resets for continuous IRL (`irl_jax.control.resets`), the discriminator's replay
of past policy samples (`AdversarialConfig.disc_replay`) and the scripted MountainCar
expert."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import adversarial, data, envs, experts, ppo, resets


@pytest.fixture(scope="module")
def mountain_car():
  env = envs.make("gymnax/MountainCarContinuous-v0")
  expert = experts.scripted_expert(env, jax.random.key(0), eval_episodes=4)
  episodes, pool = resets.demonstrations_with_states(env, expert.act, jax.random.key(1), 3)
  return env, expert, episodes, pool


def test_scripted_expert_pumps_energy_and_reaches_the_flag(mountain_car):
  _, expert, episodes, _ = mountain_car
  obs = jnp.array([[-0.5, 0.01], [-0.5, -0.01], [-0.5, 0.0]])
  np.testing.assert_array_equal(np.asarray(expert.mode(obs)), [[1.0], [-1.0], [1.0]])
  # Reaching the flag pays +100; the action cost is 0.1·a² per step.
  assert expert.mean_return > 50 and expert.random_return < 0 and expert.kind == "scripted"
  assert episodes.terminated[episodes.episode_starts[1] - 1]  # the first episode ends at the flag
  assert np.all(data.episode_returns(episodes) > 50)
  assert np.isnan(episodes.log_prob).all()
  with pytest.raises(ValueError, match="no scripted expert for 'gymnax/CartPole-v1'"):
    experts.scripted_expert(envs.make("gymnax/CartPole-v1"), jax.random.key(0))


def test_pool_holds_the_demonstrations_states_row_for_row(mountain_car):
  env, _, episodes, pool = mountain_car
  assert pool.size == episodes.num_steps
  np.testing.assert_array_equal(np.asarray(pool.obs), episodes.obs)
  # Each stored state observes to its row, and carries its time index in the episode.
  np.testing.assert_allclose(np.asarray(jax.vmap(env.observe)(pool.states)), episodes.obs,
                             rtol=0, atol=0)
  t_in_episode = np.arange(episodes.num_steps) - np.repeat(episodes.episode_starts,
                                                           episodes.lengths)
  np.testing.assert_array_equal(np.asarray(pool.states.time), t_in_episode)


def test_reset_mixture_draws_expert_states_with_probability_alpha(mountain_car):
  env, _, episodes, pool = mountain_car
  n = 4000
  from_pool_nonstart = 1.0 - episodes.num_episodes / pool.size   # pool rows with time > 0
  for alpha in (0.0, 0.3, 1.0):
    state, obs = jax.vmap(resets.with_expert_resets(env, pool, alpha).reset)(
        jax.random.split(jax.random.key(2), n))
    late = np.asarray(state.time) > 0          # ν0 states all have time 0
    expected = alpha * from_pool_nonstart
    assert abs(late.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9
    # Every drawn state's observation is its state's.
    np.testing.assert_allclose(np.asarray(jax.vmap(env.observe)(state)), np.asarray(obs))
  state, obs = jax.vmap(resets.with_expert_resets(env, pool, 1.0).reset)(
      jax.random.split(jax.random.key(3), 64))
  rows = np.asarray(obs)[:, None, :] == np.asarray(pool.obs)[None]
  assert rows.all(-1).any(-1).all()            # α = 1: every start is a demonstration state


def test_automatic_reset_goes_to_the_mixture_and_keeps_the_true_successor():
  env = envs.make("gymnax/Pendulum-v1")        # ends only by its 200-step time limit
  act = lambda k, o: (jnp.zeros((1,)), jnp.zeros(()))
  _, pool = resets.demonstrations_with_states(env, act, jax.random.key(0), 2)
  reset_env = resets.with_expert_resets(env, pool, 1.0)
  last = jax.tree.map(lambda x: x[5], pool.states)
  last = last.replace(time=jnp.asarray(env.spec.max_steps - 1, last.time.dtype))
  state, step = jax.jit(reset_env.step)(jax.random.key(4), last, jnp.zeros((1,)))
  assert bool(step.truncated) and not bool(step.terminated)
  # The true successor is the step from the given state, not the reset state.
  _, plain = env.step(jax.random.key(9), last, jnp.zeros((1,)))
  np.testing.assert_allclose(np.asarray(step.final_obs), np.asarray(plain.final_obs), atol=1e-6)
  hit = np.all(np.asarray(pool.obs) == np.asarray(step.obs), axis=-1)
  assert hit.any() and int(state.time) == int(np.asarray(pool.states.time)[np.argmax(hit)])
  # The wrapped environment rolls out under jit and vmap like any other.
  s0, o0 = jax.vmap(reset_env.reset)(jax.random.split(jax.random.key(5), 3))
  _, _, traj = jax.jit(jax.vmap(lambda s, o, k: envs.rollout(reset_env, act, s, o, k, 400)))(
      s0, o0, jax.random.split(jax.random.key(6), 3))
  assert traj.truncated.sum() >= 3 and np.isfinite(np.asarray(traj.obs)).all()


def test_bad_resets_are_refused(mountain_car):
  env, _, _, pool = mountain_car
  with pytest.raises(ValueError, match="alpha must lie in"):
    resets.with_expert_resets(env, pool, 1.5)
  with pytest.raises(ValueError, match="do not match gymnax/Pendulum-v1"):
    resets.with_expert_resets(envs.make("gymnax/Pendulum-v1"), pool, 0.5)
  cut = resets.ResetPool(jax.tree.map(lambda x: x[:10], pool.states), pool.obs)
  with pytest.raises(ValueError, match="must match row for row"):
    resets.with_expert_resets(env, cut, 0.5)
  empty = resets.ResetPool(jax.tree.map(lambda x: x[:0], pool.states), pool.obs[:0])
  with pytest.raises(ValueError, match="pool is empty"):
    resets.with_expert_resets(env, empty, 0.5)
  with pytest.raises(ValueError, match="num_episodes must be >= 1"):
    resets.demonstrations_with_states(env, lambda k, o: (o[:1], jnp.zeros(())),
                                      jax.random.key(0), 0)


TINY = ppo.PPOConfig(total_timesteps=4 * 64, num_envs=4, num_steps=16, num_minibatches=2,
                     update_epochs=1)


def test_discriminator_replay_is_a_ring_buffer_of_past_rollouts(mountain_car):
  env, _, episodes, _ = mountain_car
  demos = data.to_transitions(episodes)
  config = adversarial.AdversarialConfig(ppo=TINY, disc_replay=2 * TINY.batch_size,
                                         disc_batch_size=32)
  adv = adversarial.make_adversarial(config, env)
  state, keys = adv.start(jax.random.key(0), demos)
  body = jax.jit(lambda s, k: adv.body(s, k, demos))
  rollouts = []
  for k in keys[:3]:
    _, batch = adv.ppo.collect(state.ppo)   # what `body` collects from this state
    rollouts.append(ppo.to_transitions(batch))
    state, metrics = body(state, k)
    assert np.isfinite(float(metrics["disc/loss"]))
  b = TINY.batch_size
  assert int(state.replay_count) == 3 * b
  # Capacity two rollouts: the third overwrote the first, the second is still there.
  np.testing.assert_array_equal(np.asarray(state.replay.obs[:b]), np.asarray(rollouts[2].obs))
  np.testing.assert_array_equal(np.asarray(state.replay.obs[b:]), np.asarray(rollouts[1].obs))
  np.testing.assert_array_equal(np.asarray(state.replay.action[b:]),
                                np.asarray(rollouts[1].action))
  without = adversarial.make_adversarial(dataclasses.replace(config, disc_replay=0), env)
  assert without.init(jax.random.key(0)).replay is None
  with pytest.raises(ValueError, match=r"AdversarialConfig\.disc_replay"):
    adversarial.make_adversarial(dataclasses.replace(config, disc_replay=b - 1), env)
