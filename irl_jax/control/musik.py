"""Multi-step inverse kinematics (MusIK) on a block-MDP combination lock: a
reconstruction of the representation-learning explorer of Mhammedi, Foster &
Rakhlin (2023), with one-step inverse kinematics and uniform random exploration as
baselines.

This module is a **reconstruction**. The paper's exact algorithm (its function
classes, optimiser, how partial policies are chained for data collection, how the
targets of a layer are named) is not available here; the choices marked *ours*
below are this module's, not the paper's.

The environment (`BlockLock`, `make_lock`)
-------------------------------------------
A horizon-`H` combination lock with rich observations. Layers `h = 0, …, H`; at
every layer there are `S = num_latent` latent states: `0, …, S − 2` are *good*,
`S − 1` is *bad*. The episode starts in a good latent of layer 0 (uniformly).
From a good latent `s` of layer `h` the single correct action
`correct_action[h, s]` leads to a good
latent of layer `h + 1`, chosen uniformly; every other action leads to the bad
latent, which is absorbing (every action keeps it bad). The good latents of a layer
have distinct correct actions (a random permutation's first `S − 1` entries,
*ours*), so that no two of them are equivalent to a learner. The agent takes actions
at layers `0, …, H − 1` and succeeds when it is in a good latent at layer `H`, so
uniformly random actions succeed with probability exactly `A^−H`
(`random_reach_probability`).

The agent never sees the latent. At layer `h` it observes

    x = Q · concat(onehot(latent, S), [onehot(h, H + 1)], noise_std · ε),
    ε ~ N(0, I_noise_dim),

with `Q` a fixed random orthogonal (Haar) matrix of the lock and the layer
one-hot present only with `include_layer=True`. Observations of different latents
never coincide (a block MDP), and the latent is a linear function of `x`, so a
linear decoder can be exact; the noise dimensions carry nothing but spurious
correlations for a learner with few samples.

The learner (`make_musik`)
--------------------------
MusIK builds, layer by layer `h = 1, …, H`, a *policy cover* of layer `h`: one
policy per decoded label `j ∈ {0, …, S − 1}` of layer `h`, meant to reach the
latent that label names. For layer `h` and `t = h − 1, h − 2, …, 0` it collects
`num_samples` episodes: roll in to layer `t` with a policy of the layer-`t` cover
(its label drawn uniformly; layer 0 needs none), take a uniform action `a_t`,
then follow the layer-`h` partial policies already learned for layers
`t + 1, …, h − 1` (their target label drawn uniformly per episode, *ours*) and
record `(x_t, a_t, x_h)`. On these it fits an inverse-kinematics model by
maximum likelihood,

    f(a_t | x_t, x_h) = Σ_{i, j} φ_i(x_t) ψ_j(x_h) softmax(W_ij)[a_t],

where `φ` (decoder of layer `t`) and `ψ` (decoder of layer `h`) are linear
softmax classifiers onto `S` labels and `W` an `S × S × A` table of logits (all
*ours*: the paper allows general function classes). The decoders' discrete labels
are summed out exactly (`S²` terms), the objective that EM maximises, so neither
Gumbel-softmax noise nor hard assignments are needed during training (*ours*);
at decision time the decoders are hard (`argmax`). The layer-`h` decoder `ψ` is
learned by the first fit of the layer (`t = h − 1`) and frozen for the earlier
`t`, so that a target label means the same latent at every step (*ours*). The
partial policy of step `t` for target label `j` of layer `h` is greedy in the fitted
model: `π_{t,h,j}(x) = argmax_a W[argmax φ(x), j, a]`; the cover policy for label
`j` of layer `h` plays `π_{0,h,j}, π_{1,h,j}, …, π_{h−1,h,j}`. Each layer costs
`h · num_samples` episodes.

One-step inverse kinematics (`multi_step=False`) is the special case that fits
only `t = h − 1`. Its cover for label `j` of layer `h` must reach layer `h − 1`
with an earlier cover policy: it uses the layer-`(h − 1)` cover policy whose
episodes (in the fit's own data) most often ended in label `j`, then the greedy
step-`(h − 1)` action, recursively (a forward composition in the spirit of
PCID/HOMER; *ours*). Each layer costs `num_samples` episodes.

Everything a train run does is a pure function of its key and lock: `train` jits
and vmaps over seeds and locks (stack `make_lock` outputs; build each lock, which
draws its rotation with a host-side QR, outside any transform). A traced
`num_samples` below the config's (the buffer size) trains on the first episodes
only, so a sample-size sweep is one vmapped program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "BlockLock",
    "IKParams",
    "Musik",
    "MusikConfig",
    "MusikState",
    "cover_plan",
    "decoder_purity",
    "exact_reach_probability",
    "fit_inverse_kinematics",
    "greedy_action",
    "ik_log_likelihood",
    "make_lock",
    "make_musik",
    "monte_carlo_reach",
    "observe",
    "random_reach_probability",
    "reset",
    "run_episode",
    "step",
]


# --- the environment -------------------------------------------------------------------


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["correct_action", "rotation"],
                   meta_fields=["num_actions", "noise_dim", "noise_std", "include_layer"])
@dataclasses.dataclass(frozen=True)
class BlockLock:
  """A block-MDP combination lock (see the module docstring).

  `correct_action[h, s]` (int32, `[H, S]`) is the correct action of latent `s` at
  layer `h` (`-1` for the bad latent `S − 1`); `rotation` (`[D, D]`) is the
  orthogonal matrix applied to every observation. The sizes are static pytree
  metadata, so stacked locks vmap.
  """

  correct_action: jax.Array
  rotation: jax.Array
  num_actions: int
  noise_dim: int
  noise_std: float
  include_layer: bool

  @property
  def horizon(self) -> int:
    return self.correct_action.shape[-2]

  @property
  def num_latent(self) -> int:
    return self.correct_action.shape[-1]

  @property
  def obs_dim(self) -> int:
    return self.rotation.shape[-1]


def _check_int(name: str, value, low: int) -> None:
  if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def make_lock(key: jax.Array, horizon: int, num_latent: int = 3, num_actions: int = 4,
              noise_dim: int = 8, noise_std: float = 1.0,
              include_layer: bool = False) -> BlockLock:
  """A random combination lock (host-side setup: call it outside jit/vmap).

  The correct actions of a layer's good latents are distinct and uniformly drawn; the
  rotation is Haar-distributed, from the QR decomposition (NumPy, one lock at a time)
  of a Gaussian matrix drawn with `key`.
  """
  _check_int("horizon", horizon, 1)
  _check_int("num_latent", num_latent, 2)
  _check_int("num_actions", num_actions, 2)
  if num_actions < num_latent - 1:
    raise ValueError(f"num_actions must be >= num_latent - 1 = {num_latent - 1} (distinct "
                     f"correct actions for the good latents), got {num_actions!r}.")
  _check_int("noise_dim", noise_dim, 0)
  if not (np.isfinite(noise_std) and noise_std >= 0):
    raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}.")
  k_act, k_rot = jax.random.split(key)
  # Distinct correct actions for the good latents of a layer (so that inverse
  # kinematics can tell them apart): the first S − 1 of a random permutation.
  perms = jax.vmap(lambda k: jax.random.permutation(k, num_actions))(
      jax.random.split(k_act, horizon))
  correct = np.full((horizon, num_latent), -1, np.int32)
  correct[:, :-1] = np.asarray(perms)[:, :num_latent - 1]
  dim = num_latent + noise_dim + (horizon + 1 if include_layer else 0)
  gauss = np.asarray(jax.random.normal(k_rot, (dim, dim)), np.float64)
  q, r = np.linalg.qr(gauss)
  q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]   # Haar: fix the signs of R's diagonal
  return BlockLock(jnp.asarray(correct), jnp.asarray(q, jnp.float32), int(num_actions),
                   int(noise_dim), float(noise_std), bool(include_layer))


def reset(lock: BlockLock, key: jax.Array) -> jax.Array:
  """The latent of layer 0: uniform over the good latents."""
  return jax.random.randint(key, (), 0, lock.num_latent - 1)


def step(lock: BlockLock, key: jax.Array, layer, latent, action) -> jax.Array:
  """The latent of layer `layer + 1` after `action` in latent `latent` of `layer`."""
  bad = lock.num_latent - 1
  correct = lock.correct_action[layer, jnp.minimum(latent, bad)]
  ok = (latent < bad) & (action == correct)
  return jnp.where(ok, jax.random.randint(key, (), 0, bad), bad).astype(jnp.int32)


def observe(lock: BlockLock, key: jax.Array, layer, latent) -> jax.Array:
  """The rotated observation `[D]` of `latent` at `layer`."""
  parts = [jax.nn.one_hot(latent, lock.num_latent)]
  if lock.include_layer:
    parts.append(jax.nn.one_hot(layer, lock.horizon + 1))
  parts.append(lock.noise_std * jax.random.normal(key, (lock.noise_dim,)))
  return lock.rotation @ jnp.concatenate(parts)


def exact_reach_probability(lock: BlockLock, action_probs: jax.Array) -> jax.Array:
  """Probability of a good latent at layer `H` under a latent-level policy.

  `action_probs[h, s, a]` (`[H, S, A]`) is the probability of action `a` in latent
  `s` of layer `h`; the latent distribution is propagated exactly.
  """
  bad = lock.num_latent - 1
  good = jnp.arange(lock.num_latent) < bad
  d0 = jnp.where(good, 1.0 / bad, 0.0)

  def body(d, inputs):
    probs, correct = inputs
    p_ok = jnp.take_along_axis(probs, jnp.maximum(correct, 0)[:, None], 1)[:, 0]
    mass = jnp.sum(jnp.where(good, d * p_ok, 0.0))
    return jnp.where(good, mass / bad, 1.0 - mass), None

  d, _ = jax.lax.scan(body, d0, (action_probs, lock.correct_action))
  return jnp.sum(jnp.where(good, d, 0.0))


def random_reach_probability(lock: BlockLock) -> jax.Array:
  """Uniform random exploration's exact success probability, `A^−H`."""
  uniform = jnp.full((lock.horizon, lock.num_latent, lock.num_actions), 1.0 / lock.num_actions)
  return exact_reach_probability(lock, uniform)


