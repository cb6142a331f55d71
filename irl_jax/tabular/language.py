"""Language-conditioned goals in procedural houses, after Fu et al. (2019) [reconstruction].

Fu, Korattikara, Levine & Guadarrama (2019), "From language to goals: inverse
reinforcement learning for vision-based instruction following", learn a
language-conditioned reward `r_θ(s, command)` by maximum-entropy IRL with exact
dynamic programming in each training house and show that, in unseen houses, the
soft-optimal policy of the learned reward follows commands far better than a
language-conditioned policy trained on the same demonstrations. The paper's exact
method text was not available here: this module is a tabular reconstruction.

Layouts (`language_layouts`): a `size × size` house, row 0 at the top, state
`s = row·size + col`. With `rooms=True` one straight interior wall (vertical or
horizontal, at a random line `2 … size − 3`) with one door splits the house
into two rooms. `num_objects` objects with distinct (colour, shape) pairs lie on
distinct free cells, drawn at random for every layout, so a command's goal cell
is no fixed index across layouts. Actions (`ACTION_NAMES`): up, down, left,
right, stay; a move into a wall or the outer border leaves the agent where it
is; with probability `slip` a uniformly random action (of the five) replaces the
chosen one. Wall cells are states the agent never enters (they keep it, and the
initial distribution gives them 0). `initial` is uniform over the free cells
without an object. The discount is 1: use the finite-horizon solvers.

Commands: one per object, `TEMPLATES` such as "go to the {colour} {shape}"
filled in with the object's words, a template drawn per command, tokenised by
`vocabulary(...)` into `[W]` ids (0 is padding). The true reward of a command
is state-only: 1 on its object's cell (`goals[l, m]`), 0 elsewhere, for every
action (`goal_rewards`).

Observations (`obs[L, S, P, K]`, a semantic grid of `P` cells with `K` channels
seen from every agent cell `s`):

* `view="egocentric"` (default): the `(2R + 1) × (2R + 1)` window centred on the
  agent (`R = view_radius`, default `size − 1`, so every cell of the house is in
  view from anywhere), window cells row-major, channels `[wall or outside,
  colour one-hot, shape one-hot]` (`K = 1 + #colours + #shapes`). The agent is
  implicitly at the centre cell `P // 2`.
* `view="global"`: the whole house (`P = S`), channels `[wall, colour one-hot,
  shape one-hot, agent here]`.

Encoder (`init_encoder`, `encoder_apply`), one architecture for the reward and
for behaviour cloning, which differ only in the output size (1 vs `A`): a bag of
word embeddings (mean over the non-padding tokens) gives the command vector
`e`; every grid cell's channels go through one shared linear map (a 1×1
convolution) to `F` features, which the command modulates FiLM-style,
`g_p = relu(W_c·x_p ⊙ (1 + γ(e)) + β(e))` (so "this cell holds the named
object" is one computation shared by all cells); the `P·F` gated features then
go through a position-specific dense layer, a hidden layer and a linear head.
`[..., S, P, K]` observations and `[..., M, W]` commands give `[..., M, S, out]`.

Training (`make_irl_learner`, `make_bc_learner`): gradient descent over
`lax.scan` on all training layouts or on a random batch of them per step,
jit-compilable and `jax.vmap`-able over seeds. IRL minimises the mean over
training (layout, command) pairs of `irl.mce_irl_loss` (finite horizon,
state-only reward broadcast over actions, each pair's DP started from its
demonstrations' start states), with `jax.vmap` over layouts and commands; BC
minimises the mean `irl.behaviour_cloning_loss` of the demonstrated (state,
action) pairs under the same encoder.

Every function after the generator is pure and takes arrays (a
`LanguageLayouts` is a pytree of arrays), so whole studies `jax.vmap` over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl_jax.tabular import dp, irl
from irl_jax.tabular.mdp import TabularMDP, make_mdp

__all__ = [
    "ACTION_NAMES",
    "COLOURS",
    "PAD",
    "SHAPES",
    "TEMPLATES",
    "Demonstrations",
    "GoalMetrics",
    "LanguageLayouts",
    "Vocabulary",
    "bc_loss",
    "demonstrations",
    "encoder_apply",
    "evaluate_policies",
    "expert_policies",
    "goal_metrics",
    "goal_probability",
    "goal_rewards",
    "init_encoder",
    "irl_loss",
    "language_layouts",
    "make_bc_learner",
    "make_irl_learner",
    "render",
    "reward_policies",
    "vocabulary",
]

ACTION_NAMES = ("up", "down", "left", "right", "stay")
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))
COLOURS = ("red", "green", "blue")
SHAPES = ("box", "ball", "key")
TEMPLATES = ("go to the {colour} {shape}", "find the {colour} {shape}",
             "walk to the {colour} {shape}")
PAD = "<pad>"


# ---------------------------------------------------------------------------
# Vocabulary.


class Vocabulary(NamedTuple):
  """Word-level tokenizer: `words[0]` is the padding token `"<pad>"`."""
  words: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.words)

  def encode(self, text: str, length: int) -> np.ndarray:
    """`[length]` int32 ids of the whitespace-separated words of `text`, padded with 0."""
    ids = [self.words.index(w) if w in self.words else -1 for w in text.split()]
    if -1 in ids:
      unknown = [w for w in text.split() if w not in self.words]
      raise ValueError(f"Vocabulary.encode: unknown words {unknown} in {text!r}.")
    if len(ids) > length:
      raise ValueError(f"Vocabulary.encode: {text!r} has {len(ids)} words, more than "
                       f"length={length}.")
    return np.asarray(ids + [0] * (length - len(ids)), np.int32)

  def decode(self, ids) -> str:
    """The text of `[W]` ids, padding dropped."""
    return " ".join(self.words[int(i)] for i in np.asarray(ids).ravel() if int(i) != 0)


def vocabulary(colours: Sequence[str] = COLOURS, shapes: Sequence[str] = SHAPES,
               templates: Sequence[str] = TEMPLATES) -> Vocabulary:
  """The vocabulary of the commands: padding, then the templates' words in order of
  first appearance, then the colours and the shapes."""
  words = [PAD]
  for t in templates:
    for w in t.split():
      if "{" not in w and w not in words:
        words.append(w)
  for w in (*colours, *shapes):
    if w not in words:
      words.append(w)
  return Vocabulary(tuple(words))


def _command_length(templates: Sequence[str]) -> int:
  return max(len(t.split()) for t in templates)


# ---------------------------------------------------------------------------
# Layouts.


class LanguageLayouts(NamedTuple):
  """A batch of `L` houses with `M` commands each (dimension letters of
  `irl_jax.tabular.mdp`; `O = M` objects, `W` words per command).

  Attributes:
    mdp: batched `TabularMDP`, leaves `[L, ...]`: `transitions[L, S, A, S]`,
      `initial[L, S]`, `discount[L]` (all 1); `reward`, `features` are None (the
      reward depends on the command: `goal_rewards`).
    obs: `[L, S, P, K]` float32 semantic grid (`P` cells, `K` channels) seen from
      every agent cell.
    commands: `[L, M, W]` int32 token ids (0 = padding).
    goals: `[L, M]` int32, the goal cell of each command.
    objects: `[L, O, 3]` int32 rows `(cell, colour index, shape index)`; command
      `m` names object `m`.
    walls: `[L, S]` bool, wall cells.
  """
  mdp: TabularMDP
  obs: jax.Array
  commands: jax.Array
  goals: jax.Array
  objects: jax.Array
  walls: jax.Array


def _rng(fn: str, key) -> np.random.Generator:
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    key = jax.random.key(int(key))
  if key is None:
    raise ValueError(f"{fn}: `key` must be a PRNG key (or an int seed), got None.")
  bits = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
  return np.random.default_rng([int(b) for b in bits])


def _transitions(size: int, walls: np.ndarray, slip: float) -> np.ndarray:
  """`P[S, 5, S]`: deterministic moves blocked by walls and the border, then slip."""
  num = size * size
  rows, cols = np.divmod(np.arange(num), size)
  move = np.empty((num, len(_MOVES)), np.int64)
  for b, (dr, dc) in enumerate(_MOVES):
    r, c = rows + dr, cols + dc
    inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    target = np.where(inside, r * size + c, np.arange(num))
    target = np.where(walls[np.clip(target, 0, num - 1)], np.arange(num), target)
    move[:, b] = np.where(walls, np.arange(num), target)
  det = np.zeros((num, len(_MOVES), num))
  np.put_along_axis(det, move[:, :, None], 1.0, axis=-1)
  return (1.0 - slip) * det + slip * det.mean(1, keepdims=True)


def _semantic_grid(size, walls, objects, num_colours, num_shapes) -> np.ndarray:
  """`[size, size, 1 + nc + ns]`: wall, colour one-hot, shape one-hot per cell."""
  grid = np.zeros((size, size, 1 + num_colours + num_shapes), np.float32)
  grid[..., 0] = walls.reshape(size, size)
  for cell, colour, shape in objects:
    r, c = divmod(int(cell), size)
    grid[r, c, 1 + colour] = 1.0
    grid[r, c, 1 + num_colours + shape] = 1.0
  return grid


def _observations(view, radius, size, grid) -> np.ndarray:
  """`[S, P, K]`: the semantic grid seen from every agent cell (module docstring)."""
  num, channels = size * size, grid.shape[-1]
  if view == "global":
    cells = np.broadcast_to(grid.reshape(1, num, channels), (num, num, channels))
    return np.concatenate([cells, np.eye(num, dtype=np.float32)[:, :, None]], -1)
  padded = np.zeros((size + 2 * radius, size + 2 * radius, channels), np.float32)
  padded[..., 0] = 1.0  # outside the house reads as wall
  padded[radius:radius + size, radius:radius + size] = grid
  width = 2 * radius + 1
  obs = np.empty((num, width * width, channels), np.float32)
  for s in range(num):
    r, c = divmod(s, size)
    obs[s] = padded[r:r + width, c:c + width].reshape(-1, channels)
  return obs


def _connected(size: int, walls: np.ndarray) -> bool:
  free = np.flatnonzero(~walls)
  seen, stack = {int(free[0])}, [int(free[0])]
  while stack:
    s = stack.pop()
    r, c = divmod(s, size)
    for dr, dc in _MOVES[:4]:
      rr, cc = r + dr, c + dc
      t = rr * size + cc
      if 0 <= rr < size and 0 <= cc < size and not walls[t] and t not in seen:
        seen.add(t)
        stack.append(t)
  return len(seen) == len(free)


def language_layouts(key, num_layouts: int, *, size: int = 7, num_objects: int = 3,
                     colours: Sequence[str] = COLOURS, shapes: Sequence[str] = SHAPES,
                     templates: Sequence[str] = TEMPLATES, rooms: bool = True,
                     slip: float = 0.0, view: str = "egocentric",
                     view_radius: int | None = None) -> LanguageLayouts:
  """`num_layouts` random houses with their commands (design in the module docstring).

  Host-side setup: draws with NumPy from a generator seeded by `key`, so the same
  key and arguments always give the same layouts; the MDPs pass `check_mdp`.

  Args:
    key: a PRNG key (or an int seed).
    num_layouts: `L >= 1`.
    size: house side, >= 5 with rooms (else >= 3).
    num_objects: `O = M`, at most `len(colours)·len(shapes)`.
    colours, shapes: the object words.
    templates: command templates with `{colour}` and `{shape}` fields.
    rooms: one interior wall with a door.
    slip: probability in [0, 1] that a random action replaces the chosen one.
    view: `"egocentric"` or `"global"`.
    view_radius: `R` of the egocentric window (default `size − 1`).

  Returns:
    `LanguageLayouts` with leaves `[L, ...]`; `S = size²`, `A = 5`.
  """
  fn = "language_layouts"
  if int(num_layouts) < 1:
    raise ValueError(f"{fn}: `num_layouts` must be >= 1, got {num_layouts}.")
  if int(size) < (5 if rooms else 3):
    raise ValueError(f"{fn}: `size` must be >= {5 if rooms else 3}, got {size}.")
  if not 1 <= num_objects <= len(colours) * len(shapes):
    raise ValueError(f"{fn}: `num_objects` must lie in [1, {len(colours) * len(shapes)}] "
                     f"(distinct colour-shape pairs), got {num_objects}.")
  if not 0.0 <= float(slip) <= 1.0:
    raise ValueError(f"{fn}: `slip` must lie in [0, 1], got {slip}.")
  if view not in ("egocentric", "global"):
    raise ValueError(f"{fn}: `view` must be 'egocentric' or 'global', got {view!r}.")
  for t in templates:
    if "{colour}" not in t or "{shape}" not in t:
      raise ValueError(f"{fn}: template {t!r} needs both {{colour}} and {{shape}}.")
  radius = size - 1 if view_radius is None else int(view_radius)
  if radius < 0:
    raise ValueError(f"{fn}: `view_radius` must be >= 0, got {view_radius}.")
  rng = _rng(fn, key)
  vocab = vocabulary(colours, shapes, templates)
  width = _command_length(templates)
  num = size * size
  nc, ns = len(colours), len(shapes)
  out = {k: [] for k in ("p", "nu0", "obs", "cmd", "goal", "obj", "wall")}
  for _ in range(int(num_layouts)):
    walls = np.zeros(num, bool)
    if rooms:
      line, door = rng.integers(2, size - 2), rng.integers(size)
      cells = np.arange(size)
      cells = cells[cells != door]
      if rng.integers(2):  # vertical wall in column `line`
        walls[cells * size + line] = True
      else:
        walls[line * size + cells] = True
    assert _connected(size, walls)
    free = np.flatnonzero(~walls)
    if num_objects >= len(free):
      raise ValueError(f"{fn}: {num_objects} objects do not fit the {len(free)} free cells "
                       "with a cell left to start in.")
    cells = rng.choice(free, num_objects, replace=False)
    kinds = rng.choice(nc * ns, num_objects, replace=False)
    objects = np.stack([cells, kinds // ns, kinds % ns], -1).astype(np.int32)
    initial = (~walls).astype(float)
    initial[cells] = 0.0
    grid = _semantic_grid(size, walls, objects, nc, ns)
    commands = np.stack([
        vocab.encode(templates[rng.integers(len(templates))].format(
            colour=colours[c], shape=shapes[k]), width) for _, c, k in objects])
    out["p"].append(_transitions(size, walls, float(slip)))
    out["nu0"].append(initial / initial.sum())
    out["obs"].append(_observations(view, radius, size, grid))
    out["cmd"].append(commands)
    out["goal"].append(objects[:, 0])
    out["obj"].append(objects)
    out["wall"].append(walls)
  mdp = make_mdp(np.stack(out["p"]), np.stack(out["nu0"]), np.ones(int(num_layouts)),
                 dtype=jnp.float32)
  return LanguageLayouts(mdp, jnp.asarray(np.stack(out["obs"])),
                         jnp.asarray(np.stack(out["cmd"]), jnp.int32),
                         jnp.asarray(np.stack(out["goal"]), jnp.int32),
                         jnp.asarray(np.stack(out["obj"]), jnp.int32),
                         jnp.asarray(np.stack(out["wall"])))


def render(layouts: LanguageLayouts, index: int, *, colours: Sequence[str] = COLOURS,
           shapes: Sequence[str] = SHAPES) -> str:
  """An ASCII picture of layout `index`: `#` wall, `.` free, objects as the first
  letters of colour and shape (e.g. `rb` for a red box), two characters per cell."""
  walls = np.asarray(layouts.walls[index])
  size = math.isqrt(walls.size)
  cells = ["##" if w else " ." for w in walls]
  for cell, c, k in np.asarray(layouts.objects[index]):
    cells[int(cell)] = colours[c][0] + shapes[k][0]
  return "\n".join("".join(cells[r * size:(r + 1) * size]) for r in range(size))


def goal_rewards(layouts: LanguageLayouts) -> jax.Array:
  """`[L, M, S]` true state rewards: 1 on each command's goal cell."""
  return jax.nn.one_hot(layouts.goals, layouts.mdp.transitions.shape[-3], dtype=jnp.float32)


