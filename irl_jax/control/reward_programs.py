"""Reward programs: source text that defines a dense reward, loaded in a sandbox,
validated, and handed to any learner of `irl_jax.control` as a reward function.

A reward program is Python source defining

    def reward(obs, action, next_obs):
      ...
      return <scalar>

over an *environment abstraction*: `obs` and `next_obs` are read-only views whose
only attributes are the abstraction's named fields (`next_obs.position`), `action`
is the raw action (an integer for discrete actions, a vector otherwise), `task`
holds the abstraction's documented constants (`task.goal_position`) and `jnp` a
curated subset of `jax.numpy`. Programs are typically written by a language model
from the abstraction's documentation (`Abstraction.describe()`), revised over
feedback rounds, and recorded with their provenance (`Provenance`): prompt, model,
feedback round, parent program.

    program = RewardProgram(source, abstraction="mountain_car",
                            provenance=Provenance(prompt=..., model=..., feedback_round=0))
    loaded = load(program)                         # static checks + sandboxed namespace
    report = validate(loaded, obs, action, next_obs)   # compiles, finite scalar, jit, vmap
    ppo = make_ppo(config, env, reward_fn=loaded.reward_fn)

Loading refuses, with a `SandboxViolation` naming the line:
  - imports, `global`/`nonlocal`, classes, `while` loops, `try`/`with`/`raise`,
    lambdas, comprehensions, f-strings and any other syntax outside a small
    whitelist (functions, assignments, `if`, `for`, arithmetic, comparisons, calls,
    subscripts, numeric constants);
  - any name or attribute that starts with an underscore (so no dunder walks such
    as `().__class__.__bases__` or `reward.__globals__`);
  - names that are neither defined by the program nor provided (`jnp`, `task`, a few
    pure builtins: `abs`, `min`, `max`, `float`, `int`, `bool`, `range`, `len`,
    `round`, `sum`) — so no `open`, `eval`, `exec`, `getattr`, `__import__`;
  - attributes other than the whitelisted `jnp` functions, `task` constants and
    the abstraction's fields;
  - string constants other than docstrings, integer constants beyond ±10**6,
    exponents that are not small numeric constants, sequence repetition
    (`[0] * n`), and programs over `max_chars` characters or `max_nodes` syntax
    nodes;
  - top-level statements other than functions and `NAME = <number>` constants, lists
    and tuples other than call arguments and indices (no state survives a call),
    complex constants and `**` in calls.
The namespace the program runs in holds only those names (the builtins too), so a
refused construct that slipped past the static checks would still fail at run time.
Running the program (tracing it under `jit`, which is the only time its Python
runs) is bounded in time: a `ProgramTimeout` names the line it was on when the
bound passed. This is defence in depth for programs from a model, not an
operating-system sandbox: run programs from untrusted parties in a separate,
resource-limited process.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# --- errors ------------------------------------------------------------------------------


class RewardProgramError(ValueError):
  """A reward program was refused or failed; `line` is its line (or None)."""

  def __init__(self, message: str, *, program_hash: str | None = None, line: int | None = None):
    where = f"reward program {program_hash[:12]}" if program_hash else "reward program"
    if line is not None:
      where += f", line {line}"
    super().__init__(f"{where}: {message}")
    self.message = message
    self.program_hash = program_hash
    self.line = line


class SandboxViolation(RewardProgramError):
  """The program uses something the sandbox does not allow."""


class ProgramTimeout(RewardProgramError):
  """Running the program (tracing it) took longer than the time bound."""


class ValidationError(RewardProgramError):
  """The program loaded but does not give a finite scalar reward under jit and vmap."""


# What a program may use besides its own definitions.
_JNP_ALLOWED = frozenset({
    "abs", "absolute", "sqrt", "square", "exp", "expm1", "log", "log1p", "tanh", "sin", "cos",
    "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "hypot", "clip", "where",
    "minimum", "maximum", "sum", "mean", "min", "max", "prod", "sign", "floor", "ceil", "round",
    "mod", "power", "pi", "e", "float32", "int32", "array", "asarray", "stack", "concatenate",
    "dot", "logical_and", "logical_or", "logical_not", "greater", "less", "equal",
    "zeros_like", "ones_like", "linalg"})
_JNP_LINALG_ALLOWED = frozenset({"norm"})
_MAX_RANGE = 10**6
_MAX_INT_BITS = 4096


def _bounded_range(*args):
  """`range`, refusing more than `_MAX_RANGE` elements: `sum`, `min` and `max` iterate in
  C, out of reach of the time bound's line tracer."""
  r = range(*args)
  try:
    n = len(r)
  except OverflowError:
    n = _MAX_RANGE + 1
  if n > _MAX_RANGE:
    raise SandboxViolation(f"range(...) of more than {_MAX_RANGE} elements")
  return r


