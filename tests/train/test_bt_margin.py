"""Bradley–Terry with margins read from the data: the objective against the formula
`ℓ = −log σ(r_c − r_r − m)`, the trainer's data path (file, TFDS, batches) and its bad
inputs."""

import json

import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.data import BadRowError, char_tokenizer
from irl_jax.train import loop, registry
from irl_jax.train.data_setup import build_data

ALPHABET = "abcdefgh="


def _config(path=""):
  from experiments.configs import smoke

  c = smoke.get_config()
  c.objective.name = "bradley_terry"
  c.objective.bradley_terry.use_margin = True
  c.data.path = path
  c.data.batch_size = 4
  c.data.seq_len = 16
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 0, 2, 1
  c.progress_bar = c.tensorboard = c.export_hf = False
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  return c


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _pairs(n=8, margins=True):
  rng = np.random.default_rng(0)
  rows = []
  for i in range(n):
    a = "".join(rng.choice(list("abcd"), 3))
    row = {"prompt": a + "=", "chosen": "a" + a, "rejected": "b" + a}
    if margins:
      row["margin"] = float(i) / 2
    rows.append(row)
  return rows


def test_objective_subtracts_each_pairs_margin():
  tok = char_tokenizer(ALPHABET)
  cfg = models.ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=16,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                           intermediate_size=32, max_position_embeddings=32)
  rm = models.RewardModel(models.Transformer(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  rng = np.random.default_rng(1)
  ids = rng.integers(4, len(tok), (3, 2, 6)).astype(np.int32)
  batch = {"input_ids": ids, "segment_ids": np.ones_like(ids),
           "positions": np.broadcast_to(np.arange(6, dtype=np.int32), ids.shape).copy(),
           "loss_mask": np.ones(ids.shape, bool), "rank_mask": np.ones((3, 2), np.int32),
           "margin": np.array([0.0, 0.5, 2.0], np.float32)}
  spec = registry.get("bradley_terry")
  loss, _ = spec.build(spec.hyperparameters(use_margin=True))(rm, batch, None)
  r = np.asarray(rm(ids.reshape(6, 6), attention_mask=np.ones((6, 6), bool),
                    positions=batch["positions"].reshape(6, 6)), np.float64).reshape(3, 2)
  d = r[:, 0] - r[:, 1] - batch["margin"]
  want = np.mean(np.log1p(np.exp(-d)))            # −log σ(d)
  assert float(loss.mean()) == pytest.approx(want, rel=1e-5)
  plain, _ = spec.build()(rm, batch, None)       # the margin is read only when asked for
  assert float(plain.mean()) == pytest.approx(
      np.mean(np.log1p(np.exp(-(r[:, 0] - r[:, 1])))), rel=1e-5)
  del batch["margin"]
  with pytest.raises(ValueError, match="use_margin is True but the batch has no 'margin'"):
    spec.build(spec.hyperparameters(use_margin=True))(rm, batch, None)


def test_trainer_batches_carry_the_files_margins(tmp_path):
  path = _write(tmp_path / "pairs.jsonl", _pairs())
  c = _config(path)
  train_iter, _, _ = build_data(c, str(tmp_path / "run"))
  batch = next(train_iter)
  assert batch["margin"].shape == (4,) and batch["margin"].dtype == np.float32
  assert set(batch["margin"].tolist()) <= {i / 2 for i in range(8)}
  # Without use_margin the same file trains without them.
  c.objective.bradley_terry.use_margin = False
  assert "margin" not in next(build_data(c, str(tmp_path / "run2"))[0])
  # Runs end to end, with and without the margins: the same first batch, and margins
  # m >= 0 (not all 0) can only raise −log σ(d − m) above −log σ(d).
  first = {}
  for use in (True, False):
    c = _config(path)
    c.steps = c.checkpoint_every = 1
    c.objective.bradley_terry.use_margin = use
    first[use] = loop.train(c, str(tmp_path / f"train_{use}"))["train/loss"]
  assert np.isfinite(first[True]) and first[True] > first[False]


def test_missing_and_bad_margins_name_their_row(tmp_path):
  rows = _pairs()
  del rows[2]["margin"]
  c = _config(_write(tmp_path / "missing.jsonl", rows))
  # Found when the data are set up, before any batch is drawn.
  with pytest.raises(BadRowError, match=r"missing\.jsonl:3: no 'margin' field"):
    build_data(c, str(tmp_path / "run"))
  # Skipped and counted under on_bad_row="skip" (the pipeline's own check).
  c.data.on_bad_row = "skip"
  train_iter = build_data(c, str(tmp_path / "run_skip"))[0]
  for _ in range(4):                              # two epochs of the 7 good rows
    assert next(train_iter)["margin"].shape == (4,)
  rows = _pairs()
  rows[4]["margin"] = -1.0
  c = _config(_write(tmp_path / "negative.jsonl", rows))
  with pytest.raises(BadRowError, match=r"negative\.jsonl:5: field 'margin' must be finite "
                                        r"and >= 0, got -1.0 \[bad_margin\]"):
    build_data(c, str(tmp_path / "run2"))
  rows[4]["margin"] = "big"
  c = _config(_write(tmp_path / "string.jsonl", rows))
  with pytest.raises(BadRowError, match=r"string\.jsonl:5: field 'margin' must be a number"):
    build_data(c, str(tmp_path / "run3"))
  c = _config(_write(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b",
                                              "rejected": "\n\nHuman: a\n\nAssistant: c"}]))
  c.data.format = "hh_rlhf"
  with pytest.raises(ValueError, match=r"only data\.format='preferences' stores"):
    build_data(c, str(tmp_path / "run4"))
  from irl_jax.train.objectives import reward_model_objective
  with pytest.raises(ValueError, match="use_margin is for the Bradley–Terry loss"):
    reward_model_objective(ranking="plackett_luce", use_margin=True)
