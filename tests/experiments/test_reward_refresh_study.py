"""The reward-model refresh study (L4): its annotators' records, the in-group ranking
accuracy, its quick run end to end, and its config errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_records_cover_clean_to_toxic_and_disagree_with_the_truth_sometimes():
  from experiments import reward_recovery as rr
  from experiments import reward_refresh as rf
  from experiments.configs import reward_refresh as cfg
  config = cfg.get_config()
  config.corpus_size, config.num_records = 200, 3000
  rng = np.random.default_rng(0)
  world = rr.make_world(config, rng)
  records = rf.make_records(config, world, rng)
  ids = records["arrays"]["input_ids"]
  assert ids.shape == (3000, 2, 1 + config.prompt_len + config.completion_len)
  comps = ids[:, :, 1 + config.prompt_len:]
  toxic = (world["weights"][comps] > 0).sum(-1)
  # λ = 0 completions exist (no toxic token) and so do toxic ones.
  assert (toxic == 0).mean() > 0.2 and (toxic >= 2).mean() > 0.1
  # Noisy annotators: above chance, below perfect agreement with the true reward.
  assert 0.55 < records["agreement"] < 0.95
  # Without annotator noise the order follows the true reward more often.
  config.annotator_noise = 1e-6
  clean = rf.make_records(config, world, np.random.default_rng(1))
  assert clean["agreement"] > records["agreement"]


def test_group_ranking_accuracy_counts_ordered_pairs_within_groups():
  from experiments import reward_refresh as rf
  reward = jnp.array([1.0, 2.0, 0.0, 5.0, 5.0, 1.0])
  gold = jnp.array([0.0, 1.0, 1.0, 2.0, 1.0, 0.0])
  agree, pairs = rf.group_ranking_accuracy(reward, gold, 3)
  # Group 1: gold orders (1>0), (2>0); reward agrees on (1,0), disagrees on (2,0) -> 1 of 2.
  # Group 2: gold orders (3>4), (3>5), (4>5); reward ties (3,4) -> 0.5, agrees on the rest.
  assert float(pairs) == 5 and float(agree) == pytest.approx(3.5)


def test_reward_refresh_quick(tmp_path):
  from experiments import reward_refresh as rf
  from experiments.configs import reward_refresh as cfg
  config = cfg.get_config()
  config.quick = True
  results = rf.run(config, str(tmp_path), log=lambda *_: None)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "reward_refresh.png").stat().st_size > 0
  q = config.quick_settings
  assert set(saved["arms"]) == set(rf.ARMS)
  for arm in saved["arms"].values():
    for key in ("true_reward", "reward", "kl", "rm_ranking_accuracy"):
      v = np.asarray(arm[key])
      assert v.shape == (q.num_seeds, q.rl_updates) and np.all(np.isfinite(v))
    assert f"| {arm['label']} |" in table
  static, refreshed = saved["arms"]["static"], saved["arms"]["refreshed"]
  # Same sampling keys and the same reward model until the first refresh: identical batches.
  k = q.refresh_every
  np.testing.assert_allclose(np.asarray(static["true_reward"])[:, :k],
                             np.asarray(refreshed["true_reward"])[:, :k], rtol=1e-6)
  # After it, the refreshed reward model scores the same samples differently.
  assert not np.allclose(np.asarray(static["reward"])[:, k:],
                         np.asarray(refreshed["reward"])[:, k:])
  assert np.mean(saved["rm_train_accuracy"]) > 0.6
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 1
  assert saved["verdicts"][0]["verdict"] in VERDICTS
  assert f"**{saved['verdicts'][0]['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("refresh_every", 7, "config.refresh_every"),
    ("top_n", 2040, "config.top_n"),
    ("num_anchors", -1, "config.num_anchors"),
    ("annotator_noise", 0.0, "config.annotator_noise"),
    ("rm_batch", 4096, "config.rm_batch"),
    ("kl_coef", -1.0, "config.kl_coef"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import reward_refresh as rf
  from experiments.configs import reward_refresh as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    rf.run(config, str(tmp_path))