_BUILTINS = {"abs": abs, "min": min, "max": max, "float": float, "int": int, "bool": bool,
             "range": _bounded_range, "len": len, "round": round, "sum": sum}

# --- the environment abstraction ---------------------------------------------------------

# Attributes of the objects a program can hold besides views (arrays, numbers, functions):
# a field must not shadow any of them, or the static attribute check would let them through.
def _reserved_attributes() -> frozenset:
  names = set(dir(jnp.zeros(()))) | set(dir(1.0)) | set(dir(1)) | set(dir(True))
  names |= set(dir(lambda: None)) | set(dir(types.SimpleNamespace())) | set(dir(jnp.sum))
  names |= set(dir(jnp.float32)) | set(dir(range(1))) | set(dir(abs)) | set(dir(type))
  return frozenset(names)


@dataclasses.dataclass(frozen=True)
class Abstraction:
  """What a reward program may read about an environment.

  Attributes:
    name: the abstraction's name (`RewardProgram.abstraction` refers to it).
    fields: named observation components, `name -> index` into the observation vector.
    constants: documented task constants, read as `task.<name>`.
    action: how the action is encoded (for the documentation).
    doc: one paragraph on the task, for the documentation.
    field_docs: one line per field (units, range).
  """
  name: str
  fields: Mapping[str, int]
  constants: Mapping[str, float] = dataclasses.field(default_factory=dict)
  action: str = ""
  doc: str = ""
  field_docs: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    reserved = _reserved_attributes()
    for kind, names in (("field", self.fields), ("constant", self.constants)):
      for n in names:
        if not n.isidentifier() or n.startswith("_"):
          raise ValueError(f"Abstraction {self.name!r}: {kind} name {n!r} must be an identifier "
                           "that does not start with an underscore.")
        if n in reserved or n in _JNP_ALLOWED:
          raise ValueError(f"Abstraction {self.name!r}: {kind} name {n!r} is also an attribute "
                           "of arrays, numbers or functions (or a `jnp` name); choose another.")
    for n, i in self.fields.items():
      if not isinstance(i, int) or i < 0:
        raise ValueError(f"Abstraction {self.name!r}: field {n!r} needs an index >= 0, got {i!r}.")
    for n, v in self.constants.items():
      if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"Abstraction {self.name!r}: constant {n!r} must be a finite number, "
                         f"got {v!r}.")

  @property
  def obs_dim(self) -> int:
    return 1 + max(self.fields.values())

  def view(self, obs) -> ObsView:
    return ObsView(self, obs)

  def describe(self) -> str:
    """The abstraction as documentation (what a prompt to a program writer shows)."""
    lines = [f"Environment abstraction `{self.name}`.", self.doc, "",
             "Write `def reward(obs, action, next_obs):` returning a scalar.",
             "`obs` / `next_obs` fields:"]
    lines += [f"  {n}: {self.field_docs.get(n, '')}".rstrip() for n in self.fields]
    if self.constants:
      lines.append("`task` constants:")
      lines += [f"  task.{n} = {v!r}" for n, v in self.constants.items()]
    lines += [f"`action`: {self.action}", "",
              "Available: `jnp.` " + ", ".join(sorted(_JNP_ALLOWED)) + "; builtins "
              + ", ".join(sorted(_BUILTINS)) + ". Use jnp.where instead of `if` on values."]
    return "\n".join(lines)


