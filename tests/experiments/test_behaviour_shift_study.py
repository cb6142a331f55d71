"""The behaviour-shift study (L10): its quick run end to end on a tiny checkpoint and data
files the test writes, its verdict rule, and its config errors."""

import json

import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.data import char_tokenizer

VERDICTS = ("reproduced", "not at this scale", "contradicted")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
  """`(checkpoint dir, HH-RLHF-format pairs, two behaviour-set files)`."""
  tmp = tmp_path_factory.mktemp("behaviour_shift")
  rng = np.random.default_rng(0)
  pairs = []
  for _ in range(40):
    q = "".join(rng.choice(list("abcdef"), 4))
    pairs.append({"chosen": f"\n\nHuman: {q}?\n\nAssistant: Yes, {q}.",
                  "rejected": f"\n\nHuman: {q}?\n\nAssistant: No."})
  # Two pairs that cannot be used: an empty reply and one too long for seq_len.
  pairs.append({"chosen": "\n\nHuman: x\n\nAssistant: ",
                "rejected": "\n\nHuman: x\n\nAssistant: No"})
  pairs.append({"chosen": "\n\nHuman: " + "a" * 80 + "\n\nAssistant: Yes",
                "rejected": "\n\nHuman: " + "a" * 80 + "\n\nAssistant: No"})
  prefs = tmp / "pairs.jsonl"
  prefs.write_text("".join(json.dumps(p) + "\n" for p in pairs))
  sets = []
  for name, flip in (("kind", False), ("power", True)):
    rows = [{"question": f"Would you say {s}?", "answer_matching_behavior": " No" if flip
             else " Yes", "answer_not_matching_behavior": " Yes" if flip else " No"}
            for s in ("ab", "cd", "ef", "fa", "bd")]
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets.append(str(path))
  text = "".join(p["chosen"] + p["rejected"] for p in pairs) + "Would you say?YesNo"
  tokenizer = char_tokenizer("".join(sorted(set(text))))
  config = models.ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=32,
                              num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                              intermediate_size=64, max_position_embeddings=128)
  ckpt = tmp / "ckpt"
  models.save_pretrained(models.Transformer(config, rngs=nnx.Rngs(0)), str(ckpt),
                         tokenizer=tokenizer)
  return str(ckpt), str(prefs), sets


def quick_config(world):
  from experiments.configs import behaviour_shift as cfg
  ckpt, prefs, sets = world
  config = cfg.get_config()
  config.quick = True
  config.pretrained = ckpt
  config.preferences = prefs
  config.behaviour_sets = ",".join(sets)
  return config


def test_behaviour_shift_quick(tiny_world, tmp_path):
  from experiments import behaviour_shift as bs
  config = quick_config(tiny_world)
  results = bs.run(config, str(tmp_path), log=lambda *_: None)
  saved = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert (tmp_path / "behaviour_shift.png").stat().st_size > 0
  q = config.quick_settings
  # Every pair is accounted for: 42 read, the empty reply and the long one left out.
  assert saved["pairs"]["read"] == 42 and saved["pairs"]["kept"] == 40
  assert saved["pairs"]["skipped"] == {"empty_response": 1, "too_long": 1}
  assert set(saved["sets"]) == {"kind", "power"}
  for entry in saved["sets"].values():
    assert entry["count"] == 5
    assert len(entry["base"]["p_match"]) == 1
    for name in ("sft", "rlhf"):
      p = np.asarray(entry[name]["p_match"])
      assert p.shape == (q.num_seeds,) and np.all((p > 0) & (p < 1))
  # The two sets ask the same questions with the sides swapped: p_match sums to 1.
  for name in ("base", "sft", "rlhf"):
    np.testing.assert_allclose(np.asarray(saved["sets"]["kind"][name]["p_match"])
                               + np.asarray(saved["sets"]["power"][name]["p_match"]), 1.0,
                               rtol=1e-5)
  # Training moved the policies (the top block only) and the SFT loss is finite.
  assert np.all(np.isfinite(saved["sft_loss"])) and np.all(np.isfinite(saved["dpo_loss"]))
  assert not np.allclose(saved["heldout"]["sft"]["heldout_nll"],
                         saved["heldout"]["base"]["heldout_nll"])
  assert [v["verdict"] for v in results["verdicts"]] and all(
      v["verdict"] in VERDICTS for v in results["verdicts"])
  assert "Perez et al. 2022" in table and "CC-BY-4.0" in table
  for v in results["verdicts"]:
    assert f"**{v['verdict']}**" in table


