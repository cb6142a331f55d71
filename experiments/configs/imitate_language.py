"""Imitating language via scalable inverse RL, at laptop scale (the main job).

    python -m experiments.imitate_language --workdir=/tmp/imitate
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.quick=True

Default: about 10 minutes on 2 CPU cores; `--config.quick=True`: 1-2 minutes.
For the same study with a pretrained checkpoint and GSM8K on an accelerator,
see `experiments/configs/imitate_language_gsm8k.py`.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False

  # Task difficulty and data.
  c.min_operands, c.max_operands, c.digits, c.op = 3, 4, 1, "+"
  c.data_seed = 0
  c.num_demonstrations = 1000
  c.num_heldout = 256
  c.seq_len = 48
  c.prompt_len = 12
  c.max_new_tokens = 36

  # Model and optimisation (all methods share them).
  c.model = ml_collections.ConfigDict(dict(
      hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192))
  c.steps = 600
  c.batch_size = 32
  c.learning_rate = 4e-3
  c.warmup_steps = 20
  c.eval_every = 60
  c.num_seeds = 3

  # Methods: MLE first (step times are reported relative to it).
  c.methods = [
      dict(kind="mle"),
      dict(kind="mle", entropy=0.01),
      dict(kind="iq_learn", td_weight=0.1, gamma=0.9),
      dict(kind="iq_learn", td_weight=0.1, gamma=1.0),
      dict(kind="iq_learn", td_weight=1.0, gamma=0.9),
      dict(kind="iq_learn", td_weight=1.0, gamma=1.0),
      dict(kind="iq_learn_online", td_weight=0.1, gamma=1.0, mix=0.1),
  ]
  # Data-size sweep (the overfitting claim).
  c.data_sizes = (250, 1000, 4000)
  c.sweep_methods = [dict(kind="mle"), dict(kind="iq_learn", td_weight=1.0, gamma=0.9)]

  # Evaluation.
  c.num_eval_prompts = 64
  c.num_samples = 4
  c.low_temperature = 0.5

  # Applied by the runner when `quick` is True.
  c.quick_settings = ml_collections.ConfigDict(dict(
      steps=100, eval_every=25, num_heldout=64, num_eval_prompts=16, data_sizes=(250, 1000),
      num_demonstrations=500))
  c.quick_methods = [
      dict(kind="mle"),
      dict(kind="iq_learn", td_weight=1.0, gamma=0.9),
      dict(kind="iq_learn_online", td_weight=0.1, gamma=1.0, mix=0.1),
  ]
  return c