class ObsView:
  """A read-only view of one observation: only the abstraction's fields are readable."""
  __slots__ = ("_abstraction", "_data")

  def __init__(self, abstraction: Abstraction, data):
    object.__setattr__(self, "_abstraction", abstraction)
    object.__setattr__(self, "_data", data)

  def __getattr__(self, name):
    fields = object.__getattribute__(self, "_abstraction").fields
    if name in fields:
      return object.__getattribute__(self, "_data")[..., fields[name]]
    raise SandboxViolation(f"observation has no field {name!r}; fields: {sorted(fields)}")

  def __setattr__(self, name, value):
    raise SandboxViolation(f"observations are read-only (tried to set {name!r})")


MOUNTAIN_CAR = Abstraction(
    name="mountain_car",
    fields={"position": 0, "velocity": 1},
    constants={"goal_position": 0.5, "min_position": -1.2, "max_position": 0.6,
               "max_speed": 0.07, "force": 0.001, "gravity": 0.0025},
    action="integer: 0 push left, 1 no push, 2 push right",
    doc=("A car in a valley between two hills must reach the flag on the right hilltop "
         "(position >= goal_position); its engine is too weak to drive straight up, so it "
         "has to swing back and forth. Height of the track: sin(3 * position). The episode "
         "ends when the flag is reached or after 200 steps."),
    field_docs={"position": "horizontal position, in [min_position, max_position]",
                "velocity": "horizontal velocity, in [-max_speed, max_speed]"})

CARTPOLE = Abstraction(
    name="cartpole",
    fields={"cart_position": 0, "cart_velocity": 1, "pole_angle": 2, "pole_angular_velocity": 3},
    constants={"angle_limit": 12 * 2 * math.pi / 360, "position_limit": 2.4},
    action="integer: 0 push left, 1 push right",
    doc=("Keep a pole balanced on a cart; the episode ends when |pole_angle| > angle_limit "
         "or |cart_position| > position_limit, or after 500 steps."),
    field_docs={"cart_position": "metres", "cart_velocity": "metres per step",
                "pole_angle": "radians from upright", "pole_angular_velocity": "radians per step"})

PENDULUM = Abstraction(
    name="pendulum",
    fields={"cos_angle": 0, "sin_angle": 1, "angular_velocity": 2},
    constants={"max_speed": 8.0, "max_torque": 2.0},
    action="vector of one float: the torque, in [-max_torque, max_torque]",
    doc="Swing a pendulum up and hold it upright (angle 0); episodes last 200 steps.",
    field_docs={"cos_angle": "cos of the angle from upright", "sin_angle": "sin of that angle",
                "angular_velocity": "radians per second, in [-max_speed, max_speed]"})

ABSTRACTIONS = {a.name: a for a in (MOUNTAIN_CAR, CARTPOLE, PENDULUM)}
# The abstraction of a gymnax environment, for `envs.make` names.
ENV_ABSTRACTIONS = {"gymnax/MountainCar-v0": "mountain_car", "gymnax/CartPole-v1": "cartpole",
                    "gymnax/Pendulum-v1": "pendulum"}


# --- programs and provenance -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Provenance:
  """Where a program came from: the prompt, the model that wrote it, the feedback round
  (0 for a first draft) and the hash of the program it revises."""
  prompt: str = ""
  model: str = ""
  feedback_round: int = 0
  parent: str | None = None
  note: str = ""

  def __post_init__(self):
    if not isinstance(self.feedback_round, int) or self.feedback_round < 0:
      raise ValueError(f"Provenance.feedback_round must be an int >= 0, got "
                       f"{self.feedback_round!r}")


