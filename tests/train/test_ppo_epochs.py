"""Several optimizer updates per batch (`make_train_step(..., epochs, minibatches)`, PPO's
`ppo_epochs` and `num_minibatches`): against repeated single-update steps, every row once
per epoch, and a PPO run whose later updates move away from the sampling policy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from reverse_task import ALPHABET, ReverseBatches

from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.losses.reductions import MaskedMean
from irl_jax.train import loop, optim, registry
from irl_jax.train.state import TrainState, init_train_state, split_model
from irl_jax.train.step import make_train_step


def _lm_batch(n=8, t=10):
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 11, (n, t)).astype(np.int32)
  loss = np.zeros((n, t), bool)
  loss[:, 3:] = True
  return {"input_ids": ids, "segment_ids": np.ones((n, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)), "loss_mask": loss}


def test_two_epochs_of_one_minibatch_equal_two_single_steps():
  cfg = models.ModelConfig(model_type="llama", vocab_size=11, hidden_size=16, num_layers=1,
                           num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                           max_position_embeddings=16)
  model_def, params = split_model(models.Transformer(cfg, rngs=nnx.Rngs(0)))
  objective = registry.get("mle").build()
  tx = optax.adam(1e-2)
  batch = _lm_batch()
  state = init_train_state(params, tx, 0)
  twice = jax.jit(make_train_step(model_def, objective, tx, epochs=2))
  once = jax.jit(make_train_step(model_def, objective, tx))
  got, metrics = twice(state, batch)
  want, m1 = once(init_train_state(params, tx, 0), batch)
  want, m2 = once(want, batch)
  # Row order does not change a whole-batch mean: the same two updates.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
               got.params, want.params)
  assert int(got.step) == 2 and float(metrics["train/updates_applied"]) == 2
  assert float(metrics["train/loss"]) == pytest.approx(
      (float(m1["train/loss"]) + float(m2["train/loss"])) / 2, rel=1e-5)
  assert float(metrics["train/finite"]) == 1.0


class _Linear(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.zeros((1,)))


def test_every_row_once_per_epoch_in_each_minibatch_split():
  model_def, params = split_model(_Linear())
  seen = []

  def objective(model, batch, rng):
    del rng
    loss = jnp.sum((model.w[0] - batch["y"]) ** 2)
    # Which rows this minibatch holds, recorded from inside the compiled step.
    jax.debug.callback(lambda ids: seen.append(np.asarray(ids).astype(int).tolist()),
                       batch["id"])
    return MaskedMean(loss, jnp.float32(batch["y"].shape[0])), {
        "rows": jnp.float32(batch["y"].shape[0])}

  batch = {"id": jnp.arange(8, dtype=jnp.float32), "y": jnp.linspace(-1, 1, 8)}
  tx = optax.sgd(0.1)
  step = jax.jit(make_train_step(model_def, objective, tx, epochs=3, minibatches=4))
  state, metrics = step(init_train_state(params, tx, 0), batch)
  jax.effects_barrier()
  assert float(metrics["train/rows"]) == 2 and int(state.step) == 12
  assert len(seen) == 12 and all(len(mb) == 2 for mb in seen)
  epochs = [[i for mb in seen[4 * e:4 * e + 4] for i in mb] for e in range(3)]
  for order in epochs:                      # every row exactly once per epoch
    assert sorted(order) == list(range(8))
  assert len({tuple(order) for order in epochs}) > 1   # a fresh order each epoch
  assert isinstance(state, TrainState)
  with pytest.raises(ValueError, match="8 rows do not split into minibatches=3"):
    make_train_step(model_def, objective, tx, minibatches=3)(
        init_train_state(params, tx, 0), batch)
  with pytest.raises(ValueError, match="epochs must be a positive integer"):
    make_train_step(model_def, objective, tx, epochs=0)


def test_sample_rows_are_cut_and_data_rows_go_whole():
  model_def, params = split_model(_Linear())
  shapes = []

  def objective(model, batch, rng):
    del rng
    shapes.append((batch["input_ids"].shape[0], batch["sample_y"].shape[0]))
    loss = jnp.sum((model.w[0] - batch["sample_y"]) ** 2)
    return MaskedMean(loss, jnp.float32(batch["sample_y"].shape[0])), {}

  batch = {"input_ids": jnp.zeros((2, 3), jnp.int32), "sample_y": jnp.linspace(-1, 1, 8)}
  tx = optax.sgd(0.1)
  jax.jit(make_train_step(model_def, objective, tx, epochs=1, minibatches=4))(
      init_train_state(params, tx, 0), batch)
  assert shapes[-1] == (2, 2)


def test_minibatches_that_do_not_divide_the_sample_rows_are_a_config_error():
  from experiments.configs import smoke

  c = smoke.get_config()
  c.objective.name = "ppo"
  c.data.batch_size = 4
  c.objective.ppo.num_samples = 1
  c.objective.ppo.num_minibatches = 3
  with pytest.raises(loop.ConfigError, match=r"config\.objective\.ppo\.num_minibatches=3: "
                                             r"the 4 sample rows"):
    loop.check_config(c)
  c.objective.ppo.num_minibatches = 2
  loop.check_config(c)


def test_ppo_epochs_update_away_from_the_sampling_policy(tmp_path):
  from experiments.configs import smoke
  from experiments.tasks import reverse

  tok = char_tokenizer(ALPHABET)
  runs = {}
  for epochs in (1, 2):
    c = smoke.get_config()
    c.objective.name = "ppo"
    c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 0, 2, 1
    c.progress_bar = c.tensorboard = c.export_hf = False
    c.objective.ppo.max_new_tokens = 6
    c.objective.ppo.num_samples = 2
    c.objective.ppo.ppo_epochs = epochs
    c.objective.ppo.num_minibatches = 2
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 1
    c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                        head_dim=16, intermediate_size=64)
    runs[epochs] = loop.train(c, str(tmp_path / str(epochs)),
                              data=(ReverseBatches(tok), lambda: iter(()), tok),
                              reward_fn=reverse.make_reward_fn)
  for epochs, summary in runs.items():
    assert summary["train/updates_applied"] == 2 * epochs
    assert summary["train/skipped_updates"] == 0
    # The schedule counts updates: the last step starts at update (steps − 1) · per batch.
    per_batch = 2 * epochs
    schedule = optim.learning_rate_schedule(learning_rate=3e-3, warmup_steps=per_batch,
                                            total_steps=2 * per_batch, decay="cosine")
    assert summary["train/learning_rate"] == pytest.approx(float(schedule(per_batch)))
  # With one pass, only the second minibatch's update sees a policy that moved since the
  # samples were drawn; a second pass moves it further from the sampling policy.
  assert runs[2]["train/approx_kl"] > runs[1]["train/approx_kl"] >= 0
