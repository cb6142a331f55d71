"""The preference-based offline RL study (IPL vs reward model + IQL vs oracle IQL): its
quick run end to end, the label convention it relies on, and its config errors."""

import json

import jax
import numpy as np
import pytest

from irl_jax.control import data, envs

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_preference_offline_quick(tmp_path):
  from experiments import preference_offline
  from experiments.configs import preference_offline as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = preference_offline.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "preference_offline.png").stat().st_size > 0
  counts = [str(n) for n in saved["query_counts"]]
  assert counts == ["10", "40"]
  assert set(saved["methods"]) == {"rm_iql", "ipl_iql", "ipl_awac", "oracle_iql"}
  for name, m in saved["methods"].items():
    assert f"| {m['label']} |" in table
    assert m["parameters"] > 0 and m["run_seconds"] > 0 and m["finite_metrics"]
    norm = np.asarray(m["normalised"])
    assert norm.shape == ((2,) if name == "oracle_iql" else (2, 2))  # ([queries,] seeds)
    assert np.all(np.isfinite(norm))
    if name != "oracle_iql":
      for n in counts:
        assert len(m["by_queries_raw"][n]) == 2 and m["by_queries"][n][3] == 2
  params = {k: m["parameters"] for k, m in saved["methods"].items()}
  assert params["ipl_iql"] < params["rm_iql"] and params["ipl_awac"] < params["rm_iql"]
  assert params["ipl_iql"] == params["oracle_iql"]  # IPL-IQL: IQL's networks, no reward net
  assert saved["cpu"] in table
  assert 0.5 < saved["labels"]["agree_with_true_returns"] <= 1.0
  assert len(results["verdicts"]) == 4
  for v in saved["verdicts"]:
    assert set(v) == {"finding", "verdict", "deciding"}
    assert v["verdict"] in VERDICTS
    assert f"**{v['verdict']}**" in table
  assert saved["verdicts"][-1]["verdict"] == "reproduced"  # parameter counts are exact


def _episodes(num_episodes=6, length=30, seed=0) -> data.Episodes:
  """Random Pendulum-shaped episodes with graded rewards (no environment needed)."""
  spec = envs.make("gymnax/Pendulum-v1").spec
  rng = np.random.default_rng(seed)
  n = num_episodes * length
  obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
  next_obs = obs[1:].copy()
  obs = obs[:-1]
  starts = np.arange(0, n, length)
  last = np.zeros(n, bool)
  last[starts[1:] - 1] = True
  last[-1] = True
  next_obs[last] = rng.normal(size=(int(last.sum()), 3)).astype(np.float32)
  return data.Episodes(
      obs=obs, action=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
      reward=rng.uniform(-10, 0, n).astype(np.float32) * rng.uniform(0, 1, num_episodes).repeat(
          length).astype(np.float32),
      terminated=np.zeros(n, bool), truncated=last, next_obs=next_obs,
      log_prob=np.full(n, np.nan, np.float32), episode_starts=starts, spec=spec)


def test_labels_prefer_the_second_segment_and_queries_are_nested_prefixes():
  """Label 1 ⇔ the second segment (index 1) has the higher true return: the Bradley–Terry
  labeller at a low temperature is deterministic, and its probability is σ((R² − R¹)/T)
  at any temperature. The study's Preferences keep that order and mask the pairs beyond
  each query count."""
  from experiments import preference_offline
  episodes = _episodes()
  cold = data.preference_pairs(episodes, jax.random.key(0), 64, 10, labeller="bradley_terry",
                               temperature=1e-4)
  ret = np.asarray(cold.returns)
  second = ret[:, 1] > ret[:, 0]
  assert 0 < second.mean() < 1
  np.testing.assert_array_equal(np.asarray(cold.label), second.astype(np.float32))
  np.testing.assert_allclose(ret, np.asarray(cold.reward).sum(-1), rtol=1e-5, atol=1e-4)
  warm = data.preference_pairs(episodes, jax.random.key(0), 64, 10, temperature=5.0)
  np.testing.assert_array_equal(np.asarray(warm.probability) > 0.5,
                                np.asarray(warm.returns[:, 1] > warm.returns[:, 0]))

  prefs = preference_offline.nested_preferences(cold, [5, 64])
  assert prefs.obs.shape == (2, 64, 2, 10, 3)
  np.testing.assert_array_equal(np.asarray(prefs.obs[0, :, 1]), np.asarray(cold.obs[:, 1]))
  np.testing.assert_array_equal(np.asarray(prefs.label[0]), np.asarray(cold.label))
  mask = np.asarray(prefs.mask)
  assert mask[0, :5].all() and not mask[0, 5:].any() and mask[1].all()


@pytest.mark.parametrize("field, value, match", [
    ("segment_length", 0, "config.segment_length"),
    ("segment_length", 201, "config.segment_length"),
    ("num_seeds", 1, "config.num_seeds"),
    ("query_counts", (100, 25), "config.query_counts"),
    ("mixture", (("x", 1.5, 0.0, 2),), r"config.mixture\[0\]"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import preference_offline
  from experiments.configs import preference_offline as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    preference_offline.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
