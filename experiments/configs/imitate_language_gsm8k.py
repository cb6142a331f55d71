"""The imitation study at accelerator scale: a pretrained checkpoint fine-tuned on GSM8K.

    python -m experiments.train --config=experiments/configs/imitate_language_gsm8k.py \
        --workdir=/path/to/runs/gsm8k_iq_learn \
        --config.model.pretrained=/path/to/Qwen2.5-0.5B \
        --config.tokenizer.path=/path/to/Qwen2.5-0.5B \
        --config.data.path=/path/to/gsm8k/train.jsonl \
        --config.data.eval_path=/path/to/gsm8k/test.jsonl

Methods, as in the laptop study (`experiments/configs/imitate_language.py`):
`--config.objective.name=mle` (the baseline), `=iq_learn` with
`--config.objective.iq_learn.td_weight` in {0.01, 0.1, 1.0} and
`--config.objective.iq_learn.gamma` in {0.9, 1.0}, and `=iq_learn_online
--config.objective.iq_learn_online.mix=0.1`. The data go
through the `gsm8k` TFDS builder (array_record, no TensorFlow); `data.path` is
a local GSM8K `train.jsonl` (the builder's public download location is reached
through `irl_jax.data.prepare("gsm8k", path=None, ...)`, not through this
config). Without `data.eval_path` no evaluation runs. The model
is any supported Hugging Face checkpoint (GPT-2, Llama, Qwen2, Mistral, Gemma),
loaded without torch. Parameters are sharded FSDP over all devices, compute is
bfloat16 with float32 master weights, and the token statistics are chunked so
that no `[B, T, V]` logits are held. The final policy is exported in Hugging
Face format to `workdir/export`. There, `irl_jax.models.generate`
samples it, and `irl_jax.losses.sequence_rewards` extracts rewards, exactly as
`experiments/imitate_language.py` does for the laptop study.
"""

from experiments.configs import smoke


def get_config():
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

  c.tokenizer.path = ""  # the checkpoint's tokenizer directory
  c.model.pretrained = ""  # a Hugging Face checkpoint directory
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
  return c
