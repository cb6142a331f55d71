"""Tests for `irl_jax.control.ppo`: GAE and the clipped loss against float64 NumPy
references written from the equations, truncation bootstrapping in `collect`, the reward
override, seed-vmapping, config checks, and short training runs (CartPole solved,
Pendulum improved).

The training runs are the slow part (a few seconds each after compilation); each program
is compiled once per module through module-scoped fixtures.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import envs, ppo

# ---------------------------------------------------------------------------
# References.


def gae_reference(r, v, v_next, term, trunc, gamma, lam):
  """GAE from its closed form, in float64: `A_t = Σ_k (γλ)^k δ_{t+k}`, the sum running
  over the rest of the episode inside the rollout (up to and including the first step
  that ends it), with `δ_t = r_t + γ(1 − term_t) V(s'_t) − V(s_t)`."""
  r, v, v_next = (np.asarray(x, np.float64) for x in (r, v, v_next))
  term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
  delta = r + gamma * np.where(term, 0.0, v_next) - v
  t_len, n = r.shape
  adv = np.zeros((t_len, n))
  for j in range(n):
    for t in range(t_len):
      total = 0.0
      for k in range(t_len - t):
        total += (gamma * lam) ** k * delta[t + k, j]
        if term[t + k, j] or trunc[t + k, j]:
          break
      adv[t, j] = total
  return adv, adv + v


def surrogate_reference(log_prob, old_log_prob, adv, eps):
  ratio = np.exp(np.asarray(log_prob, np.float64) - np.asarray(old_log_prob, np.float64))
  adv = np.asarray(adv, np.float64)
  return -np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)


# ---------------------------------------------------------------------------
# Pure pieces.


def test_gae_matches_numpy_reference_with_termination_and_truncation():
  rng = np.random.default_rng(0)
  t_len, n = 9, 3
  r, v, v_next = (rng.normal(size=(t_len, n)) for _ in range(3))
  term = np.zeros((t_len, n), bool)
  trunc = np.zeros((t_len, n), bool)
  term[2, 0] = True        # an absorbing state mid-rollout: no bootstrap, trace cut
  trunc[5, 0] = True       # a time limit: bootstrap from V(s'), trace cut
  trunc[3, 1] = True
  term[7, 1] = True
  term[t_len - 1, 2] = True  # terminal on the last step
  gamma, lam = 0.97, 0.9
  want_adv, want_ret = gae_reference(r, v, v_next, term, trunc, gamma, lam)
  with jax.enable_x64(True):
    adv, ret = jax.jit(lambda *a: ppo.gae(*a, gamma=gamma, gae_lambda=lam))(
        r, v, v_next, term, trunc)
  assert adv.dtype == jnp.float64
  np.testing.assert_allclose(adv, want_adv, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)
  # The truncated step bootstraps (its δ holds γV(s')); the terminal one does not.
  np.testing.assert_allclose(adv[5, 0], r[5, 0] + gamma * v_next[5, 0] - v[5, 0])
  np.testing.assert_allclose(adv[2, 0], r[2, 0] - v[2, 0])
  # float32 inputs stay float32 and agree to round-off.
  adv32, _ = ppo.gae(*(np.float32(x) for x in (r, v, v_next)), term, trunc, gamma=gamma,
                     gae_lambda=lam)
  assert adv32.dtype == jnp.float32
  np.testing.assert_allclose(adv32, want_adv, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_is_the_discounted_return_minus_value():
  """λ = 1 without ends: A_t + V(s_t) = Σ_k γ^k r_{t+k} + γ^{T−t} V(s'_{T−1})."""
  rng = np.random.default_rng(1)
  r, v, v_next = (rng.normal(size=(6,)) for _ in range(3))
  v_next[:-1] = v[1:]  # a consistent rollout: the successor of s_t is s_{t+1}
  no = np.zeros(6, bool)
  with jax.enable_x64(True):
    _, ret = ppo.gae(r, v, v_next, no, no, gamma=0.9, gae_lambda=1.0)
  want = [sum(0.9 ** k * r[t + k] for k in range(6 - t)) + 0.9 ** (6 - t) * v_next[-1]
          for t in range(6)]
  np.testing.assert_allclose(ret, want, rtol=1e-12)


def test_clipped_surrogate_matches_numpy_reference_and_gradient_vanishes_when_clipped():
  eps = 0.2
  old = np.zeros(8)
  log_prob = np.log([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5])
  adv = np.array([1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0])
  with jax.enable_x64(True):
    loss = ppo.clipped_surrogate_loss(log_prob, old, adv, clip_eps=eps)
    grad = jax.grad(lambda lp: jnp.sum(ppo.clipped_surrogate_loss(lp, old, adv, clip_eps=eps)))(
        jnp.asarray(log_prob))
  np.testing.assert_allclose(loss, surrogate_reference(log_prob, old, adv, eps), rtol=1e-12)
  # Positive advantages stop pushing once ρ > 1 + ε; negative ones once ρ < 1 − ε.
  clipped = np.array([False, False, False, True, True, False, False, False])
  assert np.all(np.asarray(grad)[clipped] == 0.0)
  assert np.all(np.asarray(grad)[~clipped] != 0.0)
  rng = np.random.default_rng(2)
  lp, olp, a = rng.normal(size=(3, 50)) * 0.3
  np.testing.assert_allclose(ppo.clipped_surrogate_loss(lp, olp, a, clip_eps=0.1),
                             surrogate_reference(lp, olp, a, 0.1), rtol=1e-5, atol=1e-6)


def test_surrogate_stays_finite_for_extreme_log_ratios():
  """A saturated squashed Gaussian can move a sample's log-density by thousands in one
  update: the loss stays finite, such samples give no gradient, and the loss is the
  reference's at `log ρ = ±20`."""
  log_prob = np.array([1000.0, 1000.0, -1000.0, -1000.0], np.float32)
  old = np.zeros(4, np.float32)
  adv = np.array([1.0, -1.0, 1.0, -1.0], np.float32)
  loss = ppo.clipped_surrogate_loss(log_prob, old, adv, clip_eps=0.2)
  grad = jax.grad(lambda lp: jnp.sum(ppo.clipped_surrogate_loss(lp, old, adv, clip_eps=0.2)))(
      jnp.asarray(log_prob))
  assert np.all(np.isfinite(np.asarray(loss))) and np.all(np.asarray(grad) == 0.0)
  bound = np.clip(log_prob, -ppo.MAX_LOG_RATIO, ppo.MAX_LOG_RATIO)
  np.testing.assert_allclose(loss, surrogate_reference(bound, old, adv, 0.2), rtol=1e-6)
  # Inside the bound nothing changes.
  assert float(ppo.clipped_surrogate_loss(np.float32(19.0), np.float32(0.0), np.float32(-1.0),
                                          clip_eps=0.2)) == pytest.approx(np.exp(19.0), rel=1e-5)


def test_value_loss_clipped_form():
  v, old, target = np.array([1.0, 3.0, 0.0]), np.array([0.5, 2.0, 0.0]), np.array([2.0, 2.0, 1.0])
  np.testing.assert_allclose(ppo.value_loss(v, target), 0.5 * (v - target) ** 2)
  clipped = old + np.clip(v - old, -0.2, 0.2)
  want = 0.5 * np.maximum((v - target) ** 2, (clipped - target) ** 2)
  np.testing.assert_allclose(ppo.value_loss(v, target, old, clip_eps=0.2), want, rtol=1e-6)


# ---------------------------------------------------------------------------
# Configuration checks.

CARTPOLE = envs.make("gymnax/CartPole-v1")
PENDULUM = envs.make("gymnax/Pendulum-v1")


@pytest.mark.parametrize("field,value", [
    ("num_minibatches", 3),        # does not divide num_envs·num_steps = 32
    ("total_timesteps", 16),       # less than one batch
    ("num_envs", 0),
    ("gamma", 1.5),
    ("gae_lambda", -0.1),
    ("clip_eps", 0.0),
    ("lr", 0.0),
    ("hidden", ()),
    ("activation", "swish-ish"),
    ("log_std_range", (1.0, -1.0)),
    ("adam_eps", 0.0),
    ("ent_coef", -0.01),
    ("vf_coef", -0.5),
    ("reward_scale", 0.0),
])
def test_bad_config_raises_naming_the_field(field, value):
  base = ppo.PPOConfig(num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=4)
  with pytest.raises(ValueError, match=field):
    ppo.make_ppo(dataclasses.replace(base, **{field: value}), CARTPOLE)


def test_non_vector_observations_are_rejected():
  spec = CARTPOLE.spec._replace(obs_shape=(2, 2))
  with pytest.raises(ValueError, match="obs_shape"):
    ppo.make_ppo(ppo.PPOConfig(), dataclasses.replace(CARTPOLE, spec=spec))


# ---------------------------------------------------------------------------
# Collection, the reward hook and seed-vmapping on a tiny configuration.

TINY = ppo.PPOConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3, update_epochs=2,
                     num_minibatches=2, hidden=(16,))


