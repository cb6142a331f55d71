"""Offline RL with action-free trajectories: an inverse-dynamics ensemble labels the
trajectories that have no actions, then any offline learner trains on the union
(semi-supervised offline RL, after Zheng et al. 2023, "Semi-Supervised Offline
Reinforcement Learning with Action-Free Trajectories").

    labelled, action_free = action_free.split_labelled(episodes, key, fraction=0.1)
    idm = action_free.make_inverse_dynamics(action_free.InverseDynamicsConfig(context=1),
                                            env.spec)
    state, metrics = jax.jit(idm.train)(key, *action_free.idm_data(labelled, key, 1))
    proxy, uncertainty = action_free.label(idm, state, action_free)
    combined = action_free.combine(labelled, proxy)                   # then e.g. TD3+BC

**The inverse dynamics model** `p_ψ(a_t | s_{t−k}, …, s_t, s_{t+1})` is an ensemble of
`E` squashed-Gaussian MLPs (`networks.Policy` over the concatenated window, `k =
config.context`). States before an episode's first are the first state repeated
(our choice). Each member is fitted by maximum likelihood on its own batches and
initialisation; actions on the box's edge are moved inside it by `action_margin` of
its half-width first. Every `eval_every` steps each member's negative log-likelihood
on a held-out split of whole labelled episodes (`val_fraction`, 10% by default) is
measured, and the member's best parameters so far are kept: the state returned by
`train` holds the best ones, not the last (model selection by validation NLL).

**Proxy labels** are `â = clip(mean_e μ_e(window), low, high)`, the ensemble mean of
the members' deterministic actions (the squashed means), with the ensemble's
standard deviation of those means as the label's uncertainty (returned by `label`,
its mean recorded in the relabelled dataset's metadata; labels are not filtered).

Continuous actions only (discrete action-free labelling would take the ensemble's
mean probabilities; not built).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl_jax.control import data, networks
from irl_jax.control.envs import EnvSpec

__all__ = ["IDMData", "IDMState", "InverseDynamics", "InverseDynamicsConfig", "combine",
           "idm_data", "label", "make_inverse_dynamics", "split_labelled", "windows"]


@dataclasses.dataclass(frozen=True)
class InverseDynamicsConfig:
  """Settings of the inverse-dynamics ensemble (see the module docstring).

  context: `k`, the number of states before `s_t` in the window (0: `(s_t, s_{t+1})`).
  ensemble: `E` members. hidden: their MLP sizes (ReLU). num_steps, batch_size,
  learning_rate, max_grad_norm: Adam on each member's NLL. eval_every: steps between
  validation measurements (`num_steps` must be a multiple). action_margin: fraction
  of the half-width by which edge actions are moved inside the box.
  normalize_obs: standardise windows by the training rows' mean and std.
  """
  context: int = 0
  ensemble: int = 5
  hidden: tuple[int, ...] = (256, 256)
  num_steps: int = 5000
  batch_size: int = 256
  learning_rate: float = 3e-4
  max_grad_norm: float = 1.0
  eval_every: int = 250
  action_margin: float = 1e-3
  normalize_obs: bool = True

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
    for f in ("ensemble", "num_steps", "batch_size", "eval_every"):
      v = getattr(self, f)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"InverseDynamicsConfig.{f} must be a positive integer, got {v!r}.")
    if not isinstance(self.context, (int, np.integer)) or self.context < 0:
      raise ValueError(f"InverseDynamicsConfig.context must be an integer >= 0, got "
                       f"{self.context!r}.")
    if self.num_steps % self.eval_every:
      raise ValueError(f"InverseDynamicsConfig.num_steps ({self.num_steps}) must be a multiple "
                       f"of eval_every ({self.eval_every}).")
    if not self.learning_rate > 0:
      raise ValueError(f"InverseDynamicsConfig.learning_rate must be > 0, got "
                       f"{self.learning_rate!r}.")
    if not 0 <= self.action_margin < 1:
      raise ValueError(f"InverseDynamicsConfig.action_margin must lie in [0, 1), got "
                       f"{self.action_margin!r}.")


class IDMData(NamedTuple):
  """Rows of (window, action): `inputs[N, (k+2)·O]`, `action[N, A]`, `weight[N]` (0 for
  padding). `train` takes a training and a validation `IDMData`."""
  inputs: jax.Array
  action: jax.Array
  weight: jax.Array


class IDMState(NamedTuple):
  params: Any            # [E, ...] the best parameters of each member (by validation NLL)
  mean: jax.Array        # [(k+2)·O] input normaliser
  std: jax.Array
  best_nll: jax.Array    # [E] each member's best validation NLL
  best_step: jax.Array   # [E] the step it was reached at


class InverseDynamics(NamedTuple):
  config: InverseDynamicsConfig
  spec: EnvSpec
  init: Any      # (key, train: IDMData) -> (params [E, ...], mean, std)
  train: Any     # (key, train: IDMData, val: IDMData) -> (IDMState, metrics)
  nll: Any       # (params_one_member, mean, std, inputs, action) -> [N]
  predict: Any   # (state, inputs[N, ...]) -> (action [N, A], uncertainty [N])


def windows(obs, next_obs, episode_starts, context: int) -> np.ndarray:
  """`[N, (context + 2)·O]`: for each row `t`, `(s_{t−k}, …, s_t, s_{t+1})` flattened,
  with `s_{t−j}` before the episode's first state replaced by that first state."""
  obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
  next_obs = np.asarray(next_obs, np.float32).reshape(len(next_obs), -1)
  n = len(obs)
  starts = np.asarray(episode_starts, np.int64)
  if n == 0:
    return np.zeros((0, (context + 2) * obs.shape[1]), np.float32)
  episode = np.searchsorted(starts, np.arange(n), side="right") - 1
  first = starts[episode]
  parts = []
  for j in range(context, -1, -1):
    parts.append(obs[np.maximum(np.arange(n) - j, first)])
  parts.append(next_obs)
  return np.concatenate(parts, axis=1)


