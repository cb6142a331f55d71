"""Scoring only the responses of sampled rows (`lm.lm_stats(..., last=)`, `response_window`):
the windowed statistics equal the full ones where they are kept and are zero before; GRPO and
PPO built with `max_new_tokens` give the full objective's loss and gradients on the samplers'
`[prompt | response]` rows; a target before the window makes the loss NaN, counts it, and the
trainer's error names `max_new_tokens`; the PPO sampler's log-probs are the full ones on the
targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.losses import MaskedMean
from irl_jax.models import ModelConfig
from irl_jax.train import lm, objectives, registry

CONFIG = ModelConfig(model_type="llama", vocab_size=37, hidden_size=16, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=32)
N, P, M = 4, 5, 6  # rows, prompt columns, response columns
T = P + M


def _rows(seed=0):
  """Sampler-layout rows: left-padded prompts in the first P columns, ragged responses in the
  last M (right-padded with 0), as `rollouts.sample_arrays` makes them."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, CONFIG.vocab_size, (N, T)).astype(np.int32)
  prompt_real = np.arange(P)[None] >= rng.integers(0, 3, (N, 1))
  resp_len = rng.integers(1, M + 1, (N, 1))
  resp_real = np.arange(M)[None] < resp_len
  real = np.concatenate([prompt_real, resp_real], axis=1)
  ids = np.where(real, ids, 0)
  positions = np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int32)
  loss_mask = np.concatenate([np.zeros((N, P), bool), resp_real], axis=1)
  return {"sample_input_ids": ids, "sample_segment_ids": real.astype(np.int32),
          "sample_positions": positions, "sample_loss_mask": loss_mask}


@pytest.fixture(scope="module")
def policy():
  return models.Transformer(CONFIG, rngs=nnx.Rngs(0))


def test_response_window_sizes():
  assert lm.response_window(M, T) == M + 1
  assert lm.response_window(None, T) is None
  assert lm.response_window(0, T) is None
  assert lm.response_window(T - 1, T) is None  # M + 1 == T: every column anyway
  assert lm.response_window(T + 5, T) is None
  where = np.zeros((2, T), bool)
  where[1, T - M - 2] = where[0, T - 1] = True
  assert int(lm.targets_before(where, M + 1)) == 1
  assert int(lm.targets_before(where, None)) == 0
  with pytest.raises(ValueError, match="last=0"):
    lm.window_stats(jnp.zeros((1, T, 16)), None, None, jnp.zeros((1, T), jnp.int32),
                    jnp.ones((1, T), jnp.int32), chunk_size=None, last=0)


@pytest.mark.parametrize("chunk", [None, 16])
def test_windowed_stats_equal_the_full_ones_and_zero_before(policy, chunk):
  b = _rows()
  args = (b["sample_input_ids"], b["sample_segment_ids"], b["sample_positions"])
  stats = jax.jit(lambda m, last: lm.lm_stats(m, *args, chunk_size=chunk, last=last),
                  static_argnums=1)
  full, part = stats(policy, None), stats(policy, M + 1)
  s = T - M - 1
  for f, p in zip(full, part, strict=True):
    np.testing.assert_allclose(np.asarray(p)[:, s:], np.asarray(f)[:, s:], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(p)[:, :s], 0.0)

  # The gradient of the targets' summed log-probs is the same through either.
  where = lm.lm_targets(b["sample_loss_mask"])
  model_def, params = nnx.split(policy)

  def total(params, last):
    stats = lm.lm_stats(nnx.merge(model_def, params), *args, chunk_size=chunk, last=last)
    return jnp.sum(jnp.where(where, stats.log_probs, 0.0))

  grad = jax.jit(jax.grad(total), static_argnums=1)
  g_full, g_part = grad(params, None), grad(params, M + 1)
  for a, c in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_part), strict=True):
    np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-6)


def _grpo_batch(policy, seed=0):
  from reverse_task import with_grpo_fields

  return with_grpo_fields(policy, _rows(seed), seed)


def _loss_and_grads(objective, model, batch):
  model_def, params = nnx.split(model)

  def f(params):
    terms, metrics = objective(nnx.merge(model_def, params), batch, jax.random.key(0))
    return terms.mean(), metrics

  return jax.value_and_grad(f, has_aux=True)(params)


def test_grpo_with_max_new_tokens_is_the_full_objective(policy):
  hp = dict(clip_epsilon=0.2, kl_coef=0.04, normaliser="token")
  batch = _grpo_batch(policy)
  (full, _), g_full = _loss_and_grads(objectives.grpo_objective(**hp), policy, batch)
  spec = registry.get("grpo")
  # These rows' prompts all differ: no groups to share (tests/train/test_grpo_shared_prompts.py).
  windowed = spec.build(objectives.GRPOConfig(max_new_tokens=M, share_prompts=False, **hp))
  (part, metrics), g_part = _loss_and_grads(windowed, policy, batch)
  assert np.isfinite(float(full)) and float(full) != 0.0
  np.testing.assert_allclose(float(part), float(full), rtol=1e-6, atol=1e-7)
  assert float(metrics[lm.TARGETS_BEFORE_RESPONSE]) == 0.0
  for a, c in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_part), strict=True):
    np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-7)


