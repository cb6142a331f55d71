"""Tests for `irl_jax.tabular.irl`: MCE IRL gradients, reward shaping, IQ-Learn and
behaviour cloning, against float64 NumPy references and autodiff identities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from jax.flatten_util import ravel_pytree
from references import jitted

from irl_jax.tabular import dp, irl
from irl_jax.tabular.mdp import TabularMDP, make_mdp

S, A, F, ALPHA, GAMMA, HORIZON = 5, 3, 4, 0.5, 0.9, 7


@pytest.fixture(autouse=True)
def x64():
  """Float64 for every test here; the context manager restores the previous value."""
  with jax.enable_x64(True):
    yield


def _problem(seed, gamma=GAMMA):
  """A random MDP with features, a reward and an expert (a random stochastic
  policy, time-varying for the finite horizon, not soft-optimal for anything)."""
  p, nu0 = ref.random_mdp(seed, S, A)
  rng = np.random.default_rng(seed)
  phi = rng.normal(size=(S, A, F))
  mdp = make_mdp(p, nu0, gamma, features=phi)
  reward = rng.normal(size=(S, A))
  expert = ref.random_policy(seed, S, A)
  expert_t = ref.random_policy(seed + 1, S, A, horizon=HORIZON)
  return mdp, p, nu0, phi, reward, expert, expert_t


def _expert_occupancies(p, nu0, gamma, expert, expert_t, horizon):
  """`(ρ_E[S, A] for the loss, ρ_E for the log-likelihood)`: the same array when
  discounted, the sum over steps and the per-step `[T, S, A]` with a horizon."""
  if horizon is None:
    rho = ref.occupancy(expert, p, nu0, gamma)
    return rho, rho
  rho_t = ref.finite_occupancy(expert_t, p, nu0, gamma, horizon, per_step=True)
  return rho_t.sum(0), rho_t


# ---------------------------------------------------------------------------
# MCE IRL: ∂L/∂r = (ρ_θ − ρ_E)/α = −∂⟨ρ_E, log π_r⟩/∂r.


def _unrolled_log_likelihood(reward, rho_e, p, gamma, alpha, iterations):
  """`⟨ρ_E, log π_r⟩` with soft VI written as a plain `lax.scan` of backups."""
  def backup(v, _):
    return alpha * jax.nn.logsumexp((reward + gamma * p @ v) / alpha, -1), None
  v, _ = jax.lax.scan(backup, jnp.zeros(p.shape[0], reward.dtype), None, length=iterations)
  q = reward + gamma * p @ v
  return jnp.sum(rho_e * jax.nn.log_softmax(q / alpha, -1))


def test_mce_gradient_equals_autodiff_through_scanned_soft_value_iteration():
  # The MCE gradient of the expert log-likelihood, (1/α)Φᵀ(ρ_E − ρ_θ), against
  # reverse-mode autodiff through 400 unrolled backups of a `lax.scan` soft VI
  # (γ^400 ≈ 5e-19, so the truncation is invisible in float64).
  mdp, p, nu0, phi, _, expert, _ = _problem(2)
  rho_e = ref.occupancy(expert, p, nu0, GAMMA)
  w = np.random.default_rng(2).normal(size=F)
  _, v_star, _ = ref.soft_value_iteration(phi @ w, p, GAMMA, ALPHA)

  @jax.jit
  def grads(w, init_v):
    g_scan = jax.grad(lambda w: _unrolled_log_likelihood(
        jnp.asarray(phi) @ w, jnp.asarray(rho_e), mdp.transitions, GAMMA, ALPHA, 400))(w)
    g_mce = jax.grad(lambda w: irl.mce_irl_loss(jnp.asarray(phi) @ w, jnp.asarray(rho_e), mdp,
                                                temperature=ALPHA, init_v=init_v)[0])(w)
    return g_scan, g_mce

  # Warm-started at the exact fixed point, the solve is exact to round-off and
  # so is the implicit gradient.
  g_scan, g_mce = grads(jnp.asarray(w), jnp.asarray(v_star))
  np.testing.assert_allclose(-np.asarray(g_mce), g_scan, rtol=0, atol=1e-10)
  # From a cold start the solve stops at max|ΔV| ≤ 1e-12·(1 + max|V|): |V − V*| ≤ b
  # and each π(a|s) is off by a relative ε ≤ e^{2b/α} − 1, which moves
  # ‖ρ_θ‖₁ by at most ε/(1 − γ)² and the gradient by max|Φ|/α times that.
  _, g_cold = grads(jnp.asarray(w), jnp.zeros(S))
  eps = np.expm1(2 * ref.soft_vi_error_bound(GAMMA, v_star, 1e-12) / ALPHA)
  bound = np.abs(phi).max() / ALPHA * eps * (1 + eps) / (1 - GAMMA) ** 2
  np.testing.assert_allclose(-np.asarray(g_cold), g_scan, rtol=0, atol=bound)


def _mlp(params, phi):
  h = jnp.tanh(phi @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def _mce_all(reward, w, params, phi, rho_e, rho_e_ll, mdp, horizon):
  """One compiled program per horizon for the MCE gradient tests: a reward table,
  a linear reward `Φw` and a small MLP reward `mlp_θ(Φ)`."""
  def loss(r):
    return irl.mce_irl_loss(r, rho_e, mdp, temperature=ALPHA, horizon=horizon)

  def ll(r):
    return irl.expert_log_likelihood(r, rho_e_ll, mdp, temperature=ALPHA, horizon=horizon)

  (value, extras), g_table = jax.value_and_grad(loss, has_aux=True)(reward)
  ll_value, g_ll = jax.value_and_grad(ll)(reward)
  (_, extras_w), g_w = jax.value_and_grad(lambda w: loss(phi @ w), has_aux=True)(w)
  (_, extras_mlp), g_mlp = jax.value_and_grad(lambda p: loss(_mlp(p, phi)), has_aux=True)(params)
  return dict(value=value, extras=extras, g_table=g_table, ll_value=ll_value, g_ll=g_ll,
              g_w=g_w, rho_w=extras_w.occupancy, g_mlp=g_mlp, rho_mlp=extras_mlp.occupancy,
              jacobian=jax.jacobian(_mlp)(params, phi))     # leaves [S, A, *shape]


def _mce_inputs(seed, horizon):
  mdp, p, nu0, phi, reward, expert, expert_t = _problem(seed)
  rho_e, rho_e_ll = _expert_occupancies(p, nu0, GAMMA, expert, expert_t, horizon)
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(size=(F, 8)), "b1": rng.normal(size=8) / 3,
            "w2": rng.normal(size=8) / 3, "b2": np.zeros(())}
  return reward, rng.normal(size=F), params, phi, rho_e, rho_e_ll, mdp


@functools.cache
def _mce_case(horizon):
  """Inputs and outputs shared by the MCE gradient tests (computed once per horizon)."""
  inputs = _mce_inputs(1, horizon)
  args = (*jax.tree_util.tree_map(jnp.asarray, inputs[:-1]), inputs[-1])
  out = jax.device_get(jitted(_mce_all, horizon=horizon)(*args))
  return inputs, out


@pytest.mark.parametrize("horizon", [None, HORIZON])
def test_mce_gradient_is_occupancy_mismatch_and_log_likelihood_gradient(horizon):
  (reward, _, _, _, rho_e, rho_e_ll, mdp), out = _mce_case(horizon)
  p, nu0 = np.asarray(mdp.transitions), np.asarray(mdp.initial)
  extras = out["extras"]
  rho_theta = extras.occupancy
  assert out["g_table"].dtype == np.float64
  # ∂L/∂r = (ρ_θ − ρ_E)/α.
  np.testing.assert_allclose(out["g_table"], (rho_theta - rho_e) / ALPHA, rtol=0, atol=1e-10)
  # Since ρ_E is an occupancy measure, L = −⟨ρ_E, log π_r⟩ and the gradients agree.
  np.testing.assert_allclose(out["g_table"], -out["g_ll"], rtol=0, atol=1e-10)
  # Equal at the exact fixed point; the stopping rule (tol 1e-12·(1 + |V|), through
  # γ/(1 − γ)) leaves ~1e-11 relative in the discounted case.
  np.testing.assert_allclose(out["value"], -out["ll_value"], rtol=1e-10)
  # The diagnostics: ρ_θ is the occupancy of the returned policy, the error its L1 gap.
  if horizon is None:
    _, v, pi = ref.soft_value_iteration(reward, p, GAMMA, ALPHA)
    np.testing.assert_allclose(rho_theta, ref.occupancy(extras.policy, p, nu0, GAMMA),
                               rtol=1e-10)
    b = ref.soft_vi_error_bound(GAMMA, v, 1e-12)
    np.testing.assert_allclose(extras.policy, pi, rtol=0, atol=np.expm1(2 * b / ALPHA))
    # ⟨ρ_E, log π⟩ against the reference policy.
    np.testing.assert_allclose(out["ll_value"], np.sum(rho_e * np.log(pi)), rtol=0,
                               atol=2 * b / ALPHA * rho_e.sum())
  else:
    _, _, pi = ref.finite_soft_value_iteration(reward, p, GAMMA, ALPHA, horizon)
    np.testing.assert_allclose(extras.policy, pi, atol=1e-13)
    np.testing.assert_allclose(rho_theta, ref.finite_occupancy(pi, p, nu0, GAMMA, horizon),
                               atol=1e-13)
    np.testing.assert_allclose(out["ll_value"], np.sum(rho_e_ll * np.log(pi)), rtol=1e-12)
  np.testing.assert_allclose(extras.occupancy_error, np.abs(rho_theta - rho_e).sum(),
                             rtol=1e-12)


@pytest.mark.parametrize("horizon", [None, HORIZON])
def test_linear_reward_gradient_is_feature_expectation_matching(horizon):
  (_, _, _, phi, rho_e, _, _), out = _mce_case(horizon)
  # Φᵀ(ρ_θ − ρ_E)/α: the mismatch of the feature expectations.
  mu_theta = np.einsum("saf,sa->f", phi, out["rho_w"])
  mu_e = np.einsum("saf,sa->f", phi, rho_e)
  assert np.max(np.abs(out["g_w"])) > 1e-2           # a non-trivial gradient
  np.testing.assert_allclose(out["g_w"], (mu_theta - mu_e) / ALPHA, rtol=0, atol=1e-10)


@pytest.mark.parametrize("horizon", [None, HORIZON])
def test_neural_reward_gradient_is_chain_rule(horizon):
  (_, _, _, _, rho_e, _, _), out = _mce_case(horizon)
  # Jᵀ(ρ_θ − ρ_E)/α with J = ∂r[S, A]/∂θ from jax.jacobian.
  mismatch = (out["rho_mlp"] - rho_e) / ALPHA
  want = jax.tree_util.tree_map(lambda j: np.tensordot(mismatch, j, axes=2), out["jacobian"])
  flat_g, _ = ravel_pytree(out["g_mlp"])
  flat_want, _ = ravel_pytree(want)
  assert np.max(np.abs(flat_g)) > 1e-2
  np.testing.assert_allclose(flat_g, flat_want, rtol=0, atol=1e-10)


def test_mce_irl_loss_is_the_dual_for_non_occupancies():
  # For any ρ_E (not necessarily an occupancy), L = (ν0ᵀV_r − ⟨ρ_E, r⟩)/α and
  # ∂L/∂r = (ρ_θ − ρ_E)/α still.
  reward, w, params, phi, _, _, mdp = _mce_inputs(5, None)
  p, nu0 = np.asarray(mdp.transitions), np.asarray(mdp.initial)
  rho_e = np.random.default_rng(5).random((S, A))
  args = jax.tree_util.tree_map(jnp.asarray, (reward, w, params, phi, rho_e, rho_e))
  out = jitted(_mce_all, horizon=None)(*args, mdp)
  _, v, _ = ref.soft_value_iteration(reward, p, GAMMA, ALPHA)
  b = ref.soft_vi_error_bound(GAMMA, v, 1e-12)
  np.testing.assert_allclose(out["value"], (nu0 @ v - np.sum(rho_e * reward)) / ALPHA, rtol=0,
                             atol=b / ALPHA)
  np.testing.assert_allclose(out["g_table"], (out["extras"].occupancy - rho_e) / ALPHA, rtol=0,
                             atol=1e-10)


def test_mce_inputs_are_checked():
  mdp, *_ = _problem(6)
  r = jnp.zeros((S, A))
  with pytest.raises(ValueError, match=rf"expert_occupancy.*\[{S}, {A}\].*\({S}, {A + 1}\)"):
    irl.mce_irl_loss(r, jnp.zeros((S, A + 1)), mdp)
  with pytest.raises(ValueError, match=rf"\(2, {S}, {A}\)"):
    irl.mce_irl_loss(r, jnp.zeros((2, S, A)), mdp, horizon=2)
  with pytest.raises(ValueError, match=rf"per step, \[T=3, S, A\].*\({S}, {A}\)"):
    irl.expert_log_likelihood(r, jnp.zeros((S, A)), mdp, horizon=3)
  with pytest.raises(ValueError, match=rf"per step, \[T=3, S, A\].*\(4, {S}, {A}\)"):
    irl.expert_log_likelihood(r, jnp.zeros((4, S, A)), mdp, horizon=3)
  with pytest.raises(ValueError, match=rf"\(3, {S}, {A}\)"):
    irl.expert_log_likelihood(r, jnp.zeros((3, S, A)), mdp)


# ---------------------------------------------------------------------------
# Potential-based shaping.


def _svi(r, mdp):
  return jitted(dp.soft_value_iteration, temperature=ALPHA)(jnp.asarray(r), mdp)


def test_shaping_preserves_the_soft_optimal_policy_under_the_same_dynamics():
  # With r' = r + γPΦ − Φ: Q' = Q − Φ(s) solves Q' = r' + γPV' with
  # V' = α·logsumexp(Q'/α) = V − Φ, so π' = exp((Q' − V')/α) = π.
  mdp, p, _, _, reward, _, _ = _problem(7)
  phi_s = np.random.default_rng(7).normal(size=S) * 3
  shaped = reward + GAMMA * p @ phi_s - phi_s[:, None]
  sol, sol_shaped = _svi(reward, mdp), _svi(shaped, mdp)
  _, v, _ = ref.soft_value_iteration(reward, p, GAMMA, ALPHA)
  _, v_shaped, _ = ref.soft_value_iteration(shaped, p, GAMMA, ALPHA)
  b = ref.soft_vi_error_bound(GAMMA, v, 1e-12) + ref.soft_vi_error_bound(GAMMA, v_shaped, 1e-12)
  np.testing.assert_allclose(sol_shaped.v, np.asarray(sol.v) - phi_s, rtol=0, atol=b)
  np.testing.assert_allclose(sol_shaped.q, np.asarray(sol.q) - phi_s[:, None], rtol=0, atol=b)
  np.testing.assert_allclose(sol_shaped.policy, sol.policy, rtol=0, atol=np.expm1(2 * b / ALPHA))


def test_finite_horizon_shaping_with_time_dependent_potential():
  # With Φ_T = 0 and r'_t = r + γPΦ_{t+1} − Φ_t: Q'_t = Q_t − Φ_t, π'_t = π_t.
  mdp, p, _, _, reward, _, _ = _problem(8)
  phi_t = np.random.default_rng(8).normal(size=(HORIZON + 1, S)) * 3
  phi_t[-1] = 0.0
  shaped = np.stack([reward + GAMMA * p @ phi_t[t + 1] - phi_t[t][:, None]
                     for t in range(HORIZON)])
  f = jitted(dp.finite_soft_value_iteration, temperature=ALPHA, horizon=HORIZON)
  sol, sol_shaped = f(jnp.asarray(reward), mdp), f(jnp.asarray(shaped), mdp)
  np.testing.assert_allclose(sol_shaped.q, np.asarray(sol.q) - phi_t[:-1, :, None], atol=1e-12)
  np.testing.assert_allclose(sol_shaped.policy, sol.policy, atol=1e-12)


def test_shaping_changes_the_policy_under_new_dynamics():
  # The shaping term γPΦ − Φ is tied to P; under P' ≠ P the shaped reward is a
  # different task (r' = r + γ(P − P')Φ + [γP'Φ − Φ], the bracket being the
  # shaping for P'), so its soft-optimal policy differs from r's.
  _, p, nu0, _, reward, _, _ = _problem(9)
  p_new, _ = ref.random_mdp(99, S, A)
  mdp_new = make_mdp(p_new, nu0, GAMMA)
  phi_s = np.random.default_rng(9).normal(size=S) * 3
  shaped_old = reward + GAMMA * p @ phi_s - phi_s[:, None]
  shaped_new = reward + GAMMA * p_new @ phi_s - phi_s[:, None]
  pi_r = np.asarray(_svi(reward, mdp_new).policy)
  pi_old = np.asarray(_svi(shaped_old, mdp_new).policy)
  pi_new = np.asarray(_svi(shaped_new, mdp_new).policy)
  assert np.max(np.abs(pi_old - pi_r)) > 0.05
  # Sanity: shaping for the new dynamics keeps the policy under them.
  np.testing.assert_allclose(pi_new, pi_r, atol=1e-8)
  # The reference agrees on the size of the change.
  _, _, ref_r = ref.soft_value_iteration(reward, p_new, GAMMA, ALPHA)
  _, _, ref_old = ref.soft_value_iteration(shaped_old, p_new, GAMMA, ALPHA)
  np.testing.assert_allclose(pi_old - pi_r, ref_old - ref_r, atol=1e-8)


# ---------------------------------------------------------------------------
# IQ-Learn.


def _transitions(seed, batch):
  rng = np.random.default_rng(seed)
  return (rng.integers(S, size=batch), rng.integers(A, size=batch), rng.integers(S, size=batch),
          rng.random(batch) < 0.3, rng.random(batch) < 0.8)


@pytest.mark.parametrize("chi2_coef, masked", [(0.5, False), (0.5, True), (7.0, True)])
def test_iq_learn_control_matches_reference(chi2_coef, masked):
  rng = np.random.default_rng(10)
  b = 40
  q_sa, v_s, v_next = rng.normal(size=(3, b)) * 2
  dones = rng.random(b) < 0.3
  discount_t = GAMMA * (1.0 - dones)
  where = rng.random(b) < 0.7 if masked else None
  loss, extras = jitted(irl.iq_learn_control, chi2_coef=chi2_coef)(
      jnp.asarray(q_sa), jnp.asarray(v_s), jnp.asarray(v_next), jnp.asarray(discount_t),
      where=None if where is None else jnp.asarray(where))
  want_loss, want_r, want_value = ref.iq_learn_per_transition(q_sa, v_s, v_next, discount_t,
                                                              chi2_coef, where)
  assert loss.shape == (b,) and loss.dtype == jnp.float64
  np.testing.assert_allclose(loss, want_loss, rtol=1e-14, atol=1e-14)
  np.testing.assert_allclose(extras.reward, want_r, rtol=1e-14, atol=1e-14)
  np.testing.assert_allclose(extras.value_term, want_value, rtol=1e-14, atol=1e-14)
  if masked:
    assert np.all(np.asarray(loss)[~where] == 0)
  # Done transitions do not bootstrap: r̂ = Q(s, a), value term V(s).
  if not masked:
    np.testing.assert_allclose(np.asarray(extras.reward)[dones], q_sa[dones], rtol=1e-15)


def test_iq_learn_control_dtypes_and_checks():
  x = jnp.ones(3, jnp.bfloat16)
  loss, extras = irl.iq_learn_control(x, x, x, x)
  assert loss.dtype == extras.reward.dtype == jnp.float32
  with pytest.raises(ValueError, match=r"\[\(3,\), \(3,\), \(4,\), \(3,\)\]"):
    irl.iq_learn_control(jnp.ones(3), jnp.ones(3), jnp.ones(4), jnp.ones(3))
  with pytest.raises(ValueError, match=r"\(3, 1\)"):
    irl.iq_learn_control(*(jnp.ones((3, 1)),) * 4)
  with pytest.raises(ValueError, match="chi2_coef must be > 0, got 0"):
    irl.iq_learn_control(*(jnp.ones(3),) * 4, chi2_coef=0)


@pytest.mark.parametrize("alpha, chi2_coef", [(ALPHA, 0.5), (1.0, 3.0)])
def test_tabular_iq_learn_loss_matches_reference(alpha, chi2_coef):
  q = np.random.default_rng(11).normal(size=(S, A)) * 2
  states, actions, next_states, dones, where = _transitions(11, 60)
  loss, extras = jitted(irl.tabular_iq_learn_loss, temperature=alpha, chi2_coef=chi2_coef)(
      jnp.asarray(q), states, actions, next_states, dones, discount=GAMMA, where=where)
  want_loss, want_r, want_value = ref.tabular_iq_learn(q, states, actions, next_states, dones,
                                                       GAMMA, alpha, chi2_coef, where)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-13, atol=1e-13)
  np.testing.assert_allclose(extras.reward, want_r, rtol=1e-13, atol=1e-13)
  np.testing.assert_allclose(extras.value_term, want_value, rtol=1e-13, atol=1e-13)
  # −r̂ + (V(s) − γ(1−d)V(s')) = V(s) − Q(s, a) = −α log softmax(Q/α)[a]: the
  # χ²-free part of the loss is α times the behaviour-cloning loss of Q/α.
  bc = jitted(irl.behaviour_cloning_loss)(jnp.asarray(q / alpha), states, actions, where=where)
  np.testing.assert_allclose(np.asarray(loss) - np.asarray(extras.reward) ** 2 / (4 * chi2_coef),
                             alpha * np.asarray(bc), rtol=1e-12, atol=1e-13)


def test_soft_values_and_behaviour_cloning_loss_match_reference():
  q = np.random.default_rng(12).normal(size=(S, A)) * 3
  np.testing.assert_allclose(irl.soft_values(jnp.asarray(q), temperature=ALPHA),
                             ref.soft_max(q, ALPHA), rtol=1e-14)
  assert irl.soft_values(jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.float32
  states, actions, _, _, where = _transitions(12, 30)
  nll = jitted(irl.behaviour_cloning_loss)(jnp.asarray(q), states, actions, where=where)
  want = -np.log(ref.softmax(q)[states, actions]) * where
  np.testing.assert_allclose(nll, want, rtol=1e-13, atol=1e-15)


def test_iq_learn_rewards_re_solve_to_the_same_q():
  # r(s, a) = Q(s, a) − γ Σ_s' P(s'|s, a) V_Q(s') with V_Q = α·logsumexp(Q/α)
  # makes Q = r + γPV_Q, with V_Q the soft max of Q: Q is the soft fixed point of
  # r, so soft value iteration on r gives back Q and softmax(Q/α).
  mdp, p, _, _, _, _, _ = _problem(13)
  q = np.random.default_rng(13).normal(size=(S, A)) * 2
  r = np.asarray(jitted(irl.iq_learn_rewards, temperature=ALPHA)(jnp.asarray(q), mdp))
  np.testing.assert_allclose(r, ref.iq_learn_rewards(q, p, GAMMA, ALPHA), rtol=1e-13,
                             atol=1e-13)
  sol = _svi(r, mdp)
  b = ref.soft_vi_error_bound(GAMMA, ref.soft_max(q, ALPHA), 1e-12)
  np.testing.assert_allclose(sol.q, q, rtol=0, atol=b)
  np.testing.assert_allclose(sol.policy, ref.softmax(q / ALPHA), rtol=0,
                             atol=np.expm1(2 * b / ALPHA))


def test_finite_mce_custom_gradient_matches_autodiff_for_every_input():
  """The finite-horizon custom VJP against plain autodiff through the scanned soft value
  iteration, for the reward, the expert occupancy, P, ν0 and γ (float64)."""
  horizon, alpha = 5, 0.7
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    s, a = 6, 3
    p = rng.random((s, a, s)) ** 3
    p /= p.sum(-1, keepdims=True)
    nu0 = rng.dirichlet(np.ones(s))
    r, r_e = rng.normal(size=(s, a)), rng.normal(size=(s, a))
    mdp = TabularMDP(jnp.asarray(p), jnp.asarray(nu0), jnp.asarray(0.85))
    expert = dp.finite_occupancy(
        dp.finite_soft_value_iteration(jnp.asarray(r_e), mdp, horizon=horizon,
                                       temperature=alpha).policy, mdp, horizon=horizon)

    def by_autodiff(r, e, p, nu0, g):
      sol = dp.finite_soft_value_iteration(r, TabularMDP(p, nu0, g), horizon=horizon,
                                           temperature=alpha)
      return (nu0 @ sol.v[0] - jnp.sum(e * r)) / alpha

    def by_library(r, e, p, nu0, g):
      return irl.mce_irl_loss(r, e, TabularMDP(p, nu0, g), horizon=horizon,
                              temperature=alpha)[0]

    args = (jnp.asarray(r), expert, mdp.transitions, mdp.initial, mdp.discount)
    np.testing.assert_allclose(by_library(*args), by_autodiff(*args), rtol=1e-13)
    want = jax.grad(by_autodiff, argnums=range(5))(*args)
    got = jax.grad(by_library, argnums=range(5))(*args)
    for name, w, g in zip(("reward", "expert", "P", "ν0", "γ"), want, got, strict=True):
      np.testing.assert_allclose(g, w, rtol=0, atol=1e-12, err_msg=name)


def test_infinite_horizon_and_traced_temperature_are_refused():
  mdp = TabularMDP(jnp.full((2, 1, 2), 0.5), jnp.array([1.0, 0.0]), jnp.asarray(1.0))
  with pytest.raises(ValueError, match="discount < 1"):
    irl.mce_irl_loss(jnp.zeros((2, 1)), jnp.zeros((2, 1)), mdp)
  ok = mdp._replace(discount=jnp.asarray(0.9))
  with pytest.raises(TypeError, match="Python number"):
    jax.vmap(lambda t: irl.mce_irl_loss(jnp.zeros((2, 1)), jnp.zeros((2, 1)), ok,
                                        temperature=t)[0])(jnp.array([0.5, 1.0]))
  with pytest.raises(ValueError, match="stationary"):
    irl.mce_irl_loss(jnp.zeros((3, 2, 1)), jnp.zeros((2, 1)), ok, horizon=3)
