"""Offline-RL objectives paired with IRL on the control side: IQL, AWR/AWAC,
TD3+BC and Inverse Preference Learning (IPL).

All functions are pure functions of arrays (no networks): the caller evaluates
its critics, value and policy networks and passes the results. Per-transition
losses are returned per example, `[B]`, zero where `where` is false; the caller
reduces (e.g. `reductions.token_mean(loss, where)`).

Implicit Q-Learning (IQL), with `u = min_i Q̄_i(s,a) − V(s)` over the target
critics `Q̄`:

    L_V = E[ |τ − 1(u < 0)| · u² ]                        (expectile regression)
    L_Q = E[ (r + γ(1 − d) V(s') − Q(s,a))² ]            (V(s') a stop-gradient target)
    L_π = −E[ min(exp(β (Q̄(s,a) − V(s))), w_max) · log π(a|s) ]   (AWR; weight stop-gradient)

Defaults: `(τ, β) = (0.7, 3)` on locomotion, `(0.9, 10)` on maze-like tasks
(AntMaze); `w_max = 100`. Here `β` is an *inverse* temperature, `exp(β·A)`
(IQL's convention), unlike `dpo.advantage_weighted_steps`, which uses
`exp(A/β)`.

AWAC uses the same advantage-weighted actor with `A = Q(s,a) − V(s)`,
`V(s) = E_{a'∼π} Q(s,a')` estimated by the caller (`awac_actor_loss`).

TD3+BC actor, with `λ = α / mean_batch |Q(s, π(s))|` (a stop-gradient
normaliser):

    L_π = E[ −λ · Q(s, π(s)) + ‖π(s) − a‖² ],   α = 2.5

IPL (no reward network): the reward implied by the critic is
`r̂(s,a) = Q(s,a) − γ V(s')`, and for two segments `σ¹, σ²` of `K` steps with
`y = 1` ⇔ `σ²` is preferred

    logit = Σ_k r̂(σ²_k) − Σ_k r̂(σ¹_k),   L_p = BCEWithLogits(logit, y)
    L_r = λ · ( ½ E_pref[r̂²] + ½ E_unlabelled[r̂²] )

with `V(s')` a target clipped to `±1 / (λ(1 − γ))`, the range of values the
`λ`-regularised rewards allow.

Conventions (rlax): `q_tm1 = Q(s_{t−1}, a_{t−1})`, `v_tm1 = V(s_{t−1})`,
`r_t`, `discount_t = γ(1 − d_t)` (zero at a true terminal, `γ` on a time-limit
truncation), `v_t = V(s_t)`, the next state's value.

Dimensions: `B` transitions (or preference pairs), `E` ensemble critics,
`K` steps per segment, `A` action dimension.

References:
  Kostrikov, Nair & Levine 2022, "Offline Reinforcement Learning with Implicit
  Q-Learning". Peng et al. 2019, "Advantage-Weighted Regression". Nair et al.
  2020, "AWAC: Accelerating Online Reinforcement Learning with Offline
  Datasets". Fujimoto & Gu 2021, "A Minimalist Approach to Offline
  Reinforcement Learning". Hejna & Sadigh 2023, "Inverse Preference Learning:
  Preference-based RL without a Reward Function".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.losses import _checks
from irl_jax.losses.reductions import masked_sum_count

# --- shared argument handling --------------------------------------------------


def _batch(fn, name, x) -> int:
  _checks.check_rank(fn, name, x, 1, "[B]")
  return jnp.shape(x)[0]


def _check_critic(fn, name, q, batch) -> None:
  """`q` is `[B]` or an ensemble `[E, B]`."""
  shape = tuple(jnp.shape(q))
  if len(shape) not in (1, 2) or shape[-1] != batch:
    raise ValueError(
        f"{fn}: `{name}` must have shape [B] or [E, B] with B = {batch}, got {shape}."
    )


def _mask(fn, where, batch) -> jax.Array:
  if where is None:
    return jnp.ones((batch,), bool)
  return _checks.as_mask("where", fn, where, (batch,))


def _fill(x, mask) -> jax.Array:
  """`x` with masked slots replaced by 0 (so NaN/inf there never reach a gradient)."""
  return jnp.where(mask, x, 0)


def _min_critic(q) -> jax.Array:
  return jnp.min(q, axis=0) if q.ndim == 2 else q


def _expectile(u, expectile) -> jax.Array:
  return jnp.where(u < 0, 1 - expectile, expectile) * jnp.square(u)


# --- IQL -------------------------------------------------------------------------


def expectile_loss(diff, *, expectile: float) -> jax.Array:
  """Asymmetric squared loss `|τ − 1(u < 0)| · u²`, element-wise, same shape as `diff`.

  Positive `u` weigh `τ`, negative `u` weigh `1 − τ`; `τ = 0.5` is half the
  squared error. Minimising `E[ℓ(X − m)]` over `m` gives the `τ`-expectile of `X`.

  Args:
    diff: `u`, any shape (IQL: `u = Q̄(s,a) − V(s)`).
    expectile: `τ ∈ [0, 1]`.

  Returns:
    float32 (float64 under x64) losses of `diff`'s shape.
  """
  fn = "expectile_loss"
  _checks.check_scalar_range(fn, "expectile", expectile, 0.0, 1.0)
  return _expectile(_checks.as_float("diff", fn, diff), expectile)


def iql_value_loss(
    q_target, v_tm1, *, expectile: float = 0.7, where=None, stop_target_gradient: bool = True
) -> jax.Array:
  """IQL value loss per transition: `|τ − 1(u < 0)| · u²`, `u = min_i Q̄_i(s,a) − V(s)`, `[B]`.

  Args:
    q_target: `[B]` or `[E, B]` target-critic values `Q̄_i(s,a)` of the data
      actions; the minimum over the ensemble axis `E` is taken.
    v_tm1: `[B]` values `V(s)`.
    expectile: `τ ∈ [0, 1]`; 0.7 on locomotion, 0.9 on maze-like tasks.
    where: optional `[B]` bool, valid transitions.
    stop_target_gradient: stop gradients into `q_target` (default; the target
      critics are not trained by this loss).

  Returns:
    `[B]` losses, zero where masked.
  """
  fn = "iql_value_loss"
  batch = _batch(fn, "v_tm1", v_tm1)
  _check_critic(fn, "q_target", q_target, batch)
  _checks.check_scalar_range(fn, "expectile", expectile, 0.0, 1.0)
  mask = _mask(fn, where, batch)
  dtype = _checks.compute_dtype(q_target, v_tm1)
  q = _fill(_checks.as_float("q_target", fn, q_target, dtype), mask)
  v = _fill(_checks.as_float("v_tm1", fn, v_tm1, dtype), mask)
  if stop_target_gradient:
    q = jax.lax.stop_gradient(q)
  return jnp.where(mask, _expectile(_min_critic(q) - v, expectile), 0)


def iql_q_loss(
    q_tm1, r_t, discount_t, v_t, *, where=None, stop_target_gradient: bool = True
) -> jax.Array:
  """IQL critic loss per transition: `Σ_i (r_t + discount_t · V(s_t) − Q_i(s,a))²`, `[B]`.

  With an ensemble `q_tm1[E, B]` the squared errors are *summed* over the
  critics (as in the reference implementation, `(q1 − y)² + (q2 − y)²`), so
  each critic receives the gradient of its own regression; divide by `E` for
  the per-critic mean.

  Args:
    q_tm1: `[B]` or `[E, B]` critic values `Q_i(s_{t−1}, a_{t−1})`.
    r_t: `[B]` rewards.
    discount_t: scalar or `[B]`, `γ(1 − d_t)`.
    v_t: `[B]` next-state values `V(s_t)` (from the value network, not a max
      over actions: this is what keeps IQL in-sample).
    where: optional `[B]` bool, valid transitions.
    stop_target_gradient: stop gradients into `v_t` (default; `V` is trained
      by `iql_value_loss` only). It affects `v_t` only; `r_t` and
      `discount_t` are never stopped.

  Returns:
    `[B]` losses, zero where masked.
  """
  fn = "iql_q_loss"
  batch = _batch(fn, "r_t", r_t)
  _check_critic(fn, "q_tm1", q_tm1, batch)
  _checks.check_same_shape(fn, r_t=r_t, v_t=v_t)
  if tuple(jnp.shape(discount_t)) not in ((), (batch,)):
    raise ValueError(
        f"{fn}: `discount_t` must be a scalar or [{batch}], got {tuple(jnp.shape(discount_t))}."
    )
  mask = _mask(fn, where, batch)
  # The discount (often a Python float) does not decide the dtype.
  dtype = _checks.compute_dtype(q_tm1, r_t, v_t)
  q = _fill(_checks.as_float("q_tm1", fn, q_tm1, dtype), mask)
  r = _fill(_checks.as_float("r_t", fn, r_t, dtype), mask)
  d = _checks.as_float("discount_t", fn, discount_t, dtype)
  d = _fill(d, mask) if d.ndim else d
  v = _fill(_checks.as_float("v_t", fn, v_t, dtype), mask)
  if stop_target_gradient:
    v = jax.lax.stop_gradient(v)
  errors = jnp.square(r + d * v - q)
  if errors.ndim == 2:
    errors = jnp.sum(errors, axis=0)
  return jnp.where(mask, errors, 0)


# --- advantage-weighted actors (AWR / IQL, AWAC) ---------------------------------


class AWRExtras(NamedTuple):
  """Diagnostics of `awr_actor_loss` / `awac_actor_loss`, each `[B]`, zero where masked.

  Attributes:
    weights: `min(exp(β·A), w_max)`, the (stop-gradient) regression weights.
    advantages: `A = min_i Q_i(s,a) − V(s)` (stop-gradient).
  """

  weights: jax.Array
  advantages: jax.Array


def _advantage_weighted(fn, log_pi, q, v, q_name, v_name, beta, max_weight, where):
  batch = _batch(fn, "log_pi", log_pi)
  _check_critic(fn, q_name, q, batch)
  if tuple(jnp.shape(v)) != (batch,):
    raise ValueError(f"{fn}: `{v_name}` has shape {tuple(jnp.shape(v))}, expected ({batch},).")
  _checks.check_scalar_range(fn, "beta", beta, 0.0, float("inf"))
  _checks.check_scalar_range(fn, "max_weight", max_weight, 1e-30, float("inf"))
  mask = _mask(fn, where, batch)
  dtype = _checks.compute_dtype(log_pi, q, v)
  logp = _fill(_checks.as_float("log_pi", fn, log_pi, dtype), mask)
  q = _fill(_checks.as_float(q_name, fn, q, dtype), mask)
  v = _fill(_checks.as_float(v_name, fn, v, dtype), mask)
  adv = jax.lax.stop_gradient(_min_critic(q) - v)
  # min(exp(x), w) = exp(min(x, log w)): no overflow for large advantages.
  weights = jnp.where(mask, jnp.exp(jnp.minimum(beta * adv, jnp.log(max_weight))), 0)
  weights = weights.astype(dtype)
  loss = jnp.where(mask, -weights * logp, 0)
  return loss, AWRExtras(weights=weights, advantages=jnp.where(mask, adv, 0))


def awr_actor_loss(
    log_pi, q_target, v, *, beta: float, max_weight: float = 100.0, where=None
) -> tuple[jax.Array, AWRExtras]:
  """Advantage-weighted regression actor (IQL's policy extraction), per transition:

      ℓ = −min(exp(β (min_i Q̄_i(s,a) − V(s))), w_max) · log π(a|s)

  The weight is always a stop-gradient: gradients flow into `log_pi` only.

  Args:
    log_pi: `[B]` `log π(a|s)` of the data actions.
    q_target: `[B]` or `[E, B]` target-critic values of the data actions;
      the minimum over `E` is taken.
    v: `[B]` `V(s)`.
    beta: inverse temperature `β ≥ 0` (3 on locomotion, 10 on maze-like
      tasks); `β = 0` is behaviour cloning.
    max_weight: `w_max > 0`, the weight clip (100 in IQL).
    where: optional `[B]` bool, valid transitions.

  Returns:
    `(loss [B], AWRExtras)`, zero where masked.
  """
  return _advantage_weighted(
      "awr_actor_loss", log_pi, q_target, v, "q_target", "v", beta, max_weight, where
  )


def awac_actor_loss(
    log_pi, q_tm1, v_tm1, *, beta: float, max_weight: float = 100.0, where=None
) -> tuple[jax.Array, AWRExtras]:
  """AWAC actor: `awr_actor_loss` with `A = Q(s,a) − V(s)`, `V(s) = E_{a'∼π} Q(s,a')`.

  Identical computation to `awr_actor_loss`; only the value baseline differs:
  the caller estimates `V(s)` from the critic under the current policy (e.g.
  `Q(s, a')` with `a' ∼ π(·|s)`, or a mean over samples) instead of an
  expectile value network. AWAC writes the weight `exp(A/λ)`: pass
  `beta = 1/λ`. AWAC's batch-softmax weight normalisation is not applied.

  Args:
    log_pi: `[B]` `log π(a|s)` of the data actions.
    q_tm1: `[B]` or `[E, B]` critic values of the data actions (min over `E`).
    v_tm1: `[B]` `V(s) = E_{a'∼π} Q(s,a')`, supplied by the caller.
    beta: inverse temperature `β = 1/λ ≥ 0`.
    max_weight: `w_max > 0`, the weight clip.
    where: optional `[B]` bool, valid transitions.

  Returns:
    `(loss [B], AWRExtras)`, zero where masked.
  """
  return _advantage_weighted(
      "awac_actor_loss", log_pi, q_tm1, v_tm1, "q_tm1", "v_tm1", beta, max_weight, where
  )


# --- TD3+BC ------------------------------------------------------------------------


def td3_bc_actor_loss(q_pi, policy_actions, data_actions, *, alpha: float = 2.5, where=None):
  """TD3+BC actor loss per transition: `−λ · Q(s, π(s)) + ‖π(s) − a‖²`, `[B]`.

  `λ = α / mean|Q(s, π(s))|`, where the mean is the masked mean of `|q_pi|`
  over the batch passed in (valid entries only) and is a stop-gradient, so
  `∂ℓ/∂q_pi = −λ`. Because `λ` depends on the whole batch, the mean of this
  `[B]` output over the valid entries is the paper's loss; a batch split
  into micro-batches gets one normaliser per micro-batch. The normaliser is
  floored at 1e-6, so an all-zero `Q` gives a finite loss and finite gradients.

  The behaviour-cloning term is the squared norm, summed over action
  dimensions as in the paper's equation; the reference code's
  `F.mse_loss(pi, a)` also averages over the `A` action dimensions, which
  equals this loss with the BC term divided by `A`.

  Args:
    q_pi: `[B]` `Q(s, π(s))` (the first critic in TD3).
    policy_actions: `[B, A]` `π(s)`.
    data_actions: `[B, A]` dataset actions `a`.
    alpha: `α ≥ 0` (2.5 in TD3+BC).
    where: optional `[B]` bool, valid transitions.

  Returns:
    `[B]` losses, zero where masked.
  """
  fn = "td3_bc_actor_loss"
  batch = _batch(fn, "q_pi", q_pi)
  _checks.check_rank(fn, "policy_actions", policy_actions, 2, "[B, A]")
  _checks.check_same_shape(fn, policy_actions=policy_actions, data_actions=data_actions)
  if jnp.shape(policy_actions)[0] != batch:
    raise ValueError(
        f"{fn}: `policy_actions` has shape {tuple(jnp.shape(policy_actions))}, "
        f"expected ({batch}, A) to match q_pi {tuple(jnp.shape(q_pi))}."
    )
  _checks.check_scalar_range(fn, "alpha", alpha, 0.0, float("inf"))
  mask = _mask(fn, where, batch)
  dtype = _checks.compute_dtype(q_pi, policy_actions, data_actions)
  q = _fill(_checks.as_float("q_pi", fn, q_pi, dtype), mask)
  pi = _checks.as_float("policy_actions", fn, policy_actions, dtype)
  a = _checks.as_float("data_actions", fn, data_actions, dtype)
  pi, a = jnp.where(mask[:, None], pi, 0), jnp.where(mask[:, None], a, 0)
  mean_abs = jax.lax.stop_gradient(masked_sum_count(jnp.abs(q), mask).mean())
  # Floored so that an all-zero Q cannot make λ overflow the policy's gradient.
  lam = alpha / jnp.maximum(mean_abs, 1e-6)
  bc = jnp.sum(jnp.square(pi - a), axis=-1)
  return jnp.where(mask, -lam * q + bc, 0)


# --- Inverse Preference Learning -----------------------------------------------------


def ipl_implied_rewards(
    q, v_next, discount_t, *, value_clip: float | None = None, stop_target_gradient: bool = True
) -> jax.Array:
  """Rewards implied by the critic, `r̂ = Q(s,a) − discount_t · clip(V(s'), ±c)`, element-wise.

  Args:
    q: `Q(s,a)`, any shape, e.g. segments `[B, K]` or an ensemble `[E, B, K]`.
    v_next: `V(s')`, `q`'s shape or broadcastable to it (e.g. one value
      network `[B, K]` shared by an ensemble of critics).
    discount_t: `γ(1 − d)`, a scalar or broadcastable to `q`'s shape.
    value_clip: `c > 0` or None (no clip). IPL clips the target to
      `c = 1 / (λ(1 − γ))` with `λ` the `ipl_regulariser` weight.
    stop_target_gradient: stop gradients into `v_next` (default). IPL's
      choice here is the caller's; the clip (gradient 0 outside `±c`) is
      applied either way.

  Returns:
    `r̂` with `q`'s shape, float32 (float64 under x64).
  """
  fn = "ipl_implied_rewards"
  q_shape = tuple(jnp.shape(q))
  for name, x in (("v_next", v_next), ("discount_t", discount_t)):
    shape = tuple(jnp.shape(x))
    try:
      ok = jnp.broadcast_shapes(shape, q_shape) == q_shape
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(f"{fn}: `{name}` has shape {shape}, not broadcastable to q {q_shape}.")
  if value_clip is not None:
    _checks.check_scalar_range(fn, "value_clip", value_clip, 1e-30, float("inf"))
  dtype = _checks.compute_dtype(q, v_next)
  qf = _checks.as_float("q", fn, q, dtype)
  v = _checks.as_float("v_next", fn, v_next, dtype)
  d = _checks.as_float("discount_t", fn, discount_t, dtype)
  if value_clip is not None:
    v = jnp.clip(v, -value_clip, value_clip)
  if stop_target_gradient:
    v = jax.lax.stop_gradient(v)
  return qf - d * v


class IPLExtras(NamedTuple):
  """Diagnostics of `ipl_preference_loss`, each `[..., B]`, zero where masked.

  Attributes:
    logits: `Σ_k r̂(σ²_k) − Σ_k r̂(σ¹_k)`, the log-odds that `σ²` is preferred.
    returns_1: `Σ_k r̂(σ¹_k)`.
    returns_2: `Σ_k r̂(σ²_k)`.
  """

  logits: jax.Array
  returns_1: jax.Array
  returns_2: jax.Array


def ipl_preference_loss(rewards_1, rewards_2, labels, *, where=None) -> tuple[jax.Array, IPLExtras]:
  """IPL preference loss per pair: `BCEWithLogits(Σ_k r̂²_k − Σ_k r̂¹_k, y)`, `[..., B]`.

      ℓ = −y log σ(logit) − (1 − y) log σ(−logit)
        = y · softplus(−logit) + (1 − y) · softplus(logit)

  Swapping the segments and replacing `y` by `1 − y` leaves `ℓ` unchanged.

  Args:
    rewards_1: `[..., B, K]` implied rewards of the first segments (e.g.
      `ipl_implied_rewards`; a leading ensemble axis `E` is kept).
    rewards_2: `[..., B, K]` implied rewards of the second segments.
    labels: `[B]` `y ∈ [0, 1]`, 1 when the second segment is preferred; soft
      labels allowed (0.5 for ties); bool/integer 0/1 labels are accepted.
      Checked to lie in `[0, 1]` when concrete (valid entries only).
    where: optional `[B]` bool, valid pairs. Pad shorter segments by zeroing
      their rewards.

  Returns:
    `(loss [..., B], IPLExtras)`, zero where masked.
  """
  fn = "ipl_preference_loss"
  if jnp.ndim(rewards_1) < 2:
    raise ValueError(
        f"{fn}: `rewards_1` must have shape [..., B, K], got {tuple(jnp.shape(rewards_1))}."
    )
  _checks.check_same_shape(fn, rewards_1=rewards_1, rewards_2=rewards_2)
  batch = jnp.shape(rewards_1)[-2]
  if tuple(jnp.shape(labels)) != (batch,):
    raise ValueError(
        f"{fn}: `labels` has shape {tuple(jnp.shape(labels))}, expected ({batch},) to match "
        f"rewards {tuple(jnp.shape(rewards_1))}."
    )
  mask = _mask(fn, where, batch)
  dtype = _checks.compute_dtype(rewards_1, rewards_2)
  r1 = _checks.as_float("rewards_1", fn, rewards_1, dtype)
  r2 = _checks.as_float("rewards_2", fn, rewards_2, dtype)
  y = jnp.asarray(labels)
  if _checks.is_concrete(y) and _checks.is_concrete(mask):
    valid = np.asarray(y, np.float64)[np.asarray(mask)]
    if not np.all((valid >= 0) & (valid <= 1)):
      raise ValueError(f"{fn}: `labels` must lie in [0, 1], got values outside (or NaN).")
  y = _fill(y.astype(dtype), mask)
  r1, r2 = jnp.where(mask[:, None], r1, 0), jnp.where(mask[:, None], r2, 0)
  returns_1, returns_2 = jnp.sum(r1, axis=-1), jnp.sum(r2, axis=-1)
  logits = returns_2 - returns_1
  loss = y * jax.nn.softplus(-logits) + (1 - y) * jax.nn.softplus(logits)
  return jnp.where(mask, loss, 0), IPLExtras(logits=logits, returns_1=returns_1,
                                              returns_2=returns_2)


def ipl_regulariser(
    pref_rewards,
    unlabelled_rewards=None,
    *,
    weight: float,
    pref_where=None,
    unlabelled_where=None,
) -> jax.Array:
  """IPL's reward regulariser, a scalar: `λ · (½ E_pref[r̂²] + ½ E_unlabelled[r̂²])`.

  Each set is reduced to its own mean over all its (valid) entries before the
  0.5/0.5 mix, so the two sets weigh equally whatever their sizes. A leading
  ensemble axis is averaged like the batch (consistent with a mean of the
  `[E, B]` preference loss). Without unlabelled data the regulariser is
  `λ · E_pref[r̂²]`. A set with no valid entry gives its half to the other (so
  an empty padded batch never halves the regulariser); both empty give 0.

  Args:
    pref_rewards: implied rewards `r̂` on the preference segments, any shape
      (e.g. both segments stacked, `[2, E, B, K]`).
    unlabelled_rewards: implied rewards on unlabelled transitions, any shape,
      or None.
    weight: `λ ≥ 0`.
    pref_where: optional bool mask of `pref_rewards`' shape.
    unlabelled_where: optional bool mask of `unlabelled_rewards`' shape.

  Returns:
    A scalar.
  """
  fn = "ipl_regulariser"
  _checks.check_scalar_range(fn, "weight", weight, 0.0, float("inf"))
  if unlabelled_rewards is None and unlabelled_where is not None:
    raise ValueError(f"{fn}: `unlabelled_where` was given without `unlabelled_rewards`.")
  dtype = _checks.compute_dtype(pref_rewards, unlabelled_rewards)

  def mean_square_count(name, rewards, where):
    r = _checks.as_float(name, fn, rewards, dtype)
    if where is None:
      return jnp.mean(jnp.square(r)), jnp.asarray(r.size, dtype)
    mask = _checks.as_mask(name.replace("rewards", "where"), fn, where, r.shape)
    total = masked_sum_count(jnp.square(jnp.where(mask, r, 0)), mask)
    return total.mean(), jnp.sum(mask).astype(dtype)

  pref, n_pref = mean_square_count("pref_rewards", pref_rewards, pref_where)
  if unlabelled_rewards is None:
    return weight * pref
  unlabelled, n_unl = mean_square_count("unlabelled_rewards", unlabelled_rewards,
                                        unlabelled_where)
  # Half each; a set with no valid entry gives its half to the other.
  w_pref, w_unl = (n_pref > 0).astype(dtype), (n_unl > 0).astype(dtype)
  return weight * (w_pref * pref + w_unl * unlabelled) / jnp.maximum(w_pref + w_unl, 1)
