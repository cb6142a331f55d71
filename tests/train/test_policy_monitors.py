"""Reward-hacking monitors in the trainer's policy stages (GRPO through `irl_jax.train.train`):
a planted exploit stops the run naming the metric, the step and the last checkpoint; the
default monitors stay quiet on an honest reward and resume exactly from a checkpoint; bad
`config.monitors` fields are named; the sampler's statistics that the monitors read."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from reverse_task import ALPHABET, EOS, PAD, ReverseBatches

from experiments.configs import smoke
from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.models.sampling import generate
from irl_jax.train import loop, monitors, registry, rollouts
from irl_jax.train.state import split_model


@pytest.fixture(scope="module")
def tok():
  return char_tokenizer(ALPHABET)


def _grpo_config(**fields):
  c = smoke.get_config()
  c.objective.name = "grpo"
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 4, 0, 2, 1
  c.progress_bar = c.tensorboard = c.export_hf = False
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  c.update_from_flattened_dict(fields)
  return c


def _train(c, workdir, tok, reward):
  return loop.train(c, str(workdir), data=(ReverseBatches(tok), lambda: iter(()), tok),
                    reward_fn=lambda t: reward)


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_planted_length_exploit_stops_the_run_naming_metric_step_and_checkpoint(tok, tmp_path):
  # The reward pays for length: the policy learns to stop emitting EOS. The length monitor,
  # set to stop at a 30% change, ends the run long before the 30 steps.
  c = _grpo_config(**{"steps": 30, "checkpoint_every": 3, "objective.grpo.max_new_tokens": 16,
                      "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 0,
                      "optimizer.decay": "constant", "monitors.length.action": "stop",
                      "monitors.length.max_relative_change": 0.3})
  length = lambda p, r, m: m.sum(axis=1).astype(np.float32)
  with pytest.raises(monitors.RewardHackingStop) as e:
    _train(c, tmp_path, tok, length)
  alert = e.value.alerts[0]
  assert (alert.monitor, alert.metric, alert.action) == ("length", "response_length", "stop")
  assert 1 < alert.step < 30
  before = (alert.step - 1) // 3 * 3
  assert alert.last_checkpoint == (before or None)
  for part in ("'response_length'", f"at step {alert.step}:",
               f"last checkpoint before it: step {before}"):
    assert part in str(e.value)
  # What the trainer normally writes is written: the stop step's metrics (the length that
  # fired, far from the first step's), its checkpoint when one was due, the alert; no export.
  logged = _lines(tmp_path / "metrics.jsonl")
  assert logged[-1]["step"] == alert.step
  first, last = (m["train/samples/response_length"] for m in (logged[0], logged[-1]))
  assert last == alert.value and abs(last - first) > 0.3 * first
  saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert saved == list(range(3, alert.step + 1, 3))
  recorded = _lines(tmp_path / "alerts.jsonl")
  assert recorded[-1]["monitor"] == "length" and recorded[-1]["step"] == alert.step
  assert not os.path.exists(tmp_path / "export")


def test_default_monitors_stay_quiet_and_resume_exactly(tok, tmp_path, capsys):
  from experiments.tasks import reverse

  c = _grpo_config()
  workdir = tmp_path / "run"
  _train(c, workdir, tok, reverse.make_reward_fn(tok))
  assert not os.path.exists(workdir / "alerts.jsonl")
  record = workdir / "checkpoints" / "data_state" / "4.process_0.json"
  state = _lines(record)[0]["host_state"]["monitors"]
  assert state["alerts"] == [] and (state["last_step"], state["last_checkpoint"]) == (4, 4)
  assert state["monitors"]["kl_acceleration"]["ema"] is not None  # it has been fed
  logged = {m["step"]: m for m in _lines(workdir / "metrics.jsonl")}
  assert {"train/samples/kl", "train/samples/entropy", "train/samples/response_length",
          "train/samples/reward", "train/clip_fraction"} <= set(logged[4])

  # Lose the last checkpoint: the run resumes from step 2 and reaches the same monitor state.
  shutil.rmtree(workdir / "checkpoints" / "4")
  os.remove(workdir / "checkpoints" / "meta" / "4.json")
  os.remove(record)
  capsys.readouterr()
  _train(c, workdir, tok, reverse.make_reward_fn(tok))
  assert "resumed from step 2" in capsys.readouterr().out
  # Equal only if the monitors restarted from step 2's state (fresh ones would take their
  # initial values at step 3) and the samples of steps 3 and 4 were drawn again exactly.
  assert _lines(record)[0]["host_state"]["monitors"] == state
  again = _lines(workdir / "metrics.jsonl")[-2:]
  for m in again:
    assert m == {**logged[m["step"]], **{k: m[k] for k in m if k.endswith(
        ("step_seconds", "tokens_per_s"))}}


def _monitors_config(**changes):
  c = smoke.get_config()
  block = c.monitors.to_dict()
  for dotted, value in changes.items():
    node = block
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  c.monitors = block  # a config file may hold anything: bypass the ConfigDict's type checks
  return c


@pytest.mark.parametrize("changes, message", [
    ({"kl.action": "halt"}, "config.monitors.kl.action must be one of ('warn', 'stop'), got "
                            "'halt'"),
    ({"entropy.min_fraction": 1.5}, "config.monitors.entropy.min_fraction must be in [0, 1]"),
    ({"length.patience": 0}, "config.monitors.length.patience must be an int >= 1"),
    ({"clip_fraction.threshold": float("nan")}, "config.monitors.clip_fraction.threshold must "
                                                "be a finite number"),
    ({"kl.enabled": "yes"}, "config.monitors.kl.enabled must be a bool"),
    ({"baseline_updates": 0}, "config.monitors.baseline_updates must be an int >= 1"),
    ({"enabled": 1}, "config.monitors.enabled=1: must be True or False"),
    ({"length.treshold": 0.1}, "config.monitors.length has unknown fields ['treshold']"),
    ({"lenght": {}}, "config.monitors has unknown fields ['lenght']"),
])
def test_bad_monitor_config_fields_are_named(changes, message):
  with pytest.raises(loop.ConfigError) as e:
    loop.check_config(_monitors_config(**changes))
  assert message in str(e.value)


def test_monitor_config_defaults_switch_and_missing_metrics():
  c = smoke.get_config()
  assert loop.monitor_config(c) == monitors.MonitorConfig()
  del c["monitors"]
  assert loop.monitor_config(c) == monitors.MonitorConfig()  # an old config: the defaults
  assert loop.monitor_config(_monitors_config(enabled=False)) is None
  stop = loop.monitor_config(_monitors_config(**{"kl.action": "stop", "kl.threshold": 5}))
  assert stop.kl == dataclasses.replace(monitors.KLCeiling(), action="stop", threshold=5)
  assert [n for n in registry.names() if loop.is_policy_stage(registry.get(n))] == ["grpo", "ppo"]

  # What the trainer feeds the monitors; a metric no source gives is named with its field.
  inputs = loop.monitor_inputs({"train/kl": 0.1, "train/clip_fraction": 0.2,
                                "train/samples/kl": 3.0, "train/samples/entropy": 2.0,
                                "train/samples/response_length": 5.0,
                                "train/samples/reward": 0.5})
  assert (inputs["kl"], inputs["clip_fraction"], inputs["proxy_reward"]) == (3.0, 0.2, 0.5)
  assert inputs["train/kl"] == 0.1
  m = monitors.Monitors(monitors.MonitorConfig())
  loop._check_monitor_inputs(m, inputs, "grpo")
  m = monitors.Monitors(monitors.MonitorConfig(gold=monitors.RewardGoldDivergence(enabled=True)))
  with pytest.raises(loop.ConfigError, match=r"config.monitors.gold.metric='gold_reward': "
                                             r"objective 'grpo' gives no such metric.*"
                                             r"config.monitors.gold.enabled=False"):
    loop._check_monitor_inputs(m, inputs, "grpo")


def test_sampler_statistics_and_step_keyed_samples(tok):
  cfg = models.ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=16,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                           intermediate_size=32, max_position_embeddings=48)
  model_def, params = split_model(models.Transformer(cfg, rngs=nnx.Rngs(0)))
  _, other = split_model(models.Transformer(cfg, rngs=nnx.Rngs(1)))
  seen = {}

  def reward(prompt_ids, response_ids, response_mask, prompt_mask=None):
    seen.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask)
    return response_mask.sum(axis=1).astype(np.float32)

  kwargs = dict(max_new_tokens=6, num_samples=2, eos_id=EOS, pad_id=PAD, reward_fn=reward,
                seed=3)
  sampler = rollouts.PolicySampler(model_def, ref_params=other, **kwargs)
  batch = next(ReverseBatches(tok))
  out, stats = sampler.sample(batch, params, step=5)

  # The reward function sees only the prompts (BOS, text, '='), the other slots padded.
  prompt_ids, prompt_mask = seen["prompt_ids"], seen["prompt_mask"]
  assert np.all(prompt_ids[~prompt_mask] == PAD)
  assert tok.decode(prompt_ids[0][prompt_mask[0]]) == tok.decode(batch["input_ids"][0][
      :int(np.argmax(batch["loss_mask"][0]))])
  # Same step, same samples (a resumed run draws what the uninterrupted one drew) ...
  again, _ = sampler.sample(batch, params, step=5)
  np.testing.assert_array_equal(again["sample_input_ids"], out["sample_input_ids"])
  # ... drawn with fold_in(key(seed), step); the statistics are those of these samples.
  ids, mask = rollouts.prompts_of(batch)
  gen = generate(model_def.merge(params), ids, mask, jax.random.fold_in(jax.random.key(3), 5),
                 max_new_tokens=6, num_samples=2, eos_id=EOS, pad_id=PAD)
  np.testing.assert_array_equal(np.asarray(gen.tokens), out["sample_input_ids"][:, -6:])
  rmask = np.asarray(gen.response_mask)
  assert stats["response_length"] == pytest.approx(rmask.sum(1).mean())
  assert stats["proxy_reward"] == pytest.approx(rmask.sum(1).mean())
  assert stats["entropy"] == pytest.approx(-np.asarray(gen.log_probs)[rmask].mean(), rel=1e-6)
  where = out["sample_loss_mask"][:, 1:]
  r = (out["sample_ref_logps"] - out["sample_old_logps"])[:, :-1]
  k3 = np.where(where, np.exp(r) - r - 1, 0).sum(1).mean()
  assert stats["kl"] == pytest.approx(k3, rel=1e-5) and stats["kl"] > 0
  # Against itself as the reference, the KL is 0.
  _, same = rollouts.PolicySampler(model_def, ref_params=params, **kwargs).sample(
      batch, params, step=5)
  assert same["kl"] == 0.0
