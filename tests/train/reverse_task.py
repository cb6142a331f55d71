"""Reverse-task batches for the policy-stage tests (imported by them; not a test module)."""

import numpy as np

ALPHABET = "abcdefgh="
PAD, BOS, EOS = 0, 1, 2


class ReverseBatches:
  """Reverse-task rows `<bos>abc=cba<eos>` in fixed batches, with a resumable position."""

  def __init__(self, tok, batch_size=4, seq_len=16, seed=0):
    rng = np.random.default_rng(seed)
    self.rows = []
    for _ in range(64):
      s = "".join(rng.choice(list("abcdefgh"), int(rng.integers(2, 5))))
      self.rows.append(([BOS, *tok.encode(s + "=", add_special_tokens=False)],
                        [*tok.encode(s[::-1], add_special_tokens=False), EOS]))
    self.batch_size, self.seq_len, self.index = batch_size, seq_len, 0

  def __next__(self):
    b, t = self.batch_size, self.seq_len
    ids, loss = np.zeros((b, t), np.int32), np.zeros((b, t), bool)
    for i in range(b):
      prompt, response = self.rows[(self.index + i) % len(self.rows)]
      ids[i, :len(prompt) + len(response)] = prompt + response
      loss[i, len(prompt):len(prompt) + len(response)] = True
    self.index += b
    return {"input_ids": ids, "segment_ids": (ids != PAD).astype(np.int32),
            "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)), "loss_mask": loss}

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = state["index"]


def policy_stage_config(objective: str, *, steps: int, eval_every: int = 0,
                        checkpoint_every: int = 1, max_new_tokens: int, num_samples: int = 2,
                        arch: dict):
  """The smoke config as a tiny policy stage (`objective` "grpo" or "ppo") on this task:
  quiet (no progress bar or TensorBoard), logging every step."""
  from experiments.configs import smoke

  c = smoke.get_config()
  c.objective.name = objective
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = steps, eval_every, checkpoint_every, 1
  c.progress_bar = c.tensorboard = False
  c.objective[objective].max_new_tokens = max_new_tokens
  c.objective[objective].num_samples = num_samples
  c.model.arch.update(arch)
  return c


# The smallest policy (one layer, D=16) for the policy-stage tests of the trainer's guards.
TINY_ARCH = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                 intermediate_size=32)


def train_on_edited_samples(config, workdir, monkeypatch, edit):
  """`loop.train(config)` on this task with each `PolicySampler.sample` output replaced by
  `edit(out, call)` (`call` counts from 1): rows that break the samplers' layout, for the
  tests of the objectives' guards and the trainer's errors."""
  from experiments.tasks import reverse
  from irl_jax.data import char_tokenizer
  from irl_jax.train import loop, rollouts

  tok = char_tokenizer(ALPHABET)
  sample = rollouts.PolicySampler.sample
  calls = []

  def edited(self, batch, params, **kw):
    out, stats = sample(self, batch, params, **kw)
    calls.append(1)
    return edit(out, len(calls)), stats

  monkeypatch.setattr(rollouts.PolicySampler, "sample", edited)
  return loop.train(config, str(workdir), data=(ReverseBatches(tok), lambda: iter(()), tok),
                    reward_fn=lambda t: reverse.make_reward_fn(tok))


def with_grpo_fields(policy, rows: dict, seed: int = 0) -> dict:
  """Sampler-layout `rows` plus what the GRPO objective reads: old and reference log-probs
  a little off the policy's own (so ratios, clipping and the KL are exercised) and random
  advantages, all as jax arrays."""
  import jax
  import jax.numpy as jnp

  from irl_jax.train import lm

  args = (rows["sample_input_ids"], rows["sample_segment_ids"], rows["sample_positions"])
  logps = np.asarray(lm.lm_stats(policy, *args, chunk_size=None).log_probs)
  rng = np.random.default_rng(seed + 1)
  out = dict(rows)
  out["sample_old_logps"] = logps + rng.normal(0, 0.3, logps.shape).astype(np.float32)
  out["sample_ref_logps"] = logps + rng.normal(0, 0.3, logps.shape).astype(np.float32)
  out["sample_advantages"] = rng.normal(size=logps.shape[:1]).astype(np.float32)
  return jax.tree.map(jnp.asarray, out)
