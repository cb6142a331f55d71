"""Tests for irl_jax/train/generation.py: within-prompt Spearman, extracted sequence rewards
(checked against the math of docs/objectives.md §1.3, §1.5, §4.1), and generation metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from flax import nnx

from irl_jax.data import char_tokenizer, lm_batches
from irl_jax.models import ModelConfig, Transformer, generate
from irl_jax.train import generation, rollouts

ALPHABET = "abcd="
TOKENIZER = char_tokenizer(ALPHABET)
PAD, BOS, EOS = 0, 1, 2
CONFIG = ModelConfig(model_type="llama", vocab_size=len(TOKENIZER), hidden_size=16, num_layers=1,
                     num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                     max_position_embeddings=32, bos_token_id=BOS, eos_token_id=EOS,
                     pad_token_id=PAD)
EXAMPLES = [{"prompt": "ab=", "response": "ba"}, {"prompt": "abcd=", "response": "dcba"},
            {"prompt": "c=", "response": "c"}]
SEQ_LEN = 12


def _batch(examples=EXAMPLES, batch_size=None):
  ds = lm_batches(examples, TOKENIZER, batch_size=batch_size or len(examples), seq_len=SEQ_LEN,
                  shuffle=False, num_epochs=1, shard_index=0, shard_count=1)
  return next(iter(ds))


@pytest.fixture(scope="module")
def model():
  # Seed 6: greedy decoding answers the prompts differently (some with a "d", some not).
  return Transformer(CONFIG, rngs=nnx.Rngs(6))


# -- within_group_spearman ---------------------------------------------------------------------


def _reference_spearman(values, scores, groups):
  rhos = []
  for g in dict.fromkeys(groups):
    idx = [i for i, h in enumerate(groups) if h == g]
    x, y = [values[i] for i in idx], [scores[i] for i in idx]
    if len(idx) < 2 or len(set(x)) == 1 or len(set(y)) == 1:
      continue  # undefined: skipped, not counted
    rhos.append(scipy.stats.spearmanr(x, y).statistic)
  return (float(np.mean(rhos)) if rhos else math.nan), len(rhos)


def test_within_group_spearman_matches_scipy_per_group():
  rng = np.random.default_rng(0)
  values, scores, groups = [], [], []
  for g, size in enumerate([5, 4, 3, 6, 1, 4]):
    v = rng.normal(size=size).round(1)
    s = rng.integers(0, 3, size).astype(float)  # ties
    if g == 2:
      s[:] = 1.0  # constant scores: skipped
    if g == 5:
      v[:] = 0.5  # constant rewards: skipped
    values += v.tolist()
    scores += s.tolist()
    groups += [f"p{g}"] * size
  order = rng.permutation(len(values))  # groups need not be contiguous
  values = [values[i] for i in order]
  scores = [scores[i] for i in order]
  groups = [groups[i] for i in order]
  rho, n = generation.within_group_spearman(values, scores, groups)
  ref_rho, ref_n = _reference_spearman(values, scores, groups)
  assert n == ref_n
  assert 1 <= n <= 3  # groups 2, 4 (one row) and 5 are left out
  np.testing.assert_allclose(rho, ref_rho, rtol=1e-12)
  # Perfectly ranked groups give 1, reversed ones -1, and their mean is the plain mean.
  rho, n = generation.within_group_spearman([1, 2, 3, 3, 2, 1], [0, 1, 2, 0, 1, 2],
                                            [0, 0, 0, 1, 1, 1])
  assert (rho, n) == (0.0, 2)
  rho, n = generation.within_group_spearman([1, 2, 3], [0, 1, 2], [0, 0, 0])
  assert n == 1 and rho == pytest.approx(1.0)


def test_within_group_spearman_without_a_defined_group_is_nan():
  rho, n = generation.within_group_spearman([1.0, 2.0, 3.0], [1.0, 1.0, 0.0], [0, 0, 1])
  assert n == 0 and math.isnan(rho)


# -- sequence rewards --------------------------------------------------------------------------


def _reference_rewards(model, batch, gamma):
  """`R(y) = Σ_t r̂_t`, `r̂_t = q_t − γ v_{t+1}` over the response targets, the state after
  the final EOS absorbing (value 0), written out from the logits in float64."""
  logits = np.asarray(model(jnp.asarray(batch["input_ids"]),
                            segment_ids=jnp.asarray(batch["segment_ids"]),
                            positions=jnp.asarray(batch["positions"])), np.float64)
  ids, loss_mask = np.asarray(batch["input_ids"]), np.asarray(batch["loss_mask"], bool)
  out = []
  for b in range(ids.shape[0]):
    targets = np.flatnonzero(loss_mask[b])  # token positions of the response (EOS included)
    assert targets.size and ids[b, targets[-1]] == EOS
    total = 0.0
    for j, pos in enumerate(targets):
      state = pos - 1  # the logits predicting token `pos`
      q = logits[b, state, ids[b, pos]]
      v_next = 0.0 if j == len(targets) - 1 else scipy.special.logsumexp(logits[b, pos])
      total += q - gamma * v_next
    out.append(total)
  return np.asarray(out), logits


@pytest.mark.parametrize("gamma", [1.0, 0.7, 0.0])
def test_sequence_rewards_follow_the_documented_math(model, gamma):
  batch = _batch()
  rewards = generation.sequence_rewards(model, batch, gamma=gamma)
  ref, logits = _reference_rewards(model, batch, gamma)
  assert rewards.shape == (len(EXAMPLES),)
  np.testing.assert_allclose(rewards, ref, rtol=1e-4, atol=1e-4)
  if gamma == 1.0:
    # Telescoping (docs §4.2): Σ log π(y_t | s_t) + v_0 on terminal rows.
    for b in range(len(EXAMPLES)):
      targets = np.flatnonzero(batch["loss_mask"][b])
      logp = sum(logits[b, t - 1, batch["input_ids"][b, t]]
                 - scipy.special.logsumexp(logits[b, t - 1]) for t in targets)
      v0 = scipy.special.logsumexp(logits[b, targets[0] - 1])
      np.testing.assert_allclose(rewards[b], logp + v0, rtol=1e-4, atol=1e-4)


def test_reward_ranking_uses_the_rewards_within_groups(model):
  # Two prompts, three responses each (correct and corrupted), shuffled groups.
  examples = [{"prompt": "ab=", "response": r} for r in ("ba", "bb", "aaa")] + [
      {"prompt": "cd=", "response": r} for r in ("dc", "d", "dcdc")]
  batch = _batch(examples)
  scores = np.asarray([1.0, 0.5, 0.0, 1.0, 0.5, 0.0])
  groups = np.asarray([0, 0, 0, 1, 1, 1])
  out = generation.reward_ranking(model, batch, scores, groups, gamma=0.9)
  ref, _ = _reference_rewards(model, batch, 0.9)
  np.testing.assert_allclose(out["rewards"], ref, rtol=1e-4, atol=1e-4)
  ref_rho, ref_n = _reference_spearman(ref.tolist(), scores.tolist(), groups.tolist())
  assert out["groups"] == ref_n == 2
  np.testing.assert_allclose(out["spearman"], ref_rho, atol=1e-12)


def test_batch_texts_decodes_prompts_and_references():
  prompts, refs = generation.batch_texts(_batch(), TOKENIZER)
  assert prompts == [e["prompt"] for e in EXAMPLES]
  assert refs == [e["response"] for e in EXAMPLES]  # EOS dropped


# -- generation_metrics ------------------------------------------------------------------------


def _contains_d(prompt, reference, response):
  del prompt, reference
  return (1.0 if "d" in response else 0.0), "d" in response


def _distinct(responses, n):
  grams = [tuple(w[i:i + n]) for w in (r.split() for r in responses)
           for i in range(len(w) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 0.0


def test_generation_metrics_greedy(model):
  # A padding row (no example) is left out of the prompts.
  batch = _batch(batch_size=len(EXAMPLES) + 1)
  assert batch["segment_ids"][-1].max() == 0
  num_samples, max_new = 2, 6
  key = jax.random.key(0)
  m = generation.generation_metrics(model, batch, TOKENIZER, checker=_contains_d, key=key,
                                    temperature=0.0, num_samples=num_samples,
                                    max_new_tokens=max_new, gamma=0.9)
  responses = m["responses"]
  assert len(responses) == len(EXAMPLES) * num_samples
  # Greedy decoding: each prompt's samples agree; decode them independently.
  real = {k: np.asarray(v)[:len(EXAMPLES)] for k, v in batch.items()}
  ids, mask = rollouts.prompts_of(real)
  out = generate(model, ids, mask, jax.random.key(123), max_new_tokens=max_new, temperature=0.0,
                 num_samples=num_samples, eos_id=EOS, pad_id=PAD)
  tokens, rmask = np.asarray(out.tokens), np.asarray(out.response_mask)
  mine = [TOKENIZER.decode([int(t) for t, k in zip(row, keep, strict=True) if k],
                           skip_special_tokens=True) for row, keep in zip(tokens, rmask,
                                                                           strict=True)]
  assert responses == mine
  assert responses[0::2] == responses[1::2]
  assert m["accuracy"] == pytest.approx(np.mean(["d" in r for r in responses]))
  assert 0.0 < m["accuracy"] < 1.0
  assert m["score"] == pytest.approx(m["accuracy"])
  assert m["mean_length"] == pytest.approx(rmask.sum(1).mean())
  assert 1 <= m["mean_length"] <= max_new
  assert m["distinct_2"] == pytest.approx(_distinct(responses, 2))
  assert m["distinct_3"] == pytest.approx(_distinct(responses, 3))
  assert m["self_bleu"] == pytest.approx(1.0)  # each prompt's two samples are identical
  assert m["entropy"] > 0.0 and math.isfinite(m["entropy"])
  # Identical samples score alike: no prompt has a defined correlation.
  assert m["reward_prompts"] == 0 and math.isnan(m["reward_spearman"])


def test_generation_metrics_sampled_matches_its_parts(model):
  """At temperature 1, the metrics are those of `generate` with the same key, scored by the
  checker, with the within-prompt correlation of the samples' sequence rewards."""
  batch = _batch()
  num_samples, max_new, gamma, prompt_len = 4, 5, 0.8, 6
  key = jax.random.key(3)
  m = generation.generation_metrics(model, batch, TOKENIZER, checker=_contains_d, key=key,
                                    temperature=1.0, num_samples=num_samples,
                                    max_new_tokens=max_new, gamma=gamma, prompt_len=prompt_len)
  ids, mask = rollouts.prompt_prefix(batch, prompt_len)
  out = generate(model, ids, mask, key, max_new_tokens=max_new, temperature=1.0,
                 num_samples=num_samples, eos_id=EOS, pad_id=PAD)
  tokens, rmask = np.asarray(out.tokens), np.asarray(out.response_mask)
  mine = [TOKENIZER.decode([int(t) for t, k in zip(row, keep, strict=True) if k],
                           skip_special_tokens=True) for row, keep in zip(tokens, rmask,
                                                                           strict=True)]
  assert m["responses"] == mine
  assert len(mine) == len(EXAMPLES) * num_samples
  assert len(set(mine)) > 1  # sampled, not greedy
  scores = [float("d" in r) for r in mine]
  assert m["accuracy"] == pytest.approx(np.mean(scores))
  owner = np.repeat(np.arange(len(EXAMPLES)), num_samples)
  s = rollouts.sample_arrays(out)
  rewards = generation.sequence_rewards(model, {
      "input_ids": s["sample_input_ids"], "segment_ids": s["sample_segment_ids"],
      "positions": s["sample_positions"], "loss_mask": s["sample_loss_mask"]}, gamma=gamma)
  ref_rho, ref_n = _reference_spearman(rewards.tolist(), scores, owner.tolist())
  assert m["reward_prompts"] == ref_n
  assert 1 <= ref_n <= len(EXAMPLES)
  np.testing.assert_allclose(m["reward_spearman"], ref_rho, atol=1e-9)
  assert 0.0 <= m["self_bleu"] <= 1.0
  assert m["entropy"] > 0.0
  assert m["mean_length"] == pytest.approx(rmask.sum(1).mean())
  # A prompt longer than prompt_len is refused, not cut.
  with pytest.raises(ValueError, match="row 1 has a prompt of 6 tokens"):
    generation.generation_metrics(model, batch, TOKENIZER, checker=_contains_d, key=key,
                                  temperature=1.0, num_samples=2, max_new_tokens=2, gamma=gamma,
                                  prompt_len=5)


def test_generation_metrics_needs_a_real_row(model):
  batch = _batch()
  empty = {k: np.zeros_like(v) for k, v in batch.items()}
  with pytest.raises(ValueError, match="no examples"):
    generation.generation_metrics(model, empty, TOKENIZER, checker=_contains_d,
                                  key=jax.random.key(0), temperature=0.0, num_samples=2,
                                  max_new_tokens=2, gamma=1.0)
