"""PPO as a policy stage of the trainer (`irl_jax.train.train` with objective "ppo"): a tiny run
on a programmatic reward logs finite policy and value losses, feeds the reward-hacking
monitors, resumes from a checkpoint to bit-identical parameters and exports a causal LM; the
sampler's value targets (old values, KL-shaped rewards, GAE) and the policy-value model; bad
`config.objective.ppo` fields are named."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from reverse_task import ALPHABET, BOS, EOS, PAD, ReverseBatches, policy_stage_config

from experiments.configs import smoke
from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.train import lm, loop, registry, rollouts
from irl_jax.train.state import split_model


@pytest.fixture(scope="module")
def tok():
  return char_tokenizer(ALPHABET)


TINY = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
            intermediate_size=64)


def _ppo_config(**fields):
  c = policy_stage_config("ppo", steps=4, checkpoint_every=2, max_new_tokens=8, arch=TINY)
  c.update_from_flattened_dict(fields)
  return c


def _train(c, workdir, tok, reward):
  return loop.train(c, str(workdir), data=(ReverseBatches(tok), lambda: iter(()), tok),
                    reward_fn=lambda t: reward)


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_ppo_run_logs_monitors_resumes_exactly_and_exports_a_causal_lm(tok, tmp_path, capsys):
  from experiments.tasks import reverse

  assert loop.is_policy_stage(registry.get("ppo"))
  c = _ppo_config()
  workdir = tmp_path / "run"
  summary = _train(c, workdir, tok, reverse.make_reward_fn(tok))
  assert summary["train/finite"] == 1.0
  logged = {m["step"]: m for m in _lines(workdir / "metrics.jsonl")}
  assert sorted(logged) == [1, 2, 3, 4]
  for m in logged.values():
    for key in ("train/loss", "train/policy_loss", "train/value_loss", "train/approx_kl",
                "train/value_clip_fraction", "train/value"):
      assert math.isfinite(m[key]), key
    # The loss is the policy loss plus vf_coef (0.1) times the value loss.
    assert m["train/loss"] == pytest.approx(m["train/policy_loss"] + 0.1 * m["train/value_loss"],
                                            rel=1e-5, abs=1e-6)
    assert m["train/value_loss"] > 0
  # What the monitors read is logged, and they ran on every update (their state is saved).
  assert {"train/samples/kl", "train/samples/entropy", "train/samples/response_length",
          "train/samples/reward", "train/clip_fraction"} <= set(logged[4])
  assert logged[1]["train/samples/kl"] == 0.0  # the first samples come from the reference
  assert logged[4]["train/samples/kl"] > 0.0
  record = workdir / "checkpoints" / "data_state" / "4.process_0.json"
  monitor_state = _lines(record)[0]["host_state"]["monitors"]
  assert (monitor_state["last_step"], monitor_state["last_checkpoint"]) == (4, 4)
  assert monitor_state["monitors"]["kl_acceleration"]["ema"] is not None

  # The export is the policy alone, a causal LM that loads and generates.
  export = workdir / "export"
  with open(export / "config.json") as f:
    assert json.load(f)["architectures"] == ["LlamaForCausalLM"]
  policy = models.from_pretrained(str(export))
  assert type(policy) is models.Transformer
  assert not any("value" in k for k in models.hf_state_dict(policy))
  out = models.generate(policy, np.array([[BOS, 3, 4, 11]]), np.ones((1, 4), bool),
                        jax.random.key(0), max_new_tokens=3, eos_id=EOS)
  assert out.tokens.shape == (1, 3)
  with open(export / "model.safetensors", "rb") as f:
    exported = f.read()
  meta = workdir / "checkpoints" / "meta" / "4.json"
  checksums = json.loads(meta.read_text())["checksums"]
  assert any("value_head" in k for k in checksums)  # the checkpoint holds the value head

  # Lose the last checkpoint: the run resumes from step 2 and ends bit-identical (every array
  # of the state: policy, value head, optimizer state, PRNG key), with the same export.
  shutil.rmtree(workdir / "checkpoints" / "4")
  os.remove(meta)
  os.remove(record)
  capsys.readouterr()
  _train(c, workdir, tok, reverse.make_reward_fn(tok))
  assert "resumed from step 2" in capsys.readouterr().out
  assert json.loads(meta.read_text())["checksums"] == checksums
  with open(export / "model.safetensors", "rb") as f:
    assert f.read() == exported
  assert _lines(record)[0]["host_state"]["monitors"] == monitor_state
  for m in _lines(workdir / "metrics.jsonl")[-2:]:
    assert m == {**logged[m["step"]], **{k: m[k] for k in m if k.endswith(
        ("step_seconds", "tokens_per_s"))}}


def _gae(rewards, values, where, gamma, lam):
  """A backwards loop over each row's response tokens (V = 0 after the last)."""
  adv = np.zeros(rewards.shape)
  for b in range(rewards.shape[0]):
    next_value = next_adv = 0.0
    for t in reversed(np.flatnonzero(where[b])):
      next_adv = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * next_adv
      next_value = values[b, t]
      adv[b, t] = next_adv
  return adv, np.where(where, adv + values, 0)


