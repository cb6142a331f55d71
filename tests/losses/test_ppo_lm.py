"""Tests for irl_jax/losses/ppo.py against float64 NumPy references written as loops from
docs/objectives.md §9.4: KL-shaped rewards, token GAE, whitening and the clipped PPO losses,
with ragged and empty rows, NaN in masked slots, bf16 inputs and argument checks."""

import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.losses import PPOExtras, kl_shaped_rewards, ppo_losses, token_gae, whiten

# --- float64 NumPy references, written from docs/objectives.md §9.4 --------------------------


def _positions(where, row):
  return [t for t in range(where.shape[1]) if where[row, t]]


def ref_kl_shaped_rewards(scores, lp, lr, where, kl_coef):
  """r_t = −β(log π_old − log π_ref) on each response token, plus R at the row's last one."""
  out = np.zeros(lp.shape)
  for b in range(lp.shape[0]):
    tokens = _positions(where, b)
    for t in tokens:
      out[b, t] = -kl_coef * (float(lp[b, t]) - float(lr[b, t]))
    if tokens:
      out[b, tokens[-1]] += float(scores[b])
  return out


def ref_gae(rewards, values, where, gamma, lam):
  """A backwards loop over each row's response tokens; V = 0 and A = 0 after the last."""
  adv = np.zeros(rewards.shape)
  ret = np.zeros(rewards.shape)
  for b in range(rewards.shape[0]):
    next_value, next_adv = 0.0, 0.0
    for t in reversed(_positions(where, b)):
      delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
      next_adv = delta + gamma * lam * next_adv
      next_value = float(values[b, t])
      adv[b, t] = next_adv
      ret[b, t] = next_adv + float(values[b, t])
  return adv, ret


def ref_whiten(x, where, ddof=0, eps=1e-8, shift_mean=True):
  vals = [float(x[i]) for i in np.ndindex(x.shape) if where[i]]
  out = np.zeros(x.shape)
  if not vals:
    return out
  mean = sum(vals) / len(vals)
  dof = len(vals) - ddof
  var = sum((v - mean) ** 2 for v in vals) / dof if dof > 0 else 0.0
  for i in np.ndindex(x.shape):
    if where[i]:
      out[i] = (float(x[i]) - mean) / np.sqrt(var + eps) + (0.0 if shift_mean else mean)
  return out


def ref_ppo(lp, lo, adv, v, v_old, ret, where, *, clip_epsilon, value_clip, vf_coef,
            normaliser):
  """Elementwise: ρ = exp(lp − lo), −min(ρA, clip(ρ)A) + c_V·½·max((V−R)², (Vc−R)²)."""
  n, t_size = lp.shape
  policy = np.zeros((n, t_size))
  value = np.zeros((n, t_size))
  clipped = value_clipped = approx_kl = 0.0
  for b in range(n):
    for t in range(t_size):
      if not where[b, t]:
        continue
      a = float(adv[b, t])
      rho = np.exp(float(lp[b, t]) - float(lo[b, t]))
      rho_c = min(max(rho, 1 - clip_epsilon), 1 + clip_epsilon)
      policy[b, t] = -min(rho * a, rho_c * a)
      clipped += rho_c * a < rho * a
      approx_kl += (rho - 1) - np.log(rho)
      r = float(ret[b, t])
      vc = min(max(float(v[b, t]), float(v_old[b, t]) - value_clip),
               float(v_old[b, t]) + value_clip)
      value[b, t] = 0.5 * max((float(v[b, t]) - r) ** 2, (vc - r) ** 2)
      value_clipped += (vc - r) ** 2 > (float(v[b, t]) - r) ** 2
  count = where.sum()

  def reduce(x):
    if normaliser == "token":
      return x.sum() / count if count else 0.0
    if normaliser == "sequence":
      means = [x[b].sum() / where[b].sum() for b in range(n) if where[b].any()]
      return sum(means) / len(means) if means else 0.0
    return x.sum() / normaliser

  per_token = policy + vf_coef * value
  return {"loss": reduce(per_token), "policy": reduce(policy), "value": reduce(value),
          "per_token": per_token, "clip_fraction": clipped / count,
          "value_clip_fraction": value_clipped / count, "approx_kl": approx_kl / count}


