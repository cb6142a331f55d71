"""Tests for irl_jax/train/registry.py and the layering of the library: one registry of
objectives with typed defaults declared once, no irl_jax -> experiments import, no cycles."""

import ast
import dataclasses
import os

import jax.numpy as jnp
import pytest

from irl_jax.losses import masked_sum_count
from irl_jax.train import lm, loop, registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_builtin_objectives_and_their_needs():
  names = registry.names()
  assert set(names) == {"mle", "iq_learn", "iq_learn_online", "bradley_terry", "plackett_luce",
                        "pairwise_split", "max_margin", "dpo", "ipo", "grpo", "ppo"}
  assert [n for n in names if registry.get(n).data == "preferences"] == [
      "bradley_terry", "plackett_luce", "pairwise_split", "max_margin", "dpo", "ipo"]
  assert [n for n in names if registry.get(n).sampler] == ["iq_learn_online", "grpo", "ppo"]
  assert [n for n in names if registry.get(n).reward_fn] == ["grpo", "ppo"]
  assert [n for n in names if registry.get(n).reward_head] == [
      "bradley_terry", "plackett_luce", "pairwise_split", "max_margin"]
  assert [n for n in names if registry.get(n).reference] == ["dpo", "ipo", "grpo", "ppo"]
  assert [n for n in names if registry.get(n).value_head] == ["ppo"]
  with pytest.raises(KeyError, match="unknown objective 'iqlearn'; registered: mle, iq_learn"):
    registry.get("iqlearn")


def test_defaults_are_declared_once_in_the_dataclasses():
  config = registry.objective_config("dpo", dpo={"beta": 0.5})
  assert config.name == "dpo"
  for name in registry.names():
    spec = registry.get(name)
    want = dataclasses.asdict(spec.hyperparameters())
    if name == "dpo":
      want["beta"] = 0.5
    assert config[name].to_dict() == want, name
  assert registry.hyperparameters(config) == registry.get("dpo").hyperparameters(beta=0.5)
  with pytest.raises(KeyError, match="no hyperparameters \\['betta'\\]"):
    registry.objective_config("dpo", dpo={"betta": 0.5})


@pytest.mark.parametrize("field, value, message", [
    ("td_weight", "0.1", "config.objective.iq_learn.td_weight='0.1': expected"),
    ("chunk_size", 1.5, "config.objective.iq_learn.chunk_size=1.5: expected"),
    ("gamma", float("inf"), "config.objective.iq_learn.gamma=inf: must be finite"),
])
def test_hyperparameter_types_are_checked_and_named(field, value, message):
  # A plain mapping (a ConfigDict already refuses some of these when they are set).
  config = registry.objective_config("iq_learn").to_dict()
  config["iq_learn"][field] = value
  with pytest.raises((TypeError, ValueError), match=message.replace("[", "\\[")):
    registry.hyperparameters(config)


def test_trainer_config_check_names_the_objective_field():
  from experiments.configs import smoke

  c = smoke.get_config()
  c.objective.grpo.normaliser = "tokens"
  c.objective.name = "grpo"
  with pytest.raises(loop.ConfigError, match=r"config\.objective\.grpo\.normaliser='tokens'"):
    loop.check_config(c)


def test_duplicate_registration_and_incomplete_specs_are_refused():
  with pytest.raises(ValueError, match="already registered"):
    registry.register(registry.get("mle"))

  @dataclasses.dataclass(frozen=True)
  class NoDefault:
    weight: float

  with pytest.raises(TypeError, match="needs a default"):
    registry.ObjectiveSpec(name="x", make=lambda **kw: None, hyperparameters=NoDefault,
                           data="demonstrations")

  @dataclasses.dataclass(frozen=True)
  class NoSampling:
    weight: float = 1.0

  with pytest.raises(TypeError, match="max_new_tokens"):
    registry.ObjectiveSpec(name="x", make=lambda **kw: None, hyperparameters=NoSampling,
                           data="demonstrations", sampler=True)

  @dataclasses.dataclass(frozen=True)
  class NoAdvantages:
    max_new_tokens: int = 8
    temperature: float = 1.0
    num_samples: int = 1

  with pytest.raises(TypeError, match=r"value head needs the hyperparameters \['gamma', "
                                      r"'kl_coef', 'lam', 'whiten_advantages'\]"):
    registry.ObjectiveSpec(name="x", make=lambda **kw: None, hyperparameters=NoAdvantages,
                           data="demonstrations", sampler=True, reward_fn=True, value_head=True)
  with pytest.raises(ValueError, match="a reward head or a value head, not both"):
    registry.ObjectiveSpec(name="x", make=lambda **kw: None, hyperparameters=NoSampling,
                           data="demonstrations", reward_head=True, value_head=True)