def _per_command(fn, layouts: LanguageLayouts, *per_command):
  """`fn(mdp, *xs)` mapped over layouts (with their MDP) and then their commands."""
  inner = jax.vmap(fn, in_axes=(None,) + (0,) * len(per_command))
  return jax.vmap(inner)(layouts.mdp, *per_command)


# ---------------------------------------------------------------------------
# Experts and demonstrations.


class Demonstrations(NamedTuple):
  """Expert demonstrations per (layout, command).

  Attributes:
    trajectories: `dp.Trajectories` with leaves `[L, M, N, T]`.
    occupancy: `[L, M, S, A]` empirical occupancy (discount 1, summed over steps).
    initial: `[L, M, S]` empirical distribution of the demonstrations' start states.
  """
  trajectories: dp.Trajectories
  occupancy: jax.Array
  initial: jax.Array


def expert_policies(layouts: LanguageLayouts, *, horizon: int, scale: float = 10.0,
                    temperature: float = 1.0) -> jax.Array:
  """`[L, M, T, S, A]`: the soft-optimal policy of `scale ×` the true reward (large
  `scale`: near-optimal, uniform over tied shortest paths)."""
  def one(mdp, r):
    reward = jnp.broadcast_to(scale * r[:, None], (r.shape[0], mdp.num_actions))
    return dp.finite_soft_value_iteration(reward, mdp, horizon=horizon,
                                          temperature=temperature).policy
  return _per_command(one, layouts, goal_rewards(layouts))


