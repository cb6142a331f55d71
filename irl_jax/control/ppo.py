"""Proximal Policy Optimisation (PPO) over `N` parallel JAX environments, as pure functions.

    ppo = make_ppo(PPOConfig(num_envs=8, num_steps=128), envs.make("gymnax/CartPole-v1"))
    state, metrics = jax.jit(ppo.train)(key)                   # one seed
    state, metrics = jax.jit(jax.vmap(ppo.train))(keys)        # many seeds, one program

`train` is `init` followed by `total_timesteps // (num_envs · num_steps)` iterations
of `collect` (a `[T, N]` rollout, `T = num_steps`) and `update` (PPO epochs) inside
one `lax.scan`. The pieces are public so that adversarial IRL (GAIL, AIRL) runs the
same loop with a learned reward: `update(state, batch, rewards)` uses `rewards[T, N]`
in place of the environment's.

**Advantages (GAE).** With `V(s'_t)` the value of the true successor (`Step.final_obs`,
before any automatic reset), `term_t` (absorbing state: no bootstrap) and
`done_t = term_t ∨ trunc_t` (the episode ended, by termination or time limit):

    δ_t = r_t + γ (1 − term_t) V(s'_t) − V(s_t)
    A_t = δ_t + γ λ (1 − done_t) A_{t+1},        A_T = 0   (past the rollout's end)
    R_t = A_t + V(s_t)                                        (the value target)

A truncated step still bootstraps from `V(s'_t)`; only the λ-trace is cut there, because
step `t + 1` belongs to a new episode. The last step of the rollout bootstraps from
the value of its successor, which is exactly GAE truncated at the rollout's end.

**Loss** (per minibatch, advantages normalised to zero mean and unit variance within it):

    ρ = exp(log π_θ(a|s) − log π_old(a|s))
    L_π = −E[min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â)]
    L_V = ½ E[(V_θ(s) − R)²]      (or ½ E[max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)])
    L = L_π + c_V L_V − c_H E[H(π_θ(·|s))]

`log π_old` is stored at sampling time. For the squashed Gaussian, whose entropy has
no closed form, `H` is the entropy of the Gaussian before the tanh (its usual stand-in).
Gradients are clipped to a global norm and applied with Adam (learning rate annealed
linearly to zero over the configured updates when `anneal_lr`).

References: Schulman et al. 2017, "Proximal Policy Optimization Algorithms";
Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation"; Huang et al. 2022, "The 37 Implementation Details of PPO" (CleanRL);
Lu et al. 2022, PureJaxRL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from irl_jax.control import envs, networks, types

ACTIVATIONS = {"tanh": nnx.tanh, "relu": nnx.relu, "gelu": nnx.gelu, "silu": nnx.silu,
               "elu": nnx.elu}


# --- shared pieces (also used by `sac`) -------------------------------------------------


def activation_fn(name: str, where: str) -> Callable:
  """The activation called `name` (`ACTIVATIONS`); `where` names the config field."""
  if name not in ACTIVATIONS:
    raise ValueError(f"{where}: unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[name]


def trainable(make_module: Callable[[nnx.Rngs], nnx.Module]):
  """`(apply, init)` for an NNX module built by `make_module(rngs)`, with only its
  `nnx.Param`s as the parameters.

  `apply(params, *args, method=None)` rebuilds the module and calls it (or `method`);
  `init(key) -> params` initialises fresh parameters (jit- and vmap-able over keys).
  The module's other variables (non-`Param` ones, such as TD3's `TanhActor` bounds) are
  constants closed over by `apply`, so that optimisers never update them (unlike
  `networks.functional`, whose state holds every variable). `networks.pure` in the
  `(apply, init)` order."""
  net = networks.pure(make_module)  # initialises one key at a time under vmap (see there)
  return net.apply, net.init


def check_env(name: str, env: envs.Env) -> None:
  if len(env.spec.obs_shape) != 1:
    raise ValueError(f"{name}: observations must be vectors; {env.name} has obs_shape "
                     f"{env.spec.obs_shape}.")


def sample_action(dist, key, spec: envs.ActionSpec):
  """`(action, log π(action))` from a policy distribution with batch shape `[N]`.

  Continuous actions are kept a relative `1e-6` inside the box so that their
  log-density, computed through `atanh`, stays finite when the tanh saturates in
  float32; the stored log-probability is recomputed for the kept action, so it is the
  one that `update` evaluates again."""
  action = dist.sample(seed=key)
  if not spec.discrete:
    low, high = jnp.asarray(spec.low), jnp.asarray(spec.high)
    margin = 1e-6 * (high - low)
    action = jnp.clip(action, low + margin, high - margin)
  return action, dist.log_prob(action)


def permutation(key, n: int) -> jax.Array:
  """A uniformly random permutation of `range(n)` (int32 `[n]`), for shuffling rows
  into minibatches; `jax.random.permutation`'s distribution at a fraction of its cost
  on the CPU.

  XLA:CPU sorts a single unsigned-integer array several times faster than the
  key-value sort behind `jax.random.permutation` (about 70 µs against 660 µs for
  2048 rows, 10 times per PPO update, on a 2-core AMD EPYC). So each round sorts one
  `uint32` array that holds random bits above the `b = ⌈log₂ n⌉` bits of the row's
  position, and reads the order back from those low bits. After `r` rounds the rows
  are ordered by the tuple of all rounds' random keys (the last round's first), each
  `32 − b` bits; two rows tie only when all their keys agree. `r` is the least
  number of rounds with `r(32 − b) ≥ 2b + 20` bits (2 rounds for 2048 rows), so
  some pair ties with probability below `n²/2 · 2^−(2b + 20) ≤ 2^−21`: the result
  is uniform up to that total variation. Beyond `2^24` rows (fewer than 8 random bits
  a round) it is `jax.random.permutation`."""
  n = int(n)
  if n < 0:
    raise ValueError(f"permutation: n must be >= 0 (got {n}).")
  if n <= 1:
    return jnp.zeros((n,), jnp.int32)
  b = (n - 1).bit_length()
  if b > 24:
    return jax.random.permutation(key, n).astype(jnp.int32)
  rounds = -(-(2 * b + 20) // (32 - b))
  position = jnp.arange(n, dtype=jnp.uint32)
  perm = None
  for k in jax.random.split(key, rounds):
    packed = (jax.random.bits(k, (n,), jnp.uint32) << b) | position
    order = (jax.lax.sort(packed) & jnp.uint32((1 << b) - 1)).astype(jnp.int32)
    perm = order if perm is None else perm[order]
  return perm


class EpisodeStats(NamedTuple):
  """Undiscounted environment returns of `N` parallel environments, each `[N]`.

  running: the return of the current episode so far. last: the return of the most
  recently completed episode (NaN until one ends). count: completed episodes (int32).
  """
  running: jax.Array
  last: jax.Array
  count: jax.Array


def episode_stats_init(num_envs: int) -> EpisodeStats:
  return EpisodeStats(jnp.zeros((num_envs,), jnp.float32), jnp.full((num_envs,), jnp.nan),
                      jnp.zeros((num_envs,), jnp.int32))


def episode_stats_update(stats: EpisodeStats, reward, done) -> tuple[EpisodeStats, jax.Array]:
  """Adds one step's `reward[N]`; where `done[N]` the episode's return is recorded and the
  running return restarts. Returns `(stats, ret[N])`, `ret` the running return including
  this step (the completed return where `done`)."""
  ret = stats.running + reward
  return EpisodeStats(jnp.where(done, 0.0, ret), jnp.where(done, ret, stats.last),
                      stats.count + done.astype(jnp.int32)), ret


# --- pure objectives --------------------------------------------------------------------


def gae(rewards, values, next_values, terminated, truncated, *, gamma: float,
        gae_lambda: float):
  """Generalised advantage estimates over a `[T, ...]` rollout (time first).

  Args:
    rewards: `r_t`, `[T, ...]`.
    values: `V(s_t)`, `[T, ...]`.
    next_values: `V(s'_t)`, the value of each transition's true successor (the final
      observation where the episode ended), `[T, ...]`.
    terminated: bool `[T, ...]`, `s'_t` is absorbing (no bootstrap).
    truncated: bool `[T, ...]`, a time limit ended the episode (bootstrap from `s'_t`).
    gamma, gae_lambda: `γ`, `λ`.

  Returns:
    `(advantages, targets)`, both `[T, ...]`: `A_t` from the recursion
    `A_t = δ_t + γλ(1 − done_t) A_{t+1}` with `δ_t = r_t + γ(1 − term_t) V(s'_t) − V(s_t)`
    and `A_T = 0`, and the value targets `R_t = A_t + V(s_t)`.
  """
  dtype = jnp.result_type(rewards, values, next_values, jnp.float32)
  rewards, values, next_values = (jnp.asarray(x, dtype) for x in (rewards, values, next_values))
  terminated = jnp.asarray(terminated, bool)
  done = jnp.logical_or(terminated, jnp.asarray(truncated, bool))
  deltas = rewards + gamma * jnp.where(terminated, 0.0, next_values) - values
  decay = gamma * gae_lambda * (1.0 - done.astype(dtype))

  def body(next_adv, x):
    delta, c = x
    adv = delta + c * next_adv
    return adv, adv

  _, advantages = jax.lax.scan(body, jnp.zeros_like(values[0]), (deltas, decay), reverse=True)
  return advantages, advantages + values


MAX_LOG_RATIO = 20.0


def clipped_surrogate_loss(log_prob, old_log_prob, advantages, *, clip_eps: float):
  """PPO's clipped policy loss per sample: `−min(ρA, clip(ρ, 1 − ε, 1 + ε)A)` with
  `ρ = exp(log_prob − old_log_prob)`. All arguments share a shape; so does the result.

  `log ρ` is first clipped to `±MAX_LOG_RATIO` (20; no effect on ordinary updates).
  A nearly deterministic squashed-Gaussian policy (log-std at its floor, the mean
  far out in the tanh's tail, as when it imitates bang-bang actions) can move a
  sample's log-density by thousands in one step; unclipped, `ρ` overflows to `inf`
  where `A < 0`, the loss to `inf` and the gradients to NaN. Clipped, such a sample's
  term is a constant (no gradient), as PPO's clip already makes it where `A > 0`."""
  ratio = jnp.exp(jnp.clip(log_prob - old_log_prob, -MAX_LOG_RATIO, MAX_LOG_RATIO))
  return -jnp.minimum(ratio * advantages,
                      jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)


def value_loss(values, targets, old_values=None, *, clip_eps: float | None = None):
  """`½(V − R)²` per sample; with `old_values` and `clip_eps`, PPO's pessimistic clipped
  form `½ max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²)`."""
  loss = jnp.square(values - targets)
  if old_values is not None and clip_eps is not None:
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    loss = jnp.maximum(loss, jnp.square(clipped - targets))
  return 0.5 * loss


# --- configuration ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO settings (all static).

  num_envs: `N` parallel environments. num_steps: `T`, rollout length per iteration.
  total_timesteps: environment steps of `train`; it runs `total_timesteps // (N·T)`
    iterations. update_epochs, num_minibatches: passes over each `N·T` batch and the
    minibatches per pass (`num_minibatches` must divide `N·T`).
  gamma, gae_lambda: discount and GAE `λ`. clip_eps: the ratio clip `ε`.
  ent_coef, vf_coef: `c_H`, `c_V`. clip_value: clip the value loss with `clip_eps` too.
  normalize_advantages: per minibatch. max_grad_norm: global-norm gradient clip.
  lr: Adam's learning rate (`adam_eps` its ε); anneal_lr: linearly to 0 over the
    `update_epochs · num_minibatches · iterations` optimiser steps of `train`.
  reward_scale: multiplies the rewards before GAE (environment or supplied ones).
  hidden, activation: the policy and value MLPs (`ACTIVATIONS` names).
  log_std_range: the squashed Gaussian's log-std bounds (continuous actions).
  init_log_std: the policy's initial log-std (before the tanh; continuous actions),
    strictly inside `log_std_range`; None starts at the range's midpoint (−1.5 for the
    default range, a standard deviation of 0.22). 0.0 starts at a unit standard
    deviation, as stable-baselines3's and CleanRL's PPO do.
  """
  num_envs: int = 8
  num_steps: int = 128
  total_timesteps: int = 500_000
  update_epochs: int = 4
  num_minibatches: int = 4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  clip_value: bool = False
  normalize_advantages: bool = True
  max_grad_norm: float = 0.5
  lr: float = 2.5e-4
  adam_eps: float = 1e-5
  anneal_lr: bool = True
  reward_scale: float = 1.0
  hidden: tuple[int, ...] = (64, 64)
  activation: str = "tanh"
  log_std_range: tuple[float, float] = (-5.0, 2.0)
  init_log_std: float | None = None

  def __post_init__(self):
    # Sequences given as lists (e.g. from JSON) become tuples: the config stays hashable.
    object.__setattr__(self, "hidden", tuple(self.hidden))
    object.__setattr__(self, "log_std_range", tuple(self.log_std_range))

  @property
  def batch_size(self) -> int:
    return self.num_envs * self.num_steps

  @property
  def num_iterations(self) -> int:
    return self.total_timesteps // self.batch_size


def _check_config(c: PPOConfig) -> None:
  def need(ok, field, msg):
    if not ok:
      raise ValueError(f"PPOConfig.{field}: {msg} (got {getattr(c, field)!r}).")

  for field in ("num_envs", "num_steps", "update_epochs", "num_minibatches"):
    need(isinstance(getattr(c, field), int) and getattr(c, field) >= 1, field,
         "must be a positive integer")
  need(c.batch_size % c.num_minibatches == 0, "num_minibatches",
       f"must divide num_envs·num_steps = {c.batch_size}")
  need(c.total_timesteps >= c.batch_size, "total_timesteps",
       f"must be at least num_envs·num_steps = {c.batch_size}")
  need(0.0 <= c.gamma <= 1.0, "gamma", "must lie in [0, 1]")
  need(0.0 <= c.gae_lambda <= 1.0, "gae_lambda", "must lie in [0, 1]")
  need(c.clip_eps > 0.0, "clip_eps", "must be positive")
  need(c.lr > 0.0, "lr", "must be positive")
  need(c.max_grad_norm > 0.0, "max_grad_norm", "must be positive")
  need(c.adam_eps > 0.0, "adam_eps", "must be positive")
  need(c.ent_coef >= 0.0, "ent_coef", "must be >= 0 (a negative one penalises exploration)")
  need(c.vf_coef >= 0.0, "vf_coef", "must be >= 0")
  need(c.reward_scale > 0.0, "reward_scale", "must be positive (it multiplies the rewards)")
  need(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), "hidden",
       "must be a non-empty sequence of positive widths")
  need(c.log_std_range[0] < c.log_std_range[1], "log_std_range", "must be (low, high), low < high")
  need(c.init_log_std is None or c.log_std_range[0] < c.init_log_std < c.log_std_range[1],
       "init_log_std", f"must be None or lie strictly inside log_std_range {c.log_std_range}")
  activation_fn(c.activation, "PPOConfig.activation")


# --- state and batch --------------------------------------------------------------------


def check_config(config: PPOConfig) -> None:
  """Raises a `ValueError` naming the `PPOConfig` field that is out of range (what
  `make_ppo` checks first), for callers that validate settings before building."""
  _check_config(config)


class PPOParams(NamedTuple):
  policy: Any  # nnx.State of the policy's Params
  value: Any   # nnx.State of the value network's Params


class PPOState(NamedTuple):
  """Everything `train` carries. `env_state`, `obs[N, *obs_shape]` and `episodes` are
  per environment; `step` counts environment steps (all `N` environments), `update_step`
  calls of `update`."""
  params: PPOParams
  opt_state: Any
  env_state: Any
  obs: jax.Array
  episodes: EpisodeStats
  key: jax.Array
  step: jax.Array
  update_step: jax.Array


class Batch(NamedTuple):
  """One rollout, every field `[T, N, ...]` (time first, `T = num_steps`).

  obs: `s_t`, the policy input. action: `a_t`. reward: the environment's `r_t`.
  terminated, truncated: bool, as in `envs.Step`. next_obs: the true successor `s'_t`
  (`Step.final_obs`). log_prob: `log π_old(a_t|s_t)`, stored at sampling time.
  value: `V_old(s_t)`. next_value: `V_old(s'_t)`. episode_return: the running
  undiscounted environment return including step `t` (the episode's return where done).
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  next_obs: jax.Array
  log_prob: jax.Array
  value: jax.Array
  next_value: jax.Array
  episode_return: jax.Array

  @property
  def done(self) -> jax.Array:
    return jnp.logical_or(self.terminated, self.truncated)


def to_transitions(batch: Batch) -> types.Transitions:
  """The rollout flattened to `N·T` `types.Transitions` (time-major order), e.g. for a
  discriminator."""
  flat = jax.tree.map(lambda x: jnp.reshape(x, (-1, *x.shape[2:])), batch)
  return types.Transitions(flat.obs, flat.action, flat.reward, flat.next_obs, flat.terminated,
                           flat.truncated, flat.log_prob, jnp.ones_like(flat.reward))


def episode_metrics(batch: Batch) -> dict:
  """`episode_return`: mean return of the episodes that ended in the batch (NaN where
  none did); `num_episodes`: how many ended."""
  done = batch.done
  n = jnp.sum(done)
  total = jnp.sum(jnp.where(done, batch.episode_return, 0.0))
  return {"episode_return": jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan),
          "num_episodes": n}


