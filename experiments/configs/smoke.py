"""Smoke run: a tiny Llama-shaped model learns to reverse strings, in well under a minute.

    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke

Override any field, e.g. `--config.objective.name=mle`, `--config.mesh.data=-1`,
`--config.objective.name=dpo --config.objective.dpo.beta=0.2` (preference data
is generated for preference objectives), `--config.objective.name=grpo` (scored by the
task's reward, plus a reward model with `--config.reward.model_path=...`; watched by the
reward-hacking monitors of `config.monitors`).
"""

import ml_collections

from irl_jax.train import loop, registry, rewards


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 60
  c.log_every = 10
  c.eval_every = 30
  c.checkpoint_every = 20
  c.keep_checkpoints = 3
  c.best_metric = "eval/loss"
  c.best_mode = "min"
  c.export_hf = True
  c.tensorboard = True
  c.progress_bar = True
  # Resume from checkpoints made with another model/objective config (shapes must match).
  c.allow_config_change = False

  # Data: generated into <workdir>/data when `path` is empty.
  c.data = ml_collections.ConfigDict()
  c.data.task = "reverse"
  c.data.path = ""
  c.data.eval_path = ""
  c.data.num_examples = 512
  c.data.num_eval_examples = 64
  c.data.seq_len = 24
  c.data.batch_size = 16  # global batch (split over processes)
  c.data.eval_batch_size = 32
  c.data.packing = False
  c.data.buckets = ()  # e.g. (16, 24): pad each batch to the smallest that fits
  c.data.on_bad_row = "raise"
  c.data.max_ranking = 2

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.path = ""  # an AutoTokenizer directory; empty: a character tokenizer
  c.tokenizer.alphabet = "abcdefgh="

  c.model = ml_collections.ConfigDict()
  c.model.pretrained = ""
  c.model.arch = ml_collections.ConfigDict(dict(
      model_type="llama", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
      intermediate_size=128, max_position_embeddings=64))
  c.model.dtype = "float32"
  c.model.compute_dtype = "float32"
  c.model.remat = False

  # `name` picks the objective; each registered objective has its own sub-config with
  # the registry's defaults (--config.objective.iq_learn.td_weight=1.0, ...).
  c.objective = registry.objective_config(
      "iq_learn",
      iq_learn_online=dict(max_new_tokens=10, num_samples=4),
      grpo=dict(max_new_tokens=10, num_samples=4))

  # Policy stages (GRPO): the reward sources, summed with their weights
  # (--config.reward.model_path=<exported reward model> adds a reward model to the data task's
  # programmatic reward), and the reward-hacking monitors, on by default
  # (--config.monitors.length.action=stop, --config.monitors.kl.threshold=10, ...;
  # see docs/policy_stages.md).
  c.reward = rewards.reward_config()
  c.monitors = loop.monitors_config()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 10
  c.optimizer.decay = "cosine"
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_norm = 1.0
  c.optimizer.micro_batches = 1

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.distributed = ml_collections.ConfigDict(dict(
      num_processes=1, process_id=0, coordinator_address="", local_device_ids=None))
  return c