def monte_carlo_reach(key: jax.Array, lock: BlockLock, num_episodes: int) -> jax.Array:
  """Fraction of `num_episodes` uniformly random episodes that end in a good latent."""

  def episode(k):
    k0, *ks = jax.random.split(k, lock.horizon + 1)
    latent = reset(lock, k0)
    for h in range(lock.horizon):
      ka, kn = jax.random.split(ks[h])
      latent = step(lock, kn, h, latent, jax.random.randint(ka, (), 0, lock.num_actions))
    return latent < lock.num_latent - 1

  return jnp.mean(jax.vmap(episode)(jax.random.split(key, num_episodes)))


# --- the inverse-kinematics model ------------------------------------------------------


class IKParams(NamedTuple):
  """`f(a | x_t, x_h) = Σ_ij φ_i(x_t) ψ_j(x_h) softmax(logits[i, j])[a]` with linear
  softmax decoders `φ = softmax(x phi_w + phi_b)`, `ψ = softmax(x psi_w + psi_b)`."""

  phi_w: jax.Array   # [D, S]
  phi_b: jax.Array   # [S]
  psi_w: jax.Array   # [D, S]
  psi_b: jax.Array   # [S]
  logits: jax.Array  # [S, S, A]


def ik_log_likelihood(params: IKParams, x_t: jax.Array, action, x_h: jax.Array) -> jax.Array:
  """`log f(action | x_t, x_h)` for one sample, the decoders' labels summed out."""
  lp = jax.nn.log_softmax(x_t @ params.phi_w + params.phi_b)
  lq = jax.nn.log_softmax(x_h @ params.psi_w + params.psi_b)
  lf = jax.nn.log_softmax(params.logits, -1)[:, :, action]
  return jax.nn.logsumexp(lp[:, None] + lq[None, :] + lf)


