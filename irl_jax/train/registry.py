"""The registry of training objectives: one entry per objective, declared next to it.

An entry (`ObjectiveSpec`) says how to build the objective, which data it
trains on, what the trainer must provide beyond the batch (frozen reference
log-probs, policy samples, a reward function, a reward or value head), and its typed
hyperparameters: a frozen dataclass whose field defaults are the only
defaults there are. Everything that dispatches on an objective's name (the
trainer, the studies, the benchmarks, the config files) goes through
`get(name)`; adding an objective is its loss, one `register(...)` call in
`irl_jax/train/objectives.py`, its tests and its docs line. (The built-in
entries are registered when `irl_jax.train` is imported, which importing this
module does first.)

Configs hold one sub-config per registered objective, generated from the
dataclasses (`objective_config`):

    config.objective.name = "iq_learn"
    config.objective.iq_learn.td_weight = 0.1    # --config.objective.iq_learn.td_weight=1.0
    config.objective.dpo.beta = 0.1

`hyperparameters(config.objective)` reads the active objective's sub-config
back into its dataclass, checking every field's type (errors name the field).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

DataKind = Literal["demonstrations", "preferences"]


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """One training objective.

  Attributes:
    name: the config's `objective.name`.
    make: `make(**hyperparameters) -> objective(model, batch, rng) -> (loss, metrics)`.
    hyperparameters: a frozen dataclass of the objective's hyperparameters, all
      with defaults (its typed sub-config).
    data: the batches it trains on: `"demonstrations"` (language-model
      batches `[B, T]`) or `"preferences"` (ranked responses `[B, K, T]`).
    reference: the objective compares with the frozen initial policy: the
      trainer adds its `ref_logps` (or, for a sampling objective, the sampler
      adds `sample_ref_logps`).
    sampler: the trainer adds policy samples (`sample_*` keys) for the batch's
      prompts; the hyperparameters then hold `max_new_tokens`, `temperature`
      and `num_samples`.
    reward_fn: the sampler scores samples with a reward function that the
      entry point passes to `train(..., reward_fn=...)`.
    reward_head: the model is wrapped in a scalar reward head.
    value_head: the policy is wrapped in `irl_jax.models.PolicyValueModel`
      (a value head on its final hidden states, one forward pass for logits
      and values); a sampling objective's sampler then also adds the samples'
      old values, KL-shaped token rewards, token GAE advantages and returns
      (`sample_old_values`, `sample_advantages [N, T]`, `sample_returns`), and
      its hyperparameters hold `kl_coef`, `gamma`, `lam` and
      `whiten_advantages`. The export writes the policy alone (a causal LM).
    summary: one line for listings and docs.
  """

  name: str
  make: Callable[..., Callable]
  hyperparameters: type
  data: DataKind
  reference: bool = False
  sampler: bool = False
  reward_fn: bool = False
  reward_head: bool = False
  value_head: bool = False
  summary: str = ""

  def __post_init__(self):
    if not dataclasses.is_dataclass(self.hyperparameters):
      raise TypeError(f"{self.name}: hyperparameters must be a dataclass, got "
                      f"{self.hyperparameters!r}.")
    missing = [f.name for f in dataclasses.fields(self.hyperparameters)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
      raise TypeError(f"{self.name}: every hyperparameter needs a default; {missing} have none.")
    if self.data not in typing.get_args(DataKind):
      raise ValueError(f"{self.name}: data must be one of {typing.get_args(DataKind)}, got "
                       f"{self.data!r}.")
    if self.sampler:
      fields = {f.name for f in dataclasses.fields(self.hyperparameters)}
      need = {"max_new_tokens", "temperature", "num_samples"} - fields
      if need:
        raise TypeError(f"{self.name}: a sampling objective's hyperparameters need {sorted(need)}.")
    if self.value_head and self.reward_head:
      raise ValueError(f"{self.name}: a model takes a reward head or a value head, not both.")
    if self.value_head and self.sampler:
      fields = {f.name for f in dataclasses.fields(self.hyperparameters)}
      need = {"kl_coef", "gamma", "lam", "whiten_advantages"} - fields
      if need:
        raise TypeError(f"{self.name}: a sampling objective with a value head needs the "
                        f"hyperparameters {sorted(need)} (its sampler's advantages).")

  def defaults(self) -> dict[str, Any]:
    return dataclasses.asdict(self.hyperparameters())

  def build(self, hyperparameters=None):
    """The objective function, from a hyperparameter instance (defaults if None)."""
    hp = self.hyperparameters() if hyperparameters is None else hyperparameters
    return self.make(**dataclasses.asdict(hp))


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register(spec: ObjectiveSpec) -> ObjectiveSpec:
  """Adds `spec` under `spec.name` (a second entry of the same name is an error)."""
  if spec.name in _REGISTRY:
    raise ValueError(f"objective {spec.name!r} is already registered.")
  _REGISTRY[spec.name] = spec
  return spec


def names() -> tuple[str, ...]:
  """The registered objectives' names, in registration order."""
  return tuple(_REGISTRY)


