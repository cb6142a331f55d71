"""Masked Trajectory Models (MTM, Wu et al. 2023): one bidirectional transformer over
trajectory segments that, trained once with random masks, serves as inverse dynamics,
forward dynamics, behaviour cloning (BC), return-conditioned BC (RCBC) and goal
reaching by changing only which tokens it sees.

    learner = mtm.make_mtm(mtm.MTMConfig(num_steps=3_000), env.spec)
    trajs = mtm.trajectories(episodes, learner.config)          # padded, per episode
    state, metrics = jax.jit(learner.train)(key, trajs)        # one seed
    states, _ = jax.jit(jax.vmap(learner.train, in_axes=(0, None)))(keys, trajs)
    a_t = mtm.predict(learner, state, segment, "inverse_dynamics", t)
    returns = mtm.evaluate(learner, state, env, key, num_episodes=10, mode="rcbc",
                           target_return=-150.0)

Tokens. A segment of `L` consecutive steps of one episode has `3L` tokens, three
modalities per step in the order states `s_t`, returns-to-go `R_t`, actions `a_t`
(`MODALITIES`). Each modality has its own linear embedding into width `d`; a
learned time-step (position) embedding `[L, d]` and a modality embedding `[3, d]`
are added. A masked token's embedding is replaced by one learned mask token (to
which the same position and modality embeddings are added), so the network knows
where and what it should fill in. States are normalised by the dataset's mean and
standard deviation (stored in the state); actions are mapped from their box to
`[−1, 1]`; `R_t = return_scale · Σ_{t' ≥ t} r_{t'}` within the episode (undiscounted).

Network. The paper's encoder–decoder is simplified to one encoder stack (pre-LayerNorm
blocks of full, non-causal multi-head self-attention and a GELU MLP) over all `3L`
tokens, followed by a final LayerNorm and one linear output head per modality, read at
that modality's tokens. Activations run in `config.dtype` (e.g. bfloat16) and
parameters are stored in `config.param_dtype`; attention softmax and the loss are
computed in float32.

Loss. The mean squared error between each head's outputs and the true (normalised)
values, averaged over the feature dimension, then over all tokens of the modality
(visible and masked alike, as MTM reconstructs every token), and summed over the three
modalities. Tokens of padding steps have weight 0; so do the action tokens of
trajectories without actions (heteromodal training): their action tokens are always
masked and excluded from the loss, and a modality's average runs over its remaining
tokens only.

Masks (`[L, 3]` bool, 1 = visible, columns in `MODALITIES` order):

- `random_autoregressive_mask` (training): per segment, a ratio `ρ` drawn uniformly
  from `mask_ratios`; per modality `floor(ρL)` positions drawn at random stay visible.
  Then a time `t` uniform in `[0, L)` and a modality `m*` drawn with probabilities
  `modality_probs` (states 0.2, returns 0.1, actions 0.7): modalities before `m*` are
  hidden after `t`, `m*` and those after it from `t` on.
- `inference_mask(mode, L, t)` for the named `MODES` on the same weights:
  `inverse_dynamics`: all states, actions before `t`; predict `a_t`.
  `forward_dynamics`: states and actions up to `t`; predict `s_{t+1}` (`t ≤ L − 2`).
  `bc`: states up to `t`, actions before `t`; predict `a_t`.
  `rcbc`: `bc` plus returns-to-go up to `t`; predict `a_t`.
  `goal_reaching`: states up to `t` and the segment's last state, actions before `t`;
  predict `a_t`.
  Returns are hidden in every mode but `rcbc`.

A specialised model (the paper's baseline) is the same network trained with one
mode's mask at a uniformly drawn `t` (`MTMConfig.train_mask = "<mode>"`).

References:
  Wu, Fu, Hafner, Abbeel & Rajeswaran 2023, "Masked Trajectory Models for Prediction,
  Representation, and Control".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from irl_jax.control import data, envs, networks
from irl_jax.control.envs import EnvSpec
from irl_jax.control.offline import ObsNorm
from irl_jax.control.types import as_config

__all__ = [
    "MASK_RATIOS",
    "MODALITIES",
    "MODALITY_PROBS",
    "MODES",
    "TRAIN_MASKS",
    "MTMConfig",
    "MTMLearner",
    "MTMNet",
    "MTMState",
    "Segments",
    "Trajectories",
    "Window",
    "WindowPolicy",
    "evaluate",
    "heldout_errors",
    "inference_mask",
    "make_mtm",
    "policy",
    "predict",
    "random_autoregressive_mask",
    "returns_to_go",
    "sample_segments",
    "token_weights",
    "train_mask",
    "trajectories",
    "visible_tokens",
]

MODALITIES = ("states", "returns", "actions")
STATES, RETURNS, ACTIONS = 0, 1, 2
MASK_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
MODALITY_PROBS = (0.2, 0.1, 0.7)
MODES = ("inverse_dynamics", "forward_dynamics", "bc", "rcbc", "goal_reaching")
TRAIN_MASKS = ("random_autoregressive", *MODES)
_STD_EPS = 1e-3


# --- data ------------------------------------------------------------------------------


class Trajectories(NamedTuple):
  """Whole episodes, padded to a common length: `[E, T + L, ...]` (`T` the longest
  episode), so a segment of `L` steps from any start `< T` stays inside the arrays.

  states: `[E, T + L, O]` float32, flattened observations. actions: `[E, T + L, A]`
  float32 in the action box. returns: `[E, T + L]` float32, `return_scale` times the
  undiscounted return-to-go. lengths: `[E]` int32. has_actions: `[E]` bool, False for
  action-free trajectories (their actions are never seen nor learned).
  weight: `[E]` float32, the episode's sampling weight (0: never drawn, padding or an
  episode left out of this run's data, so differently selected sets share one shape).
  """
  states: jax.Array
  actions: jax.Array
  returns: jax.Array
  lengths: jax.Array
  has_actions: jax.Array
  weight: jax.Array


class Segments(NamedTuple):
  """`[..., L, ...]` segments in raw units: states `[..., L, O]`, actions `[..., L, A]`,
  returns `[..., L]` (scaled returns-to-go), valid `[..., L]` bool (False on padding
  past an episode's end), has_actions `[...]` bool."""
  states: jax.Array
  actions: jax.Array
  returns: jax.Array
  valid: jax.Array
  has_actions: jax.Array


def returns_to_go(rewards, lengths) -> np.ndarray:
  """`[E, T]` undiscounted returns-to-go `R_t = Σ_{t ≤ t' < len} r_t'` of padded rewards
  `[E, T]` (entries at and past an episode's length are 0)."""
  rewards = np.asarray(rewards, np.float64)
  live = np.arange(rewards.shape[1])[None, :] < np.asarray(lengths)[:, None]
  r = np.where(live, rewards, 0.0)
  return np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1) * live


