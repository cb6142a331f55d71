"""`networks.pure` (modules as pure functions) and `types.as_config`."""

import dataclasses
import re

import jax
import numpy as np
import pytest
from flax import nnx

from irl_jax.control import envs, networks, offline, ppo
from irl_jax.control.types import as_config


def _policy(rngs):
  spec = envs.make("gymnax/Pendulum-v1").spec
  return networks.Policy(3, spec.action, (16, 16), rngs=rngs)


def test_pure_init_vmaps_over_keys_like_one_key_at_a_time():
  net = networks.pure(_policy)
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.jit(jax.vmap(net.init))(keys)
  for i, k in enumerate(keys):
    one = net.init(k)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b), batched, one)
  first, second = (jax.tree.leaves(jax.tree.map(lambda a, i=i: a[i], batched))
                   for i in (0, 1))
  assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
  # Under vmap the keys are initialised one at a time: the orthogonal initialisers' QRs
  # stay unbatched (batched ones can deadlock XLA:CPU's thread pool on 2 cores).
  text = jax.jit(jax.vmap(net.init)).lower(keys).as_text()
  qr_batch_dims = re.findall(r'geqrf.*num_batch_dims = "(\d+)"', text)
  assert qr_batch_dims and set(qr_batch_dims) == {"0"}


def test_pure_params_are_the_modules_params_only_and_apply_rebuilds_it():
  net = networks.pure(_policy)
  params = net.init(jax.random.key(1))
  module = _policy(nnx.Rngs(1))
  expected = nnx.split(module, nnx.Param, ...)[1]
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, params, expected)
  obs = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
  action = np.full((2, 1), 0.5, np.float32)
  np.testing.assert_allclose(net.apply(params, obs).log_prob(action),
                             module(obs).log_prob(action), rtol=1e-6)


def test_pure_keeps_non_parameter_variables_out_of_the_parameters():
  """TD3's actor holds its action bounds as `nnx.Variable`s: constants of `apply`, not
  parameters an optimiser would move."""
  spec = envs.make("gymnax/Pendulum-v1").spec
  build = lambda rngs: offline.TanhActor(3, spec.action, (16,), rngs=rngs)
  net = networks.pure(build)
  params = net.init(jax.random.key(3))
  module = build(nnx.Rngs(3))
  rest = nnx.split(module, nnx.Param, ...)[2]
  assert len(jax.tree.leaves(rest)) == 2  # low and high
  assert len(jax.tree.leaves(params)) == (len(jax.tree.leaves(nnx.state(module)))
                                          - len(jax.tree.leaves(rest)))
  obs = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
  np.testing.assert_allclose(net.apply(params, obs), module(obs), rtol=1e-6)
  scaled = jax.tree.map(lambda p: p * 50.0, params)  # saturate the tanh
  act = np.asarray(net.apply(scaled, obs))
  assert np.all(act >= spec.action.low) and np.all(act <= spec.action.high)
  assert np.abs(act).max() > 1.9  # the bounds (±2) are applied, not dropped


def test_ppo_trainable_is_pure_in_apply_init_order():
  apply, init = ppo.trainable(_policy)
  net = networks.pure(_policy)
  params = init(jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, params, net.init(jax.random.key(2)))
  obs = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
  action = np.full((2, 1), -0.5, np.float32)
  np.testing.assert_array_equal(apply(params, obs).log_prob(action),
                                net.apply(params, obs).log_prob(action))


@dataclasses.dataclass(frozen=True)
class _Inner:
  lr: float = 1e-3
  hidden: tuple = (8,)


@dataclasses.dataclass(frozen=True)
class _Outer:
  steps: int = 10
  hidden: tuple = (4, 4)
  inner: _Inner = _Inner()


def test_as_config_builds_dataclasses_from_mappings():
  assert as_config(_Outer, None) == _Outer()
  c = _Outer(steps=3)
  assert as_config(_Outer, c) is c
  got = as_config(_Outer, {"steps": 5, "hidden": [2, 2], "inner": {"lr": 0.5}})
  assert got == _Outer(steps=5, hidden=(2, 2), inner=_Inner(lr=0.5))
  with pytest.raises(ValueError, match=r"_Outer: unknown field\(s\) \['stepz'\]"):
    as_config(_Outer, {"stepz": 5})
  with pytest.raises(ValueError, match=r"_Inner: unknown field\(s\) \['beta'\]"):
    as_config(_Outer, {"inner": {"beta": 1.0}})
  with pytest.raises(TypeError, match="expected a _Outer or a mapping, got int"):
    as_config(_Outer, 3)
