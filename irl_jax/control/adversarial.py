"""Adversarial imitation: GAIL and AIRL on top of PPO.

Each iteration collects `num_envs × num_steps` transitions with the current
policy (`ppo.collect`, which stores `log π(a|s)` at sampling time), takes
`disc_updates` discriminator steps on equal-sized expert and policy batches,
rewards the rollout with the discriminator, and runs one PPO update on that
reward (`ppo.update(state, batch, rewards)`). The whole run is one `lax.scan`:
`jax.vmap(train, in_axes=(0, None))(keys, demos)` runs seeds in one program.

- GAIL (Ho & Ermon 2016): a discriminator logit `l(s, a)`; the policy reward is
  `softplus(l) = −log(1 − D)` (`irl_jax.losses.gail_reward`), or the logit
  itself with `gail_reward="logit"`. An optional gradient penalty on
  expert/policy interpolates (`grad_penalty`, WGAN-GP with target 1, or a
  zero-centred penalty with `grad_penalty_target=0`).
- AIRL (Fu, Luo & Levine 2018): `f(s, a, s') = g(s[, a]) + γ(1 − d)h(s') − h(s)`,
  the discriminator logit `f − log π(a|s)` with the stored `log π` on policy
  transitions and the current policy's (gradient stopped) on expert ones; the
  policy reward is `f − log π` (`irl_jax.losses.airl_reward`). With
  `state_only=True`, `g(s)` is the reward meant to transfer to new dynamics:
  `Adversarial.learned_reward` exposes it as a `reward_fn` for `ppo.make_ppo`.

The cost player. By default the discriminator trains on the current rollout only
(a best-response-style cost player: it chases the current policy). With
`disc_replay = K > 0` it trains on a ring buffer of the last `K` policy
transitions; `K ≥ total_timesteps` keeps every past sample, a follow-the-leader,
no-regret cost player (Swamy et al. 2023; see `irl_jax.control.resets` for the
expert resets it goes with). Buffered AIRL rows keep the `log π` stored when they
were sampled.

The discriminator's inputs are the raw observations (and one-hot or raw
actions), and its objective is `irl_jax.losses`' BCE on logits. With
`disc_normalize=True` it sees standardised observations instead: a running mean
and variance (Chan et al.'s parallel update, population variance, `1e-5` added
before the square root, as imitation's `RunningNorm`) updated from the
observations of every discriminator training batch, expert and policy rows
together, before that step, and left unchanged when rewards are computed. Its
parameters are then `{"net": ..., "norm": RunningNorm}`; actions and the
absorbing indicator are not normalised.

Early termination. A learned reward that is negative on the policy's states
teaches the policy to end its episodes early (CartPole, Acrobot...). With
`absorbing=True` (the default; Kostrikov et al. 2019, "Discriminator-Actor-
Critic") a terminal transition leads to an absorbing state instead of
nothing: the discriminator sees an absorbing-state indicator feature and is
trained on the absorbing twins of terminal rows (expert and policy alike), and
the policy's reward at a terminal step gains the discounted value of staying in
the absorbing state forever, `γ/(1 − γ)·r_abs`, with `r_abs` the learned
reward of an absorbing-to-absorbing transition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from irl_jax import losses
from irl_jax.control import envs, networks, ppo
from irl_jax.control.imitation import sample_rows
from irl_jax.control.types import Transitions

METHODS = ("gail", "airl")


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
  """method: "gail" or "airl". ppo: the inner RL (its `total_timesteps` is the run's
  environment budget). disc_*: the discriminator's MLP, Adam learning rate, gradient
  steps per iteration and rows per side per step. grad_penalty: weight of the
  gradient penalty (0: none) with target norm `grad_penalty_target`. gail_reward:
  "softplus" (−log(1 − D)) or "logit". state_only: AIRL's `g(s)`.
  action_margin: continuous expert actions are clipped inside the box by this fraction
  of its half-width, in [0, 1) (> 0 for AIRL), before AIRL evaluates `log π` on them (a squashed
  Gaussian has no density at the boundary). absorbing: see the module doc.
  disc_replay: policy transitions the discriminator samples from (0: the current
  rollout only; otherwise a ring buffer of the last `disc_replay`, at least one
  rollout). disc_normalize: standardise the discriminator's observations with running
  statistics (module doc)."""
  method: str = "gail"
  ppo: ppo.PPOConfig = dataclasses.field(
      default_factory=lambda: ppo.PPOConfig(total_timesteps=200_000))
  disc_hidden: tuple = (64, 64)
  disc_lr: float = 3e-4
  disc_updates: int = 4
  disc_batch_size: int = 256
  grad_penalty: float = 0.0
  grad_penalty_target: float = 1.0
  gail_reward: str = "softplus"
  state_only: bool = False
  action_margin: float = 1e-3
  absorbing: bool = True
  disc_replay: int = 0
  disc_normalize: bool = False


class RunningNorm(NamedTuple):
  """Running mean and (population) variance of the discriminator's observations and the
  number of rows behind them (`disc_normalize`)."""
  count: jax.Array
  mean: jax.Array
  var: jax.Array


NORM_EPS = 1e-5


def running_norm_init(dim: int) -> RunningNorm:
  return RunningNorm(jnp.zeros((), jnp.float32), jnp.zeros((dim,), jnp.float32),
                     jnp.ones((dim,), jnp.float32))


def running_norm_update(norm: RunningNorm, x) -> RunningNorm:
  """`norm` merged with the rows of `x[B, dim]` (the parallel mean/variance update);
  the first batch replaces the initial statistics."""
  x = jnp.asarray(x, jnp.float32)
  n_b = jnp.asarray(x.shape[0], jnp.float32)
  mean_b, var_b = jnp.mean(x, 0), jnp.var(x, 0)
  total = norm.count + n_b
  delta = mean_b - norm.mean
  mean = norm.mean + delta * n_b / total
  var = (norm.var * norm.count + var_b * n_b + delta ** 2 * norm.count * n_b / total) / total
  return RunningNorm(total, mean, var)


def running_norm_apply(norm: RunningNorm, x):
  norm = jax.lax.stop_gradient(norm)
  return (x - norm.mean) / jnp.sqrt(norm.var + NORM_EPS)


class AdversarialState(NamedTuple):
  """`replay`: the past policy transitions (a ring buffer of `disc_replay` rows) and
  `replay_count`, the rows ever written to it; both `None` without replay."""
  ppo: ppo.PPOState
  disc: Any
  disc_opt: Any
  replay: Any = None
  replay_count: Any = None


@dataclasses.dataclass(frozen=True)
class Adversarial:
  """`train(key, demos) -> (AdversarialState, metrics[num_iterations])`;
  `learned_reward(disc_params, obs, action, next_obs) -> [B]` (GAIL: its reward;
  AIRL: `g`, the transferable part; neither with the absorbing state's terminal bonus,
  which `generator_reward` includes); `ppo`: the inner `ppo.PPO`."""
  config: AdversarialConfig
  ppo: ppo.PPO
  init: Callable
  train: Callable
  learned_reward: Callable
  discriminator_logits: Callable
  # `train` as a scan, for `irl_jax.control.runner.run` (checkpointed, resumable):
  # start(key, demos) -> (state, keys[num_iterations]); body(state, key, demos).
  start: Callable | None = None
  body: Callable | None = None
  # generator_reward(disc_params, rows: Transitions) -> [B]: the reward PPO is trained on
  # (with the absorbing state's bonus on terminated rows, which `learned_reward` leaves out).
  generator_reward: Callable | None = None


def _check(config: AdversarialConfig):
  def need(ok, field, msg):
    if not ok:
      raise ValueError(f"AdversarialConfig.{field}: {msg} (got {getattr(config, field)!r}).")
  need(config.method in METHODS, "method", f"must be one of {METHODS}")
  need(config.disc_lr > 0, "disc_lr", "must be positive")
  need(isinstance(config.disc_updates, int) and config.disc_updates >= 1, "disc_updates",
       "must be a positive integer")
  need(isinstance(config.disc_batch_size, int) and config.disc_batch_size >= 1,
       "disc_batch_size", "must be a positive integer")
  need(config.grad_penalty >= 0, "grad_penalty", "must be >= 0")
  need(config.grad_penalty_target >= 0, "grad_penalty_target",
       "must be >= 0 (a gradient norm)")
  need(0 <= config.action_margin < 1, "action_margin",
       "must be in [0, 1), a fraction of the action box's half-width (1 or more clips every "
       "action to one point)")
  need(config.gail_reward in ("softplus", "logit"), "gail_reward",
       "must be 'softplus' or 'logit'")
  need(not (config.state_only and config.method == "gail"), "state_only",
       "is an AIRL option (GAIL's discriminator sees actions)")
  need(not (config.absorbing and not config.ppo.gamma < 1.0), "absorbing",
       f"needs ppo.gamma < 1 (the absorbing state's value is r/(1 − γ)); ppo.gamma is "
       f"{config.ppo.gamma}")
  need(isinstance(config.disc_normalize, bool), "disc_normalize", "must be True or False")
  need(isinstance(config.disc_replay, int) and not isinstance(config.disc_replay, bool)
       and (config.disc_replay == 0 or config.disc_replay >= config.ppo.batch_size),
       "disc_replay", f"must be 0 or an integer >= one rollout, ppo.num_envs × ppo.num_steps = "
       f"{config.ppo.batch_size}")


def check_config(config: AdversarialConfig) -> None:
  """Raises `ValueError` naming the `AdversarialConfig` field, or the generator's
  `PPOConfig` field, that is out of range (what `make_adversarial` checks first), e.g. for
  a study's config validation."""
  _check(config)
  ppo.check_config(config.ppo)


