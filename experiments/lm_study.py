"""What the language-model studies share: abstract model definitions, MLE pretraining of a
small transformer from scratch with seeds in parallel, and reward models fitted on a
pretrained backbone (all through the registry and `irl_jax.train.compiled.make_train`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from irl_jax import models
from irl_jax.train import registry
from irl_jax.train.compiled import make_train
from irl_jax.train.state import ModelDef, split_model


def model_defs(cfg: models.ModelConfig) -> tuple[ModelDef, ModelDef, dict]:
  """`(model_def, rm_def, rm_abstract)`: the static halves of a `Transformer` and of a
  `RewardModel` on it, and the reward model's abstract parameters (shapes only)."""
  model_def, _ = split_model(nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))))
  rm_def, rm_abstract = split_model(nnx.eval_shape(lambda: models.RewardModel(
      models.Transformer(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))))
  return model_def, rm_def, rm_abstract


def pretrain(config, cfg: models.ModelConfig, model_def: ModelDef, keys, arrays):
  """MLE from scratch (the registry's "mle"), one run per key, vmapped: AdamW with a linear
  warm-up (min(100, steps / 10 + 1) steps) then cosine decay to 0 from
  `config.pretrain_learning_rate`, `config.pretrain_steps` steps of
  `config.pretrain_batch` rows of `arrays` (LM arrays `[S, N, T]`, one set per key).

  Returns `(params [S, ...], losses [S, steps])`, the losses as NumPy (the run is done).
  """
  spec = registry.get("mle")
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(
      0.0, config.pretrain_learning_rate, min(100, config.pretrain_steps // 10 + 1),
      config.pretrain_steps), weight_decay=0.0)

  def one(key, data):
    train = make_train(lambda k: split_model(models.Transformer(cfg, rngs=nnx.Rngs(k)))[1],
                       model_def, spec.build(spec.hyperparameters()), tx, data,
                       steps=config.pretrain_steps, batch_size=config.pretrain_batch)
    state, log = train(key)
    return state.params, log["train"]["train/loss"]

  params, losses = jax.jit(jax.vmap(one))(keys, arrays)
  return params, np.asarray(losses)


def fit_reward_model(cfg: models.ModelConfig, rm_def: ModelDef, objective, tx, key,
                     backbone: Any, data: dict, *, steps: int, batch_size: int,
                     eval_every: int | None = None, eval_fn=None):
  """A `RewardModel` whose backbone starts from `backbone` (a pretrained policy's
  parameters) and whose head starts fresh from `key`, trained on preference arrays `data`
  with `objective` (a registered preference objective) by `make_train`; pure, vmappable.

  Returns `(params, log)` (`make_train`'s log).
  """

  def init(k):
    rm = models.RewardModel(models.Transformer(cfg, rngs=nnx.Rngs(k)), rngs=nnx.Rngs(k))
    return {**split_model(rm)[1], "backbone": backbone}

  train = make_train(init, rm_def, objective, tx, data, steps=steps, batch_size=batch_size,
                     eval_every=eval_every, eval_fn=eval_fn)
  state, log = train(key)
  return state.params, log


def check_pretraining(config) -> None:
  """Raises `ValueError` naming the config field when the model or its pretraining fields
  (`hidden_size`, `num_layers`, `num_heads`, `intermediate_size`, `pretrain_steps`,
  `corpus_size`, `pretrain_batch`, `pretrain_learning_rate`) are out of range."""
  from experiments import study

  for field in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                "pretrain_steps"):
    study.int_at_least(config, field, 1)
  for field in ("corpus_size", "pretrain_batch"):
    study.int_at_least(config, field, 2)
  if config.hidden_size % config.num_heads:
    raise ValueError(f"config.hidden_size ({config.hidden_size}) must be a multiple of "
                     f"config.num_heads ({config.num_heads}).")
  if config.pretrain_batch > config.corpus_size:
    raise ValueError(f"config.pretrain_batch ({config.pretrain_batch}) exceeds "
                     f"config.corpus_size ({config.corpus_size}).")
  study.finite_positive(config, "pretrain_learning_rate")


def check_chain(config) -> None:
  """Raises `ValueError` naming the config field when the toxic-token chain's fields
  (`num_tokens`, `num_bad`, `bad_mass`, `concentration`) are out of range."""
  from experiments import study

  study.int_at_least(config, "num_tokens", 3)
  study.int_at_least(config, "num_bad", 1)
  if config.num_bad >= config.num_tokens - 1:
    raise ValueError(f"config.num_bad must leave at least two non-toxic tokens, got "
                     f"{config.num_bad!r} of config.num_tokens={config.num_tokens!r}.")
  study.in_open_unit(config, "bad_mass")
  study.finite_positive(config, "concentration")