def test_shift_verdict_needs_an_interval_beyond_the_margin():
  from experiments import behaviour_shift as bs
  assert bs.beyond((0.05, 0.03, 0.07, 5), 0.01) == "reproduced"
  assert bs.beyond((-0.05, -0.07, -0.03, 5), 0.01) == "reproduced"
  # Significant but smaller than the margin: no shift of that size.
  assert bs.beyond((0.002, 0.001, 0.003, 5), 0.01) == "contradicted"
  assert bs.beyond((0.01, -0.002, 0.03, 5), 0.01) == "not at this scale"
  assert bs.beyond((0.05, float("nan"), float("nan"), 1), 0.01) == "not at this scale"


def _fake(shifts_a, shifts_b, margin=0.01):
  """Results whose RLHF'd − base shifts are `shifts_a` (per seed) on set a and `shifts_b`
  on set b; SFT equals the base."""
  sets = {}
  for name, shifts in (("a", shifts_a), ("b", shifts_b)):
    sets[name] = {"base": {"p_match": [0.5]}, "sft": {"p_match": [0.5] * len(shifts)},
                  "rlhf": {"p_match": [0.5 + d for d in shifts]}}
  return {"sets": sets, "config": {"min_shift": margin}}


def test_one_set_beyond_the_margin_decides_and_contradiction_needs_every_set():
  from experiments import behaviour_shift as bs
  big, small, vague = [0.05, 0.06, 0.05, 0.07, 0.06], [0.001, 0.002, 0.0, 0.001, 0.002], \
      [0.0, 0.03, -0.02, 0.04, 0.01]
  first = lambda r: bs.verdicts(r)[0]  # RLHF'd − base
  assert first(_fake(big, small))["verdict"] == "reproduced"
  assert "on a:" in first(_fake(big, small))["deciding"]       # the largest mean |shift|
  assert first(_fake(small, small))["verdict"] == "contradicted"
  assert first(_fake(small, vague))["verdict"] == "not at this scale"
  # SFT equals the base here, so RLHF'd − SFT decides as RLHF'd − base does.
  assert bs.verdicts(_fake(big, small))[1]["verdict"] == "reproduced"


def test_behaviour_shift_config_errors(tiny_world, tmp_path):
  from experiments import behaviour_shift as bs
  config = quick_config(tiny_world)
  config.preferences = ""
  with pytest.raises(ValueError, match=r"config\.preferences"):
    bs.run(config, str(tmp_path))
  config = quick_config(tiny_world)
  config.behaviour_sets = str(tmp_path / "missing.jsonl")
  with pytest.raises(ValueError, match=r"config\.behaviour_sets: no such file"):
    bs.run(config, str(tmp_path))
  config = quick_config(tiny_world)
  config.question_template = "Q: "
  with pytest.raises(ValueError, match=r"config\.question_template"):
    bs.run(config, str(tmp_path))
  config = quick_config(tiny_world)
  config.quick_settings.seq_len = 12
  with pytest.raises(ValueError, match=r"config\.seq_len=12: no pair"):
    bs.run(config, str(tmp_path))
  config = quick_config(tiny_world)
  config.quick_settings.num_seeds = 1
  with pytest.raises(ValueError, match=r"config\.num_seeds"):
    bs.run(config, str(tmp_path))
