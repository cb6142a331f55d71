"""Reward-hacking monitors for policy optimisation on a learned or programmatic reward.

RLHF is online IRL: the policy stage (GRPO, PPO) maximises a reward model that
is only right near the data it was fitted on, and a policy that drifts away
finds its errors. `Monitors` watches the scalar metrics of each update on the
host (floats after the jitted step) and warns, or stops the run with
`RewardHackingStop`, naming the monitor, metric, step, value, threshold and
the last checkpoint before the alert::

    monitors = Monitors(MonitorConfig(gold=RewardGoldDivergence(enabled=True, action="stop")))
    for step in range(updates):
      state, m = train_step(state, batch)
      monitors.update(step, {k: float(v) for k, v in m.items()},
                      checkpoint_step=step if step % 100 == 0 else None)

Rules (`x_t` the metric at update `t`; `x_0` its *initial value*, the mean of
the first `MonitorConfig.baseline_updates` updates, during which the relative
monitors do not fire). A condition must hold for `patience` consecutive
updates; the alert is issued on the update where the count reaches `patience`
and not again until the condition has cleared (the monitor re-arms).

=================  ================================  ==========================================
monitor            metric (default name)             fires when (default)
=================  ================================  ==========================================
`kl`               `kl`                              `x_t > threshold` (20 nats per sequence)
`kl_acceleration`  `kl`                              `s_t − 2 s_{t−1} + s_{t−2} > threshold`
                                                     (0.5) for `patience` (3) updates, `s` the
                                                     EMA `s_t = s_{t−1} + α (x_t − s_{t−1})`,
                                                     α = 0.3
`entropy`          `entropy`                         `x_t < min_fraction · x_0` (0.5)
`length`           `response_length`                 `|x_t − x_0| > max_relative_change · |x_0|`
                                                     (0.5)
`gold`             `proxy_reward`, `gold_reward`     EMAs `p`, `g` (α = 0.3), `g*` the running
                                                     max of `g` and `g_0`: `p_t > p_0` and
                                                     `g*_t − g_t > max(drop_fraction ·
                                                     (g*_t − g_0), min_drop)` (0.5, 0) for
                                                     `patience` (2) updates
`correlation`      `proxy_gold_rank_correlation`     `x_t < min_correlation` (0.0)
`input_drift`      `reward_input_drift`              `x_t > threshold` (0.1)
`clip_fraction`    `clip_fraction`                   `x_t > threshold` (0.3)
=================  ================================  ==========================================

The `gold` rule reads: the proxy (learned) reward is above where it started
while the gold reward has given back more than `drop_fraction` of the gain it
had made (with no gain, any drop larger than `min_drop`; so with `min_drop = 0`
falling below its initial value always counts). `p_0`, `g_0` are the raw
initial values (baseline means), compared with the EMAs.

`gold`, `correlation` and `input_drift` need a gold scorer or reward-model
inputs and are disabled by default; the others are enabled. `rank_correlation`,
`cosine_distance`, `token_histogram` and `symmetric_kl` compute the scalar
metrics those monitors read.

Metrics of a disabled monitor are never read. A metric an enabled monitor needs
that is missing, non-numeric or NaN raises `MonitorInputError` naming it (±inf
is compared as it is).
`state_dict()`/`load_state_dict()` carry every EMA, initial value, running max,
counter and the last checkpoint step, so a resumed run alerts exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

ACTIONS = ("warn", "stop")
STATE_VERSION = 1

logger = logging.getLogger(__name__)


class MonitorInputError(ValueError):
  """A metric is missing, non-numeric or NaN, or a step is out of order."""


class Alert(NamedTuple):
  """One monitor firing.

  Attributes:
    monitor: the monitor's name in `MonitorConfig` (e.g. `"gold"`).
    metric: the metric it read (for `gold`, the gold metric).
    step: the update at which it fired.
    value: the value compared with `threshold` (for `kl_acceleration` the
      second difference of the smoothed KL; for `gold` the smoothed gold reward).
    threshold: the threshold in the metric's units (relative thresholds are
      resolved against the initial value).
    action: `"warn"` or `"stop"`.
    message: a sentence naming all of the above and `last_checkpoint`.
    last_checkpoint: the last checkpoint step registered before this update,
      or None.
  """

  monitor: str
  metric: str
  step: int
  value: float
  threshold: float
  action: str
  message: str
  last_checkpoint: int | None


class RewardHackingStop(RuntimeError):
  """Raised by `Monitors.update` when a monitor with `action="stop"` fires.

  Attributes:
    alerts: every alert of that update (the stop alerts first).
  """

  def __init__(self, alerts: list[Alert]):
    stops = [a for a in alerts if a.action == "stop"]
    super().__init__("Stopping the run: " + " ".join(a.message for a in stops))
    self.alerts = stops + [a for a in alerts if a.action != "stop"]


# --- configuration ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KLCeiling:
  """Per-sequence KL to the reference above `threshold` nats."""

  enabled: bool = True
  threshold: float = 20.0
  patience: int = 1
  action: str = "warn"
  metric: str = "kl"


@dataclasses.dataclass(frozen=True)
class KLAcceleration:
  """Second difference of the EMA-smoothed KL (weight `ema` on the new value) above
  `threshold` nats per update² for `patience` consecutive updates."""

  enabled: bool = True
  threshold: float = 0.5
  ema: float = 0.3
  patience: int = 3
  action: str = "warn"
  metric: str = "kl"


@dataclasses.dataclass(frozen=True)
class EntropyCollapse:
  """Per-token entropy (or `−mean log π` of the samples) below `min_fraction` of its initial
  value."""

  enabled: bool = True
  min_fraction: float = 0.5
  patience: int = 1
  action: str = "warn"
  metric: str = "entropy"


@dataclasses.dataclass(frozen=True)
class LengthDrift:
  """Mean response length more than `max_relative_change` (relative) away from its initial
  value, either way."""

  enabled: bool = True
  max_relative_change: float = 0.5
  patience: int = 1
  action: str = "warn"
  metric: str = "response_length"


@dataclasses.dataclass(frozen=True)
class RewardGoldDivergence:
  """The proxy reward above its initial value while the gold reward has fallen from its running
  maximum by more than `max(drop_fraction · (max − initial), min_drop)`; both smoothed by an
  EMA with weight `ema` on the new value (1 disables smoothing)."""

  enabled: bool = False
  drop_fraction: float = 0.5
  min_drop: float = 0.0
  ema: float = 0.3
  patience: int = 2
  action: str = "warn"
  proxy_metric: str = "proxy_reward"
  metric: str = "gold_reward"


@dataclasses.dataclass(frozen=True)
class RewardGoldCorrelation:
  """Rank correlation of proxy and gold rewards over the batch below `min_correlation`."""

  enabled: bool = False
  min_correlation: float = 0.0
  patience: int = 1
  action: str = "warn"
  metric: str = "proxy_gold_rank_correlation"


@dataclasses.dataclass(frozen=True)
class InputDrift:
  """Distance between the batch's reward-model input statistics and the reference batch's
  (e.g. `cosine_distance` of mean embeddings, `symmetric_kl` of token histograms) above
  `threshold`."""

  enabled: bool = False
  threshold: float = 0.1
  patience: int = 1
  action: str = "warn"
  metric: str = "reward_input_drift"


@dataclasses.dataclass(frozen=True)
class ClipFraction:
  """Fraction of tokens where the PPO/GRPO ratio clip is active above `threshold`."""

  enabled: bool = True
  threshold: float = 0.3
  patience: int = 1
  action: str = "warn"
  metric: str = "clip_fraction"


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
  """Thresholds of every monitor (see the module docstring for the rules).

  Attributes:
    kl, kl_acceleration, entropy, length, gold, correlation, input_drift,
      clip_fraction: the monitors' settings; `enabled=False` disables one.
    baseline_updates: the initial value of a metric is the mean of its first
      `baseline_updates` updates; the relative monitors (`entropy`, `length`,
      `gold`) do not fire before it is set.
  """

  kl: KLCeiling = KLCeiling()
  kl_acceleration: KLAcceleration = KLAcceleration()
  entropy: EntropyCollapse = EntropyCollapse()
  length: LengthDrift = LengthDrift()
  gold: RewardGoldDivergence = RewardGoldDivergence()
  correlation: RewardGoldCorrelation = RewardGoldCorrelation()
  input_drift: InputDrift = InputDrift()
  clip_fraction: ClipFraction = ClipFraction()
  baseline_updates: int = 1


MONITORS = ("kl", "kl_acceleration", "entropy", "length", "gold", "correlation", "input_drift",
            "clip_fraction")


def _check_config(config: MonitorConfig) -> None:
  if not isinstance(config, MonitorConfig):
    raise TypeError(f"Monitors: config must be a MonitorConfig, got {type(config).__name__}.")
  b = config.baseline_updates
  if isinstance(b, bool) or not isinstance(b, int) or b < 1:
    raise ValueError(f"MonitorConfig.baseline_updates must be an int >= 1, got {b!r}.")
  for name in MONITORS:
    spec = getattr(config, name)
    expected = type(getattr(MonitorConfig(), name))
    if not isinstance(spec, expected):
      raise ValueError(f"MonitorConfig.{name} must be a {expected.__name__}, got "
                       f"{type(spec).__name__}.")
    for field in dataclasses.fields(spec):
      value = getattr(spec, field.name)
      where = f"MonitorConfig.{name}.{field.name}"
      if field.name == "action" and value not in ACTIONS:
        raise ValueError(f"{where} must be one of {ACTIONS}, got {value!r}.")
      elif field.name == "patience" and (isinstance(value, bool) or not isinstance(value, int)
                                         or value < 1):
        raise ValueError(f"{where} must be an int >= 1, got {value!r}.")
      elif field.name in ("metric", "proxy_metric") and (not isinstance(value, str) or not value):
        raise ValueError(f"{where} must be a non-empty string, got {value!r}.")
      elif field.name == "enabled" and not isinstance(value, bool):
        raise ValueError(f"{where} must be a bool, got {value!r}.")
      elif field.name == "ema" and not (_is_real(value) and 0 < value <= 1):
        raise ValueError(f"{where} must be in (0, 1], got {value!r}.")
      elif field.name in ("threshold", "min_fraction", "max_relative_change", "drop_fraction",
                          "min_drop", "min_correlation") and not (
                              _is_real(value) and math.isfinite(value)):
        raise ValueError(f"{where} must be a finite number, got {value!r}.")
      elif field.name in ("min_fraction", "drop_fraction") and not 0 <= value <= 1:
        raise ValueError(f"{where} must be in [0, 1], got {value!r}.")
      elif field.name in ("max_relative_change", "min_drop") and value < 0:
        raise ValueError(f"{where} must be >= 0, got {value!r}.")


def _is_real(x) -> bool:
  return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


# --- the monitors ------------------------------------------------------------------------


def _fresh_state() -> dict[str, Any]:
  return {"count": 0, "active": False, "baseline": [], "initial": None, "ema": None,
          "history": [], "running_max": None, "proxy_baseline": [], "proxy_initial": None,
          "proxy_ema": None}


class Monitors:
  """Host-side reward-hacking monitors, fed once per update.

  Args:
    config: a `MonitorConfig` (default thresholds if omitted).

  Raises:
    ValueError: naming the config field that is out of range.
  """

  def __init__(self, config: MonitorConfig | None = None):
    self.config = MonitorConfig() if config is None else config
    _check_config(self.config)
    self._states = {name: _fresh_state() for name in MONITORS}
    self._last_step: int | None = None
    self._last_checkpoint: int | None = None
    self.alerts: list[Alert] = []

  @property
  def enabled(self) -> tuple[str, ...]:
    """Names of the enabled monitors."""
    return tuple(n for n in MONITORS if getattr(self.config, n).enabled)

  def required_metrics(self) -> tuple[str, ...]:
    """Metric names the enabled monitors read, in order, without repeats."""
    names: list[str] = []
    for name in self.enabled:
      spec = getattr(self.config, name)
      for m in ((spec.proxy_metric, spec.metric) if name == "gold" else (spec.metric,)):
        if m not in names:
          names.append(m)
    return tuple(names)

  @property
  def last_checkpoint(self) -> int | None:
    """The last checkpoint step registered with `update`."""
    return self._last_checkpoint

  def update(self, step: int, metrics: Mapping[str, Any], *,
             checkpoint_step: int | None = None) -> list[Alert]:
    """Feeds one update's metrics; returns the alerts it raised (also logged as warnings).

    Args:
      step: the update's step, strictly increasing across calls.
      metrics: scalar metrics (floats, or 0-d/size-1 arrays) by name; extra
        names are ignored.
      checkpoint_step: the step of a checkpoint saved with this update, if one
        was; it becomes `last_checkpoint` for the alerts of later updates (an
        alert of this update names the checkpoint before it).

    Returns:
      The `Alert`s of this update (empty if none fired).

    Raises:
      MonitorInputError: a metric an enabled monitor needs is missing,
        non-numeric or NaN, or `step`/`checkpoint_step` is not an int or
        `step` is not after the previous one. Nothing is updated then.
      RewardHackingStop: a monitor with `action="stop"` fired (the monitors'
        state is updated first, and the alerts are on the exception).
    """
    step = _as_step("step", step)
    if checkpoint_step is not None:
      checkpoint_step = _as_step("checkpoint_step", checkpoint_step)
    if self._last_step is not None and step <= self._last_step:
      raise MonitorInputError(f"Monitors.update: step {step} is not after the previous update's "
                              f"step {self._last_step}.")
    values = {name: _as_value(name, metrics) for name in self.required_metrics()}
    alerts = []
    for name in self.enabled:
      spec = getattr(self.config, name)
      fired = getattr(self, f"_check_{name}")(spec, self._states[name], values)
      if fired is None:
        continue
      value, threshold, rule = fired
      alerts.append(self._alert(name, spec, step, value, threshold, rule))
    self._last_step = step
    if checkpoint_step is not None:
      self._last_checkpoint = checkpoint_step
    self.alerts.extend(alerts)
    for a in alerts:
      logger.warning(a.message)
    if any(a.action == "stop" for a in alerts):
      raise RewardHackingStop(alerts)
    return alerts

  def _alert(self, name, spec, step, value, threshold, rule) -> Alert:
    ckpt = self._last_checkpoint
    where = f"last checkpoint before it: step {ckpt}" if ckpt is not None else (
        "no checkpoint before it")
    message = (f"[{spec.action}] reward-hacking monitor '{name}': metric '{spec.metric}' at step "
               f"{step}: {rule} (value {value:.6g}, threshold {threshold:.6g}); {where}.")
    return Alert(name, spec.metric, step, float(value), float(threshold), spec.action, message,
                 ckpt)

  def _persist(self, spec, state, condition: bool) -> bool:
    """Counts consecutive updates of `condition`; True on the update the count reaches
    `patience` while the monitor is armed."""
    state["count"] = state["count"] + 1 if condition else 0
    if not condition:
      state["active"] = False
      return False
    if state["count"] >= spec.patience and not state["active"]:
      state["active"] = True
      return True
    return False

  def _baseline(self, state, x, key="") -> float | None:
    """Accumulates the first `baseline_updates` values; the initial value once set."""
    if state[key + "initial"] is None:
      state[key + "baseline"].append(x)
      if len(state[key + "baseline"]) == self.config.baseline_updates:
        state[key + "initial"] = float(np.mean(state[key + "baseline"]))
      return None
    return state[key + "initial"]

  def _check_kl(self, spec, state, values):
    x = values[spec.metric]
    if self._persist(spec, state, x > spec.threshold):
      return x, spec.threshold, f"KL to the reference {x:.4g} above the ceiling {spec.threshold:g}"
    return None

  def _check_kl_acceleration(self, spec, state, values):
    x = values[spec.metric]
    s = x if state["ema"] is None else state["ema"] + spec.ema * (x - state["ema"])
    state["ema"] = s
    state["history"] = [*state["history"], s][-3:]
    if len(state["history"]) < 3:
      return None
    s2, s1, s0 = state["history"]
    accel = s0 - 2 * s1 + s2
    if self._persist(spec, state, accel > spec.threshold):
      return accel, spec.threshold, (
          f"the smoothed KL curve accelerates by {accel:.4g} per update² (> {spec.threshold:g} "
          f"for {spec.patience} consecutive updates)")
    return None

  def _check_entropy(self, spec, state, values):
    x = values[spec.metric]
    x0 = self._baseline(state, x)
    if x0 is None:
      return None
    limit = spec.min_fraction * x0
    if self._persist(spec, state, x < limit):
      return x, limit, (f"entropy {x:.4g} collapsed below {spec.min_fraction:g} × its initial "
                        f"{x0:.4g}")
    return None

  def _check_length(self, spec, state, values):
    x = values[spec.metric]
    x0 = self._baseline(state, x)
    if x0 is None:
      return None
    change = abs(x - x0)
    limit = spec.max_relative_change * abs(x0)
    if self._persist(spec, state, change > limit):
      return x, limit, (f"mean response length {x:.4g} moved {change:.4g} from its initial "
                        f"{x0:.4g}, more than {spec.max_relative_change:g} × initial (threshold "
                        f"is on |length − initial|)")
    return None

  def _check_gold(self, spec, state, values):
    p_raw, g_raw = values[spec.proxy_metric], values[spec.metric]
    p = p_raw if state["proxy_ema"] is None else (
        state["proxy_ema"] + spec.ema * (p_raw - state["proxy_ema"]))
    g = g_raw if state["ema"] is None else state["ema"] + spec.ema * (g_raw - state["ema"])
    state["proxy_ema"], state["ema"] = p, g
    p0 = self._baseline(state, p_raw, "proxy_")
    g0 = self._baseline(state, g_raw)
    if g0 is None or p0 is None:
      return None
    g_max = g if state["running_max"] is None else max(state["running_max"], g)
    g_max = max(g_max, g0)
    state["running_max"] = g_max
    allowed = max(spec.drop_fraction * (g_max - g0), spec.min_drop)
    floor = g_max - allowed
    if self._persist(spec, state, p > p0 and g < floor):
      return g, floor, (
          f"gold reward (EMA) {g:.4g} fell below {floor:.4g} = its running max {g_max:.4g} − "
          f"max({spec.drop_fraction:g} × gain over initial {g0:.4g}, {spec.min_drop:g}) while "
          f"the proxy '{spec.proxy_metric}' (EMA) {p:.4g} is above its initial {p0:.4g}")
    return None

  def _check_correlation(self, spec, state, values):
    x = values[spec.metric]
    if self._persist(spec, state, x < spec.min_correlation):
      return x, spec.min_correlation, (f"rank correlation of proxy and gold rewards {x:.4g} "
                                       f"below {spec.min_correlation:g}")
    return None

  def _check_input_drift(self, spec, state, values):
    x = values[spec.metric]
    if self._persist(spec, state, x > spec.threshold):
      return x, spec.threshold, (f"reward-model input drift {x:.4g} from the reference batch "
                                 f"above {spec.threshold:g}")
    return None

  def _check_clip_fraction(self, spec, state, values):
    x = values[spec.metric]
    if self._persist(spec, state, x > spec.threshold):
      return x, spec.threshold, f"ratio clip fraction {x:.4g} above {spec.threshold:g}"
    return None

  # --- resuming ---------------------------------------------------------------------------

  def state_dict(self) -> dict[str, Any]:
    """A JSON-serialisable copy of every monitor's state (EMAs, initial values, running maxima,
    counters), the last step and checkpoint, and the alerts so far."""
    return {
        "version": STATE_VERSION,
        "last_step": self._last_step,
        "last_checkpoint": self._last_checkpoint,
        "monitors": {n: {k: (list(v) if isinstance(v, list) else v) for k, v in s.items()}
                     for n, s in self._states.items()},
        "alerts": [a._asdict() for a in self.alerts],
    }

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    """Restores `state_dict()`'s output (e.g. after a restart from a checkpoint).

    Raises:
      ValueError: naming the entry that is missing or of the wrong version.
    """
    if not isinstance(state, Mapping):
      raise ValueError(f"Monitors.load_state_dict: expected a mapping, got "
                       f"{type(state).__name__}.")
    for key in ("version", "last_step", "last_checkpoint", "monitors", "alerts"):
      if key not in state:
        raise ValueError(f"Monitors.load_state_dict: the state has no '{key}' entry.")
    if state["version"] != STATE_VERSION:
      raise ValueError(f"Monitors.load_state_dict: state 'version' {state['version']!r} is not "
                       f"{STATE_VERSION}.")
    states = {}
    for name in MONITORS:
      if name not in state["monitors"]:
        raise ValueError(f"Monitors.load_state_dict: the state has no monitor '{name}'.")
      loaded = dict(state["monitors"][name])
      missing = set(_fresh_state()) - set(loaded)
      if missing:
        raise ValueError(f"Monitors.load_state_dict: monitor '{name}' lacks "
                         f"{sorted(missing)}.")
      states[name] = {k: (list(v) if isinstance(v, list | tuple) else v)
                      for k, v in loaded.items()}
    self._states = states
    self._last_step = state["last_step"]
    self._last_checkpoint = state["last_checkpoint"]
    self.alerts = [Alert(**a) for a in state["alerts"]]


def _as_step(field: str, step) -> int:
  if isinstance(step, bool) or not isinstance(step, int | np.integer):
    raise MonitorInputError(f"Monitors.update: {field} must be an int, got {step!r}.")
  return int(step)


def _as_value(name: str, metrics: Mapping[str, Any]) -> float:
  if not isinstance(metrics, Mapping):
    raise MonitorInputError(f"Monitors.update: metrics must be a mapping of metric name to "
                            f"float, got {type(metrics).__name__}.")
  if name not in metrics:
    raise MonitorInputError(
        f"Monitors.update: metric '{name}' is missing; an enabled monitor needs it (pass it, "
        f"or disable the monitor that reads it). Got: {sorted(metrics)}.")
  raw = metrics[name]
  try:
    arr = np.asarray(raw, dtype=np.float64)
  except (TypeError, ValueError):
    arr = None
  if arr is None or arr.size != 1 or isinstance(raw, bool | str):
    raise MonitorInputError(f"Monitors.update: metric '{name}' must be a scalar number, got "
                            f"{raw!r}.")
  x = float(arr.reshape(()))
  if math.isnan(x):
    raise MonitorInputError(f"Monitors.update: metric '{name}' is NaN.")
  return x


# --- metric helpers ------------------------------------------------------------------------


def rank_correlation(proxy, gold) -> float:
  """Spearman rank correlation of two `[B]` reward vectors (ties take average ranks;
  `irl_jax.eval.metrics.spearman`).

  Returns 0.0 when either vector is constant (no evidence either way).
  """
  proxy, gold = np.asarray(proxy, np.float64).ravel(), np.asarray(gold, np.float64).ravel()
  if proxy.shape != gold.shape or proxy.size < 2:
    raise ValueError(f"rank_correlation: proxy {proxy.shape} and gold {gold.shape} must be [B] "
                     f"with B >= 2.")
  if not (np.all(np.isfinite(proxy)) and np.all(np.isfinite(gold))):
    raise ValueError("rank_correlation: proxy and gold must be finite.")
  from irl_jax.eval.metrics import spearman  # scipy, imported only when a monitor needs it

  rho = spearman(proxy, gold)  # NaN exactly when either vector is constant
  return 0.0 if math.isnan(rho) else rho


def cosine_distance(a, b) -> float:
  """`1 − cos(a, b)` of two mean-embedding vectors `[E]` (in [0, 2])."""
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"cosine_distance: shapes {a.shape} and {b.shape} differ.")
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  if na == 0 or nb == 0:
    raise ValueError("cosine_distance: a zero vector has no direction.")
  return float(1.0 - np.dot(a, b) / (na * nb))


def token_histogram(tokens, vocab_size: int, where=None) -> np.ndarray:
  """Normalised token histogram `[vocab_size]` of `tokens` (optionally masked by `where`)."""
  tokens = np.asarray(tokens).ravel()
  weights = None if where is None else np.asarray(where, np.float64).ravel()
  if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    raise ValueError(f"token_histogram: token ids must be in [0, {vocab_size}).")
  counts = np.bincount(tokens, weights=weights, minlength=vocab_size).astype(np.float64)
  total = counts.sum()
  if total == 0:
    raise ValueError("token_histogram: no tokens to count.")
  return counts / total


def symmetric_kl(p, q, *, smoothing: float = 1e-6) -> float:
  """`½ (KL(p‖q) + KL(q‖p))` of two histograms, each smoothed by `smoothing` and
  renormalised (so that a token absent from one side stays finite)."""
  p, q = np.asarray(p, np.float64).ravel(), np.asarray(q, np.float64).ravel()
  if p.shape != q.shape:
    raise ValueError(f"symmetric_kl: shapes {p.shape} and {q.shape} differ.")
  if np.any(p < 0) or np.any(q < 0):
    raise ValueError("symmetric_kl: histograms must be non-negative.")
  p, q = p + smoothing, q + smoothing
  p, q = p / p.sum(), q / q.sum()
  return float(0.5 * (np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))))
