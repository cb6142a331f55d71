"""Flax NNX networks for control, used as pure functions of their parameters.

Every learner of `irl_jax.control` keeps its networks as `(apply, params)` pairs:
`params` is a pytree (vmappable over seeds, an Orbax checkpoint as it is) and
`apply(params, *inputs)` rebuilds the NNX module and calls it. Policies return
distrax distributions: `distrax.Categorical` for discrete actions, and a
tanh-squashed diagonal Gaussian rescaled to the action box for continuous ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irl_jax.control.envs import ActionSpec


class PureNet(NamedTuple):
  """`init(key) -> params` (the `nnx.Param` leaves only) and `apply(params, *args,
  method=None)`. Other variables (non-`Param` ones, such as TD3's `TanhActor`
  bounds) are constants of `apply`, so optimisers never move them."""
  init: Callable
  apply: Callable


def pure(build: Callable[[nnx.Rngs], nnx.Module]) -> PureNet:
  """The module built by `build(rngs)` as a pair of pure functions (`PureNet`).

  `init` is jit- and vmap-able over keys; `apply` rebuilds the module from the
  parameters and calls it, or its `method`. Nothing is initialised eagerly: the
  structure comes from an abstract module, and non-parameter variables from a
  jitted build that returns only them (XLA prunes the initialisers).
  """
  graphdef, _, rest = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))), nnx.Param, ...)
  if jax.tree.leaves(rest):
    rest = jax.jit(lambda: nnx.split(build(nnx.Rngs(0)), nnx.Param, ...)[2])()

  def init(key):
    return nnx.split(build(nnx.Rngs(key)), nnx.Param, ...)[1]

  def apply(params, *args, method: str | None = None):
    module = nnx.merge(graphdef, params, rest)
    return getattr(module, method)(*args) if method else module(*args)

  # The orthogonal initialisers call LAPACK's QR. Batched by `jax.vmap` (seeds), XLA:CPU
  # runs several batched QRs at once on its intra-op pool, each blocking a worker while
  # it waits for its own sub-tasks: on a 2-core machine the pool deadlocks. Under vmap,
  # `init` therefore runs one key at a time (unbatched QRs; the same parameters, bit for
  # bit). Initialisation is cheap.
  return PureNet(jax.custom_batching.sequential_vmap(init), apply)


@jax.custom_jvp
def dense(x, kernel, bias):
  """`x @ kernel + bias` for `x[..., in]`, `kernel[in, out]`, `bias[out]`, with a
  derivative rule that keeps the weight gradient a plain matrix product on the CPU.

  Differentiated as written, the weight gradient `xᵀ·g` contracts the batch axis of
  both operands, a form that XLA:CPU hands to a generic kernel instead of its fast
  matrix-multiply library: for a 256-row batch through 64-wide layers that one
  product took 40 µs against about 5 µs, most of a small network's backward pass. The
  rule below computes `xᵀ` once in the forward pass behind an optimisation barrier
  (so that XLA cannot fold the transpose back into the product), which makes the
  transposed tangent map the ordinary `(xᵀ)·g`. Values and derivatives are those of
  `x @ kernel + bias`, to all orders and in both modes (`jax.grad`, `jax.jvp`,
  `jax.hessian`); only the layout of one product differs. Tangents that are known
  zeros (undifferentiated inputs, such as observations) cost nothing."""
  return x @ kernel + bias


def _dense_jvp(primals, tangents):
  x, kernel, bias = primals
  dx, dkernel, dbias = tangents
  y = x @ kernel + bias
  zero = jax.custom_derivatives.SymbolicZero
  dy = jnp.zeros_like(y)
  if not isinstance(dx, zero):
    dy = dy + dx @ kernel
  if not isinstance(dkernel, zero):
    rows = jnp.reshape(x, (-1, x.shape[-1]))
    rows_t = jax.lax.optimization_barrier(rows.T)  # [in, M], materialised
    dy = dy + jnp.reshape(rows_t.T @ dkernel, y.shape)
  if not isinstance(dbias, zero):
    dy = dy + dbias
  return y, dy


dense.defjvp(_dense_jvp, symbolic_zeros=True)


class Dense(nnx.Linear):
  """`nnx.Linear` (the same parameters, `kernel` and `bias`, so checkpoints are
  interchangeable) whose call on the CPU is `dense`: the same values and derivatives,
  with a faster weight gradient. Elsewhere, and for anything but float32 inputs and
  parameters with a bias and `nnx.Linear`'s default dtype, precision and product, it
  is `nnx.Linear`'s own call."""

  def __call__(self, x, out_sharding=None):
    x = jnp.asarray(x)
    plain = (self.bias is None or x.ndim == 0 or out_sharding is not None
             or jax.default_backend() != "cpu"
             or self.dtype not in (None, jnp.float32) or self.precision is not None
             or self.dot_general is not jax.lax.dot_general
             or self.preferred_element_type is not None)
    if not plain:
      kernel, bias = self.kernel[...], self.bias[...]
      if x.dtype == kernel.dtype == bias.dtype == jnp.float32:
        return dense(x, kernel, bias)
    return super().__call__(x, out_sharding=out_sharding)