def trajectories(episodes: data.Episodes, config: MTMConfig, *, has_actions=None,
                 weight=None) -> Trajectories:
  """`Trajectories` of an `Episodes` (see there), padded for `config.segment_length` and
  with returns-to-go scaled by `config.return_scale`. `has_actions`, `weight`: `[E]`
  per episode (default all True / all 1); action-free episodes keep zeros as actions."""
  spec = episodes.spec
  if spec.action.discrete:
    raise ValueError("mtm.trajectories: MTM here takes continuous actions (a box)")
  e, lengths = episodes.num_episodes, episodes.lengths
  t_max = int(lengths.max()) + int(config.segment_length)
  obs_dim, act_dim = int(np.prod(spec.obs_shape)), int(np.prod(spec.action.shape))
  states = np.zeros((e, t_max, obs_dim), np.float32)
  actions = np.zeros((e, t_max, act_dim), np.float32)
  rewards = np.zeros((e, t_max), np.float32)
  for i, (start, n) in enumerate(zip(episodes.episode_starts, lengths, strict=True)):
    states[i, :n] = episodes.obs[start:start + n].reshape(n, obs_dim)
    actions[i, :n] = episodes.action[start:start + n].reshape(n, act_dim)
    rewards[i, :n] = episodes.reward[start:start + n]
  has = np.ones(e, bool) if has_actions is None else np.asarray(has_actions, bool)
  w = np.ones(e, np.float32) if weight is None else np.asarray(weight, np.float32)
  if has.shape != (e,) or w.shape != (e,):
    raise ValueError(f"mtm.trajectories: has_actions and weight must have shape ({e},), got "
                     f"{has.shape} and {w.shape}")
  if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.any(w > 0)):
    raise ValueError("mtm.trajectories: weight must be finite, >= 0 and > 0 for at least one "
                     f"episode, got {w.tolist()}")
  actions = np.where(has[:, None, None], actions, 0.0)
  rtg = (returns_to_go(rewards, lengths) * float(config.return_scale)).astype(np.float32)
  return Trajectories(jnp.asarray(states), jnp.asarray(actions), jnp.asarray(rtg),
                      jnp.asarray(lengths, jnp.int32), jnp.asarray(has), jnp.asarray(w))