@dataclasses.dataclass(frozen=True)
class RewardProgram:
  """A reward program's source, the abstraction it is written against, its provenance."""
  source: str
  abstraction: str
  provenance: Provenance = dataclasses.field(default_factory=Provenance)
  name: str = ""

  def __post_init__(self):
    if not isinstance(self.source, str):
      raise TypeError(f"RewardProgram.source must be a str, got {type(self.source).__name__}")

  @property
  def hash(self) -> str:
    """sha256 of the abstraction's name and the source: the program's identity."""
    return hashlib.sha256(f"{self.abstraction}\n{self.source}".encode()).hexdigest()

  def to_json(self) -> dict:
    return {"name": self.name, "abstraction": self.abstraction, "source": self.source,
            "hash": self.hash, "provenance": dataclasses.asdict(self.provenance)}

  @classmethod
  def from_json(cls, record: Mapping[str, Any], *, where: str = "record") -> RewardProgram:
    """Rebuild from `to_json`'s record; a missing field or a hash that does not match the
    source raises a `ValueError` naming `where` and the field."""
    for f in ("abstraction", "source"):
      if f not in record:
        raise ValueError(f"{where}: reward program record has no {f!r} field")
    try:
      prov = Provenance(**record.get("provenance", {}))
    except TypeError as e:
      raise ValueError(f"{where}: field 'provenance': {e}") from None
    program = cls(record["source"], record["abstraction"], prov, record.get("name", ""))
    if "hash" in record and record["hash"] != program.hash:
      raise ValueError(f"{where}: field 'hash' {record['hash'][:12]}... does not match the "
                       f"source (sha256 {program.hash[:12]}...): the source was changed")
    return program


def save_programs(path, programs) -> None:
  """Write programs as JSON lines (one `to_json` record per line)."""
  with open(path, "w") as f:
    for p in programs:
      f.write(json.dumps(p.to_json()) + "\n")


def load_programs(path) -> list[RewardProgram]:
  """Read `save_programs`' file; a bad line raises a `ValueError` naming file and line."""
  out = []
  with open(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{i}: expected a JSON object, got {type(record).__name__}")
      out.append(RewardProgram.from_json(record, where=f"{path}:{i}"))
  return out


# --- the sandbox -------------------------------------------------------------------------

_MAX_INT = 10**6
_MAX_EXPONENT = 16

_ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign,
    ast.For, ast.If, ast.IfExp, ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.BoolOp,
    ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Name, ast.Attribute,
    ast.Subscript, ast.Slice, ast.Constant, ast.Tuple, ast.List, ast.expr_context, ast.operator,
    ast.unaryop, ast.cmpop, ast.boolop)
_NODE_HINTS = {
    ast.Import: "imports are not allowed: `jnp` is provided", ast.ImportFrom:
    "imports are not allowed: `jnp` is provided", ast.While: "`while` loops are not allowed "
    "(use `for` over a range, or jnp functions)", ast.Lambda: "lambdas are not allowed; "
    "define a function", ast.Global: "`global` is not allowed", ast.Nonlocal:
    "`nonlocal` is not allowed", ast.ClassDef: "classes are not allowed"}


def _names_bound(tree: ast.AST) -> set[str]:
  bound = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      bound.add(node.id)
    elif isinstance(node, ast.FunctionDef):
      bound.add(node.name)
    elif isinstance(node, ast.arg):
      bound.add(node.arg)
  return bound


def _is_docstring(node: ast.Constant, parents: dict) -> bool:
  expr = parents.get(node)
  if not isinstance(expr, ast.Expr):
    return False
  body_owner = parents.get(expr)
  return isinstance(body_owner, (ast.Module, ast.FunctionDef)) and body_owner.body[0] is expr


