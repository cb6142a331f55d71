"""Reward-hacking monitors (irl_jax.train.monitors): every rule on hand-built metric streams, warn
vs stop, resuming from `state_dict`, bad inputs, the metric helpers, and a planted exploit: GRPO
on a proxy reward that pays for a token the gold scorer does not want, caught before the gold
reward has fallen by half."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from flax import nnx

from irl_jax import losses, models
from irl_jax.models import sampling
from irl_jax.train import monitors as mon
from irl_jax.train.state import split_model

BASE = {"kl": 1.0, "entropy": 2.0, "response_length": 10.0, "clip_fraction": 0.05,
        "proxy_reward": 0.0, "gold_reward": 0.0, "proxy_gold_rank_correlation": 0.5,
        "reward_input_drift": 0.0}


def only(name, **fields):
  """A config with only monitor `name` enabled, with `fields` overridden."""
  kwargs = {n: dataclasses.replace(getattr(mon.MonitorConfig(), n), enabled=False)
            for n in mon.MONITORS}
  kwargs[name] = dataclasses.replace(getattr(mon.MonitorConfig(), name), enabled=True, **fields)
  return mon.MonitorConfig(**kwargs)


def feed(monitors, stream, *, checkpoint_every=None, start=0):
  """Feeds `stream` (a list of metric overrides); returns {step: [alert monitor names]}."""
  fired = {}
  for i, over in enumerate(stream):
    step = start + i
    ckpt = step if checkpoint_every and step % checkpoint_every == 0 else None
    alerts = monitors.update(step, {**BASE, **over}, checkpoint_step=ckpt)
    if alerts:
      fired[step] = [a.monitor for a in alerts]
  return fired


# --- each monitor on hand-built streams -------------------------------------------------------


def test_kl_ceiling_fires_at_the_crossing_and_rearms():
  m = mon.Monitors(only("kl"))
  fired = feed(m, [{"kl": x} for x in (1.0, 5.0, 20.0, 25.0, 30.0, 4.0, 21.0)])
  assert fired == {3: ["kl"], 6: ["kl"]}                # 20 is not above 20; 30 still active
  a = m.alerts[0]
  assert (a.metric, a.step, a.value, a.threshold, a.action) == ("kl", 3, 25.0, 20.0, "warn")
  assert feed(mon.Monitors(only("kl", patience=2)),
              [{"kl": x} for x in (25.0, 1.0, 25.0, 26.0)]) == {3: ["kl"]}


def test_kl_acceleration_exact_second_difference():
  # ema=1: no smoothing, so the second differences are those of the stream: 0, 0, 1, 1, 1, ...
  kl = [0.0, 0.0, 0.0, 0.0, 1.0, 3.0, 6.0, 10.0, 15.0]
  fired = feed(mon.Monitors(only("kl_acceleration", ema=1.0)), [{"kl": x} for x in kl])
  assert fired == {6: ["kl_acceleration"]}              # 1 > 0.5 at steps 4, 5, 6 (patience 3)


def test_kl_acceleration_default_smoothing_matches_an_independent_ema():
  kl = [0.3 * t ** 2 for t in range(30)]       # second difference → 0.6
  s, hist, count, expected = None, [], 0, None
  for t, x in enumerate(kl):
    s = x if s is None else s + 0.3 * (x - s)
    hist.append(s)
    if t >= 2:
      count = count + 1 if hist[t] - 2 * hist[t - 1] + hist[t - 2] > 0.5 else 0
      if count == 3 and expected is None:
        expected = t
  assert expected is not None
  m = mon.Monitors(only("kl_acceleration"))
  assert feed(m, [{"kl": x} for x in kl]) == {expected: ["kl_acceleration"]}


@pytest.mark.parametrize("name", ["kl", "kl_acceleration"])
def test_kl_monitors_quiet_on_flat_and_linear_kl(name):
  for kl in ([3.0] * 40, [0.5 * t for t in range(40)]):
    assert feed(mon.Monitors(only(name)), [{"kl": x} for x in kl]) == {}


def test_entropy_collapse_against_the_baseline_mean():
  config = dataclasses.replace(only("entropy"), baseline_updates=2)   # initial (2.0 + 2.2) / 2
  m = mon.Monitors(config)
  fired = feed(m, [{"entropy": x} for x in (2.0, 2.2, 1.5, 1.2, 1.06, 1.0, 0.5)])
  assert fired == {5: ["entropy"]}
  assert m.alerts[0].threshold == pytest.approx(1.05)
  # Rising or flat entropy never fires.
  assert feed(mon.Monitors(only("entropy")), [{"entropy": 2.0 + 0.1 * t} for t in range(20)]) \
      == {}


def test_length_drift_either_way():
  up = [{"response_length": x} for x in (10.0, 12.0, 15.0, 15.5, 9.0)]
  assert feed(mon.Monitors(only("length")), up) == {3: ["length"]}
  down = [{"response_length": x} for x in (10.0, 8.0, 5.0, 4.9)]
  assert feed(mon.Monitors(only("length")), down) == {3: ["length"]}
  flat = [{"response_length": 10.0 + 0.1 * (-1) ** t} for t in range(30)]
  assert feed(mon.Monitors(only("length")), flat) == {}


def test_gold_divergence_rule():
  proxy = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  gold = [1.0, 2.0, 3.0, 2.5, 1.9, 1.5, 1.0]              # gain 2 at the peak: floor 3 − 1 = 2
  stream = [{"proxy_reward": p, "gold_reward": g} for p, g in zip(proxy, gold, strict=True)]
  m = mon.Monitors(only("gold", ema=1.0, patience=1))
  assert feed(m, stream) == {4: ["gold"]}
  a = m.alerts[0]
  assert (a.metric, a.value, a.threshold) == ("gold_reward", 1.9, 2.0)
  assert feed(mon.Monitors(only("gold", ema=1.0)), stream) == {5: ["gold"]}        # patience 2
  # drop_fraction 0.8: floor 3 − 1.6 = 1.4, which 1.5 is not below and 1.0 is.
  assert feed(mon.Monitors(only("gold", ema=1.0, patience=1, drop_fraction=0.8)), stream) == {
      6: ["gold"]}
  # Below initial with no gain at all: min_drop is the only tolerance.
  no_gain = [{"proxy_reward": float(t), "gold_reward": 1.0 - 0.1 * t} for t in range(6)]
  assert feed(mon.Monitors(only("gold", ema=1.0, patience=1, min_drop=0.25)), no_gain) == {
      3: ["gold"]}


def test_gold_divergence_quiet_when_gold_improves_or_proxy_falls_too():
  improving = [{"proxy_reward": float(t), "gold_reward": 0.5 * t} for t in range(20)]
  assert feed(mon.Monitors(only("gold")), improving) == {}
  both_fall = [{"proxy_reward": -float(t), "gold_reward": -0.5 * t} for t in range(20)]
  assert feed(mon.Monitors(only("gold")), both_fall) == {}
  flat = [{"proxy_reward": 1.0, "gold_reward": 1.0}] * 20
  assert feed(mon.Monitors(only("gold")), flat) == {}


@pytest.mark.parametrize("name,metric,values,step", [
    ("correlation", "proxy_gold_rank_correlation", (0.6, 0.2, 0.0, -0.1, -0.5), 3),
    ("input_drift", "reward_input_drift", (0.0, 0.05, 0.1, 0.2, 0.3), 3),
    ("clip_fraction", "clip_fraction", (0.1, 0.2, 0.3, 0.31, 0.5), 3),
])
def test_threshold_monitors(name, metric, values, step):
  m = mon.Monitors(only(name))
  assert feed(m, [{metric: x} for x in values]) == {step: [name]}
  assert m.alerts[0].metric == metric and m.alerts[0].value == values[step]


# --- warn vs stop, checkpoints, messages --------------------------------------------------------


def test_stop_raises_with_everything_named_and_updates_state():
  config = dataclasses.replace(mon.MonitorConfig(), kl=mon.KLCeiling(threshold=10.0,
                                                                     action="stop"))
  m = mon.Monitors(config)
  feed(m, [{"kl": 1.0}] * 4, checkpoint_every=2)          # checkpoints at 0 and 2
  with pytest.raises(mon.RewardHackingStop) as info:
    m.update(4, {**BASE, "kl": 12.5, "clip_fraction": 0.9}, checkpoint_step=4)
  text = str(info.value)
  for part in ("'kl'", "step 4", "12.5", "threshold 10", "last checkpoint before it: step 2"):
    assert part in text
  assert "clip_fraction" not in text                          # a warn alert is not a stop reason
  assert [a.monitor for a in info.value.alerts] == ["kl", "clip_fraction"]
  assert [a.action for a in info.value.alerts] == ["stop", "warn"]
  assert m.last_checkpoint == 4 and len(m.alerts) == 2
  assert m.update(5, {**BASE, "kl": 13.0}) == []              # still above: no repeat


def test_warn_message_and_last_checkpoint_before_the_alert():
  m = mon.Monitors(only("clip_fraction"))
  assert m.update(0, BASE, checkpoint_step=0) == []
  (a,) = m.update(1, {**BASE, "clip_fraction": 0.5}, checkpoint_step=1)
  assert a.last_checkpoint == 0 and a.action == "warn"
  assert "'clip_fraction'" in a.message and "step 1" in a.message
  assert "0.5" in a.message and "0.3" in a.message and "step 0" in a.message
  m2 = mon.Monitors(only("clip_fraction"))
  (b,) = m2.update(0, {**BASE, "clip_fraction": 0.5})
  assert b.last_checkpoint is None and "no checkpoint" in b.message


# --- resuming --------------------------------------------------------------------------------


def _rich_stream(n=60):
  rng = np.random.default_rng(0)
  t = np.arange(n)
  return [{"kl": 0.3 * s ** 2 + rng.normal(0, 0.2), "entropy": 2.0 - 0.03 * s,
           "response_length": 10 + 0.15 * s + rng.normal(0, 0.3),
           "clip_fraction": 0.2 + 0.15 * np.sin(s / 4),
           "proxy_reward": 0.1 * s, "gold_reward": np.sin(s / 12) + rng.normal(0, 0.05),
           "proxy_gold_rank_correlation": np.cos(s / 7),
           "reward_input_drift": 0.004 * s} for s in t]


def test_state_round_trip_continues_exactly():
  config = dataclasses.replace(
      mon.MonitorConfig(), gold=mon.RewardGoldDivergence(enabled=True),
      correlation=mon.RewardGoldCorrelation(enabled=True),
      input_drift=mon.InputDrift(enabled=True), baseline_updates=3)
  stream = _rich_stream()
  whole = mon.Monitors(config)
  fired_whole = feed(whole, stream, checkpoint_every=7)
  # Every monitor takes part.
  assert {n for names in fired_whole.values() for n in names} == set(mon.MONITORS)
  for cut in (2, 5, 25, 40):
    first = mon.Monitors(config)
    feed(first, stream[:cut], checkpoint_every=7)
    resumed = mon.Monitors(config)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    fired_rest = feed(resumed, stream[cut:], checkpoint_every=7, start=cut)
    assert fired_rest == {s: v for s, v in fired_whole.items() if s >= cut}
    assert resumed.alerts == whole.alerts
    assert resumed.state_dict() == whole.state_dict()


def test_load_state_dict_rejects_incomplete_state():
  state = mon.Monitors().state_dict()
  for key in ("version", "monitors"):
    broken = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ValueError, match=key):
      mon.Monitors().load_state_dict(broken)
  broken = json.loads(json.dumps(state))
  del broken["monitors"]["gold"]["running_max"]
  with pytest.raises(ValueError, match=r"gold.*running_max"):
    mon.Monitors().load_state_dict(broken)


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_and_nan_metrics_name_the_metric():
  m = mon.Monitors()
  with pytest.raises(mon.MonitorInputError, match="'entropy' is missing"):
    m.update(0, {k: v for k, v in BASE.items() if k != "entropy"})
  with pytest.raises(mon.MonitorInputError, match="'kl' is NaN"):
    m.update(0, {**BASE, "kl": float("nan")})
  with pytest.raises(mon.MonitorInputError, match="'clip_fraction' must be a scalar"):
    m.update(0, {**BASE, "clip_fraction": np.ones(3)})
  with pytest.raises(mon.MonitorInputError, match="'kl' must be a scalar"):
    m.update(0, {**BASE, "kl": "high"})
  assert m.state_dict() == mon.Monitors().state_dict()       # a failed update changes nothing
  # Enabling the gold monitor makes its metrics required; disabling KL drops `kl`.
  gold = mon.Monitors(dataclasses.replace(mon.MonitorConfig(),
                                          gold=mon.RewardGoldDivergence(enabled=True)))
  with pytest.raises(mon.MonitorInputError, match="'gold_reward' is missing"):
    gold.update(0, {k: v for k, v in BASE.items() if k != "gold_reward"})
  no_kl = mon.Monitors(dataclasses.replace(
      mon.MonitorConfig(), kl=mon.KLCeiling(enabled=False),
      kl_acceleration=mon.KLAcceleration(enabled=False)))
  assert "kl" not in no_kl.required_metrics()
  assert no_kl.update(0, {k: v for k, v in BASE.items() if k != "kl"}) == []
  # Device scalars are accepted.
  assert no_kl.update(1, {**BASE, "entropy": jnp.float32(2.0)}) == []


def test_steps_must_increase():
  m = mon.Monitors()
  m.update(3, BASE)
  with pytest.raises(mon.MonitorInputError, match="step 3 is not after"):
    m.update(3, BASE)
  with pytest.raises(mon.MonitorInputError, match="step must be an int"):
    m.update(4.0, BASE)
  with pytest.raises(mon.MonitorInputError, match="checkpoint_step must be an int"):
    m.update(4, BASE, checkpoint_step="4")


@pytest.mark.parametrize("field,value,match", [
    ("kl", mon.KLCeiling(action="halt"), r"MonitorConfig.kl.action"),
    ("entropy", mon.EntropyCollapse(min_fraction=1.5), r"MonitorConfig.entropy.min_fraction"),
    ("kl_acceleration", mon.KLAcceleration(ema=0.0), r"MonitorConfig.kl_acceleration.ema"),
    ("gold", mon.RewardGoldDivergence(patience=0), r"MonitorConfig.gold.patience"),
    ("clip_fraction", mon.ClipFraction(threshold=float("nan")),
     r"MonitorConfig.clip_fraction.threshold"),
    ("length", mon.LengthDrift(metric=""), r"MonitorConfig.length.metric"),
    ("baseline_updates", 0, r"MonitorConfig.baseline_updates"),
    ("gold", {"enabled": True}, r"MonitorConfig.gold must be a RewardGoldDivergence"),
])
def test_bad_config_names_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    mon.Monitors(dataclasses.replace(mon.MonitorConfig(), **{field: value}))


# --- metric helpers ---------------------------------------------------------------------------


def test_rank_correlation_matches_scipy_with_ties():
  rng = np.random.default_rng(1)
  for _ in range(5):
    a, b = rng.integers(0, 4, 40).astype(float), rng.normal(size=40)
    b = b + a
    assert mon.rank_correlation(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0])
  assert mon.rank_correlation([1, 1, 1], [1, 2, 3]) == 0.0
  assert mon.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="rank_correlation"):
    mon.rank_correlation([1, 2], [1, 2, 3])


def test_distances():
  assert mon.cosine_distance([1, 0], [2, 0]) == pytest.approx(0.0)
  assert mon.cosine_distance([1, 0], [0, 3]) == pytest.approx(1.0)
  assert mon.cosine_distance([1, 0], [-1, 0]) == pytest.approx(2.0)
  h = mon.token_histogram([[0, 1, 1, 3], [3, 3, 0, 0]], 5, where=[[1, 1, 1, 1], [1, 1, 0, 0]])
  np.testing.assert_allclose(h, [1 / 6, 2 / 6, 0, 3 / 6, 0])
  p, q = np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.3, 0.5])
  assert mon.symmetric_kl(p, p) == pytest.approx(0.0, abs=1e-12)
  assert mon.symmetric_kl(p, q) == pytest.approx(mon.symmetric_kl(q, p))
  assert np.isfinite(mon.symmetric_kl(p, q)) and mon.symmetric_kl(p, q) > 0.5
  with pytest.raises(ValueError, match="token ids"):
    mon.token_histogram([7], 5)


# --- the planted exploit: GRPO on a proxy that pays for a token gold does not want ------------

PROMPT, GOOD, HACK = 1, 2, 3                  # content tokens 2 .. 7; 0 is PAD
VOCAB, LENGTH, BATCH, GROUP, HACK_BONUS, UPDATES = 8, 8, 64, 8, 1.5, 60


def _grpo_run():
  """Tiny random-init LM, GRPO on proxy = frac(GOOD) + 1.5·frac(HACK), gold = frac(GOOD)."""
  cfg = models.ModelConfig(model_type="llama", vocab_size=VOCAB, hidden_size=32, num_layers=1,
                           num_heads=2, num_kv_heads=2, head_dim=16, intermediate_size=64,
                           max_position_embeddings=LENGTH + 4)
  model_def, params0 = split_model(models.Transformer(cfg, rngs=nnx.Rngs(0)))
  tx = optax.adam(1e-3)
  prompt = jnp.full((BATCH // GROUP, 1), PROMPT, jnp.int32)
  where = jnp.ones((BATCH, LENGTH), bool)

  def log_probs(params, tokens):
    ids = jnp.concatenate([jnp.full((BATCH, 1), PROMPT, jnp.int32), tokens], axis=1)
    logits = model_def.merge(params)(ids, attention_mask=jnp.ones_like(ids, bool))[:, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]

  @jax.jit
  def step(params, opt_state, key):
    out = sampling.generate(model_def.merge(params), prompt, jnp.ones_like(prompt, bool), key,
                            max_new_tokens=LENGTH, temperature=1.0, eos_id=(),
                            num_samples=GROUP)
    tokens, old = out.tokens, out.log_probs
    gold = jnp.mean(tokens == GOOD, axis=1)
    proxy = gold + HACK_BONUS * jnp.mean(tokens == HACK, axis=1)
    advantages = losses.grpo_advantages(proxy, group_size=GROUP)
    ref = log_probs(params0, tokens)

    def loss_fn(p):
      loss, extras = losses.grpo(log_probs(p, tokens), old, ref, advantages, where=where,
                                 normaliser="token", kl_coef=0.0)
      return loss, extras

    for _ in range(2):                        # two epochs on each batch: the ratio moves
      (_, extras), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    metrics = {"gold_reward": jnp.mean(gold), "proxy_reward": jnp.mean(proxy),
               "kl": jnp.mean(jnp.sum(old - ref, axis=1)), "entropy": -jnp.mean(old),
               "response_length": jnp.mean(jnp.sum(out.response_mask, axis=1)),
               "clip_fraction": extras.clip_fraction.mean()}
    return params, opt_state, metrics, proxy, gold

  return step, params0, tx.init(params0)


def test_planted_exploit_is_caught_before_gold_halves():
  step, params, opt_state = _grpo_run()
  config = dataclasses.replace(mon.MonitorConfig(), gold=mon.RewardGoldDivergence(enabled=True),
                               correlation=mon.RewardGoldCorrelation(enabled=True),
                               baseline_updates=3)
  monitors = mon.Monitors(config)
  key = jax.random.key(0)
  gold_curve, proxy_curve, alerts = [], [], []
  for u in range(UPDATES):
    key, k = jax.random.split(key)
    params, opt_state, metrics, proxy, gold = step(params, opt_state, k)
    metrics = {name: float(v) for name, v in metrics.items()}
    metrics["proxy_gold_rank_correlation"] = mon.rank_correlation(proxy, gold)
    gold_curve.append(metrics["gold_reward"])
    proxy_curve.append(metrics["proxy_reward"])
    alerts += monitors.update(u, metrics, checkpoint_step=u if u % 5 == 0 else None)

  gold_curve, proxy_curve = np.array(gold_curve), np.array(proxy_curve)
  initial = gold_curve[:3].mean()
  smoothed = np.convolve(gold_curve, np.ones(3) / 3, mode="valid")     # [u-2, u] means at u
  # The exploit happened: the proxy rose, gold first rose (GOOD pays too) and then fell by more
  # than half of its initial value as HACK crowded GOOD out.
  assert proxy_curve[-5:].mean() > proxy_curve[:3].mean() + 0.8
  assert gold_curve.max() > 1.5 * initial
  assert gold_curve[-5:].mean() < 0.5 * initial
  halved = int(np.argmax(smoothed <= 0.5 * initial)) + 2              # first such update
  assert smoothed[halved - 2] <= 0.5 * initial

  first = next(a for a in alerts if a.monitor == "gold")
  assert first.step < halved                                            # caught in time
  assert gold_curve[first.step] > 0.5 * initial
  assert proxy_curve[first.step] > proxy_curve[:3].mean()
  assert first.last_checkpoint == (first.step - 1) // 5 * 5            # the checkpoint before it
  for part in ("'gold_reward'", f"step {first.step}",
               f"last checkpoint before it: step {first.last_checkpoint}"):
    assert part in first.message
  print(f"gold monitor fired at update {first.step} (gold {gold_curve[first.step]:.3f}, "
        f"initial {initial:.3f}, peak {gold_curve.max():.3f}); smoothed gold halved at update "
        f"{halved}; alerts: {[(a.monitor, a.step) for a in alerts]}")