# --- fixtures -------------------------------------------------------------------------------

N, T = 5, 9


def _mask():
  """Ragged responses after prompts of different lengths, a full row and an empty row."""
  where = np.zeros((N, T), bool)
  where[0, 2:7] = True    # prompt 2, response 5
  where[1, 4:5] = True    # a single token
  where[2, :] = True      # the whole row
  where[4, 5:9] = True    # response to the end
  return where            # row 3 is empty


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda scale=1.0: (scale * rng.standard_normal((N, T))).astype(np.float32)
  lp = -np.abs(f()) - 0.1
  return dict(
      log_probs=lp, old_log_probs=lp + f(0.3), advantages=f(), values=f(),
      old_values=f(), returns=f(2.0)), rng


# --- kl_shaped_rewards ------------------------------------------------------------------------


def test_kl_shaped_rewards_match_the_loop():
  x, rng = _inputs()
  where = _mask()
  scores = rng.standard_normal(N).astype(np.float32)
  ref_lp = x["log_probs"] + rng.standard_normal((N, T)).astype(np.float32)
  got = kl_shaped_rewards(scores, x["log_probs"], ref_lp, where=where, kl_coef=0.05)
  assert got.dtype == jnp.float32 and got.shape == (N, T)
  want = ref_kl_shaped_rewards(scores, x["log_probs"], ref_lp, where, 0.05)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The score lands on the last response token; the empty row gets nothing.
  zero_kl = kl_shaped_rewards(scores, ref_lp, ref_lp, where=where, kl_coef=0.05)
  assert float(zero_kl[0, 6]) == pytest.approx(scores[0]) and float(zero_kl[4, 8]) == \
      pytest.approx(scores[4])
  assert np.all(np.asarray(zero_kl)[3] == 0)
  assert np.count_nonzero(np.asarray(zero_kl)) == 4


# --- token_gae ------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0),
                                        (0.0, 0.7)])
def test_token_gae_matches_the_backward_loop(gamma, lam):
  x, rng = _inputs(1)
  where = _mask()
  rewards = rng.standard_normal((N, T)).astype(np.float32)
  adv, ret = token_gae(rewards, x["values"], where=where, gamma=gamma, lam=lam)
  want_adv, want_ret = ref_gae(rewards, x["values"], where, gamma, lam)
  np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)
  assert not np.any(np.asarray(adv)[~where]) and not np.any(np.asarray(ret)[~where])


def test_token_gae_limits_monte_carlo_and_td():
  x, rng = _inputs(2)
  where = _mask()
  r = rng.standard_normal((N, T)).astype(np.float32)
  v = x["values"]
  gamma = 0.9
  # λ = 1: the discounted return to the episode's end minus V.
  adv, ret = token_gae(r, v, where=where, gamma=gamma, lam=1.0)
  for b in range(N):
    tokens = _positions(where, b)
    for i, t in enumerate(tokens):
      mc = sum(gamma ** k * float(r[b, s]) for k, s in enumerate(tokens[i:]))
      assert float(ret[b, t]) == pytest.approx(mc, rel=1e-5, abs=1e-5)
      assert float(adv[b, t]) == pytest.approx(mc - float(v[b, t]), rel=1e-5, abs=1e-5)
  # λ = 0: one-step TD errors, V = 0 after the last token.
  adv, _ = token_gae(r, v, where=where, gamma=gamma, lam=0.0)
  for b in range(N):
    tokens = _positions(where, b)
    for i, t in enumerate(tokens):
      nxt = float(v[b, tokens[i + 1]]) if i + 1 < len(tokens) else 0.0
      assert float(adv[b, t]) == pytest.approx(float(r[b, t]) + gamma * nxt - float(v[b, t]),
                                               rel=1e-5, abs=1e-5)