def test_a_new_objective_trains_end_to_end_from_one_registration(tmp_path):
  """What adding an objective takes: the loss and one registry entry (here both in this
  file); the trainer, the config files and the checkpoints pick it up by name."""

  @dataclasses.dataclass(frozen=True)
  class ScaledNLLConfig:
    scale: float = 0.5

  def scaled_nll(*, scale):
    def objective(model, batch, rng):
      del rng
      stats, where = lm.batch_stats(model, batch)
      per_token = scale * (stats.v - stats.q)
      return masked_sum_count(per_token, where), {"scale": jnp.float32(scale)}

    return objective

  registry.register(registry.ObjectiveSpec(
      name="test_scaled_nll", make=scaled_nll, hyperparameters=ScaledNLLConfig,
      data="demonstrations", summary="test only"))
  try:
    from experiments import tasks
    from experiments.configs import smoke

    c = smoke.get_config()  # the new objective's sub-config is in every config now
    assert c.objective.test_scaled_nll.scale == 0.5
    c.objective.name = "test_scaled_nll"
    c.objective.test_scaled_nll.scale = 0.25
    c.steps, c.eval_every, c.checkpoint_every = 3, 3, 3
    c.progress_bar = c.tensorboard = c.export_hf = False
    summary = loop.train(c, str(tmp_path), task=tasks.load("reverse"))
    assert summary["train/scale"] == 0.25 and summary["train/finite"] == 1.0
  finally:
    registry._REGISTRY.pop("test_scaled_nll")


def _imports(path):
  """`(module, names)` of every absolute import in a file, at any level (deferred
  imports inside functions count: they still tie the two modules together)."""
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      for a in node.names:
        yield a.name, ()
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module, tuple(a.name for a in node.names)


def _library_modules():
  out = {}
  for folder, dirs, files in os.walk(os.path.join(ROOT, "irl_jax")):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        out[module] = path
  return out


def test_the_library_never_imports_experiments():
  for module, path in _library_modules().items():
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):  # any level, functions included
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n == "experiments" or n.startswith("experiments.") for n in names), module
    text = open(path).read()
    assert "import_module(f\"experiments" not in text and "\"experiments." not in text, module


def test_library_modules_have_no_import_cycles():
  modules = _library_modules()

  def resolve(name):
    while name and name not in modules:
      name = name.rpartition(".")[0]
    return name

  graph = {}
  for module, path in modules.items():
    deps = set()
    for source, names in _imports(path):
      # `from irl_jax.train import lm` depends on the module irl_jax.train.lm.
      targets = [f"{source}.{n}" for n in names if f"{source}.{n}" in modules]
      if len(targets) < len(names) or not names:
        targets.append(resolve(source))
      deps.update(t for t in targets if t and t != module)
    # A package's __init__ re-exports its children, and they may import it for siblings:
    # neither direction is a design dependency.
    graph[module] = {d for d in deps if not module.startswith(d + ".")
                     and not (modules[module].endswith("__init__.py")
                              and d.startswith(module + "."))}

  state, order = {}, []

  def visit(node, stack):
    state[node] = "open"
    for dep in sorted(graph[node]):
      if state.get(dep) == "open":
        raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(dep):], dep])}")
      if dep not in state:
        visit(dep, [*stack, dep])
    state[node] = "done"
    order.append(node)

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert "irl_jax.train.registry" in order
