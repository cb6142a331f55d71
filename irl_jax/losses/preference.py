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

import functools

import jax
import jax.numpy as jnp
import numpy as np

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


def _sum_zero_basis(d: int) -> np.ndarray:
  """`[d, d − 1]` orthonormal basis of the hyperplane `⟨1, θ⟩ = 0` (float64 NumPy)."""
  centred = np.eye(d) - np.ones((d, d)) / d
  return np.linalg.svd(centred)[0][:, : d - 1]


class _LinearObjective:
  """`F(θ) = Σ_i w_i ℓ(Φ_i θ)` for a loss `ℓ` of a row of `K` rewards: its value, and its
  gradient and Hessian from the linear structure, `Σ_i w_i Φ_iᵀ ∇ℓ` and
  `Σ_i w_i Φ_iᵀ ∇²ℓ Φ_i`, with `∇²ℓ` only `K × K` per row."""

  def __init__(self, row_loss, features, weights, where):
    self.row_loss, self.phi, self.w, self.where = row_loss, features, weights, where

  def _row(self, r, where):
    return self.row_loss(r[None], None if where is None else where[None])[0]

  def value(self, theta):
    return jnp.sum(self.w * self.row_loss(self.phi @ theta, self.where))

  def derivatives(self, theta):
    r = self.phi @ theta                                             # [N, K]
    where = self.where
    if where is None:
      grad_r = jax.vmap(jax.grad(lambda r: self._row(r, None)))(r)
      hess_r = jax.vmap(jax.hessian(lambda r: self._row(r, None)))(r)
    else:
      grad_r = jax.vmap(jax.grad(self._row))(r, where)
      hess_r = jax.vmap(jax.hessian(self._row))(r, where)
    grad = jnp.einsum("n,nk,nkd->d", self.w, grad_r, self.phi)
    hess = jnp.einsum("n,nkd,nkl,nle->de", self.w, self.phi, hess_r, self.phi)
    return grad, hess


def _newton(objective: _LinearObjective, basis, covered, z, mu, *, max_steps: int, tol: float,
            expand_to: float | None = None):
  """Damped Newton on `F(Uz) + μ/2·‖z‖²` from `z`; returns `(z, converged)`.

  It stops when the Newton decrement `gᵀH⁺g / 2` falls below `tol` (relative to the
  objective's scale) and the full Newton step below `sqrt(eps)·(1 + ‖z‖)` (`converged`),
  or when no step lowers the objective beyond its round-off, or after `max_steps` (then
  `converged` is False). Both are needed: where the objective only flattens
  towards infinity (separable comparisons) the decrement vanishes while the Newton step
  stays of order one. `covered [d−1, d−1]` is a projector onto the directions the data
  inform (`_covered_directions`); the step lies in that subspace, so a direction no
  comparison touches stays where it started (at 0: the minimum-norm optimum), while a
  direction that is informed but separable keeps its (tiny, exact) curvature and Newton
  keeps moving along it. Each step backtracks from the full Newton step, halving up to 30 times,
  until the objective does not increase beyond its round-off (no step if it always
  does), so the iteration is monotone even where the Hessian is singular. With
  `expand_to`, an accepted full step is doubled while that still lowers the objective
  and stays within norm `expand_to`, so an escape to infinity reaches that norm in a
  few steps."""
  step_tol = jnp.sqrt(jnp.finfo(z.dtype).eps)
  eye = jnp.eye(z.shape[0], dtype=z.dtype)

  def total(z):
    return objective.value(basis @ z) + 0.5 * mu * jnp.sum(z * z)

  def body(carry):
    z, value, i, _, _ = carry
    grad, hess = objective.derivatives(basis @ z)
    grad = basis.T @ grad + mu * z
    hess = basis.T @ hess @ basis + mu * eye
    # Restricted to the covered subspace (identity on its complement, where the gradient
    # is projected away); eigenvalues are floored at the smallest normal number so that
    # a curvature that underflowed to 0 far out on a separable direction gives a long
    # (then backtracked) step instead of a NaN.
    grad = covered @ grad
    evals, evecs = jnp.linalg.eigh(covered @ hess @ covered + (eye - covered))
    evals = jnp.maximum(evals, jnp.finfo(z.dtype).tiny)
    step = covered @ (evecs @ ((evecs.T @ grad) / evals))
    decrement = 0.5 * jnp.dot(grad, step)

    def shorter(c):
      t, _, j = c
      t = 0.5 * t
      return t, total(z - t * step), j + 1

    # Round-off slack: near the optimum a full step may change the value by less than
    # its rounding error; it is still taken (the decrement, from the gradient, decides).
    slack = 4 * jnp.finfo(z.dtype).eps * (jnp.abs(value) + 1.0)

    def too_long(c):
      _, v, j = c
      return ~(v <= value + slack) & (j < 30)

    t, new, _ = jax.lax.while_loop(too_long, shorter, (jnp.asarray(1.0, z.dtype),
                                                       total(z - step), jnp.asarray(0)))
    if expand_to is not None:
      def longer(c):
        t, _, j = c
        return 2 * t, total(z - 2 * t * step), j + 1

      def worth_doubling(c):
        t, v, j = c
        far = z - 2 * t * step
        return ((t >= 1) & (j < 30) & (jnp.linalg.norm(far) <= expand_to)
                & (total(far) < v))

      t, new, _ = jax.lax.while_loop(worth_doubling, longer, (t, new, jnp.asarray(0)))
    ok = new <= value + slack
    z_new = jnp.where(ok, z - t * step, z)
    # Converged: a vanishing decrement and a vanishing full Newton step (not the
    # backtracked one: when no step lowers the objective beyond round-off, far out along
    # a separable direction, the full step is still of order one, and that is no optimum).
    done = ((decrement <= tol * (jnp.abs(value) + 1.0))
            & (jnp.linalg.norm(step) <= step_tol * (1.0 + jnp.linalg.norm(z_new))))
    return z_new, jnp.where(ok, new, value), i + 1, ok & ~done, done

  def cond(carry):
    return (carry[2] < max_steps) & carry[3]

  z, _, _, _, converged = jax.lax.while_loop(
      cond, body, (z, total(z), jnp.asarray(0), jnp.asarray(True), jnp.asarray(False)))
  return z, converged