@dataclasses.dataclass(frozen=True)
class PPO:
  """The pure functions of one PPO configuration (see `make_ppo`)."""
  config: PPOConfig
  env: envs.Env
  init: Callable          # key -> PPOState
  collect: Callable       # state -> (state, Batch)
  update: Callable        # (state, batch, rewards=None) -> (state, metrics)
  train: Callable         # (key, reward_params=None) -> (state, metrics)
  act: Callable           # (params, key, obs) -> (action, log_prob)
  mode: Callable          # (params, obs) -> action
  policy_apply: Callable  # (policy_params, obs) -> distrax distribution
  value_apply: Callable   # (value_params, obs) -> V(obs)
  evaluate: Callable      # (params, key, num_episodes, deterministic=False) -> returns
  optimizer: optax.GradientTransformation  # over `PPOParams` (global-norm clip, then Adam)
  # `train` as a scan, for `irl_jax.control.runner.run` (checkpointed, resumable):
  # start(key) -> (state, xs[num_iterations]); body(state, x, reward_params=None).
  start: Callable | None = None
  body: Callable | None = None


def make_ppo(config: PPOConfig, env: envs.Env, *, reward_fn: Callable | None = None) -> PPO:
  """PPO for `env` (discrete or continuous actions).

  Args:
    config: a `PPOConfig`; checked here (a `ValueError` names the bad field).
    env: an `envs.Env` with vector observations.
    reward_fn: optional `reward_fn(reward_params, obs[B, ...], action[B, ...],
      next_obs[B, ...]) -> reward[B]`; when given, `train(key, reward_params)` learns
      from it instead of the environment's reward (e.g. a fixed learned reward). The
      tracked episode returns stay the environment's.

  Returns:
    A `PPO` whose functions are pure and jit-able; `train` is vmap-able over keys:

    - `init(key) -> PPOState`: fresh networks, optimiser and `N` reset environments.
    - `collect(state) -> (state, Batch)`: `num_steps` steps of the `N` environments
      under the current policy, with `V_old` of each observation and successor.
    - `update(state, batch, rewards=None) -> (state, metrics)`: GAE and
      `update_epochs × num_minibatches` gradient steps; `rewards[T, N]` replaces
      `batch.reward` when given (the adversarial-IRL hook).
    - `train(key, reward_params=None) -> (state, metrics)`: `init`, then
      `config.num_iterations` of `collect` + `update` in one `lax.scan`; `metrics` are
      `[num_iterations]` arrays: the update's losses, `episode_return`, `num_episodes`,
      `recent_return` (mean over environments of each one's last completed return) and
      `env_steps`.
    - `act(params, key, obs[N, ...]) -> (action, log_prob)`, `mode(params, obs)`,
      `policy_apply(params.policy, obs)`, `value_apply(params.value, obs)`.
    - `evaluate(params, key, num_episodes, deterministic=False) -> returns[num_episodes]`.
  """
  _check_config(config)
  check_env("make_ppo", env)
  c = config
  spec = env.spec
  obs_dim = int(spec.obs_shape[0])
  activation = activation_fn(c.activation, "PPOConfig.activation")
  policy_apply, policy_init = trainable(lambda rngs: networks.Policy(
      obs_dim, spec.action, c.hidden, rngs=rngs, activation=activation,
      log_std_range=c.log_std_range, init_log_std=c.init_log_std))
  value_apply, value_init = trainable(lambda rngs: networks.ValueNet(
      obs_dim, c.hidden, rngs=rngs, activation=activation))

  num_opt_steps = c.num_iterations * c.update_epochs * c.num_minibatches
  lr = optax.linear_schedule(c.lr, 0.0, num_opt_steps) if c.anneal_lr else c.lr
  optimizer = optax.chain(optax.clip_by_global_norm(c.max_grad_norm),
                          optax.adam(lr, eps=c.adam_eps))
  reset = jax.vmap(env.reset)
  step_envs = jax.vmap(env.step)

  def act(params: PPOParams, key, obs):
    return sample_action(policy_apply(params.policy, obs), key, spec.action)

  def mode(params: PPOParams, obs):
    return policy_apply(params.policy, obs, method="mode")

  def init(key) -> PPOState:
    k_pi, k_v, k_env, key = jax.random.split(key, 4)
    params = PPOParams(policy_init(k_pi), value_init(k_v))
    env_state, obs = reset(jax.random.split(k_env, c.num_envs))
    zero = jnp.zeros((), jnp.int32)
    return PPOState(params, optimizer.init(params), env_state, obs,
                    episode_stats_init(c.num_envs), key, zero, zero)

  def collect(state: PPOState) -> tuple[PPOState, Batch]:
    params = state.params
    key, k_roll = jax.random.split(state.key)

    def body(carry, key):
      env_state, obs, episodes = carry
      k_act, k_env = jax.random.split(key)
      action, log_prob = act(params, k_act, obs)
      env_state, s = step_envs(jax.random.split(k_env, c.num_envs), env_state, action)
      episodes, ret = episode_stats_update(episodes, s.reward, s.done)
      row = Batch(obs, action, s.reward, s.terminated, s.truncated, s.final_obs, log_prob,
                  value_apply(params.value, obs), jnp.zeros_like(s.reward), ret)
      return (env_state, s.obs, episodes), row

    (env_state, obs, episodes), batch = jax.lax.scan(
        body, (state.env_state, state.obs, state.episodes), jax.random.split(k_roll, c.num_steps))
    batch = batch._replace(next_value=value_apply(params.value, batch.next_obs))
    return state._replace(env_state=env_state, obs=obs, episodes=episodes, key=key,
                          step=state.step + c.batch_size), batch

  def loss_fn(params: PPOParams, mb):
    obs, action, old_log_prob, old_value, adv, target = mb
    dist = policy_apply(params.policy, obs)
    log_prob = dist.log_prob(action)
    if c.normalize_advantages:
      adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
    pg = jnp.mean(clipped_surrogate_loss(log_prob, old_log_prob, adv, clip_eps=c.clip_eps))
    v = value_apply(params.value, obs)
    vf = jnp.mean(value_loss(v, target, old_value if c.clip_value else None,
                             clip_eps=c.clip_eps if c.clip_value else None))
    entropy = jnp.mean(dist.entropy() if spec.action.discrete else dist.distribution.entropy())
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    total = pg + c.vf_coef * vf - c.ent_coef * entropy
    return total, {"loss": total, "policy_loss": pg, "value_loss": vf, "entropy": entropy,
                   "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
                   "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > c.clip_eps)}

  def update(state: PPOState, batch: Batch, rewards=None) -> tuple[PPOState, dict]:
    r = batch.reward if rewards is None else jnp.asarray(rewards, jnp.float32)
    adv, targets = gae(c.reward_scale * r, batch.value, batch.next_value, batch.terminated,
                       batch.truncated, gamma=c.gamma, gae_lambda=c.gae_lambda)
    data = jax.tree.map(lambda x: jnp.reshape(x, (c.batch_size, *x.shape[2:])),
                        (batch.obs, batch.action, batch.log_prob, batch.value, adv, targets))
    key, k_epochs = jax.random.split(state.key)

    def minibatch(carry, mb):
      params, opt_state = carry
      grads, m = jax.grad(loss_fn, has_aux=True)(params, mb)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      m["grad_norm"] = optax.tree.norm(grads)
      return (optax.apply_updates(params, updates), opt_state), m

    def epoch(carry, key):
      perm = permutation(key, c.batch_size)
      mbs = jax.tree.map(lambda x: jnp.reshape(x[perm], (c.num_minibatches, -1, *x.shape[1:])),
                         data)
      return jax.lax.scan(minibatch, carry, mbs)

    (params, opt_state), m = jax.lax.scan(epoch, (state.params, state.opt_state),
                                          jax.random.split(k_epochs, c.update_epochs))
    metrics = jax.tree.map(jnp.mean, m)
    metrics["value_target"] = jnp.mean(targets)
    return state._replace(params=params, opt_state=opt_state, key=key,
                          update_step=state.update_step + 1), metrics

  def batch_rewards(batch: Batch, reward_params):
    flat = to_transitions(batch)
    r = reward_fn(reward_params, flat.obs, flat.action, flat.next_obs)
    return jnp.reshape(r, batch.reward.shape)

  def start(key, reward_params=None):
    del reward_params  # `body`'s data, passed to both by `runner.run`
    return init(key), jnp.arange(c.num_iterations)

  def body(state, _, reward_params=None):
    state, batch = collect(state)
    rewards = None if reward_fn is None else batch_rewards(batch, reward_params)
    state, metrics = update(state, batch, rewards)
    metrics |= episode_metrics(batch)
    metrics["recent_return"] = jnp.nanmean(state.episodes.last)
    metrics["env_steps"] = state.step
    return state, metrics

  def train(key, reward_params=None) -> tuple[PPOState, dict]:
    state, xs = start(key)
    return jax.lax.scan(lambda s, x: body(s, x, reward_params), state, xs)

  def evaluate(params: PPOParams, key, num_episodes: int, deterministic: bool = False):
    if deterministic:
      policy = lambda k, obs: mode(params, obs)
    else:
      policy = lambda k, obs: policy_apply(params.policy, obs).sample(seed=k)
    return envs.episode_returns(env, policy, key, num_episodes)

  return PPO(config, env, init, collect, update, train, act, mode, policy_apply, value_apply,
             evaluate, optimizer, start, body)


def make_train(config: PPOConfig, env: envs.Env, *, reward_fn: Callable | None = None):
  """`make_ppo(config, env, reward_fn=reward_fn).train`: `train(key, reward_params=None)
  -> (PPOState, metrics)`."""
  return make_ppo(config, env, reward_fn=reward_fn).train