def test_token_gae_ignores_nan_in_masked_slots_and_jits():
  x, rng = _inputs(3)
  where = _mask()
  r = rng.standard_normal((N, T)).astype(np.float32)
  v = x["values"].copy()
  r_bad, v_bad = r.copy(), v.copy()
  r_bad[~where], v_bad[~where] = np.nan, np.inf
  fn = jax.jit(lambda r, v: token_gae(r, v, where=where, gamma=1.0, lam=0.95))
  for got, want in zip(fn(r_bad, v_bad), token_gae(r, v, where=where, gamma=1.0, lam=0.95),
                       strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(np.isfinite(got))


# --- whiten ---------------------------------------------------------------------------------


def test_whiten_is_a_masked_normalisation():
  x, _ = _inputs(4)
  where = _mask()
  a = 3.0 * x["advantages"] + 2.0
  a[~where] = np.nan
  got = np.asarray(whiten(a, where))
  np.testing.assert_allclose(got, ref_whiten(a, where), rtol=1e-5, atol=1e-5)
  assert got[where].mean() == pytest.approx(0.0, abs=1e-5)
  assert got[where].var() == pytest.approx(1.0, rel=1e-4)
  assert not np.any(got[~where])
  np.testing.assert_allclose(whiten(a, where, ddof=1, shift_mean=False),
                             ref_whiten(a, where, ddof=1, shift_mean=False), rtol=1e-5,
                             atol=1e-5)
  assert not np.any(np.asarray(whiten(a, np.zeros_like(where))))
  one = np.zeros_like(where)
  one[0, 3] = True
  assert float(whiten(a, one, ddof=1)[0, 3]) == 0.0  # one value: no spread, variance 0


# --- ppo_losses -----------------------------------------------------------------------------


@pytest.mark.parametrize("normaliser", ["token", "sequence", 16.0])
@pytest.mark.parametrize("value_clip", [0.2, 1e9])
def test_ppo_losses_match_the_elementwise_reference(normaliser, value_clip):
  x, _ = _inputs(5)
  where = _mask()
  kw = dict(clip_epsilon=0.2, value_clip=value_clip, vf_coef=0.1, normaliser=normaliser)
  loss, extras = ppo_losses(*x.values(), where=where, **kw)
  want = ref_ppo(*x.values(), where, **kw)
  assert isinstance(extras, PPOExtras) and loss.dtype == jnp.float32
  assert float(loss) == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
  assert float(extras.loss_terms.mean()) == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
  assert float(extras.policy_loss.mean()) == pytest.approx(want["policy"], rel=1e-5, abs=1e-6)
  assert float(extras.value_loss.mean()) == pytest.approx(want["value"], rel=1e-5, abs=1e-6)
  np.testing.assert_allclose(extras.per_token_loss, want["per_token"], rtol=1e-5, atol=1e-6)
  for name in ("clip_fraction", "value_clip_fraction", "approx_kl"):
    assert float(getattr(extras, name).mean()) == pytest.approx(want[name], rel=1e-5,
                                                                abs=1e-6), name
  assert 0 < float(extras.clip_fraction.mean()) < 1
  if value_clip < 1:
    assert 0 < float(extras.value_clip_fraction.mean()) < 1
  else:
    assert float(extras.value_clip_fraction.mean()) == 0
  ratio = np.asarray(extras.ratio)
  assert np.all(ratio[~where] == 1)


def test_ppo_losses_without_value_clip_is_the_plain_squared_error():
  x, _ = _inputs(6)
  where = _mask()
  _, extras = ppo_losses(*x.values(), where=where, value_clip=None)
  d = (x["values"] - x["returns"])[where].astype(np.float64)
  assert float(extras.value_loss.mean()) == pytest.approx(0.5 * np.mean(d ** 2), rel=1e-5)
  assert float(extras.value_clip_fraction.mean()) == 0


def test_ppo_losses_gradients_match_the_reference_and_stop_where_they_should():
  x, _ = _inputs(7)
  where = _mask()
  kw = dict(clip_epsilon=0.2, value_clip=0.2, vf_coef=0.5, normaliser="token")
  names = list(x)
  grads = jax.grad(lambda *a: ppo_losses(*a, where=where, **kw)[0],
                   argnums=tuple(range(6)))(*x.values())
  for name, g in zip(names, grads, strict=True):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and not np.any(g[~where]), name
    if name in ("old_log_probs", "advantages", "old_values", "returns"):
      assert not np.any(g), name  # stop-gradient
  # log_probs and values: central differences of the float64 reference.
  h = 1e-4
  for name, g in (("log_probs", grads[0]), ("values", grads[3])):
    for b, t in ((0, 3), (2, 0), (4, 8), (1, 4)):
      args = {k: v.astype(np.float64) for k, v in x.items()}
      up, down = dict(args), dict(args)
      up[name] = args[name].copy()
      down[name] = args[name].copy()
      up[name][b, t] += h
      down[name][b, t] -= h
      fd = (ref_ppo(*up.values(), where, **kw)["loss"]
            - ref_ppo(*down.values(), where, **kw)["loss"]) / (2 * h)
      assert float(g[b, t]) == pytest.approx(fd, rel=1e-3, abs=1e-5), (name, b, t)


def test_ppo_losses_masked_nan_and_empty_batches():
  x, _ = _inputs(8)
  where = _mask()
  bad = {k: v.copy() for k, v in x.items()}
  for v in bad.values():
    v[~where] = np.nan
  loss, extras = ppo_losses(*bad.values(), where=where)
  want, _ = ppo_losses(*x.values(), where=where)
  assert float(loss) == pytest.approx(float(want), rel=1e-6)
  g = jax.grad(lambda lp, v: ppo_losses(lp, bad["old_log_probs"], bad["advantages"], v,
                                        bad["old_values"], bad["returns"], where=where)[0],
               argnums=(0, 1))(bad["log_probs"], bad["values"])
  assert all(np.all(np.isfinite(np.asarray(a))) for a in g)
  empty = np.zeros_like(where)
  loss, extras = ppo_losses(*x.values(), where=empty)
  assert float(loss) == 0.0 and float(extras.clip_fraction.mean()) == 0.0


def test_bf16_inputs_compute_in_float32():
  x, rng = _inputs(9)
  where = _mask()
  low = {k: jnp.asarray(v, jnp.bfloat16) for k, v in x.items()}
  rounded = {k: np.asarray(v, np.float32) for k, v in low.items()}
  loss, extras = ppo_losses(*low.values(), where=where)
  assert loss.dtype == jnp.float32 and extras.per_token_loss.dtype == jnp.float32
  want = ref_ppo(*rounded.values(), where, clip_epsilon=0.2, value_clip=0.2, vf_coef=0.1,
                 normaliser="token")
  assert float(loss) == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)

  scores = jnp.asarray(rng.standard_normal(N), jnp.bfloat16)
  rewards = kl_shaped_rewards(scores, low["log_probs"], low["old_log_probs"], where=where,
                              kl_coef=0.1)
  assert rewards.dtype == jnp.float32
  np.testing.assert_allclose(rewards, ref_kl_shaped_rewards(
      np.asarray(scores, np.float32), rounded["log_probs"], rounded["old_log_probs"], where,
      0.1), rtol=1e-5, atol=1e-6)
  adv, ret = token_gae(low["returns"], low["values"], where=where, gamma=1.0, lam=0.95)
  assert adv.dtype == ret.dtype == jnp.float32
  want_adv, _ = ref_gae(rounded["returns"], rounded["values"], where, 1.0, 0.95)
  np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
  assert whiten(low["advantages"], where).dtype == jnp.float32