def greedy_action(params: IKParams, x: jax.Array, target) -> jax.Array:
  """`argmax_a logits[argmax φ(x), target, a]`: the partial policy for label `target`."""
  label = jnp.argmax(x @ params.phi_w + params.phi_b)
  return jnp.argmax(params.logits[label, target]).astype(jnp.int32)


def decode(w: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
  """Hard labels `argmax(x w + b)` of observations `x` (`[..., D]`)."""
  return jnp.argmax(x @ w + b, -1)


def decoder_purity(labels: jax.Array, latents: jax.Array, num_latent: int) -> jax.Array:
  """Fraction of samples whose label's majority latent is their own latent
  (`Σ_label max_latent count(label, latent) / N`): 1 for a decoder that never
  merges latents (splitting a latent over labels is not penalised)."""
  counts = jnp.zeros((num_latent, num_latent)).at[labels, latents].add(1.0)
  return jnp.sum(counts.max(1)) / jnp.maximum(counts.sum(), 1.0)


def fit_inverse_kinematics(key: jax.Array, x_t: jax.Array, action: jax.Array, x_h: jax.Array,
                           weight: jax.Array, num_latent: int, num_actions: int,
                           fixed_psi: tuple[jax.Array, jax.Array] | None = None,
                           learn_psi=True, *, num_steps: int = 300,
                           learning_rate: float = 0.05, init_scale: float = 0.1,
                           weight_decay: float = 0.0) -> tuple[IKParams, jax.Array]:
  """Maximum likelihood of the IK model on `(x_t [N, D], action [N], x_h [N, D])`
  with sample weights `weight [N]` (0 drops a sample): full-batch Adam from a random
  initialisation (decoder weights `N(0, init_scale²)`, logits `N(0, 1)`), with an
  L2 penalty `weight_decay · (|phi_w|² + |psi_w|²)` on the decoders' weights.

  Where `learn_psi` is False (it may be traced), the layer-`h` decoder is
  `fixed_psi = (psi_w, psi_b)` and only `φ` and the logits are fitted. Returns the
  parameters and the final mean negative log-likelihood.
  """
  dim = x_t.shape[-1]
  k1, k2, k3 = jax.random.split(key, 3)
  params = IKParams(init_scale * jax.random.normal(k1, (dim, num_latent)),
                    jnp.zeros(num_latent),
                    init_scale * jax.random.normal(k2, (dim, num_latent)),
                    jnp.zeros(num_latent),
                    jax.random.normal(k3, (num_latent, num_latent, num_actions)))
  if fixed_psi is None:
    fixed_psi = (params.psi_w, params.psi_b)
  learn_psi = jnp.asarray(learn_psi)

  def effective(p):
    return p._replace(psi_w=jnp.where(learn_psi, p.psi_w, fixed_psi[0]),
                      psi_b=jnp.where(learn_psi, p.psi_b, fixed_psi[1]))

  total = jnp.maximum(weight.sum(), 1.0)

  def loss(p):
    ll = jax.vmap(ik_log_likelihood, (None, 0, 0, 0))(effective(p), x_t, action, x_h)
    return -jnp.sum(weight * ll) / total

  def objective(p):
    return loss(p) + weight_decay * (jnp.sum(p.phi_w ** 2) + jnp.sum(p.psi_w ** 2))

  opt = optax.adam(learning_rate)

  def body(carry, _):
    p, s = carry
    value, grad = jax.value_and_grad(objective)(p)
    updates, s = opt.update(grad, s, p)
    return (optax.apply_updates(p, updates), s), value

  (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, num_steps)
  params = effective(params)
  return params, loss(params)


# --- MusIK -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MusikConfig:
  """`num_samples`: episodes per inverse-kinematics fit (and the data buffer's size);
  `multi_step`: MusIK (True) or one-step inverse kinematics (False); `num_steps`,
  `learning_rate`, `init_scale`, `weight_decay`: each fit's full-batch Adam and L2
  penalty (`fit_inverse_kinematics`)."""

  num_samples: int = 200
  multi_step: bool = True
  num_steps: int = 300
  learning_rate: float = 0.05
  init_scale: float = 0.1
  weight_decay: float = 0.0

  def __post_init__(self):
    for name in ("num_samples", "num_steps"):
      v = getattr(self, name)
      if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
        raise ValueError(f"config.{name} must be a positive integer, got {v!r}.")
    for name in ("learning_rate", "init_scale"):
      v = getattr(self, name)
      if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
        raise ValueError(f"config.{name} must be a finite number > 0, got {v!r}.")
    v = self.weight_decay
    if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0):
      raise ValueError(f"config.weight_decay must be a finite number >= 0, got {v!r}.")
    if not isinstance(self.multi_step, bool):
      raise ValueError(f"config.multi_step must be a bool, got {self.multi_step!r}.")