def check_source(source: str, abstraction: Abstraction, *, program_hash: str | None = None,
                 max_chars: int = 20_000, max_nodes: int = 3_000) -> ast.Module:
  """The static checks of `load` (see the module docstring); returns the parsed tree or
  raises a `SandboxViolation` naming the line."""
  def refuse(msg, node=None):
    raise SandboxViolation(msg, program_hash=program_hash, line=getattr(node, "lineno", None))

  if len(source) > max_chars:
    refuse(f"{len(source)} characters, more than max_chars={max_chars}")
  try:
    tree = ast.parse(source, mode="exec")
  except SyntaxError as e:
    raise SandboxViolation(f"does not parse: {e.msg}", program_hash=program_hash,
                           line=e.lineno) from None
  nodes = list(ast.walk(tree))
  if len(nodes) > max_nodes:
    refuse(f"{len(nodes)} syntax nodes, more than max_nodes={max_nodes}")
  parents = {child: node for node in nodes for child in ast.iter_child_nodes(node)}
  bound = _names_bound(tree)
  provided = set(_BUILTINS) | {"jnp", "task"}
  for node in nodes:
    if not isinstance(node, _ALLOWED_NODES):
      refuse(_NODE_HINTS.get(type(node), f"`{type(node).__name__}` syntax is not allowed"), node)
    if isinstance(node, ast.FunctionDef):
      if node.decorator_list:
        refuse("decorators are not allowed", node)
      a = node.args
      if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.kw_defaults or a.posonlyargs:
        refuse(f"function {node.name!r}: only plain positional parameters are allowed", node)
    if isinstance(node, ast.Name):
      if node.id.startswith("_"):
        refuse(f"name {node.id!r}: names starting with an underscore are not allowed", node)
      if isinstance(node.ctx, ast.Load) and node.id not in bound and node.id not in provided:
        refuse(f"name {node.id!r} is not defined or provided (provided: jnp, task, "
               f"{', '.join(sorted(_BUILTINS))})", node)
      if isinstance(node.ctx, ast.Store) and node.id in ("jnp", "task"):
        refuse(f"name {node.id!r} is provided and cannot be rebound", node)
    if isinstance(node, ast.FunctionDef | ast.arg):
      name = node.name if isinstance(node, ast.FunctionDef) else node.arg
      if name.startswith("_"):
        refuse(f"name {name!r}: names starting with an underscore are not allowed", node)
      if name in ("jnp", "task"):
        refuse(f"name {name!r} is provided and cannot be rebound", node)
    if isinstance(node, ast.Attribute):
      if node.attr.startswith("_"):
        refuse(f"attribute {node.attr!r}: attributes starting with an underscore are not "
               "allowed", node)
      base = node.value
      if isinstance(base, ast.Name) and base.id == "jnp":
        if node.attr not in _JNP_ALLOWED:
          refuse(f"`jnp.{node.attr}` is not provided; jnp has: {', '.join(sorted(_JNP_ALLOWED))}",
                 node)
      elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) \
          and base.value.id == "jnp" and base.attr == "linalg":
        if node.attr not in _JNP_LINALG_ALLOWED:
          refuse(f"`jnp.linalg.{node.attr}` is not provided; jnp.linalg has: "
                 f"{', '.join(sorted(_JNP_LINALG_ALLOWED))}", node)
      elif isinstance(base, ast.Name) and base.id == "task":
        if node.attr not in abstraction.constants:
          refuse(f"`task.{node.attr}` is not a constant of {abstraction.name!r}; constants: "
                 f"{sorted(abstraction.constants)}", node)
      elif node.attr not in abstraction.fields:
        refuse(f"attribute {node.attr!r} is not a field of {abstraction.name!r} (fields: "
               f"{sorted(abstraction.fields)}); only jnp functions, task constants and "
               "observation fields can be read", node)
      if isinstance(node.ctx, ast.Store):
        refuse("attributes cannot be assigned", node)
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
      refuse("items cannot be assigned (arrays are immutable; build a new value)", node)
    if isinstance(node, ast.Constant):
      v = node.value
      if isinstance(v, str) and not _is_docstring(node, parents):
        refuse("string constants are only allowed as docstrings", node)
      if isinstance(v, bytes):
        refuse("bytes constants are not allowed", node)
      if isinstance(v, complex):
        refuse("complex constants are not allowed", node)
      if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_INT:
        refuse(f"integer constant {v} exceeds ±{_MAX_INT}", node)
      if isinstance(v, float) and not math.isfinite(v):
        refuse(f"non-finite constant {v}", node)
    if isinstance(node, (ast.List, ast.Tuple)) and isinstance(node.ctx, ast.Load):
      parent = parents.get(node)
      if not ((isinstance(parent, ast.Call) and node in parent.args)
              or (isinstance(parent, ast.Subscript) and node is parent.slice)):
        refuse("lists and tuples are only allowed as call arguments (e.g. jnp.stack([a, b])) "
               "or indices: the program cannot keep sequences", node)
    if isinstance(node, ast.keyword) and node.arg is None:
      refuse("`**` in calls is not allowed", node)
    if isinstance(node, ast.BinOp):
      if isinstance(node.op, ast.Pow):
        e = node.right
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
          e = e.operand
        if not (isinstance(e, ast.Constant) and isinstance(e.value, (int, float))
                and abs(e.value) <= _MAX_EXPONENT):
          refuse(f"`**` needs a numeric constant exponent of at most {_MAX_EXPONENT} "
                 "(use jnp.power for others)", node)
      if isinstance(node.op, ast.Mult) and any(
          isinstance(x, (ast.List, ast.Tuple)) for x in (node.left, node.right)):
        refuse("sequence repetition (`[...] * n`) is not allowed", node)
  defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "reward"]
  if not defs:
    refuse("defines no top-level `def reward(obs, action, next_obs)`")
  if len(defs[0].args.args) != 3:
    refuse(f"`reward` takes {len(defs[0].args.args)} parameters; it must take "
           "(obs, action, next_obs)", defs[0])
  for n in tree.body:
    if not isinstance(n, (ast.FunctionDef, ast.Assign, ast.Expr)):
      refuse(f"top level: only function definitions, constant assignments and a docstring are "
             f"allowed, not `{type(n).__name__}`", n)
    if isinstance(n, ast.Expr) and not (isinstance(n.value, ast.Constant) and n is tree.body[0]):
      refuse("top level: expressions are not allowed (only the module docstring)", n)
    if isinstance(n, ast.Assign) and not (
        all(isinstance(t, ast.Name) for t in n.targets) and _numeric_literal(n.value)):
      refuse("top level: only `NAME = <number>` constants are allowed (no state that could "
             "change between calls)", n)
  return tree


