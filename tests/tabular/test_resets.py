"""Tests for IRL with expert resets (`irl_jax.tabular.resets`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.tabular import dp, envs, resets


def _lock(depth, *, seed=0, leaf=False, num_demonstrations=2):
  """A lock, its demonstrations (the path through the combination) and the combination."""
  mdp, combination = envs.combination_lock(depth, key=seed)
  if leaf:
    mask = np.zeros(mdp.num_states, bool)
    mask[depth - 1] = True
    mdp = mdp._replace(features=resets.restrict_features(mdp.features, mask))
  combination = np.asarray(combination)
  levels = np.tile(np.arange(depth, dtype=np.int32), (num_demonstrations, 1))
  actions = np.tile(combination, (num_demonstrations, 1))
  demos = dp.Trajectories(*(jnp.asarray(x) for x in (levels, actions, levels + 1)))
  return mdp, demos, combination


# Compiled once for the whole file (epsilon and learning_rate are traced).
_episode = jax.jit(resets.q_learning_episode)
_solve_depth_3 = jax.jit(jax.vmap(resets.make_train(horizon=3, max_interactions=5000),
                                  in_axes=(0, None, None, 0)))


def test_ftrl_weights_are_the_clipped_regularised_leader():
  gaps = np.array([[0.1, -1.0, 0.0, 2.0], [0.2, -0.5, 0.0, 3.0]])  # two rounds of μ̂ − μ_E
  w = np.asarray(resets.ftrl_weights(jnp.asarray(gaps.sum(0)), eta=0.5))
  # By hand: η·Σ = 0.5·(0.3, −1.5, 0, 5) = (0.15, −0.75, 0, 2.5) → clip → (0.15, −0.75, 0, 1).
  np.testing.assert_allclose(w, [0.15, -0.75, 0.0, 1.0], rtol=1e-6)
  # It minimises Σ_j −⟨g_j, w⟩ + ‖w‖²/(2η) over the box (coordinate-wise grid search).
  grid = np.linspace(-1, 1, 2001)
  objective = -gaps.sum(0)[:, None] * grid[None, :] + grid[None, :] ** 2 / (2 * 0.5)
  np.testing.assert_allclose(w, grid[objective.argmin(1)], atol=1e-3)


def test_moments_restrict_features_and_greedy_policy():
  features = jnp.eye(6).reshape(3, 2, 6)
  states, actions = jnp.array([[0, 1, 2], [0, 2, 2]]), jnp.array([[1, 0, 0], [1, 1, 1]])
  mu = np.asarray(resets.moments(features, states, actions, discount=0.5))
  want = np.zeros(6)
  for s_row, a_row in zip(np.asarray(states), np.asarray(actions), strict=True):
    for t, (s, a) in enumerate(zip(s_row, a_row, strict=True)):
      want[2 * s + a] += 0.5**t / 2
  np.testing.assert_allclose(mu, want, rtol=1e-6)
  masked = np.asarray(resets.restrict_features(features, np.array([False, True, False])))
  assert masked[1].sum() == 2 and masked[0].sum() == 0 and masked[2].sum() == 0
  pi = np.asarray(resets.greedy_policy(jnp.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])))
  np.testing.assert_allclose(pi, [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])


def test_expert_resets_start_every_episode_at_a_demonstrated_state():
  mdp, _, _ = _lock(3)
  rng = np.random.default_rng(0)  # any [N, T] states will do for the start sampler
  states = rng.integers(0, 5, (4, 3)).astype(np.int32)
  demos = dp.Trajectories(jnp.asarray(states), jnp.zeros((4, 3), jnp.int32), jnp.asarray(states))
  demonstrated = {(int(s), t) for row in states for t, s in enumerate(row)}
  u = jax.random.uniform(jax.random.key(3), (400, 4))
  start = jax.jit(jax.vmap(resets.sample_start, in_axes=(0, None, None, None)))
  s, t, from_expert = (np.asarray(x) for x in start(u, mdp, demos, 1.0))
  assert from_expert.all() and {(int(a), int(b)) for a, b in zip(s, t, strict=True)} <= demonstrated
  assert len(set(zip(s.tolist(), t.tolist(), strict=True))) == len(demonstrated)  # all used
  s0, t0, from_expert = (np.asarray(x) for x in start(u, mdp, demos, 0.0))
  assert not from_expert.any() and (t0 == 0).all() and (s0 == 0).all()  # ν0 = level 0
  assert 0.4 < np.mean(np.asarray(start(u, mdp, demos, 0.5)[2])) < 0.6  # ≈ α = 0.5
  # The episode then begins in that state at that time, and runs to the horizon.
  q = jnp.zeros((3, 5, 2))
  for i in range(3):
    _, trace = _episode(jax.random.key(i), q, jnp.zeros((5, 2)), mdp, s[i], t[i],
                        epsilon=0.1, learning_rate=0.5)
    active = np.asarray(trace.active)
    assert int(np.asarray(trace.states)[t[i]]) == s[i]
    assert active.sum() == 3 - t[i] and not active[:t[i]].any()


def test_q_learning_update_by_hand():
  mdp, _, _ = _lock(3)
  reward = jnp.array(np.arange(10, dtype=np.float32).reshape(5, 2))
  q, trace = _episode(jax.random.key(0), jnp.zeros((3, 5, 2)), reward, mdp,
                                       2, 2, epsilon=0.5, learning_rate=0.25)
  # One step at the last time: Q[2, 2, a] = 0.25·r(2, a); nothing else moves.
  a = int(np.asarray(trace.actions)[2])
  want = np.zeros((3, 5, 2))
  want[2, 2, a] = 0.25 * float(reward[2, a])
  np.testing.assert_allclose(np.asarray(q), want, rtol=1e-6)
  # From level 0 along the combination: each update bootstraps from the next step's table.
  q0 = jnp.ones((3, 5, 2))
  q, trace = _episode(jax.random.key(1), q0, reward, mdp, 0, 0, epsilon=0.0,
                                       learning_rate=1.0)
  s, acts = np.asarray(trace.states), np.asarray(trace.actions)
  assert s[0] == 0 and np.asarray(trace.active).all()
  # Q0 is all ones, so a = greedy tie-break; with lr 1 the target is r + max Q[t + 1] (= 1).
  assert float(q[0, 0, acts[0]]) == pytest.approx(float(reward[0, acts[0]]) + 1.0)
  assert float(q[2, s[2], acts[2]]) == pytest.approx(float(reward[s[2], acts[2]]))


def test_rollouts_follow_the_policy():
  mdp, demos, combination = _lock(4)
  expert = np.full((6, 2), 0.5, np.float32)
  expert[:4] = np.eye(2)[combination]
  u = jax.random.uniform(jax.random.key(0), (3, 5, 2))
  states, actions = jax.jit(resets.rollouts)(
      u, jnp.broadcast_to(jnp.asarray(expert), (4, 6, 2)), mdp)
  np.testing.assert_array_equal(np.asarray(states), np.tile(np.arange(4), (3, 1)))
  np.testing.assert_array_equal(np.asarray(actions), np.tile(combination, (3, 1)))
  np.testing.assert_array_equal(np.asarray(demos.states), np.tile(np.arange(4), (2, 1)))
  # A uniform policy from level 0: s_{t+1} is the next level or the dead state (5).
  states, actions = jax.jit(resets.rollouts)(
      jax.random.uniform(jax.random.key(1), (200, 5, 2)), jnp.full((4, 6, 2), 0.5), mdp)
  states, actions = np.asarray(states), np.asarray(actions)
  on_path = states[:, :-1] < 4
  follows = actions[:, :-1] == combination[np.minimum(states[:, :-1], 3)]
  np.testing.assert_array_equal(states[:, 1:][on_path & follows],
                                states[:, :-1][on_path & follows] + 1)
  assert (states[:, 1:][on_path & ~follows] == 5).all()
  assert 0.35 < np.mean(actions[:, 0]) < 0.65


def test_interaction_counter_and_cap_are_exact():
  mdp, demos, _ = _lock(3)
  # Never solved (threshold 2·J_E); 2 episodes + 1 cost rollout per iteration; cap 20.
  train = jax.jit(resets.make_train(horizon=3, max_interactions=20, episodes_per_iteration=2,
                                    cost_rollouts=1, threshold=2.0, max_iterations=5))
  out, log = train(jax.random.key(0), mdp, demos, 0.0)
  # ν0 resets: every episode takes T = 3 steps: 9 interactions per iteration; the cap
  # is passed at the third iteration and the run says it is censored.
  assert int(out.interactions) == 27 and int(out.iterations) == 3
  assert bool(out.censored) and not bool(out.solved)
  np.testing.assert_array_equal(np.asarray(log.interactions), [9, 18, 27, -1, -1])
  np.testing.assert_array_equal(np.asarray(log.iterations), [1, 2, 3, -1, -1])
  np.testing.assert_array_equal(np.asarray(log.expert_starts)[:3], [0, 0, 0])
  assert np.isnan(np.asarray(log.returns)[3:]).all()
  # Expert resets: every episode starts at a demonstrated state; an episode from step t
  # takes 3 − t steps, so an iteration takes between 2·1 + 3 and 2·3 + 3.
  out, log = train(jax.random.key(0), mdp, demos, 1.0)
  n = int(out.iterations)
  counts = np.diff(np.concatenate([[0], np.asarray(log.interactions)[:n]]))
  assert ((counts >= 5) & (counts <= 9)).all() and int(out.interactions) >= 20
  np.testing.assert_array_equal(np.asarray(log.expert_starts)[:n], 2)


@pytest.mark.parametrize("leaf", [True, False], ids=["leaf costs", "tabular costs"])
def test_both_methods_solve_a_depth_3_lock(leaf):
  mdp, demos, combination = _lock(3, leaf=leaf)
  out, _ = _solve_depth_3(jax.random.split(jax.random.key(0), 4), mdp, demos,
                 jnp.array([1.0, 1.0, 0.0, 0.0]))
  assert np.asarray(out.solved).all() and not np.asarray(out.censored).any()
  assert (np.asarray(out.interactions) < 5000).all()
  assert (np.asarray(out.final_return) >= 0.95).all()
  np.testing.assert_allclose(np.asarray(out.expert_return), 1.0)
  greedy = np.asarray(out.q)[:, np.arange(3), np.arange(3)].argmax(-1)  # Q[t, level t]
  np.testing.assert_array_equal(greedy, np.tile(combination, (4, 1)))


def test_make_train_checks_its_arguments():
  with pytest.raises(ValueError, match="cost_player"):
    resets.make_train(horizon=3, max_interactions=10, cost_player="best")
  with pytest.raises(ValueError, match="episodes_per_iteration"):
    resets.make_train(horizon=3, max_interactions=10, episodes_per_iteration=0)
  with pytest.raises(ValueError, match="log_length"):
    resets.make_train(horizon=3, max_interactions=10, log_length=1)
  mdp, demos, _ = _lock(3)
  with pytest.raises(ValueError, match="demonstrations have 3 steps, the horizon is 4"):
    resets.make_train(horizon=4, max_interactions=10)(jax.random.key(0), mdp, demos, 1.0)


def test_inverse_cdf_never_draws_a_zero_probability_index():
  last_below_one = np.nextafter(np.float32(1), np.float32(0))  # the largest u < 1
  u = jnp.asarray(np.append(np.linspace(0, 1, 10_000, endpoint=False, dtype=np.float32),
                            last_below_one))
  draw = jax.jit(jax.vmap(resets._inverse_cdf, in_axes=(None, 0)))
  # A row whose float32 sum falls short of 1 (0.3 + 0.6999999): the old clamp to the last
  # index drew index 2 (probability 0) for u above the sum.
  row = jnp.asarray(np.float32([0.3, 0.6999999, 0.0]))
  assert float(jnp.cumsum(row)[-1]) <= float(last_below_one)
  i = np.asarray(draw(row, u))
  assert set(i.tolist()) == {0, 1} and i[-1] == 1
  assert abs(np.mean(i == 0) - 0.3) < 1e-3
  np.testing.assert_array_equal(np.asarray(draw(jnp.asarray([0.3, 0.7, 0.0]), u)) < 2, True)
  # The greedy policy over 12 tied actions and a worse one: 12·(1/12) sums to 0.99999988.
  greedy = resets.greedy_policy(jnp.append(jnp.ones(12), 0.0))
  assert float(jnp.cumsum(greedy)[-1]) < 1.0
  i = np.asarray(draw(greedy, u))
  assert i.max() == 11 and len(set(i.tolist())) == 12
  # An interior zero is skipped too.
  assert 1 not in set(np.asarray(draw(jnp.asarray([0.5, 0.0, 0.5]), u)).tolist())


def test_threshold_is_normalised_by_the_size_of_the_expert_return():
  reached = lambda ret, j_e, t=0.95: bool(resets.reached_threshold(
      jnp.float32(ret), jnp.float32(j_e), t))
  # J_E > 0: the plain J ≥ threshold·J_E.
  assert reached(0.95, 1.0) and not reached(0.94, 1.0) and reached(1.0, 1.0)
  # J_E < 0: within 5% of |J_E| below it (threshold·J_E = −1.9 would be above J_E = −2).
  assert reached(-2.0, -2.0) and reached(-2.09, -2.0) and not reached(-2.11, -2.0)
  # J_E = 0: at least the expert's return.
  assert reached(0.0, 0.0) and not reached(-0.01, 0.0)
  # A lock whose true reward is shifted by −1 per step: J_E = −2 on depth 3, and no policy
  # can reach threshold·J_E = −1.9; the normalised rule is met by the expert's path.
  mdp, demos, _ = _lock(3, leaf=True)
  shifted = mdp._replace(reward=mdp.reward - 1.0)
  out, _ = _solve_depth_3(jax.random.split(jax.random.key(0), 4), shifted, demos,
                          jnp.array([1.0, 1.0, 0.0, 0.0]))
  np.testing.assert_allclose(np.asarray(out.expert_return), -2.0)
  assert np.asarray(out.solved).all() and not np.asarray(out.censored).any()
  assert (np.asarray(out.final_return) >= -2.1).all()


def test_a_solve_that_passes_the_cap_is_censored():
  mdp, demos, _ = _lock(3)
  # threshold 0: J(π) ≥ 0 is reached after the first iteration, which takes 2·3 + 3 = 9
  # interactions with ν0 resets.
  def first_iteration(cap):
    train = jax.jit(resets.make_train(horizon=3, max_interactions=cap, episodes_per_iteration=2,
                                      cost_rollouts=1, threshold=0.0))
    out, _ = train(jax.random.key(0), mdp, demos, 0.0)
    return bool(out.solved), bool(out.censored), int(out.interactions), int(out.iterations)

  assert first_iteration(9) == (True, False, 9, 1)  # at the cap: within the budget
  assert first_iteration(8) == (False, True, 9, 1)  # past the cap: censored


def test_log_slots_are_a_gapless_geometric_grid():
  np.testing.assert_array_equal(resets.log_slots(5, 256), np.arange(5))
  np.testing.assert_array_equal(resets.log_slots(300, None), np.arange(300))
  slots = resets.log_slots(50_000, 256)
  assert slots.shape == (50_000,) and slots[0] == 0 and slots[-1] < 256
  assert set(np.diff(slots).tolist()) == {0, 1}  # non-decreasing, no entry skipped
  np.testing.assert_array_equal(slots[:20], np.arange(20))  # every early iteration
  # A short log keeps the stopping iteration and increasing iteration counts.
  mdp, demos, _ = _lock(3)
  train = jax.jit(resets.make_train(horizon=3, max_interactions=2000, episodes_per_iteration=2,
                                    threshold=2.0, log_length=16))
  out, log = train(jax.random.key(0), mdp, demos, 0.0)
  iterations = np.asarray(log.iterations)
  written = iterations > 0
  assert iterations.shape[0] <= 16 and written[:written.sum()].all()  # a prefix
  iterations = iterations[written]
  assert iterations[-1] == int(out.iterations) and int(out.iterations) > 16
  assert (np.diff(iterations) > 0).all() and iterations[:2].tolist() == [1, 2]
  assert int(np.asarray(log.interactions)[written][-1]) == int(out.interactions)
