"""MusIK on a block-MDP combination lock: the lock's dynamics and observations, random
exploration's exact and Monte-Carlo success, the inverse-kinematics fit, the learner on
a small lock, vmapped seeds and argument errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import musik


@pytest.fixture(scope="module")
def lock():
  return musik.make_lock(jax.random.key(0), 4, num_latent=3, num_actions=4, noise_dim=5)


def test_dynamics_on_hand_cases(lock):
  bad = 2
  correct = np.asarray(lock.correct_action)
  assert correct.shape == (4, 3) and np.all(correct[:, bad] == -1)
  assert np.all(correct[:, 0] != correct[:, 1])          # distinct per layer
  keys = jax.random.split(jax.random.key(1), 50)
  for h in range(4):
    for s in (0, 1):
      nxt = np.asarray(jax.vmap(lambda k, h=h, s=s: musik.step(lock, k, h, s, correct[h, s]))(
          keys))
      assert set(nxt.tolist()) == {0, 1}                 # correct: a uniform good latent
      for a in range(4):
        if a != correct[h, s]:
          assert int(musik.step(lock, keys[0], h, s, a)) == bad
    for a in range(4):                                   # the bad latent is absorbing
      assert int(musik.step(lock, keys[0], h, bad, a)) == bad
  starts = np.asarray(jax.vmap(lambda k: musik.reset(lock, k))(keys))
  assert set(starts.tolist()) == {0, 1}


def test_observations_dimension_and_rotation(lock):
  assert lock.obs_dim == 3 + 5
  q = np.asarray(lock.rotation, np.float64)
  np.testing.assert_allclose(q @ q.T, np.eye(8), atol=1e-5)
  x = musik.observe(lock, jax.random.key(2), 1, 2)
  assert x.shape == (8,)
  v = q.T @ np.asarray(x, np.float64)                    # undo the rotation
  np.testing.assert_allclose(v[:3], [0.0, 0.0, 1.0], atol=1e-5)
  with_layer = musik.make_lock(jax.random.key(0), 4, noise_dim=5, include_layer=True)
  assert with_layer.obs_dim == 3 + 5 + 5
  v = np.asarray(with_layer.rotation).T @ np.asarray(
      musik.observe(with_layer, jax.random.key(3), 2, 1))
  np.testing.assert_allclose(v[:8], [0, 1, 0, 0, 0, 1, 0, 0], atol=1e-5)


def test_random_exploration_reach_probability():
  small = musik.make_lock(jax.random.key(4), 3, num_actions=2, noise_dim=1)
  for lk, a, h in ((small, 2, 3),
                   (musik.make_lock(jax.random.key(5), 10, num_actions=4, noise_dim=1), 4, 10)):
    np.testing.assert_allclose(float(musik.random_reach_probability(lk)), a ** -h, rtol=1e-5)
  mc = float(musik.monte_carlo_reach(jax.random.key(6), small, 20000))
  assert abs(mc - 1 / 8) < 4 * np.sqrt(1 / 8 * 7 / 8 / 20000)
  # A latent-level policy that always plays the correct action reaches with certainty.
  perfect = jax.nn.one_hot(jnp.maximum(small.correct_action, 0), 2)
  np.testing.assert_allclose(float(musik.exact_reach_probability(small, perfect)), 1.0,
                             rtol=1e-6)


def test_ik_fit_recovers_the_decoder():
  """One-step data from layer 0 with uniform actions: the decoder of x_0 must separate
  the two good latents (they have different correct actions), purity ≈ 1."""
  lk = musik.make_lock(jax.random.key(7), 2, num_actions=2, noise_dim=2, noise_std=0.3)
  n = 800
  keys = jax.random.split(jax.random.key(8), (n, 4))

  def sample(k):
    z0 = musik.reset(lk, k[0])
    a = jax.random.randint(k[1], (), 0, 2)
    z1 = musik.step(lk, k[2], 0, z0, a)
    ko, kh = jax.random.split(k[3])
    return musik.observe(lk, ko, 0, z0), a, musik.observe(lk, kh, 1, z1), z0

  x0, a, x1, z0 = jax.vmap(sample)(keys)
  params, loss = musik.fit_inverse_kinematics(jax.random.key(9), x0, a, x1, jnp.ones(n), 3, 2)
  labels = musik.decode(params.phi_w, params.phi_b, x0)
  assert float(musik.decoder_purity(labels, z0, 3)) > 0.97
  # Optimal NLL: log 2 when x_1 is bad (half the samples), 0 when good.
  assert float(loss) < 0.5 * np.log(2) + 0.05


@pytest.fixture(scope="module")
def small_runs():
  """MusIK on two seeds of an easy 3-layer lock, vmapped over seeds."""
  locks = [musik.make_lock(jax.random.key(s), 3, num_actions=3, noise_dim=2, noise_std=0.3)
           for s in (10, 11)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *locks)
  keys = jax.random.split(jax.random.key(12), 2)
  out = {}
  for multi in (True,):
    learner = musik.make_musik(musik.MusikConfig(num_samples=400, multi_step=multi,
                                                 num_steps=200))
    states = jax.jit(jax.vmap(learner.train))(keys, stacked)
    ev = jax.jit(jax.vmap(learner.evaluate, (0, 0, 0, None)), static_argnums=3)(
        jax.random.split(jax.random.key(13), 2), stacked, states, 200)
    out[multi] = (learner, states, ev)
  return locks, keys, out


def test_musik_reaches_layer_h(small_runs):
  _, _, out = small_runs
  for multi in (True,):
    reach = np.asarray(out[multi][2]["reach"])
    assert reach.shape == (2, 3)
    assert np.all(reach[:, -1] >= 0.9), (multi, reach)
    purity = np.asarray(out[multi][2]["purity"])
    assert purity.shape == (2, 3) and np.all((purity > 0.3) & (purity <= 1.0))


def test_vmapped_seeds_equal_sequential_runs(small_runs):
  locks, keys, out = small_runs
  learner, states, _ = out[True]
  train = jax.jit(learner.train)
  one = train(keys[1], locks[1])
  np.testing.assert_allclose(np.asarray(one.params.logits),
                             np.asarray(states.params.logits[1]), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(one.predecessor), np.asarray(states.predecessor[1]))
  # A traced sample count equal to the buffer size changes nothing.
  same = train(keys[1], locks[1], 400)
  np.testing.assert_allclose(np.asarray(same.loss), np.asarray(one.loss), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(horizon=0), "horizon"),
    (dict(horizon=3, num_latent=1), "num_latent"),
    (dict(horizon=3, num_actions=1), "num_actions"),
    (dict(horizon=3, num_latent=5, num_actions=3), "num_actions"),
    (dict(horizon=3, noise_dim=-1), "noise_dim"),
    (dict(horizon=3, noise_std=-1.0), "noise_std"),
])
def test_bad_lock_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    musik.make_lock(jax.random.key(0), **kwargs)


@pytest.mark.parametrize("field, value", [
    ("num_samples", 0), ("num_steps", 2.5), ("learning_rate", 0.0), ("init_scale", -1.0),
    ("weight_decay", -0.1), ("multi_step", 1)])
def test_bad_config_raises_naming_the_field(field, value):
  with pytest.raises(ValueError, match=f"config.{field}"):
    dataclasses.replace(musik.MusikConfig(), **{field: value})
