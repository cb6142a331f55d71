"""Child process of test_compiled.py: `compile_seeds` over several CPU devices
against the same run on one device. Prints one JSON line.

    python tests/train/seed_devices_child.py DEVICES
"""

import json
import sys

from irl_jax.train.compiled import use_cpu_devices

use_cpu_devices(int(sys.argv[1]))  # before JAX's first operation

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from irl_jax.models import ModelConfig, Transformer  # noqa: E402
from irl_jax.train import optim, registry  # noqa: E402
from irl_jax.train.compiled import compile_seeds, make_train  # noqa: E402
from irl_jax.train.state import split_model  # noqa: E402

CONFIG = ModelConfig(model_type="llama", vocab_size=13, hidden_size=16, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=16)


def main():
  rng = np.random.default_rng(0)
  n, t = 8, 8
  data = {"input_ids": rng.integers(1, CONFIG.vocab_size, (n, t)).astype(np.int32),
          "segment_ids": np.ones((n, t), np.int32),
          "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)),
          "loss_mask": np.arange(t)[None] >= rng.integers(2, 5, (n, 1))}
  model_def, _ = split_model(Transformer(CONFIG, rngs=nnx.Rngs(0)))
  spec = registry.get("mle")
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=2, total_steps=6)
  train = make_train(lambda k: split_model(Transformer(CONFIG, rngs=nnx.Rngs(k)))[1], model_def,
                     spec.build(spec.hyperparameters()), tx, data, steps=6, batch_size=3,
                     schedule=schedule)
  keys = jax.random.split(jax.random.key(0), 6)
  one, placed_one = compile_seeds(train, keys, devices=jax.devices()[:1])
  many, placed_many = compile_seeds(train, keys)
  (s1, log1), (sm, logm) = one(*placed_one), many(*placed_many)
  leaf = jax.tree.leaves(sm.params)[0]
  params_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(sm.params),
                                    strict=True))
  # A second, mapped argument is placed with the keys.
  scaled, placed = compile_seeds(lambda k, x: jax.random.normal(k, (2,)) * x, keys,
                                 np.arange(6.0))
  out = {
      "devices": jax.device_count(),
      "output_devices": len(leaf.sharding.device_set),
      "key_devices": len(placed_many[0].sharding.device_set),
      "loss_one": np.asarray(log1["train"]["train/loss"]).tolist(),
      "loss_many": np.asarray(logm["train"]["train/loss"]).tolist(),
      "params_max_abs_diff": params_diff,
      "scaled": np.asarray(scaled(*placed)).tolist(),
      "scaled_ref": (np.asarray(jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys))
                     * np.arange(6.0)[:, None]).tolist(),
      "scaled_devices": len(placed[1].sharding.device_set),
  }
  # A loop whose trip count differs by seed (decoding that stops at EOS is one) runs on
  # each device alone: no collective in the program.
  def count_up(key):
    limit = jax.random.randint(key, (), 1, 20)
    return jax.lax.while_loop(lambda c: c[0] < limit, lambda c: (c[0] + 1, c[1] + c[0]),
                              (0, 0))
  counted, placed = compile_seeds(count_up, keys)
  limits = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 1, 20))(keys))
  counts, sums = counted(*placed)
  out["loop_counts"] = np.asarray(counts).tolist()
  out["loop_sums"] = np.asarray(sums).tolist()
  out["loop_limits"] = limits.tolist()
  # A carry that starts as a constant and picks up per-seed values (a decoding buffer of
  # zeros is one) compiles and gives each seed its own result.
  def accumulate(key):
    return jax.lax.scan(lambda c, _: (c + jax.random.normal(key), None), 0.0, None, 3)[0]
  acc, placed = compile_seeds(accumulate, keys)
  out["carry"] = np.asarray(acc(*placed)).tolist()
  out["carry_ref"] = (3 * np.asarray(jax.vmap(jax.random.normal)(keys))).tolist()
  out["loop_collectives"] = [op for op in ("all-reduce", "all-gather", "collective-permute",
                                           "all-to-all") if op in counted.as_text()]
  try:
    compile_seeds(lambda k, x: x, keys, np.zeros(5))
  except ValueError as e:
    out["bad_arg"] = str(e)
  try:
    use_cpu_devices(2)
  except RuntimeError as e:
    out["late"] = str(e)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
