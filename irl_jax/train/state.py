"""Train state: parameters (float32 master copy), optimizer state, step and PRNG key.

Parameters are kept as the model's pure-dict state so that the state is a
plain pytree (checkpointable by Orbax, shardable leaf by leaf); the model's
structure (`graphdef`) stays outside and is merged back inside the step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class TrainState(NamedTuple):
  """Everything that changes during training (the data iterator position is host-side).

  Attributes:
    step: int32 scalar, number of applied updates.
    params: pure dict of the model's parameters.
    opt_state: optax state.
    rng: uint32 PRNG key data (`jax.random.key_data`), split once per step.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class ModelDef(NamedTuple):
  """The static half of a model: merge it with parameters to get the module back."""

  graphdef: Any
  template: Any  # abstract nnx.State, the structure `params` are written into

  def merge(self, params) -> nnx.Module:
    state = jax.tree.map(lambda x: x, self.template)  # a fresh copy to fill
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)


def split_model(model: nnx.Module) -> tuple[ModelDef, Any]:
  """`(ModelDef, params)` with `params` the pure-dict state of `model`."""
  graphdef, state = nnx.split(model)
  template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  return ModelDef(graphdef, template), nnx.to_pure_dict(state)


def init_train_state(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
  """A fresh state (call under `jax.jit` with output shardings to place it on a mesh)."""
  # Copies: the train step donates the state, which must never alias the caller's arrays.
  params = jax.tree.map(lambda p: jnp.array(p, jnp.float32 if jnp.issubdtype(
      p.dtype, jnp.floating) else p.dtype, copy=True), params)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.key(seed)),
  )