def make_adversarial(config: AdversarialConfig, env: envs.Env) -> Adversarial:
  """GAIL or AIRL for `env` (discrete or continuous actions); see the module doc."""
  _check(config)
  spec = env.spec
  inner = ppo.make_ppo(config.ppo, env)
  airl = config.method == "airl"
  if airl and not spec.action.discrete and not config.action_margin > 0:
    raise ValueError("AdversarialConfig.action_margin: AIRL with continuous actions needs a "
                     "margin > 0 (at 0 expert actions on the box's edge get log π = −inf from "
                     f"the squashed Gaussian) (got {config.action_margin!r}).")
  obs_dim = int(spec.obs_shape[0])
  act_dim = (int(spec.action.num_actions) if spec.action.discrete
             else int(jnp.prod(jnp.asarray(spec.action.shape))))
  feat_dim = obs_dim + (1 if config.absorbing else 0)
  in_dim = feat_dim if config.state_only else feat_dim + act_dim
  net_apply, net_init = ppo.trainable(lambda rngs: networks.Discriminator(
      in_dim, config.disc_hidden, rngs=rngs, obs_dim=feat_dim, potential=airl))
  tx = optax.adam(config.disc_lr)
  gamma = float(config.ppo.gamma)
  normalize = config.disc_normalize

  # The discriminator's parameters: the network's, or with `disc_normalize`
  # {"net": the network's, "norm": RunningNorm}. The optimiser sees the network's only.
  def net_params(params):
    return params["net"] if normalize else params

  def with_net(params, net):
    return {**params, "net": net} if normalize else net

  def disc_apply(params, x, **kw):
    return net_apply(net_params(params), x, **kw)

  def disc_init(key):
    net = net_init(key)
    return {"net": net, "norm": running_norm_init(obs_dim)} if normalize else net

  def feat(params, obs, flag=0.0):
    """Observations (standardised with `disc_normalize`) with the absorbing-state
    indicator (when `absorbing`); `flag=1`: the absorbing state, zero observation."""
    if normalize and flag == 0.0:
      obs = running_norm_apply(params["norm"], obs)
    if not config.absorbing:
      return obs
    return jnp.concatenate([obs, jnp.full((*obs.shape[:-1], 1), flag, obs.dtype)], -1)

  def inputs(params, obs, action, flag=0.0):
    if config.state_only:
      return feat(params, obs, flag)
    a = networks.one_hot_actions(action, spec.action) * (1.0 - flag)
    return jnp.concatenate([feat(params, obs, flag), a], -1)

  def g(params, obs, action, flag=0.0):
    return disc_apply(params, inputs(params, obs, action, flag))

  def shaped(params, rows: Transitions, flag=0.0):
    """AIRL's f(s, a, s'); `flag=1`: the absorbing state's self-transition."""
    h_s = disc_apply(params, feat(params, rows.obs, flag), method="potential")
    if config.absorbing:
      # A terminal transition enters the absorbing state and bootstraps from it.
      term = rows.terminated[:, None] if flag == 0.0 else jnp.ones_like(rows.terminated)[:, None]
      nxt = jnp.where(term, feat(params, jnp.zeros_like(rows.next_obs), 1.0),
                      feat(params, rows.next_obs))
      disc_t = jnp.full(rows.reward.shape, gamma, jnp.float32)
    else:
      nxt = feat(params, rows.next_obs)
      disc_t = gamma * (1.0 - rows.terminated.astype(jnp.float32))
    h_next = disc_apply(params, nxt, method="potential")
    return losses.airl_potential_shaping(g(params, rows.obs, rows.action, flag), h_s, h_next,
                                         disc_t)

  def absorbing_twin(rows: Transitions) -> Transitions:
    """Absorbing-to-absorbing rows standing for the terminal rows' futures (zero
    observation, the flag set by the callers, no `log π`: the policy has no choice)."""
    zero = jnp.zeros_like(rows.obs)
    return rows._replace(obs=zero, next_obs=zero, log_prob=jnp.zeros_like(rows.log_prob),
                         terminated=jnp.zeros_like(rows.terminated))

  def expert_log_pi(policy_params, rows: Transitions):
    action = rows.action
    if not spec.action.discrete:
      lo, hi = jnp.asarray(spec.action.low), jnp.asarray(spec.action.high)
      m = config.action_margin * (hi - lo) / 2
      action = jnp.clip(action, lo + m, hi - m)
    return jax.lax.stop_gradient(inner.policy_apply(policy_params, rows.obs).log_prob(action))

  def logits(params, rows: Transitions, log_pi=None, flag=0.0):
    """The discriminator's logit on `rows` (AIRL: `f − log π`, with `log_pi` given)."""
    if airl:
      return losses.airl_logits(shaped(params, rows, flag), log_pi)
    return g(params, rows.obs, rows.action, flag)

  def side_logits(params, rows: Transitions, log_pi):
    """Logits of a batch and, with `absorbing`, of its terminal rows' absorbing twins
    (with their validity mask)."""
    out = logits(params, rows, log_pi)
    if not config.absorbing:
      return out, None
    twin = absorbing_twin(rows)
    twin_out = logits(params, twin, twin.log_prob, flag=1.0)
    return jnp.concatenate([out, twin_out]), jnp.concatenate([jnp.ones_like(rows.terminated),
                                                      rows.terminated])

  def disc_loss(params, expert: Transitions, policy: Transitions, expert_lp, key):
    le, we = side_logits(params, expert, expert_lp)
    lp, wp = side_logits(params, policy, policy.log_prob)
    (le_loss, lp_loss), _ = losses.gail_discriminator_loss(le, lp, expert_where=we,
                                                           policy_where=wp)
    def mean(x, w):
      return x.mean() if w is None else x.sum() / jnp.maximum(w.sum(), 1)
    loss = mean(le_loss, we) + mean(lp_loss, wp)
    le, lp = le[:expert.reward.shape[0]], lp[:policy.reward.shape[0]]
    gp = jnp.zeros(())
    if config.grad_penalty:
      xe = inputs(params, expert.obs, expert.action)
      xp = inputs(params, policy.obs, policy.action)
      gp = losses.gradient_penalty(lambda x: disc_apply(params, x), xe, xp, key,
                                   target=config.grad_penalty_target).mean()
      loss = loss + config.grad_penalty * gp
    return loss, {"disc/loss": loss, "disc/grad_penalty": gp,
                  "disc/expert_accuracy": jnp.mean(le > 0),
                  "disc/policy_accuracy": jnp.mean(lp < 0)}

  def policy_reward(params, rows: Transitions, flag=0.0):
    if airl:
      r = losses.airl_reward(shaped(params, rows, flag), rows.log_prob)
    else:
      logit = logits(params, rows, rows.log_prob, flag)
      r = losses.gail_reward(logit) if config.gail_reward == "softplus" else logit
    if config.absorbing and flag == 0.0:
      # A terminal step also earns the absorbing state's reward forever after.
      r_abs = policy_reward(params, absorbing_twin(rows), flag=1.0)
      r = r + jnp.where(rows.terminated, gamma / (1.0 - gamma) * r_abs, 0.0)
    return r

  def init(key) -> AdversarialState:
    k_ppo, k_disc = jax.random.split(key)
    disc = disc_init(k_disc)
    p_state = inner.init(k_ppo)
    if not config.disc_replay:
      return AdversarialState(p_state, disc, tx.init(net_params(disc)))
    _, batch = jax.eval_shape(inner.collect, p_state)
    row = jax.eval_shape(ppo.to_transitions, batch)
    replay = jax.tree.map(lambda x: jnp.zeros((config.disc_replay, *x.shape[1:]), x.dtype), row)
    return AdversarialState(p_state, disc, tx.init(net_params(disc)), replay,
                            jnp.zeros((), jnp.int32))

  def remember(replay: Transitions, count, rows: Transitions):
    """`rows` written into the ring buffer after the `count` rows written before."""
    idx = (count + jnp.arange(rows.reward.shape[0])) % config.disc_replay
    replay = jax.tree.map(lambda buf, x: buf.at[idx].set(x), replay, rows)
    return replay, count + rows.reward.shape[0]

  def sample_policy(rows, replay, count, key):
    if not config.disc_replay:
      return sample_rows(rows, key, config.disc_batch_size)
    # Uniform over the rows written so far (the buffer fills from row 0).
    filled = jnp.minimum(count, config.disc_replay)
    idx = jax.random.randint(key, (config.disc_batch_size,), 0, filled)
    return jax.tree.map(lambda x: x[idx], replay)

  def start(key, demos: Transitions):
    del demos
    k_init, key = jax.random.split(key)
    return init(k_init), jax.random.split(key, config.ppo.num_iterations)

  def train(key, demos: Transitions):
    state, keys = start(key, demos)
    return jax.lax.scan(lambda s, k: body(s, k, demos), state, keys)

  def body(state: AdversarialState, key, demos: Transitions):
    p_state, batch = inner.collect(state.ppo)
    rows = ppo.to_transitions(batch)
    replay, count = state.replay, state.replay_count
    if config.disc_replay:
      replay, count = remember(replay, count, rows)

    def disc_step(carry, key):
      disc, opt = carry
      k_e, k_p, k_gp = jax.random.split(key, 3)
      expert = sample_rows(demos, k_e, config.disc_batch_size)
      policy = sample_policy(rows, replay, count, k_p)
      lp = expert_log_pi(p_state.params.policy, expert) if airl else None
      if normalize:  # the statistics first take in this step's rows (module doc)
        disc = {**disc, "norm": running_norm_update(
            disc["norm"], jnp.concatenate([expert.obs, policy.obs]))}
      net = net_params(disc)
      grads, m = jax.grad(lambda n: disc_loss(with_net(disc, n), expert, policy, lp, k_gp),
                          has_aux=True)(net)
      updates, opt = tx.update(grads, opt, net)
      return (with_net(disc, optax.apply_updates(net, updates)), opt), m

    (disc, opt), dm = jax.lax.scan(disc_step, (state.disc, state.disc_opt),
                                   jax.random.split(key, config.disc_updates))
    rewards = jax.lax.stop_gradient(policy_reward(disc, rows)).reshape(batch.reward.shape)
    p_state, pm = inner.update(p_state, batch, rewards)
    metrics = {**jax.tree.map(jnp.mean, dm), **{f"ppo/{k}": v for k, v in pm.items()},
               **ppo.episode_metrics(batch), "learned_reward": rewards.mean(),
               "recent_return": jnp.nanmean(p_state.episodes.last),
               "env_steps": p_state.step}
    if config.absorbing:
      # r_abs, the learned reward of staying absorbed (a terminal step earns γ/(1 − γ)
      # of it), and the rollout's fraction of terminal rows: their absorbing twins (with
      # the expert's) are the only rows that train it.
      first = jax.tree.map(lambda x: x[:1], rows)
      metrics["absorbing_reward"] = policy_reward(disc, absorbing_twin(first), flag=1.0)[0]
      metrics["terminal_fraction"] = rows.terminated.astype(jnp.float32).mean()
    return AdversarialState(p_state, disc, opt, replay, count), metrics

  def learned_reward(disc_params, obs, action, next_obs):
    if airl:
      return g(disc_params, obs, action)
    rows = Transitions(obs, action, jnp.zeros(obs.shape[:1]), next_obs,
                       jnp.zeros(obs.shape[:1], bool), jnp.zeros(obs.shape[:1], bool),
                       jnp.zeros(obs.shape[:1]), jnp.ones(obs.shape[:1]))
    return policy_reward(disc_params, rows)

  def generator_reward(disc_params, rows: Transitions):
    """The reward the generator's PPO is trained on: AIRL `f − log π` (with the stored
    `log π`), GAIL `−log(1 − D)` or the logit; with `absorbing`, a terminated row also
    earns `γ/(1 − γ)·r_abs`."""
    return policy_reward(disc_params, rows)

  return Adversarial(config, inner, init, train, learned_reward, logits, start, body,
                     generator_reward)