def get(name: str) -> ObjectiveSpec:
  """The entry for `name`; an unknown name is a `KeyError` listing the known ones."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown objective {name!r}; registered: {', '.join(_REGISTRY)}.")
  return _REGISTRY[name]


def objective_config(name: str, **overrides: Mapping[str, Any]):
  """`ml_collections.ConfigDict` with `name` and every objective's default sub-config.

  `overrides` maps objective names to field values, e.g.
  `objective_config("iq_learn", iq_learn={"td_weight": 1.0})`.
  """
  import ml_collections

  get(name)
  c = ml_collections.ConfigDict()
  c.name = name
  for spec_name in names():
    values = get(spec_name).defaults()
    extra = dict(overrides.get(spec_name, {}))
    unknown = set(extra) - set(values)
    if unknown:
      raise KeyError(f"objective {spec_name!r} has no hyperparameters {sorted(unknown)}; it has "
                     f"{sorted(values)}.")
    values.update(extra)
    c[spec_name] = ml_collections.ConfigDict(values)
  unknown = set(overrides) - set(names())
  if unknown:
    raise KeyError(f"overrides for unknown objectives {sorted(unknown)}.")
  return c


def _check_type(value, annotation, where: str):
  """`value` converted to the field's annotated type, or a `TypeError` naming `where`."""
  origin = typing.get_origin(annotation)
  options = (typing.get_args(annotation) if origin in (typing.Union, types.UnionType)
             else (annotation,))
  for option in options:
    if option is type(None) and value is None:
      return None
    if option is bool and isinstance(value, bool):
      return value
    if option is int and isinstance(value, int) and not isinstance(value, bool):
      return value
    if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      if not math.isfinite(float(value)):
        raise ValueError(f"{where}={value!r}: must be finite.")
      return float(value)
    if option is str and isinstance(value, str):
      return value
    if typing.get_origin(option) is Literal and value in typing.get_args(option):
      return value
  raise TypeError(f"{where}={value!r}: expected {annotation}.")


def hyperparameters(objective_config_dict) -> Any:
  """The active objective's hyperparameter dataclass from `config.objective`.

  Fields missing from the config take their defaults; an unknown field or a
  value of the wrong type raises, naming `config.objective.<name>.<field>`.
  """
  name = objective_config_dict["name"]
  spec = get(name)
  stray = sorted(set(objective_config_dict) - {"name", *names()})
  if stray:
    raise KeyError(f"config.objective has fields {stray} that no objective reads; "
                   f"hyperparameters live under config.objective.<objective>, e.g. "
                   f"config.objective.{name}.<field>.")
  raw = objective_config_dict.get(name) if hasattr(objective_config_dict, "get") else None
  raw = {} if raw is None else dict(raw)
  fields = {f.name: f for f in dataclasses.fields(spec.hyperparameters)}
  unknown = set(raw) - set(fields)
  if unknown:
    raise KeyError(f"config.objective.{name} has unknown fields {sorted(unknown)}; "
                   f"{name} takes {sorted(fields)}.")
  hints = typing.get_type_hints(spec.hyperparameters)
  values = {k: _check_type(v, hints[k], f"config.objective.{name}.{k}") for k, v in raw.items()}
  return spec.hyperparameters(**values)
