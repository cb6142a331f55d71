"""Run a short deterministic training and write the loss trajectory (used by the tests).

    python tests/train/trajectory.py --out=losses.json --mesh=data:8 --devices=8
    python tests/train/trajectory.py --out=p0.json --mesh=data:2 --devices=1 \
        --num_processes=2 --process_id=0 --coordinator=127.0.0.1:12345

Each process generates the whole global batch from the step number and feeds
only its own rows (as a per-host data shard would), so every configuration
trains on exactly the same data.
"""

import argparse
import json

from processes import initialize, process_args


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=6)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--objective", default="iq_learn")
  args = process_args(p)

  import jax
  import numpy as np

  initialize(args)
  from flax import nnx

  from irl_jax.models import ModelConfig, Transformer
  from irl_jax.train import objectives, optim, sharding
  from irl_jax.train.state import init_train_state, split_model
  from irl_jax.train.step import make_train_step

  mesh = sharding.make_mesh({k: int(v) for k, v in (a.split(":") for a in args.mesh.split(","))})
  config = ModelConfig(model_type="llama", vocab_size=32, hidden_size=32, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64,
                       max_position_embeddings=32)
  model = Transformer(config, rngs=nnx.Rngs(0))
  model_def, params = split_model(model)
  param_sh = sharding.param_shardings(model, mesh)
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=2, total_steps=args.steps)
  if args.objective == "mle":
    objective = objectives.mle_objective()
  else:
    objective = objectives.iq_learn_objective(gamma=0.9, td_weight=0.5)
  state = jax.jit(lambda p: init_train_state(p, tx, 0))(jax.device_put(params, param_sh))
  step = jax.jit(make_train_step(model_def, objective, tx, schedule,
                                 micro_batches=args.micro_batches), donate_argnums=0)
  global_batch, seq = 16, 12
  rows = global_batch // args.num_processes
  lo = args.process_id * rows
  losses = []
  for i in range(args.steps):
    rng = np.random.default_rng(i)
    batch = {
        "input_ids": rng.integers(1, 32, (global_batch, seq)).astype(np.int32),
        "segment_ids": np.ones((global_batch, seq), np.int32),
        "positions": np.tile(np.arange(seq, dtype=np.int32), (global_batch, 1)),
        "loss_mask": np.arange(seq)[None] >= rng.integers(2, 8, (global_batch, 1)),
    }
    local = {k: v[lo:lo + rows] for k, v in batch.items()}
    state, metrics = step(state, sharding.global_batch(local, mesh))
    losses.append(float(metrics["train/loss"]))
  specs = {"embed": str(param_sh["embed"].spec)}
  if args.process_id == 0:
    with open(args.out, "w") as f:
      json.dump({"losses": losses, "devices": jax.device_count(),
                 "processes": jax.process_count(), "specs": specs}, f)


if __name__ == "__main__":
  main()
