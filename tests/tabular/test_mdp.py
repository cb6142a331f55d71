"""Tests for `irl_jax.tabular.mdp`: construction, dtypes and input checking."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref

from irl_jax.tabular.mdp import TabularMDP, check_mdp, make_mdp

S, A = 3, 2


def _valid(**overrides):
  p, nu0 = ref.random_mdp(0, S, A)
  fields = dict(transitions=p, initial=nu0, discount=0.9)
  fields.update(overrides)
  return fields


def _make(**overrides):
  fields = _valid(**overrides)
  return make_mdp(fields.pop("transitions"), fields.pop("initial"), fields.pop("discount"),
                  **fields)


# ---------------------------------------------------------------------------
# Valid MDPs.


def test_make_mdp_valid_float32_by_default():
  rng = np.random.default_rng(1)
  mdp = _make(reward=rng.normal(size=(S, A)), features=rng.normal(size=(S, A, 4)),
              costs=rng.random((S, A, 2)), budgets=[0.5, 0.5])
  assert isinstance(mdp, TabularMDP)
  assert mdp.num_states == S and mdp.num_actions == A
  for leaf in jax.tree_util.tree_leaves(mdp):
    assert leaf.dtype == jnp.float32
  assert check_mdp(mdp) is mdp


def test_make_mdp_optional_fields_are_none():
  mdp = _make()
  assert mdp.reward is None and mdp.features is None
  assert mdp.costs is None and mdp.budgets is None
  assert len(jax.tree_util.tree_leaves(mdp)) == 3


def test_make_mdp_float64_under_x64_and_explicit_dtype():
  with jax.enable_x64(True):
    mdp = _make(reward=np.zeros((S, A)))
    for leaf in jax.tree_util.tree_leaves(mdp):
      assert leaf.dtype == jnp.float64
    mdp32 = _make(reward=np.zeros((S, A)), dtype=jnp.float32)
    for leaf in jax.tree_util.tree_leaves(mdp32):
      assert leaf.dtype == jnp.float32
  # Integer inputs become float32.
  mdp = make_mdp(np.eye(2, dtype=np.int32)[:, None, :].repeat(2, 1), [1, 0], 0)
  assert mdp.transitions.dtype == jnp.float32 and mdp.initial.dtype == jnp.float32


def test_check_mdp_accepts_batches_and_boundary_discounts():
  p0, nu0 = ref.random_mdp(0, S, A)
  p1, nu1 = ref.random_mdp(1, S, A)
  batch = TabularMDP(np.stack([p0, p1]), np.stack([nu0, nu1]), np.array([0.0, 1.0]),
                     reward=np.zeros((2, S, A)))
  assert check_mdp(batch) is batch
  # One scalar discount shared by the batch is also fine.
  check_mdp(batch._replace(discount=np.array(0.5)))


def test_check_mdp_tolerance():
  p, nu0 = ref.random_mdp(0, S, A)
  p = p.copy()
  p[1, 1] *= 1 + 1e-4
  with pytest.raises(ValueError, match="not stochastic"):
    check_mdp(TabularMDP(p, nu0, 0.9))
  check_mdp(TabularMDP(p, nu0, 0.9), atol=1e-3)


def test_make_mdp_check_false_skips_checks():
  mdp = make_mdp(np.full((S, A, S), 7.0), np.ones(S), 3.0, check=False)
  assert mdp.num_states == S


# ---------------------------------------------------------------------------
# Bad inputs: each raises ValueError naming the field and the offending shape,
# row or index.


def _bad_row_p():
  p, _ = ref.random_mdp(0, S, A)
  p = p.copy()
  p[2, 1] *= 0.5                      # row (s=2, a=1) sums to 0.5
  return p


def _negative_p():
  p = np.zeros((S, A, S))
  p[..., 0] = 1.0
  p[1, 0] = [1.25, -0.25, 0.0]        # still sums to 1
  return p


def _nan_p():
  p, _ = ref.random_mdp(0, S, A)
  p = p.copy()
  p[0, 1, 2] = np.nan
  return p


BAD_INPUTS = {
    "non_stochastic_row": (dict(transitions=_bad_row_p()),
                           ["transitions", "not stochastic", "(2, 1)", "0.5"]),
    "negative_probability": (dict(transitions=_negative_p()),
                             ["transitions", "negative", "(1, 0, 1)"]),
    "nan_in_p": (dict(transitions=_nan_p()), ["transitions", "non-finite", "(0, 1, 2)"]),
    "p_not_square": (dict(transitions=np.full((S, A, S + 1), 1 / (S + 1))),
                     ["transitions", f"({S}, {A}, {S + 1})"]),
    "p_two_dims": (dict(transitions=np.full((S, S), 1 / S)), ["transitions", f"({S}, {S})"]),
    "reward_extra_action": (dict(reward=np.zeros((S, A + 1))),
                            ["reward", f"[{S}, {A}]", f"({S}, {A + 1})"]),
    "reward_nan": (dict(reward=np.array([[0.0, 1.0], [np.nan, 0.0], [0.0, 0.0]])),
                   ["reward", "non-finite", "(1, 0)"]),
    "initial_wrong_length": (dict(initial=np.full(S + 1, 1 / (S + 1))),
                             ["initial", f"[{S}]", f"({S + 1},)"]),
    "initial_not_distribution": (dict(initial=np.array([0.5, 0.6, 0.1])),
                                 ["initial", "distribution", "1.2"]),
    "initial_negative": (dict(initial=np.array([1.5, -0.5, 0.0])),
                         ["initial", "distribution", "-0.5"]),
    "features_wrong_leading_dims": (dict(features=np.zeros((A, S, 4))),
                                    ["features", f"[{S}, {A}, ·]", f"({A}, {S}, 4)"]),
    "features_two_dims": (dict(features=np.zeros((S, A))), ["features", f"({S}, {A})"]),
    "costs_wrong_leading_dims": (dict(costs=np.zeros((S + 1, A, 2)), budgets=np.ones(2)),
                                 ["costs", f"({S + 1}, {A}, 2)"]),
    "costs_without_budgets": (dict(costs=np.zeros((S, A, 2))), ["costs", "budgets"]),
    "budgets_without_costs": (dict(budgets=np.ones(2)), ["costs", "budgets"]),
    "budgets_wrong_length": (dict(costs=np.zeros((S, A, 2)), budgets=np.ones(3)),
                             ["budgets", "[2]", "(3,)"]),
    "discount_negative": (dict(discount=-0.1), ["discount", "[0, 1]", "-0.1"]),
    "discount_above_one": (dict(discount=1.5), ["discount", "[0, 1]", "1.5"]),
    "discount_nan": (dict(discount=np.nan), ["discount", "[0, 1]", "nan"]),
    "discount_vector": (dict(discount=np.array([0.9, 0.9])), ["discount", "(2,)"]),
}


@pytest.mark.parametrize("overrides, fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_make_mdp_rejects(overrides, fragments):
  with pytest.raises(ValueError) as info:
    _make(**overrides)
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)


@pytest.mark.parametrize("overrides, fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_check_mdp_rejects_with_custom_name(overrides, fragments):
  fields = _valid(**overrides)
  mdp = TabularMDP(**fields)
  with pytest.raises(ValueError, match=r"^expert_mdp"):
    check_mdp(mdp, name="expert_mdp")


def test_check_mdp_batched_names_batch_row():
  p0, nu0 = ref.random_mdp(0, S, A)
  p1, nu1 = ref.random_mdp(1, S, A)
  p1 = p1.copy()
  p1[0, 1] *= 2.0
  batch = TabularMDP(np.stack([p0, p1]), np.stack([nu0, nu1]), np.array([0.9, 0.9]))
  with pytest.raises(ValueError, match=re.escape("(1, 0, 1)")):
    check_mdp(batch)
  # A batch whose leaves disagree on the batch axis.
  with pytest.raises(ValueError, match=re.escape(f"(3, {S})")):
    check_mdp(batch._replace(initial=np.stack([nu0, nu1, nu1])))
  with pytest.raises(ValueError, match="discount"):
    check_mdp(batch._replace(discount=np.array([0.9, 0.9, 0.9])))
