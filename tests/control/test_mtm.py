"""Masked Trajectory Models (`irl_jax.control.mtm`): the masks against numpy references
written from the rule, returns-to-go by hand, the heteromodal zero-gradient property,
masking of hidden inputs, a small overfit of linear inverse dynamics, config errors,
the rolling-window policy, and jit + vmap over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import data, envs, mtm
from irl_jax.control.envs import ActionSpec, EnvSpec

L = 6
SPEC = EnvSpec("synthetic", (2,), ActionSpec(False, (1,), None, np.array([-1.0], np.float32),
                                             np.array([1.0], np.float32)), 40)
SMALL = dict(segment_length=L, width=16, depth=1, heads=2, mlp_ratio=2, batch_size=16,
             return_scale=0.1)
SMALL_CONFIG = mtm.MTMConfig(**SMALL)


def linear_episodes(num_episodes=8, length=40, seed=0, lengths=None) -> data.Episodes:
  """Deterministic linear dynamics `s' = 0.9 s + B a`, random actions in [−1, 1], reward
  `−s_0²`: the action is a linear function of `(s_t, s_{t+1})`."""
  rng = np.random.default_rng(seed)
  lengths = lengths or [length] * num_episodes
  obs, action, nxt, reward = [], [], [], []
  b = np.array([0.5, -0.3], np.float32)
  for n in lengths:
    s = rng.normal(size=2).astype(np.float32)
    for _ in range(n):
      a = rng.uniform(-1, 1, size=1).astype(np.float32)
      s2 = (0.9 * s + b * a[0]).astype(np.float32)
      obs.append(s)
      action.append(a)
      nxt.append(s2)
      reward.append(-float(s[0]) ** 2)
      s = s2
  ends = np.cumsum(lengths) - 1
  truncated = np.zeros(sum(lengths), bool)
  truncated[ends] = True
  return data.Episodes(np.array(obs), np.array(action), np.array(reward, np.float32),
                       np.zeros(sum(lengths), bool), truncated, np.array(nxt),
                       np.full(sum(lengths), np.nan, np.float32),
                       np.concatenate([[0], ends[:-1] + 1]), SPEC)


# --- masks ------------------------------------------------------------------------------


def reference_mask(n, rank, t, modality, length):
  """The rule, with loops: per modality the `n` positions of lowest rank are visible;
  then modalities before `m*` keep positions `≤ t`, `m*` and later ones `< t`."""
  out = np.zeros((length, 3), bool)
  for m in range(3):
    for p in range(length):
      keep = p <= t if m < modality else p < t
      out[p, m] = rank[p, m] < n and keep
  return out


def test_random_autoregressive_mask_matches_numpy_reference():
  f = jax.jit(lambda k: (mtm.random_autoregressive_mask(k, 10),
                         mtm._mask_draws(k, 10, mtm.MASK_RATIOS, mtm.MODALITY_PROBS)))
  allowed = {int(np.floor(r * 10 + 1e-9)) for r in mtm.MASK_RATIOS}
  assert allowed == {5, 6, 7, 8, 9, 10}
  for i in range(200):
    mask, (n, rank, t, modality) = jax.device_get(f(jax.random.key(i)))
    assert int(n) in allowed
    assert sorted(rank[:, 0]) == list(range(10))          # a permutation per modality
    np.testing.assert_array_equal(mask, reference_mask(int(n), rank, int(t), int(modality), 10))


def test_random_autoregressive_mask_is_the_cut_when_everything_is_kept():
  """With ρ = 1 the mask is exactly the cut: column counts `(t+1, t+1, t)` mean `m*` =
  actions, `(t+1, t, t)` returns, `(t, t, t)` states. The drawn `m*` follow
  (0.2, 0.1, 0.7) and `t` is uniform."""
  length, num = 8, 3000
  masks = np.asarray(jax.jit(jax.vmap(lambda k: mtm.random_autoregressive_mask(
      k, length, mask_ratios=(1.0,))))(jax.random.split(jax.random.key(0), num)))
  counts = masks.sum(axis=1)                                           # [num, 3]
  stars, ts = [], []
  for mask, c in zip(masks, counts, strict=True):
    t = c[2]
    star = 2 if c[1] == t + 1 else 1 if c[0] == t + 1 else 0
    assert tuple(c) == tuple(t + 1 if m < star else t for m in range(3))
    np.testing.assert_array_equal(mask, reference_mask(length, np.zeros((length, 3)), t, star,
                                                       length))
    stars.append(star)
    ts.append(t)
  freq = np.bincount(stars, minlength=3) / num
  np.testing.assert_allclose(freq, mtm.MODALITY_PROBS, atol=0.03)
  np.testing.assert_allclose(np.bincount(ts, minlength=length) / num, 1 / length, atol=0.03)


def test_random_part_keeps_floor_rho_l_per_modality():
  # ρ = 0.5 of L = 7: floor(3.5) = 3 random positions per modality, before the cut.
  masks = np.asarray(jax.jit(jax.vmap(lambda k: mtm.random_autoregressive_mask(
      k, 7, mask_ratios=(0.5,), modality_probs=(0.0, 0.0, 1.0))))(
          jax.random.split(jax.random.key(1), 500)))
  counts = masks.sum(axis=1)
  assert counts.max() == 3 and counts.min() == 0


def test_inference_masks_by_hand():
  t, x, o = 1, True, False
  expected = {   # rows: positions 0..3; columns: states, returns, actions
      "inverse_dynamics": [[x, o, x], [x, o, o], [x, o, o], [x, o, o]],
      "forward_dynamics": [[x, o, x], [x, o, x], [o, o, o], [o, o, o]],
      "bc": [[x, o, x], [x, o, o], [o, o, o], [o, o, o]],
      "rcbc": [[x, x, x], [x, x, o], [o, o, o], [o, o, o]],
      "goal_reaching": [[x, o, x], [x, o, o], [o, o, o], [x, o, o]]}
  for index, (mode, mask) in enumerate(expected.items()):
    np.testing.assert_array_equal(mtm.inference_mask(mode, 4, t), np.array(mask))
    traced = jax.jit(lambda i, tt: mtm.inference_mask(i, 4, tt))(index, t)
    np.testing.assert_array_equal(traced, np.array(mask))
  with pytest.raises(ValueError, match="unknown MTM mode"):
    mtm.inference_mask("planning", 4, t)


def test_train_mask_uses_the_modes_fixed_mask():
  draw = jax.jit(jax.vmap(lambda k, task: mtm.train_mask(k, L, task), in_axes=(0, None)))
  for task, mode in enumerate(mtm.MODES, start=1):
    for mask in np.asarray(draw(jax.random.split(jax.random.key(task), 20), task)):
      matches = [t for t in range(L)
                 if np.array_equal(mask, np.asarray(mtm.inference_mask(mode, L, t)))]
      assert matches, mode
      if mode == "forward_dynamics":
        assert max(matches) <= L - 2


# --- data -------------------------------------------------------------------------------


def test_returns_to_go_by_hand():
  rewards = np.array([[1.0, 2.0, 3.0, 7.0], [4.0, 5.0, 9.0, 9.0]])
  np.testing.assert_allclose(mtm.returns_to_go(rewards, [3, 2]),
                             [[6.0, 5.0, 3.0, 0.0], [9.0, 5.0, 0.0, 0.0]])
  episodes = linear_episodes(lengths=[3, 5])
  trajs = mtm.trajectories(episodes, SMALL_CONFIG)
  r = episodes.reward
  np.testing.assert_allclose(trajs.returns[0, :4], 0.1 * np.array([r[0] + r[1] + r[2],
                                                                   r[1] + r[2], r[2], 0.0]),
                             rtol=1e-5)
  np.testing.assert_allclose(trajs.returns[1, 0], 0.1 * r[3:8].sum(), rtol=1e-5)
  assert trajs.states.shape == (2, 5 + L, 2) and list(trajs.lengths) == [3, 5]


def test_segments_mark_padding_and_respect_weights():
  episodes = linear_episodes(lengths=[3, 40, 40])
  trajs = mtm.trajectories(episodes, SMALL_CONFIG, weight=[1.0, 1.0, 0.0])
  seg = mtm.sample_segments(trajs, jax.random.key(0), 400, L)
  valid = np.asarray(seg.valid)
  short = valid.sum(axis=1) == 3                 # the 3-step episode: padded past its end
  assert short.any() and (~short).any()
  np.testing.assert_array_equal(valid[short], np.tile(np.arange(L) < 3, (short.sum(), 1)))
  assert valid[~short].all()
  # Episode 2 (weight 0) is never drawn: every full segment's states are rows of episode 1.
  ep1 = np.asarray(trajs.states[1, :40])
  for s in np.asarray(seg.states)[~short][:50]:
    assert any(np.array_equal(s, ep1[i:i + L]) for i in range(40 - L + 1))


# --- the model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
  learner = mtm.make_mtm(mtm.MTMConfig(num_steps=5, **SMALL), SPEC)
  trajs = mtm.trajectories(linear_episodes(), SMALL_CONFIG)
  return learner, trajs, learner.init(jax.random.key(0), trajs)


def _grad_fn(learner, state):
  """Jitted `(segments, mask) -> gradients` of the loss, masks restricted to what exists."""
  return jax.jit(lambda seg, mask: jax.grad(lambda p: learner.loss(
      p, state.obs_norm, seg, mtm.visible_tokens(mask, seg))[0])(state.params))


def _masks(key, n):
  return jax.vmap(lambda k: mtm.random_autoregressive_mask(k, L))(jax.random.split(key, n))


def test_action_free_segments_give_exactly_zero_action_gradients(small):
  learner, trajs, state = small
  grads = _grad_fn(learner, state)
  seg = learner.sample(jax.random.key(1), trajs)
  masks = _masks(jax.random.key(2), seg.valid.shape[0])
  free = seg._replace(has_actions=jnp.zeros_like(seg.has_actions),
                      actions=jnp.full_like(seg.actions, jnp.nan))     # never read
  g = grads(free, masks)
  for part in (g["heads"][2], g["embed"][2]):
    for leaf in jax.tree.leaves(part):
      assert np.all(np.asarray(leaf) == 0.0)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
  assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(g["heads"][0]))
  # With actions, the same batch does train the action head.
  g_with = grads(seg, masks)
  assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(g_with["heads"][2]))

  # Mixed batches: the action head's gradient with 6 segments with actions and 10
  # action-free ones equals its gradient when the 10 are padding altogether (the
  # action average runs over the remaining tokens only).
  has = jnp.arange(seg.valid.shape[0]) < 6
  mixed = seg._replace(has_actions=has)
  padded = mixed._replace(valid=jnp.logical_and(mixed.valid, has[:, None]))
  for a, b in zip(jax.tree.leaves(grads(mixed, masks)["heads"][2]),
                  jax.tree.leaves(grads(padded, masks)["heads"][2]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_hidden_tokens_do_not_change_predictions(small):
  learner, trajs, state = small
  seg = jax.tree.map(lambda x: x[0], learner.sample(jax.random.key(5), trajs))
  t = 2
  changed = seg._replace(actions=seg.actions.at[t:].set(0.7),
                         returns=seg.returns + 5.0,
                         states=seg.states.at[t + 1:].set(3.0))
  pred = lambda mode: jax.jit(lambda x: mtm.predict(learner, state, x, mode, t))
  bc, rcbc = pred("bc"), pred("rcbc")
  a = bc(seg)
  np.testing.assert_array_equal(a, bc(changed))
  assert a.shape == (1,)
  assert pred("forward_dynamics")(seg).shape == (2,)
  # Returns are visible in rcbc: there they matter.
  assert not np.array_equal(rcbc(seg), rcbc(changed))


def test_no_mode_sees_what_it_predicts_or_any_hidden_token(small):
  """For every mode and time, filling every hidden token with garbage leaves the
  prediction bit for bit unchanged, and the target itself is hidden."""
  learner, trajs, state = small
  seg = jax.tree.map(lambda x: x[0], learner.sample(jax.random.key(6), trajs))
  garbage = jax.tree.map(lambda x: jnp.full_like(x, 7.5) if x.dtype == jnp.float32 else x, seg)
  for mode in mtm.MODES:
    last = L - 2 if mode == "forward_dynamics" else L - 1
    for t in range(last + 1):
      vis = np.asarray(mtm.inference_mask(mode, L, t))
      target = (t + 1, 0) if mode == "forward_dynamics" else (t, 2)
      assert not vis[target], (mode, t)
      mixed = mtm.Segments(
          jnp.where(vis[:, 0:1], seg.states, garbage.states),
          jnp.where(vis[:, 2:3], seg.actions, garbage.actions),
          jnp.where(vis[:, 1], seg.returns, garbage.returns), seg.valid, seg.has_actions)
      np.testing.assert_array_equal(mtm.predict(learner, state, seg, mode, t),
                                    mtm.predict(learner, state, mixed, mode, t),
                                    err_msg=f"{mode} at t={t}")
  with pytest.raises(ValueError, match=r"t=5 is outside \[0, 4\] for forward_dynamics"):
    mtm.predict(learner, state, seg, "forward_dynamics", L - 1)


def test_learns_linear_inverse_dynamics():
  config = mtm.MTMConfig(num_steps=500, segment_length=3, width=32, depth=1, heads=4,
                         mlp_ratio=2, batch_size=32, learning_rate=5e-3, warmup_steps=20,
                         train_mask="inverse_dynamics", weight_decay=0.0, return_scale=0.1)
  learner = mtm.make_mtm(config, SPEC)
  state, metrics = jax.jit(learner.train)(jax.random.key(0),
                                          mtm.trajectories(linear_episodes(16), config))
  heldout = mtm.trajectories(linear_episodes(4, seed=1), config)
  err = mtm.heldout_errors(learner, state, mtm.sample_segments(heldout, jax.random.key(1), 128,
                                                               3))
  # Actions are uniform on [−1, 1] (variance 1/3): predicting 0 would score 0.33; the
  # model gets below a quarter of that (0.046 when written).
  assert float(err["inverse_dynamics"]) < 0.08, err
  assert float(metrics["loss/actions"][-20:].mean()) < 0.5 * float(
      metrics["loss/actions"][:20].mean())


def test_seeds_vmap_independently_and_bfloat16_runs(small):
  """Under jit + vmap each run depends on its own key and task only: swapping the runs'
  order swaps their results."""
  _, trajs, _ = small
  learner = mtm.make_mtm(mtm.MTMConfig(num_steps=3, **SMALL), SPEC)
  keys = jax.random.split(jax.random.key(7), 3)
  train = jax.jit(jax.vmap(learner.train, in_axes=(0, None, 0)))
  tasks = jnp.array([0, 0, 3])       # MTM twice, and a specialised (BC) mask
  states, metrics = train(keys, trajs, tasks)
  swapped, m_swapped = train(keys[::-1], trajs, tasks[::-1])
  np.testing.assert_allclose(m_swapped["loss/total"][::-1], metrics["loss/total"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(swapped.params), strict=True):
    np.testing.assert_allclose(b[::-1], a, rtol=1e-5, atol=1e-6)
  assert metrics["loss/total"].shape == (3, 3)
  assert not np.allclose(metrics["loss/total"][0], metrics["loss/total"][1])
  bf16 = mtm.make_mtm(mtm.MTMConfig(dtype="bfloat16", param_dtype="bfloat16", **SMALL), SPEC)
  state = bf16.init(jax.random.key(0), trajs)
  seg = bf16.sample(jax.random.key(1), trajs)
  loss, _ = jax.jit(bf16.loss)(state.params, state.obs_norm, seg,
                               mtm.visible_tokens(jnp.ones((16, L, 3), bool), seg))
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  assert jax.tree.leaves(state.params)[0].dtype == jnp.bfloat16


def test_window_policy_rolls_and_counts_down_the_return(small):
  learner, _, state = small
  pi = mtm.policy(learner, state, "rcbc")
  act, observe = jax.jit(pi.act), jax.jit(pi.observe)
  window = pi.init(10.0)
  observations = [np.array([i, -i], np.float32) for i in range(L + 3)]
  rewards = [0.5 * i for i in range(L + 3)]
  for obs, r in zip(observations, rewards, strict=True):
    action, window = act(window, obs)
    assert -1.0 <= float(action[0]) <= 1.0
    window = observe(window, r)
  np.testing.assert_array_equal(window.states, np.array(observations[-L:]))
  assert float(window.rtg) == pytest.approx(10.0 - sum(rewards))
  # returns[k] was written before the step's reward: 0.1 · (10 − rewards so far).
  before = [10.0 - sum(rewards[:i]) for i in range(len(rewards))]
  np.testing.assert_allclose(window.returns, 0.1 * np.array(before[-L:]), rtol=1e-5)
  with pytest.raises(ValueError, match="mode must be 'bc' or 'rcbc'"):
    mtm.policy(learner, state, "inverse_dynamics")


def test_evaluate_runs_in_an_environment():
  env = envs.make("gymnax/Pendulum-v1")
  learner = mtm.make_mtm(mtm.MTMConfig(num_steps=1, **SMALL), env.spec)
  trajs = mtm.Trajectories(   # any data: only the normaliser's shape matters here
      jnp.zeros((1, 8, 3)), jnp.zeros((1, 8, 1)), jnp.zeros((1, 8)),
      jnp.array([2]), jnp.array([True]), jnp.array([1.0]))
  state = learner.init(jax.random.key(0), trajs)
  returns = jax.jit(lambda k: mtm.evaluate(learner, state, env, k, 2, mode=3,
                                           target_return=-200.0))(jax.random.key(1))
  assert returns.shape == (2,) and np.all(np.isfinite(returns)) and np.all(returns < 0)


# --- config -----------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("num_steps", 0), ("batch_size", -1), ("segment_length", 1), ("heads", 3),
    ("train_mask", "causal"), ("mask_ratios", (0.0, 0.5)), ("modality_probs", (0.5, 0.5)),
    ("return_scale", 0.0), ("learning_rate", -1e-3), ("weight_decay", -1.0),
    ("warmup_steps", -1), ("max_grad_norm", -1.0), ("dtype", "float16"),
    ("param_dtype", "int8"), ("weight_decay", float("nan")), ("max_grad_norm", float("nan")),
    ("mask_ratios", ("a",)),
])
def test_config_errors_name_the_field(field, value):
  with pytest.raises(ValueError, match=rf"MTMConfig\.{field} "):
    mtm.MTMConfig(**{field: value})


def test_trajectories_need_an_episode_to_draw():
  episodes = linear_episodes(num_episodes=3)
  with pytest.raises(ValueError, match="weight must be finite, >= 0 and > 0"):
    mtm.trajectories(episodes, SMALL_CONFIG, weight=np.zeros(3))


def test_mapping_configs_and_unknown_fields():
  learner = mtm.make_mtm({"width": 16, "heads": 2, "mask_ratios": [0.5, 1.0]}, SPEC)
  assert learner.config.mask_ratios == (0.5, 1.0)
  with pytest.raises(ValueError, match="unknown field"):
    mtm.make_mtm({"widht": 16}, SPEC)