def sample_segments(trajs: Trajectories, key, batch_size: int, segment_length: int) -> Segments:
  """`batch_size` segments: an episode drawn in proportion to `weight`, a start uniform
  in `[0, max(len − L, 0)]` (an episode shorter than `L` gives a segment padded past
  its end, `valid` False there)."""
  k_e, k_s = jax.random.split(key)
  logits = jnp.where(trajs.weight > 0, jnp.log(jnp.maximum(trajs.weight, 1e-30)), -jnp.inf)
  episode = jax.random.categorical(k_e, logits, shape=(batch_size,))
  length = trajs.lengths[episode]
  span = jnp.maximum(length - segment_length, 0) + 1
  start = jnp.floor(jax.random.uniform(k_s, (batch_size,)) * span).astype(jnp.int32)
  return _slice(trajs, episode, jnp.minimum(start, span - 1), segment_length)


def _slice(trajs: Trajectories, episode, start, segment_length: int) -> Segments:
  def one(e, s):
    take = lambda x: jax.lax.dynamic_slice_in_dim(x[e], s, segment_length, axis=0)
    valid = s + jnp.arange(segment_length) < trajs.lengths[e]
    return Segments(take(trajs.states), take(trajs.actions), take(trajs.returns), valid,
                    trajs.has_actions[e])
  return jax.vmap(one)(episode, start)


# --- masks -----------------------------------------------------------------------------


def _autoregressive_cut(length: int, t, modality) -> jax.Array:
  """`[L, 3]`: visible before the cut — positions `≤ t` for modalities before
  `modality`, `< t` for it and those after it."""
  pos = jnp.arange(length)[:, None]
  m = jnp.arange(3)[None, :]
  return jnp.where(m < modality, pos <= t, pos < t)


def _mask_draws(key, length: int, mask_ratios, modality_probs):
  """The random draws of one training mask: `(n, rank, t, modality)`, the visible count
  `floor(ρL)`, each position's rank `[L, 3]` in a random permutation per modality, the
  cut time and the cut modality `m*`. The counts are computed in float64 at trace time
  (so `0.7 · 10` gives 7, not 6)."""
  counts = jnp.asarray(np.floor(np.asarray(mask_ratios, np.float64) * length + 1e-9),
                       jnp.int32)
  k_ratio, k_perm, k_t, k_m = jax.random.split(key, 4)
  n = counts[jax.random.randint(k_ratio, (), 0, len(mask_ratios))]
  scores = jax.random.uniform(k_perm, (length, 3))
  rank = jnp.argsort(jnp.argsort(scores, axis=0), axis=0)
  t = jax.random.randint(k_t, (), 0, length)
  modality = jax.random.categorical(k_m, jnp.log(jnp.asarray(modality_probs, jnp.float32)))
  return n, rank, t, modality


def random_autoregressive_mask(key, length: int, mask_ratios: Sequence[float] = MASK_RATIOS,
                               modality_probs: Sequence[float] = MODALITY_PROBS) -> jax.Array:
  """MTM's training mask, `[L, 3]` bool (1 = visible; columns `MODALITIES`); pure and
  jit-able: per modality the `floor(ρL)` positions of lowest random rank, then the
  autoregressive cut at `(t, m*)` (module docstring)."""
  n, rank, t, modality = _mask_draws(key, length, mask_ratios, modality_probs)
  return jnp.logical_and(rank < n, _autoregressive_cut(length, t, modality))


def _mode_index(mode) -> jax.Array:
  if isinstance(mode, str):
    if mode not in MODES:
      raise ValueError(f"unknown MTM mode {mode!r}; expected one of {MODES}")
    return jnp.asarray(MODES.index(mode), jnp.int32)
  return jnp.asarray(mode, jnp.int32)