def _ball_constrained_mle(objective: _LinearObjective, d: int, dtype, *, norm_bound: float,
                          newton_steps: int, bisection_steps: int, scale) -> jax.Array:
  """`argmin F(θ)` over `⟨1, θ⟩ = 0, ‖θ‖ ≤ B` for a smooth convex `F`.

  `θ = Uz` with `U` an orthonormal basis of the hyperplane, so the ball is `‖z‖ ≤ B`.
  Newton's method solves the problem without the ball; if its solution lies outside
  (or does not exist, as with separable comparisons), the constrained optimum is
  `z(μ) = argmin F(Uz) + μ/2·‖z‖²` at the `μ > 0` with `‖z(μ)‖ = B` (the KKT
  conditions), found by bisection on `log μ` (`‖z(μ)‖` decreases with `μ`) over
  `μ ∈ scale·[1e−10, 1e4]`, each `z(μ)` by warm-started Newton. Newton is used rather
  than gradient steps because comparison data are often badly conditioned (a rarely
  compared direction has curvature of order its share of the data), where gradient
  descent would stop far from the optimum.
  """
  basis = jnp.asarray(_sum_zero_basis(d), dtype)
  tol = 1e-14 if dtype == jnp.float64 else 1e-10
  # The directions the data inform: the range of the Hessian at θ = 0 (the weighted
  # feature covariance through the loss's curvature), eigenvalues above 10·eps of the
  # largest. A direction below that is treated as unidentified; in float32 that includes
  # a direction informed by less than about 1e−6 of the data's weight (use float64 for
  # such data).
  _, h0 = objective.derivatives(jnp.zeros((d,), dtype))
  evals0, evecs0 = jnp.linalg.eigh(basis.T @ h0 @ basis)
  keep = evals0 > 10 * jnp.finfo(dtype).eps * jnp.maximum(evals0[-1], 1e-30)
  covered = (evecs0 * keep) @ evecs0.T
  solve = functools.partial(_newton, objective, basis, covered, max_steps=newton_steps,
                            tol=tol)
  z0, converged = solve(jnp.zeros((d - 1,), dtype), 0.0, expand_to=2.0 * norm_bound)
  # Outside: the unconstrained optimum lies beyond the ball, or there is none (Newton
  # was still moving, towards infinity), or round-off made it non-finite.
  outside = ~(jnp.linalg.norm(z0) <= norm_bound) | ~converged

  def bisect(carry):
    lo, hi, z, i = carry
    mid = 0.5 * (lo + hi)
    z, _ = solve(z, scale * jnp.exp(mid))
    out = jnp.linalg.norm(z) > norm_bound
    return jnp.where(out, mid, lo), jnp.where(out, hi, mid), z, i + 1

  def keep_bisecting(carry):
    return outside & (carry[3] < bisection_steps)

  start = jnp.where(jnp.isfinite(z0), z0, 0.0)
  lo, hi = jnp.log(jnp.asarray(1e-10, dtype)), jnp.log(jnp.asarray(1e4, dtype))
  lo0 = lo
  _, hi, z, _ = jax.lax.while_loop(keep_bisecting, bisect, (lo, hi, start, jnp.asarray(0)))
  z_ball, _ = solve(z, scale * jnp.exp(hi))
  # When even the smallest multiplier leaves z(μ) inside the ball (a separable direction
  # whose optimum lies where the likelihood's gain is below μ_min), continue along the
  # regularisation path, z(μ_min) − z(100·μ_min), to the sphere: that moves the escaping
  # directions and keeps the others. Otherwise rescale the last solve onto the sphere.
  z_up, _ = solve(z_ball, scale * jnp.exp(lo0) * 100.0)
  u = z_ball - z_up
  a, b, c = jnp.dot(u, u), 2 * jnp.dot(u, z_ball), jnp.dot(z_ball, z_ball) - norm_bound**2
  t = (-b + jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0))) / jnp.maximum(2 * a, 1e-30)
  short = (jnp.linalg.norm(z_ball) < norm_bound) & (a > 0) & (hi <= lo0 + 1e-6)
  z_ball = jnp.where(short, z_ball + t * u, z_ball)
  # The constrained optimum lies on the sphere: put the last solve exactly there.
  z_ball = z_ball * (norm_bound / jnp.maximum(jnp.linalg.norm(z_ball), 1e-30))
  z = jnp.where(outside, z_ball, z0)
  return basis @ z


