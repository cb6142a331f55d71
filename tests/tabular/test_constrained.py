"""Constrained soft solve against an independent dual solve (SciPy on a NumPy soft value
iteration), the identifiability measures on constructed rewards, and constrained IRL
recovering an identified reward."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from irl_jax.tabular import constrained, dp, envs


def _np_soft_vi(r, p, gamma, alpha, iters=3000):
  v = np.zeros(r.shape[0])
  for _ in range(iters):
    q = r + gamma * p @ v
    m = q.max(1, keepdims=True)
    v = (m + alpha * np.log(np.exp((q - m) / alpha).sum(1, keepdims=True)))[:, 0]
  q = r + gamma * p @ v
  return v, np.exp((q - v[:, None]) / alpha)


def _np_dual(mdp, alpha):
  """min_{ξ ≥ 0} ν0ᵀ V_{r − Ψξ} + ⟨ξ, b⟩/(1 − γ), by L-BFGS-B on a NumPy solver."""
  p, nu0 = np.asarray(mdp.transitions, float), np.asarray(mdp.initial, float)
  r, psi = np.asarray(mdp.reward, float), np.asarray(mdp.costs, float)
  b, gamma = np.asarray(mdp.budgets, float), float(mdp.discount)

  def g(xi):
    v, _ = _np_soft_vi(r - psi @ xi, p, gamma, alpha, iters=400)
    return nu0 @ v + xi @ b / (1 - gamma)

  res = scipy.optimize.minimize(g, np.zeros(len(b)), bounds=[(0, None)] * len(b),
                                method="L-BFGS-B", options=dict(ftol=1e-12, gtol=1e-9))
  return res.x


@pytest.fixture(scope="module")
def cmdp():
  return envs.constrained_gridworld(5, slip=0.1, discount=0.8, budgets=(0.05, 0.05))


def test_constrained_solve_matches_an_independent_dual_solution(cmdp):
  sol = jax.jit(lambda r: constrained.constrained_soft_solve(
      r, cmdp, temperature=0.2, steps=3000, dual_lr=5.0))(cmdp.reward)
  ref = _np_dual(cmdp, 0.2)
  np.testing.assert_allclose(sol.duals, ref, atol=2e-2)
  assert np.all(np.asarray(sol.duals) >= 0)
  # KKT: every active constraint is tight, none is violated.
  assert np.all(np.asarray(sol.violation) <= 1e-4)
  active = np.asarray(sol.duals) > 1e-3
  np.testing.assert_allclose(np.asarray(sol.violation)[active], 0, atol=1e-4)
  np.testing.assert_allclose(jnp.sum(sol.occupancy), 1.0, rtol=1e-5)


def test_slack_budgets_give_the_unconstrained_soft_optimum(cmdp):
  loose = cmdp._replace(budgets=jnp.array([1.0, 1.0]))
  sol = constrained.constrained_soft_solve(cmdp.reward, loose, temperature=0.2, steps=50)
  free = dp.soft_value_iteration(cmdp.reward, loose, temperature=0.2)
  np.testing.assert_array_equal(sol.duals, 0)
  # float32 soft value iteration stops at max|ΔV| ≤ 1e-6·(1 + max|V|); through
  # γ/(1 − γ) = 4 and 1/α = 5 that bounds policy differences near 1e-4.
  np.testing.assert_allclose(sol.policy, free.policy, atol=2e-4)


def test_missing_constraints_raise():
  mdp = envs.gridworld(3)
  with pytest.raises(ValueError, match="no constraints"):
    constrained.constrained_soft_solve(mdp.reward, mdp)
  # The learner names the missing constraints too (not an AttributeError on `costs`).
  features = jnp.eye(mdp.num_states * mdp.num_actions).reshape(
      mdp.num_states, mdp.num_actions, -1)
  train = constrained.make_constrained_irl(features=features, radius=1.0, steps=2)
  with pytest.raises(ValueError, match="no constraints"):
    train(jax.random.key(0), mdp, jnp.zeros((mdp.num_states, mdp.num_actions)))


def test_unconstrained_transfer_regret_has_one_violation_per_constraint(cmdp):
  _, violation = constrained.transfer_regret(cmdp.reward, cmdp.reward, cmdp, temperature=0.5,
                                             constrained=False)
  assert violation.shape == (cmdp.costs.shape[-1],)
  np.testing.assert_array_equal(violation, 0.0)


def test_distances_on_constructed_rewards(cmdp):
  rng = np.random.default_rng(0)
  r_e = np.asarray(cmdp.reward, float)
  phi = rng.normal(size=cmdp.num_states)
  p, gamma = np.asarray(cmdp.transitions, float), float(cmdp.discount)
  shaped = r_e + gamma * p @ phi - phi[:, None] + 0.7
  assert float(constrained.distance_to_constant_class(r_e + 3.0, r_e)) < 1e-5
  assert float(constrained.distance_to_constant_class(shaped, r_e)) > 0.5
  dist, fit_phi, c = constrained.shaping_residual(jnp.asarray(shaped), jnp.asarray(r_e), cmdp)
  assert float(dist) < 1e-4
  # Φ is determined up to a constant k (which moves c by −(γ − 1)k).
  k = np.mean(np.asarray(fit_phi) - phi)
  np.testing.assert_allclose(np.asarray(fit_phi) - k, phi, atol=1e-3)
  np.testing.assert_allclose(float(c) + (gamma - 1) * k, 0.7, atol=1e-3)
  noisy = r_e + rng.normal(size=r_e.shape)
  assert float(constrained.distance_to_shaping_class(jnp.asarray(noisy), cmdp.reward, cmdp)) > 0.5
  # Constraint costs as extra directions: r_E − 2Ψ_0 is in the extended class only.
  moved = cmdp.reward - 2.0 * cmdp.costs[..., 0]
  assert float(constrained.distance_to_shaping_class(moved, cmdp.reward, cmdp)) > 0.5
  assert float(constrained.distance_to_shaping_class(
      moved, cmdp.reward, cmdp, extra_basis=cmdp.costs)) < 1e-4


def test_shaping_transfers_under_the_same_dynamics_but_not_new_ones():
  with jax.enable_x64(True):  # exact invariance: float32 round-off is ~1e-3 of J here
    mdp = envs.gridworld(4, slip=0.1, discount=0.9, dtype=jnp.float64)
    phi = jnp.linspace(-2.0, 3.0, mdp.num_states)
    shaped = mdp.reward + mdp.discount * mdp.transitions @ phi - phi[:, None]
    same, _ = constrained.transfer_regret(shaped, mdp.reward, mdp, temperature=0.1,
                                          constrained=False)
    assert abs(float(same)) < 1e-7
    windy = envs.gridworld(4, slip=0.4, discount=0.9, wind=(-1, 0, 0.3), dtype=jnp.float64)
    moved, _ = constrained.transfer_regret(shaped, mdp.reward, windy, temperature=0.1,
                                           constrained=False)
    assert float(moved) > 0.1


def test_constrained_irl_recovers_an_identified_reward():
  mdp = envs.constrained_gridworld(5, slip=0.1, discount=0.8, budgets=(0.05, 0.05))
  expert = constrained.constrained_soft_solve(mdp.reward, mdp, temperature=0.2, steps=2000,
                                              dual_lr=5.0)
  ring = envs.boundary_states(5)
  feats = jnp.asarray(np.repeat(np.eye(mdp.num_states)[:, None, ring], 4, 1), jnp.float32)
  train = constrained.make_constrained_irl(features=feats, radius=20.0, steps=1500,
                                           optimizer=optax.adam(0.05), temperature=0.2,
                                           dual_steps=10, dual_lr=5.0)
  w, log = jax.jit(train)(None, mdp, expert.occupancy)
  assert float(log["occupancy_error"][-1]) < 0.05 * float(log["occupancy_error"][0])
  r = feats @ w
  err = constrained.distance_to_constant_class(r, mdp.reward)
  base = constrained.distance_to_constant_class(jnp.zeros_like(r), mdp.reward)
  assert float(err) < 0.2 * float(base)