def _tiny_policy_value(tok, seed):
  cfg = models.ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=16,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                           intermediate_size=32, max_position_embeddings=48)
  return models.PolicyValueModel(models.Transformer(cfg, rngs=nnx.Rngs(seed)),
                                 rngs=nnx.Rngs(seed + 1))


def test_sampler_adds_old_values_gae_advantages_and_returns(tok):
  model = _tiny_policy_value(tok, 0)
  ref_model = _tiny_policy_value(tok, 5)
  model_def, params = split_model(model)
  _, ref_params = split_model(ref_model)
  reward = lambda p, r, m: m.sum(axis=1).astype(np.float32) / 4
  targets = rollouts.ValueTargets(kl_coef=0.1, gamma=0.9, lam=0.8)  # whitened advantages
  kwargs = dict(max_new_tokens=6, num_samples=2, eos_id=EOS, pad_id=PAD, reward_fn=reward,
                ref_params=ref_params, seed=3)
  batch = next(ReverseBatches(tok))
  out, stats = rollouts.PolicySampler(model_def, value_targets=targets, **kwargs).sample(
      batch, params, step=1)
  ids = out["sample_input_ids"]
  for key in ("sample_old_logps", "sample_ref_logps", "sample_old_values",
              "sample_advantages", "sample_returns"):
    assert out[key].shape == ids.shape, key
  assert {"kl", "entropy", "response_length", "proxy_reward"} <= set(stats)
  where = np.asarray(lm.lm_targets(out["sample_loss_mask"]))
  args = (ids, out["sample_segment_ids"], out["sample_positions"])
  # Old log-probs and values: one forward pass of the current model.
  _, values = model(ids, segment_ids=args[1], positions=args[2])
  np.testing.assert_allclose(out["sample_old_values"], np.where(where, values, 0), atol=1e-5)
  # Log-probs are scored on the response window only (the last max_new_tokens + 1 columns,
  # every target among them), and are 0 before it.
  s = ids.shape[1] - 6 - 1
  assert not where[:, :s].any()
  old = np.asarray(lm.lm_stats(model.policy, *args, chunk_size=None).log_probs)
  np.testing.assert_allclose(out["sample_old_logps"][:, s:], old[:, s:], atol=1e-5)
  np.testing.assert_array_equal(out["sample_old_logps"][:, :s], 0.0)
  # Reference log-probs: the reference's policy alone.
  ref = np.asarray(lm.lm_stats(ref_model.policy, *args, chunk_size=None).log_probs)
  np.testing.assert_allclose(out["sample_ref_logps"][:, s:], ref[:, s:], atol=1e-5)
  np.testing.assert_array_equal(out["sample_ref_logps"][:, :s], 0.0)
  # KL-shaped rewards (score at each row's last response token), then GAE over the tokens;
  # the returns are unwhitened, the advantages whitened over the whole batch.
  scores = out["sample_rewards"]
  token_rewards = np.where(where, -0.1 * (old - ref), 0.0)
  for b in range(len(scores)):
    token_rewards[b, np.flatnonzero(where[b])[-1]] += scores[b]
  adv, returns = _gae(token_rewards, np.asarray(values, np.float64), where, 0.9, 0.8)
  np.testing.assert_allclose(out["sample_returns"], returns, atol=1e-4)
  white = np.where(where, (adv - adv[where].mean()) / np.sqrt(adv[where].var() + 1e-8), 0)
  np.testing.assert_allclose(out["sample_advantages"], white, atol=1e-4)

  # (Without value targets the sampler is GRPO's: tests/train/test_policy_monitors.py.)
  with pytest.raises(ValueError, match=r"value_targets \(PPO\) need a reward_fn"):
    rollouts.PolicySampler(model_def, max_new_tokens=6, value_targets=targets)