def _mle_inputs(fn, name, x, rank, dims, weights, norm_bound, newton_steps, bisection_steps):
  _checks.check_rank(fn, name, x, rank, dims)
  _checks.check_scalar_range(fn, "norm_bound", norm_bound, 1e-12, float("inf"))
  _checks.check_scalar_range(fn, "newton_steps", newton_steps, 1, float("inf"))
  _checks.check_scalar_range(fn, "bisection_steps", bisection_steps, 1, float("inf"))
  x = _checks.as_float(name, fn, x)
  if x.shape[-1] < 2:
    raise ValueError(f"{fn}: `{name}` needs a feature dimension d >= 2 (the constraint "
                     f"⟨1, θ⟩ = 0 leaves d − 1 free directions), got shape {x.shape}.")
  if weights is None:
    weights = jnp.ones(x.shape[:1], x.dtype)
  else:
    weights = _checks.as_float("weights", fn, weights, x.dtype)
    if weights.shape != x.shape[:1]:
      raise ValueError(f"{fn}: `weights` has shape {weights.shape}, expected {x.shape[:1]} "
                       f"(one per row of `{name}`).")
    if _checks.is_concrete(weights) and not bool(jnp.all(weights >= 0)):
      raise ValueError(f"{fn}: `weights` must be >= 0 (and not NaN).")
  return x, weights


def linear_bradley_terry_mle(
    feature_diffs, *, norm_bound: float, weights=None, newton_steps: int = 50,
    bisection_steps: int = 60,
) -> jax.Array:
  """Constrained Bradley–Terry MLE of a linear reward, `θ̂` `[d]`.

      θ̂ = argmin_θ Σ_i w_i softplus(−θᵀx_i)   s.t. ⟨1, θ⟩ = 0, ‖θ‖ ≤ B

  Solved to convergence by Newton's method on the hyperplane, with the ball handled
  through its KKT multiplier (bisection on it) when the unconstrained optimum lies
  outside the ball or does not exist (separable comparisons). Newton, not gradient
  descent, because comparison data are often badly conditioned: a pair that is
  rarely compared gives its direction a curvature of order its share of the data.

  Precision limits (use float64, `jax_enable_x64`, for such data): a direction informed
  by less than about 1e−6 of the data's weight is treated as unidentified in float32
  (left at its minimum-norm value); and along a separable direction that other,
  non-separable comparisons share the problem with, float32 stops where the
  likelihood's gain falls below round-off (|θ|·margin ≈ 19), possibly inside the ball,
  where float64 reaches the sphere.

  Args:
    feature_diffs: `[N, d]` pair differences `x_i = φ(s_i, a_w) − φ(s_i, a_l)`
      (winner minus loser), `d >= 2`.
    norm_bound: `B > 0`.
    weights: optional `[N]` non-negative counts or weights `w_i` (default 1): identical
      comparisons can be given once with their count, and padding rows weight 0.
    newton_steps: the most Newton steps per solve (static).
    bisection_steps: the most bisection steps on the multiplier (static).

  Returns:
    `[d]` estimate `θ̂`, in the compute dtype (float32, or float64 under x64).
  """
  fn = "linear_bradley_terry_mle"
  x, w = _mle_inputs(fn, "feature_diffs", feature_diffs, 2, "[N, d]", weights, norm_bound,
                     newton_steps, bisection_steps)

  def row_loss(r, where):
    del where
    return jax.nn.softplus(-r[:, 0])

  objective = _LinearObjective(row_loss, x[:, None, :], w, None)
  return _ball_constrained_mle(objective, x.shape[1], x.dtype, norm_bound=norm_bound,
                               newton_steps=newton_steps, bisection_steps=bisection_steps,
                               scale=jnp.sum(w) + 1e-12)


