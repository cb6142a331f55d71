"""Tests for `irl_jax.tabular.dp` against closed forms and float64 NumPy references.

Every solver runs under `jax.jit` through `references.jitted` (one compilation per
solver, static settings and shapes for the whole session); most tests share
`S, A = 5, 3` and `α = 0.5` so that they share compilations too.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from references import jitted

from irl_jax.tabular import dp
from irl_jax.tabular.mdp import TabularMDP, make_mdp

S, A, ALPHA = 5, 3, 0.5


@pytest.fixture(autouse=True)
def x64():
  """Float64 for every test here; the context manager restores the previous value."""
  with jax.enable_x64(True):
    yield


def _mdp(seed, discount, num_states=S, num_actions=A, **kwargs):
  p, nu0 = ref.random_mdp(seed, num_states, num_actions, **kwargs)
  return make_mdp(p, nu0, discount), p, nu0


def _reward(seed, num_states=S, num_actions=A, *, horizon=None):
  shape = (num_states, num_actions) if horizon is None else (horizon, num_states, num_actions)
  return np.random.default_rng(seed + 1000).normal(size=shape)


def _svi(alpha=ALPHA, **kwargs):
  return jitted(dp.soft_value_iteration, temperature=alpha, **kwargs)


def _fsvi(horizon, alpha=ALPHA):
  return jitted(dp.finite_soft_value_iteration, temperature=alpha, horizon=horizon)


def assert_near_fixed_point(sol, q, v, pi, gamma, alpha, tol=1e-12):
  """`sol` matches the exact soft solution `(q, v, π)` within what the documented
  stopping rule `max|ΔV| ≤ tol·(1 + max|V|)` allows: `|V − V*| ≤ b`,
  `|Q − Q*| ≤ γb` and `|log π − log π*| ≤ (1 + γ)b/α`."""
  b = ref.soft_vi_error_bound(gamma, v, tol)
  np.testing.assert_allclose(sol.v, v, rtol=0, atol=b)
  np.testing.assert_allclose(sol.q, q, rtol=0, atol=gamma * b + 1e-14 * (1 + np.abs(q).max()))
  np.testing.assert_allclose(sol.policy, pi, rtol=0, atol=np.expm1(2 * b / alpha) + 1e-15)


# ---------------------------------------------------------------------------
# Closed forms.


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9])
def test_absorbing_state_closed_form(gamma):
  # One absorbing state, rewards r_a. The soft Bellman equation
  #   V = α log Σ_a exp((r_a + γV)/α) = γV + α log Σ_a exp(r_a/α)
  # gives V = α·logsumexp(r/α) / (1 − γ), Q_a = r_a + γV, π = softmax(r/α).
  r = np.array([[0.4, -1.0, 2.0]])
  mdp = make_mdp(np.ones((1, 3, 1)), [1.0], gamma)
  sol = _svi()(jnp.asarray(r), mdp)
  v = ALPHA * math.log(sum(math.exp(x / ALPHA) for x in r[0])) / (1 - gamma)
  assert_near_fixed_point(sol, r + gamma * v, np.array([v]), ref.softmax(r / ALPHA), gamma,
                          ALPHA)


def test_two_state_uniform_reward_closed_form():
  # Two states, action 0 stays and action 1 switches, reward r everywhere. By
  # symmetry V_0 = V_1 = V and Q(s, ·) = r + γV for both actions, so
  #   V = α log(2 exp((r + γV)/α)) = r + γV + α log 2  ⇒  V = (r + α log 2)/(1 − γ),
  # and the policy is uniform.
  r, gamma = -0.7, 0.8
  p = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], float)
  mdp = make_mdp(p, [0.3, 0.7], gamma)
  sol = _svi()(jnp.full((2, 2), r), mdp)
  v = (r + ALPHA * math.log(2)) / (1 - gamma)
  assert_near_fixed_point(sol, np.full((2, 2), r + gamma * v), np.array([v, v]),
                          np.full((2, 2), 0.5), gamma, ALPHA)


def test_chain_into_absorbing_state_closed_form():
  # State 0 moves to the absorbing state 1 under both actions with rewards c_a;
  # state 1 pays b under both actions. Then
  #   V_1 = (b + α log 2)/(1 − γ)                       (as above),
  #   Q(0, a) = c_a + γV_1,  V_0 = γV_1 + α log(e^{c_0/α} + e^{c_1/α}),
  #   π(·|0) = softmax(c/α),  π(·|1) uniform.
  # Occupancy of any π from ν0 = δ_0: d_0 = 1, d_1 = γ + γ² + … = γ/(1 − γ);
  # over a horizon T, d_1 = Σ_{t=1}^{T−1} γ^t.
  gamma, b = 0.9, 0.25
  c = np.array([1.0, -0.5])
  p = np.zeros((2, 2, 2))
  p[:, :, 1] = 1.0
  mdp = make_mdp(p, [1.0, 0.0], gamma)
  r = np.array([c, [b, b]])
  sol = _svi()(jnp.asarray(r), mdp)
  v1 = (b + ALPHA * math.log(2)) / (1 - gamma)
  v0 = gamma * v1 + ALPHA * math.log(math.exp(c[0] / ALPHA) + math.exp(c[1] / ALPHA))
  assert_near_fixed_point(sol, r + gamma * v1, np.array([v0, v1]),
                          np.array([ref.softmax(c / ALPHA), [0.5, 0.5]]), gamma, ALPHA)
  pi = np.array([[0.3, 0.7], [0.6, 0.4]])
  rho = jitted(dp.occupancy)(jnp.asarray(pi), mdp)
  np.testing.assert_allclose(rho, [pi[0], gamma / (1 - gamma) * pi[1]], rtol=1e-12)
  horizon = 6
  rho_t = jitted(dp.finite_occupancy, horizon=horizon)(jnp.asarray(pi), mdp)
  tail = sum(gamma ** t for t in range(1, horizon))
  np.testing.assert_allclose(rho_t, [pi[0], tail * pi[1]], rtol=1e-12)


def test_self_loop_quadratic_closed_form():
  # γ = 1/2. State 0: action 0 stays with reward a, action 1 moves to the
  # absorbing state 1 with reward 0; state 1 pays b (V_1 = (b + α log 2)/(1 − γ)).
  # With x = exp(V_0/α), B = e^{a/α}, K = e^{γV_1/α}:
  #   x = exp((a + V_0/2)/α) + exp(γV_1/α) = B√x + K,
  # a quadratic in y = √x: y² − By − K = 0, so y = (B + √(B² + 4K))/2,
  # V_0 = 2α log y and π(0|0) = B√x/x = B/y.
  gamma, a, b = 0.5, 0.3, -0.4
  p = np.zeros((2, 2, 2))
  p[0, 0, 0] = p[0, 1, 1] = p[1, :, 1] = 1.0
  mdp = make_mdp(p, [1.0, 0.0], gamma)
  r = np.array([[a, 0.0], [b, b]])
  sol = _svi()(jnp.asarray(r), mdp)
  v1 = (b + ALPHA * math.log(2)) / (1 - gamma)
  big_b, big_k = math.exp(a / ALPHA), math.exp(gamma * v1 / ALPHA)
  y = (big_b + math.sqrt(big_b ** 2 + 4 * big_k)) / 2
  v = np.array([2 * ALPHA * math.log(y), v1])
  assert_near_fixed_point(sol, r + gamma * v[[[0, 1], [1, 1]]], v,
                          np.array([[big_b / y, 1 - big_b / y], [0.5, 0.5]]), gamma, ALPHA)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_finite_horizon_absorbing_closed_form(gamma):
  # One absorbing state: V_t = α·logsumexp(r/α)·Σ_{k=0}^{T−1−t} γ^k (V_T = 0),
  # π_t = softmax(r/α) at every step.
  horizon = 5
  r = np.array([[0.2, 1.1, -0.3]])
  mdp = make_mdp(np.ones((1, 3, 1)), [1.0], gamma)
  sol = _fsvi(horizon)(jnp.asarray(r), mdp)
  lse = ALPHA * math.log(sum(math.exp(x / ALPHA) for x in r[0]))
  want = [lse * sum(gamma ** k for k in range(horizon - t)) for t in range(horizon)]
  assert sol.v.shape == (horizon, 1) and sol.q.shape == sol.policy.shape == (horizon, 1, 3)
  np.testing.assert_allclose(sol.v[:, 0], want, rtol=1e-13)
  np.testing.assert_allclose(sol.policy[:, 0], np.tile(ref.softmax(r[0] / ALPHA), (horizon, 1)),
                             atol=1e-14)


# ---------------------------------------------------------------------------
# Soft value iteration vs the reference.

SVI_CASES = [(2, 2, 0.5, ALPHA), (S, A, 0.9, ALPHA), (S, A, 0.0, ALPHA), (8, 4, 0.95, 2.0),
             (6, 2, 0.7, 0.1)]


@pytest.mark.parametrize("num_states, num_actions, gamma, alpha", SVI_CASES)
def test_soft_value_iteration_matches_reference(num_states, num_actions, gamma, alpha):
  mdp, p, _ = _mdp(num_states, gamma, num_states, num_actions, sparsity=0.3)
  r = _reward(num_states, num_states, num_actions)
  sol = _svi(alpha)(jnp.asarray(r), mdp)
  q, v, pi = ref.soft_value_iteration(r, p, gamma, alpha)
  assert sol.q.dtype == sol.v.dtype == sol.policy.dtype == jnp.float64
  assert sol.q.shape == sol.policy.shape == (num_states, num_actions)
  assert_near_fixed_point(sol, q, v, pi, gamma, alpha)
  # The returned triple is consistent: Q = r + γPV.
  np.testing.assert_allclose(sol.q, r + gamma * p @ np.asarray(sol.v), atol=1e-13)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_soft_value_iteration_policy_rows_sum_to_one(dtype, atol):
  # π(·|s) must be a distribution: Σ_a exp((Q(s,a) − V(s))/α) = 1 exactly when
  # V = α·logsumexp(Q/α), so only round-off may show; the tolerances are
  # ~500 ulps (float64) and ~17 ulps (float32).
  num_states, num_actions, gamma, alpha = 6, 2, 0.95, 0.1
  with jax.enable_x64(dtype == np.float64):
    mdp, p, _ = _mdp(6, gamma, num_states, num_actions)
    r = _reward(6, num_states, num_actions)
    sol = _svi(alpha)(jnp.asarray(r, dtype), mdp)
  assert sol.policy.dtype == dtype
  # Values and policy are within the stopping rule's bound (float32: default
  # tol 1e-6, plus round-off in the backups, covered by the bound for 2e-6) ...
  q, v, pi = ref.soft_value_iteration(np.asarray(r, dtype), p, gamma, alpha)
  assert_near_fixed_point(sol, q, v, pi, gamma, alpha, tol=1e-12 if dtype == np.float64 else 2e-6)
  # ... and every row of the policy sums to 1.
  np.testing.assert_allclose(np.asarray(sol.policy, np.float64).sum(-1), 1.0, rtol=0, atol=atol)


def test_soft_value_iteration_stopping_rule_and_warm_start():
  gamma = 0.9
  mdp, p, _ = _mdp(4, gamma)
  r = _reward(4)
  q, v, pi = ref.soft_value_iteration(r, p, gamma, ALPHA)
  # One backup from V = 0 gives V1 = α·logsumexp(r/α); the solution reports Q = r + γPV1
  # and V = α·logsumexp(Q/α) (the soft maximum of the Q it returns).
  one = _svi(max_iterations=1)(jnp.asarray(r), mdp)
  v1 = ref.soft_max(r, ALPHA)
  np.testing.assert_allclose(one.q, r + gamma * p @ v1, atol=1e-13)
  np.testing.assert_allclose(one.v, ref.soft_max(r + gamma * p @ v1, ALPHA), atol=1e-13)
  # A loose (relative) tolerance stops early, but within the contraction bound.
  loose = _svi(tol=1e-3)(jnp.asarray(r), mdp)
  assert np.max(np.abs(np.asarray(loose.v) - v)) > 1e-6
  assert_near_fixed_point(loose, q, v, pi, gamma, ALPHA, tol=1e-3)
  # A warm start at the fixed point stays there; a far one still reaches it.
  warm = _svi()(jnp.asarray(r), mdp, init_v=jnp.asarray(v))
  assert_near_fixed_point(warm, q, v, pi, gamma, ALPHA, tol=1e-15)
  far = _svi()(jnp.asarray(r), mdp, init_v=jnp.full(S, 50.0))
  assert_near_fixed_point(far, q, v, pi, gamma, ALPHA)
  # A NaN reward stops the loop (no hang) and propagates.
  bad = _svi()(jnp.asarray(r).at[0, 0].set(jnp.nan), mdp)
  assert not np.all(np.isfinite(bad.v))


@pytest.mark.parametrize("num_states, num_actions, gamma, alpha, horizon, timed", [
    (3, 2, 1.0, 1.0, 1, False),
    (S, A, 0.9, ALPHA, 7, False),
    (4, 4, 1.0, 2.0, 25, False),
    (S, A, 0.95, ALPHA, 7, True),
])
def test_finite_soft_value_iteration_matches_reference(num_states, num_actions, gamma, alpha,
                                                       horizon, timed):
  mdp, p, _ = _mdp(horizon, gamma, num_states, num_actions)
  r = _reward(horizon, num_states, num_actions, horizon=horizon if timed else None)
  sol = _fsvi(horizon, alpha)(jnp.asarray(r), mdp)
  q, v, pi = ref.finite_soft_value_iteration(r, p, gamma, alpha, horizon)
  assert sol.q.shape == sol.policy.shape == (horizon, num_states, num_actions)
  assert sol.v.shape == (horizon, num_states)
  np.testing.assert_allclose(sol.q, q, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(sol.v, v, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(sol.policy, pi, atol=1e-12)
  np.testing.assert_allclose(sol.policy.sum(-1), 1.0, atol=1e-13)
  np.testing.assert_array_equal(sol.q[-1], np.broadcast_to(r, q.shape)[-1])


def test_finite_horizon_converges_to_discounted():
  gamma = 0.8
  mdp, p, _ = _mdp(7, gamma)
  r = _reward(7)
  fin = _fsvi(200)(jnp.asarray(r), mdp)        # 0.8^200 ≈ 4e-20
  _, v, pi = ref.soft_value_iteration(r, p, gamma, ALPHA)
  np.testing.assert_allclose(fin.v[0], v, atol=1e-12)
  np.testing.assert_allclose(fin.policy[0], pi, atol=1e-12)


# ---------------------------------------------------------------------------
# Gradients of soft value iteration (implicit differentiation at the fixed point).


def _unrolled_soft_v(reward, p, gamma, alpha, iterations):
  """Soft VI as a `lax.scan` of `iterations` backups; autodiff goes through it."""
  def backup(v, _):
    return alpha * jax.nn.logsumexp((reward + gamma * p @ v) / alpha, -1), None
  v, _ = jax.lax.scan(backup, jnp.zeros(p.shape[0], reward.dtype), None, length=iterations)
  return v


def test_soft_value_iteration_gradients_match_unrolled_scan():
  gamma = 0.6
  mdp, p, nu0 = _mdp(11, gamma)
  r = jnp.asarray(_reward(11))
  w = jnp.asarray(np.random.default_rng(0).normal(size=S))

  def implicit(r, p, gamma):
    sol = dp.soft_value_iteration(r, mdp._replace(transitions=p, discount=gamma),
                                  temperature=ALPHA)
    return jnp.dot(w, sol.v)

  def unrolled(r, p, gamma):       # 0.6^300 ≈ 1e-67: the truncation is invisible
    return jnp.dot(w, _unrolled_soft_v(r, p, gamma, ALPHA, 300))

  @jax.jit
  def grads(r, p, gamma):
    return (jax.grad(implicit, argnums=(0, 1, 2))(r, p, gamma),
            jax.grad(unrolled, argnums=(0, 1, 2))(r, p, gamma),
            jax.grad(lambda r: jnp.dot(nu0, dp.soft_value_iteration(
                r, mdp, temperature=ALPHA).v))(r))

  g_imp, g_unr, grad_r = grads(r, mdp.transitions, mdp.discount)
  for name, a, b in zip(("reward", "transitions", "discount"), g_imp, g_unr, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=name)
  # ∂(ν0ᵀV)/∂r is the soft-optimal policy's occupancy.
  _, _, pi = ref.soft_value_iteration(np.asarray(r), p, gamma, ALPHA)
  np.testing.assert_allclose(grad_r, ref.occupancy(pi, p, nu0, gamma), atol=1e-10)


# ---------------------------------------------------------------------------
# Policy evaluation and expected return.


def _policy_with_zero(seed, horizon=None):
  pi = ref.random_policy(seed, S, A, horizon=horizon)
  pi[..., 0, :] = [0.0, 0.0, 1.0]     # exercises 0·log 0 = 0 in the entropy bonus
  return pi


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_policy_evaluation_matches_reference(alpha):
  gamma = 0.85
  mdp, p, _ = _mdp(21, gamma)
  r = _reward(21)
  pi = _policy_with_zero(21)
  q, v = jitted(dp.policy_evaluation, temperature=alpha)(jnp.asarray(pi), jnp.asarray(r), mdp)
  q_ref, v_ref = ref.policy_evaluation(pi, r, p, gamma, alpha)
  np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(q, q_ref, rtol=1e-12, atol=1e-12)


def test_soft_policy_evaluation_of_soft_optimal_policy_is_optimal_value():
  gamma = 0.9
  mdp, p, nu0 = _mdp(22, gamma)
  r = _reward(22)
  sol = _svi()(jnp.asarray(r), mdp)
  # softmax(Q/α) rather than `sol.policy`, whose rows sum to 1 only up to the
  # stopping tolerance (see test_soft_value_iteration_policy_rows_sum_to_one).
  pi = jax.nn.softmax(sol.q / ALPHA)
  q, v = jitted(dp.policy_evaluation, temperature=ALPHA)(pi, jnp.asarray(r), mdp)
  q_star, v_star, _ = ref.soft_value_iteration(r, p, gamma, ALPHA)
  b = ref.soft_vi_error_bound(gamma, v_star, 1e-12)
  np.testing.assert_allclose(v, v_star, rtol=0, atol=b)
  np.testing.assert_allclose(q, q_star, rtol=0, atol=b)
  # The soft return from ν0 is ν0ᵀV*.
  np.testing.assert_allclose(
      jitted(dp.expected_return, temperature=ALPHA)(pi, jnp.asarray(r), mdp), nu0 @ v_star,
      rtol=0, atol=b)
  # Any other policy is worse in soft value.
  other = jnp.asarray(ref.random_policy(0, S, A))
  _, v_other = jitted(dp.policy_evaluation, temperature=ALPHA)(other, jnp.asarray(r), mdp)
  assert np.all(np.asarray(v_other) < v_star)


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_expected_return_infinite_horizon(alpha):
  gamma = 0.9
  mdp, p, nu0 = _mdp(31, gamma)
  r = _reward(31)
  pi = _policy_with_zero(31)
  got = jitted(dp.expected_return, temperature=alpha)(jnp.asarray(pi), jnp.asarray(r), mdp)
  _, v = ref.policy_evaluation(pi, r, p, gamma, alpha)
  np.testing.assert_allclose(got, nu0 @ v, rtol=1e-12)


@pytest.mark.parametrize("alpha, timed", [(0.0, False), (ALPHA, True)])
def test_expected_return_finite_horizon(alpha, timed):
  gamma, horizon = 0.95, 7
  mdp, p, nu0 = _mdp(32, gamma)
  r = _reward(32)
  pi = _policy_with_zero(32, horizon if timed else None)
  got = jitted(dp.expected_return, temperature=alpha, horizon=horizon)(
      jnp.asarray(pi), jnp.asarray(r), mdp)
  rho_t = ref.finite_occupancy(pi, p, nu0, gamma, horizon, per_step=True)
  pis = np.broadcast_to(pi, rho_t.shape)
  log_pi = np.log(np.where(pis > 0, pis, 1.0))
  np.testing.assert_allclose(got, np.sum(rho_t * (r - alpha * log_pi)), rtol=1e-12)


def test_expected_soft_return_of_finite_soft_optimal_policy_is_initial_value():
  gamma, horizon = 0.9, 7
  mdp, _, nu0 = _mdp(33, gamma)
  r = jnp.asarray(_reward(33))
  fin = _fsvi(horizon)(r, mdp)
  np.testing.assert_allclose(
      jitted(dp.expected_return, temperature=ALPHA, horizon=horizon)(fin.policy, r, mdp),
      nu0 @ np.asarray(fin.v[0]), rtol=1e-12)


def test_state_transition_matrix():
  mdp, p, _ = _mdp(41, 0.9)
  pi = ref.random_policy(41, S, A)
  p_pi = jitted(dp.state_transition_matrix)(jnp.asarray(pi), mdp)
  np.testing.assert_allclose(p_pi, ref.state_transition_matrix(pi, p), atol=1e-15)
  np.testing.assert_allclose(p_pi.sum(-1), 1.0, atol=1e-14)


# ---------------------------------------------------------------------------
# Occupancy measures.


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99])
def test_occupancy_matches_reference_and_sums(gamma):
  mdp, p, nu0 = _mdp(51, gamma, sparsity=0.4)
  pi = ref.random_policy(51, S, A)
  rho = jitted(dp.occupancy)(jnp.asarray(pi), mdp)
  np.testing.assert_allclose(rho, ref.occupancy(pi, p, nu0, gamma), rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(rho.sum(), 1 / (1 - gamma), rtol=1e-11)
  assert np.all(np.asarray(rho) >= -1e-15)


@pytest.mark.parametrize("gamma, horizon, timed", [(1.0, 1, False), (0.9, 7, False),
                                                   (1.0, 7, True), (0.7, 15, True)])
def test_finite_occupancy_matches_reference_and_sums(gamma, horizon, timed):
  mdp, p, nu0 = _mdp(52, gamma)
  pi = ref.random_policy(52, S, A, horizon=horizon if timed else None)
  rho_t = jitted(dp.finite_occupancy, horizon=horizon, per_step=True)(jnp.asarray(pi), mdp)
  want = ref.finite_occupancy(pi, p, nu0, gamma, horizon, per_step=True)
  assert rho_t.shape == (horizon, S, A)
  np.testing.assert_allclose(rho_t, want, atol=1e-14)
  np.testing.assert_allclose(rho_t.sum((1, 2)), [gamma ** t for t in range(horizon)],
                             rtol=1e-13)
  rho = jitted(dp.finite_occupancy, horizon=horizon)(jnp.asarray(pi), mdp)
  np.testing.assert_allclose(rho, want.sum(0), atol=1e-14)
  np.testing.assert_allclose(rho.sum(), sum(gamma ** t for t in range(horizon)), rtol=1e-13)


def test_linear_solve_equals_long_forward_recursion():
  gamma = 0.9
  mdp, _, _ = _mdp(53, gamma)
  pi = jnp.asarray(ref.random_policy(53, S, A))
  # The tail mass beyond T = 400 is γ^400/(1 − γ) ≈ 5e-18.
  np.testing.assert_allclose(jitted(dp.finite_occupancy, horizon=400)(pi, mdp),
                             jitted(dp.occupancy)(pi, mdp), rtol=1e-11, atol=1e-14)


# ---------------------------------------------------------------------------
# Sampling and empirical occupancy.

NUM_S, NUM_A, HORIZON, NUM_TRAJ, GAMMA = 4, 2, 10, 20_000, 0.9


def _sample(key, pi, mdp):
  return jitted(dp.sample_trajectories, horizon=HORIZON, num_trajectories=NUM_TRAJ)(
      key, jnp.asarray(pi), mdp)


def _empirical(traj):
  return jitted(dp.empirical_occupancy, num_states=NUM_S, num_actions=NUM_A)(
      traj.states, traj.actions, discount=GAMMA)


def test_sampled_trajectories_are_valid_and_match_exact_occupancy():
  p, _ = ref.random_mdp(62, NUM_S, NUM_A, sparsity=0.5)
  nu0 = np.array([0.6, 0.0, 0.4, 0.0])
  mdp = make_mdp(p, nu0, GAMMA)
  pi = ref.random_policy(62, NUM_S, NUM_A)
  pi[1] = [0.0, 1.0]                         # state 1 always takes action 1
  traj = _sample(jax.random.key(3), pi, mdp)
  s, a, s2 = (np.asarray(x) for x in traj)
  for x in (s, a, s2):
    assert x.shape == (NUM_TRAJ, HORIZON) and x.dtype == np.int32
  assert set(np.unique(s[:, 0])) <= {0, 2}   # s_0 ∼ ν0
  np.testing.assert_array_equal(s2[:, :-1], s[:, 1:])
  assert np.all(p[s, a, s2] > 0)             # only possible transitions
  assert np.all(a[s == 1] == 1)
  # Reproducible for a fixed key, different for another.
  np.testing.assert_array_equal(_sample(jax.random.key(3), pi, mdp).actions, a)
  assert np.any(np.asarray(_sample(jax.random.key(4), pi, mdp).actions) != a)

  # X_i(s, a) = Σ_t γ^t 1[s_t^i = s, a_t^i = a] lies in [0, H], H = Σ_t γ^t, so
  # Var X ≤ E[X²] ≤ H·E[X] = H·ρ(s, a) and the mean of N samples has standard
  # error ≤ √(Hρ/N). We allow 5 of those per entry (a fixed key, so the test is
  # deterministic); entries with ρ = 0 must be exactly 0.
  emp = np.asarray(_empirical(traj))
  exact = ref.finite_occupancy(pi, p, nu0, GAMMA, HORIZON)
  big_h = sum(GAMMA ** t for t in range(HORIZON))
  np.testing.assert_allclose(emp.sum(), big_h, rtol=1e-12)
  assert np.all(np.abs(emp - exact) <= 5 * np.sqrt(big_h * exact / NUM_TRAJ) + 1e-12)
  assert np.max(np.abs(emp - exact)) > 0     # it is a sample, not the expectation


def test_empirical_state_occupancy_of_deterministic_dynamics_is_exact():
  # A deterministic cycle s → s + 1 (mod S) under both actions: the state path is
  # the same in every trajectory, so the empirical state occupancy is exact.
  p = np.zeros((NUM_S, NUM_A, NUM_S))
  for s in range(NUM_S):
    p[s, :, (s + 1) % NUM_S] = 1.0
  mdp = make_mdp(p, [1.0, 0.0, 0.0, 0.0], GAMMA)
  pi = ref.random_policy(5, NUM_S, NUM_A)
  traj = _sample(jax.random.key(0), pi, mdp)
  np.testing.assert_array_equal(traj.states, np.tile(np.arange(HORIZON) % NUM_S, (NUM_TRAJ, 1)))
  emp = np.asarray(_empirical(traj))
  exact = ref.finite_occupancy(pi, p, np.eye(NUM_S)[0], GAMMA, HORIZON)
  np.testing.assert_allclose(emp.sum(-1), exact.sum(-1), rtol=1e-12)


def test_empirical_occupancy_matches_reference_with_mask():
  rng = np.random.default_rng(7)
  n, horizon, gamma = 5, 6, 0.8
  states = rng.integers(S, size=(n, horizon))
  actions = rng.integers(A, size=(n, horizon))
  where = rng.random((n, horizon)) < 0.7
  where[2] = False                          # an all-padding row does not count in N
  f = jitted(dp.empirical_occupancy, num_states=S, num_actions=A)
  g = jitted(dp.empirical_occupancy, num_states=S, num_actions=A, per_step=True)
  np.testing.assert_allclose(f(states, actions, discount=gamma, where=where),
                             ref.empirical_occupancy(states, actions, S, A, gamma, where),
                             atol=1e-15)
  np.testing.assert_allclose(g(states, actions, discount=gamma),
                             ref.empirical_occupancy(states, actions, S, A, gamma, per_step=True),
                             atol=1e-15)
  # Everything masked: zeros (no division by zero).
  np.testing.assert_array_equal(f(states, actions, discount=gamma, where=np.zeros_like(where)),
                                0.0)


# ---------------------------------------------------------------------------
# Batched MDPs.


def test_vmap_over_a_stack_of_mdps():
  gammas = [0.5, 0.9, 0.95]
  mdps, refs, rewards = [], [], []
  for i, gamma in enumerate(gammas):
    mdp, p, nu0 = _mdp(70 + i, gamma)
    mdps.append(mdp)
    refs.append((p, nu0))
    rewards.append(_reward(70 + i))
  batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mdps)
  assert isinstance(batch, TabularMDP) and batch.reward is None
  assert batch.transitions.shape == (3, S, A, S)
  r = jnp.asarray(np.stack(rewards))

  @jax.jit
  def solve_all(r, batch):
    sol = jax.vmap(dp.soft_value_iteration, in_axes=(0, 0))(r, batch)
    fin = jax.vmap(lambda r, m: dp.finite_soft_value_iteration(
        r, m, horizon=7, temperature=ALPHA), in_axes=(0, 0))(r, batch)
    return sol, fin, jax.vmap(dp.occupancy)(sol.policy, batch)

  sol, fin, rho = solve_all(r, batch)
  for i, gamma in enumerate(gammas):
    p, nu0 = refs[i]
    q, v, pi = ref.soft_value_iteration(rewards[i], p, gamma, 1.0)
    assert_near_fixed_point(jax.tree_util.tree_map(lambda x, i=i: x[i], sol), q, v, pi, gamma,
                            1.0)
    one = _fsvi(7)(r[i], mdps[i])
    np.testing.assert_allclose(fin.q[i], one.q, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(fin.policy[i], one.policy, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(rho[i], ref.occupancy(np.asarray(sol.policy[i]), p, nu0, gamma),
                               rtol=1e-10)


# ---------------------------------------------------------------------------
# Bad inputs to the DP functions.


def test_dp_functions_reject_bad_shapes():
  mdp, _, _ = _mdp(80, 0.9, 3, 2)
  good_pi = jnp.full((3, 2), 0.5)
  with pytest.raises(ValueError, match=r"reward.*\[3, 2\].*\(3, 3\)"):
    dp.soft_value_iteration(jnp.zeros((3, 3)), mdp)
  with pytest.raises(ValueError, match=r"reward.*\(2, 3, 2\)"):
    dp.soft_value_iteration(jnp.zeros((2, 3, 2)), mdp)   # no time axis when discounted
  batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), mdp)
  with pytest.raises(ValueError, match=r"vmap.*\(2, 3, 2, 3\)"):
    dp.soft_value_iteration(jnp.zeros((3, 2)), batch)
  with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
    dp.finite_soft_value_iteration(jnp.zeros((3, 2)), mdp, horizon=0)
  with pytest.raises(ValueError, match="4 steps, horizon is 5"):
    dp.finite_soft_value_iteration(jnp.zeros((4, 3, 2)), mdp, horizon=5)
  with pytest.raises(ValueError, match=r"reward.*\(3, 2, 2\)"):
    dp.finite_soft_value_iteration(jnp.zeros((3, 2, 2)), mdp, horizon=3)
  with pytest.raises(ValueError, match=r"policy.*\(2, 3\)"):
    dp.occupancy(jnp.full((2, 3), 0.5), mdp)
  with pytest.raises(ValueError, match=r"policy.*\(4, 3, 2\)"):
    dp.occupancy(jnp.full((4, 3, 2), 0.5), mdp)
  with pytest.raises(ValueError, match="4 steps, horizon is 6"):
    dp.finite_occupancy(jnp.full((4, 3, 2), 0.5), mdp, horizon=6)
  with pytest.raises(ValueError, match=r"policy.*\(3, 3\)"):
    dp.policy_evaluation(jnp.full((3, 3), 1 / 3), jnp.zeros((3, 2)), mdp)
  with pytest.raises(ValueError, match=r"reward.*\(3,\)"):
    dp.policy_evaluation(good_pi, jnp.zeros(3), mdp)
  with pytest.raises(ValueError, match=r"policy.*\(3, 1\)"):
    dp.state_transition_matrix(jnp.ones((3, 1)), mdp)
  with pytest.raises(ValueError, match=r"policy.*\(2, 2\)"):
    dp.sample_trajectories(jax.random.key(0), jnp.full((2, 2), 0.5), mdp, horizon=3,
                           num_trajectories=2)
  with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
    dp.empirical_occupancy(jnp.zeros((2, 3), int), jnp.zeros((2, 4), int), num_states=3,
                           num_actions=2, discount=0.9)
  with pytest.raises(ValueError, match=r"\(6,\) and \(6,\)"):
    dp.empirical_occupancy(jnp.zeros(6, int), jnp.zeros(6, int), num_states=3,
                           num_actions=2, discount=0.9)


@pytest.mark.parametrize("shape", [(3, 3), (3, 1), (2,), (4, 3, 2)],
                         ids=["S_A+1", "S_1", "A", "T_S_A_without_horizon"])
def test_expected_return_rejects_bad_reward_shapes(shape):
  # Like every other DP function, expected_return must reject a reward that is
  # not [S, A] (here [3, 2]; [T, S, A] only with a horizon) with a ValueError
  # naming the shape, rather than broadcasting it ([3, 1], [2]) silently or
  # failing inside jnp with a TypeError ([3, 3]).
  mdp, _, _ = _mdp(81, 0.9, 3, 2)
  with pytest.raises(ValueError, match=r"reward.*" + re.escape(str(shape))):
    dp.expected_return(jnp.full((3, 2), 0.5), jnp.ones(shape), mdp)


def test_temperatures_that_are_not_positive_are_refused():
  """α = 0 divides by zero and α < 0 turns the soft maximum into a soft minimum: both are
  errors naming the function, never NaN or a plausible-looking soft-min solution."""
  from irl_jax.tabular import irl

  mdp, _, _ = _mdp(81, 0.9, 3, 2)
  reward = jnp.zeros((3, 2))
  for bad in (0.0, -0.5, float("nan")):
    with pytest.raises(ValueError, match=r"soft_value_iteration: `temperature` must be"):
      dp.soft_value_iteration(reward, mdp, temperature=bad)
    with pytest.raises(ValueError, match=r"finite_soft_value_iteration: `temperature`"):
      dp.finite_soft_value_iteration(reward, mdp, horizon=3, temperature=bad)
    with pytest.raises(ValueError, match=r"mce_irl_loss: `temperature` must be"):
      irl.mce_irl_loss(reward, jnp.zeros((3, 2)), mdp, temperature=bad)


def test_an_undiscounted_mdp_under_jit_gives_nan_not_numbers():
  """Under jit the discount is traced, so γ < 1 cannot be checked on the host: the
  infinite-horizon results come back NaN for γ = 1 (and as before for γ < 1)."""
  good, _, _ = _mdp(82, 0.9, 3, 2)
  bad = good._replace(discount=jnp.asarray(1.0))
  reward = jnp.asarray(_reward(82, 3, 2))
  pi = jnp.full((3, 2), 0.5)
  svi = jax.jit(lambda m: dp.soft_value_iteration(reward, m, max_iterations=50))
  occ = jax.jit(lambda m: dp.occupancy(pi, m))
  pev = jax.jit(lambda m: dp.policy_evaluation(pi, reward, m))
  for fn in (svi, occ, pev):
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(fn(good)))
    assert all(np.all(np.isnan(np.asarray(x))) for x in jax.tree.leaves(fn(bad)))
  # Eagerly the discount is concrete and it is an error, as before.
  with pytest.raises(ValueError, match="discount < 1"):
    dp.occupancy(pi, bad)
  # A vmapped batch of MDPs: only the undiscounted one comes back NaN.
  both = jax.tree.map(lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b)]), good, bad)
  v = np.asarray(jax.jit(jax.vmap(lambda m: dp.soft_value_iteration(
      reward, m, max_iterations=50).v))(both))
  assert np.isfinite(v[0]).all() and np.isnan(v[1]).all()
  np.testing.assert_allclose(v[0], np.asarray(svi(good).v), rtol=1e-12)
