"""`networks.dense` (a faster weight gradient on the CPU), `ppo.permutation` (minibatch
shuffles) and the policy's `init_log_std`, against independent references."""

import dataclasses
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from irl_jax.control import envs, networks, ppo

PENDULUM = envs.make("gymnax/Pendulum-v1")
CARTPOLE = envs.make("gymnax/CartPole-v1")


# --- dense ------------------------------------------------------------------------------


def _mlp_params(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [(jax.random.normal(k, (a, b)) / np.sqrt(a), jax.random.normal(k, (b,)) * 0.1)
          for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def _mlp(layer, params, x):
  for i, (w, b) in enumerate(params):
    x = layer(x, w, b)
    if i < len(params) - 1:
      x = jnp.tanh(x)
  return x


def _numpy_mlp_grads(params, x):
  """float64 NumPy forward and backward of `mean(mlp(x)²)`, written out by hand."""
  ws = [np.asarray(w, np.float64) for w, _ in params]
  bs = [np.asarray(b, np.float64) for _, b in params]
  h = [np.asarray(x, np.float64)]
  pre = []
  for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
    z = h[-1] @ w + b
    pre.append(z)
    h.append(np.tanh(z) if i < len(ws) - 1 else z)
  out = h[-1]
  g = 2.0 * out / out.size
  grads = [None] * len(ws)
  for i in reversed(range(len(ws))):
    if i < len(ws) - 1:
      g = g * (1.0 - np.tanh(pre[i]) ** 2)
    grads[i] = (h[i].T @ g, g.sum(0))
    g = g @ ws[i].T
  return grads


def test_dense_values_and_gradients_match_a_float64_reference():
  params = _mlp_params(jax.random.key(0), [3, 16, 16, 2])
  x = jax.random.normal(jax.random.key(1), (32, 3))
  out = _mlp(networks.dense, params, x)
  np.testing.assert_allclose(out, _mlp(lambda x, w, b: x @ w + b, params, x), rtol=0, atol=0)
  grads = jax.grad(lambda p: jnp.mean(_mlp(networks.dense, p, x) ** 2))(params)
  for (gw, gb), (rw, rb) in zip(grads, _numpy_mlp_grads(params, x), strict=True):
    np.testing.assert_allclose(gw, rw, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(gb, rb, rtol=2e-5, atol=1e-6)


def test_dense_forward_mode_and_second_order_match_the_plain_product():
  params = _mlp_params(jax.random.key(2), [4, 8, 1])
  plain = lambda x, w, b: x @ w + b
  x = jax.random.normal(jax.random.key(3), (3, 4))
  f = lambda layer: lambda x: _mlp(layer, params, x).sum()
  np.testing.assert_allclose(jax.hessian(f(networks.dense))(x), jax.hessian(f(plain))(x),
                             rtol=1e-5, atol=1e-6)
  t = jax.random.normal(jax.random.key(4), x.shape)
  _, jvp_dense = jax.jvp(f(networks.dense), (x,), (t,))
  _, jvp_plain = jax.jvp(f(plain), (x,), (t,))
  np.testing.assert_allclose(jvp_dense, jvp_plain, rtol=1e-5)
  # A gradient penalty differentiates a parameter gradient of an input gradient.
  def penalty(p):
    g = jax.grad(lambda x: _mlp(networks.dense, p, x).sum())(x)
    return jnp.sum(g ** 2)
  def penalty_plain(p):
    g = jax.grad(lambda x: _mlp(plain, p, x).sum())(x)
    return jnp.sum(g ** 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.grad(penalty)(params), jax.grad(penalty_plain)(params))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5), (7, 5)])
def test_dense_layer_equals_nnx_linear_for_any_leading_axes(shape):
  dense = networks.Dense(5, 3, rngs=nnx.Rngs(0), bias_init=nnx.initializers.normal(1.0))
  linear = nnx.Linear(5, 3, rngs=nnx.Rngs(0), bias_init=nnx.initializers.normal(1.0))
  x = jax.random.normal(jax.random.key(5), shape)
  np.testing.assert_allclose(dense(x), linear(x), rtol=1e-6, atol=1e-6)
  g_dense = jax.grad(lambda m: jnp.sum(jnp.sin(m(x))))(dense)
  g_linear = jax.grad(lambda m: jnp.sum(jnp.sin(m(x))))(linear)
  np.testing.assert_allclose(g_dense.kernel[...], g_linear.kernel[...], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_dense.bias[...], g_linear.bias[...], rtol=1e-5, atol=1e-6)
  # Integer and bfloat16 inputs, and a bfloat16 layer, go through nnx.Linear's own
  # promotion rules.
  xi = jnp.arange(5)
  np.testing.assert_allclose(dense(xi), linear(xi), rtol=1e-6)
  xb = x.astype(jnp.bfloat16)
  assert dense(xb).dtype == linear(xb).dtype
  np.testing.assert_array_equal(dense(xb), linear(xb))
  half = networks.Dense(5, 3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  assert half(x).dtype == nnx.Linear(5, 3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)(x).dtype \
      == jnp.bfloat16


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's dot forms")
def test_weight_gradient_is_a_plain_product_in_the_compiled_backward_pass():
  """The point of `dense`: no dot contracts both operands' batch axes (`{0}` and
  `{0}`), the form XLA:CPU runs on its slow generic kernel; the plain product has one."""
  params = _mlp_params(jax.random.key(6), [3, 64, 64, 2])
  x = jax.random.normal(jax.random.key(7), (256, 3))

  def hlo(layer):
    grad = jax.jit(jax.grad(lambda p: jnp.mean(_mlp(layer, p, x) ** 2)))
    return grad.lower(params).compile().as_text()

  batch_contracting = r"dot\([^)]*\), lhs_contracting_dims=\{0\}, rhs_contracting_dims=\{0\}"
  assert re.search(batch_contracting, hlo(lambda x, w, b: x @ w + b))
  assert not re.search(batch_contracting, hlo(networks.dense))


# --- permutation ------------------------------------------------------------------------


def test_permutation_of_a_negative_length_raises():
  with pytest.raises(ValueError, match="n must be >= 0"):
    ppo.permutation(jax.random.key(0), -1)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 64, 2048, 2049, 70_000])
