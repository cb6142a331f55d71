"""Tests for `irl_jax.control.sac`: continuous SAC improves Pendulum, discrete SAC
learns CartPole (and its soft value and critic target match NumPy references), the reward
hook, seed-vmapping, the replay buffer's bookkeeping and config checks.

Each program is compiled once per module (module-scoped fixtures).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import envs, sac

CARTPOLE = envs.make("gymnax/CartPole-v1")
PENDULUM = envs.make("gymnax/Pendulum-v1")

# ---------------------------------------------------------------------------
# Configuration checks.


@pytest.mark.parametrize("field,value", [
    ("batch_size", 512),         # larger than buffer_size
    ("learning_starts", 16),     # fewer than one batch
    ("total_timesteps", 64),     # no learning step after the warm-up
    ("tau", 0.0),
    ("gamma", -0.5),
    ("critic_lr", 0.0),
    ("num_critics", 0),
    ("max_grad_norm", -1.0),
    ("activation", "nope"),
])
def test_bad_config_raises_naming_the_field(field, value):
  base = sac.SACConfig(total_timesteps=200, learning_starts=64, batch_size=32, buffer_size=256)
  with pytest.raises(ValueError, match=field):
    sac.make_sac(dataclasses.replace(base, **{field: value}), PENDULUM)


def test_target_entropy_defaults():
  config = sac.SACConfig(total_timesteps=200, learning_starts=64, batch_size=32, hidden=(8,))
  assert sac.make_sac(config, PENDULUM).target_entropy == -1.0
  discrete = sac.make_sac(dataclasses.replace(config, target_entropy_scale=0.5), CARTPOLE)
  np.testing.assert_allclose(discrete.target_entropy, 0.5 * np.log(2))
  fixed = sac.make_sac(dataclasses.replace(config, target_entropy=-3.0), PENDULUM)
  assert fixed.target_entropy == -3.0


# ---------------------------------------------------------------------------
# Seed-vmapping and the reward hook on a tiny configuration.

TINY = sac.SACConfig(num_envs=2, total_timesteps=64 + 2 * 6, learning_starts=64, batch_size=32,
                     buffer_size=128, hidden=(16,), updates_per_step=2)


@pytest.fixture(scope="module")
def tiny_runs():
  """CartPole, three seeds: vmapped with the reward (1 per step) given by `reward_fn`
  scaled by `reward_params = 1`, plus a fourth run of the first seed with
  `reward_params = 0`; and one seed at a time with the environment's reward."""
  agent = sac.make_sac(TINY, CARTPOLE)
  hooked = sac.make_sac(TINY, CARTPOLE, reward_fn=lambda p, obs, action, next_obs: p *
                        jnp.ones(obs.shape[0]))
  keys = jax.random.split(jax.random.key(5), 3)
  vmapped = jax.jit(jax.vmap(hooked.train))(jnp.concatenate([keys, keys[:1]]),
                                            jnp.array([1.0, 1.0, 1.0, 0.0]))
  train = jax.jit(agent.train)
  return vmapped, [train(k) for k in keys]


def test_vmap_over_seeds_and_reward_fn_equal_sequential_env_reward_runs(tiny_runs):
  (state, metrics), sequential = tiny_runs
  assert metrics["critic_loss"].shape == (4, TINY.num_iterations) == (4, 6)
  for i, (state_i, metrics_i) in enumerate(sequential):
    for name in ("critic_loss", "actor_loss", "alpha", "entropy", "q", "target", "env_steps"):
      np.testing.assert_allclose(metrics[name][i], metrics_i[name], rtol=1e-4, atol=1e-5,
                                 err_msg=name)
    seed_i = jax.tree.map(lambda x, i=i: x[i], state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), seed_i,
                 state_i.params)
  assert not np.allclose(metrics["critic_loss"][0], metrics["critic_loss"][1])
  # With the reward switched off the critic targets lose their reward term.
  assert np.all(metrics["target"][3] < metrics["target"][0] - 0.5)