def _numeric_literal(node) -> bool:
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    node = node.operand
  return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
      and not isinstance(node.value, bool)


class _Deadline:
  """Bounds the time the program's own Python frames run: a line tracer on frames whose
  code comes from the program's file name raises `ProgramTimeout` past the bound."""

  def __init__(self, filename: str, seconds: float, program_hash: str):
    self.filename, self.seconds, self.program_hash = filename, seconds, program_hash

  def _local(self, frame, event, arg):
    if event == "line":
      if time.perf_counter() > self.end:
        raise ProgramTimeout(f"still running after time_limit_s={self.seconds:g} s",
                             program_hash=self.program_hash, line=frame.f_lineno)
      # Python integers grow without bound in C (x = x * x); stop them while still cheap.
      for name, value in frame.f_locals.items():
        for v in (value if isinstance(value, (list, tuple)) else (value,)):
          if isinstance(v, int) and v.bit_length() > _MAX_INT_BITS:
            raise SandboxViolation(f"integer {name!r} has more than {_MAX_INT_BITS} bits",
                                   program_hash=self.program_hash, line=frame.f_lineno)
    return self._local

  def _global(self, frame, event, arg):
    if frame.f_code.co_filename == self.filename:
      return self._local(frame, "line", arg)
    return None

  def __enter__(self):
    self.previous = sys.gettrace()
    self.end = time.perf_counter() + self.seconds
    sys.settrace(self._global)
    return self

  def __exit__(self, *exc):
    sys.settrace(self.previous)
    return False


def _program_line(tb, filename: str) -> int | None:
  line = None
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == filename:
      line = tb.tb_lineno
    tb = tb.tb_next
  return line