def demonstrations(key, layouts: LanguageLayouts, *, horizon: int, num_demos: int,
                   scale: float = 10.0, temperature: float = 1.0) -> Demonstrations:
  """`num_demos` trajectories of `horizon` steps per (layout, command), sampled from
  `expert_policies`, starting from each layout's `initial`."""
  policies = expert_policies(layouts, horizon=horizon, scale=scale, temperature=temperature)
  num_layouts, num_commands = layouts.goals.shape
  keys = jax.random.split(key, num_layouts * num_commands).reshape(num_layouts, num_commands)
  s, a = layouts.mdp.transitions.shape[-3:-1]

  def one(mdp, k, pi):
    traj = dp.sample_trajectories(k, pi, mdp, horizon=horizon, num_trajectories=num_demos)
    occ = dp.empirical_occupancy(traj.states, traj.actions, num_states=s, num_actions=a,
                                 discount=1.0)
    return traj, occ, jax.nn.one_hot(traj.states[:, 0], s).mean(0)
  return Demonstrations(*_per_command(one, layouts, keys, policies))


# ---------------------------------------------------------------------------
# Encoder.


def _dense(key, fan_in: int, fan_out: int, scale: float = 1.0):
  w = jax.random.normal(key, (fan_in, fan_out)) * scale / np.sqrt(fan_in)
  return {"w": w, "b": jnp.zeros(fan_out)}