@pytest.fixture(scope="module")
def pendulum_rollout():
  """One jitted program: a 210-step rollout of 2 Pendulum environments (a time limit at
  step 200), the networks re-applied to it, and `update` with and without `rewards`."""
  config = ppo.PPOConfig(num_envs=2, num_steps=210, total_timesteps=420, num_minibatches=2,
                         hidden=(8,))
  agent = ppo.make_ppo(config, PENDULUM)

  def run(key):
    state, batch = agent.collect(agent.init(key))
    next_value = agent.value_apply(state.params.value, batch.next_obs)
    log_prob = agent.policy_apply(state.params.policy, batch.obs).log_prob(batch.action)
    rewards = jnp.stack([batch.reward, 2.0 * batch.reward])
    updates = jax.lax.map(lambda r: agent.update(state, batch, r)[1], rewards)
    return state, batch, next_value, log_prob, updates

  return jax.jit(run)(jax.random.key(0))


def test_collect_bootstraps_truncations_from_the_final_observation(pendulum_rollout):
  state, batch, next_value, log_prob, _ = pendulum_rollout
  assert batch.obs.shape == (210, 2, 3) and batch.action.shape == (210, 2, 1)
  assert int(state.step) == 420
  trunc = np.asarray(batch.truncated)
  assert trunc[199].all() and trunc.sum() == 2 and not np.asarray(batch.terminated).any()
  # At the time limit the stored successor is the true one, not the reset observation.
  assert not np.allclose(batch.next_obs[199], batch.obs[200], atol=1e-3)
  np.testing.assert_allclose(batch.next_obs[:199], batch.obs[1:200], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(batch.next_value, next_value, rtol=1e-5, atol=1e-5)
  # Inside an episode V(s'_t) = V(s_{t+1}); across the reset it is not.
  np.testing.assert_allclose(batch.next_value[:199], batch.value[1:200], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batch.episode_return[199], np.sum(batch.reward[:200], axis=0),
                             rtol=1e-5)
  # Stored log-probabilities are those of the acting policy.
  np.testing.assert_allclose(log_prob, batch.log_prob, rtol=1e-4, atol=1e-4)
  flat = ppo.to_transitions(batch)
  assert flat.obs.shape == (420, 3) and flat.reward.shape == (420,)
  np.testing.assert_array_equal(flat.next_obs[2 * 199 + 1], batch.next_obs[199, 1])


def test_update_rewards_argument_overrides_batch_reward(pendulum_rollout):
  """Doubling the supplied rewards doubles the value targets' reward part (the override's
  equivalence with the environment reward is checked end to end by `tiny_runs`)."""
  m = pendulum_rollout[-1]
  assert np.all(np.isfinite(m["loss"]))
  assert not np.isclose(m["value_target"][0], m["value_target"][1])
  assert m["value_target"][1] < m["value_target"][0] < 0  # Pendulum's rewards are negative


@pytest.fixture(scope="module")
def tiny_runs():
  """The tiny configuration trained for 3 seeds: vmapped, through a reward function that
  reproduces CartPole's reward (1 per step, scaled by `reward_params = 1`), and one seed at a
  time with the environment's reward."""
  agent = ppo.make_ppo(TINY, CARTPOLE)
  hooked = ppo.make_ppo(TINY, CARTPOLE,
                        reward_fn=lambda p, obs, action, next_obs: p * jnp.ones(obs.shape[0]))
  keys = jax.random.split(jax.random.key(3), 3)
  # A fourth run repeats the first seed with the reward switched off (reward_params = 0).
  vmapped = jax.jit(jax.vmap(hooked.train))(jnp.concatenate([keys, keys[:1]]),
                                            jnp.array([1.0, 1.0, 1.0, 0.0]))
  train = jax.jit(agent.train)
  return vmapped, [train(k) for k in keys]


def test_vmap_over_seeds_and_reward_fn_equal_sequential_env_reward_runs(tiny_runs):
  (state, metrics), sequential = tiny_runs
  for i, (state_i, metrics_i) in enumerate(sequential):
    for name in ("loss", "policy_loss", "value_loss", "entropy", "episode_return", "env_steps"):
      np.testing.assert_allclose(metrics[name][i], metrics_i[name], rtol=1e-4, atol=1e-5,
                                 equal_nan=True, err_msg=name)
    seed_i = jax.tree.map(lambda x, i=i: x[i], state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), seed_i,
                 state_i.params)
  assert metrics["env_steps"].shape == (4, TINY.num_iterations)
  np.testing.assert_array_equal(metrics["env_steps"][0], [64, 128, 192])
  # Different seeds learn differently.
  assert not np.allclose(metrics["loss"][0], metrics["loss"][1])
  # The reward function is what the learner sees: a zero reward changes the value targets
  # (and the learning) but not the tracked environment returns of the first rollout.
  assert np.all(metrics["value_target"][3] < metrics["value_target"][0] - 0.5)
  np.testing.assert_array_equal(metrics["episode_return"][3, 0], metrics["episode_return"][0, 0])


