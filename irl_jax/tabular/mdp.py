"""Tabular Markov decision processes as pytrees.

Dimension letters used throughout `irl_jax.tabular`: `S` states, `A` actions,
`F` reward features, `K` constraints, `T` time steps of a finite horizon,
`N` trajectories.

A `TabularMDP` holds arrays only, so a batch of MDPs with the same `S` and `A`
is one `TabularMDP` whose leaves carry a leading axis, and `jax.vmap` maps a
solver over it. Optional fields are `None` (an empty pytree node).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TabularMDP(NamedTuple):
  """A finite MDP.

  Attributes:
    transitions: `[S, A, S']`, `P(s' | s, a)`; every row sums to 1.
    initial: `[S]`, the initial-state distribution `ν0`.
    discount: scalar `γ ∈ [0, 1]` (1 only with a finite horizon).
    reward: optional `[S, A]` true reward (for evaluation; IRL never reads it).
    features: optional `[S, A, F]` reward features (`r_w = features @ w`).
    costs: optional `[S, A, K]` constraint costs `Ψ`.
    budgets: optional `[K]` budgets `b`: a feasible normalised occupancy `μ`
      has `Σ_{s,a} μ(s,a) Ψ(s,a,k) ≤ b_k`.
  """

  transitions: jax.Array
  initial: jax.Array
  discount: jax.Array
  reward: jax.Array | None = None
  features: jax.Array | None = None
  costs: jax.Array | None = None
  budgets: jax.Array | None = None

  @property
  def num_states(self) -> int:
    return self.transitions.shape[-3]

  @property
  def num_actions(self) -> int:
    return self.transitions.shape[-2]


def check_mdp(mdp: TabularMDP, *, atol: float = 1e-6, name: str = "mdp") -> TabularMDP:
  """Raises `ValueError` naming the offending field, shape or row; returns `mdp`.

  Checks shapes (`P[S, A, S]`, `ν0[S]`, `reward[S, A]`, `features[S, A, F]`,
  `costs[S, A, K]`, `budgets[K]`), that probabilities are finite and
  non-negative, that every `P(· | s, a)` and `ν0` sums to 1 within `atol`, and
  that the discount lies in `[0, 1]`. Batched MDPs (leading axes on every leaf)
  are checked row by row. Values are read on the host, so call it on concrete
  arrays, outside `jax.jit`.
  """
  p = np.asarray(mdp.transitions)
  if p.ndim < 3 or p.shape[-1] != p.shape[-3]:
    raise ValueError(
        f"{name}.transitions must have shape [S, A, S] (S' == S), got {p.shape}.")
  batch, (s, a) = p.shape[:-3], p.shape[-3:-1]

  def expect(field, value, shape):
    if value is None:
      return None
    value = np.asarray(value)
    want = batch + tuple(shape)
    got = value.shape
    if len(got) != len(want) or any(
        w is not None and g != w for g, w in zip(got, want, strict=True)):
      dims = ", ".join("·" if w is None else str(w) for w in want)
      raise ValueError(f"{name}.{field} must have shape [{dims}] to match "
                       f"transitions {p.shape}, got {got}.")
    if not np.all(np.isfinite(value)):
      idx = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
      raise ValueError(f"{name}.{field} has a non-finite entry at index {idx}.")
    return value

  nu0 = expect("initial", mdp.initial, (s,))
  expect("reward", mdp.reward, (s, a))
  costs = expect("costs", mdp.costs, (s, a, None))
  expect("features", mdp.features, (s, a, None))
  budgets = None if mdp.budgets is None else np.asarray(mdp.budgets)
  if (costs is None) != (budgets is None):
    raise ValueError(f"{name}: costs and budgets come together; got only "
                     f"{'costs' if budgets is None else 'budgets'}.")
  if costs is not None:
    expect("budgets", budgets, (costs.shape[-1],))
  gamma = np.asarray(mdp.discount)
  if gamma.shape != batch and gamma.shape != ():
    raise ValueError(f"{name}.discount must be a scalar (or one per MDP {batch}), "
                     f"got shape {gamma.shape}.")
  if np.any(gamma < 0) or np.any(gamma > 1) or not np.all(np.isfinite(gamma)):
    raise ValueError(f"{name}.discount must lie in [0, 1], got {gamma}.")

  if not np.all(np.isfinite(p)):
    idx = tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0])
    raise ValueError(f"{name}.transitions has a non-finite entry at index {idx}.")
  if np.any(p < 0):
    idx = tuple(int(i) for i in np.argwhere(p < 0)[0])
    raise ValueError(f"{name}.transitions has a negative probability {p[idx]:.3g} "
                     f"at index {idx} (batch..., s, a, s').")
  sums = p.sum(-1)
  bad = np.abs(sums - 1) > atol
  if np.any(bad):
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f"{name}.transitions is not stochastic: row (batch..., s, a) = {idx} "
                     f"sums to {sums[idx]:.6g}, not 1.")
  if np.any(nu0 < 0) or np.any(np.abs(nu0.sum(-1) - 1) > atol):
    raise ValueError(f"{name}.initial must be a distribution (non-negative, sums to 1); "
                     f"its sum is {nu0.sum(-1)} and its minimum {nu0.min():.3g}.")
  return mdp


def make_mdp(transitions, initial, discount, *, reward=None, features=None, costs=None,
             budgets=None, dtype=None, check: bool = True) -> TabularMDP:
  """A checked `TabularMDP` from array-likes (see `check_mdp` for the checks).

  `dtype` defaults to float32, or float64 when `jax_enable_x64` is on and the
  inputs are float64.
  """
  def cast(x):
    if x is None:
      return None
    x = jnp.asarray(x)
    return x.astype(dtype) if dtype is not None else x.astype(
        jnp.promote_types(jnp.float32, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
        else jnp.float32)
  mdp = TabularMDP(cast(transitions), cast(initial), cast(discount), cast(reward),
                   cast(features), cast(costs), cast(budgets))
  return check_mdp(mdp) if check else mdp