def test_permutation_is_a_permutation(n):
  perm = np.asarray(jax.jit(ppo.permutation, static_argnums=1)(jax.random.key(n), n))
  assert perm.dtype == np.int32 and perm.shape == (n,)
  np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_permutation_is_uniform_over_all_orders():
  """All 4! orders equally likely (chi-square, 48k draws), and for 37 rows every row
  equally likely first and last."""
  keys = jax.random.split(jax.random.key(0), 48_000)
  perms = np.asarray(jax.jit(jax.vmap(lambda k: ppo.permutation(k, 4)))(keys))
  index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
  counts = np.bincount([index[tuple(p)] for p in perms], minlength=24)
  assert scipy.stats.chisquare(counts).pvalue > 1e-3
  perms = np.asarray(jax.jit(jax.vmap(lambda k: ppo.permutation(k, 37)))(keys[:37_000]))
  for col in (0, -1):
    assert scipy.stats.chisquare(np.bincount(perms[:, col], minlength=37)).pvalue > 1e-3
  # Different keys, different orders; the same key, the same order.
  a, b = (np.asarray(ppo.permutation(jax.random.key(s), 2048)) for s in (1, 2))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, ppo.permutation(jax.random.key(1), 2048))


def test_permutation_pairs_are_unordered_uniformly_for_many_rows():
  """For 2048 rows (two sorting rounds), row i precedes row j half the time, also for
  neighbours whose positions share all but the lowest bit."""
  keys = jax.random.split(jax.random.key(3), 4000)
  perms = np.asarray(jax.jit(jax.vmap(lambda k: ppo.permutation(k, 2048)))(keys))
  rank = np.argsort(perms, axis=1)
  for i, j in ((0, 1), (1024, 1025), (0, 2047)):
    before = np.mean(rank[:, i] < rank[:, j])
    assert abs(before - 0.5) < 4 * 0.5 / np.sqrt(len(keys)), (i, j, before)


# --- the policy's initial log-std --------------------------------------------------------


@pytest.mark.parametrize("init", [0.0, -1.0, 1.5, -4.9])
def test_init_log_std_sets_the_initial_standard_deviation(init):
  policy = networks.Policy(3, PENDULUM.spec.action, (16, 16), rngs=nnx.Rngs(0),
                           init_log_std=init)
  obs = jax.random.normal(jax.random.key(0), (64, 3))
  log_std = np.log(np.asarray(policy(obs).distribution.stddev()))
  # The head's weights start at scale 0.01: its bias sets the log-std, up to that.
  np.testing.assert_allclose(log_std, init, atol=0.15)
  lo, hi = policy.log_std_range
  u = networks.log_std_bias(init, (lo, hi))
  assert lo + 0.5 * (hi - lo) * (np.tanh(u) + 1.0) == pytest.approx(init, abs=1e-12)
  bias = np.asarray(policy.net.layers[-1].bias[...])
  np.testing.assert_array_equal(bias, [0.0, np.float32(u)])  # mean half, log-std half


def test_init_log_std_none_keeps_the_midpoint_and_the_same_parameters():
  default = networks.Policy(3, PENDULUM.spec.action, (16, 16), rngs=nnx.Rngs(0))
  obs = jax.random.normal(jax.random.key(0), (64, 3))
  np.testing.assert_allclose(np.log(default(obs).distribution.stddev()), -1.5, atol=0.15)
  shifted = networks.Policy(3, PENDULUM.spec.action, (16, 16), rngs=nnx.Rngs(0),
                            init_log_std=0.0)
  a, b = nnx.state(default, nnx.Param), nnx.state(shifted, nnx.Param)
  diff = [path for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a),
                                            jax.tree_util.tree_leaves_with_path(b), strict=True)
          if not np.array_equal(x, y)]
  assert len(diff) == 1 and "bias" in jax.tree_util.keystr(diff[0])  # only the head's bias
  # Discrete policies have no log-std: the setting changes nothing.
  c1 = networks.Policy(4, CARTPOLE.spec.action, (8,), rngs=nnx.Rngs(0))
  c2 = networks.Policy(4, CARTPOLE.spec.action, (8,), rngs=nnx.Rngs(0), init_log_std=0.0)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(c1, nnx.Param), nnx.state(c2, nnx.Param))


@pytest.mark.parametrize("init", [2.0, -5.0, 3.0])
def test_init_log_std_outside_the_range_raises_naming_it(init):
  with pytest.raises(ValueError, match="init_log_std"):
    networks.Policy(3, PENDULUM.spec.action, (8,), rngs=nnx.Rngs(0), init_log_std=init)
  base = ppo.PPOConfig(num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=4)
  with pytest.raises(ValueError, match=r"PPOConfig\.init_log_std"):
    ppo.make_ppo(dataclasses.replace(base, init_log_std=init), PENDULUM)


def test_ppo_policy_starts_at_init_log_std():
  config = ppo.PPOConfig(num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=4,
                         hidden=(16,), init_log_std=0.0)
  agent = ppo.make_ppo(config, PENDULUM)
  state = agent.init(jax.random.key(0))
  std = agent.policy_apply(state.params.policy, state.obs).distribution.stddev()
  np.testing.assert_allclose(np.log(std), 0.0, atol=0.15)
