"""Imitating language via scalable inverse RL, at laptop scale (the main job).

    python -m experiments.imitate_language --workdir=/tmp/imitate
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.quick=True
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.full_grid=True

Default: about 9 minutes on 2 CPU cores (5 methods and the small-data runs,
5 seeds each; 531 s measured on 2 Zen 5 cores, 13-16 minutes on earlier 2-core
hosts); `--config.quick=True`: 1-2 minutes; `--config.full_grid=True` adds
the rest of the λ ∈ {0.01, 0.1, 1} × γ ∈ {0.9, 1} grid (about 1.5-2.5 more
minutes per method). For the same study from a pretrained checkpoint on
GSM8K through the sharded trainer, see
`experiments/configs/imitate_language_gsm8k.py`.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.full_grid = False
  c.backend = "compiled"  # seeds vmapped in one compiled function
  c.task = "arithmetic"
  c.seed = 0

  # Task difficulty and data (fresh expert derivations; smaller sets are prefixes).
  c.min_operands, c.max_operands, c.digits, c.op = 3, 4, 1, "+"
  c.data_seed = 0
  c.num_demonstrations = 8000
  c.num_heldout = 256
  c.seq_len = 44
  c.prompt_len = 12
  c.max_new_tokens = 36

  # Model and optimisation (all methods share them).
  c.model = ml_collections.ConfigDict(dict(
      hidden_size=96, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=288))
  c.steps = 1000
  c.batch_size = 32
  c.learning_rate = 3e-3
  c.warmup_steps = 50
  c.eval_every = 100
  c.num_seeds = 5
  # Run from the command line, the host CPU is split into this many JAX devices and
  # the seeds spread over them (0: JAX's default). No effect on accelerators.
  c.cpu_devices = 5
  # XLA:CPU compile options of the training programs: YNNPACK's library fusions off
  # (measured: the five-seed step 98 ms against 130 ms with them, on 5 CPU devices).
  c.xla_cpu_options = ml_collections.ConfigDict({"xla_cpu_experimental_ynn_fusion_type": ""})

  # Methods: MLE first (step times are reported relative to it). The verdicts compare
  # `main_iq_learn` with `baseline`, and the online method with `online_baseline`
  # (both chosen before running).
  c.baseline = dict(objective="mle")
  c.main_iq_learn = dict(objective="iq_learn", td_weight=0.1, gamma=0.9)
  c.online_baseline = dict(objective="iq_learn", td_weight=0.1, gamma=0.9)
  c.methods = [
      dict(objective="mle"),
      dict(objective="mle", entropy_bonus=0.01),
      dict(objective="iq_learn", td_weight=0.1, gamma=0.9),
      dict(objective="iq_learn", td_weight=1.0, gamma=0.9),
      dict(objective="iq_learn_online", td_weight=0.1, gamma=0.9, mix=0.1, max_new_tokens=36),
  ]
  c.online_sample_prompts = 8  # online IQLearn samples responses to 8 of the 32 prompts per step
  c.grid_td_weights = (0.01, 0.1, 1.0)
  c.grid_gammas = (0.9, 1.0)
  # Small-data runs (the overfitting claim): MLE, then the TD-regularised method.
  c.data_sizes = (250,)
  c.sweep_steps = 400
  c.sweep_methods = [dict(objective="mle"), dict(objective="iq_learn", td_weight=1.0, gamma=0.9)]

  # Evaluation.
  c.num_eval_prompts = 64
  c.num_samples = 4
  c.low_temperature = 0.25
  c.reward_gamma = 0.9  # γ of the extracted rewards, the same for every method

  # Step times of finding (5): interleaved rounds of every method's compiled step (False:
  # only MLE and `main_iq_learn`, the two the finding compares; the others show "–").
  c.step_time_all_methods = True

  # Applied by the runner when `quick` is True.
  c.quick_settings = ml_collections.ConfigDict(dict(
      steps=150, eval_every=50, num_heldout=64, num_eval_prompts=16, num_demonstrations=2000,
      sweep_steps=100, step_time_all_methods=False, model=ml_collections.ConfigDict(dict(
          hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192))))
  c.quick_methods = [
      dict(objective="mle"),
      dict(objective="iq_learn", td_weight=0.1, gamma=0.9),
      dict(objective="iq_learn_online", td_weight=0.1, gamma=0.9, mix=0.1, max_new_tokens=36),
  ]
  return c
