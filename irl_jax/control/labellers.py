"""Preference labellers over observations or rendered frames, and a Bradley–Terry reward
on frames: offline RL from a (vision-)language model's preferences, after RL-VLM-F.

    labeller = labellers.synthetic_labeller(labellers.pendulum_height, flip_prob=0.2,
                                            tie_margin=0.05)
    pairs = labellers.query_pairs(key, num_rows, num_pairs)          # [P, 2] row indices
    labels = labeller(key, obs[pairs[:, 0]], obs[pairs[:, 1]])       # 0 / 1 / NO_PREFERENCE
    model = labellers.make_frame_reward(labellers.FrameRewardConfig(), frame_shape=(32, 32))
    params, metrics = jax.jit(model.train)(key, frames_1, frames_2, labels)
    reward = model.apply(params, render(next_obs))                   # r_t = r̂(o_{t+1})

**Labellers** are any callable `labeller(key, first[B, ...], second[B, ...]) ->
labels[B]` (int32): `0` the first is preferred, `1` the second, `NO_PREFERENCE` (2)
neither. A real model (a VLM asked "which image shows the pendulum closer to upright?")
plugs in as such a callable on frames; the synthetic labeller stands in for one: it
compares a progress score of the two observations, answers "no preference" when the
scores are within `tie_margin`, and otherwise flips the correct answer with
probability `flip_prob`. Everything here is pure JAX (a model called through
`jax.pure_callback` fits the same interface).

**Frames.** `render_pendulum` rasterises a Pendulum observation into a grey
`[size, size]` image (a rod from the centre at the observed angle), in JAX, so frames
are made inside jitted code; `RENDERERS` maps environment names to renderers.

**The reward** `r̂(frame)` is a small CNN (two stride-2 3×3 convolutions, a dense
layer; Flax NNX) fitted by the Bradley–Terry loss on single-frame pairs, `−log σ(r̂(o_w)
− r̂(o_l))` for the preferred `o_w`; pairs answered `NO_PREFERENCE` are left out
(`ties="drop"`, the default; the count is in the metrics) or trained towards ½
(`ties="half"`). `mask` selects the pairs that count (nested query sets share one
compiled program). An MLP on raw observations (`arch="mlp"`) is the ablation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from irl_jax import losses
from irl_jax.control import networks

__all__ = ["NO_PREFERENCE", "RENDERERS", "FrameReward", "FrameRewardConfig",
           "make_frame_reward", "pendulum_height", "query_pairs", "render_pendulum",
           "synthetic_labeller"]

NO_PREFERENCE = 2


# --- labellers ---------------------------------------------------------------------------


def pendulum_height(obs) -> jax.Array:
  """Progress of a Pendulum observation `(cos θ, sin θ, θ̇)`: the tip's height `cos θ`
  (1 upright, −1 hanging)."""
  return jnp.asarray(obs)[..., 0]


def synthetic_labeller(score: Callable, *, flip_prob: float = 0.0,
                       tie_margin: float = 0.0) -> Callable:
  """`labeller(key, first, second) -> labels[B]` from a progress `score(obs[B, ...]) ->
  [B]`: `NO_PREFERENCE` where `|score(second) − score(first)| <= tie_margin`, else `1`
  when the second scores higher, `0` otherwise, each flipped with probability
  `flip_prob`."""
  if not 0.0 <= flip_prob <= 1.0:
    raise ValueError(f"synthetic_labeller: flip_prob must lie in [0, 1], got {flip_prob!r}")
  if not tie_margin >= 0.0:
    raise ValueError(f"synthetic_labeller: tie_margin must be >= 0, got {tie_margin!r}")

  def labeller(key, first, second):
    s1, s2 = score(first), score(second)
    correct = (s2 > s1).astype(jnp.int32)
    flip = jax.random.uniform(key, correct.shape) < flip_prob
    label = jnp.where(flip, 1 - correct, correct)
    return jnp.where(jnp.abs(s2 - s1) <= tie_margin, NO_PREFERENCE, label).astype(jnp.int32)

  return labeller


def query_pairs(key, num_rows: int, num_pairs: int) -> jax.Array:
  """`[num_pairs, 2]` row indices, each pair two distinct rows drawn uniformly."""
  if num_rows < 2:
    raise ValueError(f"query_pairs: need at least 2 rows, got {num_rows}")
  k1, k2 = jax.random.split(key)
  first = jax.random.randint(k1, (num_pairs,), 0, num_rows)
  offset = jax.random.randint(k2, (num_pairs,), 1, num_rows)
  return jnp.stack([first, (first + offset) % num_rows], axis=1)


# --- frames ------------------------------------------------------------------------------


def render_pendulum(obs, size: int = 32, width: float = 1.0) -> jax.Array:
  """A grey `[size, size]` float32 frame of a Pendulum observation `(cos θ, sin θ, θ̇)`
  (θ from upright): a rod of length 0.4·size from the centre, intensity `exp(−d²/2w²)`
  of the pixel's distance `d` to the rod. Angular velocity is not drawn (one frame
  cannot show it). Batched over leading axes."""
  obs = jnp.asarray(obs, jnp.float32)
  c, s = obs[..., 0], obs[..., 1]
  centre = (size - 1) / 2
  length = 0.4 * size
  ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                        jnp.arange(size, dtype=jnp.float32), indexing="ij")
  # Tip in image coordinates (y grows downwards): upright is above the centre.
  tx = (centre + length * s)[..., None, None]
  ty = (centre - length * c)[..., None, None]
  dx, dy = tx - centre, ty - centre
  t = jnp.clip(((xs - centre) * dx + (ys - centre) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
  d2 = jnp.square(xs - centre - t * dx) + jnp.square(ys - centre - t * dy)
  return jnp.exp(-d2 / (2 * width * width))


RENDERERS = {"gymnax/Pendulum-v1": render_pendulum}


# --- the reward on frames ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameRewardConfig:
  """arch: "cnn" on frames `[H, W]` or "mlp" on flat inputs. channels: the two
  convolutions' widths (cnn); hidden: the dense layers. num_steps, batch_size (pairs per
  step), learning_rate, max_grad_norm: Adam. ties: "drop" or "half" (see the module
  docstring)."""
  arch: str = "cnn"
  channels: tuple[int, ...] = (16, 32)
  hidden: tuple[int, ...] = (64,)
  num_steps: int = 1000
  batch_size: int = 64
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  ties: str = "drop"

  def __post_init__(self):
    object.__setattr__(self, "channels", tuple(int(x) for x in self.channels))
    object.__setattr__(self, "hidden", tuple(int(x) for x in self.hidden))
    if self.arch not in ("cnn", "mlp"):
      raise ValueError(f"FrameRewardConfig.arch must be 'cnn' or 'mlp', got {self.arch!r}.")
    if self.ties not in ("drop", "half"):
      raise ValueError(f"FrameRewardConfig.ties must be 'drop' or 'half', got {self.ties!r}.")
    for f in ("num_steps", "batch_size"):
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"FrameRewardConfig.{f} must be a positive integer, got {v!r}.")
    if not self.learning_rate > 0:
      raise ValueError(f"FrameRewardConfig.learning_rate must be > 0, got "
                       f"{self.learning_rate!r}.")
    if self.arch == "cnn" and len(self.channels) != 2:
      raise ValueError(f"FrameRewardConfig.channels must hold two widths, got {self.channels}.")


class CNNReward(nnx.Module):
  """r̂(frame): two stride-2 3×3 convolutions with ReLU, then an MLP to a scalar."""

  def __init__(self, frame_shape, channels, hidden, *, rngs: nnx.Rngs):
    h, w = frame_shape
    self.conv1 = nnx.Conv(1, channels[0], (3, 3), strides=(2, 2), rngs=rngs)
    self.conv2 = nnx.Conv(channels[0], channels[1], (3, 3), strides=(2, 2), rngs=rngs)
    flat = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2) * channels[1]
    self.head = networks.MLP(flat, hidden, 1, rngs=rngs, activation=nnx.relu)

  def __call__(self, frames):   # [N, H, W]
    x = frames[..., None]
    x = nnx.relu(self.conv1(x))
    x = nnx.relu(self.conv2(x))
    return self.head(jnp.reshape(x, (x.shape[0], -1)))[..., 0]


class MLPReward(nnx.Module):
  """r̂(frame) by an MLP on the flattened frame (or raw observation)."""

  def __init__(self, frame_shape, hidden, *, rngs: nnx.Rngs):
    self.net = networks.MLP(int(np.prod(frame_shape)), hidden, 1, rngs=rngs,
                            activation=nnx.relu)

  def __call__(self, frames):   # [N, *frame_shape]
    return self.net(jnp.reshape(frames, (frames.shape[0], -1)))[..., 0]


class FrameReward(NamedTuple):
  config: FrameRewardConfig
  frame_shape: tuple
  init: Callable     # key -> params
  train: Callable    # (key, first[P, ...], second[P, ...], labels[P], mask=None) -> (params, m)
  apply: Callable    # (params, frames[..., *frame_shape]) -> rewards[...]


def make_frame_reward(config: FrameRewardConfig | Mapping | None,
                      frame_shape: tuple) -> FrameReward:
  """A Bradley–Terry reward on frames of `frame_shape` (`[H, W]` for the CNN, any shape
  for the MLP). `train` is jit- and vmap-able (seeds, query sets as masks)."""
  if config is None:
    config = FrameRewardConfig()
  elif isinstance(config, Mapping):
    config = FrameRewardConfig(**config)
  c = config
  frame_shape = tuple(int(x) for x in frame_shape)
  if c.arch == "cnn":
    if len(frame_shape) != 2:
      raise ValueError(f"make_frame_reward: the CNN takes [H, W] frames, got frame_shape "
                       f"{frame_shape}")
    net = networks.pure(lambda rngs: CNNReward(frame_shape, c.channels, c.hidden, rngs=rngs))
  else:
    net = networks.pure(lambda rngs: MLPReward(frame_shape, c.hidden, rngs=rngs))
  tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(c.learning_rate))
  nd = len(frame_shape)

  def apply(params, frames):
    frames = jnp.asarray(frames, jnp.float32)
    if frames.shape[frames.ndim - nd:] != frame_shape:
      raise ValueError(f"FrameReward.apply: frames must end in {frame_shape}, got "
                       f"{tuple(frames.shape)}")
    lead = frames.shape[:frames.ndim - nd]
    flat = jnp.reshape(frames, (-1, *frame_shape))
    return jnp.reshape(net.apply(params, flat), lead)

  def train(key, first, second, labels, mask=None):
    labels = jnp.asarray(labels, jnp.int32)
    p = labels.shape[0]
    if jnp.shape(first) != (p, *frame_shape) or jnp.shape(second) != (p, *frame_shape):
      raise ValueError(f"FrameReward.train: first and second must be [{p}, "
                       f"{', '.join(map(str, frame_shape))}], got {jnp.shape(first)} and "
                       f"{jnp.shape(second)}")
    mask = jnp.ones((p,), bool) if mask is None else jnp.asarray(mask, bool)
    tie = labels == NO_PREFERENCE
    use = jnp.logical_and(mask, jnp.logical_not(tie)) if c.ties == "drop" else mask
    target = jnp.where(tie, 0.5, labels.astype(jnp.float32))     # P(second preferred)
    weight = use.astype(jnp.float32)
    k_init, k_loop = jax.random.split(key)
    params = net.init(k_init)
    prob = weight / jnp.maximum(jnp.sum(weight), 1.0)

    def step(carry, key):
      params, opt = carry
      idx = jax.random.choice(key, p, (c.batch_size,), p=prob)
      y = target[idx]

      def loss_fn(q):
        r1 = net.apply(q, first[idx])
        r2 = net.apply(q, second[idx])
        per = y * losses.bradley_terry(r2, r1) + (1 - y) * losses.bradley_terry(r1, r2)
        acc = jnp.mean(jnp.where(y == 0.5, 0.5, ((r2 > r1) == (y > 0.5)).astype(jnp.float32)))
        return jnp.mean(per), acc

      (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, updates), opt), {"loss": loss, "accuracy": acc}

    (params, _), metrics = jax.lax.scan(step, (params, tx.init(params)),
                                        jax.random.split(k_loop, c.num_steps))
    metrics["pairs_used"] = jnp.broadcast_to(jnp.sum(weight), (c.num_steps,))
    metrics["ties"] = jnp.broadcast_to(jnp.sum(jnp.logical_and(mask, tie)), (c.num_steps,))
    return params, metrics

  return FrameReward(c, frame_shape, net.init, train, apply)

