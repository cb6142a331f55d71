"""Tests for the language-conditioned houses and learners in `irl_jax.tabular.language`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_jax.tabular import dp
from irl_jax.tabular import language as lg
from irl_jax.tabular.mdp import check_mdp

UP, DOWN, LEFT, RIGHT, STAY = range(5)


@pytest.fixture(scope="module")
def houses():
  return lg.language_layouts(jax.random.key(3), 6)


def test_layouts_are_checked_batched_mdps_with_distinct_objects(houses):
  n, s = 6, 49
  assert check_mdp(houses.mdp) is houses.mdp
  assert houses.mdp.transitions.shape == (n, s, 5, s)
  assert houses.mdp.initial.shape == (n, s) and houses.mdp.discount.shape == (n,)
  assert houses.obs.shape == (n, s, 13 * 13, 7) and houses.obs.dtype == jnp.float32
  assert houses.commands.shape == (n, 3, 5) and houses.goals.shape == (n, 3)
  objects, walls = np.asarray(houses.objects), np.asarray(houses.walls)
  initial = np.asarray(houses.mdp.initial)
  for i in range(n):
    cells = objects[i, :, 0]
    assert len(set(cells.tolist())) == 3                          # distinct cells
    assert len({(c, k) for _, c, k in objects[i]}) == 3           # distinct colour-shape pairs
    assert not walls[i, cells].any()
    np.testing.assert_array_equal(houses.goals[i], cells)
    assert np.all(initial[i, cells] == 0) and np.all(initial[i, walls[i]] == 0)
    free_starts = ~walls[i]
    free_starts[cells] = False
    np.testing.assert_allclose(initial[i, free_starts], 1 / free_starts.sum(), rtol=1e-6)
    assert walls[i].sum() == 6  # one interior wall of 7 cells with a door
  # Goal cells differ across layouts: no fixed index.
  assert len(set(np.asarray(houses.goals).ravel().tolist())) > 3


def test_commands_name_their_goal_object(houses):
  vocab = lg.vocabulary()
  assert vocab.words[0] == "<pad>"
  for i in range(houses.goals.shape[0]):
    for m in range(3):
      text = vocab.decode(houses.commands[i, m])
      _, colour, shape = np.asarray(houses.objects[i, m])
      assert text.endswith(f"the {lg.COLOURS[colour]} {lg.SHAPES[shape]}"), text
      assert any(text == t.format(colour=lg.COLOURS[colour], shape=lg.SHAPES[shape])
                 for t in lg.TEMPLATES)
      np.testing.assert_array_equal(vocab.encode(text, 5), houses.commands[i, m])
  with pytest.raises(ValueError, match="unknown words"):
    vocab.encode("go to the purple box", 5)


def test_egocentric_centre_cell_shows_the_object_under_the_agent(houses):
  centre = 13 * 13 // 2
  obs, walls = np.asarray(houses.obs), np.asarray(houses.walls)
  for i in range(houses.goals.shape[0]):
    for cell, colour, shape in np.asarray(houses.objects[i]):
      want = np.zeros(7)
      want[1 + colour] = want[4 + shape] = 1
      np.testing.assert_array_equal(obs[i, cell, centre], want)
    np.testing.assert_array_equal(obs[i, :, centre, 0], walls[i])
    # From the top-left corner the window's top-left quadrant is outside: wall.
    window = obs[i, 0].reshape(13, 13, 7)
    assert np.all(window[:6, :, 0] == 1) and np.all(window[:, :6, 0] == 1)
    # The rest of the window is the house, as seen from the centre cell (3, 3).
    np.testing.assert_array_equal(window[6:, 6:], obs[i, 24].reshape(13, 13, 7)[3:10, 3:10])


def test_walls_block_moves_and_the_door_connects_the_rooms(houses):
  p, walls = np.asarray(houses.mdp.transitions), np.asarray(houses.walls)
  moves = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))
  for i in range(houses.goals.shape[0]):
    for s in np.flatnonzero(~walls[i]):
      r, c = divmod(int(s), 7)
      for a, (dr, dc) in enumerate(moves):
        rr, cc = r + dr, c + dc
        t = rr * 7 + cc
        blocked = not (0 <= rr < 7 and 0 <= cc < 7) or walls[i, t]
        assert p[i, s, a, s if blocked else t] == 1.0
  # The near-optimal expert reaches every goal within the horizon.
  metrics = jax.jit(lambda h: lg.evaluate_policies(lg.expert_policies(h, horizon=20), h,
                                                   horizon=20))(houses)
  assert float(metrics.success.min()) > 0.95


def test_layouts_are_deterministic_from_the_key():
  a = lg.language_layouts(jax.random.key(5), 2, size=5)
  b = lg.language_layouts(jax.random.key(5), 2, size=5)
  c = lg.language_layouts(jax.random.key(6), 2, size=5)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c),
                                                        strict=True))
  assert lg.render(a, 0) == lg.render(b, 0)


def test_global_view_and_options():
  h = lg.language_layouts(1, 2, size=5, rooms=False, view="global", slip=0.2)
  assert h.obs.shape == (2, 25, 25, 8) and not np.asarray(h.walls).any()
  np.testing.assert_array_equal(h.obs[:, :, :, -1], np.broadcast_to(np.eye(25), (2, 25, 25)))
  check_mdp(h.mdp)
  assert float(h.mdp.transitions[0, 12, STAY, 12]) == pytest.approx(0.8 + 0.2 / 5)
  with pytest.raises(ValueError, match="num_objects"):
    lg.language_layouts(0, 1, num_objects=10)
  with pytest.raises(ValueError, match="view"):
    lg.language_layouts(0, 1, view="panorama")


def test_goal_probability_matches_the_forward_occupancy(houses):
  mdp = jax.tree.map(lambda x: x[0], houses.mdp)
  policy = jax.nn.softmax(jax.random.normal(jax.random.key(0), (20, 49, 5)))
  goal = houses.goals[0, 1]
  metrics, rho = jax.jit(lambda: (
      lg.goal_metrics(policy, mdp, goal, horizon=20),
      dp.finite_occupancy(policy, mdp, horizon=20, per_step=True)))()
  np.testing.assert_allclose(metrics.success, rho[-1, goal].sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics.steps_on_goal, rho[:, goal].sum(), rtol=1e-5)


def test_demonstrations_encoder_shapes_and_learners():
  h = lg.language_layouts(jax.random.key(0), 3, size=5, view_radius=2)
  demos = jax.jit(lambda k: lg.demonstrations(k, h, horizon=8, num_demos=4))(jax.random.key(1))
  assert demos.trajectories.states.shape == (3, 3, 4, 8)
  np.testing.assert_allclose(demos.occupancy.sum((-1, -2)), 8.0, rtol=1e-6)
  np.testing.assert_allclose(demos.initial.sum(-1), 1.0, rtol=1e-6)
  assert not np.asarray(jnp.take_along_axis(
      h.walls[:, None, :], demos.trajectories.states.reshape(3, 1, -1), -1)).any()

  params = lg.init_encoder(jax.random.key(0), num_cells=25, num_channels=7,
                           vocab_size=len(lg.vocabulary()), out_dim=5)
  apply = jax.jit(lg.encoder_apply)
  out = apply(params, h.obs, h.commands)
  assert out.shape == (3, 3, 25, 5)
  np.testing.assert_array_equal(out, 0.0)  # zero head: uniform policies, zero rewards
  params["out"]["w"] = jnp.ones_like(params["out"]["w"])
  out = apply(params, h.obs, h.commands)
  padded = jnp.concatenate([h.commands, jnp.zeros_like(h.commands[..., :2])], -1)
  np.testing.assert_allclose(jax.jit(lg.encoder_apply)(params, h.obs, padded), out, rtol=1e-6)
  # The command matters: swapping two houses' commands changes the outputs.
  assert not np.allclose(apply(params, h.obs, h.commands[::-1]), out)

  common = dict(vocab_size=len(lg.vocabulary()), optimizer=optax.adam(1e-2), steps=10,
                hidden=16, cell_features=4, embed=8, batch_layouts=2)
  irl_train = lg.make_irl_learner(horizon=8, **common)
  bc_train = lg.make_bc_learner(num_actions=5, **common)

  @jax.jit
  def fit(key):  # one seed here; the study vmaps the learners over seeds
    (pr, log_r), (_, log_b) = irl_train(key, h, demos), bc_train(key, h, demos)
    rewards = lg.encoder_apply(pr, h.obs, h.commands)[..., 0]
    return log_r, log_b, lg.reward_policies(rewards, h, horizon=8)

  log_r, log_b, policies = fit(jax.random.key(2))
  assert log_r["loss"].shape == (10,) and log_b["loss"].shape == (10,)
  assert np.all(np.isfinite(log_r["loss"])) and np.all(np.isfinite(log_b["loss"]))
  assert float(log_b["loss"][-3:].mean()) < float(log_b["loss"][0])
  assert float(log_r["occupancy_error"][-3:].mean()) < float(log_r["occupancy_error"][0])
  assert policies.shape == (3, 3, 8, 25, 5)
  np.testing.assert_allclose(policies.sum(-1), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="batch_layouts"):
    lg.make_irl_learner(horizon=8, **dict(common, batch_layouts=5))(jax.random.key(0), h, demos)