def idm_data(episodes: data.Episodes, key, context: int, *,
             val_fraction: float = 0.1) -> tuple[IDMData, IDMData]:
  """Training and validation `IDMData` from labelled `episodes`, split by whole
  episodes (`val_fraction` of them, at least one, drawn with `key`; at least one
  episode stays for training)."""
  if episodes.spec.action.discrete:
    raise ValueError(f"idm_data: {episodes.spec.name} has discrete actions; the inverse "
                     "dynamics model here is for continuous actions.")
  e = episodes.num_episodes
  if e < 2:
    raise ValueError(f"idm_data: need at least 2 labelled episodes (one for validation), got {e}")
  if not 0 < val_fraction < 1:
    raise ValueError(f"idm_data: val_fraction must lie in (0, 1), got {val_fraction!r}")
  n_val = min(e - 1, max(1, round(val_fraction * e)))
  perm = np.asarray(jax.random.permutation(key, e))
  val_ids, train_ids = np.sort(perm[:n_val]), np.sort(perm[n_val:])

  def rows(ids):
    sub = data.select_episodes(episodes, ids)
    x = windows(sub.obs, sub.next_obs, sub.episode_starts, context)
    a = np.asarray(sub.action, np.float32).reshape(len(x), -1)
    return IDMData(jnp.asarray(x), jnp.asarray(a), jnp.ones(len(x), jnp.float32))

  return rows(train_ids), rows(val_ids)