def init_encoder(key, *, num_cells: int, num_channels: int, vocab_size: int, out_dim: int,
                 cell_features: int = 8, hidden: int = 64, embed: int = 32) -> dict:
  """Parameters of the encoder in the module docstring for `[..., P, K]` observations
  (`num_cells = P`, `num_channels = K`): LeCun-normal weights, zero biases, and a zero
  output layer, so that rewards start at 0 and policies uniform."""
  k_emb, k_cell, k_film, k_dense, k_hidden = jax.random.split(key, 5)
  return {
      "embed": jax.random.normal(k_emb, (vocab_size, embed)),
      "cell": _dense(k_cell, num_channels, cell_features),
      "film": _dense(k_film, embed, 2 * cell_features),
      "dense": _dense(k_dense, num_cells * cell_features, hidden),
      "hidden": _dense(k_hidden, hidden, hidden),
      "out": {"w": jnp.zeros((hidden, out_dim)), "b": jnp.zeros(out_dim)},
  }


def encoder_apply(params: dict, obs, commands) -> jax.Array:
  """`obs[..., S, P, K]`, `commands[..., M, W]` (same leading axes) → `[..., M, S, out]`."""
  f = obs @ params["cell"]["w"] + params["cell"]["b"]                          # [..., S, P, F]
  mask = (commands != 0).astype(f.dtype)[..., None]
  words = params["embed"][commands] * mask
  e = words.sum(-2) / jnp.maximum(mask.sum(-2), 1.0)                           # [..., M, E]
  gamma, beta = jnp.split(e @ params["film"]["w"] + params["film"]["b"], 2, -1)  # [..., M, F]
  expand = lambda x: x[..., :, None, None, :]                                  # [..., M, 1, 1, F]
  g = jax.nn.relu(f[..., None, :, :, :] * (1.0 + expand(gamma)) + expand(beta))  # [..., M, S, P, F]
  z = jax.nn.relu(g.reshape(*g.shape[:-2], -1) @ params["dense"]["w"] + params["dense"]["b"])
  z = jax.nn.relu(z @ params["hidden"]["w"] + params["hidden"]["b"])
  return z @ params["out"]["w"] + params["out"]["b"]


