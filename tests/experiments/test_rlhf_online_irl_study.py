"""The RLHF-as-online-IRL study (L5): its problems, preference arrays and slopes, its quick run
end to end, and its config errors."""

import json

import numpy as np
import pytest

VERDICTS = ("reproduced", "not at this scale", "contradicted")


def test_problems_pairs_and_slopes():
  from experiments import rlhf_online_irl as ro
  from experiments.configs import rlhf_online_irl as cfg
  from experiments.tasks import arithmetic
  from irl_jax.data import char_tokenizer
  config = cfg.get_config()
  config.num_demonstrations, config.eval_per_length = 200, 10
  demos, heldout = ro.make_problems(config)
  assert len(demos) == 200 and sorted(heldout) == ro.lengths(config) == [2, 3, 4, 5, 6]
  for k, prompts in heldout.items():
    assert all(len(p.split()) - 1 == k for p in prompts)     # "+ a b ..." has k operands
  assert not {d["prompt"] for d in demos} & {p for ps in heldout.values() for p in ps}
  assert all(arithmetic.check(d["prompt"], d["response"]).correct for d in demos)
  tok = char_tokenizer(arithmetic.ALPHABET)
  arrays = ro.preference_arrays([d["prompt"] for d in demos[:3]],
                                [d["response"] for d in demos[:3]], ["#### 1"] * 3, tok,
                                config.seq_len)
  assert arrays["input_ids"].shape == (3, 2, config.seq_len)
  assert np.all(arrays["rank_mask"] == 1)
  assert tok.decode(arrays["input_ids"][0, 1][arrays["segment_ids"][0, 1] > 0],
                    skip_special_tokens=True).endswith("#### 1")
  diff = np.array([[0.0, 0.1, 0.2, 0.3], [0.4, 0.3, 0.2, 0.1]])
  np.testing.assert_allclose(ro.slopes(diff, [1, 2, 3, 4]), [0.1, -0.1], atol=1e-12)


def test_rlhf_online_irl_quick(tmp_path):
  from experiments import rlhf_online_irl as ro
  from experiments.configs import rlhf_online_irl as cfg
  config = cfg.get_config()
  config.quick = True
  results = ro.run(config, str(tmp_path), log=lambda *_: None)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "rlhf_online_irl.png").stat().st_size > 0
  q = config.quick_settings
  assert set(saved["accuracy"]) == set(ro.METHODS)
  for m, a in saved["accuracy"].items():
    a = np.asarray(a)
    assert a.shape == (q.num_seeds, len(ro.lengths(config)))
    assert np.all((a >= 0) & (a <= 1))
    assert f"| {ro.LABELS[m]} |" in table
  kl = np.asarray(saved["rl_kl"])
  assert kl.shape == (q.num_seeds, q.rl_updates) and np.all(np.isfinite(kl))
  assert np.mean(saved["rm_train_accuracy"]) > 0.5
  assert saved["cpu"] in table
  assert len(results["verdicts"]) == 3
  for v in saved["verdicts"]:
    assert v["verdict"] in VERDICTS and f"**{v['verdict']}**" in table


@pytest.mark.parametrize("field, value, match", [
    ("num_seeds", 1, "config.num_seeds"),
    ("max_operands", 2, "config.max_operands"),
    ("rl_prompts", 10_000, "config.rl_prompts"),
    ("iq_gamma", 1.0, "config.iq_gamma"),
    ("kl_coef", -1.0, "config.kl_coef"),
    ("hidden_size", 30, "config.hidden_size"),
])
def test_bad_configs_raise_naming_the_field(tmp_path, field, value, match):
  from experiments import rlhf_online_irl as ro
  from experiments.configs import rlhf_online_irl as cfg
  config = cfg.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    ro.run(config, str(tmp_path))
