"""Tests for `irl_jax.control.data`: trajectory datasets, their files and Minari."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import data, envs
from irl_jax.control.envs import ActionSpec, EnvSpec

minari = pytest.importorskip("minari")
gymnasium = pytest.importorskip("gymnasium")

DISCRETE = EnvSpec("toy/discrete", (2,), ActionSpec(True, (), num_actions=3), 10)
CONTINUOUS = EnvSpec("toy/box", (3,), ActionSpec(False, (2,), low=-np.ones(2, np.float32),
                                                 high=np.ones(2, np.float32)), 10)


def _arrays(lengths, spec=DISCRETE, seed=0):
  """Valid flat arrays for episodes of `lengths` steps (each episode a random walk)."""
  rng = np.random.default_rng(seed)
  obs, next_obs, flags = [], [], []
  for t in lengths:
    walk = rng.normal(size=(t + 1, *spec.obs_shape)).astype(np.float32)
    obs.append(walk[:-1])
    next_obs.append(walk[1:])
    flags.append(np.arange(t) == t - 1)
  n = sum(lengths)
  action = (rng.integers(0, spec.action.num_actions, n) if spec.action.discrete
            else rng.uniform(-1, 1, (n, *spec.action.shape)).astype(np.float32))
  flags = np.concatenate(flags)
  return dict(obs=np.concatenate(obs), action=action,
              reward=rng.normal(size=n).astype(np.float32), terminated=flags,
              truncated=np.zeros(n, bool), next_obs=np.concatenate(next_obs),
              log_prob=rng.normal(size=n).astype(np.float32),
              episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]))


def _toy(lengths, spec=DISCRETE, metadata=None, **overrides):
  return data.Episodes(**{**_arrays(lengths, spec), **overrides}, spec=spec,
                       metadata=metadata or {"policy": "toy"})


def _assert_same(a, b):
  for name in data._ARRAYS:
    x, y = getattr(a, name), getattr(b, name)
    assert x.dtype == y.dtype and x.shape == y.shape, name
    np.testing.assert_array_equal(x, y, err_msg=name)  # NaN == NaN here
  assert a.spec.name == b.spec.name and a.spec.obs_shape == b.spec.obs_shape
  assert a.spec.max_steps == b.spec.max_steps and a.spec.action.discrete == b.spec.action.discrete
  assert a.spec.action.num_actions == b.spec.action.num_actions
  for bound in ("low", "high"):
    np.testing.assert_array_equal(getattr(a.spec.action, bound), getattr(b.spec.action, bound))
  assert a.metadata == b.metadata


def _random_cartpole_act(key, obs):
  del obs
  return jax.random.randint(key, (), 0, 2), jnp.log(0.5)


@pytest.fixture(scope="module")
def cartpole():
  env = envs.make("gymnax/CartPole-v1")
  return env, data.collect_episodes(env, _random_cartpole_act, jax.random.key(0), 7, num_envs=3,
                                    metadata={"policy": "uniform random"})


# ---------------------------------------------------------------------------
# Collection.


def test_collect_episodes_gives_complete_contiguous_episodes(cartpole):
  env, d = cartpole
  assert d.num_episodes == 7 and d.lengths.sum() == d.num_steps
  assert d.metadata["policy"] == "uniform random" and d.metadata["num_envs"] == 3
  assert d.obs.dtype == np.float32 and d.action.dtype == np.int32 and d.obs.shape[1:] == (4,)
  done = d.terminated | d.truncated
  for s, t in zip(d.episode_starts, d.lengths, strict=True):
    assert done[s + t - 1] and not done[s:s + t - 1].any()
    np.testing.assert_array_equal(d.next_obs[s:s + t - 1], d.obs[s + 1:s + t])
  # CartPole pays 1 per step until the pole falls (the last step pays 1 too).
  sums = [d.reward[s:s + t].sum() for s, t in zip(d.episode_starts, d.lengths, strict=True)]
  np.testing.assert_array_equal(data.episode_returns(d), sums)
  np.testing.assert_array_equal(data.episode_returns(d), d.lengths)
  np.testing.assert_allclose(d.log_prob, np.log(0.5))
  # A random policy drops the pole long before the time limit.
  assert d.terminated[d.episode_starts + d.lengths - 1].all()
  assert d.spec == env.spec


def test_collect_episodes_is_deterministic_round_robin():
  env = envs.make("gymnax/CartPole-v1")
  collect = lambda n: data.collect_episodes(env, _random_cartpole_act, jax.random.key(4), n,
                                            num_envs=2, chunk_steps=16)
  four, two = collect(4), collect(2)
  assert four.num_steps > 2 * 16  # several chunks per environment
  # Episodes are listed (episode 0 of env 0, of env 1, episode 1 of env 0, ...): the
  # first two of four are the two of two.
  _assert_same(data.take_episodes(four, 2), two)


def test_collect_episodes_budget_error():
  env = envs.make("gymnax/CartPole-v1")
  with pytest.raises(RuntimeError, match="max_env_steps"):
    data.collect_episodes(env, _random_cartpole_act, jax.random.key(0), 4, num_envs=2,
                          max_env_steps=4)


def test_take_episodes_nested_subsets(cartpole):
  _, d = cartpole
  one, five = data.take_episodes(d, 1), data.take_episodes(d, 5)
  assert one.num_episodes == 1 and five.num_episodes == 5
  np.testing.assert_array_equal(five.obs[:one.num_steps], one.obs)
  np.testing.assert_array_equal(data.episode_returns(five), data.episode_returns(d)[:5])
  swapped = data.select_episodes(d, [2, 0])
  np.testing.assert_array_equal(swapped.lengths, d.lengths[[2, 0]])
  with pytest.raises(ValueError, match="asked for 8 episodes"):
    data.take_episodes(d, 8)


# ---------------------------------------------------------------------------
# Transitions.


def test_to_transitions_pad_and_sample_never_return_padding():
  d = _toy([3, 1, 4])
  t = data.to_transitions(d)
  assert t.weight.shape == (8,) and bool(jnp.all(t.weight == 1))
  np.testing.assert_array_equal(t.next_obs, d.next_obs)
  padded = data.pad_transitions(t, 64)
  assert padded.obs.shape == (64, 2) and float(padded.weight.sum()) == 8
  assert not bool(jnp.isnan(padded.log_prob).any())
  batch = jax.jit(data.sample_batch, static_argnums=2)(padded, jax.random.key(0), 4000)
  assert bool(jnp.all(batch.weight == 1))
  rows = np.asarray(batch.obs)[:, None, :] == d.obs[None]
  assert rows.all(-1).any(-1).all()  # every sampled row is one of the 8 real rows
  assert len(np.unique(np.asarray(batch.reward))) == 8  # and all of them are drawn
  # Padding between real rows (as after concatenating padded sets) is skipped too.
  mixed = padded._replace(weight=jnp.zeros(64).at[jnp.array([0, 20, 63])].set(1.0))
  drawn = np.asarray(data.sample_batch(mixed, jax.random.key(1), 1000).weight)
  assert (drawn == 1).all()
  with pytest.raises(ValueError, match="smaller"):
    data.pad_transitions(t, 7)
  with pytest.raises(ValueError, match="no real rows"):
    data.sample_batch(padded._replace(weight=jnp.zeros(64)), jax.random.key(0), 3)


# ---------------------------------------------------------------------------
# Preference pairs.


def test_label_segments_hand_built():
  returns = jnp.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [0.0, 100.0]])
  label, prob = data.label_segments(returns, jax.random.key(0), labeller="deterministic")
  np.testing.assert_array_equal(label, [1.0, 0.0, 0.5, 1.0])
  np.testing.assert_array_equal(prob, label)
  label, prob = data.label_segments(returns, jax.random.key(0), temperature=2.0)
  s = lambda x: 1 / (1 + np.exp(-x))
  np.testing.assert_allclose(prob, [s(1.0), s(-1.0), 0.5, s(50.0)], rtol=1e-6)
  assert set(np.asarray(label).tolist()) <= {0.0, 1.0} and label[3] == 1.0
  # Bernoulli(σ(1)) labels: the empirical frequency matches the probability.
  many = jnp.tile(jnp.array([[0.0, 2.0]]), (20000, 1))
  label, prob = data.label_segments(many, jax.random.key(1), temperature=2.0)
  assert abs(float(label.mean()) - s(1.0)) < 0.015
  with pytest.raises(ValueError, match="temperature"):
    data.label_segments(returns, jax.random.key(0), temperature=0.0)
  with pytest.raises(ValueError, match="labeller"):
    data.label_segments(returns, jax.random.key(0), labeller="human")


def test_preference_pairs_segments_and_labels():
  # Episode 0: reward 0 for 6 steps; episode 1: reward 1 for 6 steps; episode 2: 2 steps of 5.
  reward = np.array([0.0] * 6 + [1.0] * 6 + [5.0] * 2, np.float32)
  d = _toy([6, 6, 2], reward=reward)
  p = data.preference_pairs(d, jax.random.key(3), 200, 4, labeller="deterministic")
  assert p.obs.shape == (200, 2, 4, 2) and p.action.shape == (200, 2, 4)
  assert p.mask.shape == (200, 2, 4) and p.label.shape == (200,) and p.returns.shape == (200, 2)
  episode, start, mask = np.asarray(p.episode), np.asarray(p.start), np.asarray(p.mask)
  assert set(np.unique(episode)) == {0, 1, 2}
  assert ((start <= 2) & (start >= 0)).all() and (start[episode == 2] == 0).all()
  # The short episode is masked past its 2 steps; the others are full segments.
  np.testing.assert_array_equal(mask.sum(-1), np.where(episode == 2, 2, 4))
  np.testing.assert_array_equal(p.returns, np.choose(episode, [0.0, 4.0, 10.0]))
  r1, r2 = np.asarray(p.returns).T
  np.testing.assert_array_equal(p.label, np.where(r2 > r1, 1.0, np.where(r2 < r1, 0.0, 0.5)))
  # Segment contents are the episode's rows.
  i = int(np.flatnonzero(episode[:, 0] == 1)[0])
  rows = d.episode_starts[1] + start[i, 0] + np.arange(4)
  np.testing.assert_array_equal(p.obs[i, 0], d.obs[rows])
  np.testing.assert_array_equal(p.next_obs[i, 0], d.next_obs[rows])
  np.testing.assert_array_equal(p.terminated[i, 0], d.terminated[rows])
  j = int(np.flatnonzero(episode[:, 0] == 2)[0])
  assert not np.asarray(p.obs[j, 0, 2:]).any() and p.terminated[j, 0, 1]


# ---------------------------------------------------------------------------
# Files: our .npz and Minari.


@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS])
def test_npz_round_trip_is_exact(tmp_path, spec):
  d = _toy([3, 5, 1], spec, log_prob=np.array([np.nan, 0.5, -1, 2, 3, 4, 5, 6, 7], np.float32),
           metadata={"policy": "expert", "policy_return": 3.5, "nested": {"a": [1, 2]}})
  path = data.save(d, tmp_path / "demos")
  assert path.name == "demos.npz"
  _assert_same(data.load(path), d)


def test_npz_round_trip_collected(cartpole, tmp_path):
  _, d = cartpole
  _assert_same(data.load(data.save(d, tmp_path / "cartpole.npz")), d)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_round_trip_is_exact_and_opens_with_minari(cartpole, tmp_path, monkeypatch):
  _, d = cartpole
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  directory = data.to_minari(d, "irl_jax/cartpole-random-v0", root=tmp_path)
  assert directory == tmp_path / "irl_jax/cartpole-random-v0"
  theirs = minari.load_dataset("irl_jax/cartpole-random-v0")
  assert theirs.total_episodes == 7 and theirs.total_steps == d.num_steps
  assert isinstance(theirs.action_space, gymnasium.spaces.Discrete) and theirs.action_space.n == 2
  episode = theirs[1]
  s, t = d.episode_starts[1], d.lengths[1]
  assert episode.observations.shape == (t + 1, 4) and len(episode.rewards) == t
  np.testing.assert_array_equal(episode.observations[:-1], d.obs[s:s + t])
  np.testing.assert_array_equal(episode.observations[-1], d.next_obs[s + t - 1])
  np.testing.assert_array_equal(episode.infos["log_prob"][:-1], d.log_prob[s:s + t])
  _assert_same(data.from_minari("irl_jax/cartpole-random-v0"), d)
  _assert_same(data.from_minari(directory), d)
  _assert_same(data.from_minari("irl_jax/cartpole-random-v0", root=tmp_path), d)
  with pytest.raises(FileExistsError):
    data.to_minari(d, "irl_jax/cartpole-random-v0", root=tmp_path)
  with pytest.raises(ValueError, match="-v<version>"):
    data.to_minari(d, "no-version", root=tmp_path)


def test_minari_round_trip_continuous(tmp_path):
  d = _toy([2, 4], CONTINUOUS)
  _assert_same(data.from_minari(data.to_minari(d, "box-v1", root=tmp_path)), d)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_from_minari_reads_a_data_collector_dataset(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  env = minari.DataCollector(gymnasium.make("CartPole-v1"), data_format="arrow")
  env.action_space.seed(0)
  for seed in range(3):
    env.reset(seed=seed)
    while True:
      _, _, terminated, truncated, _ = env.step(env.action_space.sample())
      if terminated or truncated:
        break
  env.create_dataset("test/cartpole-random-v0", algorithm_name="random")
  env.close()

  d = data.from_minari("test/cartpole-random-v0")
  theirs = list(minari.load_dataset("test/cartpole-random-v0"))
  assert d.num_episodes == 3 and d.spec.name == "CartPole-v1" and d.spec.max_steps == 500
  assert d.spec.action.discrete and d.spec.action.num_actions == 2 and d.spec.obs_shape == (4,)
  assert d.metadata["minari"]["algorithm_name"] == "random"
  np.testing.assert_array_equal(d.lengths, [len(e.rewards) for e in theirs])
  t = data.to_transitions(d)
  for s, ep in zip(d.episode_starts, theirs, strict=True):
    n = len(ep.rewards)
    np.testing.assert_array_equal(t.obs[s:s + n], ep.observations[:-1])
    np.testing.assert_array_equal(t.next_obs[s:s + n], ep.observations[1:])
    np.testing.assert_array_equal(t.next_obs[s:s + n - 1], t.obs[s + 1:s + n])
    np.testing.assert_array_equal(t.action[s:s + n], ep.actions)
    np.testing.assert_array_equal(t.reward[s:s + n], ep.rewards)
    np.testing.assert_array_equal(t.terminated[s:s + n], ep.terminations)
  assert bool(jnp.isnan(t.log_prob).all())


# ---------------------------------------------------------------------------
# Bad files.


def _bad_npz(tmp_path, case):
  arrays = _arrays([3, 4, 2])
  header = {"format": data.FORMAT, "version": data.FORMAT_VERSION,
            "spec": data._spec_to_json(DISCRETE), "metadata": {}}
  path = tmp_path / f"{case}.npz"
  if case == "missing":
    del arrays["reward"]
  elif case == "length":
    arrays["reward"] = arrays["reward"][:-1]
  elif case == "nan_obs":
    arrays["obs"][4, 1] = np.nan
  elif case == "nan_reward":
    arrays["reward"][5] = np.nan
  elif case == "action":
    arrays["action"][2] = 3
  elif case == "bool":
    arrays["terminated"] = arrays["terminated"].astype(np.float32)
  elif case == "flag_inside":
    arrays["truncated"][4] = True
  elif case == "successor":
    arrays["next_obs"][0] += 1.0
  elif case == "no_header":
    np.savez(path, **arrays)
    return path
  elif case == "not_npz":
    path.write_text("obs,action\n1,2\n")
    return path
  np.savez(path, **arrays, **{data._HEADER: np.array(json.dumps(header))})
  return path


@pytest.mark.parametrize("case, pattern", [
    ("missing", "missing field.*'reward'"),
    ("length", "'reward' has 8 rows but 'obs' has 9"),
    ("nan_obs", "'obs' has a non-finite.*row 4 \\(episode 1, step 1\\)"),
    ("nan_reward", "'reward' has a non-finite.*episode 1"),
    ("action", "'action' at row 2 \\(episode 0, step 2\\) is 3, outside.*Discrete\\(3\\)"),
    ("bool", "'terminated' must be bool"),
    ("flag_inside", "'truncated' is set at row 4.*not the last step"),
    ("successor", "'next_obs' at row 0.*differs"),
    ("no_header", "not an irl_jax episodes file"),
    ("not_npz", "not an irl_jax episodes file"),
])
def test_bad_npz_files_raise_naming_file_and_field(tmp_path, case, pattern):
  path = _bad_npz(tmp_path, case)
  with pytest.raises(ValueError, match=pattern) as info:
    data.load(path)
  assert str(path) in str(info.value)


def test_missing_npz_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    data.load(tmp_path / "absent.npz")


def _buffers(case):
  rng = np.random.default_rng(0)
  out = []
  for i, t in enumerate([3, 4, 2]):
    rewards = np.ones(t, np.float32)
    actions = rng.integers(0, 2, t)
    terminations = np.arange(t) == t - 1
    if i == 1 and case == "nan_reward":
      rewards[2] = np.nan
    if i == 1 and case == "action":
      actions[0] = 5
    if i == 1 and case == "bool":
      terminations = terminations.astype(np.float64)
    out.append(minari.data_collector.EpisodeBuffer(
        observations=rng.normal(size=(t + 1, 4)).astype(np.float32), actions=actions,
        rewards=rewards, terminations=terminations, truncations=np.zeros(t, bool)))
  return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case, pattern", [
    ("nan_reward", "'rewards' has a non-finite.*episode 1"),
    ("action", "'actions' at row 3 \\(episode 1, step 0\\) is 5, outside"),
    ("bool", "episode 1: field 'terminations' must be bool"),
    ("missing", "episode 1: missing field 'rewards'"),
])
def test_bad_minari_datasets_raise_naming_file_field_and_episode(tmp_path, monkeypatch, case,
                                                                 pattern):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  space = gymnasium.spaces.Box(-np.inf, np.inf, (4,), np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    minari.create_dataset_from_buffers(f"bad/{case}-v0", _buffers(case), observation_space=space,
                                       action_space=gymnasium.spaces.Discrete(2),
                                       data_format="arrow")
  if case == "missing":  # rewrite episode 1's Arrow file without its rewards column
    import pyarrow as pa

    (part,) = (tmp_path / f"bad/{case}-v0/data/1").glob("*.arrow")
    with pa.memory_map(str(part)) as source:
      table = pa.ipc.open_file(source).read_all()
    table = table.drop_columns(["rewards"])
    with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
      writer.write_table(table)
  with pytest.raises(ValueError, match=pattern) as info:
    data.from_minari(f"bad/{case}-v0")
  assert str(tmp_path / f"bad/{case}-v0") in str(info.value)


def test_minari_wrong_length_and_not_a_dataset(tmp_path):
  # Arrow files keep every column the same length, so a wrong length (possible in
  # HDF5 files) is checked on the episode dict that Minari's storage returns.
  episode = {"observations": np.zeros((5, 2), np.float32), "actions": np.zeros(4, np.int64),
             "rewards": np.zeros(3, np.float32), "terminations": np.zeros(4, bool),
             "truncations": np.zeros(4, bool), "infos": {}}
  with pytest.raises(ValueError, match=r"f.h5: episode 3: field 'rewards' has shape \(3,\) but "
                                       r"'actions' has length 4"):
    data._minari_episode(episode, 3, DISCRETE, "f.h5")
  with pytest.raises(ValueError, match="episode 3: field 'observations' has length 4"):
    data._minari_episode({**episode, "observations": np.zeros((4, 2))}, 3, DISCRETE, "f.h5")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="not a Minari dataset"):
    data.from_minari(tmp_path / "empty")
  with pytest.raises(FileNotFoundError):
    data.from_minari("nothing/here-v0", root=tmp_path)


def test_spaces_round_trip():
  for spec in (DISCRETE, CONTINUOUS):
    back = data.spec_from_spaces(spec.name, data.observation_space(spec), data.action_space(spec),
                                 spec.max_steps)
    assert back.action.discrete == spec.action.discrete and back.obs_shape == spec.obs_shape
    np.testing.assert_array_equal(back.action.low, spec.action.low)
  with pytest.raises(ValueError, match="Discrete"):
    data.spec_from_spaces("x", data.observation_space(DISCRETE),
                          gymnasium.spaces.Discrete(3, start=1), 5)
