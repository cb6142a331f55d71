"""Tests for irl_jax/losses/max_margin.py against float64 NumPy references from
docs/objectives.md §8."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from irl_jax.losses import max_margin, reward_accuracy

# --- float64 NumPy references, written from docs/objectives.md §8 ---------------------------


def ref_max_margin(aligned, base, form, margin=1.0):
  d = np.asarray(aligned, np.float64) - np.asarray(base, np.float64)
  out = np.zeros_like(d)
  for i, di in enumerate(d):
    if form == "asymmetric":
      out[i] = -di if di > 0 else -2.0 * di
    elif form == "hinge":
      out[i] = max(0.0, margin - di)
    else:  # logistic: log(1 + e^{−d})
      out[i] = np.logaddexp(0.0, -di)
  return out


def ref_accuracy(aligned, base):
  wins = [float(a) > float(b) for a, b in zip(aligned, base, strict=True)]
  return sum(wins) / len(wins)


def _close(actual, expected, tol=1e-5):
  """float32 tolerance relative to the value scale."""
  expected = np.asarray(expected, np.float64)
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


_FORMS = {
  "asymmetric": {},
  "hinge": {"hinge_margin": 1.0},
  "logistic": {"logistic": True},
}
_mm = {form: jax.jit(functools.partial(max_margin, **kwargs)) for form, kwargs in _FORMS.items()}
_mm_grad = {
  form: jax.jit(jax.grad(lambda a, b, kw=kwargs: jnp.sum(max_margin(a, b, **kw)), argnums=(0, 1)))
  for form, kwargs in _FORMS.items()
}
_acc = jax.jit(reward_accuracy)


def _pairs(n, seed, scale=3.0):
  rng = np.random.default_rng(seed)
  a = (scale * rng.standard_normal(n)).astype(np.float32)
  b = (scale * rng.standard_normal(n)).astype(np.float32)
  return a, b


@pytest.mark.parametrize("n", [1, 6, 16])
@pytest.mark.parametrize("form", list(_FORMS))
def test_max_margin_matches_reference(n, form):
  a, b = _pairs(n, seed=n)
  got = _mm[form](a, b)
  assert got.shape == (n,) and got.dtype == jnp.float32
  _close(got, ref_max_margin(a, b, form))


def test_max_margin_golden():
  # d = a − b = [1.5, −0.5, 0, 0.25, 2].
  # Asymmetric: [−1.5, −2·(−0.5) = 1, 0, −0.25, −2].
  # Hinge m=1: [0, 1.5, 1, 0.75, 0].
  # Logistic: log(1 + e^{−d}); at d = 0 it is log 2 = 0.6931471805599453.
  a = jnp.array([1.5, 0.5, 3.0, 1.25, 2.0])
  b = jnp.array([0.0, 1.0, 3.0, 1.0, 0.0])
  np.testing.assert_allclose(_mm["asymmetric"](a, b), [-1.5, 1.0, 0.0, -0.25, -2.0], rtol=1e-6)
  np.testing.assert_allclose(_mm["hinge"](a, b), [0.0, 1.5, 1.0, 0.75, 0.0], rtol=1e-6)
  np.testing.assert_allclose(_mm["logistic"](a, b)[2], 0.6931471805599453, rtol=1e-6)


def test_max_margin_asymmetric_slopes():
  # dℓ/dd = −1 for d > 0 and −2 for d < 0; base rewards get the opposite sign.
  a = jnp.array([2.0, 0.1, -0.1, -3.0])
  b = jnp.zeros(4)
  ga, gb = _mm_grad["asymmetric"](a, b)
  np.testing.assert_array_equal(ga, [-1.0, -1.0, -2.0, -2.0])
  np.testing.assert_array_equal(gb, [1.0, 1.0, 2.0, 2.0])
  # Unbounded below: the loss keeps falling as the gap grows.
  np.testing.assert_allclose(_mm["asymmetric"](jnp.array([1e4]), jnp.array([0.0])), [-1e4])


def test_max_margin_hinge_zero_past_margin():
  m = 0.5
  loss = jax.jit(lambda a, b: max_margin(a, b, hinge_margin=m))
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(max_margin(a, b, hinge_margin=m))))
  d = jnp.array([0.6, 1.0, 100.0, 0.4, -2.0])
  b = jnp.zeros(5)
  np.testing.assert_array_equal(loss(d, b)[:3], 0.0)
  np.testing.assert_array_equal(grad(d, b), [0.0, 0.0, 0.0, -1.0, -1.0])
  _close(loss(d, b)[3:], [0.1, 2.5])
  # m = 0: the hinge on d itself.
  np.testing.assert_array_equal(
    max_margin(jnp.array([1.0, -1.0]), jnp.zeros(2), hinge_margin=0.0), [0.0, 1.0]
  )


def test_max_margin_logistic_gradient():
  a, b = _pairs(8, seed=3)
  ga, gb = _mm_grad["logistic"](a, b)
  d = a.astype(np.float64) - b
  _close(ga, -1.0 / (1.0 + np.exp(d)))
  _close(gb, 1.0 / (1.0 + np.exp(d)))


def test_max_margin_gradients_float64():
  rng = np.random.default_rng(4)
  # d = a − b bounded away from the kinks at 0 (asymmetric) and 1 (hinge).
  d = rng.choice([-1.0, 1.0], 8) * rng.uniform(0.3, 0.6, 8) + np.array([0, 0, 0, 0, 1, 1, 1, 1])
  b = rng.standard_normal(8)
  a = b + d
  assert np.all(np.abs(d) > 0.2) and np.all(np.abs(d - 1) > 0.2)
  with jax.enable_x64(True):
    for form in _FORMS:
      assert _mm[form](a, b).dtype == jnp.float64
      check_grads(_mm[form], (a, b), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_margin_extreme_inputs_finite(dtype):
  a = jnp.array([1e4, -1e4, 1e4, 0.0], dtype)
  b = jnp.array([-1e4, 1e4, 1e4, -1e4], dtype)
  up = np.asarray(a, np.float32), np.asarray(b, np.float32)
  for form in _FORMS:
    out = _mm[form](a, b)
    assert out.dtype == jnp.float32
    _close(out, ref_max_margin(*up, form))
    for g in _mm_grad[form](a, b):
      assert np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize("n", [1, 6, 16])
def test_reward_accuracy_matches_reference(n):
  a, b = _pairs(n, seed=n + 10)
  b[: n // 2] = a[: n // 2]  # Ties count as errors.
  got = _acc(a, b)
  assert got.shape == ()
  np.testing.assert_allclose(got, ref_accuracy(a, b), rtol=1e-6)


def test_reward_accuracy_golden():
  # Pairs (1, 0) win, (2, 2) tie, (3, 4) lose: 1/3.
  np.testing.assert_allclose(
    _acc(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, 2.0, 4.0])), 1.0 / 3.0, rtol=1e-6
  )


def test_max_margin_bad_inputs():
  a = jnp.zeros(3)
  for fn in (max_margin, reward_accuracy):
    with pytest.raises(ValueError, match=r"\[3\].*\[4\]"):
      fn(a, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"rank 1.*\(2, 3\)"):
      fn(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    with pytest.raises(TypeError, match="floating"):
      fn(a, jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="at most one"):
    max_margin(a, a, hinge_margin=1.0, logistic=True)
  with pytest.raises(ValueError, match="hinge_margin"):
    max_margin(a, a, hinge_margin=-0.5)