# --- argument checks ----------------------------------------------------------------------------


def _ppo(**changes):
  x, _ = _inputs()
  kw = dict(where=_mask())
  for k, v in changes.items():
    (x if k in x else kw)[k] = v
  return ppo_losses(*x.values(), **kw)


@pytest.mark.parametrize("call, error, message", [
    (lambda: _ppo(log_probs=np.zeros(T, np.float32)), ValueError,
     "ppo_losses: `log_probs` must have rank 2"),
    (lambda: _ppo(returns=np.zeros((N, T + 1), np.float32)), ValueError,
     "ppo_losses: shapes must match"),
    (lambda: _ppo(clip_epsilon=-0.1), ValueError, "`clip_epsilon`=-0.1 is outside"),
    (lambda: _ppo(value_clip=-1.0), ValueError, "`value_clip`=-1.0 is outside"),
    (lambda: _ppo(vf_coef=-0.5), ValueError, "`vf_coef`=-0.5 is outside"),
    (lambda: _ppo(where=np.ones((N, T), np.float32)), TypeError, "`where` must be a bool"),
    (lambda: _ppo(where=np.ones((N, T - 1), bool)), ValueError, "`where` has shape"),
    (lambda: _ppo(normaliser="tokens"), ValueError, "unknown normaliser 'tokens'"),
    (lambda: token_gae(np.zeros((N, T)), np.zeros((N, T)), where=_mask(), gamma=1.5, lam=0.9),
     ValueError, "token_gae: `gamma`=1.5 is outside [0.0, 1.0]"),
    (lambda: token_gae(np.zeros((N, T)), np.zeros((N, T)), where=_mask(), gamma=1.0,
                       lam=-0.1), ValueError, "token_gae: `lam`=-0.1 is outside [0.0, 1.0]"),
    (lambda: token_gae(np.zeros(T), np.zeros(T), where=_mask()[0], gamma=1.0, lam=0.9),
     ValueError, "token_gae: `rewards` must have rank 2"),
    (lambda: token_gae(np.zeros((N, T)), np.zeros((N, T - 1)), where=_mask(), gamma=1.0,
                       lam=0.9), ValueError, "token_gae: shapes must match"),
    (lambda: kl_shaped_rewards(np.zeros(N + 1), np.zeros((N, T)), np.zeros((N, T)),
                               where=_mask(), kl_coef=0.1), ValueError,
     "kl_shaped_rewards: `scores` has shape (6,), expected [N]=(5,)"),
    (lambda: kl_shaped_rewards(np.zeros((N, 1)), np.zeros((N, T)), np.zeros((N, T)),
                               where=_mask(), kl_coef=0.1), ValueError,
     "kl_shaped_rewards: `scores` must have rank 1"),
    (lambda: kl_shaped_rewards(np.zeros(N), np.zeros((N, T)), np.zeros((N, T)),
                               where=_mask(), kl_coef=-1.0), ValueError,
     "kl_shaped_rewards: `kl_coef`=-1.0 is outside"),
    (lambda: kl_shaped_rewards(np.zeros(N), np.zeros((N, T), np.int32), np.zeros((N, T)),
                               where=_mask(), kl_coef=0.1), TypeError,
     "`log_probs` must be a floating array"),
    (lambda: whiten(np.zeros((N, T)), _mask(), ddof=-1), ValueError, "whiten: `ddof` must be"),
    (lambda: whiten(np.zeros((N, T)), _mask()[:, :3]), ValueError, "whiten: `where` has shape"),
])
def test_bad_arguments_are_named(call, error, message):
  with pytest.raises(error) as e:
    call()
  assert message in str(e.value)


# --- TRL parity (only where TRL exposes its PPO code as functions) ------------------------------


def test_whiten_matches_trl_masked_whiten_when_available():
  """TRL's PPO whitens its advantages with `masked_whiten` (sample variance, eps 1e-8). Its
  GAE is written inline in `PPOTrainer.train`, so only the whitening can be compared."""
  pytest.importorskip("trl")
  torch = pytest.importorskip("torch")
  fn = None
  for name in ("trl.experimental.ppo.ppo_trainer", "trl.trainer.ppo_trainer",
               "trl.trainer.utils", "trl.core"):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns on import
        fn = getattr(importlib.import_module(name), "masked_whiten", None)
    except Exception:  # an absent or broken optional module: try the next place
      fn = None
    if fn is not None:
      break
  if fn is None:
    pytest.skip("this TRL exposes no masked_whiten (no PPO code)")
  x, _ = _inputs(10)
  where = _mask()
  a = x["advantages"]
  want = fn(torch.tensor(a), torch.tensor(where)).numpy()
  np.testing.assert_allclose(np.asarray(whiten(a, where, ddof=1))[where], want[where],
                             rtol=1e-5, atol=1e-5)
