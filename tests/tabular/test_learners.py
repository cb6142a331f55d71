"""Tests for `irl_jax.tabular.learners`: MCE IRL, IQ-Learn and behaviour cloning
trained end to end on small MDPs, and their seed-vmapped forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import references as ref
from references import jitted

from irl_jax.tabular import dp, irl, learners
from irl_jax.tabular.mdp import make_mdp

ALPHA, GAMMA = 0.5, 0.9


@pytest.fixture(autouse=True)
def x64():
  """Float64 for every test here; the context manager restores the previous value."""
  with jax.enable_x64(True):
    yield


# ---------------------------------------------------------------------------
# Helpers.


def test_transitions_from_flattens_and_marks_terminal_steps():
  states = np.array([[0, 1, 2], [2, 3, 3]])
  actions = np.array([[1, 0, 1], [0, 0, 1]])
  next_states = np.array([[1, 2, 3], [3, 3, 0]])
  traj = dp.Trajectories(*(jnp.asarray(x, jnp.int32) for x in (states, actions, next_states)))
  where = np.array([[True, True, False], [True, True, True]])
  tr = learners.transitions_from(traj, terminal=np.array([False, False, False, True]),
                                 where=where)
  np.testing.assert_array_equal(tr.states, states.reshape(-1))
  np.testing.assert_array_equal(tr.actions, actions.reshape(-1))
  np.testing.assert_array_equal(tr.next_states, next_states.reshape(-1))
  np.testing.assert_array_equal(tr.dones, next_states.reshape(-1) == 3)
  np.testing.assert_array_equal(tr.where, where.reshape(-1))
  plain = learners.transitions_from(traj)
  assert not np.any(plain.dones) and np.all(plain.where)
  assert plain.dones.dtype == plain.where.dtype == jnp.bool_


def test_linear_reward():
  phi = np.random.default_rng(0).normal(size=(3, 2, 4))
  w = np.arange(4.0)
  np.testing.assert_allclose(learners.linear_reward(jnp.asarray(phi))(jnp.asarray(w)), phi @ w,
                             rtol=1e-14)


# ---------------------------------------------------------------------------
# MCE IRL.

S, A, F = 5, 3, 4


def _mce_problem():
  """A random MDP whose true reward is linear in random features, and the exact
  occupancy of its soft-optimal (expert) policy."""
  p, nu0 = ref.random_mdp(100, S, A)
  rng = np.random.default_rng(100)
  phi = rng.normal(size=(S, A, F))
  w_true = rng.normal(size=F)
  _, _, expert = ref.soft_value_iteration(phi @ w_true, p, GAMMA, ALPHA)
  return make_mdp(p, nu0, GAMMA, features=phi), p, phi, expert, ref.occupancy(expert, p, nu0,
                                                                              GAMMA)


def test_mce_irl_recovers_the_expert_and_vmaps_over_seeds():
  mdp, p, phi, expert, rho_e = _mce_problem()
  steps = 300
  train = learners.make_mce_irl(
      reward_fn=learners.linear_reward(mdp.features),
      init_fn=lambda key: 0.1 * jax.random.normal(key, (F,)),
      optimizer=optax.sgd(0.05, momentum=0.9), steps=steps, temperature=ALPHA)
  keys = jax.random.split(jax.random.key(0), 3)
  params, log = jax.jit(jax.vmap(train, in_axes=(0, None, None)))(keys, mdp, jnp.asarray(rho_e))
  assert params.shape == (3, F)
  assert log["loss"].shape == log["occupancy_error"].shape == (3, steps)
  errors = np.asarray(log["occupancy_error"])
  # The occupancy error falls by more than three orders of magnitude (from ~10)
  # and the loss decreases.
  assert np.all(errors[:, 0] > 1.0)
  assert np.all(errors[:, -1] < 1e-3 * errors[:, 0]), errors[:, [0, -1]]
  assert np.all(np.asarray(log["loss"])[:, -1] < np.asarray(log["loss"])[:, 0])
  for i in range(3):
    _, _, learned = ref.soft_value_iteration(phi @ np.asarray(params[i]), p, GAMMA, ALPHA)
    np.testing.assert_allclose(learned, expert, rtol=0, atol=1e-3)
  # vmap over seeds computes what separate runs compute. (A vmapped while_loop
  # runs until every member stops, so a member may take extra backups: the runs
  # agree to the solver's tolerance, not bit for bit.)
  single = jax.jit(train)
  for i in range(3):
    params_i, log_i = single(keys[i], mdp, jnp.asarray(rho_e))
    np.testing.assert_allclose(params_i, params[i], rtol=0, atol=1e-8)
    np.testing.assert_allclose(log_i["occupancy_error"], log["occupancy_error"][i], rtol=0,
                               atol=1e-8)
    np.testing.assert_allclose(log_i["loss"], log["loss"][i], rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------
# IQ-Learn.

# The same sampler settings as test_dp (one compilation for both).
NUM_S, NUM_A, HORIZON, NUM_TRAJ = 4, 2, 10, 20_000


def test_iq_learn_recovers_the_expert_policy():
  p, nu0 = ref.random_mdp(200, NUM_S, NUM_A)
  mdp = make_mdp(p, nu0, GAMMA)
  r_true = np.random.default_rng(200).normal(size=(NUM_S, NUM_A))
  _, _, expert = ref.soft_value_iteration(r_true, p, GAMMA, ALPHA)
  traj = jitted(dp.sample_trajectories, horizon=HORIZON, num_trajectories=NUM_TRAJ)(
      jax.random.key(0), jnp.asarray(expert), mdp)
  # 2 000 trajectories, 20 000 transitions.
  tr = learners.transitions_from(dp.Trajectories(*(x[:2000] for x in traj)))
  counts = np.zeros((NUM_S, NUM_A))
  np.add.at(counts, (np.asarray(tr.states), np.asarray(tr.actions)), 1)
  visits = counts.sum(1)
  assert np.all(visits > 1000)
  freq = counts / visits[:, None]

  train = learners.make_iq_learn(num_states=NUM_S, num_actions=NUM_A,
                                 optimizer=optax.adam(0.1), steps=500, temperature=ALPHA,
                                 chi2_coef=100.0)
  q, log = jax.jit(train)(jax.random.key(1), mdp, tr)
  assert q.shape == (NUM_S, NUM_A) and log["loss"].shape == (500,)
  learned = ref.softmax(np.asarray(q) / ALPHA)
  # With c = 100 the χ² term (r̂²/(4c)) barely pulls: the loss is α times the
  # behaviour-cloning loss of Q/α plus that small term (see test_irl), so
  # softmax(Q/α) lands within ~1e-3 of the empirical action frequencies ...
  np.testing.assert_allclose(learned, freq, rtol=0, atol=2e-3)
  # ... which are within 5 standard errors √(π(1−π)/n_s) of the expert policy.
  tol = 5 * np.sqrt(expert * (1 - expert) / visits[:, None]) + 2e-3
  assert np.all(np.abs(learned - expert) <= tol), (learned, expert, tol)
  np.testing.assert_array_equal(np.argmax(np.asarray(q), 1), np.argmax(expert, 1))

  # The implied reward, re-solved under the true dynamics, gives back softmax(Q/α).
  reward = jitted(irl.iq_learn_rewards, temperature=ALPHA)(q, mdp)
  sol = jitted(dp.soft_value_iteration, temperature=ALPHA)(reward, mdp)
  b = ref.soft_vi_error_bound(GAMMA, ref.soft_max(np.asarray(q), ALPHA), 1e-12)
  np.testing.assert_allclose(sol.q, q, rtol=0, atol=b)
  np.testing.assert_allclose(sol.policy, learned, rtol=0, atol=np.expm1(2 * b / ALPHA))


@pytest.mark.parametrize("value_term", ["expert", "initial"])
def test_iq_learn_first_loss_matches_reference(value_term):
  # With one step, log["loss"][0] is the loss at the initial table
  # Q_0 = init_scale·N(0, 1) drawn from the key.
  rng = np.random.default_rng(300)
  b, chi2_coef, init_scale = 50, 0.5, 0.7
  p, nu0 = ref.random_mdp(300, NUM_S, NUM_A)
  mdp = make_mdp(p, nu0, GAMMA)
  tr = learners.Transitions(*(jnp.asarray(x) for x in (
      rng.integers(NUM_S, size=b), rng.integers(NUM_A, size=b), rng.integers(NUM_S, size=b),
      rng.random(b) < 0.2, rng.random(b) < 0.8)))
  train = learners.make_iq_learn(num_states=NUM_S, num_actions=NUM_A, optimizer=optax.sgd(0.1),
                                 steps=1, temperature=ALPHA, chi2_coef=chi2_coef,
                                 value_term=value_term, init_scale=init_scale)
  key = jax.random.key(5)
  _, log = jax.jit(train)(key, mdp, tr)
  q0 = init_scale * np.asarray(jax.random.normal(key, (NUM_S, NUM_A)))
  where = np.asarray(tr.where)
  loss, _, value = ref.tabular_iq_learn(q0, np.asarray(tr.states), np.asarray(tr.actions),
                                        np.asarray(tr.next_states), np.asarray(tr.dones), GAMMA,
                                        ALPHA, chi2_coef, where)
  if value_term == "expert":
    want = loss.sum() / where.sum()
  else:   # (1 − γ)·E_{ν0}[V(s_0)] replaces the expert-state value term.
    want = (loss - value).sum() / where.sum() + (1 - GAMMA) * nu0 @ ref.soft_max(q0, ALPHA)
  np.testing.assert_allclose(log["loss"][0], want, rtol=1e-12)


def test_make_iq_learn_rejects_unknown_value_term():
  with pytest.raises(ValueError, match="'policy'"):
    learners.make_iq_learn(num_states=2, num_actions=2, optimizer=optax.sgd(0.1), steps=1,
                           value_term="policy")


# ---------------------------------------------------------------------------
# Behaviour cloning.


def test_behaviour_cloning_fits_empirical_frequencies_and_leaves_unseen_uniform():
  num_states, num_actions = 4, 3
  pairs = ([(0, 0)] * 5 + [(0, 1)] * 3 + [(0, 2)] * 2     # state 0: 0.5, 0.3, 0.2
           + [(2, 1)] * 6 + [(2, 2)] * 2)                 # state 2: 0, 0.75, 0.25
  padding = [(0, 2)] * 7 + [(1, 0)] * 4                   # masked: ignored
  states, actions = (np.array(x) for x in zip(*(pairs + padding), strict=True))
  where = np.arange(len(states)) < len(pairs)
  tr = learners.Transitions(jnp.asarray(states), jnp.asarray(actions), jnp.asarray(states),
                            jnp.zeros(len(states), bool), jnp.asarray(where))
  train = learners.make_behaviour_cloning(num_states=num_states, num_actions=num_actions,
                                          optimizer=optax.adam(0.1), steps=600)
  logits, log = jax.jit(train)(jax.random.key(0), tr)
  assert logits.shape == (num_states, num_actions) and log["loss"].shape == (600,)
  probs = ref.softmax(np.asarray(logits))
  np.testing.assert_allclose(probs[0], [0.5, 0.3, 0.2], atol=1e-3)
  np.testing.assert_allclose(probs[2, 1:], [0.75, 0.25], atol=1e-3)
  assert probs[2, 0] < 1e-3                    # never demonstrated there
  # States 1 (only padding) and 3 (never seen) get exactly zero gradient.
  np.testing.assert_array_equal(np.asarray(logits)[[1, 3]], 0.0)
  np.testing.assert_allclose(probs[[1, 3]], 1 / num_actions, rtol=1e-15)
  # The final loss is the empirical conditional entropy (the optimum) to ~1e-3.
  entropy = -(5 * np.log(0.5) + 3 * np.log(0.3) + 2 * np.log(0.2)
              + 6 * np.log(0.75) + 2 * np.log(0.25)) / len(pairs)
  assert abs(float(log["loss"][-1]) - entropy) < 2e-3
