"""Offline RL learners: IQL, TD3+BC, AWAC, Inverse Preference Learning (IPL) and a
reward-model + IQL baseline, as pure, seed-vmappable `lax.scan` programs.

Every `make_<algo>(config, spec)` returns a `Learner` of pure functions:

    learner = offline.make_iql(offline.IQLConfig(num_steps=5_000), env.spec)
    state, metrics = jax.jit(learner.train)(key, transitions)      # one seed
    states, metrics = jax.jit(jax.vmap(learner.train, in_axes=(0, None)))(keys, transitions)
    returns = offline.evaluate(learner, state, env, key, num_episodes=10)

`train(key, data)` initialises the state (`init`) and runs `config.num_steps`
gradient steps (`update`) in one `lax.scan`, each on a batch drawn uniformly
*with replacement* from the rows whose `weight > 0` (`sample`). Padding rows
(weight 0) are never drawn, so datasets padded to one size compile once, and
`jax.vmap` runs over seeds or over equally padded datasets. `update` also masks
any weight-0 rows it is given and zeroes their inputs first, so NaN/inf in
padding never reaches a loss or a gradient. `metrics` is a dict of `/`-named
scalars per step, stacked by the scan (`[num_steps]` each).

Algorithms (the objectives are `irl_jax.losses.offline_rl`; `τ` the expectile,
`β` an inverse temperature, `Q̄` the Polyak-averaged target critics,
`discount_t = γ(1 − terminated)`, so time-limit truncations bootstrap):

- IQL (Kostrikov et al. 2022), per step V → actor → Q → target:
  `L_V = E|τ − 1(u<0)|u²`, `u = min_e Q̄_e(s,a) − V(s)`;
  `L_π = −E[min(exp(β(min_e Q̄_e(s,a) − V(s))), w_max) log π(a|s)]` (new V);
  `L_Q = E Σ_e (r + discount_t V(s') − Q_e(s,a))²` (new V). Discrete and continuous.
- TD3+BC (Fujimoto & Gu 2021): deterministic actor `π(s) = mid + half·tanh(MLP(s))`
  (a tanh-bounded MLP: TD3's actor, here for a general box); target policy
  smoothing `a' = clip(π̄(s') + clip(σ·half·ε, ±c·half), low, high)`;
  `L_Q = E Σ_e (r + discount_t min_e Q̄_e(s',a') − Q_e(s,a))²`; every `policy_freq`
  steps the actor loss `−λ Q_1(s,π(s)) + ‖π(s) − a‖²`, `λ = α/mean|Q_1|`, and the
  Polyak updates of both targets. States are normalised by the dataset's mean and
  standard deviation (`+1e-3`), stored in the state. Continuous only.
- AWAC (Nair et al. 2020): SAC-style backup with the current policy,
  `y = r + discount_t (min_e Q̄_e(s',a') − α_ent log π(a'|s'))`, `a' ∼ π(·|s')` (the
  exact expectation over actions when discrete); actor
  `−E[min(exp((min_e Q_e(s,a) − V(s))/λ), w_max) log π(a|s)]` with
  `V(s) = E_{a'∼π} min_e Q_e(s,a')` (`num_value_samples` samples; exact when
  discrete). Discrete and continuous.
- IPL (Hejna & Sadigh 2023): no reward network. The critic is trained only from
  preferences through its implied reward `r̂ = Q(s,a) − discount_t·clip(V(s'), ±c)`,
  `c = 1/(λ(1−γ))`: `L_Q = BCE(Σ_k r̂(σ²_k) − Σ_k r̂(σ¹_k), y) + λ(½E_pref r̂² +
  ½E_unlabelled r̂²)` (label `y = 1` ⇔ the *second* segment is preferred). IPL-IQL
  takes `V` from IQL's expectile value network and IQL's actor; IPL-AWAC takes
  `V(s') = mean_e Q̄_e(s', a')`, `a' ∼ π(·|s')`, and AWAC's actor. Both train V and
  the actor on the preference segments' transitions together with the unlabelled
  ones.
- Reward model + IQL: a Bradley–Terry reward network `r_ψ(s,a)` fitted to the same
  preferences, the transitions relabelled with it, then IQL.

Networks (`irl_jax.control.networks`, ReLU MLPs of `config.hidden` sizes, the
papers' 256×256 by default): `Policy` (categorical or tanh-squashed Gaussian; its
mode is the deterministic action), twin `QNet` critics, `ValueNet`, TD3's
`TanhActor`. Optimisers: Adam per network (optionally after global-norm clipping).

Reconstructed rather than taken from a paper's equations (each also noted where it
is defined): IPL's value/actor data (segments ∪ unlabelled), the critic-mean of its
preference loss and the default `λ = 0.5`; AWAC's default entropy weight 0 in the
backup; TD3+BC's BC term in `[−1, 1]` action units for boxes other than `[−1, 1]`.

Action conventions: discrete actions are int `[B]`; continuous ones `[B, *shape]`
within the spec's box. Squashed-Gaussian policies cannot score an action on the
box's edge (`atanh(±1)` is infinite), so data actions are moved inside the box by
`1e-3` of its half-width before `log π(a|s)` is taken.

Dimensions: `N` dataset rows, `B` batch, `P` preference pairs (`P_b` drawn per
step), `L` steps per segment, `E` critics, `O` flat observation size, `A` action
dimension (continuous) or number of actions (discrete), `M` action samples.

References:
  Kostrikov, Nair & Levine 2022, "Offline Reinforcement Learning with Implicit
  Q-Learning". Fujimoto & Gu 2021, "A Minimalist Approach to Offline
  Reinforcement Learning". Nair, Gupta, Dalal & Levine 2020, "AWAC: Accelerating
  Online Reinforcement Learning with Offline Datasets". Hejna & Sadigh 2023,
  "Inverse Preference Learning: Preference-based RL without a Reward Function".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from irl_jax import losses
from irl_jax.control import envs, networks
from irl_jax.control.envs import ActionSpec, EnvSpec
from irl_jax.control.types import Transitions, as_config

__all__ = [
    "AWACConfig",
    "IPLBatch",
    "IPLConfig",
    "IQLConfig",
    "Learner",
    "ObsNorm",
    "OfflineState",
    "Preferences",
    "RewardModelConfig",
    "RewardModelIQLConfig",
    "RewardModelIQLState",
    "TD3BCConfig",
    "TanhActor",
    "evaluate",
    "make_awac",
    "make_ipl_awac",
    "make_ipl_iql",
    "make_iql",
    "make_reward_model",
    "make_reward_model_iql",
    "make_td3_bc",
    "relabel",
    "sample_indices",
    "segment_returns",
]

# Data actions are moved this fraction of the half-width inside the box before a
# squashed Gaussian scores them (its log-density is -inf on the edge).
_EDGE = 1e-3
_OBS_STD_EPS = 1e-3  # TD3+BC's normaliser epsilon


# --- data types ------------------------------------------------------------------------


class Preferences(NamedTuple):
  """`P` labelled pairs of segments of `L` steps (index 0 / 1 of axis 1 is σ¹ / σ²).

  obs, next_obs: `[P, 2, L, *obs_shape]` float; `next_obs` the true successors.
  action: `[P, 2, L]` int (discrete) or `[P, 2, L, *action_shape]` float.
  terminated: `[P, 2, L]` bool, an absorbing state was reached (no bootstrap).
  mask: `[P, 2, L]` bool or float, 1 for real steps (shorter segments are padded);
    a pair with no real step is padding and is never drawn.
  label: `[P]` float in `[0, 1]`, the probability that the *second* segment is
    preferred (1: σ² ≻ σ¹; 0.5 a tie).
  """
  obs: jax.Array
  action: jax.Array
  next_obs: jax.Array
  terminated: jax.Array
  mask: jax.Array
  label: jax.Array


class IPLBatch(NamedTuple):
  """One IPL step's data: `P_b` preference pairs and (optionally) `B` unlabelled
  transitions (None: the value and actor train on the segments only)."""
  preferences: Preferences
  transitions: Transitions | None


class ObsNorm(NamedTuple):
  """Observation statistics: networks see `(obs − mean) / std` (flattened, `[O]`)."""
  mean: jax.Array
  std: jax.Array


class OfflineState(NamedTuple):
  """A learner's whole state, a pytree (vmappable over seeds; checkpoint it as is).

  params: the online networks by role (`"actor"`, `"critic"`, `"value"`, `"reward"`),
    each an `nnx.State` of `nnx.Param` leaves. target: the Polyak-averaged copies
    (`"critic"`; TD3+BC also `"actor"`). opt_state: optax states by role.
  obs_norm: the observation statistics (identity unless `normalize_obs`).
  key: the PRNG key of the updates' own randomness. step: int32, updates so far.
  """
  params: dict
  target: dict
  opt_state: dict
  obs_norm: ObsNorm
  key: jax.Array
  step: jax.Array


class RewardModelIQLState(NamedTuple):
  """The reward-model + IQL baseline's state: the Bradley–Terry reward model's, the
  relabelled rewards' scale (`r_ψ / reward_std` is what IQL sees), and IQL's."""
  reward_model: OfflineState
  reward_std: jax.Array
  iql: OfflineState


class Learner(NamedTuple):
  """Pure functions of one offline algorithm (all jit-able and vmappable).

  init(key, *data) -> state: fresh networks; with data, the observation statistics.
  sample(key, *data) -> batch: one batch drawn from rows (pairs) with weight (mask) > 0.
  update(state, batch) -> (state, metrics): one gradient step; metrics `/`-named scalars.
  train(key, *data) -> (state, metrics): `init`, then `num_steps` of sample + update
    in one `lax.scan`; metrics stacked `[num_steps]`.
  act(state, obs) -> action: the deterministic action (policy mode, or the TD3 actor)
    for one observation `[*obs_shape]` or a batch `[B, *obs_shape]`.
  reward(state, obs, action, next_obs, terminated, key=None) -> r: `[...]` the
    learned reward of IPL (the implied `r̂`, averaged over the critics) and of the
    reward model (which ignores `next_obs`, `terminated`); None for the others.
  apply: the networks' pure functions by role (`"actor"`, `"critic"`, `"value"`,
    `"reward"`): `apply[role](state.params[role], x, ...)` on *normalised, flattened*
    observation features `x = (obs − obs_norm.mean) / obs_norm.std` (`[..., O]`);
    the critic returns `[..., E, A]` (discrete) or `[..., E]` given actions `[..., A]`
    (reward model + IQL: the parameters are under `state.iql` and `state.reward_model`).
  data: IQL/TD3+BC/AWAC take `(transitions,)`; IPL takes `(preferences,
  transitions=None)`; the reward model `(preferences,)`; reward model + IQL
  `(preferences, transitions)`.
  start(key, *data) -> (state, keys), body(state, key, *data) -> (state, metrics):
    `train`'s scan (`train` computes `lax.scan(body, *start(key, *data))`, with its
    sampler built once outside the loop), for `irl_jax.control.runner.run`
    (checkpointed, resumable runs), which checks the data first
    (`start.check_data`). None for reward model + IQL, which is two scans: run the
    reward model's, relabel with `relabel`, then IQL's.
  """
  name: str
  config: Any
  spec: EnvSpec
  init: Callable
  sample: Callable
  update: Callable
  train: Callable
  act: Callable
  reward: Callable | None = None
  apply: Mapping[str, Callable] | None = None
  start: Callable | None = None
  body: Callable | None = None


# --- configs -----------------------------------------------------------------------------


def _fail(config, field, message):
  raise ValueError(f"{type(config).__name__}.{field} {message}")


def _check_common(c) -> None:
  for field in ("num_steps", "batch_size", "pref_batch_size"):
    v = getattr(c, field, 1)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
      _fail(c, field, f"must be a positive integer, got {v!r}")
  if hasattr(c, "gamma") and not 0.0 <= c.gamma < 1.0:
    _fail(c, "gamma", f"must lie in [0, 1), got {c.gamma!r}")
  if hasattr(c, "polyak") and not 0.0 < c.polyak <= 1.0:
    _fail(c, "polyak", f"must lie in (0, 1], got {c.polyak!r}")
  for field in ("actor_lr", "critic_lr", "value_lr", "lr"):
    if hasattr(c, field) and not getattr(c, field) > 0:
      _fail(c, field, f"must be positive, got {getattr(c, field)!r}")
  if not c.hidden or any(int(h) < 1 for h in c.hidden):
    _fail(c, "hidden", f"must be a non-empty sequence of positive sizes, got {c.hidden!r}")
  if hasattr(c, "num_critics") and c.num_critics < 1:
    _fail(c, "num_critics", f"must be at least 1, got {c.num_critics!r}")
  if c.max_grad_norm < 0:
    _fail(c, "max_grad_norm", f"must be >= 0 (0: no clipping), got {c.max_grad_norm!r}")


def _check_awr(c) -> None:
  if hasattr(c, "expectile") and not 0.0 < c.expectile < 1.0:
    _fail(c, "expectile", f"must lie in (0, 1), got {c.expectile!r}")
  if hasattr(c, "beta") and not c.beta >= 0:
    _fail(c, "beta", f"must be >= 0, got {c.beta!r}")
  if hasattr(c, "temperature") and not c.temperature > 0:
    _fail(c, "temperature", f"must be positive, got {c.temperature!r}")
  if not c.max_weight > 0:
    _fail(c, "max_weight", f"must be positive, got {c.max_weight!r}")


def _check_awac(c) -> None:
  if c.entropy_alpha < 0:
    _fail(c, "entropy_alpha", f"must be >= 0, got {c.entropy_alpha!r}")
  if c.num_value_samples < 1:
    _fail(c, "num_value_samples", f"must be at least 1, got {c.num_value_samples!r}")


@dataclasses.dataclass(frozen=True)
class IQLConfig:
  """Implicit Q-Learning.

  expectile `τ ∈ (0, 1)` and inverse temperature `beta` (β): (0.7, 3) on
  locomotion, (0.9, 10) on maze-like tasks; `max_weight` the AWR weight clip.
  `reward_scale`, `reward_shift`: the critic regresses on `scale·r + shift`
  (IQL scales locomotion rewards by `1000/(max return − min return)`).
  `train_actor=False` skips the actor (policy evaluation of the data's policy
  when `expectile = 0.5`). `polyak`: the target critics' step size.
  """
  num_steps: int = 100_000
  batch_size: int = 256
  gamma: float = 0.99
  expectile: float = 0.7
  beta: float = 3.0
  max_weight: float = 100.0
  polyak: float = 0.005
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  value_lr: float = 3e-4
  hidden: tuple[int, ...] = (256, 256)
  num_critics: int = 2
  train_actor: bool = True
  reward_scale: float = 1.0
  reward_shift: float = 0.0
  normalize_obs: bool = False
  max_grad_norm: float = 0.0

  def __post_init__(self):
    _check_common(self)
    _check_awr(self)


@dataclasses.dataclass(frozen=True)
class TD3BCConfig:
  """TD3+BC (continuous actions only).

  `alpha` (α = 2.5) balances `Q` against the BC term; `policy_noise` (σ) and
  `noise_clip` (c) are fractions of the action box's half-width (TD3's 0.2 and
  0.5 of `max_action`); the actor and both targets update every `policy_freq`
  steps. The BC term is measured with actions rescaled to `[−1, 1]` (the paper's
  MuJoCo boxes), so its weight does not depend on the box's units.
  """
  num_steps: int = 100_000
  batch_size: int = 256
  gamma: float = 0.99
  alpha: float = 2.5
  policy_noise: float = 0.2
  noise_clip: float = 0.5
  policy_freq: int = 2
  polyak: float = 0.005
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  hidden: tuple[int, ...] = (256, 256)
  num_critics: int = 2
  reward_scale: float = 1.0
  reward_shift: float = 0.0
  normalize_obs: bool = True
  max_grad_norm: float = 0.0

  def __post_init__(self):
    _check_common(self)
    if not self.alpha >= 0:
      _fail(self, "alpha", f"must be >= 0, got {self.alpha!r}")
    if self.policy_noise < 0:
      _fail(self, "policy_noise", f"must be >= 0, got {self.policy_noise!r}")
    if self.noise_clip < 0:
      _fail(self, "noise_clip", f"must be >= 0, got {self.noise_clip!r}")
    if not isinstance(self.policy_freq, (int, np.integer)) or self.policy_freq < 1:
      _fail(self, "policy_freq", f"must be a positive integer, got {self.policy_freq!r}")


@dataclasses.dataclass(frozen=True)
class AWACConfig:
  """AWAC. The actor weight is `exp(A/temperature)` (λ = `temperature`, β = 1/λ),
  clipped at `max_weight`; `entropy_alpha` the SAC entropy weight in the critic
  backup (0: AWAC's offline setting, reconstructed from the reference code's
  defaults); `num_value_samples` policy samples estimate `V(s)` (AWAC uses 1)."""
  num_steps: int = 100_000
  batch_size: int = 256
  gamma: float = 0.99
  temperature: float = 1.0
  max_weight: float = 100.0
  entropy_alpha: float = 0.0
  num_value_samples: int = 1
  polyak: float = 0.005
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  hidden: tuple[int, ...] = (256, 256)
  num_critics: int = 2
  reward_scale: float = 1.0
  reward_shift: float = 0.0
  normalize_obs: bool = False
  max_grad_norm: float = 0.0

  def __post_init__(self):
    _check_common(self)
    _check_awr(self)
    _check_awac(self)


@dataclasses.dataclass(frozen=True)
class IPLConfig:
  """Inverse Preference Learning, for both `make_ipl_iql` and `make_ipl_awac`.

  `pref_batch_size` pairs and `batch_size` unlabelled transitions per step.
  `reward_reg` (λ) weighs `½E_pref r̂² + ½E_unlabelled r̂²`; with
  `clip_value_target` the target `V(s')` is clipped to `±1/(λ(1−γ))`. IPL-IQL
  reads `expectile`, `beta` (3 ≈ 1/0.333, the AWR temperature 0.333 of the SPEC
  setting) and `max_weight`; IPL-AWAC reads `temperature`, `entropy_alpha` (only
  in the `V(s')` of the implied reward) and `num_value_samples`. `λ = 0.5` is a
  reconstruction (the paper's per-task values were not available here).
  """
  num_steps: int = 100_000
  batch_size: int = 256
  pref_batch_size: int = 16
  gamma: float = 0.99
  reward_reg: float = 0.5
  clip_value_target: bool = True
  expectile: float = 0.7
  beta: float = 3.0
  temperature: float = 1.0
  max_weight: float = 100.0
  entropy_alpha: float = 0.0
  num_value_samples: int = 1
  polyak: float = 0.005
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  value_lr: float = 3e-4
  hidden: tuple[int, ...] = (256, 256)
  num_critics: int = 2
  normalize_obs: bool = False
  max_grad_norm: float = 0.0

  def __post_init__(self):
    _check_common(self)
    _check_awr(self)
    _check_awac(self)
    if not self.reward_reg >= 0:
      _fail(self, "reward_reg", f"must be >= 0, got {self.reward_reg!r}")


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  """A Bradley–Terry reward network `r_ψ(s, a)` (an MLP of the observation and the
  action's features) fitted on `pref_batch_size` pairs per step by Adam (`lr`)."""
  num_steps: int = 10_000
  pref_batch_size: int = 64
  lr: float = 3e-4
  hidden: tuple[int, ...] = (256, 256)
  normalize_obs: bool = False
  max_grad_norm: float = 0.0

  def __post_init__(self):
    _check_common(self)


@dataclasses.dataclass(frozen=True)
class RewardModelIQLConfig:
  """The baseline: fit `reward_model`, relabel the transitions with `r_ψ(s, a)`
  (divided by its standard deviation over the data when `normalize_rewards`: the
  Bradley–Terry scale is arbitrary and IQL's `β` is not), then run `iql`."""
  reward_model: RewardModelConfig = RewardModelConfig()
  iql: IQLConfig = IQLConfig()
  normalize_rewards: bool = True


class TanhActor(nnx.Module):
  """TD3's deterministic actor for a box: `π(s) = mid + half · tanh(MLP(s))`, `[..., A]`,
  with `mid = (high + low)/2`, `half = (high − low)/2` (ReLU hidden layers)."""

  def __init__(self, obs_dim: int, action: ActionSpec, hidden=(256, 256), *, rngs: nnx.Rngs):
    dim = int(np.prod(action.shape))
    self.net = networks.MLP(obs_dim, hidden, dim, rngs=rngs, activation=nnx.relu)
    self.low = nnx.Variable(jnp.reshape(jnp.asarray(action.low, jnp.float32), (dim,)))
    self.high = nnx.Variable(jnp.reshape(jnp.asarray(action.high, jnp.float32), (dim,)))

  def __call__(self, obs):
    low, high = self.low[...], self.high[...]
    return (high + low) / 2 + (high - low) / 2 * jnp.tanh(self.net(obs))

  def mode(self, obs):
    return self(obs)


def _obs_dim(spec: EnvSpec) -> int:
  return int(np.prod(spec.obs_shape))


def _policy(spec, hidden):
  return networks.pure(lambda rngs: networks.Policy(_obs_dim(spec), spec.action, hidden,
                                                    rngs=rngs, activation=nnx.relu))


def _critic(spec, hidden, num_critics):
  return networks.pure(lambda rngs: networks.QNet(_obs_dim(spec), spec.action, hidden, rngs=rngs,
                                                  num_critics=num_critics, activation=nnx.relu))


def _value(spec, hidden):
  return networks.pure(lambda rngs: networks.ValueNet(_obs_dim(spec), hidden, rngs=rngs,
                                                      activation=nnx.relu))


def _optimizer(lr, max_grad_norm) -> optax.GradientTransformation:
  tx = optax.adam(lr)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), tx) if max_grad_norm else tx


