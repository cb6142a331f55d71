"""Soft Actor-Critic (SAC) over `N` parallel JAX environments, as pure functions: the
tanh-squashed Gaussian SAC for continuous actions and discrete (soft-Q) SAC for
discrete ones.

    sac = make_sac(SACConfig(total_timesteps=20_000), envs.make("gymnax/Pendulum-v1"))
    state, metrics = jax.jit(sac.train)(key)                  # one seed
    state, metrics = jax.jit(jax.vmap(sac.train))(keys)       # many seeds, one program

`train` takes `learning_starts // N` steps of uniformly random actions into the replay
buffer, then, per iteration, one step of the `N` environments under the policy and
`updates_per_step` gradient steps on uniform minibatches of the buffer, all in
`lax.scan`s. The pieces (`collect`, `sample`, `update` and its parts) are public so that
IQ-Learn and adversarial IRL can reuse them with their own rewards or critic losses.

**Continuous actions** (`π` a tanh-squashed Gaussian, twin critics `Q_1, Q_2`, their
Polyak-averaged targets `Q̄_c`, temperature `α`):

    y   = r + γ (1 − term) [min_c Q̄_c(s', a') − α log π(a'|s')],   a' ∼ π(·|s')
    L_Q = Σ_c E[(Q_c(s, a) − y)²]
    L_π = E[α log π(ã|s) − min_c Q_c(s, ã)],   ã ∼ π(·|s) reparameterised
    L_α = E[α · (H − H̄)],   H = −log π(ã|s) (stop-gradient),   H̄ = −dim(A)
    Q̄ ← τ Q + (1 − τ) Q̄

**Discrete actions** (critics `Q_c(s, ·)` over the `|A|` actions; expectations over the
categorical policy are exact, nothing is sampled):

    y   = r + γ (1 − term) Σ_a' π(a'|s') [min_c Q̄_c(s', a') − α log π(a'|s')]
    L_π = E_s[Σ_a π(a|s) (α log π(a|s) − min_c Q_c(s, a))]
    H   = −Σ_a π(a|s) log π(a|s),   H̄ = target_entropy_scale · log|A|

Only termination stops the bootstrap: a time-limit truncation bootstraps from the true
successor `s'` (`Step.final_obs`), which the buffer stores as `next_obs`.

The replay buffer is flashbax's item buffer (`flashbax.make_item_buffer`): a fixed-size
circular buffer of `types.Transitions` with uniform sampling (with replacement), whose
state is a pytree of arrays carried in `SACState`.

References: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications";
Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings"; Huang et al.,
CleanRL (`sac_continuous_action.py`, `sac_atari.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flashbax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl_jax.control import envs, networks, types
from irl_jax.control.ppo import (
  EpisodeStats,
  activation_fn,
  check_env,
  episode_stats_init,
  episode_stats_update,
  trainable,
)

# --- configuration ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SACConfig:
  """SAC settings (all static).

  num_envs: `N` parallel environments, stepped once per iteration.
  total_timesteps: environment steps of `train`, the random warm-up included.
  learning_starts: environment steps of uniformly random actions before learning
    (rounded down to a multiple of `N`; at least `batch_size`).
  buffer_size: replay capacity (transitions). batch_size: transitions per gradient step.
  updates_per_step: gradient steps per iteration (per `N` environment steps).
  gamma: discount. tau: Polyak rate of the target critics.
  actor_lr, critic_lr, alpha_lr: Adam learning rates. max_grad_norm: optional global-norm
    gradient clip (`None`: none).
  init_alpha: the initial temperature `α`; autotune: learn `log α` towards the target
    entropy (else `α` stays `init_alpha`).
  target_entropy: `H̄`; `None` gives `−dim(A)` (continuous) or
    `target_entropy_scale · log|A|` (discrete).
  reward_scale: multiplies the rewards in the critic target (environment or supplied).
  hidden, activation: the actor's and the critics' MLPs (`ppo.ACTIVATIONS` names).
  num_critics: `C` critics whose minimum is used. log_std_range: the squashed Gaussian's
    log-std bounds (continuous actions).
  """
  num_envs: int = 1
  total_timesteps: int = 50_000
  learning_starts: int = 1_000
  buffer_size: int = 100_000
  batch_size: int = 256
  updates_per_step: int = 1
  gamma: float = 0.99
  tau: float = 0.005
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  alpha_lr: float = 3e-4
  max_grad_norm: float | None = None
  init_alpha: float = 1.0
  autotune: bool = True
  target_entropy: float | None = None
  target_entropy_scale: float = 0.5
  reward_scale: float = 1.0
  hidden: tuple[int, ...] = (256, 256)
  activation: str = "relu"
  num_critics: int = 2
  log_std_range: tuple[float, float] = (-5.0, 2.0)

  def __post_init__(self):
    # Sequences given as lists (e.g. from JSON) become tuples: the config stays hashable.
    object.__setattr__(self, "hidden", tuple(self.hidden))
    object.__setattr__(self, "log_std_range", tuple(self.log_std_range))

  @property
  def warmup_iterations(self) -> int:
    return self.learning_starts // self.num_envs

  @property
  def num_iterations(self) -> int:
    """Iterations of the learning phase of `train` (after the warm-up)."""
    return (self.total_timesteps - self.warmup_iterations * self.num_envs) // self.num_envs


def _check_config(c: SACConfig) -> None:
  def need(ok, field, msg):
    if not ok:
      raise ValueError(f"SACConfig.{field}: {msg} (got {getattr(c, field)!r}).")

  for field in ("num_envs", "batch_size", "buffer_size", "updates_per_step", "num_critics"):
    need(isinstance(getattr(c, field), int) and getattr(c, field) >= 1, field,
         "must be a positive integer")
  need(c.batch_size <= c.buffer_size, "batch_size", f"must not exceed buffer_size = "
       f"{c.buffer_size}")
  need(c.num_envs <= c.buffer_size, "num_envs", f"must not exceed buffer_size = {c.buffer_size}")
  need(c.learning_starts >= max(c.batch_size, c.num_envs), "learning_starts",
       f"must be at least batch_size = {c.batch_size} (and num_envs = {c.num_envs})")
  need(c.total_timesteps >= c.warmup_iterations * c.num_envs + c.num_envs, "total_timesteps",
       f"must exceed learning_starts by at least num_envs = {c.num_envs}")
  need(0.0 <= c.gamma <= 1.0, "gamma", "must lie in [0, 1]")
  need(0.0 < c.tau <= 1.0, "tau", "must lie in (0, 1]")
  for field in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
    need(getattr(c, field) > 0.0, field, "must be positive")
  need(c.max_grad_norm is None or c.max_grad_norm > 0.0, "max_grad_norm",
       "must be positive or None")
  need(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), "hidden",
       "must be a non-empty sequence of positive widths")
  need(c.log_std_range[0] < c.log_std_range[1], "log_std_range", "must be (low, high), low < high")
  activation_fn(c.activation, "SACConfig.activation")


# --- state ------------------------------------------------------------------------------


class SACParams(NamedTuple):
  actor: Any          # nnx.State of the policy's Params
  critic: Any         # nnx.State of the QNet's Params (C critics)
  target_critic: Any  # its Polyak average
  log_alpha: jax.Array


class SACOptState(NamedTuple):
  actor: Any
  critic: Any
  alpha: Any


class SACState(NamedTuple):
  """Everything `train` carries. `buffer` is flashbax's buffer state; `env_state`,
  `obs[N, *obs_shape]` and `episodes` are per environment; `step` counts environment
  steps, `update_step` gradient steps."""
  params: SACParams
  opt_state: SACOptState
  buffer: Any
  env_state: Any
  obs: jax.Array
  episodes: EpisodeStats
  key: jax.Array
  step: jax.Array
  update_step: jax.Array


@dataclasses.dataclass(frozen=True)
class SAC:
  """The pure functions of one SAC configuration (see `make_sac`)."""
  config: SACConfig
  env: envs.Env
  target_entropy: float
  init: Callable           # key -> SACState
  collect: Callable        # (state, uniform=False) -> (state, Transitions[N])
  sample: Callable         # state -> (state, Transitions[batch_size])
  update: Callable         # (state, batch, rewards=None) -> (state, metrics)
  update_critic: Callable  # (state, batch, rewards=None) -> (state, metrics)
  update_actor: Callable   # (state, batch) -> (state, metrics)   (actor and α)
  update_target: Callable  # state -> state
  critic_step: Callable    # (state, loss_fn) -> (state, metrics)   (a custom critic loss)
  train: Callable          # (key, reward_params=None) -> (state, metrics)
  start: Callable          # (key, reward_params=None) -> (state after warm-up, xs): `train`'s
  #                          scan, for `runner`
  body: Callable           # (state, x, reward_params=None) -> (state, metrics)
  act: Callable            # (params, key, obs) -> (action, log_prob)
  mode: Callable           # (params, obs) -> action
  policy_apply: Callable   # (actor_params, obs) -> distrax distribution
  q_apply: Callable        # (critic_params, obs[, action]) -> [..., C, A] or [..., C]
  soft_value: Callable     # (params, key, obs, critic=None) -> E_π[min_c Q − α log π]
  evaluate: Callable       # (params, key, num_episodes, deterministic=True) -> returns
  buffer: Any              # the flashbax buffer (its pure `add`, `sample`, `can_sample`)
  optimizers: SACOptState  # the optax transformations of the actor, critic and log α


def make_sac(config: SACConfig, env: envs.Env, *, reward_fn: Callable | None = None) -> SAC:
  """SAC for `env`: squashed-Gaussian SAC for continuous actions, discrete SAC otherwise.

  Args:
    config: a `SACConfig`; checked here (a `ValueError` names the bad field).
    env: an `envs.Env` with vector observations.
    reward_fn: optional `reward_fn(reward_params, obs[B, ...], action[B, ...],
      next_obs[B, ...]) -> reward[B]`; when given, `train(key, reward_params)` computes
      the reward of every sampled minibatch with it instead of the stored environment
      reward (the tracked episode returns stay the environment's).

  Returns:
    A `SAC` whose functions are pure and jit-able; `train` is vmap-able over keys:

    - `init(key) -> SACState`: networks (targets equal to the critics), optimisers,
      an empty buffer and `N` reset environments.
    - `collect(state, uniform=False) -> (state, Transitions[N])`: one step of the `N`
      environments under the policy (uniformly random actions with `uniform=True`),
      added to the buffer; `log_prob` is the behaviour policy's.
    - `sample(state) -> (state, Transitions[batch_size])`: a uniform minibatch.
    - `update(state, batch, rewards=None) -> (state, metrics)`: one SAC step:
      `update_critic` (with `rewards[B]` in place of `batch.reward` when given), then
      `update_actor` (actor and temperature), then `update_target` (Polyak).
    - `critic_step(state, loss_fn) -> (state, metrics)`: one critic optimiser step on
      any `loss_fn(critic_params) -> (loss, metrics)`, for learners with their own critic
      objective (IQ-Learn); `soft_value(params, key, obs, critic=critic_params)` gives
      `V(s)` through the critics being trained.
    - `train(key, reward_params=None) -> (state, metrics)`: metrics are
      `[num_iterations]` arrays (learning phase; means over the iteration's gradient
      steps): `critic_loss`, `q` (mean `Q_c(s, a)`), `target` (mean `y`), `actor_loss`,
      `entropy`, `alpha`, `alpha_loss`, `recent_return` (mean over environments of each
      one's last completed return), `num_episodes` (completed so far) and `env_steps`.
    - `act(params, key, obs)`, `mode(params, obs)`, `policy_apply(params.actor, obs)`,
      `q_apply(critic_params, obs[, action])`, `soft_value(params, key, obs)`.
    - `evaluate(params, key, num_episodes, deterministic=True) -> returns[num_episodes]`.
  """
  _check_config(config)
  check_env("make_sac", env)
  c = config
  spec = env.spec
  a_spec = spec.action
  discrete = a_spec.discrete
  obs_dim = int(spec.obs_shape[0])
  activation = activation_fn(c.activation, "SACConfig.activation")
  policy_apply, policy_init = trainable(lambda rngs: networks.Policy(
      obs_dim, a_spec, c.hidden, rngs=rngs, activation=activation,
      log_std_range=c.log_std_range))
  q_apply, q_init = trainable(lambda rngs: networks.QNet(
      obs_dim, a_spec, c.hidden, rngs=rngs, num_critics=c.num_critics, activation=activation))

  if c.target_entropy is not None:
    target_entropy = float(c.target_entropy)
  elif discrete:
    target_entropy = float(c.target_entropy_scale * np.log(a_spec.num_actions))
  else:
    target_entropy = -float(np.prod(a_spec.shape))

  def adam(lr):
    opt = optax.adam(lr)
    return opt if c.max_grad_norm is None else optax.chain(
        optax.clip_by_global_norm(c.max_grad_norm), opt)

  actor_opt, critic_opt, alpha_opt = adam(c.actor_lr), adam(c.critic_lr), adam(c.alpha_lr)
  buffer = flashbax.make_item_buffer(max_length=c.buffer_size, min_length=1,
                                     sample_batch_size=c.batch_size, add_batches=True)
  reset = jax.vmap(env.reset)
  step_envs = jax.vmap(env.step)
  if discrete:
    uniform_log_prob = -float(np.log(a_spec.num_actions))
  else:
    low, high = np.asarray(a_spec.low, np.float32), np.asarray(a_spec.high, np.float32)
    uniform_log_prob = -float(np.sum(np.log(high - low)))

  def act(params: SACParams, key, obs):
    dist = policy_apply(params.actor, obs)
    if discrete:
      action = dist.sample(seed=key)
      return action, dist.log_prob(action)
    return dist.sample_and_log_prob(seed=key)

  def mode(params: SACParams, obs):
    return policy_apply(params.actor, obs, method="mode")

  def init(key) -> SACState:
    k_pi, k_q, k_env, key = jax.random.split(key, 4)
    actor, critic = policy_init(k_pi), q_init(k_q)
    log_alpha = jnp.log(jnp.asarray(c.init_alpha, jnp.float32))
    params = SACParams(actor, critic, critic, log_alpha)
    opt_state = SACOptState(actor_opt.init(actor), critic_opt.init(critic),
                            alpha_opt.init(log_alpha))
    env_state, obs = reset(jax.random.split(k_env, c.num_envs))
    example = types.Transitions(
        obs[0], jnp.zeros(a_spec.shape, jnp.int32 if discrete else jnp.float32),
        jnp.zeros((), jnp.float32), obs[0], jnp.zeros((), bool), jnp.zeros((), bool),
        jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    zero = jnp.zeros((), jnp.int32)
    return SACState(params, opt_state, buffer.init(example), env_state, obs,
                    episode_stats_init(c.num_envs), key, zero, zero)

  def random_actions(key):
    if discrete:
      action = jax.random.randint(key, (c.num_envs,), 0, a_spec.num_actions)
    else:
      action = jax.random.uniform(key, (c.num_envs, *a_spec.shape), minval=low, maxval=high)
    return action, jnp.full((c.num_envs,), uniform_log_prob, jnp.float32)

  def collect(state: SACState, uniform: bool = False) -> tuple[SACState, types.Transitions]:
    key, k_act, k_env = jax.random.split(state.key, 3)
    if uniform:
      action, log_prob = random_actions(k_act)
    else:
      action, log_prob = act(state.params, k_act, state.obs)
    env_state, s = step_envs(jax.random.split(k_env, c.num_envs), state.env_state, action)
    episodes, _ = episode_stats_update(state.episodes, s.reward, s.done)
    trans = types.Transitions(state.obs, action, s.reward, s.final_obs, s.terminated,
                              s.truncated, log_prob, jnp.ones_like(s.reward))
    return state._replace(buffer=buffer.add(state.buffer, trans), env_state=env_state,
                          obs=s.obs, episodes=episodes, key=key,
                          step=state.step + c.num_envs), trans

  def sample(state: SACState) -> tuple[SACState, types.Transitions]:
    key, k = jax.random.split(state.key)
    return state._replace(key=key), buffer.sample(state.buffer, k).experience

  def alpha_of(params):
    return jnp.exp(params.log_alpha)

  def soft_value(params: SACParams, key, obs, critic=None):
    """`V(s) = E_{a∼π}[min_c Q̄_c(s, a) − α log π(a|s)]` under the target critics (or
    `critic`): exact over a categorical, one reparameterised sample otherwise."""
    critic = params.target_critic if critic is None else critic
    dist = policy_apply(params.actor, obs)
    alpha = alpha_of(params)
    if discrete:
      log_p = jax.nn.log_softmax(dist.logits, axis=-1)
      q = jnp.min(q_apply(critic, obs), axis=-2)  # [B, A]
      return jnp.sum(jnp.exp(log_p) * (q - alpha * log_p), axis=-1)
    action, log_p = dist.sample_and_log_prob(seed=key)
    return jnp.min(q_apply(critic, obs, action), axis=-1) - alpha * log_p

  def q_taken(critic, obs, action):
    """`Q_c(s, a)` for the taken actions, `[B, C]`."""
    if discrete:
      q = q_apply(critic, obs)  # [B, C, A]
      return jnp.take_along_axis(q, action[:, None, None].astype(jnp.int32), axis=-1)[..., 0]
    return q_apply(critic, obs, action)

  def critic_step(state: SACState, loss_fn: Callable):
    """One optimiser step of the critics on `loss_fn(critic_params) -> (loss, metrics)`
    (e.g. IQ-Learn's critic loss); returns `(state, metrics | {"critic_loss": loss})`."""
    params = state.params
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params.critic)
    updates, opt_critic = critic_opt.update(grads, state.opt_state.critic, params.critic)
    params = params._replace(critic=optax.apply_updates(params.critic, updates))
    return state._replace(params=params, opt_state=state.opt_state._replace(critic=opt_critic)), {
        **metrics, "critic_loss": loss}

  def update_critic(state: SACState, batch: types.Transitions, rewards=None):
    key, k = jax.random.split(state.key)
    r = batch.reward if rewards is None else jnp.asarray(rewards, jnp.float32)
    v_next = soft_value(state.params, k, batch.next_obs)
    y = jax.lax.stop_gradient(
        c.reward_scale * r + c.gamma * jnp.where(batch.terminated, 0.0, v_next))

    def loss_fn(critic):
      q = q_taken(critic, batch.obs, batch.action)  # [B, C]
      loss = jnp.sum(jnp.mean(jnp.square(q - y[:, None]), axis=0))
      return loss, {"q": jnp.mean(q), "target": jnp.mean(y)}

    return critic_step(state._replace(key=key), loss_fn)

  def update_actor(state: SACState, batch: types.Transitions):
    key, k = jax.random.split(state.key)
    params = state.params
    alpha = alpha_of(params)

    def loss_fn(actor):
      dist = policy_apply(actor, batch.obs)
      if discrete:
        log_p = jax.nn.log_softmax(dist.logits, axis=-1)
        p = jnp.exp(log_p)
        q = jnp.min(q_apply(params.critic, batch.obs), axis=-2)
        entropy = -jnp.sum(p * log_p, axis=-1)
        loss = jnp.sum(p * (alpha * log_p - q), axis=-1)
      else:
        action, log_p = dist.sample_and_log_prob(seed=k)
        entropy = -log_p
        loss = alpha * log_p - jnp.min(q_apply(params.critic, batch.obs, action), axis=-1)
      return jnp.mean(loss), jnp.mean(entropy)

    (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params.actor)
    updates, opt_actor = actor_opt.update(grads, state.opt_state.actor, params.actor)
    params = params._replace(actor=optax.apply_updates(params.actor, updates))
    opt_state = state.opt_state._replace(actor=opt_actor)
    entropy = jax.lax.stop_gradient(entropy)
    alpha_loss_fn = lambda log_alpha: jnp.exp(log_alpha) * (entropy - target_entropy)
    alpha_loss, g = jax.value_and_grad(alpha_loss_fn)(params.log_alpha)
    if c.autotune:
      updates, opt_alpha = alpha_opt.update(g, opt_state.alpha, params.log_alpha)
      params = params._replace(log_alpha=optax.apply_updates(params.log_alpha, updates))
      opt_state = opt_state._replace(alpha=opt_alpha)
    return state._replace(params=params, opt_state=opt_state, key=key), {
        "actor_loss": loss, "entropy": entropy, "alpha_loss": alpha_loss,
        "alpha": alpha_of(params)}

  def update_target(state: SACState) -> SACState:
    params = state.params
    target = optax.incremental_update(params.critic, params.target_critic, c.tau)
    return state._replace(params=params._replace(target_critic=target))

  def update(state: SACState, batch: types.Transitions, rewards=None):
    state, m_critic = update_critic(state, batch, rewards)
    state, m_actor = update_actor(state, batch)
    state = update_target(state)
    return state._replace(update_step=state.update_step + 1), m_critic | m_actor

  def start(key, reward_params=None):
    del reward_params  # `body`'s data, passed to both by `runner.run`
    state = init(key)
    state, _ = jax.lax.scan(lambda s, _: (collect(s, uniform=True)[0], None), state, None,
                            length=c.warmup_iterations)
    return state, jnp.arange(c.num_iterations)

  def body(state: SACState, _, reward_params=None):
    def gradient_step(state, _):
      state, batch = sample(state)
      rewards = (None if reward_fn is None
                 else reward_fn(reward_params, batch.obs, batch.action, batch.next_obs))
      return update(state, batch, rewards)

    state, _ = collect(state)
    state, m = jax.lax.scan(gradient_step, state, None, length=c.updates_per_step)
    metrics = jax.tree.map(jnp.mean, m)
    metrics["recent_return"] = jnp.nanmean(state.episodes.last)
    metrics["num_episodes"] = jnp.sum(state.episodes.count)
    metrics["env_steps"] = state.step
    return state, metrics

  def train(key, reward_params=None) -> tuple[SACState, dict]:
    state, xs = start(key)
    return jax.lax.scan(lambda s, x: body(s, x, reward_params), state, xs)

  def evaluate(params: SACParams, key, num_episodes: int, deterministic: bool = True):
    if deterministic:
      policy = lambda k, obs: mode(params, obs)
    else:
      policy = lambda k, obs: policy_apply(params.actor, obs).sample(seed=k)
    return envs.episode_returns(env, policy, key, num_episodes)

  return SAC(config, env, target_entropy, init, collect, sample, update, update_critic,
             update_actor, update_target, critic_step, train, start, body, act, mode,
             policy_apply, q_apply, soft_value, evaluate, buffer,
             SACOptState(actor_opt, critic_opt, alpha_opt))


def make_train(config: SACConfig, env: envs.Env, *, reward_fn: Callable | None = None):
  """`make_sac(config, env, reward_fn=reward_fn).train`: `train(key, reward_params=None)
  -> (SACState, metrics)`."""
  return make_sac(config, env, reward_fn=reward_fn).train