# ---------------------------------------------------------------------------
# Learning.

CARTPOLE_CONFIG = ppo.PPOConfig(num_envs=8, num_steps=128, total_timesteps=300_000, lr=1e-3)
PENDULUM_CONFIG = ppo.PPOConfig(num_envs=16, num_steps=128, total_timesteps=150_000,
                                update_epochs=10, num_minibatches=16, lr=1e-3, gamma=0.95,
                                ent_coef=0.0, reward_scale=0.1)


def _train_and_evaluate(agent, keys):
  """Vmapped over `keys`: the training metrics and the final policy's deterministic
  returns over 16 episodes."""
  def run(key):
    state, metrics = agent.train(key)
    return metrics, agent.evaluate(state.params, jax.random.fold_in(key, 1), 16,
                                   deterministic=True)
  return jax.jit(jax.vmap(run))(keys)


def test_ppo_solves_cartpole():
  """3 seeds vmapped, 300k steps each (about 2 s per seed on a laptop CPU)."""
  agent = ppo.make_ppo(CARTPOLE_CONFIG, CARTPOLE)
  metrics, after = _train_and_evaluate(agent, jax.random.split(jax.random.key(0), 3))
  before, after = np.asarray(metrics["episode_return"][:, 0]), np.asarray(after.mean(-1))
  assert np.all(before < 50), before            # the untrained policy: about 20 steps
  assert np.median(after) >= 450, after         # 500 is the time limit
  assert np.all(after >= 200), after
  assert np.all(metrics["env_steps"][:, -1] == CARTPOLE_CONFIG.num_iterations * 1024)
  assert np.all(np.isfinite(metrics["loss"]))


def test_ppo_improves_pendulum():
  """Continuous actions (squashed Gaussian): 150k steps of one seed. Measured by the
  training episodes' returns (the stochastic policy), first and last."""
  agent = ppo.make_ppo(PENDULUM_CONFIG, PENDULUM)
  _, metrics = jax.jit(agent.train)(jax.random.key(0))
  returns = np.asarray(metrics["episode_return"])
  # Iterations 1-2 (steps 128-384) hold the untrained policy's episodes; every later
  # iteration completes some of the 16 synchronised 200-step episodes or none (NaN).
  before, after = np.nanmean(returns[1:3]), np.nanmean(returns[-8:])
  assert before < -900, before                  # an untrained policy: about −1200
  assert after > -500, after                    # solved is about −150 to −200
  assert np.isfinite(after)