def _apply_grads(tx, params, opt_state, grads):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _polyak(online, target, step_size):
  return optax.incremental_update(online, target, step_size)


def _select(pred, new, old):
  return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


# --- data handling ---------------------------------------------------------------------


def sample_indices(key, weight, batch_size: int) -> jax.Array:
  """`[batch_size]` int32 row indices drawn uniformly with replacement from the rows
  with `weight > 0` (`weight[N]`); rows with weight 0 are never drawn.

  Exact in integers: with `c = cumsum(weight > 0)` and `k ∼ U{0, …, c[-1] − 1}`, the
  first index `i` with `c[i] > k` is always a row with weight > 0, each with
  probability `1/c[-1]`. With no valid row the indices are meaningless (clamped)."""
  valid = jnp.asarray(weight) > 0
  cum = jnp.cumsum(valid.astype(jnp.int32))
  return _draw(key, cum, batch_size)


def _draw(key, cum, batch_size):
  k = jax.random.randint(key, (batch_size,), 0, jnp.maximum(cum[-1], 1))
  return jnp.minimum(jnp.searchsorted(cum, k, side="right"), cum.shape[0] - 1).astype(jnp.int32)


def _check_has_rows(fn, name, valid) -> None:
  """Raises when a concrete dataset has no valid row (a traced one cannot be checked)."""
  try:
    count = int(np.sum(np.asarray(valid)))
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return
  if count == 0:
    raise ValueError(f"{fn}: `{name}` has no row with weight > 0 (all padding).")


