"""Device mesh, parameter and batch shardings (jit + NamedSharding; no pmap).

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv_heads`,
`mlp`); `LOGICAL_RULES` maps them to mesh axes: `embed` is sharded over the
FSDP axis and the rest over the tensor axis. A dimension that a mesh axis does
not divide stays replicated. Batches are sharded over `('data', 'fsdp')`.

`pmap`-style data parallelism is `mesh={'data': -1}`: every device holds the
parameters and a slice of the batch, and the compiler inserts the gradient
all-reduce that `pmap` + `lax.pmean` wrote by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_RULES = {"embed": "fsdp", "vocab": "tensor", "heads": "tensor", "kv_heads": "tensor",
                 "mlp": "tensor"}
BATCH_AXES = ("data", "fsdp")


def make_mesh(axes: Mapping[str, int], devices=None) -> Mesh:
  """A mesh with axes `data`, `fsdp`, `tensor` (missing axes have size 1; one may be -1).

  Example: `make_mesh({'data': -1})` is pure data parallelism over all devices;
  `make_mesh({'data': 2, 'fsdp': 4})` shards parameters over groups of 4.
  """
  unknown = set(axes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {MESH_AXES}.")
  devices = jax.devices() if devices is None else devices
  sizes = [int(axes.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(axes)}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh {dict(axes)}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
        f"{len(devices)} are available.")
  # Auto axes: the compiler propagates shardings from the annotated parameters
  # and batches (JAX 0.10 defaults to Explicit axes, which need every gather
  # and einsum annotated).
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def _spec_for(shape, logical, mesh: Mesh) -> PartitionSpec:
  axes = []
  for dim, name in zip(shape, logical or (None,) * len(shape), strict=False):
    axis = LOGICAL_RULES.get(name) if name else None
    if axis is None or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
      axes.append(None)
    else:
      axes.append(axis)
  return PartitionSpec(*axes)


def param_shardings(model: nnx.Module, mesh: Mesh):
  """Pure-dict tree of `NamedSharding`s for `nnx.state(model)`, from the logical names."""
  state = nnx.state(model)

  def one(var):
    meta = var.get_metadata()
    value = var.get_value()
    return NamedSharding(mesh, _spec_for(value.shape, meta.get("out_sharding"), mesh))

  shardings = jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings)


def batch_sharding(mesh: Mesh, ndim: int, *, micro_batched: bool = False) -> NamedSharding:
  """Shard the batch dimension (after the micro-batch dimension, if any) over data and FSDP."""
  lead = (None,) if micro_batched else ()
  rest = (None,) * (ndim - len(lead) - 1)
  return NamedSharding(mesh, PartitionSpec(*lead, BATCH_AXES, *rest))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, *, micro_batched: bool = False):
  """Assemble each host's slice of the batch into globally sharded arrays.

  Every process passes its own rows (its data shard); the result is one global
  array per key whose leading batch dimension is the concatenation over
  processes.
  """
  return {
      k: jax.make_array_from_process_local_data(
          batch_sharding(mesh, np.ndim(v), micro_batched=micro_batched), np.asarray(v))
      for k, v in local.items()
  }
