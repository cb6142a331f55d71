"""Sampling at a temperature τ ≠ 1 in GRPO and PPO: the old, reference and current log-probs
are all those of `logits / τ`, the distribution the responses were drawn from.

Checked against independent references: `lm_stats(..., temperature=τ)` against
`log_softmax(model(ids) / τ)` gathered at the next tokens (dense and chunked paths, with and
without the response window); the sampler's scored log-probs against the decode-time
log-probs of `generate` (KV-cache path, via the sampler's `entropy` statistic); and the first
update's ratio (KL and clip fraction 0) of GRPO and PPO built with the same τ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.models import ModelConfig
from irl_jax.train import lm, objectives, registry, rollouts
from irl_jax.train.state import split_model

CONFIG = ModelConfig(model_type="llama", vocab_size=29, hidden_size=16, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=64)
TAU = 0.3  # not a power of two: a rounding step on the way would show
P, M, ROWS = 6, 5, 4  # prompt columns, new tokens, prompts


def _prompts(seed=0):
  """An unpacked LM batch: a prompt of 3–6 real tokens, then two answer tokens."""
  rng = np.random.default_rng(seed)
  t = P + 2
  ids = rng.integers(3, CONFIG.vocab_size, (ROWS, t)).astype(np.int32)
  lengths = rng.integers(3, P + 1, ROWS)
  seg = (np.arange(t)[None] < (lengths + 2)[:, None]).astype(np.int32)
  loss_mask = (np.arange(t)[None] >= lengths[:, None]) & (seg > 0)
  return {"input_ids": np.where(seg > 0, ids, 0), "segment_ids": seg, "loss_mask": loss_mask,
          "positions": np.maximum(np.cumsum(seg, axis=1) - 1, 0).astype(np.int32)}


def _reward(prompt_ids, response_ids, response_mask):
  return (np.where(response_mask, response_ids, 0) % 3 == 0).sum(axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def policy():
  return models.Transformer(CONFIG, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("chunk, last", [(None, None), (8, None), (None, 4), (8, 4)])
def test_lm_stats_at_a_temperature_are_those_of_the_scaled_logits(policy, chunk, last):
  b = _prompts()
  ids, seg, pos = b["input_ids"], b["segment_ids"], b["positions"]
  stats = lm.lm_stats(policy, ids, seg, pos, chunk_size=chunk, last=last, temperature=TAU)
  # Reference: float64 log-softmax of logits / τ at the next token.
  logits = np.asarray(policy(jnp.asarray(ids), segment_ids=seg, positions=pos), np.float64)
  scaled = logits / TAU
  v_ref = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
  nxt = np.concatenate([ids[:, 1:], np.zeros((ROWS, 1), ids.dtype)], axis=1)
  q_ref = np.take_along_axis(scaled, nxt[..., None], axis=-1)[..., 0]
  t = ids.shape[1]
  start = 0 if last is None else t - last
  keep = (seg > 0) & (np.arange(t)[None] >= start)
  np.testing.assert_allclose(np.asarray(stats.log_probs)[keep], (q_ref - v_ref)[keep],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stats.v)[keep], v_ref[keep], rtol=1e-5, atol=1e-5)
  # τ changes them.
  plain = lm.lm_stats(policy, ids, seg, pos, chunk_size=chunk, last=last)
  assert np.abs(np.asarray(plain.log_probs)[keep] - np.asarray(stats.log_probs)[keep]).max() > 0.1


def test_a_temperature_that_is_not_positive_is_refused(policy):
  b = _prompts()
  for bad in (0, -0.5, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="temperature="):
      lm.lm_stats(policy, b["input_ids"], b["segment_ids"], b["positions"], chunk_size=None,
                  temperature=bad)
  # NumPy scalars are numbers too.
  lm.lm_stats(policy, b["input_ids"], b["segment_ids"], b["positions"], chunk_size=None,
              temperature=np.float32(0.7))
  with pytest.raises(ValueError, match=r"config\.objective\.grpo\.temperature=0\.0"):
    objectives.GRPOConfig(temperature=0.0)
  with pytest.raises(ValueError, match=r"config\.objective\.ppo\.temperature"):
    objectives.PPOConfig(temperature=-1.0)


def _response_logp_mean(sample):
  where = np.asarray(lm.lm_targets(sample["sample_loss_mask"]))
  return float(np.asarray(sample["sample_old_logps"], np.float64)[where].mean()), where


def test_grpo_sampler_and_objective_score_the_sampling_distribution(policy):
  model_def, params = split_model(policy)
  sampler = rollouts.PolicySampler(model_def, max_new_tokens=M, temperature=TAU, num_samples=2,
                                   reward_fn=_reward, seed=3)
  sample, stats = sampler.sample(_prompts(), params, step=0)
  mean_logp, where = _response_logp_mean(sample)
  # The decode-time log-probs (KV cache, logits / τ) give the sampler's entropy statistic:
  # minus their mean over the response tokens, which the scored targets are.
  assert where.sum() == round(stats["response_length"] * ROWS * 2)
  assert -mean_logp == pytest.approx(stats["entropy"], rel=1e-5, abs=1e-6)
  np.testing.assert_array_equal(sample["sample_ref_logps"], sample["sample_old_logps"])
  assert stats["kl"] == 0.0

  batch = jax.tree.map(jnp.asarray, {k: v for k, v in sample.items() if k.startswith("sample_")})
  model = model_def.merge(params)
  for tau, consistent in ((TAU, True), (1.0, False)):
    objective = registry.get("grpo").build(objectives.GRPOConfig(
        max_new_tokens=M, temperature=tau, num_samples=2))
    terms, metrics = objective(model, batch, jax.random.key(0))
    assert np.isfinite(float(terms.mean()))
    if consistent:  # ratio 1 and KL 0 on the first update, as at τ = 1
      assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-6)
      assert float(metrics["clip_fraction"]) == 0.0
    else:  # scored at τ = 1, the same samples look like another policy's
      assert float(metrics["kl"]) > 1e-3


def test_ppo_sampler_and_objective_score_the_sampling_distribution():
  model = models.PolicyValueModel(models.Transformer(CONFIG, rngs=nnx.Rngs(1)),
                                  rngs=nnx.Rngs(2))
  model_def, params = split_model(model)
  sampler = rollouts.PolicySampler(model_def, max_new_tokens=M, temperature=TAU,
                                   reward_fn=_reward, seed=4,
                                   value_targets=rollouts.ValueTargets())
  sample, stats = sampler.sample(_prompts(1), params, step=0)
  mean_logp, _ = _response_logp_mean(sample)
  assert -mean_logp == pytest.approx(stats["entropy"], rel=1e-5, abs=1e-6)
  batch = jax.tree.map(jnp.asarray, {k: v for k, v in sample.items() if k.startswith("sample_")})
  for tau, consistent in ((TAU, True), (1.0, False)):
    objective = registry.get("ppo").build(objectives.PPOConfig(max_new_tokens=M,
                                                               temperature=tau))
    _, metrics = objective(model_def.merge(params), batch, jax.random.key(0))
    if consistent:
      assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
      assert float(metrics["clip_fraction"]) == 0.0
    else:
      assert abs(float(metrics["approx_kl"])) > 1e-3
