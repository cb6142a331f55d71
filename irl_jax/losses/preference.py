"""Preference models: Bradley–Terry, Plackett–Luce, pairwise split, pessimistic MLE
(docs/objectives.md §6).

Rewards are scalars per response (e.g. a reward head pooled at the last real
token). A ranking `rewards[N, K]` lists its K responses best first; `where`
marks the valid entries of rankings shorter than K.

- Bradley–Terry, per pair: `ℓ = −log σ(r_c − r_r − m)` (softplus form).
- Plackett–Luce: `ℓ = −Σ_{j valid} (r_j − logsumexp_{k ≥ j, valid} r_k)`.
- Pairwise split: `ℓ = Σ_{j<k valid} −log σ(r_j − r_k)`.

Both ranking estimators are consistent; Plackett–Luce is asymptotically more
efficient. For a linear reward `r = θᵀφ`, pessimistic MLE scores a policy by a
lower confidence bound instead of the point estimate.

Dimensions: `N` comparisons, `K` items per ranking, `d` feature dimension,
`P` candidate policies.

References:
  Zhu, Jordan & Jiao 2023, "Principled Reinforcement Learning with Human
  Feedback from Pairwise or K-wise Comparisons".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_jax.losses import _checks

# Fill for invalid ranking entries: logaddexp(x, _NEG) == x and its gradient
# w.r.t. the fill is exactly 0, with none of the NaNs an -inf fill would cause.
_NEG = -1e30


def bradley_terry(chosen_rewards, rejected_rewards, *, margin=None) -> jax.Array:
  """Bradley–Terry loss per pair: `ℓ = −log σ(r_c − r_r − m) = softplus(−(r_c − r_r − m))`.

  Args:
    chosen_rewards: `[N]` rewards of the preferred responses.
    rejected_rewards: `[N]` rewards of the other responses.
    margin: optional `m ≥ 0`, a scalar or `[N]`.

  Returns:
    `[N]` float32 losses.

  Example:
    >>> loss = jnp.mean(bradley_terry(r_chosen, r_rejected))
  """
  fn = "bradley_terry"
  _checks.check_rank(fn, "chosen_rewards", chosen_rewards, 1, "[N]")
  _checks.check_same_shape(fn, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
  dtype = _checks.compute_dtype(chosen_rewards, rejected_rewards)
  diff = _checks.as_float("chosen_rewards", fn, chosen_rewards, dtype) - _checks.as_float(
      "rejected_rewards", fn, rejected_rewards, dtype
  )
  if margin is not None:
    margin = _checks.as_float("margin", fn, margin, dtype)
    if margin.ndim not in (0, 1) or (margin.ndim == 1 and margin.shape != diff.shape):
      raise ValueError(f"{fn}: `margin` must be a scalar or {diff.shape}, got {margin.shape}.")
    diff = diff - margin
  return jax.nn.softplus(-diff)


def _ranking_inputs(fn, rewards, where):
  _checks.check_rank(fn, "rewards", rewards, 2, "[N, K]")
  rewards = _checks.as_float("rewards", fn, rewards)
  if where is None:
    where = jnp.ones(rewards.shape, bool)
  where = _checks.as_mask("where", fn, where, rewards.shape)
  return jnp.where(where, rewards, 0), where


def plackett_luce(rewards, *, where=None) -> jax.Array:
  """Plackett–Luce negative log-likelihood of each ranking, `[N]`.

      ℓ = −Σ_{j valid} ( r_j − logsumexp_{k ≥ j, valid} r_k )

  All denominators come from one reverse cumulative logsumexp along K.
  With K = 2 this is `bradley_terry(r[:, 0], r[:, 1])`.

  Args:
    rewards: `[N, K]` rewards ordered best first.
    where: optional `[N, K]` bool, valid entries (for rankings shorter than K).

  Returns:
    `[N]` float32; a ranking with fewer than two valid entries gives 0.
  """
  rewards, where = _ranking_inputs("plackett_luce", rewards, where)
  filled = jnp.where(where, rewards, _NEG)
  denominators = jax.lax.cumlogsumexp(filled, axis=1, reverse=True)
  terms = jnp.where(where, rewards - jnp.where(where, denominators, 0), 0)
  return -jnp.sum(terms, axis=1)


def pairwise_split(rewards, *, where=None) -> jax.Array:
  """A ranking split into all its pairs: `ℓ = Σ_{j<k valid} −log σ(r_j − r_k)`, `[N]`.

  Args:
    rewards: `[N, K]` rewards ordered best first.
    where: optional `[N, K]` bool, valid entries.

  Returns:
    `[N]` float32 sums over the `valid·(valid−1)/2` pairs of each ranking.
  """
  rewards, where = _ranking_inputs("pairwise_split", rewards, where)
  k = rewards.shape[1]
  upper = jnp.triu(jnp.ones((k, k), bool), 1)
  pair = upper[None] & where[:, :, None] & where[:, None, :]
  diffs = rewards[:, :, None] - rewards[:, None, :]
  return jnp.sum(jnp.where(pair, jax.nn.softplus(-diffs), 0), axis=(1, 2))


def linear_bradley_terry_mle(
    feature_diffs, *, norm_bound: float, num_steps: int = 500, learning_rate: float = 0.5
) -> jax.Array:
  """Constrained Bradley–Terry MLE of a linear reward, `θ̂` `[d]`.

      θ̂ = argmin_θ (1/n) Σ_i softplus(−θᵀx_i)   s.t. ⟨1, θ⟩ = 0, ‖θ‖ ≤ B

  Solved by projected gradient descent (`num_steps` steps of size
  `learning_rate`); the feasible set is the ball of radius `B` in the
  hyperplane `⟨1, θ⟩ = 0`, onto which projecting is: subtract the mean, then
  rescale into the ball. The objective is convex, so this converges to the
  constrained optimum.

  Args:
    feature_diffs: `[N, d]` pair differences `x_i = φ(s_i, a_w) − φ(s_i, a_l)`
      (winner minus loser).
    norm_bound: `B > 0`.
    num_steps: gradient steps (static).
    learning_rate: step size.

  Returns:
    `[d]` estimate `θ̂`.
  """
  fn = "linear_bradley_terry_mle"
  _checks.check_rank(fn, "feature_diffs", feature_diffs, 2, "[N, d]")
  _checks.check_scalar_range(fn, "norm_bound", norm_bound, 1e-12, float("inf"))
  x = _checks.as_float("feature_diffs", fn, feature_diffs)

  def project(theta):
    theta = theta - jnp.mean(theta)
    norm = jnp.linalg.norm(theta)
    return theta * jnp.minimum(1.0, norm_bound / jnp.maximum(norm, 1e-30))

  def loss(theta):
    return jnp.mean(jax.nn.softplus(-(x @ theta)))

  def step(theta, _):
    return project(theta - learning_rate * jax.grad(loss)(theta)), None

  theta0 = jnp.zeros((x.shape[1],), x.dtype)
  theta, _ = jax.lax.scan(step, theta0, None, length=num_steps)
  return theta


def pessimistic_policy_values(
    theta, policy_features, feature_diffs, *, reference_features=None, f: float, kappa: float
) -> jax.Array:
  """Lower-confidence-bound value of each candidate policy, `[P]`.

      Ĵ(π) = θ̂ᵀw − f·‖w‖_{(Σ_D + κI)^{-1}},   w = E_s[φ(s, π(s))] − v,
      Σ_D = (1/n) Σ_i x_i x_iᵀ

  Choose the policy with `argmax Ĵ`. Greedy selection on `θ̂ᵀw` alone can stay
  suboptimal for every sample size where pessimism converges.

  The width `‖w‖_A` is not differentiable at `w = 0` (a policy whose features
  equal the reference); there its gradient is taken to be the subgradient 0,
  so `∂Ĵ/∂w = θ̂` at that point and every gradient stays finite.

  Args:
    theta: `[d]` reward estimate (e.g. `linear_bradley_terry_mle`).
    policy_features: `[P, d]` expected features `E_s[φ(s, π(s))]` per policy.
    feature_diffs: `[N, d]` the comparison data's `x_i`, defining `Σ_D`.
    reference_features: optional `[d]` fixed reference vector `v` (default 0).
    f: confidence width `≥ 0`.
    kappa: ridge `κ > 0`.

  Returns:
    `[P]` pessimistic values.
  """
  fn = "pessimistic_policy_values"
  _checks.check_rank(fn, "theta", theta, 1, "[d]")
  _checks.check_rank(fn, "policy_features", policy_features, 2, "[P, d]")
  _checks.check_rank(fn, "feature_diffs", feature_diffs, 2, "[N, d]")
  d = jnp.shape(theta)[0]
  if jnp.shape(policy_features)[1] != d or jnp.shape(feature_diffs)[1] != d:
    raise ValueError(
        f"{fn}: feature dimensions disagree: theta {jnp.shape(theta)}, policy_features "
        f"{jnp.shape(policy_features)}, feature_diffs {jnp.shape(feature_diffs)}."
    )
  _checks.check_scalar_range(fn, "f", f, 0.0, float("inf"))
  _checks.check_scalar_range(fn, "kappa", kappa, 1e-30, float("inf"))
  x = _checks.as_float("feature_diffs", fn, feature_diffs)
  w = _checks.as_float("policy_features", fn, policy_features, x.dtype)
  if reference_features is not None:
    w = w - _checks.as_float("reference_features", fn, reference_features, x.dtype)
  sigma = x.T @ x / x.shape[0] + kappa * jnp.eye(d, dtype=x.dtype)
  solved = jnp.linalg.solve(sigma, w.T).T
  # Safe sqrt: sqrt'(0) = inf times the quadratic form's zero gradient would be
  # NaN; where the form is 0 both branches see a constant (subgradient 0).
  quadratic = jnp.sum(w * solved, axis=-1)
  positive = quadratic > 0
  width = jnp.where(positive, jnp.sqrt(jnp.where(positive, quadratic, 1)), 0)
  return w @ _checks.as_float("theta", fn, theta, x.dtype) - f * width
