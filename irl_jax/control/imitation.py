"""Imitation from demonstrations with function approximation: BC and IQ-Learn.

Each learner is `make_<method>(config, spec) -> Learner`, whose pure
`train(key, demos[, env]) -> (params, metrics)` runs `config.num_steps` updates
in one `lax.scan`; `jax.vmap(train)` runs seeds (or equally padded
demonstration sets) in one compiled program. Demonstrations are
`irl_jax.control.types.Transitions`; rows with `weight == 0` are padding and
are never sampled.

IQ-Learn (Garg et al. 2021), χ² divergence, in both action spaces:
- discrete: a soft-Q network `Q(s, ·)`, `V(s) = α·logsumexp(Q(s, ·)/α)`,
  `π = softmax(Q/α)` (no actor);
- continuous: SAC-style, a critic `Q(s, a)` and a squashed-Gaussian actor,
  `V(s) = E_{a∼π}[Q(s, a) − α log π(a|s)]` (one sample), the actor maximising
  `E_s[Q(s, a) − α log π(a|s)]`.
The critic minimises `irl_jax.tabular.irl.iq_learn_control` on expert
transitions, `−r̂ + (V(s) − γV(s')) + r̂²/(4c)` with `r̂ = Q(s, a) − γ(1−d)V(s')`.
Offline, the value term is taken on expert states; online (`online=True`), the
learner also acts in the environment, keeps a replay of its own transitions, and
the value term and the χ² term average expert and policy transitions (half of
each batch). Exposed: `absorbing` (a terminal transition enters a learned
absorbing state, whose value bootstraps, instead of having no future),
`value_clip` (|V(s')| clipped), and Q/V statistics in the metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from irl_jax.control import envs as envs_lib
from irl_jax.control import networks
from irl_jax.control.envs import EnvSpec
from irl_jax.control.types import Transitions
from irl_jax.tabular.irl import iq_learn_control

# Parameters are initialised one seed at a time under `vmap`
# (`jax.custom_batching.sequential_vmap`): the orthogonal initialiser's QR is a LAPACK
# call, and a batched one can deadlock XLA's CPU thread pool on small machines.


class Learner(NamedTuple):
  """`init(key) -> params`; `train(key, demos, ...) -> (params, metrics)` (metrics
  stacked over steps); `act(params, key, obs) -> action` (sampled) and
  `mode(params, obs) -> action` (deterministic).

  `start(key, demos, env=None) -> (carry, keys)` and `body(carry, key, demos, env=None)
  -> (carry, metrics)` are `train`'s scan, for `irl_jax.control.runner.run`
  (checkpointed, resumable runs): `train` is `lax.scan(body, *start(...))` and returns
  `carry.params`. Online IQ-Learn needs `env`; bind it with `functools.partial`."""
  init: Callable
  train: Callable
  act: Callable
  mode: Callable
  start: Callable
  body: Callable


def sample_rows(data: Transitions, key, n: int) -> Transitions:
  """`n` rows drawn uniformly with replacement among rows with `weight > 0`."""
  p = (data.weight > 0).astype(jnp.float32)
  idx = jax.random.choice(key, p.shape[0], (n,), replace=True, p=p / p.sum())
  return jax.tree.map(lambda x: x[idx], data)


class ObsNorm(NamedTuple):
  """Observation statistics: learners see `(obs − mean) / std`."""
  mean: jax.Array
  std: jax.Array

  def __call__(self, obs):
    return (obs - self.mean) / self.std


def obs_norm(demos: Transitions, enabled: bool = True, floor: float = 1e-3) -> ObsNorm:
  """Mean and standard deviation (floored at `floor`) of the real rows' observations;
  the identity when not `enabled`."""
  shape = demos.obs.shape[1:]
  if not enabled:
    return ObsNorm(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32))
  w = (demos.weight > 0).astype(jnp.float32)
  w = w / w.sum()
  wx = w.reshape((-1,) + (1,) * len(shape))
  obs = jnp.where(wx > 0, demos.obs, 0.0)
  mean = (wx * obs).sum(0)
  var = (wx * (obs - mean) ** 2).sum(0)
  return ObsNorm(mean, jnp.maximum(jnp.sqrt(var), floor))


def _check(config, *fields):
  for f in fields:
    v = getattr(config, f)
    if not v or v <= 0:
      raise ValueError(f"{type(config).__name__}.{f} must be > 0, got {v!r}.")


def _optimizer(lr, max_grad_norm):
  tx = optax.adam(lr)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), tx) if max_grad_norm else tx


# ----------------------------------------------------------------------------- BC


@dataclasses.dataclass(frozen=True)
class BCConfig:
  """Behaviour cloning: maximum likelihood of the expert actions under `Policy`."""
  hidden: tuple = (64, 64)
  learning_rate: float = 1e-3
  batch_size: int = 256
  num_steps: int = 2000
  max_grad_norm: float | None = 1.0
  entropy_coef: float = 0.0  # continuous: a small entropy bonus keeps std from collapsing
  action_margin: float = 1e-3  # continuous: expert actions clipped this far inside the box
  normalize_obs: bool = True   # standardise observations with the demonstrations' statistics


class BCParams(NamedTuple):
  policy: Any
  norm: ObsNorm


class BCCarry(NamedTuple):
  """The carry of BC's scan (`Learner.start`/`body`)."""
  params: BCParams
  opt_state: Any


