"""`AdversarialConfig.disc_normalize`: the discriminator's running observation statistics
against a float64 NumPy reference, their use, and their invariance."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import adversarial, envs, ppo
from irl_jax.control.types import Transitions

TINY = ppo.PPOConfig(total_timesteps=512, num_envs=4, num_steps=64, update_epochs=1,
                     num_minibatches=2)


def _rows(key, n, obs_dim=4, scale=1.0, shift=0.0):
  k1, k2, k3 = jax.random.split(key, 3)
  obs = scale * jax.random.normal(k1, (n, obs_dim)) + shift
  nxt = scale * jax.random.normal(k2, (n, obs_dim)) + shift
  action = jax.random.randint(k3, (n,), 0, 2)
  return Transitions(obs, action, jnp.zeros(n), nxt, jnp.zeros(n, bool), jnp.zeros(n, bool),
                     jnp.zeros(n), jnp.ones(n))


def test_running_statistics_match_numpy_over_all_rows_seen():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, (n, 3)) * [1.0, 10.0, 0.1] for n in (5, 17, 1, 64)]
  norm = adversarial.running_norm_init(3)
  np.testing.assert_array_equal(norm.mean, 0.0)
  np.testing.assert_array_equal(norm.var, 1.0)
  for b in batches:
    norm = adversarial.running_norm_update(norm, jnp.asarray(b, jnp.float32))
  every = np.concatenate(batches).astype(np.float64)
  assert float(norm.count) == len(every)
  np.testing.assert_allclose(norm.mean, every.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(norm.var, every.var(0), rtol=1e-4)   # population variance
  x = jnp.asarray(every[:4], jnp.float32)
  np.testing.assert_allclose(adversarial.running_norm_apply(norm, x),
                             (every[:4] - every.mean(0)) / np.sqrt(every.var(0) + 1e-5),
                             rtol=1e-4, atol=1e-5)
  # The first batch replaces the initial statistics (mean 0, variance 1).
  first = adversarial.running_norm_update(adversarial.running_norm_init(3),
                                          jnp.asarray(batches[0], jnp.float32))
  np.testing.assert_allclose(first.var, batches[0].var(0), rtol=1e-5)


@pytest.mark.parametrize("method", ["gail", "airl"])
def test_logits_are_invariant_to_an_affine_change_of_observations(method):
  """With the statistics taken from the data, rescaled and shifted observations give the
  same discriminator outputs: the network sees the standardised ones."""
  env = envs.make("gymnax/CartPole-v1")
  adv = adversarial.make_adversarial(adversarial.AdversarialConfig(
      method=method, ppo=TINY, disc_normalize=True, absorbing=False), env)
  disc = adv.init(jax.random.key(0)).disc
  assert set(disc) == {"net", "norm"}
  rows = _rows(jax.random.key(1), 64)
  moved = rows._replace(obs=rows.obs * 50.0 - 7.0, next_obs=rows.next_obs * 50.0 - 7.0)

  def fitted(r):
    both = jnp.concatenate([r.obs, r.next_obs])
    return {**disc, "norm": adversarial.running_norm_update(disc["norm"], both)}

  log_pi = jnp.full((64,), -0.7)
  a = adv.discriminator_logits(fitted(rows), rows, log_pi)
  b = adv.discriminator_logits(fitted(moved), moved, log_pi)
  np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
  # Without the statistics, the outputs do move.
  c = adv.discriminator_logits(fitted(rows), moved, log_pi)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.1


def test_training_updates_the_statistics_from_every_discriminator_batch():
  env = envs.make("gymnax/CartPole-v1")
  config = adversarial.AdversarialConfig(method="gail", ppo=TINY, disc_normalize=True,
                                         disc_batch_size=32, disc_updates=3)
  adv = adversarial.make_adversarial(config, env)
  demos = _rows(jax.random.key(2), 300, scale=0.05)
  state, metrics = jax.jit(adv.train)(jax.random.key(3), demos)
  norm = state.disc["norm"]
  rounds = TINY.num_iterations
  assert float(norm.count) == rounds * config.disc_updates * 2 * config.disc_batch_size
  assert np.isfinite(np.asarray(metrics["disc/loss"])).all()
  # Statistics of CartPole observations (policy rows) and the expert rows, not the init.
  assert not np.allclose(norm.var, 1.0) and np.all(np.asarray(norm.var) > 0)
  # The optimiser sees the network's parameters only; the statistics are not trained.
  net_leaves = jax.tree.leaves(state.disc["net"])
  assert len(jax.tree.leaves(state.disc_opt)) == 2 * len(net_leaves) + 1  # Adam: μ, ν, count
  # The rewards use the statistics as they are, and do not change them.
  r = adv.learned_reward(state.disc, demos.obs, demos.action, demos.next_obs)
  assert r.shape == (300,) and np.isfinite(np.asarray(r)).all()


def test_off_by_default_and_checked():
  config = adversarial.AdversarialConfig(ppo=TINY)
  assert config.disc_normalize is False
  env = envs.make("gymnax/CartPole-v1")
  disc = adversarial.make_adversarial(config, env).init(jax.random.key(0)).disc
  assert not (isinstance(disc, dict) and "norm" in disc)
  with pytest.raises(ValueError, match=r"AdversarialConfig\.disc_normalize"):
    adversarial.make_adversarial(dataclasses.replace(config, disc_normalize=1), env)