def test_buffer_and_counters(tiny_runs):
  _, sequential = tiny_runs
  state, metrics = sequential[0]
  steps = TINY.total_timesteps
  np.testing.assert_array_equal(metrics["env_steps"], np.arange(66, steps + 1, 2))
  assert int(state.step) == steps and int(state.update_step) == 6 * TINY.updates_per_step
  # 76 transitions in a 128-slot circular buffer: not yet full.
  assert int(state.buffer.current_index) == steps and not bool(state.buffer.is_full)
  stored = state.buffer.experience
  assert stored.obs.shape == (1, 128, 4) and stored.action.shape == (1, 128)
  # The 64 warm-up actions are uniform over the 2 actions: log-probability −log 2.
  np.testing.assert_allclose(stored.log_prob[0, :64], -np.log(2.0), rtol=1e-6)
  assert set(np.unique(stored.action[0, :steps])) <= {0, 1}
  np.testing.assert_array_equal(stored.reward[0, :steps], 1.0)
  # The target critics trail the critics by Polyak averaging.
  diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params.critic,
                      state.params.target_critic)
  assert max(jax.tree.leaves(diff)) > 0.0


# ---------------------------------------------------------------------------
# Learning.

PENDULUM_CONFIG = sac.SACConfig(total_timesteps=6_000, learning_starts=500, batch_size=128,
                                hidden=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
CARTPOLE_CONFIG = sac.SACConfig(total_timesteps=20_000, learning_starts=1_000, batch_size=128,
                                hidden=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                                target_entropy_scale=0.5, reward_scale=0.1)


def test_sac_improves_pendulum():
  """6k environment steps, one gradient step each (about 3 s on a laptop CPU)."""
  agent = sac.make_sac(PENDULUM_CONFIG, PENDULUM)

  def run(key):
    state, metrics = agent.train(key)
    return metrics, agent.evaluate(state.params, jax.random.fold_in(key, 1), 16)

  metrics, returns = jax.jit(run)(jax.random.key(0))
  first = float(metrics["recent_return"][0])   # the last random warm-up episode
  assert first < -700, first                   # a random policy: about −1200
  assert float(returns.mean()) > -400, returns  # solved is about −150
  assert np.all(np.isfinite(metrics["critic_loss"]))
  assert float(metrics["alpha"][-1]) < 0.5      # the temperature was tuned down from 1


@pytest.fixture(scope="module")
def cartpole_run():
  """Discrete SAC on CartPole, 20k steps of one seed, evaluated; then, on a buffer sample,
  the soft value and the critic target from the trained networks."""
  agent = sac.make_sac(CARTPOLE_CONFIG, CARTPOLE)

  def run(key):
    state, metrics = agent.train(key)
    returns = agent.evaluate(state.params, jax.random.fold_in(key, 1), 16)
    state, batch = agent.sample(state)
    # A trained policy rarely drops the pole, so a sample may hold no fall: mark every
    # fourth transition terminated, so both branches of the target (bootstrap or not) are
    # checked whatever the sample.
    batch = batch._replace(terminated=batch.terminated | (jnp.arange(batch.terminated.shape[0])
                                                          % 4 == 0))
    params = state.params
    v_next = agent.soft_value(params, key, batch.next_obs)
    logits = agent.policy_apply(params.actor, batch.next_obs).logits
    q_next = agent.q_apply(params.target_critic, batch.next_obs)
    _, critic_metrics = agent.update_critic(state, batch)
    return metrics, returns, batch, v_next, logits, q_next, params.log_alpha, critic_metrics

  return agent, jax.jit(run)(jax.random.key(0))


def test_discrete_sac_learns_cartpole(cartpole_run):
  _, (metrics, returns, *_) = cartpole_run
  assert float(returns.mean()) >= 300, returns   # a random policy: about 20; the limit 500
  assert np.all(np.isfinite(metrics["critic_loss"]))


def test_discrete_soft_value_and_target_match_numpy(cartpole_run):
  """V(s') = Σ_a π(a|s') (min_c Q̄_c(s', a) − α log π(a|s')) and
  y = scale·r + γ (1 − term) V(s'), in float64."""
  agent, (_, _, batch, v_next, logits, q_next, log_alpha, critic_metrics) = cartpole_run
  logits = np.asarray(logits, np.float64)
  log_p = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                 keepdims=True)) - logits.max(-1, keepdims=True)
  q_min = np.min(np.asarray(q_next, np.float64), axis=-2)
  alpha = np.exp(float(log_alpha))
  want_v = np.sum(np.exp(log_p) * (q_min - alpha * log_p), axis=-1)
  np.testing.assert_allclose(v_next, want_v, rtol=1e-4, atol=1e-4)
  c = agent.config
  y = (c.reward_scale * np.asarray(batch.reward, np.float64)
       + c.gamma * np.where(np.asarray(batch.terminated), 0.0, want_v))
  np.testing.assert_allclose(critic_metrics["target"], y.mean(), rtol=1e-4)
  terminated = np.asarray(batch.terminated)
  assert terminated.any() and not terminated.all()  # both branches of the target