class MusikState(NamedTuple):
  """A trained explorer. `params[h, t]`: the fit of step `t` for target layer `h`
  (`[H + 1, H]` leading axes; unfitted entries are zero); `params[h, t].psi_*` is
  layer `h`'s decoder for every fitted `t`. `predecessor[h, j]`: the layer-`(h − 1)`
  cover label the one-step cover of label `j` of layer `h` rolls in with.
  `loss[h, t]`: the fit's final negative log-likelihood (NaN where not fitted)."""

  params: IKParams
  predecessor: jax.Array
  loss: jax.Array


def cover_plan(state: MusikState, layer, label, multi_step: bool, horizon: int):
  """`(fit_layer [H], target [H])`: the cover policy for `label` of `layer` acts at
  step `s < layer` with `greedy_action(state.params[fit_layer[s], s], x, target[s])`
  (entries at `s >= layer` are unused)."""
  s = jnp.arange(horizon)
  if multi_step:
    return jnp.full(horizon, layer, jnp.int32), jnp.full(horizon, label, jnp.int32)

  def body(cur, k):          # k-th step back from `layer − 1`; carry: target at s = layer−1−k
    s_k = layer - 1 - k
    prev = state.predecessor[jnp.clip(s_k + 1, 0, horizon), cur]
    return prev, cur

  _, back = jax.lax.scan(body, jnp.asarray(label, jnp.int32), jnp.arange(horizon))
  target = back[jnp.clip(layer - 1 - s, 0, horizon - 1)]
  return jnp.minimum(s + 1, horizon).astype(jnp.int32), target.astype(jnp.int32)