def inference_mask(mode, length: int, t) -> jax.Array:
  """`[L, 3]` bool, the visible tokens of `mode` (a name in `MODES`, or its index,
  which may be traced) when predicting at time `t` (module docstring)."""
  pos = jnp.arange(length)
  upto, before = pos <= t, pos < t
  none, every = jnp.zeros(length, bool), jnp.ones(length, bool)
  goal = jnp.logical_or(upto, pos == length - 1)
  masks = jnp.stack([
      jnp.stack([every, none, before], axis=-1),       # inverse dynamics
      jnp.stack([upto, none, upto], axis=-1),          # forward dynamics
      jnp.stack([upto, none, before], axis=-1),        # bc
      jnp.stack([upto, upto, before], axis=-1),        # rcbc
      jnp.stack([goal, none, before], axis=-1)])       # goal reaching
  return masks[_mode_index(mode)]


def train_mask(key, length: int, task, mask_ratios=MASK_RATIOS,
               modality_probs=MODALITY_PROBS) -> jax.Array:
  """`[L, 3]` one training mask for `task`, an index into `TRAIN_MASKS` (may be
  traced): 0 the random autoregressive mask; otherwise the mode's `inference_mask` at
  `t` uniform in `[0, L)` (`[0, L − 1)` for forward dynamics, whose target is `t + 1`)."""
  k_r, k_t = jax.random.split(key)
  task = jnp.asarray(task, jnp.int32)
  mode = jnp.maximum(task - 1, 0)
  t_max = jnp.where(mode == MODES.index("forward_dynamics"), length - 1, length)
  t = jnp.floor(jax.random.uniform(k_t) * t_max).astype(jnp.int32)
  fixed = inference_mask(mode, length, t)
  rand = random_autoregressive_mask(k_r, length, mask_ratios, modality_probs)
  return jnp.where(task == 0, rand, fixed)


# --- the network -----------------------------------------------------------------------


