"""The reward-recovery study (L3): its world, its scoring, its quick run end to end, and its
config errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_world_true_reward_and_pairs():
  from experiments import reward_recovery as rr
  from experiments.configs import reward_recovery as cfg
  config = cfg.get_config()
  config.corpus_size = 500
  world = rr.make_world(config, np.random.default_rng(0))
  n, bad = config.num_tokens, config.num_bad
  w = world["weights"]
  assert w.shape == (rr.FIRST_TOKEN + n,)
  assert np.all(w[:rr.FIRST_TOKEN + n - bad] == 0) and np.all((w[-bad:] >= 0.5) & (w[-bad:] <= 1.5))
  ids = world["lm"]["input_ids"]
  assert ids.shape == (500, 1 + config.prompt_len + config.completion_len)
  assert np.all(ids[:, 0] == rr.BOS) and ids[:, 1:].min() >= rr.FIRST_TOKEN
  assert world["prompts"].shape == (config.train_prompts + config.eval_prompts,
                                    1 + config.prompt_len)
  tokens = np.array([[2, 13, 13], [12, 3, 4]])
  want = [-(w[2] + 2 * w[13]), -(w[12] + w[3] + w[4])]
  np.testing.assert_allclose(rr.true_reward(jnp.asarray(w), jnp.asarray(tokens)), want,
                             rtol=1e-6)
  pairs = rr.pair_arrays(world["prompts"][:2], tokens, tokens[::-1])
  assert pairs["input_ids"].shape == (2, 2, 1 + config.prompt_len + 3)
  assert np.array_equal(pairs["input_ids"][0, 0, -3:], tokens[0])
  assert np.array_equal(pairs["input_ids"][0, 1, -3:], tokens[1])
  assert np.all(pairs["rank_mask"] == 1)


def test_score_fits_threshold_is_the_midpoint_of_the_training_means():
  from experiments import reward_recovery as rr
  from irl_jax import eval as ev
  rng = np.random.default_rng(1)
  true = -rng.integers(0, 3, (1, 8)).astype(float)
  labels = (true == 0).astype(int)
  rewards = rng.normal(size=(1, 1, 2, 8))
  train = rng.normal(size=(1, 1, 2, 5, 2))
  out = rr.score_fits(rewards, train, true, labels)
  for e in range(2):
    threshold = (train[0, 0, e, :, 0].mean() + train[0, 0, e, :, 1].mean()) / 2
    m = ev.recovery_metrics(rewards[0, 0, e], true[0], labels[0], threshold)
    assert out["accuracy"][0, 0, e] == pytest.approx(m["accuracy"])
    assert out["f1"][0, 0, e] == pytest.approx(m["f1"])
    assert out["pair_accuracy"][0, 0, e] == pytest.approx(
        np.mean(rewards[0, 0, e, :4] > rewards[0, 0, e, 4:]))


def test_reward_recovery_quick(tmp_path):
  from experiments import reward_recovery as rr
  from experiments.configs import reward_recovery as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = rr.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "reward_recovery.png").stat().st_size > 0
  q = config.quick_settings
  assert set(saved["fits"]) == set(rr.LOSSES)
  for fit in saved["fits"].values():
    for key in ("accuracy", "f1", "ranking_accuracy", "spearman", "pair_accuracy"):
      v = np.asarray(fit[key])
      assert v.shape == (q.num_worlds, q.rm_seeds, q.rm_epochs)
      assert np.all((v >= -1) & (v <= 1)) and np.all(np.isfinite(v))
    assert f"| {fit['label']} |" in table
    # The fits learn the pairs they are trained on.
    assert np.mean(fit["train_pair_accuracy"]) > 0.5
  # RLHF on the true reward raised it: the aligned completions are less toxic.
  comp = saved["completions"]
  assert np.mean(comp["true_aligned"]) > np.mean(comp["true_base"])
  assert set(saved["reached"]) == {"base", "aligned", "recovered_asymmetric",
                                   "recovered_hinge", "recovered_logistic"}
  assert np.asarray(saved["rlhf"]["true_reward"]).shape == (q.num_worlds, q.rl_updates)
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 3
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_worlds", 1, "config.num_worlds"),
    ("num_bad", 11, "config.num_bad"),
    ("rm_batch", 30, "config.rm_batch"),
    ("bad_mass", 1.0, "config.bad_mass"),
    ("hidden_size", 30, "config.hidden_size"),
    ("kl_coef", -0.1, "config.kl_coef"),
    ("wide_spread", 0.0, "config.wide_spread"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import reward_recovery as rr
  from experiments.configs import reward_recovery as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    rr.run(config, str(tmp_path))