def run_episode(key: jax.Array, lock: BlockLock, params: IKParams, switch, plan_before,
                plan_after):
  """One episode: steps `s < switch` follow `plan_before`, step `switch` a uniform
  action, steps `s > switch` `plan_after` (plans from `cover_plan`). Returns
  `(obs [H + 1, D], latents [H + 1], actions [H])`."""
  horizon = lock.horizon
  k_reset, k_last, k_steps = jax.random.split(key, 3)

  def body(latent, inputs):
    s, k = inputs
    k_obs, k_uniform, k_next = jax.random.split(k, 3)
    x = observe(lock, k_obs, s, latent)
    before = s < switch
    fit_layer = jnp.where(before, plan_before[0][s], plan_after[0][s])
    target = jnp.where(before, plan_before[1][s], plan_after[1][s])
    p = jax.tree.map(lambda a: a[fit_layer, s], params)
    action = jnp.where(s == switch, jax.random.randint(k_uniform, (), 0, lock.num_actions),
                       greedy_action(p, x, target))
    return step(lock, k_next, s, latent, action), (x, latent, action)

  latent0 = reset(lock, k_reset)
  last, (xs, latents, actions) = jax.lax.scan(
      body, latent0, (jnp.arange(horizon), jax.random.split(k_steps, horizon)))
  obs = jnp.concatenate([xs, observe(lock, k_last, horizon, last)[None]])
  return obs, jnp.concatenate([latents, last[None]]), actions


class Musik(NamedTuple):
  """`train(key, lock, num_samples=None) -> MusikState`;
  `evaluate(key, lock, state, num_episodes) -> dict` (see `make_musik`)."""

  config: MusikConfig
  train: object
  evaluate: object