class _Block(nnx.Module):
  """Pre-LayerNorm transformer block: full self-attention, then a GELU MLP."""

  def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.heads = heads
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(width, **kw)
    self.qkv = nnx.Linear(width, 3 * width, **kw)
    self.out = nnx.Linear(width, width, **kw)
    self.norm2 = nnx.LayerNorm(width, **kw)
    self.fc1 = nnx.Linear(width, mlp_ratio * width, **kw)
    self.fc2 = nnx.Linear(mlp_ratio * width, width, **kw)

  def __call__(self, x):
    *lead, n, width = x.shape
    q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, axis=-1)
    split = lambda y: y.reshape(*lead, n, self.heads, width // self.heads)
    # Non-causal attention; the logits and softmax in float32.
    attn = jax.nn.dot_product_attention(split(q).astype(jnp.float32),
                                        split(k).astype(jnp.float32),
                                        split(v).astype(jnp.float32), implementation="xla")
    x = x + self.out(attn.reshape(*lead, n, width).astype(x.dtype))
    return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class MTMNet(nnx.Module):
  """The masked trajectory model: `(states [.., L, O], returns [.., L], actions [.., L, A],
  visible [.., L, 3]) -> (states, returns, actions)` predictions, float32, in the units
  of its (normalised) inputs. Invisible inputs are never read (replaced by the mask
  token), so NaN or garbage there cannot leak."""

  def __init__(self, obs_dim: int, action_dim: int, length: int, *, width: int, depth: int,
               heads: int, mlp_ratio: int, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dtype = dtype
    self.embed = nnx.List([nnx.Linear(obs_dim, width, **kw), nnx.Linear(1, width, **kw),
                           nnx.Linear(action_dim, width, **kw)])
    # Unit-scale position, modality and mask embeddings: as large as the inputs'
    # embeddings, so attention can find positions from the start (with GPT's 0.02 a
    # 1-block model did not learn linear inverse dynamics in 400 steps).
    init = nnx.initializers.normal(1.0)
    self.position = nnx.Param(init(rngs.params(), (length, width), param_dtype))
    self.modality = nnx.Param(init(rngs.params(), (3, width), param_dtype))
    self.mask_token = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.blocks = nnx.List([_Block(width, heads, mlp_ratio, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, **kw)
    self.heads = nnx.List([nnx.Linear(width, obs_dim, **kw), nnx.Linear(width, 1, **kw),
                           nnx.Linear(width, action_dim, **kw)])

  def __call__(self, states, returns, actions, visible):
    inputs = (states, returns[..., None], actions)
    visible = jnp.asarray(visible, bool)
    tokens = []
    for m, x in enumerate(inputs):
      vis = visible[..., m:m + 1]
      e = self.embed[m](jnp.where(vis, x, 0.0).astype(self.dtype))
      e = jnp.where(vis, e, self.mask_token[...].astype(self.dtype))
      tokens.append(e + (self.position[...] + self.modality[m]).astype(self.dtype))
    x = jnp.stack(tokens, axis=-2)                       # [.., L, 3, d]
    lead = x.shape[:-3]
    length, width = x.shape[-3], x.shape[-1]
    x = x.reshape(*lead, 3 * length, width)
    for block in self.blocks:
      x = block(x)
    x = self.norm(x).reshape(*lead, length, 3, width)
    s, r, a = (self.heads[m](x[..., m, :]).astype(jnp.float32) for m in range(3))
    return s, r[..., 0], a


# --- config ------------------------------------------------------------------------------


def _fail(field, message):
  raise ValueError(f"MTMConfig.{field} {message}")


def _positive_int(config, field):
  v = getattr(config, field)
  if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
    _fail(field, f"must be a positive integer, got {v!r}")


@dataclasses.dataclass(frozen=True)
class MTMConfig:
  """MTM's settings.

  segment_length `L`; width `d`, depth (blocks), heads (dividing `d`), mlp_ratio.
  train_mask: `"random_autoregressive"` (MTM) or a mode of `MODES` (a specialised
  model). mask_ratios: the visible fractions `ρ` in `(0, 1]`; modality_probs: the
  probabilities of `m*` (states, returns, actions; sum 1). return_scale: multiplies
  returns-to-go. Optimiser: AdamW (`learning_rate`, `weight_decay`, linear warm-up
  over `warmup_steps`, global-norm clipping at `max_grad_norm`, 0 for none).
  dtype / param_dtype: `"float32"` or `"bfloat16"` activations / parameters.
  """
  num_steps: int = 3000
  batch_size: int = 64
  segment_length: int = 10
  width: int = 64
  depth: int = 2
  heads: int = 4
  mlp_ratio: int = 4
  train_mask: str = "random_autoregressive"
  mask_ratios: tuple[float, ...] = MASK_RATIOS
  modality_probs: tuple[float, ...] = MODALITY_PROBS
  return_scale: float = 1e-3
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  warmup_steps: int = 100
  max_grad_norm: float = 1.0
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    # Sequences given as lists (a mapping, JSON) become tuples: the config stays hashable.
    for field in ("mask_ratios", "modality_probs"):
      if isinstance(getattr(self, field), (list, np.ndarray)):
        object.__setattr__(self, field, tuple(getattr(self, field)))
    for field in ("num_steps", "batch_size", "width", "depth", "heads", "mlp_ratio"):
      _positive_int(self, field)
    _positive_int(self, "segment_length")
    if self.segment_length < 2:
      _fail("segment_length", f"must be at least 2, got {self.segment_length!r}")
    if self.width % self.heads:
      _fail("heads", f"must divide width {self.width}, got {self.heads!r}")
    if self.train_mask not in TRAIN_MASKS:
      _fail("train_mask", f"must be one of {TRAIN_MASKS}, got {self.train_mask!r}")
    ratios = tuple(self.mask_ratios)
    if not ratios or any(not isinstance(r, (int, float, np.floating, np.integer))
                         or isinstance(r, bool) or not 0 < r <= 1 for r in ratios):
      _fail("mask_ratios", f"must be a non-empty sequence in (0, 1], got {ratios!r}")
    probs = np.asarray(self.modality_probs, float)
    if probs.shape != (3,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
      _fail("modality_probs", f"must be 3 probabilities summing to 1, got "
            f"{tuple(self.modality_probs)!r}")
    if not self.return_scale > 0:
      _fail("return_scale", f"must be positive, got {self.return_scale!r}")
    if not self.learning_rate > 0:
      _fail("learning_rate", f"must be positive, got {self.learning_rate!r}")
    if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
      _fail("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
    if not isinstance(self.warmup_steps, (int, np.integer)) or self.warmup_steps < 0:
      _fail("warmup_steps", f"must be an integer >= 0, got {self.warmup_steps!r}")
    if not (np.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
      _fail("max_grad_norm", f"must be >= 0 (0: no clipping), got {self.max_grad_norm!r}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16"):
        _fail(field, f"must be 'float32' or 'bfloat16', got {getattr(self, field)!r}")


# --- the learner ---------------------------------------------------------------------------


class MTMState(NamedTuple):
  """params: the network's `nnx.Param` leaves; opt_state: AdamW's; obs_norm: the state
  normaliser; key: the updates' PRNG key; step: int32 updates so far."""
  params: Any
  opt_state: Any
  obs_norm: ObsNorm
  key: jax.Array
  step: jax.Array


class MTMLearner(NamedTuple):
  """Pure functions of MTM (jit-able, vmappable over seeds and over data and tasks).

  init(key, trajs) -> state (the normaliser from `trajs`' steps of weight > 0).
  sample(key, trajs) -> Segments: one batch.
  update(state, segments, task=None) -> (state, metrics): one AdamW step on a batch,
    masks drawn for `task` (an index into `TRAIN_MASKS`, may be traced; default the
    config's `train_mask`).
  train(key, trajs, task=None) -> (state, metrics): `init`, then `num_steps` of
    sample + update in one `lax.scan`; metrics stacked `[num_steps]`.
  apply(state, segments, visible) -> (states, returns, actions): predictions in raw
    units (actions in the box's units, returns scaled) at every token.
  loss(params, obs_norm, segments, visible) -> (loss, [states, returns, actions]): the
    training loss (module docstring) and its three per-modality averages.
  net: the network's `(init, apply)` on normalised inputs.
  """
  name: str
  config: MTMConfig
  spec: EnvSpec
  init: Callable
  sample: Callable
  update: Callable
  train: Callable
  apply: Callable
  loss: Callable
  net: Any


def _box(spec: EnvSpec):
  low = jnp.reshape(jnp.asarray(spec.action.low, jnp.float32), (-1,))
  high = jnp.reshape(jnp.asarray(spec.action.high, jnp.float32), (-1,))
  return (high + low) / 2, (high - low) / 2


def make_mtm(config: MTMConfig | Mapping | None, spec: EnvSpec) -> MTMLearner:
  """MTM for a continuous-action environment (see the module docstring)."""
  c = as_config(MTMConfig, config)
  if spec.action.discrete:
    raise ValueError("make_mtm: MTM here takes continuous actions (a box)")
  obs_dim, act_dim = int(np.prod(spec.obs_shape)), int(np.prod(spec.action.shape))
  length = c.segment_length
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  net = networks.pure(lambda rngs: MTMNet(
      obs_dim, act_dim, length, width=c.width, depth=c.depth, heads=c.heads,
      mlp_ratio=c.mlp_ratio, dtype=dtypes[c.dtype], param_dtype=dtypes[c.param_dtype],
      rngs=rngs))
  schedule = optax.linear_schedule(0.0, c.learning_rate, max(c.warmup_steps, 1))
  tx = optax.adamw(schedule, weight_decay=c.weight_decay)
  if c.max_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), tx)
  mid, half = _box(spec)
  default_task = TRAIN_MASKS.index(c.train_mask)

  def normalise(norm, seg: Segments):
    return ((seg.states - norm.mean) / norm.std, seg.returns, (seg.actions - mid) / half)

  def apply(state, seg: Segments, visible):
    s, r, a = net.apply(state.params, *normalise(state.obs_norm, seg), visible)
    return s * state.obs_norm.std + state.obs_norm.mean, r, a * half + mid

  def init(key, trajs: Trajectories):
    k_p, k_s = jax.random.split(key)
    live = jnp.arange(trajs.states.shape[1])[None, :] < trajs.lengths[:, None]
    live = jnp.logical_and(live, (trajs.weight > 0)[:, None])[..., None]
    n = jnp.maximum(jnp.sum(live), 1)
    mean = jnp.sum(jnp.where(live, trajs.states, 0.0), axis=(0, 1)) / n
    var = jnp.sum(jnp.where(live, jnp.square(trajs.states - mean), 0.0), axis=(0, 1)) / n
    params = net.init(k_p)
    return MTMState(params, tx.init(params), ObsNorm(mean, jnp.sqrt(var) + _STD_EPS), k_s,
                    jnp.zeros((), jnp.int32))

  def sample(key, trajs):
    return sample_segments(trajs, key, c.batch_size, length)

  def loss_fn(params, norm, seg: Segments, visible):
    inputs = normalise(norm, seg)
    preds = net.apply(params, *inputs, visible)
    weight = token_weights(seg)
    per_modality = []
    for m in range(3):
      w = weight[..., m]
      w_feature = w[..., None] if m != RETURNS else w
      # Targets of weight-0 tokens are zeroed first, so NaN there has no gradient.
      err = jnp.square(preds[m] - jnp.where(w_feature, inputs[m], 0.0))
      err = err if m == RETURNS else jnp.mean(err, axis=-1)
      per_modality.append(jnp.sum(jnp.where(w, err, 0.0)) / jnp.maximum(jnp.sum(w), 1))
    return sum(per_modality), per_modality

  def update(state: MTMState, seg: Segments, task=None):
    key, k_mask = jax.random.split(state.key)
    task = default_task if task is None else task
    masks = jax.vmap(lambda k: train_mask(k, length, task, c.mask_ratios, c.modality_probs))(
        jax.random.split(k_mask, seg.valid.shape[0]))
    visible = visible_tokens(masks, seg)
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.obs_norm, seg, visible)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss/total": loss, "loss/states": parts[0], "loss/returns": parts[1],
               "loss/actions": parts[2], "grad_norm": optax.tree.norm(grads)}
    return MTMState(params, opt_state, state.obs_norm, key, state.step + 1), metrics

  def train(key, trajs, task=None):
    k_init, k_steps = jax.random.split(key)
    state = init(k_init, trajs)

    def body(state, k):
      return update(state, sample(k, trajs), task)

    return jax.lax.scan(body, state, jax.random.split(k_steps, c.num_steps))

  return MTMLearner(f"mtm_{c.train_mask}", c, spec, init, sample, update, train, apply, loss_fn,
                    net)


def token_weights(seg: Segments) -> jax.Array:
  """`[..., L, 3]` bool, the tokens that count in the loss: real steps, and action
  tokens only of trajectories with actions."""
  has = jnp.asarray(seg.has_actions, bool)[..., None]
  modality_ok = jnp.stack([jnp.ones_like(has), jnp.ones_like(has), has], axis=-1)
  return jnp.logical_and(jnp.asarray(seg.valid, bool)[..., None], modality_ok)


def visible_tokens(mask, seg: Segments) -> jax.Array:
  """`mask` restricted to what exists: no padding steps, no actions of action-free
  trajectories."""
  return jnp.logical_and(mask, token_weights(seg))


# --- prediction and control --------------------------------------------------------------


def predict(learner: MTMLearner, state: MTMState, segment: Segments, mode: str, t) -> jax.Array:
  """The prediction of `mode` (a name of `MODES`) at time `t` (may be traced) for one
  segment (`[L, ...]`, raw units): the action `a_t` (`[A]`, in the box's units) or, for
  forward dynamics, the next state `s_{t+1}` (`[O]`, needs `t ≤ L − 2`; a concrete `t`
  beyond that raises, a traced one is not checked)."""
  if mode not in MODES:
    raise ValueError(f"mtm.predict: unknown mode {mode!r}; expected one of {MODES}")
  length = learner.config.segment_length
  if not isinstance(t, jax.core.Tracer):
    last = length - 2 if mode == "forward_dynamics" else length - 1
    if not 0 <= int(t) <= last:
      raise ValueError(f"mtm.predict: t={int(t)} is outside [0, {last}] for {mode} with "
                       f"segment_length {length}.")
  visible = visible_tokens(inference_mask(mode, length, t), segment)
  s, _, a = learner.apply(state, segment, visible)
  return s[t + 1] if mode == "forward_dynamics" else a[t]


def heldout_errors(learner: MTMLearner, state: MTMState, segments: Segments,
                   state_std=None) -> dict:
  """Mean squared errors on held-out segments `[S, L, ...]` (actions known), over every
  `t ≤ L − 2` whose target step is real: `"inverse_dynamics"`, the action error in the
  box's units (`a_t` from all states and the actions before `t`); `"forward_dynamics"`,
  the next-state error in normalised state units (`s_{t+1}` from states and actions up
  to `t`), divided by `state_std` (default the model's own normaliser; pass one fixed
  std to compare models trained on different data)."""
  length = learner.config.segment_length
  ts = jnp.arange(length - 1)
  std = state.obs_norm.std if state_std is None else jnp.asarray(state_std, jnp.float32)

  def errors(seg, t):
    a = predict(learner, state, seg, "inverse_dynamics", t)
    s = predict(learner, state, seg, "forward_dynamics", t)
    e_a = jnp.mean(jnp.square(a - seg.actions[t]))
    e_s = jnp.mean(jnp.square((s - seg.states[t + 1]) / std))
    return e_a, e_s, jnp.logical_and(seg.valid[t], seg.valid[t + 1])

  e_a, e_s, ok = jax.vmap(lambda seg: jax.vmap(lambda t: errors(seg, t))(ts))(segments)
  n = jnp.maximum(jnp.sum(ok), 1)
  return {"inverse_dynamics": jnp.sum(jnp.where(ok, e_a, 0.0)) / n,
          "forward_dynamics": jnp.sum(jnp.where(ok, e_s, 0.0)) / n}


class Window(NamedTuple):
  """A policy's rolling window of the last `L` steps (raw units), oldest first; the
  current step is at `min(step, L − 1)`. rtg: the return still to collect (raw)."""
  states: jax.Array
  actions: jax.Array
  returns: jax.Array
  step: jax.Array
  rtg: jax.Array


class WindowPolicy(NamedTuple):
  """`init(target_return) -> window`; `act(window, obs) -> (action, window)` writes the
  observation (and the return-to-go) at the current slot, predicts the action and
  writes it; `observe(window, reward) -> window` lowers the return-to-go by the reward
  and advances the step."""
  init: Callable
  act: Callable
  observe: Callable


def policy(learner: MTMLearner, state: MTMState, mode="bc") -> WindowPolicy:
  """A policy in the environment from `mode` `"bc"` or `"rcbc"` (a name, or its index
  into `MODES`, which may be traced): the deterministic predicted action, clipped to
  the box. For `rcbc`, the window's returns-to-go start at the target return and drop
  by each observed reward (Decision-Transformer-style evaluation)."""
  if isinstance(mode, str) and mode not in ("bc", "rcbc"):
    raise ValueError(f"mtm.policy: mode must be 'bc' or 'rcbc', got {mode!r}")
  length = learner.config.segment_length
  spec = learner.spec
  obs_dim = int(np.prod(spec.obs_shape))
  act_dim = int(np.prod(spec.action.shape))
  low, high = (jnp.reshape(jnp.asarray(b, jnp.float32), (-1,))
               for b in (spec.action.low, spec.action.high))
  scale = learner.config.return_scale

  def init(target_return=0.0):
    return Window(jnp.zeros((length, obs_dim)), jnp.zeros((length, act_dim)),
                  jnp.zeros((length,)), jnp.zeros((), jnp.int32),
                  jnp.asarray(target_return, jnp.float32))

  def act(window: Window, obs):
    full = window.step >= length          # the window is full: drop its oldest step
    shift = lambda x: jnp.where(full, jnp.roll(x, -1, axis=0), x)
    t = jnp.minimum(window.step, length - 1)
    states = shift(window.states).at[t].set(jnp.reshape(obs, (-1,)).astype(jnp.float32))
    returns = shift(window.returns).at[t].set(window.rtg * scale)
    actions = shift(window.actions)
    seg = Segments(states, actions, returns, jnp.arange(length) <= t, jnp.ones((), bool))
    visible = visible_tokens(inference_mask(mode, length, t), seg)
    action = jnp.clip(learner.apply(state, seg, visible)[2][t], low, high)
    new = Window(states, actions.at[t].set(action), returns, window.step, window.rtg)
    return jnp.reshape(action, spec.action.shape), new

  def observe(window: Window, reward):
    return window._replace(step=window.step + 1, rtg=window.rtg - reward)

  return WindowPolicy(init, act, observe)


def evaluate(learner: MTMLearner, state: MTMState, env: envs.Env, key, num_episodes: int, *,
             mode="bc", target_return=0.0) -> jax.Array:
  """Undiscounted returns `[num_episodes]` of `policy(learner, state, mode)` over full
  episodes (each to its end or the time limit), run in parallel; jit-able."""
  pi = policy(learner, state, mode)

  def one(key):
    k0, key = jax.random.split(key)
    env_state, obs = env.reset(k0)

    def body(carry, k):
      env_state, obs, window, ret, alive = carry
      action, window = pi.act(window, obs)
      env_state, s = env.step(k, env_state, action)
      window = pi.observe(window, s.reward)
      ret = ret + jnp.where(alive, s.reward, 0.0)
      return (env_state, s.obs, window, ret, jnp.logical_and(alive, ~s.done)), None

    carry = (env_state, obs, pi.init(target_return), jnp.zeros(()), jnp.ones((), bool))
    (_, _, _, ret, _), _ = jax.lax.scan(body, carry, jax.random.split(key, env.spec.max_steps))
    return ret

  return jax.vmap(one)(jax.random.split(key, num_episodes))