def _pair_valid(prefs: Preferences) -> jax.Array:
  """`[P]` bool: pairs with at least one real step."""
  return jnp.any(jnp.asarray(prefs.mask) > 0, axis=(-2, -1))


def _transition_sampler(transitions: Transitions, batch_size: int, fn: str):
  _check_has_rows(fn, "transitions.weight", jnp.asarray(transitions.weight) > 0)
  cum = jnp.cumsum((jnp.asarray(transitions.weight) > 0).astype(jnp.int32))

  def sample(key):
    idx = _draw(key, cum, batch_size)
    return jax.tree.map(lambda x: x[idx], transitions)

  return sample


def _preference_sampler(prefs: Preferences, batch_size: int, fn: str):
  valid = _pair_valid(prefs)
  _check_has_rows(fn, "preferences.mask", valid)
  cum = jnp.cumsum(valid.astype(jnp.int32))

  def sample(key):
    idx = _draw(key, cum, batch_size)
    return jax.tree.map(lambda x: x[idx], prefs)

  return sample


def _flat_obs(obs, spec: EnvSpec):
  """`[..., *obs_shape]` -> `[..., O]` float32."""
  nd = len(spec.obs_shape)
  obs = jnp.asarray(obs, jnp.float32)
  return jnp.reshape(obs, (*obs.shape[:obs.ndim - nd], -1))