def make_musik(config: MusikConfig) -> Musik:
  """MusIK (`config.multi_step`) or one-step inverse kinematics (see the module
  docstring).

  `train(key, lock, num_samples=None)`: a pure, jit- and vmap-able run; a traced
  `num_samples <= config.num_samples` fits every model on the first `num_samples`
  episodes of its buffer.

  `evaluate(key, lock, state, num_episodes)` returns
    - `reach [H]`: for layers `1, …, H`, the best cover policy's probability of a
      good latent at that layer (`num_episodes` rollouts per cover policy);
    - `reach_mean [H]`: the same averaged over the cover's `S` policies (the
      probability of the uniform roll-in);
    - `purity [H]`: `decoder_purity` at layers `0, …, H − 1` of the decoders the
      final (layer-`H`) cover acts with, on `num_episodes` fresh observations of
      every latent that occurs at that layer (good ones only at layer 0).
  """
  if not isinstance(config, MusikConfig):
    raise ValueError(f"config must be a MusikConfig, got {type(config).__name__}.")
  multi = config.multi_step
  buffer = config.num_samples

  def train(key: jax.Array, lock: BlockLock, num_samples=None) -> MusikState:
    horizon, num_latent, num_actions = lock.horizon, lock.num_latent, lock.num_actions
    n = buffer if num_samples is None else num_samples
    weight = (jnp.arange(buffer) < n).astype(jnp.float32)
    zeros = IKParams(jnp.zeros((lock.obs_dim, num_latent)), jnp.zeros(num_latent),
                     jnp.zeros((lock.obs_dim, num_latent)), jnp.zeros(num_latent),
                     jnp.zeros((num_latent, num_latent, num_actions)))
    params0 = jax.tree.map(lambda a: jnp.zeros((horizon + 1, horizon, *a.shape)), zeros)
    state0 = MusikState(params0, jnp.zeros((horizon + 1, num_latent), jnp.int32),
                        jnp.full((horizon + 1, horizon), jnp.nan))

    def fit_step(h, k, state, key):
      """Collects data for step `t = h − 1 − k` of layer `h` and fits its model."""
      t = h - 1 - k
      k_roll, k_labels, k_targets, k_fit = jax.random.split(key, 4)
      labels = jax.random.randint(k_labels, (buffer,), 0, num_latent)
      targets = jax.random.randint(k_targets, (buffer,), 0, num_latent)

      def episode(k_ep, c, j):
        return run_episode(k_ep, lock, state.params, t,
                           cover_plan(state, t, c, multi, horizon),
                           cover_plan(state, h, j, multi, horizon))

      obs, _, actions = jax.vmap(episode)(jax.random.split(k_roll, buffer), labels, targets)
      x_t, x_h, a_t = obs[:, t], obs[:, h], actions[:, t]
      psi = jax.tree.map(lambda a: a[h, h - 1], state.params)
      fitted, loss = fit_inverse_kinematics(
          k_fit, x_t, a_t, x_h, weight, num_latent, num_actions,
          fixed_psi=(psi.psi_w, psi.psi_b), learn_psi=(k == 0), num_steps=config.num_steps,
          learning_rate=config.learning_rate, init_scale=config.init_scale,
          weight_decay=config.weight_decay)
      new_params = jax.tree.map(lambda a, b: a.at[h, t].set(b), state.params, fitted)
      # One-step composition: for each label j of layer h, the roll-in label whose
      # episodes most often ended in j (only meaningful for the fit at t = h − 1).
      end = decode(fitted.psi_w, fitted.psi_b, x_h)
      hits = jnp.zeros((num_latent, num_latent)).at[labels, end].add(weight)
      tries = jnp.zeros(num_latent).at[labels].add(weight)
      pred = jnp.argmax(hits / jnp.maximum(tries, 1.0)[:, None], 0).astype(jnp.int32)
      predecessor = jnp.where(k == 0, state.predecessor.at[h].set(pred), state.predecessor)
      return MusikState(new_params, predecessor, state.loss.at[h, t].set(loss))

    def layer(h, carry):
      state, key = carry
      key, k_layer = jax.random.split(key)
      steps_back = h if multi else 1

      def inner(k, state):
        return fit_step(h, k, state, jax.random.fold_in(k_layer, k))

      return jax.lax.fori_loop(0, steps_back, inner, state), key

    state, _ = jax.lax.fori_loop(1, horizon + 1, layer, (state0, key))
    return state

  def evaluate(key: jax.Array, lock: BlockLock, state: MusikState, num_episodes: int) -> dict:
    horizon, num_latent = lock.horizon, lock.num_latent
    k_roll, k_obs = jax.random.split(key)

    def success(layer, label, k):
      plan = cover_plan(state, layer, label, multi, horizon)
      _, latents, _ = jax.vmap(lambda kk: run_episode(kk, lock, state.params, horizon, plan,
                                                      plan))(jax.random.split(k, num_episodes))
      return jnp.mean(latents[:, layer] < num_latent - 1)

    layers = jnp.arange(1, horizon + 1)
    labels = jnp.arange(num_latent)
    keys = jax.random.split(k_roll, (horizon, num_latent))
    rates = jax.vmap(lambda L, ks: jax.vmap(lambda j, k: success(L, j, k))(labels, ks))(
        layers, keys)                                                   # [H, S]

    fit_layer, _ = cover_plan(state, horizon, 0, multi, horizon)

    def purity(s, k):
      p = jax.tree.map(lambda a: a[fit_layer[s], s], state.params)
      latents = jnp.tile(jnp.arange(num_latent), num_episodes)
      xs = jax.vmap(lambda kk, z: observe(lock, kk, s, z))(
          jax.random.split(k, latents.shape[0]), latents)
      pred = decode(p.phi_w, p.phi_b, xs)
      valid = (s > 0) | (latents < num_latent - 1)   # the bad latent never occurs at layer 0
      counts = jnp.zeros((num_latent, num_latent)).at[pred, latents].add(valid)
      return jnp.sum(counts.max(1)) / counts.sum()

    purities = jax.vmap(purity)(jnp.arange(horizon), jax.random.split(k_obs, horizon))
    return {"reach": rates.max(1), "reach_mean": rates.mean(1), "purity": purities}

  return Musik(config, train, evaluate)