def make_inverse_dynamics(config: InverseDynamicsConfig | Mapping | None,
                          spec: EnvSpec) -> InverseDynamics:
  """The ensemble for `spec` (continuous actions); `train` is jit- and vmap-able (over
  seeds)."""
  if config is None:
    config = InverseDynamicsConfig()
  elif isinstance(config, Mapping):
    config = InverseDynamicsConfig(**config)
  c = config
  if spec.action.discrete:
    raise ValueError(f"make_inverse_dynamics: {spec.name} has discrete actions; this model is "
                     "for continuous ones.")
  obs_dim = int(np.prod(spec.obs_shape))
  in_dim = (c.context + 2) * obs_dim
  net = networks.pure(lambda rngs: networks.Policy(in_dim, spec.action, c.hidden, rngs=rngs,
                                                   activation=jax.nn.relu))
  tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(c.learning_rate))
  low = jnp.reshape(jnp.asarray(spec.action.low, jnp.float32), (-1,))
  high = jnp.reshape(jnp.asarray(spec.action.high, jnp.float32), (-1,))
  margin = c.action_margin * (high - low) / 2

  def _check(d: IDMData, where: str):
    if d.inputs.ndim != 2 or d.inputs.shape[1] != in_dim:
      raise ValueError(f"InverseDynamics.train: {where}.inputs must be [N, {in_dim}] "
                       f"((context + 2) × {obs_dim}), got {tuple(d.inputs.shape)}")
    if d.action.shape != (d.inputs.shape[0], low.shape[0]):
      raise ValueError(f"InverseDynamics.train: {where}.action must be [N, {low.shape[0]}], got "
                       f"{tuple(d.action.shape)}")

  def nll(params, mean, std, inputs, action):
    a = jnp.clip(action, low + margin, high - margin)
    return -net.apply(params, (inputs - mean) / std).log_prob(a)

  def init(key, train_data: IDMData):
    params = jax.vmap(net.init)(jax.random.split(key, c.ensemble))
    if c.normalize_obs:
      w = train_data.weight[:, None]
      total = jnp.maximum(jnp.sum(w), 1.0)
      mean = jnp.sum(w * train_data.inputs, 0) / total
      std = jnp.sqrt(jnp.sum(w * jnp.square(train_data.inputs - mean), 0) / total) + 1e-3
    else:
      mean, std = jnp.zeros(in_dim, jnp.float32), jnp.ones(in_dim, jnp.float32)
    return params, mean, std

  def val_nll(params, mean, std, val: IDMData):
    per = nll(params, mean, std, val.inputs, val.action)
    return jnp.sum(per * val.weight) / jnp.maximum(jnp.sum(val.weight), 1.0)

  def train(key, train_data: IDMData, val: IDMData):
    _check(train_data, "train")
    _check(val, "val")
    k_init, k_loop = jax.random.split(key)
    params, mean, std = init(k_init, train_data)
    opt = jax.vmap(tx.init)(params)
    p = train_data.weight / jnp.sum(train_data.weight)

    def member_step(params, opt, key):
      idx = jax.random.choice(key, train_data.inputs.shape[0], (c.batch_size,), p=p)
      def loss(q):
        return jnp.mean(nll(q, mean, std, train_data.inputs[idx], train_data.action[idx]))
      value, g = jax.value_and_grad(loss)(params)
      updates, opt = tx.update(g, opt, params)
      return optax.apply_updates(params, updates), opt, value

    def step(carry, key):
      params, opt = carry
      params, opt, value = jax.vmap(member_step)(params, opt, jax.random.split(key, c.ensemble))
      return (params, opt), value

    def chunk(carry, key):
      params, opt, best, best_nll, best_step, step_count = carry
      (params, opt), losses = jax.lax.scan(step, (params, opt),
                                           jax.random.split(key, c.eval_every))
      step_count = step_count + c.eval_every
      v = jax.vmap(val_nll, in_axes=(0, None, None, None))(params, mean, std, val)   # [E]
      better = v < best_nll
      best = jax.tree.map(
          lambda new, old: jnp.where(jnp.reshape(better, (-1,) + (1,) * (new.ndim - 1)),
                                     new, old), params, best)
      best_nll = jnp.where(better, v, best_nll)
      best_step = jnp.where(better, step_count, best_step)
      metrics = {"loss/train": jnp.mean(losses), "loss/val": jnp.mean(v),
                 "loss/val_best": jnp.mean(best_nll)}
      return (params, opt, best, best_nll, best_step, step_count), metrics

    inf = jnp.full((c.ensemble,), jnp.inf, jnp.float32)
    carry = (params, opt, params, inf, jnp.zeros((c.ensemble,), jnp.int32),
             jnp.zeros((), jnp.int32))
    (_, _, best, best_nll, best_step, _), metrics = jax.lax.scan(
        chunk, carry, jax.random.split(k_loop, c.num_steps // c.eval_every))
    return IDMState(best, mean, std, best_nll, best_step), metrics

  def predict(state: IDMState, inputs):
    x = (jnp.asarray(inputs, jnp.float32) - state.mean) / state.std
    modes = jax.vmap(lambda q: net.apply(q, x, method="mode"))(state.params)   # [E, N, A]
    action = jnp.clip(jnp.mean(modes, axis=0), low, high)
    uncertainty = jnp.mean(jnp.std(modes, axis=0), axis=-1)
    return action, uncertainty

  return InverseDynamics(c, spec, init, train, nll, predict)


def split_labelled(episodes: data.Episodes, key, *, fraction: float = 0.1,
                   below_median: bool = True) -> tuple[data.Episodes, data.Episodes]:
  """`(labelled, action_free)`: `fraction` of the episodes (at least 2) keep their
  actions, drawn uniformly from those whose return is below the median when
  `below_median` (the harder setting), otherwise from all; the rest are returned
  whole, their actions to be ignored (use `label` to replace them)."""
  if not 0 < fraction < 1:
    raise ValueError(f"split_labelled: fraction must lie in (0, 1), got {fraction!r}")
  e = episodes.num_episodes
  n = max(2, round(fraction * e))
  returns = data.episode_returns(episodes)
  pool = np.flatnonzero(returns < np.median(returns)) if below_median else np.arange(e)
  if len(pool) < n:
    raise ValueError(f"split_labelled: {n} labelled episodes requested but only {len(pool)} "
                     f"are eligible ({'below the median return' if below_median else 'in all'} "
                     f"of {e})")
  chosen = np.sort(np.asarray(jax.random.choice(key, jnp.asarray(pool), (n,), replace=False)))
  rest = np.setdiff1d(np.arange(e), chosen)
  return data.select_episodes(episodes, chosen), data.select_episodes(episodes, rest)


def label(idm: InverseDynamics, state: IDMState, episodes: data.Episodes, *,
          batch_size: int = 65536) -> tuple[data.Episodes, np.ndarray]:
  """`(relabelled, uncertainty[N])`: `episodes` with every action replaced by the
  ensemble's proxy label (log-probs NaN: the behaviour policy is unknown), and each
  label's uncertainty (the ensemble's standard deviation, averaged over action
  dimensions). The metadata records the labeller and the mean uncertainty."""
  x = windows(episodes.obs, episodes.next_obs, episodes.episode_starts, idm.config.context)
  predict = jax.jit(idm.predict)
  acts, unc = [], []
  for i in range(0, len(x), batch_size):
    a, u = predict(state, x[i:i + batch_size])
    acts.append(np.asarray(a))
    unc.append(np.asarray(u))
  action = np.concatenate(acts) if acts else np.zeros((0, *episodes.spec.action.shape))
  uncertainty = np.concatenate(unc) if unc else np.zeros((0,), np.float32)
  meta = dict(episodes.metadata)
  meta.update({"actions": "proxy labels (inverse dynamics ensemble)",
               "idm_context": idm.config.context, "idm_ensemble": idm.config.ensemble,
               "proxy_uncertainty_mean": float(uncertainty.mean()) if len(uncertainty) else 0.0})
  relabelled = data.Episodes(episodes.obs, action.reshape(len(x), *episodes.spec.action.shape),
                             episodes.reward, episodes.terminated, episodes.truncated,
                             episodes.next_obs, np.full(len(x), np.nan, np.float32),
                             episodes.episode_starts, episodes.spec, meta)
  return relabelled, uncertainty


def combine(*parts: data.Episodes) -> data.Episodes:
  """One dataset holding every episode of `parts`, in order (`data.concatenate`)."""
  return data.concatenate(list(parts), {"combined": [p.metadata for p in parts]})
