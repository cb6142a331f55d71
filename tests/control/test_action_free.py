"""Action-free trajectories: state windows, the inverse-dynamics ensemble (fit, model
selection by validation NLL, proxy labels), the labelled/action-free split and the
relabelled datasets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import action_free as af
from irl_jax.control import data, envs

SPEC = envs.make("gymnax/Pendulum-v1").spec


def synthetic(num_episodes=20, length=40, seed=0, noise=0.01):
  """Episodes whose first state coordinate follows s₀' = 0.9 s₀ + 0.5 a (so the action
  is 2(s₀' − 0.9 s₀), and s₀ stays bounded), the others random; returns rise with the
  episode index (for the median split)."""
  rng = np.random.default_rng(seed)
  obs, act, nxt, rew = [], [], [], []
  for e in range(num_episodes):
    s = rng.normal(size=3).astype(np.float32)
    for _ in range(length):
      a = rng.uniform(-2, 2, size=1).astype(np.float32)
      s2 = np.array([0.9 * s[0] + 0.5 * a[0], rng.normal(), rng.normal()], np.float32)
      s2[0] += noise * rng.normal()
      obs.append(s)
      act.append(a)
      nxt.append(s2)
      rew.append(float(e))
      s = s2
  n = num_episodes * length
  last = np.zeros(n, bool)
  last[length - 1::length] = True
  return data.Episodes(np.array(obs), np.array(act), np.array(rew, np.float32),
                       np.zeros(n, bool), last, np.array(nxt), np.full(n, np.nan, np.float32),
                       np.arange(0, n, length), SPEC)


def test_windows_pad_with_the_first_state_of_each_episode():
  obs = np.arange(10, dtype=np.float32).reshape(5, 2)        # rows 0..4, two episodes
  nxt = obs + 100
  starts = np.array([0, 3])
  w0 = af.windows(obs, nxt, starts, 0)
  np.testing.assert_array_equal(w0, np.concatenate([obs, nxt], 1))
  w2 = af.windows(obs, nxt, starts, 2)
  assert w2.shape == (5, 8)
  # Row 1 (episode 0): s_{-1} -> s_0, s_0, s_1, s'_1.
  np.testing.assert_array_equal(w2[1], np.concatenate([obs[0], obs[0], obs[1], nxt[1]]))
  # Row 4 (episode 1, second step): s_2 -> episode start s_3, s_3, s_4, s'_4.
  np.testing.assert_array_equal(w2[4], np.concatenate([obs[3], obs[3], obs[4], nxt[4]]))
  # Row 2 (last of episode 0): s_0, s_1, s_2, s'_2.
  np.testing.assert_array_equal(w2[2], np.concatenate([obs[0], obs[1], obs[2], nxt[2]]))


@pytest.fixture(scope="module")
def fitted():
  episodes = synthetic(60, 40)
  idm = af.make_inverse_dynamics(af.InverseDynamicsConfig(
      context=0, ensemble=3, hidden=(32, 32), num_steps=2400, batch_size=128,
      learning_rate=3e-3, eval_every=100), SPEC)
  train_data, val = af.idm_data(episodes, jax.random.key(0), 0)
  state, metrics = jax.jit(idm.train)(jax.random.key(1), train_data, val)
  return episodes, idm, train_data, val, state, metrics


def test_inverse_dynamics_recovers_the_actions(fitted):
  _, idm, _, val, state, _ = fitted
  action, uncertainty = idm.predict(state, val.inputs)
  truth = np.asarray(val.action)
  err = np.abs(np.asarray(action) - truth)
  assert np.median(err) < 0.05, np.median(err)   # actions span [-2, 2]
  assert np.all(np.asarray(action) >= -2) and np.all(np.asarray(action) <= 2)
  assert uncertainty.shape == (len(truth),) and np.all(np.asarray(uncertainty) >= 0)


def test_model_selection_keeps_each_members_best_validation_nll(fitted):
  _, idm, _, val, state, metrics = fitted
  # The kept parameters' validation NLL, recomputed member by member, is best_nll ...
  for e in range(idm.config.ensemble):
    member = jax.tree.map(lambda x, e=e: x[e], state.params)
    v = float(jnp.mean(idm.nll(member, state.mean, state.std, val.inputs, val.action)))
    assert v == pytest.approx(float(state.best_nll[e]), rel=1e-4, abs=1e-4)
  # ... the running best is non-increasing and ends at the mean of the members' bests,
  # which is no worse than the last evaluation's.
  best = np.asarray(metrics["loss/val_best"])
  assert np.all(np.diff(best) <= 1e-6)
  assert best[-1] == pytest.approx(float(np.mean(state.best_nll)), rel=1e-5)
  assert best[-1] <= float(np.asarray(metrics["loss/val"])[-1]) + 1e-6
  assert np.all(np.asarray(state.best_step) % 100 == 0) and np.all(state.best_step >= 100)


def test_proxy_labels_are_the_clipped_ensemble_mean(fitted):
  _, idm, _, val, state, _ = fitted
  x = (val.inputs - state.mean) / state.std
  modes = []
  for e in range(idm.config.ensemble):
    member = jax.tree.map(lambda p, e=e: p[e], state.params)
    modes.append(np.asarray(_mode(idm, member, x)))
  want = np.clip(np.mean(modes, 0), -2, 2)
  got, unc = idm.predict(state, val.inputs)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(unc), np.std(modes, 0).mean(-1), rtol=1e-4, atol=1e-6)


def _mode(idm, member, x):
  # A one-member state predicts that member's deterministic action (its mean is itself).
  one = af.IDMState(jax.tree.map(lambda p: p[None], member), jnp.zeros(x.shape[1]),
                    jnp.ones(x.shape[1]), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  action, unc = idm.predict(one, x)
  assert float(jnp.max(unc)) == 0.0
  return action


def test_vmapped_seeds_equal_sequential_runs():
  episodes = synthetic(6, 20)
  idm = af.make_inverse_dynamics(dict(ensemble=2, hidden=(8,), num_steps=40, batch_size=16,
                                      eval_every=20), SPEC)
  train_data, val = af.idm_data(episodes, jax.random.key(0), 0)
  keys = jax.random.split(jax.random.key(3), 2)
  batched, _ = jax.jit(jax.vmap(idm.train, in_axes=(0, None, None)))(keys, train_data, val)
  for i in range(2):
    one, _ = jax.jit(idm.train)(keys[i], train_data, val)
    np.testing.assert_allclose(np.asarray(batched.best_nll[i]), np.asarray(one.best_nll),
                               rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(batched.params), jax.tree.leaves(one.params), strict=True):
      np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_split_labelled_draws_below_median_episodes():
  episodes = synthetic(30, 5)
  labelled, rest = af.split_labelled(episodes, jax.random.key(0), fraction=0.1)
  assert labelled.num_episodes == 3 and rest.num_episodes == 27
  returns = data.episode_returns(episodes)
  assert np.all(data.episode_returns(labelled) < np.median(returns))
  got = sorted(np.concatenate([data.episode_returns(labelled), data.episode_returns(rest)]))
  np.testing.assert_array_equal(got, sorted(returns))
  anywhere, _ = af.split_labelled(episodes, jax.random.key(0), fraction=0.5, below_median=False)
  assert anywhere.num_episodes == 15
  with pytest.raises(ValueError, match="only 15 are eligible"):
    af.split_labelled(episodes, jax.random.key(0), fraction=0.6)
  with pytest.raises(ValueError, match="fraction"):
    af.split_labelled(episodes, jax.random.key(0), fraction=1.0)


def test_label_and_combine(fitted):
  episodes, idm, _, _, state, _ = fitted
  labelled, rest = af.split_labelled(episodes, jax.random.key(1), fraction=0.1)
  proxy, uncertainty = af.label(idm, state, rest)
  assert proxy.num_steps == rest.num_steps and uncertainty.shape == (rest.num_steps,)
  np.testing.assert_array_equal(proxy.obs, rest.obs)
  np.testing.assert_array_equal(proxy.reward, rest.reward)
  assert np.all(np.isnan(proxy.log_prob))
  assert np.median(np.abs(proxy.action - rest.action)) < 0.05
  assert proxy.metadata["idm_context"] == 0
  both = af.combine(labelled, proxy)
  assert both.num_episodes == episodes.num_episodes
  np.testing.assert_array_equal(both.action[:labelled.num_steps], labelled.action)
  other = data.Episodes(*(getattr(labelled, f) for f in (
      "obs", "action", "reward", "terminated", "truncated", "next_obs", "log_prob",
      "episode_starts")), spec=SPEC._replace(name="other"))
  with pytest.raises(ValueError, match="part 1 is for other"):
    data.concatenate([labelled, other])


def test_bad_settings_and_data_raise_clearly():
  with pytest.raises(ValueError, match="multiple of eval_every"):
    af.InverseDynamicsConfig(num_steps=1000, eval_every=300)
  with pytest.raises(ValueError, match="context"):
    af.InverseDynamicsConfig(context=-1)
  with pytest.raises(ValueError, match="ensemble"):
    af.InverseDynamicsConfig(ensemble=0)
  with pytest.raises(ValueError, match="discrete"):
    af.make_inverse_dynamics(None, envs.make("gymnax/CartPole-v1").spec)
  idm = af.make_inverse_dynamics(dict(context=1, num_steps=10, eval_every=10), SPEC)
  train_data, val = af.idm_data(synthetic(4, 5), jax.random.key(0), 0)   # context 0 windows
  with pytest.raises(ValueError, match=r"train.inputs must be \[N, 9\]"):
    idm.train(jax.random.key(0), train_data, val)
  with pytest.raises(ValueError, match="at least 2 labelled episodes"):
    af.idm_data(synthetic(1, 5), jax.random.key(0), 0)