class MLP(nnx.Module):
  """Dense layers with `activation` between them; orthogonal initialisation (scale √2,
  and `final_scale` on the last layer), zero biases."""

  def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *, rngs: nnx.Rngs,
               activation: Callable = nnx.tanh, final_scale: float = 1.0):
    sizes = [in_dim, *hidden, out_dim]
    self.layers = nnx.List([
        Dense(a, b, rngs=rngs, bias_init=nnx.initializers.zeros,
                   kernel_init=nnx.initializers.orthogonal(
                       final_scale if i == len(sizes) - 2 else np.sqrt(2.0)))
        for i, (a, b) in enumerate(itertools.pairwise(sizes))])
    self.activation = activation

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = self.activation(layer(x))
    return self.layers[-1](x)


def squashed_gaussian(mean, std, low, high) -> distrax.Distribution:
  """A diagonal Gaussian pushed through tanh and rescaled to `[low, high]` (exact
  log-densities with the change of variables; distrax's bijectors)."""
  low = jnp.asarray(low, mean.dtype)
  high = jnp.asarray(high, mean.dtype)
  bijector = distrax.Block(distrax.Chain([
      distrax.ScalarAffine(shift=(high + low) / 2, scale=(high - low) / 2), distrax.Tanh()]), 1)
  return distrax.Transformed(distrax.MultivariateNormalDiag(mean, std), bijector)


def log_std_bias(init_log_std: float, log_std_range: tuple[float, float]) -> float:
  """The raw log-std output `u` that `Policy` maps to `init_log_std`: the inverse of
  `log σ = lo + ½(hi − lo)(tanh(u) + 1)`. A `ValueError` names `init_log_std` when it
  is not strictly inside `log_std_range`."""
  lo, hi = (float(x) for x in log_std_range)
  if not lo < init_log_std < hi:
    raise ValueError(f"init_log_std: {init_log_std!r} must lie strictly inside log_std_range "
                     f"({lo}, {hi}) (the log-std is squashed into that range).")
  return float(np.arctanh(2.0 * (init_log_std - lo) / (hi - lo) - 1.0))


class Policy(nnx.Module):
  """π(a|s): `Categorical` logits for a discrete `ActionSpec`, a squashed Gaussian
  (state-dependent log-std clipped to `log_std_range`) for a continuous one.

  The log-std head's output `u` is mapped into the range as
  `log σ = lo + ½(hi − lo)(tanh(u) + 1)`. The last layer starts with small weights
  (scale 0.01), so the initial log-std is set by that head's bias: at its midpoint
  `(lo + hi)/2` with `init_log_std=None` (zero bias), otherwise `init_log_std`
  (`log_std_bias`), e.g. 0.0, a unit standard deviation before the tanh, as
  stable-baselines3's `log_std_init` and CleanRL's PPO start."""

  def __init__(self, obs_dim: int, action: ActionSpec, hidden: Sequence[int] = (64, 64), *,
               rngs: nnx.Rngs, activation: Callable = nnx.tanh,
               log_std_range: tuple[float, float] = (-5.0, 2.0),
               init_log_std: float | None = None):
    self.discrete = action.discrete
    if action.discrete:
      self.net = MLP(obs_dim, hidden, int(action.num_actions), rngs=rngs, activation=activation,
                     final_scale=0.01)
    else:
      dim = int(np.prod(action.shape))
      self.net = MLP(obs_dim, hidden, 2 * dim, rngs=rngs, activation=activation, final_scale=0.01)
      if init_log_std is not None:
        head = self.net.layers[-1]
        head.bias[...] = head.bias[...].at[dim:].set(log_std_bias(init_log_std, log_std_range))
      # Static (hashable) bounds: part of the graph definition, never trained.
      self.low = tuple(float(x) for x in np.ravel(action.low))
      self.high = tuple(float(x) for x in np.ravel(action.high))
    self.log_std_range = tuple(log_std_range)

  def __call__(self, obs) -> distrax.Distribution:
    out = self.net(obs)
    if self.discrete:
      return distrax.Categorical(logits=out.astype(jnp.float32))
    mean, log_std = jnp.split(out.astype(jnp.float32), 2, axis=-1)
    lo, hi = self.log_std_range
    log_std = lo + 0.5 * (hi - lo) * (jnp.tanh(log_std) + 1.0)
    return squashed_gaussian(mean, jnp.exp(log_std), jnp.asarray(self.low), jnp.asarray(self.high))

  def mode(self, obs):
    """The deterministic action: the most likely discrete action, or the squashed mean."""
    out = self.net(obs)
    if self.discrete:
      return jnp.argmax(out, axis=-1)
    mean, _ = jnp.split(out.astype(jnp.float32), 2, axis=-1)
    low, high = jnp.asarray(self.low), jnp.asarray(self.high)
    return (high + low) / 2 + (high - low) / 2 * jnp.tanh(mean)


