"""Tabular benchmark MDPs: gridworlds, Garnet random MDPs, a constrained gridworld
and a combination lock, plus a small name registry (`make`, `registered`).

Every generator is host-side setup code: it builds its arrays with NumPy (the
random ones draw with `jax.random`, so they are reproducible from the key) and
returns a `TabularMDP` that has passed `check_mdp`. Leaves are float32 unless
`dtype=` says otherwise (float64 needs `jax_enable_x64`). The same arguments
always give the same MDP.

Grid layout (shared by `gridworld` and `constrained_gridworld`): a `size × size`
grid, row 0 at the top, state `s = row·size + col` (`grid_index`, `grid_coords`).
Actions `0 = up` (row − 1), `1 = down` (row + 1), `2 = left` (col − 1),
`3 = right` (col + 1); a move into the outer wall leaves the agent where it is.
Slip: with probability `slip` the executed action is drawn uniformly from all
four actions instead of the chosen one, so

  `P(· | s, a) = (1 − slip)·δ_{move(s, a)} + (slip/4)·Σ_b δ_{move(s, b)}`

(the chosen action happens with probability `1 − slip + slip/4`). Optional wind
`(drow, dcol, prob)`: after the move, with probability `prob` the agent is pushed
from the cell it reached to `(clip(row + drow), clip(col + dcol))` (clipped into
the grid), except that an absorbing goal it reached keeps it. An absorbing goal
`g` has `P(g | g, a) = 1` for every action. Rewards are state-based:
`r(s, a) = reward of cell s` for every action (the goal's reward while the agent
sits in it, `step_reward` elsewhere), so an agent that reaches an absorbing goal
at step `t` collects `γ^t/(1 − γ)` times its reward from then on (discounted).

Grid features (`features=`): `"onehot"` → `[S, A, S]` with
`f(s, a)_j = 1[j = s]` (state-only); `"coords"` → `[S, A, 2 + G]` holding
`row/(size − 1)`, `col/(size − 1)` and one indicator per goal cell (in the order
of the goals); `"state_action"` → `[S, A, S·A]` with `f(s, a)_j = 1[j = s·A + a]`.
The true reward is linear in the `"onehot"` and `"state_action"` features, and in
the `"coords"` ones when `step_reward = 0`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irl_jax.tabular.mdp import TabularMDP, make_mdp

__all__ = [
    "ACTION_NAMES",
    "boundary_states",
    "combination_lock",
    "constrained_gridworld",
    "grid_coords",
    "grid_index",
    "gridworld",
    "make",
    "random_mdp",
    "registered",
]

ACTION_NAMES = ("up", "down", "left", "right")
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
_GRID_FEATURES = ("onehot", "coords", "state_action")


# ---------------------------------------------------------------------------
# Argument checks.


def _int(fn: str, name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{fn}: `{name}` must be an int >= {minimum}, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{fn}: `{name}` must be >= {minimum}, got {value}.")
  return int(value)


def _unit(fn: str, name: str, value) -> float:
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `{name}` must be a number in [0, 1], got {value!r}.") from None
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{fn}: `{name}` must lie in [0, 1], got {value}.")
  return value


def _finite(fn: str, name: str, value) -> float:
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `{name}` must be a finite number, got {value!r}.") from None
  if not np.isfinite(value):
    raise ValueError(f"{fn}: `{name}` must be finite, got {value}.")
  return value


def _key(fn: str, key):
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    return jax.random.key(int(key))
  if key is None:
    raise ValueError(f"{fn}: `key` must be a PRNG key (or an int seed), got None.")
  return key


def _finish(transitions, initial, discount, *, dtype, **fields) -> TabularMDP:
  return make_mdp(transitions, initial, discount, dtype=jnp.float32 if dtype is None else dtype,
                  **fields)


# ---------------------------------------------------------------------------
# Grids.


def grid_index(size: int, row, col):
  """Flat state index `row·size + col` of grid cell `(row, col)` (ints or arrays)."""
  return row * size + col


def grid_coords(size: int, s):
  """`(row, col)` of flat state index `s` (an int or an array): `divmod(s, size)`."""
  return s // size, s % size


def boundary_states(size: int) -> np.ndarray:
  """Sorted flat indices (int array) of the outer ring of a `size × size` grid:
  every cell in row 0, row `size − 1`, column 0 or column `size − 1`."""
  size = _int("boundary_states", "size", size, 2)
  rows, cols = np.divmod(np.arange(size * size), size)
  ring = (rows == 0) | (rows == size - 1) | (cols == 0) | (cols == size - 1)
  return np.flatnonzero(ring)


def _check_wind(fn: str, wind):
  if wind is None:
    return None
  try:
    drow, dcol, prob = wind
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `wind` must be None or (drow, dcol, prob), got {wind!r}.") from None
  for name, value in (("drow", drow), ("dcol", dcol)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{fn}: `wind` {name} must be an int, got {value!r}.")
  return int(drow), int(dcol), _unit(fn, "wind prob", prob)


def _check_goals(fn: str, size: int, goals) -> list[int]:
  cells = []
  for goal in goals:
    try:
      row, col = goal
    except (TypeError, ValueError):
      raise ValueError(f"{fn}: `goals` must be a sequence of (row, col) pairs, got "
                       f"{goal!r} in it.") from None
    row = _int(fn, "goals (row)", row, 0)
    col = _int(fn, "goals (col)", col, 0)
    if row >= size or col >= size:
      raise ValueError(f"{fn}: `goals` cell {(row, col)} lies outside the "
                       f"{size}×{size} grid.")
    s = grid_index(size, row, col)
    if s in cells:
      raise ValueError(f"{fn}: `goals` lists cell {(row, col)} twice.")
    cells.append(s)
  return cells


def _grid_transitions(size: int, slip: float, wind, absorbing: Sequence[int]) -> np.ndarray:
  """`P[S, 4, S]` of the grid layout in the module docstring."""
  num = size * size
  rows, cols = np.divmod(np.arange(num), size)
  move = np.empty((num, 4), np.int64)  # deterministic next state per (s, b)
  for b, (dr, dc) in enumerate(_MOVES):
    r, c = rows + dr, cols + dc
    inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    move[:, b] = np.where(inside, r * size + c, np.arange(num))
  det = np.zeros((num, 4, num))
  np.put_along_axis(det, move[:, :, None], 1.0, axis=-1)
  p = (1.0 - slip) * det + slip * det.mean(1, keepdims=True)
  if wind is not None:
    drow, dcol, prob = wind
    pushed = (np.clip(rows + drow, 0, size - 1) * size + np.clip(cols + dcol, 0, size - 1))
    push = np.zeros((num, num))
    push[np.arange(num), pushed] = 1.0
    blow = (1.0 - prob) * np.eye(num) + prob * push
    blow[list(absorbing)] = np.eye(num)[list(absorbing)]
    p = p @ blow
  for g in absorbing:
    p[g] = 0.0
    p[g, :, g] = 1.0
  return p


def _grid_features(fn: str, kind: str, size: int, goals: Sequence[int]) -> np.ndarray:
  num, actions = size * size, 4
  if kind == "onehot":
    return np.broadcast_to(np.eye(num)[:, None, :], (num, actions, num))
  if kind == "state_action":
    return np.eye(num * actions).reshape(num, actions, num * actions)
  if kind == "coords":
    rows, cols = np.divmod(np.arange(num), size)
    cols_f = [rows / (size - 1), cols / (size - 1)]
    cols_f += [(np.arange(num) == g).astype(float) for g in goals]
    per_state = np.stack(cols_f, -1)
    return np.broadcast_to(per_state[:, None, :], (num, actions, per_state.shape[-1]))
  raise ValueError(f"{fn}: `features` must be one of {_GRID_FEATURES}, got {kind!r}.")


def gridworld(size: int = 8, *, slip: float = 0.1, discount: float = 0.9,
              goals: Sequence[tuple[int, int]] | None = None, goal_reward: float = 1.0,
              step_reward: float = 0.0, features: str = "onehot",
              absorbing_goals: bool = True, wind: tuple[int, int, float] | None = None,
              dtype=None) -> TabularMDP:
  """A `size × size` slippery gridworld (layout, slip, wind and features in the
  module docstring).

  `S = size²`, `A = 4` (up, down, left, right). Goals are the `(row, col)` cells in
  `goals` (default: the bottom-right corner `(size − 1, size − 1)`); with
  `absorbing_goals` each goal keeps the agent forever. Reward (state-based):
  `r(s, a) = goal_reward` for a goal `s` and `step_reward` elsewhere, for every
  action. `initial` is uniform over the non-goal cells.

  Args:
    size: grid side, >= 2.
    slip: probability in [0, 1] that a uniformly random action replaces the
      chosen one.
    discount: `γ ∈ [0, 1]`.
    goals: sequence of distinct `(row, col)` cells (possibly empty); not every
      cell.
    goal_reward, step_reward: the state rewards.
    features: `"onehot"`, `"coords"` or `"state_action"`.
    absorbing_goals: whether goals keep the agent.
    wind: `None` or `(drow, dcol, prob)`.
    dtype: float dtype of the leaves (default float32).
  """
  fn = "gridworld"
  size = _int(fn, "size", size, 2)
  slip = _unit(fn, "slip", slip)
  discount = _unit(fn, "discount", discount)
  goal_reward = _finite(fn, "goal_reward", goal_reward)
  step_reward = _finite(fn, "step_reward", step_reward)
  wind = _check_wind(fn, wind)
  cells = _check_goals(fn, size, [(size - 1, size - 1)] if goals is None else goals)
  num = size * size
  if len(cells) == num:
    raise ValueError(f"{fn}: `goals` covers every cell; the initial distribution "
                     f"(uniform over non-goal cells) would be empty.")
  feats = _grid_features(fn, features, size, cells)
  p = _grid_transitions(size, slip, wind, cells if absorbing_goals else ())
  state_reward = np.full(num, step_reward)
  state_reward[cells] = goal_reward
  initial = np.ones(num)
  initial[cells] = 0.0
  return _finish(p, initial / initial.sum(), discount, dtype=dtype,
                 reward=np.repeat(state_reward[:, None], 4, 1), features=feats)


def constrained_gridworld(size: int = 6, *, slip: float = 0.1, discount: float = 0.9,
                          budgets: Sequence[float] = (0.03, 0.03),
                          goal_rewards: tuple[float, float] = (1.0, 0.6),
                          features: str = "onehot",
                          wind: tuple[int, int, float] | None = None,
                          dtype=None) -> TabularMDP:
  """The constrained-IRL gridworld: two goals, two cost regions, two budgets.

  Grid layout, slip, wind and features as in the module docstring (`S = size²`,
  `A = 4`). Cells (`h = size // 2`):

  * goal 0, the better one: `(size − 1, size − 1)` (bottom-right), reward
    `goal_rewards[0]` (1.0); goal 1: `(0, size − 1)` (top-right), reward
    `goal_rewards[1]` (0.6). Both absorbing; rewards are state-based
    (`r(s, a) = goal reward` in a goal, 0 elsewhere).
  * start area: `initial` is uniform over the lower half of the left column,
    rows `h … size − 1` of column 0.
  * constraint region `k ∈ {0, 1}`: the vertical bar of rows `h … size − 1` in
    column `size // 3` (k = 0) and `2·size // 3` (k = 1), i.e. across the
    straight road from the start area to the better goal. `costs[s, a, k] = 1`
    for every action taken in a cell of region `k`, else 0.

  For size 6 (`S` start, `0`/`1` regions, `G`/`g` goals)::

      . . . . . g
      . . . . . .
      . . . . . .
      S . 0 . 1 .
      S . 0 . 1 .
      S . 0 . 1 G

  Budgets bound the *normalised* occupancy `μ = (1 − γ)ρ` (a distribution over
  `(s, a)`): a policy is feasible when `Σ_{s,a} μ(s, a)·costs(s, a, k) ≤ budgets[k]`
  for both `k`. With the defaults (size 6, slip 0.1, γ 0.9, budgets 0.03 each) the
  soft-optimal policy (temperature 0.1) of the unconstrained reward spends about
  0.09 and 0.07 of `μ` in regions 0 and 1, while one that detours above them
  (soft-optimal for `reward − 3·Σ_k costs`) spends about 0.003 in each, so the
  constraints bind and are feasible (also with slip 0.3).

  Args:
    size: grid side, >= 4.
    slip: as in `gridworld`.
    discount: `γ ∈ [0, 1)` (the budgets are on the normalised occupancy).
    budgets: two non-negative budgets.
    goal_rewards: rewards of goal 0 (bottom-right) and goal 1 (top-right).
    features: `"onehot"`, `"coords"` or `"state_action"`.
    wind: `None` or `(drow, dcol, prob)`.
    dtype: float dtype of the leaves (default float32).
  """
  fn = "constrained_gridworld"
  size = _int(fn, "size", size, 4)
  slip = _unit(fn, "slip", slip)
  discount = _unit(fn, "discount", discount)
  if discount >= 1.0:
    raise ValueError(f"{fn}: `discount` must be < 1 (the budgets bound the normalised "
                     f"occupancy (1 − γ)ρ), got {discount}.")
  wind = _check_wind(fn, wind)
  try:
    budgets = np.asarray(budgets, float)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `budgets` must be two numbers, got {budgets!r}.") from None
  if budgets.shape != (2,) or not np.all(np.isfinite(budgets)) or np.any(budgets < 0):
    raise ValueError(f"{fn}: `budgets` must be two finite non-negative numbers, got "
                     f"{budgets.tolist()}.")
  try:
    rewards = [_finite(fn, "goal_rewards", r) for r in goal_rewards]
  except TypeError:
    raise ValueError(f"{fn}: `goal_rewards` must be two numbers, got {goal_rewards!r}.") from None
  if len(rewards) != 2:
    raise ValueError(f"{fn}: `goal_rewards` must be two numbers, got {goal_rewards!r}.")

  num, half = size * size, size // 2
  cells = [grid_index(size, size - 1, size - 1), grid_index(size, 0, size - 1)]
  feats = _grid_features(fn, features, size, cells)
  p = _grid_transitions(size, slip, wind, cells)
  state_reward = np.zeros(num)
  state_reward[cells] = rewards
  rows, cols = np.divmod(np.arange(num), size)
  costs = np.stack([(rows >= half) & (cols == c) for c in (size // 3, 2 * size // 3)], -1)
  initial = ((rows >= half) & (cols == 0)).astype(float)
  return _finish(p, initial / initial.sum(), discount, dtype=dtype,
                 reward=np.repeat(state_reward[:, None], 4, 1), features=feats,
                 costs=np.repeat(costs[:, None, :].astype(float), 4, 1), budgets=budgets)


# ---------------------------------------------------------------------------
# Garnet random MDPs.


def random_mdp(key, num_states: int, num_actions: int, *, branching: int = 3,
               discount: float = 0.9, num_features: int = 8, dtype=None) -> TabularMDP:
  """A Garnet-style random MDP (Archibald, McKinnon & Thomas, 1995).

  Each `(s, a)` reaches `branching` distinct next states, drawn uniformly without
  replacement, with Dirichlet(1, …, 1) probabilities. Features `[S, A, F]` are
  i.i.d. standard normal; the true reward is `features @ w` for a random unit-norm
  `w[F]` (recover it with a least-squares fit of `reward` on `features`).
  `initial` is uniform. All draws use `jax.random` (in float32) from `key`, so the
  same key gives the same MDP whatever the `dtype`.

  Args:
    key: a PRNG key (or an int seed).
    num_states, num_actions: `S >= 1`, `A >= 1`.
    branching: `1 <= branching <= S`.
    discount: `γ ∈ [0, 1]`.
    num_features: `F >= 1`.
    dtype: float dtype of the leaves (default float32).
  """
  fn = "random_mdp"
  key = _key(fn, key)
  s = _int(fn, "num_states", num_states, 1)
  a = _int(fn, "num_actions", num_actions, 1)
  f = _int(fn, "num_features", num_features, 1)
  branching = _int(fn, "branching", branching, 1)
  if branching > s:
    raise ValueError(f"{fn}: `branching` must be <= num_states = {s}, got {branching}.")
  discount = _unit(fn, "discount", discount)
  k_next, k_prob, k_feat, k_w = jax.random.split(key, 4)
  order = jnp.argsort(jax.random.uniform(k_next, (s, a, s), jnp.float32), axis=-1)
  nxt = np.asarray(order)[..., :branching]
  probs = np.array(jax.random.dirichlet(k_prob, jnp.ones(branching, jnp.float32), (s, a),
                                         jnp.float32), np.float64)
  probs /= probs.sum(-1, keepdims=True)
  p = np.zeros((s, a, s))
  np.put_along_axis(p, nxt, probs, axis=-1)
  feats = np.array(jax.random.normal(k_feat, (s, a, f), jnp.float32), np.float64)
  w = np.array(jax.random.normal(k_w, (f,), jnp.float32), np.float64)
  w /= np.linalg.norm(w)
  return _finish(p, np.full(s, 1.0 / s), discount, dtype=dtype, reward=feats @ w,
                 features=feats)


# ---------------------------------------------------------------------------
# Combination lock.


def combination_lock(depth: int, *, num_actions: int = 2, key=None, discount: float = 1.0,
                     features: str = "state_action",
                     dtype=None) -> tuple[TabularMDP, jax.Array]:
  """The combination lock (a tree MDP whose only reward sits at the end of one
  path), the hard case for exploration that expert resets sidestep.

  States (`S = depth + 2`): `h ∈ {0, …, depth − 1}` is level `h` of the good
  chain, `depth` the absorbing success state, `depth + 1` the absorbing dead
  state. At level `h` the action `combination[h]` moves to level `h + 1` (from
  level `depth − 1`: to success) and every other action to the dead state.
  `reward(depth − 1, combination[depth − 1]) = 1`, every other reward is 0.
  `initial` is level 0.

  Horizon: use `horizon = depth` (the success reward is collected at step
  `depth − 1`); any longer horizon gives the same returns, both absorbing states
  being reward-free. With the default `discount = 1`, use the finite-horizon
  solvers. The optimal return is 1 and a uniformly random policy succeeds with
  probability `(1/num_actions)^depth`.

  The combination is `jax.random.randint(key, (depth,), 0, num_actions, int32)`, or all
  zeros when `key` is None.

  Features: `"state_action"` → `[S, A, S·A]` one-hot of `(s, a)` (index
  `s·A + a`; the reward is linear in it); `"onehot"` → `[S, A, S]` one-hot of the
  state.

  Args:
    depth: number of digits, >= 1.
    num_actions: `A >= 2`.
    key: `None`, a PRNG key or an int seed.
    discount: `γ ∈ [0, 1]`.
    features: `"state_action"` or `"onehot"`.
    dtype: float dtype of the leaves (default float32).

  Returns:
    `(mdp, combination)` with `combination[depth]` int32.
  """
  fn = "combination_lock"
  depth = _int(fn, "depth", depth, 1)
  a = _int(fn, "num_actions", num_actions, 2)
  discount = _unit(fn, "discount", discount)
  if features not in ("state_action", "onehot"):
    raise ValueError(f"{fn}: `features` must be 'state_action' or 'onehot', got {features!r}.")
  if key is None:
    combination = np.zeros(depth, np.int64)
  else:
    combination = np.asarray(jax.random.randint(_key(fn, key), (depth,), 0, a, jnp.int32))
  s = depth + 2
  success, dead = depth, depth + 1
  p = np.zeros((s, a, s))
  p[:depth, :, dead] = 1.0
  levels = np.arange(depth)
  p[levels, combination, dead] = 0.0
  p[levels, combination, levels + 1] = 1.0
  p[success, :, success] = 1.0
  p[dead, :, dead] = 1.0
  reward = np.zeros((s, a))
  reward[depth - 1, combination[depth - 1]] = 1.0
  if features == "state_action":
    feats = np.eye(s * a).reshape(s, a, s * a)
  else:
    feats = np.broadcast_to(np.eye(s)[:, None, :], (s, a, s))
  initial = np.zeros(s)
  initial[0] = 1.0
  mdp = _finish(p, initial, discount, dtype=dtype, reward=reward, features=feats)
  return mdp, jnp.asarray(combination, jnp.int32)


# ---------------------------------------------------------------------------
# Registry.

_REGISTRY: dict[str, Callable[..., Any]] = {
    "gridworld": gridworld,
    "random_mdp": random_mdp,
    "constrained_gridworld": constrained_gridworld,
    "combination_lock": combination_lock,
}


def registered() -> tuple[str, ...]:
  """The names `make` accepts."""
  return tuple(_REGISTRY)


def make(name: str, *args, **kwargs):
  """`make("gridworld", size=5)` → the generator registered under `name`, called
  with the arguments (gymnax style). Returns what it returns (a `TabularMDP`, or
  `(mdp, combination)` for `"combination_lock"`)."""
  try:
    builder = _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"make: unknown environment {name!r}; known: "
                     f"{', '.join(registered())}.") from None
  return builder(*args, **kwargs)