def _flat_action(action, spec: EnvSpec):
  """Continuous `[..., *action_shape]` -> `[..., A]` float32; discrete unchanged (int)."""
  if spec.action.discrete:
    return jnp.asarray(action).astype(jnp.int32)
  nd = len(spec.action.shape)
  action = jnp.asarray(action, jnp.float32)
  return jnp.reshape(action, (*action.shape[:action.ndim - nd], -1))


def _unflat_action(action, spec: EnvSpec):
  if spec.action.discrete:
    return action
  return jnp.reshape(action, action.shape[:-1] + tuple(spec.action.shape))


def _identity_norm(spec) -> ObsNorm:
  dim = _obs_dim(spec)
  return ObsNorm(jnp.zeros((dim,), jnp.float32), jnp.ones((dim,), jnp.float32))


def _obs_norm(obs, valid, spec) -> ObsNorm:
  """Mean and standard deviation (+1e-3) of the valid rows of `obs[N, *obs_shape]`
  (`valid[N]`); padding rows, NaN included, do not count."""
  x = _flat_obs(obs, spec)
  valid = jnp.reshape(valid, (-1,))
  x = jnp.reshape(x, (valid.shape[0], -1))
  w = valid.astype(jnp.float32)[:, None]
  x = jnp.where(w > 0, x, 0.0)
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(x, axis=0) / n
  var = jnp.sum(w * jnp.square(x - mean), axis=0) / n
  return ObsNorm(mean, jnp.sqrt(var) + _OBS_STD_EPS)


def _features(obs, norm: ObsNorm, spec):
  return (_flat_obs(obs, spec) - norm.mean) / norm.std


def _clean(batch: Transitions) -> tuple[Transitions, jax.Array]:
  """The batch with every field of weight-0 rows zeroed (no NaN/inf from padding can
  reach a network, hence a gradient), and the `[B]` bool validity mask."""
  valid = jnp.asarray(batch.weight) > 0

  def zero(x):
    x = jnp.asarray(x)
    m = jnp.reshape(valid, valid.shape + (1,) * (x.ndim - valid.ndim))
    return jnp.where(m, x, jnp.zeros((), x.dtype))

  return jax.tree.map(zero, batch), valid


def _clean_prefs(prefs: Preferences) -> tuple[Preferences, jax.Array, jax.Array]:
  """Preferences with padded steps and pairs zeroed, the `[P, 2, L]` step mask and the
  `[P]` pair mask."""
  step = jnp.asarray(prefs.mask) > 0
  pair = jnp.any(step, axis=(-2, -1))

  def zero(x, m):
    x = jnp.asarray(x)
    m = jnp.reshape(m, m.shape + (1,) * (x.ndim - m.ndim))
    return jnp.where(m, x, jnp.zeros((), x.dtype))

  clean = Preferences(*(zero(x, step) for x in prefs[:5]), label=zero(prefs.label, pair))
  return clean, step, pair


def _inside_box(action, spec):
  """Continuous actions moved `_EDGE` of the half-width inside the box."""
  if spec.action.discrete:
    return action
  low = jnp.reshape(jnp.asarray(spec.action.low, jnp.float32), (-1,))
  high = jnp.reshape(jnp.asarray(spec.action.high, jnp.float32), (-1,))
  margin = _EDGE * (high - low) / 2
  return jnp.clip(action, low + margin, high - margin)


# --- shared pieces ---------------------------------------------------------------------


def _q_data(critic: networks.PureNet, params, x, action, spec) -> jax.Array:
  """`[E, ...]` critic values of the given actions (`x[..., O]` features)."""
  if spec.action.discrete:
    q = critic.apply(params, x)                                  # [..., E, A]
    q = jnp.take_along_axis(q, action[..., None, None], axis=-1)[..., 0]
  else:
    q = critic.apply(params, x, action)                          # [..., E]
  return jnp.moveaxis(q, -1, 0)


def _policy_value(policy: networks.PureNet, actor_params, critic: networks.PureNet,
                  critic_params, x, key, spec, *, num_samples: int, entropy_alpha: float,
                  reduce: Callable):
  """`E_{a∼π(·|s)}[reduce_e Q_e(s, a) − α log π(a|s)]`, `[...]`: the exact expectation for
  discrete actions, a mean over `num_samples` reparameterised samples otherwise.
  `reduce` folds the critic axis (`min` for AWAC, `mean` for IPL-AWAC)."""
  dist = policy.apply(actor_params, x)
  if spec.action.discrete:
    q = reduce(critic.apply(critic_params, x), axis=-2)          # [..., A]
    log_p = jax.nn.log_softmax(dist.logits, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (q - entropy_alpha * log_p), axis=-1)
  a, log_p = dist.sample_and_log_prob(seed=key, sample_shape=(num_samples,))
  q = reduce(critic.apply(critic_params, jnp.broadcast_to(x, (num_samples, *x.shape)), a),
             axis=-1)                                            # [M, ...]
  return jnp.mean(q - entropy_alpha * log_p, axis=0)


def _stats(prefix, x, where) -> dict:
  """Masked mean, std, min and max of `x` as metrics (all 0 when nothing is valid)."""
  w = where.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(jnp.where(where, x, 0)) / n
  std = jnp.sqrt(jnp.sum(jnp.where(where, jnp.square(x - mean), 0)) / n)
  some = jnp.any(where)
  return {f"{prefix}/mean": mean, f"{prefix}/std": std,
          f"{prefix}/max": jnp.where(some, jnp.max(jnp.where(where, x, -jnp.inf)), 0.0),
          f"{prefix}/min": jnp.where(some, jnp.min(jnp.where(where, x, jnp.inf)), 0.0)}


def _mean(x, where):
  return losses.token_mean(x, where)


def _rewards(batch: Transitions, c) -> jax.Array:
  return c.reward_scale * jnp.asarray(batch.reward, jnp.float32) + c.reward_shift


def _discount(terminated, gamma):
  return gamma * (1.0 - jnp.asarray(terminated, jnp.float32))


def _value_step(value: networks.PureNet, tx, params, opt_state, q_target, x, where, expectile):
  """One expectile-regression step of V on `min_e Q̄_e(s,a)`."""
  def loss_fn(p):
    v = value.apply(p, x)
    return _mean(losses.iql_value_loss(q_target, v, expectile=expectile, where=where), where), v

  (loss, v), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  params, opt_state = _apply_grads(tx, params, opt_state, grads)
  return params, opt_state, {"loss/value": loss, "v/mean": _mean(v, where),
                             "grad_norm/value": optax.tree.norm(grads)}


