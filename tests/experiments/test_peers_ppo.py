"""The peers benchmark's PPO row (`ppo_step_speedup_vs_trl`) at tiny sizes.

irl_jax's side alone (no TRL): the fixed batch, what an update computes (the sampler's
scoring without generation, then the "ppo" train step) on both model layouts, and the skip
row when no TRL 0.29.1 interpreter is given. Against TRL: only with a venv's python that
imports `trl.experimental.ppo` in `$IRL_JAX_TRL_PPO_PYTHON` (made with `python -m venv
--system-site-packages DIR && DIR/bin/pip install --no-deps trl==0.29.1`); the test never
creates one. Only completeness and parity are asserted, never speed.
"""

import math
import os

import jax
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from experiments.benchmarks import peers
from irl_jax import models
from irl_jax.train.lm import lm_stats


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("ppo_peers"))
  model_dir, rm_dir = peers.save_checkpoints(peers.SMALL, tmp)
  return model_dir, rm_dir, peers.save_value_checkpoint(peers.SMALL, tmp, model_dir)


def test_ppo_batch_has_distinct_prompts_and_full_length_completions():
  data = peers.ppo_batch(peers.SMALL)
  ids, p = data["ids"], data["prompt_len"]
  b, t = ids.shape
  assert (b, t, p) == (peers.SMALL["batch"], peers.SMALL["seq"], peers.SMALL["seq"] // 4)
  assert len({row.tobytes() for row in ids[:, :p]}) == b  # TRL's shuffled rows are matched
  assert ids.min() >= 3  # never pad (0), BOS (1) or EOS (2): nothing is masked or truncated
  np.testing.assert_array_equal(data["loss_mask"], np.arange(t)[None].repeat(b, 0) >= p)


def _gae(rewards, values, gamma, lam):
  adv = np.zeros_like(rewards)
  next_value = next_adv = np.zeros(rewards.shape[0])
  for t in reversed(range(rewards.shape[1])):
    next_adv = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * next_adv
    next_value = values[:, t]
    adv[:, t] = next_adv
  return adv


def test_irl_jax_ppo_update_scores_the_fixed_batch_without_generating(checkpoints):
  """An update's work, both layouts: the sampler scores the given completions (no sampling),
  with the initial models' log-probs, values and scores, GAE on KL-shaped rewards and
  population-variance whitening; the first "ppo" step has ratio 1, so its value loss is
  ½·mean(A²) and its policy loss 0; both layouts start from the same functions."""
  model_dir, rm_dir, value_dir = checkpoints
  data = peers.ppo_batch(peers.SMALL)
  ids, p = data["ids"], data["prompt_len"]
  t = ids.shape[1]
  reward_model = models.from_pretrained(rm_dir)
  policy = models.from_pretrained(model_dir)
  value = models.from_pretrained(value_dir)
  positions = np.tile(np.arange(t, dtype=np.int32), (len(ids), 1))
  seg = np.ones_like(ids)
  logps = np.asarray(lm_stats(policy, ids, seg, positions, chunk_size=None).log_probs)
  hidden = policy(ids, segment_ids=seg, positions=positions, return_hidden=True)
  # The value checkpoint's backbone is the policy's: its head on the policy's hidden states.
  values = np.asarray(value.score(hidden)[..., 0])
  scores = np.asarray(reward_model(ids, attention_mask=np.ones_like(ids, bool)))

  sides = {}
  for separate in (False, True):
    side = peers.PPOSide(peers.ppo_models(model_dir, value_dir, separate_critic=separate),
                         reward_model, data)
    sides[separate] = side
    sample = side.first["sample"]
    # The completions given, not sampled ones.
    np.testing.assert_array_equal(sample["sample_input_ids"], ids)
    first = peers.ppo_first_update(side)
    r = t - p
    np.testing.assert_allclose(first["old_logps"], logps[:, p - 1:t - 1], atol=2e-5)
    np.testing.assert_allclose(first["ref_logps"], logps[:, p - 1:t - 1], atol=2e-5)
    np.testing.assert_allclose(first["values"], values[:, p - 1:t - 1], atol=2e-5)
    np.testing.assert_allclose(first["scores"], scores, atol=2e-5)
    # KL-shaped rewards (KL 0: policy = reference) pay the score at the last token.
    rewards = np.zeros((len(ids), r))
    rewards[:, -1] = scores
    adv = _gae(rewards, first["values"], peers.PPO_GAMMA, peers.PPO_LAM)
    np.testing.assert_allclose(first["advantages"], adv, atol=2e-5)
    white = (adv - adv.mean()) / np.sqrt(adv.var() + 1e-8)
    np.testing.assert_allclose(first["whitened_advantages"], white, atol=1e-4)
    metrics = side.first["metrics"]
    assert metrics["train/value_loss"] == pytest.approx(0.5 * np.mean(adv ** 2), rel=1e-4)
    assert abs(metrics["train/policy_loss"]) < 1e-5
    assert metrics["train/loss"] == pytest.approx(
        metrics["train/policy_loss"] + peers.PPO_VF_COEF * metrics["train/value_loss"],
        rel=1e-5, abs=1e-7)
    # Later updates: timed after generation, the parameters move.
    before = jax.tree.leaves(side.state.params)[0].copy()
    times = [side.update() for _ in range(2)]
    assert all(math.isfinite(x) and x > 0 for x in times) and side.updates == 3
    assert not np.array_equal(before, jax.tree.leaves(side.state.params)[0])
  # The separate critic's gradient splits into the policy's and the critic's parameters.
  split = sides[True].first
  assert split["grad_norm_policy"] > 0 and split["grad_norm_critic"] > 0
  assert math.hypot(split["grad_norm_policy"], split["grad_norm_critic"]) == pytest.approx(
      split["metrics"]["train/grad_norm"], rel=1e-4)
  assert set(sides[True].state.params) == {"policy", "critic"}


def test_whitening_scale_ratio_is_population_over_sample_std():
  a = np.array([1.0, 2.0, 3.0, 4.0])
  assert peers.whitening_scale_ratio(a) == pytest.approx(
      math.sqrt((1.25 + 1e-8) / (5 / 3 + 1e-8)), rel=1e-12)


def test_ppo_row_is_skipped_with_the_reason_without_a_trl_ppo_python(tmp_path):
  rows = peers.bench_trl_ppo(peers.SMALL, "unused", "unused", str(tmp_path), 1, 1)
  assert len(rows) == 1 and rows[0]["metric"] == "ppo_step_speedup_vs_trl"
  assert rows[0]["value"] is None and "--trl_ppo_python" in rows[0]["skipped"]
  missing = str(tmp_path / "no" / "python")
  rows = peers.bench_trl_ppo(peers.SMALL, "unused", "unused", str(tmp_path), 1, 1,
                             python=missing)
  assert rows[0]["value"] is None and "not an executable" in rows[0]["skipped"]
  assert not os.path.exists(tmp_path / "no")  # nothing created


def _trl_ppo_python() -> str:
  python = os.environ.get(peers.TRL_PPO_PYTHON_ENV)
  if not python:
    pytest.skip(f"${peers.TRL_PPO_PYTHON_ENV} is unset (a venv's python with TRL 0.29.1)")
  try:
    peers.trl_ppo_probe(python)
  except peers.TrlPPOUnavailable as e:
    pytest.skip(f"TRL's PPO is unavailable in ${peers.TRL_PPO_PYTHON_ENV}: {e}")
  return python


def test_ppo_row_against_trl_reports_a_finite_ratio_and_first_update_parity():
  python = _trl_ppo_python()
  rows = peers.run(peers.SMALL, repeats=1, skip=("torch", "trl", "models"),
                   trl_ppo_python=python)
  by_name = {r["metric"]: r for r in rows}
  row = by_name["ppo_step_speedup_vs_trl"]
  assert math.isfinite(row["value"]) and row["value"] > 0
  assert row["target"] == peers.TARGETS["ppo_step_speedup_vs_trl"] == 1.5
  assert row["trl"] == peers.TRL_PPO_VERSION and row["cpu"] and row["trl_torch_threads"] >= 1
  assert "two backbones" in row["note"] and "population variance" in row["note"]
  same = by_name["ppo_separate_critic_step_speedup_vs_trl"]
  assert math.isfinite(same["value"]) and same["value"] > 0
  for name in ("step_time_ppo", "step_time_ppo_separate_critic", "step_time_trl_ppo"):
    assert math.isfinite(by_name[name]["value"]) and by_name[name]["value"] > 0, name
  # The same first update on both sides, to float32 round-off: arrays elementwise.
  parity = row["parity"]
  for variant in ("", "_separate_critic"):
    for name in ("old_logps", "ref_logps", "values", "scores", "advantages",
                 "whitened_advantages_scaled", "value_loss"):
      name += variant
      assert parity[name] <= peers.PARITY_RTOL, name
      assert by_name[f"first_update_{name}_relative_difference_ppo"]["value"] == parity[name]
  for name in ("grad_norm_policy_separate_critic", "grad_norm_critic_separate_critic"):
    assert parity[name] <= peers.GRAD_NORM_RTOL, name
  assert by_name["first_update_old_logps_relative_difference_ppo"]["irl_jax"] < -1
  assert row["first_value_loss"]["peer"] > 0
  losses = row["first_policy_loss"]
  assert max(abs(losses["irl_jax"]), abs(losses["peer"])) < 1e-5 and losses["expected"] == 0
  assert 0 < row["whitening_scale_trl_over_irl_jax"] < 1