def test_policy_value_model_forward_and_policy_only_export(tok, tmp_path):
  model = _tiny_policy_value(tok, 0)
  ids = np.array([[BOS, 3, 4, 11, EOS, PAD], [BOS, 5, 11, 6, 7, EOS]])
  mask = ids != PAD
  logits, values = model(ids, attention_mask=mask)
  np.testing.assert_array_equal(logits, model.policy(ids, attention_mask=mask))
  assert values.shape == ids.shape and values.dtype == jnp.float32
  hidden, again = model(ids, attention_mask=mask, return_hidden=True)
  np.testing.assert_array_equal(again, values)
  np.testing.assert_array_equal(model.values(hidden), values)
  # A bfloat16 backbone: float32 values.
  low = models.PolicyValueModel(models.Transformer(
      model.policy.config, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16),
      rngs=nnx.Rngs(1))
  assert low(ids, attention_mask=mask)[1].dtype == jnp.float32

  models.save_pretrained(model, str(tmp_path / "pv"), tokenizer=tok)
  loaded = models.from_pretrained(str(tmp_path / "pv"))
  assert type(loaded) is models.Transformer
  np.testing.assert_allclose(loaded(ids, attention_mask=mask), logits, atol=1e-6)
  assert models.hf_state_dict(model).keys() == models.hf_state_dict(model.policy).keys()

  # The trainer wraps the policy of a value-head objective.
  c = _ppo_config()
  built = loop.build_model(c, len(tok))
  assert isinstance(built, models.PolicyValueModel)
  assert loop.run_fingerprint(c, built)["model"]["head"] == "PolicyValueModel"
  # ... and refuses a pretrained reward model in its place.
  models.save_pretrained(models.RewardModel(model.policy, rngs=nnx.Rngs(2)),
                         str(tmp_path / "rm"))
  c.model.pretrained = str(tmp_path / "rm")
  with pytest.raises(loop.ConfigError, match=r"config\.model\.pretrained=.* is a reward model"):
    loop.build_model(c, len(tok))


@pytest.mark.parametrize("field, value", [
    ("gamma", 1.5), ("lam", -0.1), ("clip_epsilon", 0.0), ("vf_coef", -1.0),
    ("kl_coef", -0.01), ("value_clip", -0.2), ("num_samples", 0), ("max_new_tokens", 0),
    ("temperature", 0.0), ("chunk_size", -1), ("normaliser", "tokens"),
    ("whiten_advantages", 1), ("ppo_epochs", 0), ("num_minibatches", 0),
])
def test_bad_ppo_hyperparameters_are_named(field, value):
  c = smoke.get_config()
  c.objective.name = "ppo"
  c.objective.ppo = {**c.objective.ppo.to_dict(), field: value}  # a config file may hold anything
  with pytest.raises(loop.ConfigError) as e:
    loop.check_config(c)
  assert f"config.objective.ppo.{field}={value!r}" in str(e.value)