def _awr_step(policy: networks.PureNet, tx, params, opt_state, x, action, q, v, where, *, beta,
              max_weight, loss=losses.awr_actor_loss):
  """One advantage-weighted regression step of the actor (`loss` = AWR or AWAC)."""
  def loss_fn(p):
    log_pi = policy.apply(p, x).log_prob(action)
    per, extras = loss(log_pi, q, v, beta=beta, max_weight=max_weight, where=where)
    return _mean(per, where), (extras, log_pi)

  (value, (extras, log_pi)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  params, opt_state = _apply_grads(tx, params, opt_state, grads)
  metrics = {"loss/actor": value, "actor/log_prob": _mean(log_pi, where),
             "grad_norm/actor": optax.tree.norm(grads),
             "actor/weight_clipped": _mean(
                 (extras.weights >= max_weight * (1 - 1e-6)).astype(jnp.float32), where)}
  metrics |= _stats("adv", extras.advantages, where)
  metrics |= {k: v for k, v in _stats("weight", extras.weights, where).items()
              if not k.endswith("/min")}
  return params, opt_state, metrics


def _make_learner(name, config, spec, init, make_sampler, update, act, reward=None,
                  nets=None) -> Learner:
  """Wraps per-algorithm `init`/`update` with the shared sampling and scan."""
  def sample(key, *data):
    return make_sampler(*data)(key)

  def check_data(*data):
    make_sampler(*data)  # rejects an all-padding dataset (when the data are concrete)

  def start(key, *data):
    check_data(*data)
    k_init, k_loop = jax.random.split(key)
    return init(k_init, *data), jax.random.split(k_loop, config.num_steps)

  start.check_data = check_data  # `runner.run` calls it on the concrete data, before jit

  def body(state, key, *data):
    return update(state, make_sampler(*data)(key))

  def train(key, *data):
    state, keys = start(key, *data)
    draw = make_sampler(*data)  # built once, outside the loop; `body` draws the same rows
    return jax.lax.scan(lambda s, k: update(s, draw(k)), state, keys)

  apply = {role: net.apply for role, net in (nets or {}).items()}
  return Learner(name, config, spec, init, sample, update, train, act, reward, apply,
                 start, body)


def _norm_from(config, spec, transitions) -> ObsNorm:
  if not config.normalize_obs or transitions is None:
    return _identity_norm(spec)
  return _obs_norm(transitions.obs, jnp.asarray(transitions.weight) > 0, spec)


def _policy_act(policy: networks.PureNet, spec):
  def act(state, obs):
    x = _features(obs, state.obs_norm, spec)
    return _unflat_action(policy.apply(state.params["actor"], x, method="mode"), spec)
  return act


# --- IQL -------------------------------------------------------------------------------


def make_iql(config: IQLConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """Implicit Q-Learning, discrete or continuous actions; `train(key, transitions)`.

  Per step: V by expectile regression on the target critics' minimum, the actor by
  AWR with the new V, the twin critics by TD on `r + discount_t V(s')`, then
  Polyak targets. Metrics: `loss/{value,actor,critic}`, `q/mean`, `q/target_mean`,
  `v/mean`, `adv/{mean,std,min,max}`, `weight/{mean,std,max}`,
  `actor/weight_clipped` (fraction at `max_weight`), `actor/log_prob`,
  `grad_norm/*`, `reward/mean`.
  """
  c = as_config(IQLConfig, config)
  policy, critic, value = _policy(spec, c.hidden), _critic(spec, c.hidden, c.num_critics), \
      _value(spec, c.hidden)
  tx = {"actor": _optimizer(c.actor_lr, c.max_grad_norm),
        "critic": _optimizer(c.critic_lr, c.max_grad_norm),
        "value": _optimizer(c.value_lr, c.max_grad_norm)}

  def init(key, transitions=None):
    k_a, k_c, k_v, k_s = jax.random.split(key, 4)
    params = {"actor": policy.init(k_a), "critic": critic.init(k_c), "value": value.init(k_v)}
    return OfflineState(params, {"critic": params["critic"]},
                        {k: tx[k].init(params[k]) for k in tx},
                        _norm_from(c, spec, transitions), k_s, jnp.zeros((), jnp.int32))

  def update(state, batch):
    batch, where = _clean(batch)
    x, x_next = _features(batch.obs, state.obs_norm, spec), _features(batch.next_obs,
                                                                      state.obs_norm, spec)
    action = _flat_action(batch.action, spec)
    reward, discount = _rewards(batch, c), _discount(batch.terminated, c.gamma)
    params, opt = dict(state.params), dict(state.opt_state)
    q_target = _q_data(critic, state.target["critic"], x, action, spec)       # [E, B]
    params["value"], opt["value"], metrics = _value_step(
        value, tx["value"], params["value"], opt["value"], q_target, x, where, c.expectile)
    v = value.apply(params["value"], x)
    if c.train_actor:
      params["actor"], opt["actor"], m = _awr_step(
          policy, tx["actor"], params["actor"], opt["actor"], x, _inside_box(action, spec),
          q_target, v, where, beta=c.beta, max_weight=c.max_weight)
      metrics |= m
    v_next = value.apply(params["value"], x_next)

    def critic_loss(p):
      q = _q_data(critic, p, x, action, spec)
      per = losses.iql_q_loss(q, reward, discount, v_next, where=where)
      return _mean(per, where), q

    (loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(params["critic"])
    params["critic"], opt["critic"] = _apply_grads(tx["critic"], params["critic"], opt["critic"],
                                                   grads)
    target = {"critic": _polyak(params["critic"], state.target["critic"], c.polyak)}
    metrics |= {"loss/critic": loss, "q/mean": _mean(jnp.min(q, axis=0), where),
                "q/target_mean": _mean(jnp.min(q_target, axis=0), where),
                "grad_norm/critic": optax.tree.norm(grads), "reward/mean": _mean(reward, where)}
    return state._replace(params=params, target=target, opt_state=opt,
                          step=state.step + 1), metrics

  def make_sampler(transitions):
    return _transition_sampler(transitions, c.batch_size, "iql")

  return _make_learner("iql", c, spec, init, make_sampler, update, _policy_act(policy, spec),
                       nets={"actor": policy, "critic": critic, "value": value})


# --- TD3+BC ----------------------------------------------------------------------------


def make_td3_bc(config: TD3BCConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """TD3+BC, continuous actions only; `train(key, transitions)`.

  The deterministic actor is `TanhActor` (tanh-bounded to the action box). The
  state's `obs_norm` holds the dataset's observation mean and std (+1e-3) when
  `normalize_obs` (the default). Metrics: `loss/{critic,actor}`, `actor/bc`
  (`‖π(s) − a‖²` in `[−1, 1]` units), `actor/updated` (1 on delayed actor steps),
  `q/mean`, `q/target_mean` (the backup's `min_e Q̄_e(s',a')`), `q/pi_mean`,
  `grad_norm/*`, `reward/mean`.
  """
  c = as_config(TD3BCConfig, config)
  if spec.action.discrete:
    raise ValueError(f"make_td3_bc: TD3+BC needs continuous actions, but spec.action.discrete "
                     f"is True for {spec.name!r} (use make_iql or make_awac).")
  actor = networks.pure(lambda rngs: TanhActor(_obs_dim(spec), spec.action, c.hidden, rngs=rngs))
  critic = _critic(spec, c.hidden, c.num_critics)
  tx = {"actor": _optimizer(c.actor_lr, c.max_grad_norm),
        "critic": _optimizer(c.critic_lr, c.max_grad_norm)}
  low = jnp.reshape(jnp.asarray(spec.action.low, jnp.float32), (-1,))
  high = jnp.reshape(jnp.asarray(spec.action.high, jnp.float32), (-1,))
  mid, half = (high + low) / 2, (high - low) / 2

  def init(key, transitions=None):
    k_a, k_c, k_s = jax.random.split(key, 3)
    params = {"actor": actor.init(k_a), "critic": critic.init(k_c)}
    return OfflineState(params, dict(params), {k: tx[k].init(params[k]) for k in tx},
                        _norm_from(c, spec, transitions), k_s, jnp.zeros((), jnp.int32))

  def update(state, batch):
    batch, where = _clean(batch)
    key, k_noise = jax.random.split(state.key)
    x, x_next = _features(batch.obs, state.obs_norm, spec), _features(batch.next_obs,
                                                                      state.obs_norm, spec)
    action = _flat_action(batch.action, spec)
    reward, discount = _rewards(batch, c), _discount(batch.terminated, c.gamma)
    params, opt, target = dict(state.params), dict(state.opt_state), dict(state.target)

    noise = jnp.clip(c.policy_noise * half * jax.random.normal(k_noise, action.shape),
                     -c.noise_clip * half, c.noise_clip * half)
    a_next = jnp.clip(actor.apply(target["actor"], x_next) + noise, low, high)
    q_next = jnp.min(critic.apply(target["critic"], x_next, a_next), axis=-1)   # [B]

    def critic_loss(p):
      q = _q_data(critic, p, x, action, spec)
      return _mean(losses.iql_q_loss(q, reward, discount, q_next, where=where), where), q

    (loss_c, q), grads_c = jax.value_and_grad(critic_loss, has_aux=True)(params["critic"])
    params["critic"], opt["critic"] = _apply_grads(tx["critic"], params["critic"],
                                                   opt["critic"], grads_c)

    def actor_loss(p):
      pi = actor.apply(p, x)
      q_pi = critic.apply(params["critic"], x, pi)[..., 0]   # TD3 uses the first critic
      per = losses.td3_bc_actor_loss(q_pi, (pi - mid) / half, (action - mid) / half,
                                     alpha=c.alpha, where=where)
      bc = jnp.sum(jnp.square((pi - action) / half), axis=-1)
      return _mean(per, where), (q_pi, bc)

    (loss_a, (q_pi, bc)), grads_a = jax.value_and_grad(actor_loss, has_aux=True)(params["actor"])
    new_actor, new_opt = _apply_grads(tx["actor"], params["actor"], opt["actor"], grads_a)
    delayed = (state.step + 1) % c.policy_freq == 0
    params["actor"] = _select(delayed, new_actor, params["actor"])
    opt["actor"] = _select(delayed, new_opt, opt["actor"])
    target = _select(delayed, {"actor": _polyak(params["actor"], target["actor"], c.polyak),
                               "critic": _polyak(params["critic"], target["critic"], c.polyak)},
                     target)
    metrics = {"loss/critic": loss_c, "loss/actor": loss_a, "actor/bc": _mean(bc, where),
               "actor/updated": delayed.astype(jnp.float32),
               "q/mean": _mean(jnp.min(q, axis=0), where), "q/target_mean": _mean(q_next, where),
               "q/pi_mean": _mean(q_pi, where), "grad_norm/critic": optax.tree.norm(grads_c),
               "grad_norm/actor": optax.tree.norm(grads_a), "reward/mean": _mean(reward, where)}
    return OfflineState(params, target, opt, state.obs_norm, key, state.step + 1), metrics

  def make_sampler(transitions):
    return _transition_sampler(transitions, c.batch_size, "td3_bc")

  def act(state, obs):
    x = _features(obs, state.obs_norm, spec)
    return _unflat_action(actor.apply(state.params["actor"], x), spec)

  return _make_learner("td3_bc", c, spec, init, make_sampler, update, act,
                       nets={"actor": actor, "critic": critic})


# --- AWAC --------------------------------------------------------------------------------


def make_awac(config: AWACConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """AWAC, discrete or continuous actions; `train(key, transitions)`.

  Per step (all losses from the pre-step parameters, as in the reference code):
  the twin critics by TD on the SAC-style backup with the current policy, the
  actor by `awac_actor_loss` with `β = 1/temperature` and `V(s) = E_π min_e Q_e`,
  then Polyak targets. AWAC's batch-softmax weight normalisation is not applied.
  Metrics: as IQL's, with `v/mean` the policy value `V(s)` and `q/target_mean` the
  backup's next-state value.
  """
  c = as_config(AWACConfig, config)
  policy, critic = _policy(spec, c.hidden), _critic(spec, c.hidden, c.num_critics)
  tx = {"actor": _optimizer(c.actor_lr, c.max_grad_norm),
        "critic": _optimizer(c.critic_lr, c.max_grad_norm)}

  def init(key, transitions=None):
    k_a, k_c, k_s = jax.random.split(key, 3)
    params = {"actor": policy.init(k_a), "critic": critic.init(k_c)}
    return OfflineState(params, {"critic": params["critic"]},
                        {k: tx[k].init(params[k]) for k in tx},
                        _norm_from(c, spec, transitions), k_s, jnp.zeros((), jnp.int32))

  def update(state, batch):
    batch, where = _clean(batch)
    key, k_next, k_v = jax.random.split(state.key, 3)
    x, x_next = _features(batch.obs, state.obs_norm, spec), _features(batch.next_obs,
                                                                      state.obs_norm, spec)
    action = _flat_action(batch.action, spec)
    reward, discount = _rewards(batch, c), _discount(batch.terminated, c.gamma)
    params, opt = dict(state.params), dict(state.opt_state)
    frozen_actor = jax.lax.stop_gradient(params["actor"])
    v_next = _policy_value(policy, frozen_actor, critic, state.target["critic"], x_next, k_next,
                           spec, num_samples=1, entropy_alpha=c.entropy_alpha, reduce=jnp.min)
    v = _policy_value(policy, frozen_actor, critic, params["critic"], x, k_v, spec,
                      num_samples=c.num_value_samples, entropy_alpha=0.0, reduce=jnp.min)
    q_data = _q_data(critic, params["critic"], x, action, spec)

    params["actor"], opt["actor"], metrics = _awr_step(
        policy, tx["actor"], params["actor"], opt["actor"], x, _inside_box(action, spec),
        q_data, v, where, beta=1.0 / c.temperature, max_weight=c.max_weight,
        loss=losses.awac_actor_loss)

    def critic_loss(p):
      q = _q_data(critic, p, x, action, spec)
      return _mean(losses.iql_q_loss(q, reward, discount, v_next, where=where), where), q

    (loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(params["critic"])
    params["critic"], opt["critic"] = _apply_grads(tx["critic"], params["critic"], opt["critic"],
                                                   grads)
    target = {"critic": _polyak(params["critic"], state.target["critic"], c.polyak)}
    metrics |= {"loss/critic": loss, "q/mean": _mean(jnp.min(q, axis=0), where),
                "q/target_mean": _mean(v_next, where), "v/mean": _mean(v, where),
                "grad_norm/critic": optax.tree.norm(grads), "reward/mean": _mean(reward, where)}
    return OfflineState(params, target, opt, state.obs_norm, key, state.step + 1), metrics

  def make_sampler(transitions):
    return _transition_sampler(transitions, c.batch_size, "awac")

  return _make_learner("awac", c, spec, init, make_sampler, update, _policy_act(policy, spec),
                       nets={"actor": policy, "critic": critic})


# --- Inverse Preference Learning -----------------------------------------------------


def _segment_transitions(prefs: Preferences, step_mask, spec) -> Transitions:
  """The preference segments' steps as `[P·2·L]` transitions (reward 0; weight = mask)."""
  n = step_mask.size
  obs = jnp.reshape(prefs.obs, (n, *spec.obs_shape))
  next_obs = jnp.reshape(prefs.next_obs, (n, *spec.obs_shape))
  action = jnp.reshape(prefs.action, (n, *jnp.shape(prefs.action)[3:]))
  flat = jnp.reshape(step_mask, (n,))
  zeros = jnp.zeros((n,), jnp.float32)
  return Transitions(obs, action, zeros, next_obs, jnp.reshape(prefs.terminated, (n,)),
                     jnp.zeros((n,), bool), zeros + jnp.nan, flat.astype(jnp.float32))


def _concat(a: Transitions, b: Transitions | None) -> Transitions:
  if b is None:
    return a
  return jax.tree.map(lambda x, y: jnp.concatenate([jnp.asarray(x),
                                                    jnp.asarray(y).astype(jnp.asarray(x).dtype)]),
                      a, b)


def _make_ipl(c: IPLConfig, spec: EnvSpec, variant: str) -> Learner:
  """IPL-IQL (`variant="iql"`) or IPL-AWAC (`"awac"`); see `make_ipl_iql`."""
  policy, critic = _policy(spec, c.hidden), _critic(spec, c.hidden, c.num_critics)
  value = _value(spec, c.hidden) if variant == "iql" else None
  tx = {"actor": _optimizer(c.actor_lr, c.max_grad_norm),
        "critic": _optimizer(c.critic_lr, c.max_grad_norm)}
  if value is not None:
    tx["value"] = _optimizer(c.value_lr, c.max_grad_norm)
  clip = 1.0 / (c.reward_reg * (1.0 - c.gamma)) if c.clip_value_target and c.reward_reg else None

  def init(key, preferences=None, transitions=None):
    k_a, k_c, k_v, k_s = jax.random.split(key, 4)
    params = {"actor": policy.init(k_a), "critic": critic.init(k_c)}
    if value is not None:
      params["value"] = value.init(k_v)
    if not c.normalize_obs or (preferences is None and transitions is None):
      norm = _identity_norm(spec)
    elif transitions is not None:
      norm = _obs_norm(transitions.obs, jnp.asarray(transitions.weight) > 0, spec)
    else:
      norm = _obs_norm(preferences.obs, jnp.asarray(preferences.mask) > 0, spec)
    return OfflineState(params, {"critic": params["critic"]},
                        {k: tx[k].init(params[k]) for k in tx}, norm, k_s,
                        jnp.zeros((), jnp.int32))

  def update(state, batch: IPLBatch):
    prefs, step_mask, pair_mask = _clean_prefs(batch.preferences)
    unl, unl_mask = (None, None) if batch.transitions is None else _clean(batch.transitions)
    key, k_next_p, k_next_u, k_v = jax.random.split(state.key, 4)
    norm = state.obs_norm
    params, opt = dict(state.params), dict(state.opt_state)
    seg = _segment_transitions(prefs, step_mask, spec)
    both = _concat(seg, unl)                       # value / actor data: segments + unlabelled
    w_all = both.weight > 0
    x_all = _features(both.obs, norm, spec)
    a_all = _flat_action(both.action, spec)
    x_p, xn_p = _features(prefs.obs, norm, spec), _features(prefs.next_obs, norm, spec)
    a_p = _flat_action(prefs.action, spec)                          # [P, 2, L(, A)]
    d_p = _discount(prefs.terminated, c.gamma)
    if unl is not None:
      x_u, xn_u = _features(unl.obs, norm, spec), _features(unl.next_obs, norm, spec)
      a_u, d_u = _flat_action(unl.action, spec), _discount(unl.terminated, c.gamma)
    metrics = {}

    if variant == "iql":
      q_target = _q_data(critic, state.target["critic"], x_all, a_all, spec)
      params["value"], opt["value"], metrics = _value_step(
          value, tx["value"], params["value"], opt["value"], q_target, x_all, w_all, c.expectile)
      v_all = value.apply(params["value"], x_all)
      params["actor"], opt["actor"], m = _awr_step(
          policy, tx["actor"], params["actor"], opt["actor"], x_all, _inside_box(a_all, spec),
          q_target, v_all, w_all, beta=c.beta, max_weight=c.max_weight)
      v_next_p = value.apply(params["value"], xn_p)                   # [P, 2, L]
      v_next_u = None if unl is None else value.apply(params["value"], xn_u)
    else:
      frozen_actor = jax.lax.stop_gradient(params["actor"])

      def next_value(xn, k):
        return _policy_value(policy, frozen_actor, critic, state.target["critic"], xn, k, spec,
                             num_samples=c.num_value_samples, entropy_alpha=c.entropy_alpha,
                             reduce=jnp.mean)

      v_next_p = next_value(xn_p, k_next_p)
      v_next_u = None if unl is None else next_value(xn_u, k_next_u)
      v_all = _policy_value(policy, frozen_actor, critic, params["critic"], x_all, k_v, spec,
                            num_samples=c.num_value_samples, entropy_alpha=0.0, reduce=jnp.min)
      q_all = _q_data(critic, params["critic"], x_all, a_all, spec)
      params["actor"], opt["actor"], m = _awr_step(
          policy, tx["actor"], params["actor"], opt["actor"], x_all, _inside_box(a_all, spec),
          q_all, v_all, w_all, beta=1.0 / c.temperature, max_weight=c.max_weight,
          loss=losses.awac_actor_loss)
      metrics["v/mean"] = _mean(v_all, w_all)
    metrics |= m

    num_critics = c.num_critics
    pref_where = jnp.broadcast_to(step_mask, (num_critics, *step_mask.shape))

    def critic_loss(p):
      q_p = _q_data(critic, p, x_p, a_p, spec)                       # [E, P, 2, L]
      r_p = losses.ipl_implied_rewards(q_p, v_next_p, d_p, value_clip=clip)
      r_p = jnp.where(step_mask, r_p, 0.0)
      per, extras = losses.ipl_preference_loss(r_p[:, :, 0], r_p[:, :, 1], prefs.label,
                                               where=pair_mask)       # [E, P]
      pref = losses.token_mean(per, jnp.broadcast_to(pair_mask, per.shape))
      if unl is None:
        r_u, reg = None, losses.ipl_regulariser(r_p, weight=c.reward_reg, pref_where=pref_where)
      else:
        q_u = _q_data(critic, p, x_u, a_u, spec)                     # [E, B]
        r_u = losses.ipl_implied_rewards(q_u, v_next_u, d_u, value_clip=clip)
        reg = losses.ipl_regulariser(
            r_p, r_u, weight=c.reward_reg, pref_where=pref_where,
            unlabelled_where=jnp.broadcast_to(unl_mask, r_u.shape))
      return pref + reg, (pref, reg, r_p, r_u, extras.logits, q_p)

    (loss, (pref, reg, r_p, r_u, logits, q_p)), grads = jax.value_and_grad(
        critic_loss, has_aux=True)(params["critic"])
    params["critic"], opt["critic"] = _apply_grads(tx["critic"], params["critic"], opt["critic"],
                                                   grads)
    target = {"critic": _polyak(params["critic"], state.target["critic"], c.polyak)}
    logit = jnp.mean(logits, axis=0)
    metrics |= {
        "loss/critic": loss, "loss/preference": pref, "loss/reward_reg": reg,
        "pref/accuracy": _accuracy(jnp.stack([jnp.zeros_like(logit), logit], axis=-1),
                                   jnp.asarray(prefs.label, jnp.float32), pair_mask),
        "reward/implied_pref_mean": losses.token_mean(r_p, pref_where),
        "q/mean": losses.token_mean(jnp.min(q_p, axis=0), step_mask),
        "grad_norm/critic": optax.tree.norm(grads)}
    if variant == "iql":
      metrics["q/target_mean"] = _mean(jnp.min(q_target, axis=0), w_all)
    if r_u is not None:
      metrics["reward/implied_unlabelled_mean"] = losses.token_mean(
          r_u, jnp.broadcast_to(unl_mask, r_u.shape))
    return OfflineState(params, target, opt, norm, key, state.step + 1), metrics

  def reward(state, obs, action, next_obs, terminated, key=None):
    """The implied reward `mean_e r̂_e`; IPL-AWAC's `V(s')` samples with `key`
    (default `jax.random.key(0)`) when actions are continuous."""
    norm = state.obs_norm
    x, xn = _features(obs, norm, spec), _features(next_obs, norm, spec)
    if variant == "iql":
      v_next = value.apply(state.params["value"], xn)
    else:
      v_next = _policy_value(policy, state.params["actor"], critic, state.target["critic"], xn,
                             jax.random.key(0) if key is None else key, spec,
                             num_samples=c.num_value_samples, entropy_alpha=c.entropy_alpha,
                             reduce=jnp.mean)
    q = _q_data(critic, state.params["critic"], x, _flat_action(action, spec), spec)
    r = losses.ipl_implied_rewards(q, v_next, _discount(terminated, c.gamma), value_clip=clip)
    return jnp.mean(r, axis=0)

  def make_sampler(preferences, transitions=None):
    draw_p = _preference_sampler(preferences, c.pref_batch_size, f"ipl_{variant}")
    draw_t = (None if transitions is None
              else _transition_sampler(transitions, c.batch_size, f"ipl_{variant}"))

    def sample(key):
      k_p, k_t = jax.random.split(key)
      return IPLBatch(draw_p(k_p), None if draw_t is None else draw_t(k_t))

    return sample

  nets = {"actor": policy, "critic": critic} | ({} if value is None else {"value": value})
  return _make_learner(f"ipl_{variant}", c, spec, init, make_sampler, update,
                       _policy_act(policy, spec), reward, nets)


def make_ipl_iql(config: IPLConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """IPL-IQL: `train(key, preferences, transitions=None)`; discrete or continuous.

  Per step, on `P_b` pairs and `B` unlabelled transitions: IQL's expectile V on
  `min_e Q̄_e(s,a)` and AWR actor (on the segments' steps and the unlabelled
  transitions together); then the critics on the IPL loss with implied rewards
  `r̂ = Q_e(s,a) − γ(1−d)·clip(V(s'), ±1/(λ(1−γ)))` (V the new value network,
  stop-gradient), averaged over the critics; then Polyak targets. The critics see
  no TD loss and no reward: all reward information comes from the preference
  labels. Metrics: IQL's, plus `loss/preference`, `loss/reward_reg`,
  `pref/accuracy` (the batch's implied-return ranking vs non-tie labels),
  `reward/implied_{pref,unlabelled}_mean`.

  Reconstructed (the exact equations of the paper's code were not available):
  the value and actor data (segments ∪ unlabelled, as here), the critic-mean of
  the preference loss, and the default `λ`.
  """
  c = as_config(IPLConfig, config)
  return _make_ipl(c, spec, "iql")


def make_ipl_awac(config: IPLConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """IPL-AWAC: as `make_ipl_iql`, with no value network: the implied rewards' target is
  `V(s') = E_{a'∼π}[mean_e Q̄_e(s', a') − α_ent log π(a'|s')]` (`num_value_samples`
  samples; exact when discrete) and the actor is AWAC's (`β = 1/temperature`,
  `V(s) = E_π min_e Q_e(s, ·)`). Reconstructed as `make_ipl_iql`'s note says."""
  c = as_config(IPLConfig, config)
  return _make_ipl(c, spec, "awac")


# --- reward model + IQL baseline ----------------------------------------------------


def make_reward_model(config: RewardModelConfig | Mapping | None, spec: EnvSpec) -> Learner:
  """A Bradley–Terry reward network `r_ψ(s, a)`; `train(key, preferences)`.

  Per pair, with segment returns `R^j = Σ_k mask_k r_ψ(σ^j_k)`, the soft-label
  Bradley–Terry loss (the library's `bradley_terry`, `−log σ(r_c − r_r)`):
  `ℓ = y·BT(R², R¹) + (1 − y)·BT(R¹, R²)`. Metrics: `loss/reward`,
  `pref/accuracy`, `reward/mean`, `grad_norm/reward`. `learner.reward(state, obs,
  action)` gives `r_ψ` (`relabel` writes it into transitions); `act` raises (a
  reward model has no policy).
  """
  c = as_config(RewardModelConfig, config)
  in_dim = _obs_dim(spec) + (int(spec.action.num_actions) if spec.action.discrete
                             else int(np.prod(spec.action.shape)))
  net = networks.pure(
      lambda rngs: networks.MLP(in_dim, c.hidden, 1, rngs=rngs, activation=nnx.relu))
  tx = _optimizer(c.lr, c.max_grad_norm)

  def reward_of(params, norm, obs, action):
    x = _features(obs, norm, spec)
    a = networks.one_hot_actions(action, spec.action)
    return net.apply(params, jnp.concatenate([x, a], axis=-1))[..., 0]

  def reward(state, obs, action, next_obs=None, terminated=None, key=None):
    del next_obs, terminated, key
    return reward_of(state.params["reward"], state.obs_norm, obs, action)

  def init(key, preferences=None):
    k_r, k_s = jax.random.split(key)
    params = {"reward": net.init(k_r)}
    norm = (_obs_norm(preferences.obs, jnp.asarray(preferences.mask) > 0, spec)
            if c.normalize_obs and preferences is not None else _identity_norm(spec))
    return OfflineState(params, {}, {"reward": tx.init(params["reward"])}, norm, k_s,
                        jnp.zeros((), jnp.int32))

  def update(state, prefs: Preferences):
    prefs, step_mask, pair_mask = _clean_prefs(prefs)
    label = jnp.asarray(prefs.label, jnp.float32)

    def loss_fn(p):
      r = jnp.where(step_mask, reward_of(p, state.obs_norm, prefs.obs, prefs.action), 0.0)
      ret = jnp.sum(r, axis=-1)                                     # [P, 2]
      per = (label * losses.bradley_terry(ret[:, 1], ret[:, 0])
             + (1 - label) * losses.bradley_terry(ret[:, 0], ret[:, 1]))
      return _mean(per, pair_mask), (ret, r)

    (loss, (ret, r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["reward"])
    new, opt = _apply_grads(tx, state.params["reward"], state.opt_state["reward"], grads)
    metrics = {"loss/reward": loss, "pref/accuracy": _accuracy(ret, label, pair_mask),
               "reward/mean": losses.token_mean(r, step_mask),
               "grad_norm/reward": optax.tree.norm(grads)}
    return state._replace(params={"reward": new}, opt_state={"reward": opt},
                          step=state.step + 1), metrics

  def make_sampler(preferences):
    return _preference_sampler(preferences, c.pref_batch_size, "reward_model")

  def act(state, obs):
    raise TypeError("a reward model has no policy; use learner.reward or relabel")

  return _make_learner("reward_model", c, spec, init, make_sampler, update, act, reward,
                       nets={"reward": net})


def _accuracy(returns, label, pair_mask):
  """Fraction of valid, non-tie pairs whose `[P, 2]` returns rank as the label says."""
  decided = jnp.logical_and(pair_mask, label != 0.5)
  correct = ((returns[:, 1] - returns[:, 0]) > 0) == (label > 0.5)
  return _mean(correct.astype(jnp.float32), decided)


def segment_returns(learner: Learner, state, preferences: Preferences, *, key=None) -> jax.Array:
  """`[P, 2]` returns `Σ_k mask_k r(σ^j_k)` of both segments under a learner's learned
  reward (IPL's implied reward or the reward model's); ranks segments as the
  labels would (`[:, 1] > [:, 0]` ⇔ the second is preferred)."""
  if learner.reward is None:
    raise ValueError(f"segment_returns: {learner.name!r} learns no reward")
  prefs, step_mask, _ = _clean_prefs(preferences)
  r = learner.reward(state, prefs.obs, prefs.action, prefs.next_obs, prefs.terminated, key=key)
  return jnp.sum(jnp.where(step_mask, r, 0.0), axis=-1)


def relabel(learner: Learner, state: OfflineState, transitions: Transitions, *,
            scale=1.0) -> Transitions:
  """`transitions` with `reward = learner.reward(...) · scale` (weight-0 rows get 0)."""
  if learner.reward is None:
    raise ValueError(f"relabel: {learner.name!r} learns no reward")
  clean, valid = _clean(transitions)
  r = learner.reward(state, clean.obs, clean.action, clean.next_obs, clean.terminated) * scale
  return transitions._replace(reward=jnp.where(valid, r, 0.0).astype(jnp.float32))


def make_reward_model_iql(config: RewardModelIQLConfig | Mapping | None,
                          spec: EnvSpec) -> Learner:
  """The IPL paper's baseline: a Bradley–Terry reward model, then IQL on the
  relabelled transitions; `train(key, preferences, transitions)`.

  `train` fits the reward model for `reward_model.num_steps` steps, relabels the
  transitions (divided by the relabelled rewards' std over the valid rows when
  `normalize_rewards`), then runs `iql.num_steps` IQL steps. Its metrics hold
  `reward_model/*` entries of length `reward_model.num_steps` and `iql/*`
  entries of length `iql.num_steps`. `update(state, transitions)` is one IQL step
  on a batch relabelled with the (frozen) reward model; `sample` draws
  transitions. State: `RewardModelIQLState`.
  """
  c = as_config(RewardModelIQLConfig, config)
  rm = make_reward_model(c.reward_model, spec)
  iql = make_iql(c.iql, spec)

  def init(key, preferences=None, transitions=None):
    k_r, k_q = jax.random.split(key)
    return RewardModelIQLState(rm.init(k_r, preferences), jnp.ones((), jnp.float32),
                               iql.init(k_q, transitions))

  def update(state, batch: Transitions):
    batch = relabel(rm, state.reward_model, batch, scale=1.0 / state.reward_std)
    new, metrics = iql.update(state.iql, batch)
    return state._replace(iql=new), metrics

  def sample(key, preferences, transitions):
    del preferences
    return iql.sample(key, transitions)

  def train(key, preferences, transitions):
    k_r, k_q = jax.random.split(key)
    rm_state, rm_metrics = rm.train(k_r, preferences)
    if c.normalize_rewards:
      clean, valid = _clean(transitions)
      r = rm.reward(rm_state, clean.obs, clean.action)
      n = jnp.maximum(jnp.sum(valid), 1)
      mean = jnp.sum(jnp.where(valid, r, 0)) / n
      std = jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(r - mean), 0)) / n)
      std = jnp.maximum(std, 1e-6)
    else:
      std = jnp.ones((), jnp.float32)
    relabelled = relabel(rm, rm_state, transitions, scale=1.0 / std)
    iql_state, iql_metrics = iql.train(k_q, relabelled)
    metrics = ({f"reward_model/{k}": v for k, v in rm_metrics.items()}
               | {f"iql/{k}": v for k, v in iql_metrics.items()})
    return RewardModelIQLState(rm_state, std, iql_state), metrics

  def act(state, obs):
    return iql.act(state.iql, obs)

  def reward(state, obs, action, next_obs=None, terminated=None, key=None):
    """The rewards IQL was trained on: `r_ψ(s, a) / reward_std`."""
    return rm.reward(state.reward_model, obs, action) / state.reward_std

  # Parameters: `state.iql.params[role]`, `state.reward_model.params["reward"]`.
  return Learner("reward_model_iql", c, spec, init, sample, update, train, act, reward,
                 {**iql.apply, **rm.apply})


# --- evaluation ------------------------------------------------------------------------


def evaluate(learner: Learner, state, env: envs.Env, key, num_episodes: int = 10) -> jax.Array:
  """Undiscounted returns `[num_episodes]` of the learner's deterministic action
  (`learner.act`) over full episodes (`envs.episode_returns`); jit-able."""
  return envs.episode_returns(env, lambda k, obs: learner.act(state, obs), key, num_episodes)