@dataclasses.dataclass(frozen=True)
class LoadedProgram:
  """A program that passed `load`'s checks.

  `reward(obs[D], action, next_obs[D]) -> float32 scalar` runs the program on one
  transition (observations as arrays); `batched(obs[B, D], action[B, ...], next_obs[B, D])
  -> [B]` is its vmap; `reward_fn(params, obs, action, next_obs)` is `batched` in the
  signature of the learners' `reward_fn` hook (PPO, SAC): the params are ignored.
  Every call is time-bounded while the program's Python runs (eagerly, or once while `jit`
  traces it)."""
  program: RewardProgram
  abstraction: Abstraction
  time_limit_s: float
  _fn: Callable
  _filename: str

  def _call(self, fn, *args):
    try:
      with _Deadline(self._filename, self.time_limit_s, self.program.hash):
        return fn(*args)
    except RewardProgramError as e:
      if e.program_hash is None:   # raised by a sandbox builtin inside the program
        raise type(e)(e.message, program_hash=self.program.hash,
                      line=_program_line(e.__traceback__, self._filename)) from None
      raise
    except RecursionError:
      raise ValidationError("recursion too deep", program_hash=self.program.hash) from None
    except Exception as e:
      line = _program_line(e.__traceback__, self._filename)
      if line is None:
        raise
      hint = ""
      if isinstance(e, jax.errors.ConcretizationTypeError | jax.errors.TracerBoolConversionError):
        hint = " (branching on a value under jit: use jnp.where)"
      raise ValidationError(f"{type(e).__name__}: {str(e).splitlines()[0]}{hint}",
                            program_hash=self.program.hash, line=line) from None

  def _one(self, obs, action, next_obs):
    a = self.abstraction
    r = self._fn(a.view(obs), action, a.view(next_obs))
    r = jnp.asarray(r)
    if r.shape != ():
      raise ValidationError(f"`reward` returned shape {r.shape}, not a scalar",
                            program_hash=self.program.hash)
    if not (jnp.issubdtype(r.dtype, jnp.floating) or jnp.issubdtype(r.dtype, jnp.integer)
            or r.dtype == jnp.bool_):
      raise ValidationError(f"`reward` returned dtype {r.dtype}, not a number",
                            program_hash=self.program.hash)
    return r.astype(jnp.float32)

  def reward(self, obs, action, next_obs):
    return self._call(self._one, jnp.asarray(obs, jnp.float32), jnp.asarray(action),
                      jnp.asarray(next_obs, jnp.float32))

  def batched(self, obs, action, next_obs):
    return self._call(jax.vmap(self._one), jnp.asarray(obs, jnp.float32), jnp.asarray(action),
                      jnp.asarray(next_obs, jnp.float32))

  def reward_fn(self, params, obs, action, next_obs):
    del params
    return self.batched(obs, action, next_obs)


def load(program: RewardProgram, abstraction: Abstraction | None = None, *,
         time_limit_s: float = 5.0, max_chars: int = 20_000,
         max_nodes: int = 3_000) -> LoadedProgram:
  """Statically check `program` and execute its definitions in the sandboxed namespace.

  `abstraction` defaults to `ABSTRACTIONS[program.abstraction]`. Raises a
  `SandboxViolation` (naming the line) for anything the module docstring lists, a
  `ProgramTimeout` if executing the definitions exceeds `time_limit_s`.
  """
  if abstraction is None:
    if program.abstraction not in ABSTRACTIONS:
      raise ValueError(f"RewardProgram.abstraction {program.abstraction!r} is not one of "
                       f"{sorted(ABSTRACTIONS)}; pass `abstraction=` for your own")
    abstraction = ABSTRACTIONS[program.abstraction]
  elif abstraction.name != program.abstraction:
    raise ValueError(f"program is written for abstraction {program.abstraction!r}, "
                     f"not {abstraction.name!r}")
  if not (time_limit_s > 0):
    raise ValueError(f"time_limit_s must be > 0, got {time_limit_s!r}")
  h = program.hash
  tree = check_source(program.source, abstraction, program_hash=h, max_chars=max_chars,
                      max_nodes=max_nodes)
  filename = f"<reward_program {h[:16]}>"
  code = compile(tree, filename, "exec")
  jnp_ns = types.SimpleNamespace(**{n: getattr(jnp, n) for n in _JNP_ALLOWED if n != "linalg"})
  jnp_ns.linalg = types.SimpleNamespace(**{n: getattr(jnp.linalg, n) for n in _JNP_LINALG_ALLOWED})
  namespace = {"__builtins__": dict(_BUILTINS), "jnp": jnp_ns,
               "task": types.SimpleNamespace(**abstraction.constants)}
  try:
    with _Deadline(filename, time_limit_s, h):
      exec(code, namespace)
  except RewardProgramError:
    raise
  except Exception as e:
    raise SandboxViolation(f"defining the program failed: {type(e).__name__}: {e}",
                           program_hash=h, line=_program_line(e.__traceback__, filename)) from None
  return LoadedProgram(program, abstraction, float(time_limit_s), namespace["reward"], filename)