def make_bc(config: BCConfig, spec: EnvSpec) -> Learner:
  _check(config, "learning_rate", "batch_size", "num_steps")
  policy = networks.Policy(spec.obs_shape[0], spec.action, config.hidden, rngs=nnx.Rngs(0))
  apply, template = networks.functional(policy)
  tx = _optimizer(config.learning_rate, config.max_grad_norm)

  @jax.custom_batching.sequential_vmap
  def init_policy(key):
    return networks.functional(networks.Policy(
        spec.obs_shape[0], spec.action, config.hidden, rngs=nnx.Rngs(key)))[1]

  def init(key, norm: ObsNorm | None = None):
    policy = init_policy(key)
    if norm is None:
      norm = ObsNorm(jnp.zeros(spec.obs_shape, jnp.float32), jnp.ones(spec.obs_shape, jnp.float32))
    return BCParams(policy, norm)

  def loss_fn(policy, norm, batch: Transitions, key):
    dist = apply(policy, norm(batch.obs))
    action = batch.action
    if not spec.action.discrete:
      lo, hi = jnp.asarray(spec.action.low), jnp.asarray(spec.action.high)
      m = config.action_margin * (hi - lo) / 2
      action = jnp.clip(action, lo + m, hi - m)
    nll = -dist.log_prob(action)
    ent = 0.0
    if config.entropy_coef:
      # One-sample estimate −log π(a), a ~ π. From the sampler's own log-density: a tanh
      # that rounds to ±1 in float32 cannot be inverted (atanh(±1) = inf, a NaN log π).
      ent = (-dist.sample_and_log_prob(seed=key)[1] if not spec.action.discrete
             else dist.entropy()).mean()
    return nll.mean() - config.entropy_coef * ent, {"bc/nll": nll.mean()}

  def start(key, demos: Transitions, env=None):
    del env
    k_init, key = jax.random.split(key)
    params = init(k_init, obs_norm(demos, config.normalize_obs))
    return BCCarry(params, tx.init(params.policy)), jax.random.split(key, config.num_steps)

  def body(carry: BCCarry, key, demos: Transitions, env=None):
    del env
    policy, norm = carry.params.policy, carry.params.norm
    k_batch, k_loss = jax.random.split(key)
    (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(
        policy, norm, sample_rows(demos, k_batch, config.batch_size), k_loss)
    updates, opt = tx.update(g, carry.opt_state, policy)
    return BCCarry(carry.params._replace(policy=optax.apply_updates(policy, updates)), opt), m

  def train(key, demos: Transitions):
    carry, keys = start(key, demos)
    carry, metrics = jax.lax.scan(lambda c, k: body(c, k, demos), carry, keys)
    return carry.params, metrics

  del template
  return Learner(
      init, train,
      lambda params, key, obs: apply(params.policy, params.norm(obs)).sample(seed=key),
      lambda params, obs: apply(params.policy, params.norm(obs), method="mode"),
      start, body)


# ----------------------------------------------------------------------------- IQ-Learn


@dataclasses.dataclass(frozen=True)
class IQLearnConfig:
  """IQ-Learn with the χ² divergence. `temperature` is α; `chi2_coef` is `c` (the
  regulariser weight is `1/(4c)`)."""
  hidden: tuple = (64, 64)
  actor_hidden: tuple = (64, 64)
  learning_rate: float = 3e-4
  actor_learning_rate: float = 3e-4
  batch_size: int = 256
  num_steps: int = 5000
  discount: float = 0.99
  temperature: float = 0.01
  chi2_coef: float = 0.5
  max_grad_norm: float | None = 10.0
  absorbing: bool = False
  value_clip: float | None = None
  target_update: float = 0.0  # Polyak rate of a target critic for V(s'); 0: no target
  online: bool = False
  num_envs: int = 8           # online: parallel environments
  env_steps_per_update: int = 1  # online: environment steps (per env) between updates
  replay_size: int = 50_000
  warmup_env_steps: int = 1000  # online: random-policy steps before updating
  normalize_obs: bool = False  # standardise observations with the demonstrations' statistics
  # (off by default: online, the policy visits states far outside the expert's spread)


class IQState(NamedTuple):
  critic: Any
  actor: Any
  critic_opt: Any
  actor_opt: Any
  target: Any
  norm: ObsNorm


class IQCarry(NamedTuple):
  """The carry of offline IQ-Learn's scan (`Learner.start`/`body`)."""
  params: IQState


class IQOnlineCarry(NamedTuple):
  """The carry of online IQ-Learn's scan: the learner, its `num_envs` environments,
  their current observations, the replay of its own transitions, each environment's
  running return and the return of its last finished episode (NaN before one ends)."""
  params: IQState
  env_state: Any
  obs: jax.Array
  replay: Any
  episode_return: jax.Array
  last_return: jax.Array


def _absorbing(obs, flag):
  """Observations with an absorbing-state indicator feature appended."""
  return jnp.concatenate([obs, jnp.broadcast_to(flag, (*obs.shape[:-1], 1)).astype(obs.dtype)],
                         -1)


def make_iq_learn(config: IQLearnConfig, spec: EnvSpec) -> Learner:
  """IQ-Learn learner; `train(key, demos, env=None)`; `env` (an `Env`) is required
  when `config.online`. Metrics: the critic loss, `iq/q_expert`, `iq/v_expert`,
  `iq/v_policy`, `iq/reward_expert` (mean r̂ on expert rows), `iq/reward_policy`."""
  _check(config, "learning_rate", "batch_size", "num_steps", "temperature", "chi2_coef")
  if not 0.0 <= config.discount < 1.0:
    raise ValueError(f"IQLearnConfig.discount must be in [0, 1), got {config.discount}.")
  if not 0.0 <= config.target_update <= 1.0:
    raise ValueError(f"IQLearnConfig.target_update must be in [0, 1], got {config.target_update}.")
  if config.online:
    _check(config, "num_envs", "env_steps_per_update", "replay_size")
  discrete = spec.action.discrete
  obs_dim = spec.obs_shape[0] + (1 if config.absorbing else 0)
  alpha, gamma = float(config.temperature), float(config.discount)

  def build(key):
    rngs = nnx.Rngs(key)
    critic = networks.QNet(obs_dim, spec.action, config.hidden, rngs=rngs,
                           num_critics=1 if discrete else 2)
    actor = (None if discrete else
             networks.Policy(obs_dim, spec.action, config.actor_hidden, rngs=rngs))
    return critic, actor

  critic0, actor0 = build(jax.random.key(0))
  q_apply, _ = networks.functional(critic0)
  pi_apply = None if discrete else networks.functional(actor0)[0]
  critic_tx = _optimizer(config.learning_rate, config.max_grad_norm)
  actor_tx = None if discrete else _optimizer(config.actor_learning_rate, config.max_grad_norm)

  @jax.custom_batching.sequential_vmap
  def init_params(key):
    critic, actor = build(key)
    return networks.functional(critic)[1], (None if discrete else networks.functional(actor)[1])

  def init(key, norm: ObsNorm | None = None):
    c, a = init_params(key)
    if norm is None:
      norm = ObsNorm(jnp.zeros(spec.obs_shape, jnp.float32), jnp.ones(spec.obs_shape, jnp.float32))
    return IQState(c, a, critic_tx.init(c), None if discrete else actor_tx.init(a), c, norm)

  def features(obs, norm: ObsNorm):
    obs = norm(obs)
    return _absorbing(obs, 0.0) if config.absorbing else obs

  def policy_dist(state_or_params, obs):
    if discrete:
      q = q_apply(state_or_params.critic, obs)[..., 0, :]
      return _soft_policy(q)
    return pi_apply(state_or_params.actor, obs)

  def _soft_policy(q):
    return distrax.Categorical(logits=q / alpha)

  def value(critic, actor, obs, key):
    """V(s): soft maximum of Q (discrete) or a one-sample soft value under the actor."""
    if discrete:
      q = q_apply(critic, obs)[..., 0, :]
      return alpha * jax.nn.logsumexp(q / alpha, axis=-1)
    a, logp = pi_apply(jax.lax.stop_gradient(actor), obs).sample_and_log_prob(seed=key)
    q = q_apply(critic, obs, a).min(-1)
    return q - alpha * logp

  def q_of(critic, obs, action):
    if discrete:
      q = q_apply(critic, obs)[..., 0, :]
      return jnp.take_along_axis(q, action[..., None].astype(jnp.int32), -1)[..., 0]
    return q_apply(critic, obs, action).min(-1)

  def split_next(batch: Transitions, norm: ObsNorm):
    """Next-state features and the discount: with `absorbing`, a terminal transition
    enters the absorbing state (zero features, flag 1) and bootstraps from it."""
    nxt = norm(batch.next_obs)
    if config.absorbing:
      nxt = jnp.where(batch.terminated[:, None], _absorbing(jnp.zeros_like(nxt), 1.0),
                      _absorbing(nxt, 0.0))
      return nxt, jnp.full(batch.reward.shape, gamma, jnp.float32)
    return nxt, gamma * (1.0 - batch.terminated.astype(jnp.float32))

  def critic_loss(critic, state: IQState, expert: Transitions, policy: Transitions | None, key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    v_net = state.target if config.target_update else critic

    def parts(batch, ka, kb):
      obs = features(batch.obs, state.norm)
      nxt, disc = split_next(batch, state.norm)
      v_next = value(v_net, state.actor, nxt, ka)
      if config.value_clip:
        v_next = jnp.clip(v_next, -config.value_clip, config.value_clip)
      return q_of(critic, obs, batch.action), value(critic, state.actor, obs, kb), v_next, disc

    q_e, v_e, vn_e, d_e = parts(expert, k1, k2)
    loss_e, ex_e = iq_learn_control(q_e, v_e, vn_e, d_e, chi2_coef=config.chi2_coef)
    metrics = {"iq/q_expert": q_e.mean(), "iq/v_expert": v_e.mean(),
               "iq/reward_expert": ex_e.reward.mean()}
    if policy is None:
      loss = loss_e.mean()
      metrics["iq/v_policy"] = jnp.nan
      metrics["iq/reward_policy"] = jnp.nan
    else:
      q_p, v_p, vn_p, d_p = parts(policy, k3, k4)
      _, ex_p = iq_learn_control(q_p, v_p, vn_p, d_p, chi2_coef=config.chi2_coef)
      # Expert: −r̂; value term and χ² averaged over expert and policy rows.
      reg = jnp.concatenate([ex_e.reward, ex_p.reward]) ** 2 / (4 * config.chi2_coef)
      loss = (-ex_e.reward.mean() + jnp.concatenate([ex_e.value_term, ex_p.value_term]).mean()
              + reg.mean())
      metrics["iq/v_policy"] = v_p.mean()
      metrics["iq/reward_policy"] = ex_p.reward.mean()
    metrics["iq/critic_loss"] = loss
    return loss, metrics

  def actor_loss(actor, critic, obs, key):
    a, logp = pi_apply(actor, obs).sample_and_log_prob(seed=key)
    q = q_apply(critic, obs, a).min(-1)
    return (alpha * logp - q).mean(), {"iq/actor_entropy": -logp.mean()}

  def update(state: IQState, expert, policy, key):
    k_c, k_a = jax.random.split(key)
    (_, m), g = jax.value_and_grad(critic_loss, has_aux=True)(state.critic, state, expert, policy,
                                                               k_c)
    upd, copt = critic_tx.update(g, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, upd)
    actor, aopt = state.actor, state.actor_opt
    if not discrete:
      obs = features(expert.obs if policy is None else
                     jnp.concatenate([expert.obs, policy.obs]), state.norm)
      (_, am), ga = jax.value_and_grad(actor_loss, has_aux=True)(state.actor, critic, obs, k_a)
      upd, aopt = actor_tx.update(ga, state.actor_opt, state.actor)
      actor = optax.apply_updates(state.actor, upd)
      m = {**m, **am}
    target = state.target
    if config.target_update:
      target = optax.incremental_update(critic, state.target, config.target_update)
    return IQState(critic, actor, copt, aopt, target, state.norm), m

  def act(params: IQState, key, obs):
    return policy_dist(params, features(obs, params.norm)).sample(seed=key)

  def mode(params: IQState, obs):
    if discrete:
      return jnp.argmax(q_apply(params.critic, features(obs, params.norm))[..., 0, :], -1)
    return pi_apply(params.actor, features(obs, params.norm), method="mode")

  def start_offline(key, demos: Transitions):
    k_init, key = jax.random.split(key)
    return (IQCarry(init(k_init, obs_norm(demos, config.normalize_obs))),
            jax.random.split(key, config.num_steps))

  def body_offline(carry: IQCarry, key, demos: Transitions):
    k_b, k_u = jax.random.split(key)
    state, m = update(carry.params, sample_rows(demos, k_b, config.batch_size), None, k_u)
    return IQCarry(state), m

  def collect(env, state, env_state, obs, replay, key, random):
    n_env = config.num_envs

    def one(key, es, o):
      k_a, k_s = jax.random.split(key)
      a = jax.lax.cond(random, lambda: _random_action(spec, k_a),
                       lambda: act(state, k_a, o))
      es, s = env.step(k_s, es, a)
      return es, s, a

    env_state, steps, actions = jax.vmap(one)(jax.random.split(key, n_env), env_state, obs)
    rows = Transitions(obs, actions, steps.reward, steps.final_obs, steps.terminated,
                       steps.truncated, jnp.full(steps.reward.shape, jnp.nan),
                       jnp.ones(steps.reward.shape, jnp.float32))
    return env_state, steps.obs, _add(replay, rows), steps

  def start_online(key, demos: Transitions, env):
    n_env, size = config.num_envs, config.replay_size
    k_init, k_env, key = jax.random.split(key, 3)
    state = init(k_init, obs_norm(demos, config.normalize_obs))
    env_state, obs = jax.vmap(env.reset)(jax.random.split(k_env, n_env))
    replay = _empty_replay(spec, size)
    warm = -(-config.warmup_env_steps // n_env)

    def warmup(carry, key):
      env_state, obs, replay = carry
      env_state, obs, replay, _ = collect(env, state, env_state, obs, replay, key, True)
      return (env_state, obs, replay), None

    (env_state, obs, replay), _ = jax.lax.scan(warmup, (env_state, obs, replay),
                                               jax.random.split(key, warm))
    key = jax.random.fold_in(key, 1)
    carry = IQOnlineCarry(state, env_state, obs, replay, jnp.zeros((n_env,), jnp.float32),
                          jnp.full((n_env,), jnp.nan, jnp.float32))
    return carry, jax.random.split(key, config.num_steps)

  def body_online(carry: IQOnlineCarry, key, demos: Transitions, env):
    state = carry.params
    k_c, k_b, k_p, k_u = jax.random.split(key, 4)

    def env_step(c, k):
      es, o, rep, ret, done_ret = c
      es, o, rep, s = collect(env, state, es, o, rep, k, False)
      ret = ret + s.reward
      done_ret = jnp.where(s.done, ret, done_ret)
      ret = jnp.where(s.done, 0.0, ret)
      return (es, o, rep, ret, done_ret), None

    (env_state, obs, replay, ret, done_ret), _ = jax.lax.scan(
        env_step, (carry.env_state, carry.obs, carry.replay, carry.episode_return,
                   carry.last_return),
        jax.random.split(k_c, config.env_steps_per_update))
    half = config.batch_size // 2
    state, m = update(state, sample_rows(demos, k_b, half),
                      sample_rows(replay.data, k_p, half), k_u)
    m = {**m, "iq/episode_return": done_ret.mean()}
    return IQOnlineCarry(state, env_state, obs, replay, ret, done_ret), m

  def _env(env):
    if config.online and env is None:
      raise ValueError("IQLearnConfig.online=True: train(key, demos, env) needs the env "
                       "(for `start`/`body`, bind it: functools.partial(learner.start, "
                       "env=env)).")
    return env

  def start(key, demos: Transitions, env: envs_lib.Env | None = None):
    if config.online:
      return start_online(key, demos, _env(env))
    return start_offline(key, demos)

  def body(carry, key, demos: Transitions, env: envs_lib.Env | None = None):
    if config.online:
      return body_online(carry, key, demos, _env(env))
    return body_offline(carry, key, demos)

  def train(key, demos: Transitions, env: envs_lib.Env | None = None):
    carry, keys = start(key, demos, env)
    carry, metrics = jax.lax.scan(lambda c, k: body(c, k, demos, env), carry, keys)
    return carry.params, metrics

  return Learner(init, train, act, mode, start, body)


# ----------------------------------------------------------------------------- replay


class Replay(NamedTuple):
  data: Transitions  # `[size]` rows; `weight` 0 until written
  pos: jax.Array


def _empty_replay(spec: EnvSpec, size: int) -> Replay:
  obs = jnp.zeros((size, *spec.obs_shape), jnp.float32)
  action = (jnp.zeros((size,), jnp.int32) if spec.action.discrete
            else jnp.zeros((size, *spec.action.shape), jnp.float32))
  zf = jnp.zeros((size,), jnp.float32)
  zb = jnp.zeros((size,), bool)
  return Replay(Transitions(obs, action, zf, obs, zb, zb, zf, zf), jnp.zeros((), jnp.int32))


def _add(replay: Replay, rows: Transitions) -> Replay:
  size = replay.data.reward.shape[0]
  n = rows.reward.shape[0]
  idx = (replay.pos + jnp.arange(n)) % size
  data = jax.tree.map(lambda buf, x: buf.at[idx].set(x.astype(buf.dtype)), replay.data, rows)
  return Replay(data, (replay.pos + n) % size)


def _random_action(spec: EnvSpec, key):
  if spec.action.discrete:
    return jax.random.randint(key, (), 0, spec.action.num_actions)
  return jax.random.uniform(key, spec.action.shape, minval=jnp.asarray(spec.action.low),
                            maxval=jnp.asarray(spec.action.high))
