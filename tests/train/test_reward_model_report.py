"""The trainer's held-out report of a reward-model run (`reward_model_eval.json`): accuracy,
calibration and reward distribution of the exported model on the eval rankings."""

import json

import numpy as np
import pytest

from irl_jax import eval as ev
from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.train import loop

ALPHABET = "abcdefgh"
T = 12


def _rankings(tok, n, seed):
  """`n` rankings of 3 responses (one row in four has only 2), `[n, 3, T]`; the response
  with more 'a' is ranked first."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((n, 3, T), np.int32)
  seg = np.zeros((n, 3, T), np.int32)
  rank = np.ones((n, 3), np.int32)
  for i in range(n):
    k = 2 if i % 4 == 0 else 3
    rank[i, k:] = 0
    counts = sorted(rng.choice(6, k, replace=False), reverse=True)
    for j, c in enumerate(counts):
      text = "a" * c + "".join(rng.choice(list("bcdefgh"), 7 - c))
      row = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]
      ids[i, j, :len(row)] = row
      seg[i, j, :len(row)] = 1
  pos = np.broadcast_to(np.arange(T, dtype=np.int32), ids.shape).copy()
  return {"input_ids": ids, "segment_ids": seg, "positions": pos, "rank_mask": rank}


class _Iter:
  def __init__(self, batch):
    self.batch = batch

  def __next__(self):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, state):
    del state


def test_reward_model_run_writes_its_held_out_report(tmp_path):
  from experiments.configs import smoke

  tok = char_tokenizer(ALPHABET)
  c = smoke.get_config()
  c.objective.name = "plackett_luce"
  c.data.batch_size = 8
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 3, 3, 3, 1
  c.progress_bar = c.tensorboard = False
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  train_batch = _rankings(tok, 8, 0)
  evals = [_rankings(tok, 8, 1), _rankings(tok, 8, 2)]
  summary = loop.train(c, str(tmp_path), data=(_Iter(train_batch), lambda: iter(evals), tok))
  report = json.loads((tmp_path / "reward_model_eval.json").read_text())
  # Recompute from the exported model: the first two responses of every ranking.
  rm = models.from_pretrained(str(tmp_path / "export"))
  chosen, rejected, every = [], [], []
  for b in evals:
    flat = {k: b[k].reshape(-1, T) for k in ("input_ids", "segment_ids", "positions")}
    r = np.asarray(rm(flat["input_ids"], attention_mask=flat["segment_ids"] > 0,
                      positions=flat["positions"])).reshape(8, 3)
    chosen.append(r[:, 0])
    rejected.append(r[:, 1])
    every.append(r[b["rank_mask"] > 0])
  want = ev.preference_metrics(np.concatenate(chosen), np.concatenate(rejected))
  assert report["n"] == 16
  for k in ("accuracy", "ece", "brier", "log_loss"):
    assert report[k] == pytest.approx(want[k], abs=1e-5), k
    assert summary[f"eval/rm_{k}"] == pytest.approx(report[k])
  assert report["rewards"]["n"] == 3 * 16 - 4          # 4 of the 16 rankings hold only 2
  assert report["rewards"]["mean"] == pytest.approx(np.concatenate(every).mean(), abs=1e-5)


def test_no_report_without_an_eval_set(tmp_path):
  from experiments.configs import smoke

  tok = char_tokenizer(ALPHABET)
  c = smoke.get_config()
  c.objective.name = "bradley_terry"
  c.data.batch_size = 8
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 1, 0, 1, 1
  c.progress_bar = c.tensorboard = c.export_hf = False
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  summary = loop.train(c, str(tmp_path), data=(_Iter(_rankings(tok, 8, 0)), lambda: iter(()),
                                               tok))
  assert not (tmp_path / "reward_model_eval.json").exists()
  assert "eval/rm_accuracy" not in summary
