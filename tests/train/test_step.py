"""Tests for irl_jax/train/step.py, optim.py and sharding.py (single process)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax.losses import MaskedMean
from irl_jax.models import ModelConfig, Transformer
from irl_jax.train import objectives, optim, sharding
from irl_jax.train.state import init_train_state, split_model
from irl_jax.train.step import loss_and_grads, make_train_step

CONFIG = ModelConfig(model_type="llama", vocab_size=17, hidden_size=16, num_layers=2, num_heads=2,
                     num_kv_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=32)


def _batch(seed=0, b=8, t=12):
  rng = np.random.default_rng(seed)
  return {"input_ids": rng.integers(1, 17, (b, t)).astype(np.int32),
          "segment_ids": np.ones((b, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
          "loss_mask": np.arange(t)[None] >= rng.integers(2, 8, (b, 1))}


@pytest.fixture(scope="module")
def setup():
  model = Transformer(CONFIG, rngs=nnx.Rngs(0))
  model_def, params = split_model(model)
  return model, model_def, params


def test_micro_batches_give_the_exact_token_mean(setup):
  _, model_def, params = setup
  batch = _batch()
  obj = objectives.iq_learn_objective(gamma=0.9, td_weight=0.5)
  l1, g1, m1, _ = loss_and_grads(model_def, obj, params, batch, jax.random.key(0))
  l4, g4, m4, _ = jax.jit(lambda p, b: loss_and_grads(
      model_def, obj, p, b, jax.random.key(0), micro_batches=4))(params, batch)
  # Rows hold different numbers of targets, so averaging 4 micro-batch means would differ;
  # sums and counts give the whole-batch token mean.
  np.testing.assert_allclose(l4, l1, rtol=1e-6)
  assert float(m4["tokens"]) == float(m1["tokens"])  # counts add over micro-batches
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4), strict=True):
    np.testing.assert_allclose(a, b, atol=2e-7)
  with pytest.raises(ValueError, match="not divisible by micro_batches=3"):
    loss_and_grads(model_def, obj, params, batch, jax.random.key(0), micro_batches=3)


def test_step_metrics_and_learning(setup):
  _, model_def, params = setup
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=2, total_steps=30)
  step = jax.jit(make_train_step(model_def, objectives.mle_objective(), tx, schedule),
                 donate_argnums=0)
  state = init_train_state(params, tx, 0)
  batch = _batch()
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["train/loss"]))
  for key in ("train/loss", "train/grad_norm", "train/param_norm", "train/learning_rate",
              "train/finite", "train/nll", "train/tokens"):
    assert key in metrics and np.ndim(metrics[key]) == 0
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]  # memorises one batch


def test_non_finite_update_is_refused(setup):
  _, model_def, params = setup
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=10)
  inner = objectives.mle_objective()

  def poisoned(model, batch, rng):
    loss, metrics = inner(model, batch, rng)
    return MaskedMean(loss.sum * jnp.inf, loss.count), metrics

  state = init_train_state(params, tx, 0)
  new, metrics = jax.jit(make_train_step(model_def, poisoned, tx, schedule))(state, _batch())
  assert float(metrics["train/finite"]) == 0.0
  assert int(new.step) == 0
  for a, b in zip(jax.tree.leaves((state.params, state.opt_state)),
                  jax.tree.leaves((new.params, new.opt_state)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_schedule_warmup_and_cosine():
  sched = optim.learning_rate_schedule(learning_rate=1.0, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose([sched(0), sched(5), sched(10)], [0.0, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(sched(110), 0.1, atol=1e-6)  # cosine down to 10%
  with pytest.raises(ValueError, match="decay"):
    optim.learning_rate_schedule(learning_rate=1.0, warmup_steps=1, total_steps=2, decay="step")


def test_mesh_and_partition_specs(setup):
  model, _, _ = setup
  mesh = sharding.make_mesh({"data": -1})
  assert mesh.shape == {"data": 1, "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match="needs 4 devices"):
    sharding.make_mesh({"data": 4})
  with pytest.raises(ValueError, match="unknown mesh axes"):
    sharding.make_mesh({"model": 1})
  spec = sharding._spec_for((16, 32), ("embed", "mlp"), jax.make_mesh(
      (1, 1, 1), sharding.MESH_AXES))
  assert spec == jax.sharding.PartitionSpec(None, None)  # size-1 axes replicate
  shardings = sharding.param_shardings(model, mesh)
  assert set(shardings) == {"embed", "final_norm", "layers", "lm_head"}


def test_bf16_compute_with_float32_master_weights():
  model = Transformer(CONFIG, rngs=nnx.Rngs(0), param_dtype=jnp.float32, dtype=jnp.bfloat16)
  model_def, params = split_model(model)
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=10)
  state = init_train_state(params, tx, 0)
  step = jax.jit(make_train_step(model_def, objectives.iq_learn_objective(
      gamma=0.9, td_weight=0.1, chunk_size=8), tx, schedule))
  for _ in range(3):
    state, metrics = step(state, _batch())
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert metrics["train/loss"].dtype == jnp.float32 and np.isfinite(metrics["train/loss"])
  # Activations really are bf16: the hidden states of the merged model.
  hidden = model_def.merge(state.params)(_batch()["input_ids"], return_hidden=True)
  assert hidden.dtype == jnp.bfloat16


def test_reference_log_probs_are_frozen_and_precomputed(setup):
  from irl_jax.train.objectives import sequence_log_probs
  from irl_jax.train.rollouts import ReferenceLogProbs

  _, model_def, params = setup
  lm = _batch(seed=3)
  pairs = {k: v.reshape(4, 2, -1) for k, v in lm.items()}
  ref = ReferenceLogProbs(model_def, params)
  out = ref(pairs, params=None)
  want = sequence_log_probs(model_def.merge(params), pairs)
  np.testing.assert_allclose(out["ref_logps"], want, rtol=1e-6)
  # Training the policy does not move the reference.
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=10)
  step = jax.jit(make_train_step(model_def, objectives.direct_preference_objective(
      kind="dpo", beta=0.1), tx, schedule))
  state = init_train_state(params, tx, 0)
  pairs["rank_mask"] = np.ones((4, 2), bool)
  for _ in range(3):
    state, metrics = step(state, out | {"rank_mask": pairs["rank_mask"]})
  assert float(metrics["train/finite"]) == 1.0
  np.testing.assert_array_equal(ref(pairs)["ref_logps"], out["ref_logps"])
  moved = sequence_log_probs(model_def.merge(state.params), pairs)
  assert not np.allclose(moved, out["ref_logps"])


def test_entropy_bonus_objective_against_dense_reference(setup):
  model, _, _ = setup
  batch = _batch(seed=5)
  plain, m0 = objectives.mle_objective()(model, batch, None)
  bonus, m1 = objectives.mle_objective(entropy_bonus=0.1)(model, batch, None)
  logits = np.asarray(model(batch["input_ids"]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  entropy = -(np.exp(logp) * logp).sum(-1)
  where = np.concatenate([batch["loss_mask"][:, 1:], np.zeros((8, 1), bool)], 1)
  want_entropy = (entropy * where).sum() / where.sum()
  np.testing.assert_allclose(m1["entropy"], want_entropy, rtol=1e-5)
  np.testing.assert_allclose(m1["nll"], m0["nll"], rtol=1e-6)
  np.testing.assert_allclose(bonus.mean(), plain.mean() - 0.1 * want_entropy, rtol=1e-5)


def test_batch_without_targets_does_not_move_the_weights(setup):
  _, model_def, params = setup
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=10)
  step = jax.jit(make_train_step(model_def, objectives.mle_objective(), tx, schedule))
  state = init_train_state(params, tx, 0)
  state, _ = step(state, _batch(seed=1))  # Adam now has momentum
  empty = _batch(seed=2)
  empty["loss_mask"] = np.zeros_like(empty["loss_mask"])
  new, metrics = step(state, empty)
  assert float(metrics["train/skipped_empty"]) == 1.0
  assert float(metrics["train/finite"]) == 1.0
  assert int(new.step) == int(state.step) == 1
  for a, b in zip(jax.tree.leaves((state.params, state.opt_state)),
                  jax.tree.leaves((new.params, new.opt_state)), strict=True):
    np.testing.assert_array_equal(a, b)
  new, metrics = step(new, _batch(seed=3))
  assert float(metrics["train/skipped_empty"]) == 0.0 and int(new.step) == 2


def test_model_embeds_out_of_vocabulary_ids_as_nan_under_jit(setup):
  model, _, _ = setup
  ids = _batch()["input_ids"]
  for bad in (-1, CONFIG.vocab_size, CONFIG.vocab_size + 5):
    poisoned = ids.copy()
    poisoned[1, 4] = bad
    logits = nnx.jit(lambda m, x: m(x))(model, poisoned)
    # -1 must not wrap to the last row: the row holding it, and only it, is NaN.
    assert np.isnan(np.asarray(logits)[1, 4:]).all(), bad
    assert np.isfinite(np.asarray(logits)[[0, *range(2, 8)]]).all()


def _with_samples(batch, seed, *, grpo=False):
  rng = np.random.default_rng(seed)
  b, t = batch["input_ids"].shape
  samples = _batch(seed + 100, b=b, t=t + 3)
  out = dict(batch)
  out.update({f"sample_{k}": v for k, v in samples.items()})
  out["sample_terminal"] = rng.random(b) < 0.5  # some rows truncated (bootstrapped)
  if grpo:
    out["sample_old_logps"] = -rng.random((b, t + 3)).astype(np.float32)
    out["sample_ref_logps"] = -rng.random((b, t + 3)).astype(np.float32)
    out["sample_advantages"] = rng.standard_normal(b).astype(np.float32)
  return out


@pytest.mark.parametrize("name, hp", [
    ("iq_learn_online", {"gamma": 0.9, "td_weight": 0.5, "mix": 0.3}),
    ("iq_learn_online", {"gamma": 0.9, "td_weight": 0.5, "mix": 0.3, "chi2_on_mixture": True}),
    ("grpo", {"normaliser": "token"}),
    ("grpo", {"normaliser": "sequence"}),
])
def test_sampling_objectives_are_exact_across_micro_batches(setup, name, hp):
  from irl_jax.train import registry

  _, model_def, params = setup
  spec = registry.get(name)
  obj = spec.build(spec.hyperparameters(**hp))
  batch = _with_samples(_batch(seed=11), 11, grpo=name == "grpo")
  l1, g1, _, c1 = loss_and_grads(model_def, obj, params, batch, jax.random.key(0))
  l4, g4, _, c4 = jax.jit(lambda p, b: loss_and_grads(
      model_def, obj, p, b, jax.random.key(0), micro_batches=4))(params, batch)
  np.testing.assert_allclose(l4, l1, rtol=2e-6)
  np.testing.assert_allclose(c4, c1)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4), strict=True):
    np.testing.assert_allclose(a, b, atol=2e-7, rtol=1e-5)


def test_online_iq_learn_populations_add_up_to_the_loss(setup):
  # The trainer's two-population form equals losses.iq_learn_online's scalar loss.
  from irl_jax import losses
  from irl_jax.train import lm, registry

  model, _, _ = setup
  batch = _with_samples(_batch(seed=12), 12)
  for chi2_on_mixture in (False, True):
    hp = dict(gamma=0.9, td_weight=0.5, mix=0.3, chi2_on_mixture=chi2_on_mixture)
    obj = registry.get("iq_learn_online").build(
        registry.get("iq_learn_online").hyperparameters(**hp))
    (expert, policy), _ = obj(model, batch, None)
    stats, where = lm.batch_stats(model, batch)
    p_stats = lm.lm_stats(model, batch["sample_input_ids"], batch["sample_segment_ids"],
                          batch["sample_positions"], chunk_size=None)
    p_where = lm.lm_targets(batch["sample_loss_mask"])
    want, _ = losses.iq_learn_online(
        stats, p_stats, expert_where=where, policy_where=p_where, mix=0.3, gamma=0.9,
        td_weight=0.5, policy_terminal=batch["sample_terminal"],
        policy_bootstrap=lm.bootstrap_values(p_stats.v, p_where),
        chi2_on_mixture=chi2_on_mixture)
    np.testing.assert_allclose(expert.mean() + policy.mean(), want, rtol=1e-6)
    counts = obj.counts(batch)
    np.testing.assert_allclose([expert.count, policy.count], counts)
