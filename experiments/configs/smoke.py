"""Smoke run: a tiny Llama-shaped model learns to reverse strings, in well under a minute.

    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke

Override any field, e.g. `--config.objective.name=mle`, `--config.mesh.data=-1`,
`--config.objective.name=dpo` (preference data is generated for preference
objectives), `--config.objective.name=grpo`.
"""

import ml_collections


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

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "iq_learn"
  c.objective.gamma = 0.99
  c.objective.td_weight = 0.1
  c.objective.mix = 0.1
  c.objective.chunk_size = 0  # > 0: chunked soft-Q statistics
  c.objective.entropy_bonus = 0.0
  c.objective.beta = 0.1
  c.objective.label_smoothing = 0.0
  c.objective.clip_epsilon = 0.2
  c.objective.kl_coef = 0.04
  c.objective.normaliser = "token"
  c.objective.max_new_tokens = 10
  c.objective.temperature = 1.0
  c.objective.num_samples = 4
  c.objective.reward_fn = "experiments.tasks.reverse:make_reward_fn"

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
