"""The Inverse-Q* study: its corpus and chains, its quick run end to end, and its config
errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_corpus_chains_and_tags():
  from experiments import inverse_q_star as iqs
  from experiments.configs import inverse_q_star as cfg
  config = cfg.get_config()
  config.corpus_size = 2000
  corpus = iqs.make_corpus(config, np.random.default_rng(0))
  mixed, clean = corpus["chains"]
  n, bad = config.num_tokens, config.num_bad
  np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(clean.sum(1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(mixed[:, n - bad:].sum(1), config.bad_mass, rtol=1e-12)
  assert np.all(clean[:, n - bad:] == 0)
  ids = corpus["input_ids"]
  assert ids.shape == (2000, 1 + config.length)
  tags = ids[:, 0]
  assert set(np.unique(tags)) == {iqs.TAG_MIXED, iqs.TAG_CLEAN}
  assert np.mean(tags == iqs.TAG_CLEAN) == pytest.approx(config.clean_fraction)
  bad_ids = ids[:, 1:] >= iqs.FIRST_TOKEN + n - bad
  assert not bad_ids[tags == iqs.TAG_CLEAN].any()           # the clean chain never emits them
  # The mixed rows' bad-token rate matches the chain's exact rate (binomial sd ≈ 0.004).
  assert bad_ids[tags == iqs.TAG_MIXED].mean() == pytest.approx(
      iqs.bad_rate_of_chain(mixed, config), abs=0.02)
  assert np.all(corpus["loss_mask"][:, 0] == 0) and np.all(corpus["loss_mask"][:, 1:] == 1)


def test_inverse_q_star_quick(tmp_path):
  from experiments import inverse_q_star as iqs
  from experiments.configs import inverse_q_star as cfg
  config = cfg.get_config()
  config.quick = True
  lines = []
  results = iqs.run(config, str(tmp_path), log=lines.append)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "inverse_q_star.png").stat().st_size > 0
  assert set(saved["methods"]) == set(iqs.METHODS)
  # Pretraining learnt the tags: after C the model almost never emits a bad token, after M
  # about as often as its chain does.
  assert np.mean(saved["optimal_bad_rate"]) < 0.05
  assert np.mean(saved["ref_bad_rate"]) == pytest.approx(np.mean(saved["chain_bad_rate"]),
                                                         abs=0.05)
  for m in saved["methods"].values():
    bad, kl = np.asarray(m["bad_rate"]), np.asarray(m["kl"])
    assert bad.shape == kl.shape == (2, 40)
    assert m["finite"] and np.all((bad >= 0) & (bad <= 1)) and np.all(np.isfinite(kl))
    assert f"| {m['label']} |" in table
    # Every method lowers the bad-token rate from where it started.
    assert bad[:, -10:].mean() < bad[:, 0].mean()
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 1
  v = saved["verdicts"][0]
  assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("num_bad", 11, "config.num_bad"),
    ("bad_mass", 1.0, "config.bad_mass"),
    ("log_every", 7, "config.log_every"),
    ("hidden_size", 30, "config.hidden_size"),
    ("learning_rate", 0.0, "config.learning_rate"),
    ("kl_coef", -0.1, "config.kl_coef"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import inverse_q_star as iqs
  from experiments.configs import inverse_q_star as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    iqs.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
