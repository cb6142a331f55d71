"""A policy stage's evaluation samples are keyed by `(seed, step, eval batch)` on a stream of
their own: the same whatever the sampler drew before, apart from the training samples, and a
resumed run logs the eval metrics of an uninterrupted one."""

import json
import shutil

import numpy as np
import pytest
from reverse_task import ALPHABET, ReverseBatches, policy_stage_config

from irl_jax.data import char_tokenizer
from irl_jax.train import loop, rollouts
from irl_jax.train.state import split_model

ARCH = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
            intermediate_size=32)


@pytest.fixture(scope="module")
def tok():
  return char_tokenizer(ALPHABET)


def test_eval_samples_depend_on_seed_step_and_batch_only(tok):
  from irl_jax import models

  cfg = models.ModelConfig(model_type="llama", vocab_size=len(tok), max_position_embeddings=32,
                           **ARCH)
  from flax import nnx
  model_def, params = split_model(models.Transformer(cfg, rngs=nnx.Rngs(0)))
  batch = next(ReverseBatches(tok))
  make = lambda: rollouts.PolicySampler(model_def, max_new_tokens=6, num_samples=2, seed=3)
  ids = lambda out: out[0]["sample_input_ids"]
  fresh = ids(make().sample(batch, params, step=4, eval_batch=0))
  used = make()
  used(batch, params)  # the running key moves
  used.sample(batch, params, step=3)
  np.testing.assert_array_equal(ids(used.sample(batch, params, step=4, eval_batch=0)), fresh)
  # Other batches, other steps and the training samples of the same step differ.
  for other in (used.sample(batch, params, step=4, eval_batch=1),
                used.sample(batch, params, step=5, eval_batch=0),
                used.sample(batch, params, step=4)):
    assert not np.array_equal(ids(other), fresh)
  with pytest.raises(ValueError, match="eval_batch needs the step"):
    used.sample(batch, params, eval_batch=0)


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_a_resumed_grpo_run_logs_the_same_eval_metrics(tok, tmp_path, capsys):
  from experiments.tasks import reverse

  c = policy_stage_config("grpo", steps=2, eval_every=1, max_new_tokens=6, arch=ARCH)
  workdir = tmp_path / "run"

  def eval_batches():
    rows = ReverseBatches(tok, seed=9)
    return [next(rows) for _ in range(2)]

  data = (ReverseBatches(tok), eval_batches, tok)
  train = lambda: loop.train(c, str(workdir), data=data,
                             reward_fn=lambda t: reverse.make_reward_fn(tok))
  train()
  evals = {m["step"]: m for m in _lines(workdir / "metrics.jsonl") if "eval/loss" in m}
  assert sorted(evals) == [1, 2] and np.isfinite(evals[2]["eval/loss"])
  assert evals[1]["eval/loss"] != evals[2]["eval/loss"]

  # Lose the last checkpoint: the resumed run re-evaluates step 2 on the same samples.
  shutil.rmtree(workdir / "checkpoints" / "2")
  (workdir / "checkpoints" / "meta" / "2.json").unlink()
  for p in (workdir / "checkpoints" / "data_state").glob("2.*"):
    p.unlink()
  capsys.readouterr()
  data = (ReverseBatches(tok), eval_batches, tok)
  train()
  assert "resumed from step 1" in capsys.readouterr().out
  again = [m for m in _lines(workdir / "metrics.jsonl") if "eval/loss" in m][-1]
  assert again["step"] == 2
  assert again == evals[2]