# --- validation --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ValidationReport:
  """`validate`'s findings: `ok` when there are no `problems`; reward statistics over the
  sample batch when it ran."""
  program_hash: str
  ok: bool
  problems: tuple[str, ...]
  reward_min: float | None = None
  reward_mean: float | None = None
  reward_max: float | None = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _largest_array(jaxpr) -> tuple[int, tuple]:
  """The largest array (element count, shape) that `jaxpr` or any sub-jaxpr produces or
  holds as a constant."""
  best = (0, ())

  def visit(jx):
    nonlocal best
    for v in list(jx.constvars) + [o for e in jx.eqns for o in e.outvars]:
      shape = tuple(getattr(getattr(v, "aval", None), "shape", ()) or ())
      size = math.prod(shape)
      if size > best[0]:
        best = (size, shape)
    for e in jx.eqns:
      for p in e.params.values():
        for sub in (p if isinstance(p, (tuple, list)) else (p,)):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            visit(inner)

  visit(jaxpr)
  return best


def validate(loaded: LoadedProgram, obs, action, next_obs, *, raise_on_error: bool = True,
             atol: float = 1e-4, max_elements: int = 10**6) -> ValidationReport:
  """Check that the program gives a finite scalar reward, eagerly on one transition and
  under `jit(vmap(...))` on the sample batch (`obs[B, D]`, `action[B, ...]`,
  `next_obs[B, D]`, e.g. transitions of a random policy), and that both agree.

  Before anything runs on data, the program is traced on one transition (abstract
  values: nothing is allocated) and refused if any array it would build holds more than
  `max_elements` elements, so a program cannot exhaust memory when it is executed.
  Validate a program before handing it to a learner.

  With `raise_on_error` (default) the first problem raises its `RewardProgramError`;
  otherwise all problems are collected in the report.
  """
  obs = np.asarray(obs, np.float32)
  next_obs = np.asarray(next_obs, np.float32)
  action = np.asarray(action)
  d = loaded.abstraction.obs_dim
  if obs.ndim != 2 or obs.shape[1] < d or next_obs.shape != obs.shape or \
      action.shape[:1] != obs.shape[:1]:
    raise ValueError(f"validate: need obs[B, >={d}], action[B, ...], next_obs like obs; got "
                     f"{obs.shape}, {action.shape}, {next_obs.shape}")
  problems: list[str] = []
  h = loaded.program.hash

  def fail(err: RewardProgramError):
    if raise_on_error:
      raise err
    problems.append(str(err))

  try:
    jaxpr = loaded._call(jax.make_jaxpr(loaded._one), jnp.asarray(obs[0]),
                         jnp.asarray(action[0]), jnp.asarray(next_obs[0]))
  except RewardProgramError as e:
    fail(e)
    return ValidationReport(h, False, tuple(problems))
  size, shape = _largest_array(jaxpr.jaxpr)
  if size > max_elements:
    fail(ValidationError(f"builds an array of shape {shape} ({size} elements) per transition, "
                         f"more than max_elements={max_elements}", program_hash=h))
    return ValidationReport(h, False, tuple(problems))
  try:
    one = float(loaded.reward(obs[0], action[0], next_obs[0]))
  except RewardProgramError as e:
    fail(e)
    return ValidationReport(h, False, tuple(problems))
  if not math.isfinite(one):
    fail(ValidationError(f"non-finite reward {one} on the first sample transition (obs "
                         f"{obs[0].tolist()}, next_obs {next_obs[0].tolist()})", program_hash=h))
  try:
    batch = np.asarray(jax.jit(loaded.batched)(obs, action, next_obs))
  except RewardProgramError as e:
    fail(e)
    return ValidationReport(h, False, tuple(problems))
  bad = np.flatnonzero(~np.isfinite(batch))
  if bad.size:
    i = int(bad[0])
    fail(ValidationError(f"non-finite reward {batch[i]} on {bad.size} of {batch.size} sample "
                         f"transitions (first: index {i}, obs {obs[i].tolist()}, next_obs "
                         f"{next_obs[i].tolist()})", program_hash=h))
  if math.isfinite(one) and abs(one - float(batch[0])) > atol * max(1.0, abs(one)):
    fail(ValidationError(f"eager reward {one} and jit(vmap) reward {float(batch[0])} differ on "
                         "the first sample transition", program_hash=h))
  finite = batch[np.isfinite(batch)]
  stats = (float(finite.min()), float(finite.mean()), float(finite.max())) if finite.size \
      else (None, None, None)
  return ValidationReport(h, not problems, tuple(problems), *stats)
