"""Tests for the tabular benchmark MDPs in `irl_jax.tabular.envs`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.tabular import dp, envs
from irl_jax.tabular.mdp import check_mdp

UP, DOWN, LEFT, RIGHT = range(4)


def _row(num, probs):
  row = np.zeros(num)
  for s, p in probs.items():
    row[s] += p
  return row


def _normalised_costs(policy, mdp):
  mu = (1.0 - mdp.discount) * dp.occupancy(policy, mdp)
  return np.asarray(jnp.einsum("sa,sak->k", mu, mdp.costs))


# ---------------------------------------------------------------------------
# Every generator.


@pytest.mark.parametrize("name, kwargs", [
    ("gridworld", dict(size=4)),
    ("gridworld", dict(size=3, features="coords", wind=(0, 1, 0.3), absorbing_goals=False)),
    ("random_mdp", dict(key=jax.random.key(0), num_states=7, num_actions=3)),
    ("constrained_gridworld", dict()),
    ("constrained_gridworld", dict(size=5, slip=0.3, wind=(-1, 0, 0.2))),
])
def test_generators_return_checked_float32_mdps(name, kwargs):
  mdp = envs.make(name, **kwargs)
  assert check_mdp(mdp) is mdp
  for leaf in jax.tree_util.tree_leaves(mdp):
    assert leaf.dtype == jnp.float32
  assert mdp.reward.shape == (mdp.num_states, mdp.num_actions)


def test_combination_lock_is_checked():
  mdp, combination = envs.make("combination_lock", 3)
  check_mdp(mdp)
  assert mdp.transitions.dtype == jnp.float32
  assert combination.dtype == jnp.int32
  np.testing.assert_array_equal(combination, [0, 0, 0])


def test_dtype_float64():
  with jax.enable_x64(True):
    mdp = envs.gridworld(size=3, dtype=jnp.float64)
    mdp2, _ = envs.combination_lock(2, dtype=jnp.float64)
    _, digits64 = envs.combination_lock(9, num_actions=5, key=jax.random.key(2))
  _, digits32 = envs.combination_lock(9, num_actions=5, key=jax.random.key(2))
  np.testing.assert_array_equal(digits64, digits32)
  for leaf in jax.tree_util.tree_leaves((mdp, mdp2)):
    assert leaf.dtype == jnp.float64


# ---------------------------------------------------------------------------
# Gridworld.


def test_grid_index_and_coords():
  assert envs.grid_index(3, 1, 2) == 5
  assert envs.grid_coords(3, 5) == (1, 2)
  s = np.arange(16)
  np.testing.assert_array_equal(envs.grid_index(4, *envs.grid_coords(4, s)), s)
  np.testing.assert_array_equal(envs.boundary_states(3), [0, 1, 2, 3, 5, 6, 7, 8])
  ring = envs.boundary_states(6)
  assert len(ring) == 20 and 14 not in ring and 0 in ring and 35 in ring


def test_gridworld_deterministic_moves_and_walls():
  p = np.asarray(envs.gridworld(size=3, slip=0.0).transitions)
  np.testing.assert_array_equal(p[0, UP], _row(9, {0: 1}))     # corner: into the wall
  np.testing.assert_array_equal(p[0, LEFT], _row(9, {0: 1}))
  np.testing.assert_array_equal(p[0, DOWN], _row(9, {3: 1}))
  np.testing.assert_array_equal(p[0, RIGHT], _row(9, {1: 1}))
  np.testing.assert_array_equal(p[4, UP], _row(9, {1: 1}))
  np.testing.assert_array_equal(p[5, DOWN], _row(9, {8: 1}))


def test_gridworld_slip_rows_by_hand():
  s = 0.2
  p = np.asarray(envs.gridworld(size=3, slip=s, dtype=jnp.float32).transitions)
  # From the corner 0, the four moves land on 0 (up), 3 (down), 0 (left), 1 (right).
  want_up = _row(9, {0: (1 - s) + s / 4 * 2, 3: s / 4, 1: s / 4})
  np.testing.assert_allclose(p[0, UP], want_up, atol=1e-7)
  want_right = _row(9, {1: (1 - s) + s / 4, 0: s / 2, 3: s / 4})
  np.testing.assert_allclose(p[0, RIGHT], want_right, atol=1e-7)
  # From the centre 4 the moves reach 1, 7, 3, 5.
  want = _row(9, {1: s / 4, 7: s / 4, 3: s / 4, 5: 1 - s + s / 4})
  np.testing.assert_allclose(p[4, RIGHT], want, atol=1e-7)


def test_gridworld_wind_by_hand():
  p = np.asarray(envs.gridworld(size=3, slip=0.0, wind=(1, 0, 0.5)).transitions)
  np.testing.assert_allclose(p[0, RIGHT], _row(9, {1: 0.5, 4: 0.5}))
  np.testing.assert_allclose(p[7, UP], _row(9, {4: 0.5, 7: 0.5}))   # pushed back down
  np.testing.assert_allclose(p[6, DOWN], _row(9, {6: 1.0}))          # clipped at the wall
  np.testing.assert_allclose(p[5, DOWN], _row(9, {8: 1.0}))          # the goal keeps it


def test_gridworld_goal_reward_initial():
  mdp = envs.gridworld(size=3, slip=0.3, goal_reward=2.0, step_reward=-0.1)
  p = np.asarray(mdp.transitions)
  np.testing.assert_array_equal(p[8], np.tile(_row(9, {8: 1}), (4, 1)))
  want_r = np.full((9, 4), -0.1, np.float32)
  want_r[8] = 2.0
  np.testing.assert_allclose(mdp.reward, want_r)
  np.testing.assert_allclose(mdp.initial, np.r_[np.full(8, 1 / 8), 0.0])
  # Goals elsewhere, several of them, and a non-absorbing goal.
  mdp = envs.gridworld(size=3, goals=[(0, 0), (1, 2)], slip=0.0, absorbing_goals=False)
  assert mdp.initial[0] == 0 and mdp.initial[5] == 0
  np.testing.assert_array_equal(mdp.transitions[5, LEFT], _row(9, {4: 1}))


def test_gridworld_features():
  mdp = envs.gridworld(size=3)
  assert mdp.features.shape == (9, 4, 9)
  state_reward = np.asarray(mdp.reward[:, 0])
  np.testing.assert_allclose(mdp.features @ state_reward, mdp.reward)
  coords = envs.gridworld(size=3, features="coords").features
  assert coords.shape == (9, 4, 3)
  np.testing.assert_allclose(coords[8, 2], [1.0, 1.0, 1.0])
  np.testing.assert_allclose(coords[1, 0], [0.0, 0.5, 0.0])
  assert envs.gridworld(size=3, features="coords", goals=[(0, 0), (2, 2)]).features.shape == (
      9, 4, 4)
  sa = envs.gridworld(size=3, features="state_action").features
  assert sa.shape == (9, 4, 36)
  assert sa[2, 3, 2 * 4 + 3] == 1 and float(sa.sum()) == 36


# ---------------------------------------------------------------------------
# Random MDPs.


def test_random_mdp_reproducible_and_garnet():
  key = jax.random.key(3)
  a = envs.random_mdp(key, 10, 3, branching=4, num_features=5)
  b = envs.random_mdp(key, 10, 3, branching=4, num_features=5)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  c = envs.random_mdp(jax.random.key(4), 10, 3, branching=4, num_features=5)
  assert not np.array_equal(a.transitions, c.transitions)
  seeded = envs.random_mdp(3, 10, 3, branching=4, num_features=5)
  np.testing.assert_array_equal(seeded.transitions, a.transitions)
  assert np.all((np.asarray(a.transitions) > 0).sum(-1) == 4)
  assert a.features.shape == (10, 3, 5)
  np.testing.assert_allclose(a.initial, np.full(10, 0.1))
  w, *_ = np.linalg.lstsq(np.asarray(a.features).reshape(30, 5),
                          np.asarray(a.reward).reshape(30), rcond=None)
  np.testing.assert_allclose(np.asarray(a.features) @ w, a.reward, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(w), 1.0, atol=1e-5)
  with jax.enable_x64(True):
    d = envs.random_mdp(key, 10, 3, branching=4, num_features=5, dtype=jnp.float64)
  assert d.transitions.dtype == jnp.float64
  np.testing.assert_allclose(d.transitions, a.transitions, atol=1e-6)


# ---------------------------------------------------------------------------
# Combination lock.


def _optimal_finite_return(mdp, horizon):
  p, r = np.asarray(mdp.transitions, np.float64), np.asarray(mdp.reward, np.float64)
  v = np.zeros(mdp.num_states)
  for _ in range(horizon):
    v = np.max(r + float(mdp.discount) * p @ v, -1)
  return float(np.asarray(mdp.initial) @ v)


@pytest.mark.parametrize("depth, num_actions", [(1, 2), (4, 3), (6, 2)])
def test_combination_lock_returns(depth, num_actions):
  mdp, combination = envs.combination_lock(depth, num_actions=num_actions,
                                           key=jax.random.key(depth))
  check_mdp(mdp)
  assert mdp.num_states == depth + 2 and combination.shape == (depth,)
  uniform = jnp.full((depth + 2, num_actions), 1.0 / num_actions)
  for horizon in (depth, depth + 3):
    got = dp.expected_return(uniform, mdp.reward, mdp, horizon=horizon)
    np.testing.assert_allclose(got, (1.0 / num_actions) ** depth, rtol=1e-5)
    assert _optimal_finite_return(mdp, horizon) == pytest.approx(1.0)
  follow = jax.nn.one_hot(jnp.r_[combination, 0, 0], num_actions)
  assert float(dp.expected_return(follow, mdp.reward, mdp, horizon=depth)) == pytest.approx(1.0)
  # Any wrong digit ends in the dead state.
  p = np.asarray(mdp.transitions)
  wrong = (int(combination[0]) + 1) % num_actions
  assert p[0, wrong, depth + 1] == 1.0
  np.testing.assert_array_equal(p[depth, :, depth], 1.0)


def test_combination_lock_key_reproducible():
  a = envs.combination_lock(8, num_actions=4, key=jax.random.key(1))
  b = envs.combination_lock(8, num_actions=4, key=jax.random.key(1))
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[0].transitions, b[0].transitions)
  assert a[0].features.shape == (10, 4, 40)


# ---------------------------------------------------------------------------
# Constrained gridworld.


def test_constrained_gridworld_layout():
  mdp = envs.constrained_gridworld()
  assert mdp.costs.shape == (36, 4, 2) and mdp.budgets.shape == (2,)
  assert mdp.features.shape == (36, 4, 36)
  np.testing.assert_allclose(mdp.reward[35], 1.0)
  np.testing.assert_allclose(mdp.reward[5], 0.6)
  for goal in (5, 35):
    np.testing.assert_array_equal(mdp.transitions[goal, :, goal], 1.0)
  start = np.flatnonzero(np.asarray(mdp.initial))
  np.testing.assert_array_equal(start, [18, 24, 30])
  region0 = np.flatnonzero(np.asarray(mdp.costs[:, 0, 0]))
  region1 = np.flatnonzero(np.asarray(mdp.costs[:, 0, 1]))
  np.testing.assert_array_equal(region0, [20, 26, 32])
  np.testing.assert_array_equal(region1, [22, 28, 34])
  np.testing.assert_array_equal(mdp.costs[20, :, 0], 1.0)


@pytest.mark.parametrize("kwargs", [dict(), dict(slip=0.3), dict(wind=(-1, 0, 0.2))])
def test_constrained_gridworld_constraints_bind_and_are_feasible(kwargs):
  mdp = envs.constrained_gridworld(**kwargs)
  unconstrained = dp.soft_value_iteration(mdp.reward, mdp, temperature=0.1).policy
  assert np.any(_normalised_costs(unconstrained, mdp) > np.asarray(mdp.budgets))
  detour = dp.soft_value_iteration(mdp.reward - 3.0 * mdp.costs.sum(-1), mdp,
                                   temperature=0.1).policy
  assert np.all(_normalised_costs(detour, mdp) <= np.asarray(mdp.budgets))


# ---------------------------------------------------------------------------
# Registry and argument errors.


def test_registry():
  assert envs.registered() == ("gridworld", "random_mdp", "constrained_gridworld",
                               "combination_lock")
  a, b = envs.make("gridworld", size=3), envs.gridworld(size=3)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match=r"unknown environment 'nope'.*combination_lock"):
    envs.make("nope")


@pytest.mark.parametrize("fn, args, kwargs, match", [
    (envs.gridworld, (), dict(size=1), "size"),
    (envs.gridworld, (), dict(size=2.5), "size"),
    (envs.gridworld, (), dict(slip=1.5), "slip"),
    (envs.gridworld, (), dict(slip=-0.1), "slip"),
    (envs.gridworld, (), dict(discount=1.1), "discount"),
    (envs.gridworld, (), dict(features="pixels"), "features"),
    (envs.gridworld, (), dict(size=3, goals=[(3, 0)]), "goals"),
    (envs.gridworld, (), dict(size=3, goals=[(1, 1), (1, 1)]), "goals"),
    (envs.gridworld, (), dict(size=2, goals=[(0, 0), (0, 1), (1, 0), (1, 1)]), "goals"),
    (envs.gridworld, (), dict(wind=(1, 0)), "wind"),
    (envs.gridworld, (), dict(wind=(1, 0, 2.0)), "wind"),
    (envs.random_mdp, (0, 5, 2), dict(branching=6), "branching"),
    (envs.random_mdp, (0, 0, 2), dict(), "num_states"),
    (envs.random_mdp, (None, 5, 2), dict(), "key"),
    (envs.constrained_gridworld, (), dict(size=3), "size"),
    (envs.constrained_gridworld, (), dict(budgets=(0.1,)), "budgets"),
    (envs.constrained_gridworld, (), dict(budgets=(0.1, -1.0)), "budgets"),
    (envs.constrained_gridworld, (), dict(discount=1.0), "discount"),
    (envs.combination_lock, (0,), dict(), "depth"),
    (envs.combination_lock, (3,), dict(num_actions=1), "num_actions"),
    (envs.combination_lock, (3,), dict(features="coords"), "features"),
])
def test_bad_arguments(fn, args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fn(*args, **kwargs)