class ValueNet(nnx.Module):
  """V(s) -> scalar."""

  def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64), *, rngs: nnx.Rngs,
               activation: Callable = nnx.tanh):
    self.net = MLP(obs_dim, hidden, 1, rngs=rngs, activation=activation)

  def __call__(self, obs):
    return self.net(obs)[..., 0]


class QNet(nnx.Module):
  """`num_critics` independent critics: Q(s, ·) -> `[..., C, A]` for a discrete
  `ActionSpec`, Q(s, a) -> `[..., C]` for a continuous one."""

  def __init__(self, obs_dim: int, action: ActionSpec, hidden: Sequence[int] = (256, 256), *,
               rngs: nnx.Rngs, num_critics: int = 2, activation: Callable = nnx.relu):
    self.discrete = action.discrete
    if action.discrete:
      in_dim, out_dim = obs_dim, int(action.num_actions)
    else:
      in_dim, out_dim = obs_dim + int(np.prod(action.shape)), 1
    self.critics = nnx.List([MLP(in_dim, hidden, out_dim, rngs=rngs, activation=activation)
                             for _ in range(num_critics)])

  def __call__(self, obs, action=None):
    if self.discrete:
      return jnp.stack([c(obs) for c in self.critics], axis=-2)
    x = jnp.concatenate([obs, action.astype(obs.dtype)], axis=-1)
    return jnp.stack([c(x)[..., 0] for c in self.critics], axis=-1)


class Discriminator(nnx.Module):
  """A scalar score of `(s, a, s')` features: the GAIL discriminator's logit, or
  AIRL's reward g(s[, a]) and potential h(s) (`potential=True` adds h)."""

  def __init__(self, in_dim: int, hidden: Sequence[int] = (64, 64), *, rngs: nnx.Rngs,
               obs_dim: int | None = None, potential: bool = False,
               activation: Callable = nnx.tanh):
    self.g = MLP(in_dim, hidden, 1, rngs=rngs, activation=activation)
    self.h = MLP(obs_dim, hidden, 1, rngs=rngs, activation=activation) if potential else None

  def __call__(self, x):
    return self.g(x)[..., 0]

  def potential(self, obs):
    return self.h(obs)[..., 0]


def functional(module: nnx.Module):
  """`(apply, params)` for an NNX module: `apply(params, *args, method=None)` rebuilds
  the module from `params` (a pytree of arrays) and calls it (or `method` on it)."""
  graphdef, params = nnx.split(module)

  def apply(params, *args, method: str | None = None):
    m = nnx.merge(graphdef, params)
    return getattr(m, method)(*args) if method else m(*args)

  return apply, params


def one_hot_actions(action, spec: ActionSpec):
  """Actions as float features: one-hot for discrete actions, as they are otherwise."""
  if spec.discrete:
    return jax.nn.one_hot(action, int(spec.num_actions), dtype=jnp.float32)
  return jnp.reshape(action, (*action.shape[:action.ndim - len(spec.shape)], -1)).astype(
      jnp.float32)
