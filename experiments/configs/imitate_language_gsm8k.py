"""The imitation study at accelerator scale: a pretrained checkpoint fine-tuned on GSM8K.

    python -m experiments.imitate_language --workdir=/path/to/runs/gsm8k \
        --config=experiments/configs/imitate_language_gsm8k.py \
        --config.trainer.model.pretrained=/path/to/Qwen2.5-0.5B \
        --config.trainer.tokenizer.path=/path/to/Qwen2.5-0.5B \
        --config.trainer.data.path=/path/to/gsm8k/train.jsonl \
        --config.trainer.data.eval_path=/path/to/gsm8k/test.jsonl

The same study as the laptop one (`experiments/configs/imitate_language.py`),
through the same code (`experiments/imitate_language.py`), with
`backend="trainer"`: every method and seed is a sharded, checkpointed, resumable
run of `irl_jax.train.train` on `config.trainer`, and the policies are measured
with the same generation metrics (GSM8K final-answer accuracy with
`experiments/tasks/gsm8k.py`'s checker, Self-BLEU, distinct-n, entropy,
within-prompt correlation of extracted rewards with the checker's scores).
Every evaluation of every run also logs them as `eval/gen_*`
(`config.trainer.eval_generation`), with the samples in
`<run>/samples/<step>.jsonl`.

One run alone, without the study around it (the `:trainer` suffix selects the
trainer config; pick the method with `--config.objective.name`):

    python -m experiments.train --config=experiments/configs/imitate_language_gsm8k.py:trainer \
        --workdir=/path/to/runs/gsm8k_iq_learn --config.model.pretrained=... ...

The trainer config: the GSM8K TFDS builder (array_record, no TensorFlow) reads
`data.path`, a local GSM8K `train.jsonl` (the builder's public download is
reached through `irl_jax.data.prepare("gsm8k", path=None, ...)`, not through
this config). The model is any supported Hugging Face checkpoint (GPT-2,
Llama, Qwen2, Mistral, Gemma) or a GGUF file, loaded without torch.
Parameters are sharded FSDP over all devices, compute is bfloat16 with float32
master weights, and the training statistics are chunked so that no `[B, T, V]`
logits are held (the generation metrics score 8 samples at a time:
`eval_generation.rows`). The study's final measurement loads each exported
policy in float32 on one device, so its numbers can differ slightly from the
runs' own bfloat16 `eval/gen_*`. The final policy is exported in Hugging Face format to
`<run>/export`.
"""

import ml_collections

from experiments.configs import imitate_language, smoke


def trainer_config():
  """One GSM8K fine-tuning run of `irl_jax.train.train` (IQLearn by default)."""
  c = smoke.get_config()
  c.steps = 2000
  c.log_every = 20
  c.eval_every = 250
  c.checkpoint_every = 250
  c.best_metric = "eval/loss"

  c.data.task = ""
  c.data.format = "gsm8k"
  c.data.path = ""       # required unless downloading: a GSM8K train.jsonl
  c.data.eval_path = ""  # e.g. GSM8K test.jsonl
  c.data.seq_len = 512
  c.data.buckets = (256, 384, 512)
  c.data.batch_size = 64
  c.data.eval_batch_size = 64
  c.data.packing = False
  c.data.on_bad_row = "raise"

  c.tokenizer.path = ""  # the checkpoint's tokenizer directory (or its GGUF file)
  c.model.pretrained = ""  # a Hugging Face checkpoint directory or a GGUF file
  c.model.dtype = "float32"
  c.model.compute_dtype = "bfloat16"
  c.model.remat = True

  c.objective.name = "iq_learn"
  for name in ("mle", "iq_learn", "iq_learn_online"):
    c.objective[name].chunk_size = 8192
  c.objective.iq_learn_online.max_new_tokens = 256

  c.optimizer.learning_rate = 1e-5
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.01
  c.optimizer.micro_batches = 1

  c.mesh.data = 1
  c.mesh.fsdp = -1

  # Generation metrics at every evaluation (0 prompts: off). `experiments.train` passes
  # the checker of `task`.
  # Entropy and rewards are scored 8 samples at a time, so that memory stays at
  # 8 · T · V logits.
  c.eval_generation = ml_collections.ConfigDict(dict(
      task="gsm8k", num_prompts=64, num_samples=4, temperature=1.0, max_new_tokens=256,
      gamma=0.9, prompt_len=0, rows=8))
  return c


def get_config(arg: str = ""):
  if arg == "trainer":
    return trainer_config()
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use ':trainer' or nothing.")
  c = imitate_language.get_config()
  c.backend = "trainer"
  c.task = "gsm8k"
  c.trainer = trainer_config()
  # The laptop study's methods, baselines, grid and evaluation settings, at GSM8K lengths;
  # the small-data run is the laptop study's.
  c.data_sizes = ()
  c.sweep_methods = []
  c.max_new_tokens = 256
  c.online_sample_prompts = 0
  c.methods[-1]["max_new_tokens"] = 256
  c.quick_settings = ml_collections.ConfigDict(dict(num_seeds=1, num_eval_prompts=8))
  c.quick_methods = [dict(objective="mle"), dict(objective="iq_learn", td_weight=0.1, gamma=0.9)]
  return c
