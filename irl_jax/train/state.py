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


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def partition_params(params, trainable) -> tuple[Any, Any]:
  """`(train, frozen)`: the leaves of the pure-dict `params` split by
  `trainable(name) -> bool`, `name` the leaf's path joined by "/" (e.g.
  `"layers/29/mlp/up/kernel"`, `"final_norm/scale"`). Both halves keep the full
  structure with `None` in place of the other half's leaves; `merge_params` joins them.

  Raises `ValueError` when no leaf is trainable (a run that trains nothing).
  """
  names = jax.tree_util.tree_map_with_path(lambda p, _: _path_name(p), params)
  flags = jax.tree.map(lambda n: bool(trainable(n)), names)
  if not any(jax.tree.leaves(flags)):
    raise ValueError("partition_params: no parameter is trainable "
                     f"(first leaves: {jax.tree.leaves(names)[:3]}).")
  train = jax.tree.map(lambda f, x: x if f else None, flags, params)
  frozen = jax.tree.map(lambda f, x: None if f else x, flags, params)
  return train, frozen


def merge_params(train, frozen) -> Any:
  """The full pure-dict parameters from the halves of `partition_params`."""
  return jax.tree.map(lambda t, f: f if t is None else t, train, frozen,
                      is_leaf=lambda x: x is None)


class PartialModelDef(NamedTuple):
  """A `ModelDef` for training part of a model: `merge(train)` fills the model with
  `train` and the constant `frozen` half (`partition_params`), whose leaves get no
  gradient, optimizer state or update. Pass it where a `ModelDef` goes
  (`irl_jax.train.compiled.make_train`, `make_train_step`) with `init_params`
  returning the trainable half only: the frozen weights are then stored once, not in
  the train state, and vmapped seeds share them (pass `frozen` as an unbatched
  argument of the jitted function rather than closing over it, so that it is not
  compiled in as a constant)."""

  model_def: ModelDef
  frozen: Any

  def merge(self, train) -> nnx.Module:
    frozen = jax.tree.map(jax.lax.stop_gradient, self.frozen)
    return self.model_def.merge(merge_params(train, frozen))


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