# ---------------------------------------------------------------------------
# Losses and learners.


def irl_loss(params: dict, layouts: LanguageLayouts, demos: Demonstrations, *, horizon: int,
             temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Mean `irl.mce_irl_loss` over (layout, command) pairs of the state-only reward
  `r_θ(s, command) = encoder_apply(...)[..., 0]`, broadcast over actions.

  Each pair's soft value iteration starts from its demonstrations' empirical
  start distribution `demos.initial` (not the layout's `initial`): the loss is
  then the expert's negative causal log-likelihood up to a constant, bounded
  below. With the layout's `ν0` instead, a start state that no demonstration
  happens to start from could take a reward of −∞ and the loss with it.

  Returns `(loss, occupancy_error)`, the latter the mean `‖ρ_θ − ρ_E‖₁ / T`
  (0 = matched, 2 = disjoint).
  """
  rewards = encoder_apply(params, layouts.obs, layouts.commands)[..., 0]  # [L, M, S]

  def one(mdp, r, occ, initial):
    reward = jnp.broadcast_to(r[:, None], (r.shape[0], mdp.num_actions))
    loss, extras = irl.mce_irl_loss(reward, occ, mdp._replace(initial=initial),
                                    temperature=temperature, horizon=horizon)
    return loss, extras.occupancy_error
  losses, errors = _per_command(one, layouts, rewards, demos.occupancy, demos.initial)
  return losses.mean(), errors.mean() / horizon


def bc_loss(params: dict, layouts: LanguageLayouts, states, actions) -> jax.Array:
  """Mean `irl.behaviour_cloning_loss` of the demonstrated pairs `states[L, M, N, T]`,
  `actions[L, M, N, T]` under the logits `encoder_apply(...)` `[L, M, S, A]`."""
  logits = encoder_apply(params, layouts.obs, layouts.commands)

  def one(lg, s, a):
    return irl.behaviour_cloning_loss(lg, s.reshape(-1), a.reshape(-1)).mean()
  return jax.vmap(jax.vmap(one))(logits, states, actions).mean()


def _scan(loss_fn, optimizer, steps, params, key, num_layouts, batch_layouts):
  """`steps` optimiser steps on `loss_fn(params, layout_indices)`: all layouts, or
  `batch_layouts` of them drawn without replacement afresh at every step."""
  opt_state = optimizer.init(params)

  def step(carry, k):
    params, opt_state = carry
    idx = (jnp.arange(num_layouts) if batch_layouts is None
           else jax.random.choice(k, num_layouts, (batch_layouts,), replace=False))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, idx)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, aux)

  (params, _), (losses, aux) = jax.lax.scan(step, (params, opt_state),
                                            jax.random.split(key, steps))
  return params, losses, aux


def _check_batch(fn, batch_layouts, num_layouts):
  if batch_layouts is not None and not 1 <= batch_layouts <= num_layouts:
    raise ValueError(f"{fn}: `batch_layouts` must lie in [1, {num_layouts}] (the number of "
                     f"training layouts) or be None, got {batch_layouts}.")


def _take(tree, idx):
  return jax.tree.map(lambda x: x[idx], tree)


def make_irl_learner(*, vocab_size: int, optimizer: optax.GradientTransformation, steps: int,
                     horizon: int, temperature: float = 1.0, batch_layouts: int | None = None,
                     **encoder):
  """MaxEnt IRL of a language-conditioned state reward (`irl_loss`).

  Args:
    vocab_size: the commands' vocabulary size.
    optimizer: an optax transformation.
    steps: gradient steps (static).
    horizon: the finite horizon `T` of the demonstrations and the DP.
    temperature: `α`.
    batch_layouts: layouts per step (drawn without replacement each step), or
      None for every layout (full batch).
    **encoder: `init_encoder` sizes (`cell_features`, `hidden`, `embed`).

  Returns:
    `train(key, layouts, demos) -> (params, log)`, `log` with `loss[steps]` and
    `occupancy_error[steps]` (of each step's batch). Seed-vmappable: `jax.vmap(train)`.
  """
  def train(key, layouts: LanguageLayouts, demos: Demonstrations):
    num = layouts.goals.shape[0]
    _check_batch("make_irl_learner", batch_layouts, num)
    k_init, k_batch = jax.random.split(key)
    params = init_encoder(k_init, num_cells=layouts.obs.shape[-2],
                          num_channels=layouts.obs.shape[-1], vocab_size=vocab_size, out_dim=1,
                          **encoder)

    def loss_fn(p, idx):
      return irl_loss(p, _take(layouts, idx), _take(demos, idx), horizon=horizon,
                      temperature=temperature)
    params, losses, errors = _scan(loss_fn, optimizer, steps, params, k_batch, num,
                                   batch_layouts)
    return params, {"loss": losses, "occupancy_error": errors}
  return train


def make_bc_learner(*, vocab_size: int, num_actions: int,
                    optimizer: optax.GradientTransformation, steps: int,
                    batch_layouts: int | None = None, **encoder):
  """Language-conditioned behaviour cloning with the same encoder (`bc_loss`); arguments
  as `make_irl_learner`'s, plus `num_actions` (the logits' size).

  Returns:
    `train(key, layouts, demos) -> (params, log)` with `log["loss"][steps]` (only
    `demos.trajectories` is read). Seed-vmappable.
  """
  def train(key, layouts: LanguageLayouts, demos: Demonstrations):
    num = layouts.goals.shape[0]
    _check_batch("make_bc_learner", batch_layouts, num)
    k_init, k_batch = jax.random.split(key)
    params = init_encoder(k_init, num_cells=layouts.obs.shape[-2],
                          num_channels=layouts.obs.shape[-1], vocab_size=vocab_size,
                          out_dim=num_actions, **encoder)

    def loss_fn(p, idx):
      traj = _take(demos.trajectories, idx)
      return bc_loss(p, _take(layouts, idx), traj.states, traj.actions), None
    params, losses, _ = _scan(loss_fn, optimizer, steps, params, k_batch, num, batch_layouts)
    return params, {"loss": losses}
  return train


# ---------------------------------------------------------------------------
# Evaluation.


class GoalMetrics(NamedTuple):
  """`success`: probability of being on the goal at the last step `T − 1` from
  `initial`; `steps_on_goal`: expected number of steps spent on the goal (the
  undiscounted return of the true reward)."""
  success: jax.Array
  steps_on_goal: jax.Array


def goal_probability(policy, mdp: TabularMDP, goal, *, horizon: int) -> jax.Array:
  """`[S]`: probability of being on `goal` at step `T − 1` from each start state, by
  the backward recursion `u_{T−1} = 1[goal]`, `u_t = Σ_a π_t(a|·) P u_{t+1}`.
  `policy[S, A]` or `[T, S, A]`; one MDP."""
  s = mdp.transitions.shape[-3]
  policies = jnp.broadcast_to(policy, (horizon, *policy.shape[-2:]))
  p = mdp.transitions.astype(policies.dtype)

  def back(u, pi_t):
    return jnp.einsum("sa,sat,t->s", pi_t, p, u), None
  u, _ = jax.lax.scan(back, jax.nn.one_hot(goal, s, dtype=p.dtype), policies[:-1],
                      reverse=True)
  return u


def goal_metrics(policy, mdp: TabularMDP, goal, *, horizon: int) -> GoalMetrics:
  """`GoalMetrics` of `policy[S, A]` or `[T, S, A]` for one MDP and goal cell."""
  s, a = mdp.transitions.shape[-3:-1]
  success = jnp.dot(mdp.initial, goal_probability(policy, mdp, goal, horizon=horizon))
  reward = jnp.broadcast_to(jax.nn.one_hot(goal, s)[:, None], (s, a))
  return GoalMetrics(success, dp.expected_return(policy, reward, mdp, horizon=horizon))


def reward_policies(rewards, layouts: LanguageLayouts, *, horizon: int,
                    temperature: float = 1.0) -> jax.Array:
  """`[L, M, T, S, A]`: exact finite-horizon soft-optimal policies of state rewards
  `rewards[L, M, S]` in each layout."""
  def one(mdp, r):
    reward = jnp.broadcast_to(r[:, None], (r.shape[0], mdp.num_actions))
    return dp.finite_soft_value_iteration(reward, mdp, horizon=horizon,
                                          temperature=temperature).policy
  return _per_command(one, layouts, rewards)


def evaluate_policies(policies, layouts: LanguageLayouts, *, horizon: int) -> GoalMetrics:
  """`GoalMetrics` with leaves `[L, M]` of `policies[L, M, S, A]` or `[L, M, T, S, A]`
  for each command's true goal."""
  def one(mdp, policy, goal):
    return goal_metrics(policy, mdp, goal, horizon=horizon)
  return _per_command(one, layouts, policies, layouts.goals)
