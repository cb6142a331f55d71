"""Write a reward model's held-out report (`loop.reward_model_report`) as JSON (used by the
tests).

    python tests/train/rm_report.py --out=report.json
    python tests/train/rm_report.py --out=report.json --devices=1 --mesh=data:2 \
        --num_processes=2 --process_id=0 --coordinator=127.0.0.1:12345

Every process builds the same model and the same global eval set of ranked responses, and
feeds only its own rows of each batch (as a per-host data shard would), so every
configuration reports on exactly the same rankings.
"""

import json

from processes import initialize, process_args


def main():
  args = process_args()

  import jax
  import numpy as np

  initialize(args)
  from flax import nnx

  from irl_jax import models
  from irl_jax.train import loop, sharding
  from irl_jax.train.state import split_model

  mesh = sharding.make_mesh({k: int(v) for k, v in (a.split(":") for a in args.mesh.split(","))})
  config = models.ModelConfig(model_type="llama", vocab_size=32, hidden_size=16, num_layers=1,
                              num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                              max_position_embeddings=16)
  rm = models.RewardModel(models.Transformer(config, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  model_def, params = split_model(rm)
  b, k, t = 8, 3, 10
  rows = b // args.num_processes
  lo = args.process_id * rows

  def eval_batches():
    for i in range(3):
      rng = np.random.default_rng(100 + i)
      lengths = rng.integers(4, t + 1, (b, k, 1))
      real = np.arange(t)[None, None] < lengths
      batch = {"input_ids": np.where(real, rng.integers(3, 32, (b, k, t)), 0).astype(np.int32),
               "segment_ids": real.astype(np.int32),
               "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, k, t)).copy(),
               "loss_mask": real & (np.arange(t) >= 2),
               # Some rankings hold two responses, one holds a single response (no pair).
               "rank_mask": np.arange(k)[None] < rng.choice([1, 2, 3], (b, 1), p=[.1, .3, .6])}
      yield {name: x[lo:lo + rows] for name, x in batch.items()}

  report = loop.reward_model_report(model_def, params, eval_batches, mesh)
  if args.process_id == 0:
    with open(args.out, "w") as f:
      json.dump({"report": report, "devices": jax.device_count(),
                 "processes": jax.process_count()}, f)


if __name__ == "__main__":
  main()