def linear_ranking_mle(
    features, *, norm_bound: float, where=None, weights=None, split_pairs: bool = False,
    newton_steps: int = 50, bisection_steps: int = 60,
) -> jax.Array:
  """Constrained MLE of a linear reward `r = θᵀφ` from K-wise rankings, `θ̂` `[d]`.

      θ̂ = argmin_θ Σ_i w_i ℓ(Φ_i θ)   s.t. ⟨1, θ⟩ = 0, ‖θ‖ ≤ B

  with `ℓ` the Plackett–Luce negative log-likelihood (`plackett_luce`, the MLE_K of
  Zhu, Jordan & Jiao 2023) or, with `split_pairs=True`, the sum of Bradley–Terry
  losses over every pair of the ranking (`pairwise_split`, MLE_2). Solved as in
  `linear_bradley_terry_mle`.

  Args:
    features: `[N, K, d]` features of each ranking's K items, best first.
    norm_bound: `B > 0`.
    where: optional `[N, K]` bool, valid items (rankings shorter than K).
    weights: optional `[N]` non-negative weights (default 1).
    split_pairs: the pairwise-split estimator instead of Plackett–Luce (static).
    newton_steps: the most Newton steps per solve (static).
    bisection_steps: the most bisection steps on the multiplier (static).

  Returns:
    `[d]` estimate `θ̂`.
  """
  fn = "linear_ranking_mle"
  phi, w = _mle_inputs(fn, "features", features, 3, "[N, K, d]", weights, norm_bound,
                       newton_steps, bisection_steps)
  if where is not None:
    where = _checks.as_mask("where", fn, where, phi.shape[:2])
  loss = pairwise_split if split_pairs else plackett_luce

  def row_loss(r, where):
    return loss(r, where=where)

  objective = _LinearObjective(row_loss, phi, w, where)
  return _ball_constrained_mle(objective, phi.shape[2], phi.dtype, norm_bound=norm_bound,
                               newton_steps=newton_steps, bisection_steps=bisection_steps,
                               scale=jnp.sum(w) + 1e-12)


def pessimistic_policy_values(
    theta, policy_features, feature_diffs, *, reference_features=None, weights=None, f: float,
    kappa: float,
) -> jax.Array:
  """Lower-confidence-bound value of each candidate policy, `[P]`.

      Ĵ(π) = θ̂ᵀw − f·‖w‖_{(Σ_D + κI)^{-1}},   w = E_s[φ(s, π(s))] − v,
      Σ_D = Σ_i c_i x_i x_iᵀ / Σ_i c_i   (c_i = 1 unless `weights` are given)

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
    weights: optional `[N]` non-negative counts `c_i` of the rows of `feature_diffs`.
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
  if weights is None:
    c = jnp.ones(x.shape[:1], x.dtype)
  else:
    c = _checks.as_float("weights", fn, weights, x.dtype)
    if c.shape != x.shape[:1]:
      raise ValueError(f"{fn}: `weights` has shape {c.shape}, expected {x.shape[:1]}.")
    if _checks.is_concrete(c) and not (bool(jnp.all(c >= 0)) and float(jnp.sum(c)) > 0):
      raise ValueError(f"{fn}: `weights` must be >= 0 (and not NaN) with a positive sum.")
  sigma = (x * c[:, None]).T @ x / jnp.sum(c) + kappa * jnp.eye(d, dtype=x.dtype)
  solved = jnp.linalg.solve(sigma, w.T).T
  # Safe sqrt: sqrt'(0) = inf times the quadratic form's zero gradient would be
  # NaN; where the form is 0 both branches see a constant (subgradient 0).
  quadratic = jnp.sum(w * solved, axis=-1)
  positive = quadratic > 0
  width = jnp.where(positive, jnp.sqrt(jnp.where(positive, quadratic, 1)), 0)
  return w @ _checks.as_float("theta", fn, theta, x.dtype) - f * width
