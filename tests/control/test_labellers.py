"""Preference labellers, frame rendering and the Bradley–Terry frame reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import labellers as L


def obs_at(theta):
  theta = np.asarray(theta, np.float32)
  return np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], -1)


def test_synthetic_labeller_answers_ties_and_flips():
  first = obs_at([0.0, np.pi, 0.5, 1.0])
  second = obs_at([np.pi, 0.0, 0.5, 1.001])
  clean = L.synthetic_labeller(L.pendulum_height, tie_margin=0.01)
  labels = np.asarray(clean(jax.random.key(0), first, second))
  # upright vs hanging: the first is higher; hanging vs upright: the second; equal: tie.
  np.testing.assert_array_equal(labels, [0, 1, L.NO_PREFERENCE, L.NO_PREFERENCE])
  always_wrong = L.synthetic_labeller(L.pendulum_height, flip_prob=1.0)
  np.testing.assert_array_equal(np.asarray(always_wrong(jax.random.key(0), first[:2],
                                                        second[:2])), [1, 0])
  # The flip rate matches flip_prob on many answered pairs.
  rng = np.random.default_rng(0)
  a, b = obs_at(rng.uniform(-np.pi, np.pi, 20000)), obs_at(rng.uniform(-np.pi, np.pi, 20000))
  noisy = L.synthetic_labeller(L.pendulum_height, flip_prob=0.2)
  got = np.asarray(noisy(jax.random.key(1), a, b))
  truth = (a[:, 0] < b[:, 0]).astype(int)
  assert abs(np.mean(got != truth) - 0.2) < 0.01
  with pytest.raises(ValueError, match="flip_prob"):
    L.synthetic_labeller(L.pendulum_height, flip_prob=1.5)
  with pytest.raises(ValueError, match="tie_margin"):
    L.synthetic_labeller(L.pendulum_height, tie_margin=-1)


def test_query_pairs_are_distinct_rows_in_range():
  pairs = np.asarray(L.query_pairs(jax.random.key(0), 7, 500))
  assert pairs.shape == (500, 2)
  assert np.all(pairs[:, 0] != pairs[:, 1]) and pairs.min() >= 0 and pairs.max() < 7
  assert len(np.unique(pairs[:, 0])) == 7
  with pytest.raises(ValueError, match="at least 2 rows"):
    L.query_pairs(jax.random.key(0), 1, 3)


def test_render_pendulum_draws_the_rod_at_the_observed_angle():
  size = 33   # centre pixel 16
  frames = np.asarray(L.render_pendulum(obs_at([0.0, np.pi / 2, np.pi]), size=size))
  assert frames.shape == (3, size, size) and frames.max() <= 1.0 and frames.min() >= 0.0
  up, right, down = frames
  tip = 16 - int(0.4 * size)   # 0.4·size above the centre
  assert up[tip + 1, 16] > 0.9 and up[16 + 5, 16] < 0.01       # rod above, nothing below
  assert right[16, 16 + 10] > 0.9 and right[16, 16 - 5] < 0.01
  np.testing.assert_allclose(down, up[::-1], atol=1e-5)          # mirror image


def test_frame_reward_learns_the_ordering_and_respects_mask_and_ties():
  rng = np.random.default_rng(0)
  theta = rng.uniform(-np.pi, np.pi, 400)
  frames = L.render_pendulum(obs_at(theta), size=16)
  pairs = np.asarray(L.query_pairs(jax.random.key(0), 400, 600))
  labeller = L.synthetic_labeller(L.pendulum_height, tie_margin=0.01)
  obs = obs_at(theta)
  labels = labeller(jax.random.key(1), obs[pairs[:, 0]], obs[pairs[:, 1]])
  model = L.make_frame_reward(dict(channels=(8, 8), hidden=(16,), num_steps=400, batch_size=64,
                                   learning_rate=3e-3), (16, 16))
  params, metrics = jax.jit(model.train)(jax.random.key(2), frames[pairs[:, 0]],
                                         frames[pairs[:, 1]], labels)
  r = np.asarray(model.apply(params, frames))
  height = np.cos(theta)
  # The learned reward orders frames by height: rank correlation well above chance.
  import scipy.stats
  assert scipy.stats.spearmanr(r, height).statistic > 0.9
  ties = int(np.sum(np.asarray(labels) == L.NO_PREFERENCE))
  assert int(metrics["ties"][-1]) == ties
  assert int(metrics["pairs_used"][-1]) == 600 - ties
  # A mask keeps only the first 100 pairs.
  mask = jnp.arange(600) < 100
  _, m = jax.jit(model.train)(jax.random.key(2), frames[pairs[:, 0]], frames[pairs[:, 1]], labels,
                              mask)
  assert int(m["pairs_used"][-1]) == 100 - int(np.sum(np.asarray(labels)[:100] == 2))
  # Leading axes of apply are kept.
  assert model.apply(params, frames.reshape(20, 20, 16, 16)).shape == (20, 20)


def test_frame_reward_settings_and_shapes_are_checked():
  with pytest.raises(ValueError, match="arch"):
    L.FrameRewardConfig(arch="transformer")
  with pytest.raises(ValueError, match="ties"):
    L.FrameRewardConfig(ties="coin")
  with pytest.raises(ValueError, match="num_steps"):
    L.FrameRewardConfig(num_steps=0)
  with pytest.raises(ValueError, match=r"\[H, W\]"):
    L.make_frame_reward(None, (3,))
  model = L.make_frame_reward(dict(num_steps=2, batch_size=2), (8, 8))
  with pytest.raises(ValueError, match="must be \\[4, 8, 8\\]"):
    model.train(jax.random.key(0), jnp.zeros((4, 8, 9)), jnp.zeros((4, 8, 8)), jnp.zeros(4))
  with pytest.raises(ValueError, match="frames must end in"):
    model.apply(model.init(jax.random.key(0)), jnp.zeros((3, 7, 8)))
  mlp = L.make_frame_reward(dict(arch="mlp", hidden=(8,), num_steps=2, batch_size=2), (3,))
  assert mlp.apply(mlp.init(jax.random.key(0)), jnp.zeros((5, 3))).shape == (5,)
