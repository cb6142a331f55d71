"""BC and IQ-Learn with function approximation (`irl_jax.control.imitation`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_jax.control import envs, imitation
from irl_jax.control.types import Transitions
from irl_jax.tabular import dp, learners
from irl_jax.tabular import envs as tabular_envs


def cartpole_expert(key, obs):
  """A hand-written controller that balances the pole for all 500 steps."""
  del key
  return (obs[2] + 0.5 * obs[3] > 0).astype(jnp.int32)


def demonstrations(env, policy, key, num_envs, steps):
  state, obs = jax.vmap(env.reset)(jax.random.split(key, num_envs))
  act = lambda k, o: (policy(k, o), jnp.zeros(()))
  _, _, r = jax.vmap(lambda s, o, k: envs.rollout(env, act, s, o, k, steps))(
      state, obs, jax.random.split(jax.random.fold_in(key, 1), num_envs))
  r = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), r)
  return Transitions(r.obs, r.action, r.reward, r.next_obs, r.terminated, r.truncated,
                     r.log_prob, jnp.ones_like(r.reward))


@pytest.fixture(scope="module")
def cartpole():
  env = envs.make("gymnax/CartPole-v1")
  return env, demonstrations(env, cartpole_expert, jax.random.key(0), 2, 500)


def mean_return(env, learner, params, seed=1, episodes=8):
  return float(envs.episode_returns(env, lambda k, o: learner.mode(params, o),
                                    jax.random.key(seed), episodes).mean())


def test_expert_is_an_expert(cartpole):
  env, _ = cartpole
  assert float(envs.episode_returns(env, cartpole_expert, jax.random.key(3), 4).min()) == 500.0


def test_bc_clones_the_cartpole_expert(cartpole):
  env, demos = cartpole
  bc = imitation.make_bc(imitation.BCConfig(num_steps=400), env.spec)
  params, metrics = jax.jit(bc.train)(jax.random.key(0), demos)
  assert float(metrics["bc/nll"][-1]) < 0.5 * float(metrics["bc/nll"][0])
  assert mean_return(env, bc, params) >= 450


def test_offline_iq_learn_imitates_the_cartpole_expert(cartpole):
  env, demos = cartpole
  iq = imitation.make_iq_learn(imitation.IQLearnConfig(num_steps=1000), env.spec)
  params, metrics = jax.jit(iq.train)(jax.random.key(0), demos)
  assert mean_return(env, iq, params) >= 300  # random play: about 20
  for k in ("iq/critic_loss", "iq/q_expert", "iq/v_expert", "iq/reward_expert"):
    assert np.isfinite(np.asarray(metrics[k])).all(), k
  # Offline: no policy rows, so the policy statistics are NaN by construction.
  assert np.isnan(np.asarray(metrics["iq/v_policy"])).all()


def test_online_iq_learn_acts_and_learns(cartpole):
  env, demos = cartpole
  config = imitation.IQLearnConfig(num_steps=600, online=True, num_envs=4, replay_size=4096,
                                   warmup_env_steps=256)
  iq = imitation.make_iq_learn(config, env.spec)
  params, metrics = jax.jit(lambda k: iq.train(k, demos, env))(jax.random.key(0))
  for k in ("iq/v_policy", "iq/reward_policy", "iq/critic_loss"):
    assert np.isfinite(np.asarray(metrics[k])).all(), k
  assert mean_return(env, iq, params) >= 100


def test_vmapped_seeds_equal_sequential_runs(cartpole):
  env, demos = cartpole
  iq = imitation.make_iq_learn(imitation.IQLearnConfig(num_steps=50, batch_size=64), env.spec)
  keys = jax.random.split(jax.random.key(7), 3)
  train = jax.jit(iq.train)
  batched, _ = jax.jit(jax.vmap(iq.train, in_axes=(0, None)))(keys, demos)
  for i, k in enumerate(keys):
    one, _ = train(k, demos)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=2e-5, atol=2e-6),
                 batched.critic, one.critic)


def test_padding_rows_are_never_used(cartpole):
  """Rows with weight 0 are poisoned with NaN; training stays finite."""
  env, demos = cartpole
  pad = jax.tree.map(lambda x: jnp.concatenate([x, jnp.full((100, *x.shape[1:]), jnp.nan)
                                                if x.dtype == jnp.float32 else
                                                jnp.zeros((100, *x.shape[1:]), x.dtype)]), demos)
  pad = pad._replace(weight=jnp.concatenate([demos.weight, jnp.zeros(100)]))
  iq = imitation.make_iq_learn(imitation.IQLearnConfig(num_steps=100), env.spec)
  _, metrics = jax.jit(iq.train)(jax.random.key(0), pad)
  assert np.isfinite(np.asarray(metrics["iq/critic_loss"])).all()


def test_iq_learn_with_a_lookup_table_agrees_with_the_tabular_learner():
  """One-hot observations and no hidden layer make the critic a Q-table (plus a bias per
  action); IQ-Learn then recovers the tabular expert's greedy policy, as the tabular
  implementation does on the same transitions."""
  num_states, num_actions = 8, 3
  mdp = tabular_envs.random_mdp(jax.random.key(0), num_states, num_actions, discount=0.9)
  expert = dp.soft_value_iteration(mdp.reward, mdp, temperature=0.1).policy
  traj = dp.sample_trajectories(jax.random.key(1), expert, mdp, horizon=30, num_trajectories=64)
  tr = learners.transitions_from(traj)
  q_tab, _ = jax.jit(learners.make_iq_learn(
      num_states=num_states, num_actions=num_actions, optimizer=optax.adam(0.05), steps=3000,
      temperature=1.0))(jax.random.key(2), mdp, tr)
  eye = jnp.eye(num_states)
  n = tr.states.shape[0]
  demos = Transitions(eye[tr.states], tr.actions, jnp.zeros(n), eye[tr.next_states], tr.dones,
                      jnp.zeros(n, bool), jnp.full(n, jnp.nan), jnp.ones(n))
  spec = envs.EnvSpec("table", (num_states,), envs.ActionSpec(True, (), num_actions=num_actions),
                      30)
  config = imitation.IQLearnConfig(hidden=(), num_steps=3000, learning_rate=0.05, batch_size=512,
                                   discount=0.9, temperature=1.0, max_grad_norm=None)
  iq = imitation.make_iq_learn(config, spec)
  params, _ = jax.jit(iq.train)(jax.random.key(3), demos)
  visited = np.unique(np.asarray(tr.states))
  deep = np.asarray(jax.vmap(lambda o: iq.mode(params, o))(eye))[visited]
  np.testing.assert_array_equal(deep, np.asarray(q_tab.argmax(-1))[visited])
  np.testing.assert_array_equal(deep, np.asarray(expert.argmax(-1))[visited])


def scripted_mountain_car(key, obs):
  """Push in the direction of motion: reaches the goal in about 100 steps."""
  del key
  return jnp.where(obs[1:2] >= 0, 1.0, -1.0)


def test_continuous_bc_and_iq_learn_on_mountain_car():
  env = envs.make("gymnax/MountainCarContinuous-v0")
  expert_return = float(envs.episode_returns(env, scripted_mountain_car, jax.random.key(0),
                                             4).mean())
  assert expert_return > 80
  demos = demonstrations(env, scripted_mountain_car, jax.random.key(1), 2, 400)
  bc = imitation.make_bc(imitation.BCConfig(num_steps=500), env.spec)
  params, _ = jax.jit(bc.train)(jax.random.key(0), demos)
  assert mean_return(env, bc, params, episodes=4) > 50
  config = imitation.IQLearnConfig(num_steps=800, temperature=0.01, normalize_obs=True)
  iq = imitation.make_iq_learn(config, env.spec)
  params, metrics = jax.jit(iq.train)(jax.random.key(0), demos)
  assert np.isfinite(np.asarray(metrics["iq/actor_entropy"])).all()
  assert mean_return(env, iq, params, episodes=4) > 50  # doing nothing: 0


@pytest.mark.parametrize("field, value", [
    ("learning_rate", 0.0), ("batch_size", 0), ("num_steps", -1), ("temperature", 0.0),
    ("discount", 1.0), ("target_update", 1.5)])
def test_bad_iq_learn_configs_name_the_field(field, value):
  spec = envs.make("gymnax/CartPole-v1").spec
  with pytest.raises(ValueError, match=f"IQLearnConfig.{field}"):
    imitation.make_iq_learn(dataclasses.replace(imitation.IQLearnConfig(), **{field: value}), spec)


def test_online_iq_learn_needs_the_environment(cartpole):
  env, demos = cartpole
  iq = imitation.make_iq_learn(imitation.IQLearnConfig(online=True, num_steps=2), env.spec)
  with pytest.raises(ValueError, match="online"):
    iq.train(jax.random.key(0), demos)


def test_bc_entropy_bonus_stays_finite_on_saturated_actions():
  """Bang-bang expert actions (±1, the box's edges) drive the squashed Gaussian to tanh
  outputs of exactly ±1 in float32; the entropy bonus uses the sampler's own log-density,
  so it never inverts them (atanh(±1) = inf) into a NaN loss."""
  env = envs.make("gymnax/MountainCarContinuous-v0")
  demos = demonstrations(env, scripted_mountain_car, jax.random.key(1), 2, 200)
  bc = imitation.make_bc(imitation.BCConfig(num_steps=300, entropy_coef=0.01), env.spec)
  params, metrics = jax.jit(bc.train)(jax.random.key(0), demos)
  assert np.isfinite(np.asarray(metrics["bc/nll"])).all()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