def test_a_target_before_the_window_is_counted_and_poisons_the_loss(policy):
  batch = _grpo_batch(policy)
  mask = np.asarray(batch["sample_loss_mask"]).copy()
  mask[2, 2] = True  # a target at position 1, long before the last M + 1 columns
  batch = {**batch, "sample_loss_mask": jnp.asarray(mask)}
  windowed = registry.get("grpo").build(objectives.GRPOConfig(max_new_tokens=M))
  terms, metrics = windowed(policy, batch, jax.random.key(0))
  assert float(metrics[lm.TARGETS_BEFORE_RESPONSE]) == 1.0
  assert np.isnan(float(terms.sum)) and float(terms.count) == float(mask[:, 1:].sum())
  # Without the window the same batch is an ordinary, finite loss.
  terms, metrics = objectives.grpo_objective(clip_epsilon=0.2, kl_coef=0.04)(
      policy, batch, jax.random.key(0))
  assert np.isfinite(float(terms.mean())) and float(metrics[lm.TARGETS_BEFORE_RESPONSE]) == 0.0


def test_ppo_with_max_new_tokens_is_the_full_objective():
  model = models.PolicyValueModel(models.Transformer(CONFIG, rngs=nnx.Rngs(3)),
                                  rngs=nnx.Rngs(4))
  batch = dict(_grpo_batch(model.policy, seed=5))
  rng = np.random.default_rng(7)
  where = np.asarray(lm.lm_targets(batch["sample_loss_mask"]))
  for k in ("sample_advantages", "sample_old_values", "sample_returns"):
    batch[k] = jnp.asarray(np.where(where, rng.normal(size=(N, T)), 0.0).astype(np.float32))
  hp = dict(clip_epsilon=0.2, value_clip=0.2, vf_coef=0.1)
  (full, _), g_full = _loss_and_grads(objectives.ppo_objective(**hp), model, batch)
  (part, m), g_part = _loss_and_grads(objectives.ppo_objective(max_new_tokens=M, **hp), model,
                                      batch)
  np.testing.assert_allclose(float(part), float(full), rtol=1e-6, atol=1e-7)
  assert float(m[lm.TARGETS_BEFORE_RESPONSE]) == 0.0
  for a, c in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_part), strict=True):
    np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-7)


def test_the_trainer_names_max_new_tokens_when_sample_rows_hold_earlier_targets(tmp_path,
                                                                                 monkeypatch):
  from reverse_task import TINY_ARCH, policy_stage_config, train_on_edited_samples

  from irl_jax.train import loop

  c = policy_stage_config("grpo", steps=1, max_new_tokens=4, arch=TINY_ARCH)

  def early_target(out, call):  # sampled rows that break the layout
    mask = np.array(out["sample_loss_mask"])
    mask[0, 1] = True
    return {**out, "sample_loss_mask": mask}

  with pytest.raises(loop.NonFiniteError,
                     match=r"targets_before_response=1\b.*config\.objective\.grpo\.max_new_tokens"):
    train_on_edited_samples(c, tmp_path / "run", monkeypatch, early_target)


def test_the_ppo_guard_counts_and_poisons_too():
  model = models.PolicyValueModel(models.Transformer(CONFIG, rngs=nnx.Rngs(3)),
                                  rngs=nnx.Rngs(4))
  batch = dict(_grpo_batch(model.policy, seed=5))
  mask = np.asarray(batch["sample_loss_mask"]).copy()
  mask[0, 1] = mask[3, 2] = True  # two targets before the window
  batch["sample_loss_mask"] = jnp.asarray(mask)
  zeros = jnp.zeros((N, T), jnp.float32)
  batch.update(sample_advantages=zeros, sample_old_values=zeros, sample_returns=zeros)
  terms, metrics = objectives.ppo_objective(clip_epsilon=0.2, value_clip=0.2, vf_coef=0.1,
                                            max_new_tokens=M)(model, batch, jax.random.key(0))
  assert float(metrics[lm.TARGETS_BEFORE_RESPONSE]) == 2.0
  assert all(np.isnan(float(t.sum))
             for t in ((terms,) if isinstance(terms, MaskedMean) else terms))


@pytest.mark.parametrize("objective, fields", [
    ("grpo", {"optimizer.micro_batches": 2}),
    ("ppo", {"objective.ppo.num_minibatches": 2, "objective.ppo.ppo_epochs": 2}),
])
def test_the_trainer_counts_earlier_targets_over_micro_and_minibatches(tmp_path, monkeypatch,
                                                                       objective, fields):
  from reverse_task import TINY_ARCH, policy_stage_config, train_on_edited_samples

  from irl_jax.train import loop

  c = policy_stage_config(objective, steps=1, max_new_tokens=4, arch=TINY_ARCH)
  c.update_from_flattened_dict(fields)

  def early_targets(out, call):  # two rows in different halves break it
    mask = np.array(out["sample_loss_mask"])
    mask[0, 1] = mask[-1, 1] = True
    return {**out, "sample_loss_mask": mask}

  with pytest.raises(loop.NonFiniteError, match=(
      rf"targets_before_response=2\b.*config\.objective\.{objective}\.max_new_tokens")):
    train_on_edited_samples(c, tmp_path / "run", monkeypatch, early_targets)


def test_bootstrap_values_read_the_state_after_each_rows_last_target():
  """By hand: `where[:, t]` marks the target `input_ids[t+1]`, so the state after a row's
  last target is the one scored at column `t_last + 1` (clamped to the last column)."""
  v = jnp.arange(3 * 7, dtype=jnp.float32).reshape(3, 7)
  where = np.zeros((3, 7), bool)
  where[0, 1:4] = True    # last target at t = 3: the state after it is column 4
  where[1, [0, 2]] = True  # a hole: the last target is still t = 2, column 3
  where[2, 2:7] = True    # a target in the last column: clamped to column 6
  np.testing.assert_array_equal(np.asarray(lm.bootstrap_values(v, jnp.asarray(where))),
                                [0 * 7 + 4, 1 * 7 + 3, 2 * 7 + 6])
