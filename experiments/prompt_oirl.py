"""Query-dependent prompt selection from offline records (Prompt-OIRL, Sun et al. 2023) with a
small arithmetic language model (see the config's docstring).

    python -m experiments.prompt_oirl --workdir=/tmp/prompt_oirl
    python -m experiments.prompt_oirl --workdir=/tmp/prompt_oirl --config.quick=True
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx

from experiments import study
from experiments.tasks import arithmetic
from irl_jax import models
from irl_jax.data import char_tokenizer, lm_arrays
from irl_jax.eval import prompt_selection as ps
from irl_jax.models.sampling import generate
from irl_jax.train import optim, registry
from irl_jax.train.compiled import make_train
from irl_jax.train.state import split_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LM_KEYS = ("input_ids", "segment_ids", "positions", "loss_mask")
METHODS = ("random prompt", "best single prompt", "best-of-N (R̂)", "oracle")


# --- config ------------------------------------------------------------------------------


def parse_query_type(text: str) -> tuple[str, int]:
  """`"+3"` -> `("+", 3)`: the operation and the number of one-digit operands."""
  if (not isinstance(text, str) or len(text) < 2 or text[0] not in "+*"
      or not text[1:].isdigit() or int(text[1:]) < 2):
    raise ValueError(f"config.query_types: {text!r} is not <op><operands> with op in '+*' and "
                     "at least 2 operands (e.g. '+3').")
  return text[0], int(text[1:])


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  types = list(config.query_types)
  if len(types) < 2 or len(set(types)) != len(types):
    raise ValueError(f"config.query_types must name at least 2 distinct query types, got "
                     f"{tuple(types)!r}.")
  for t in types:
    parse_query_type(t)
  letters = config.letters
  if (not isinstance(letters, str) or not letters.isalpha() or not letters.islower()
      or len(set(letters)) != len(letters)):
    raise ValueError(f"config.letters must be distinct lower-case letters, got {letters!r}.")
  if len(letters) < len(types):
    raise ValueError(f"config.letters needs at least one letter per query type "
                     f"({len(types)}), got {len(letters)}.")
  study.int_at_least(config, "prefix_len", 1)
  if config.prefix_len > len(letters):
    raise ValueError(f"config.prefix_len must be <= len(config.letters) = {len(letters)}, got "
                     f"{config.prefix_len!r}.")
  study.int_at_least(config, "num_prompts", 3)
  possible = 1
  for i in range(config.prefix_len):
    possible *= len(letters) - i
  if config.num_prompts > possible:
    raise ValueError(f"config.num_prompts must be <= {possible} (distinct prefixes of "
                     f"{config.prefix_len} letters), got {config.num_prompts!r}.")
  study.int_at_least(config, "num_train_prompts", 2)
  if config.num_train_prompts > config.num_prompts - 2:
    raise ValueError(f"config.num_train_prompts must leave at least 2 held-out prompts of "
                     f"config.num_prompts = {config.num_prompts}, got "
                     f"{config.num_train_prompts!r}.")
  if not 0 <= config.rho_low < config.rho_high <= 1:
    raise ValueError(f"config.rho_low must satisfy 0 <= rho_low < rho_high <= 1, got "
                     f"({config.rho_low!r}, {config.rho_high!r}).")
  for field in ("num_demonstrations", "steps", "batch_size", "max_new_tokens"):
    study.int_at_least(config, field, 1)
  if config.batch_size > config.num_demonstrations:
    raise ValueError(f"config.batch_size must be <= config.num_demonstrations, got "
                     f"{config.batch_size!r}.")
  study.int_at_least(config, "warmup_steps", 0)
  if not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be > 0, got {config.learning_rate!r}.")
  if not config.temperature >= 0:
    raise ValueError(f"config.temperature must be >= 0, got {config.temperature!r}.")
  study.int_at_least(config, "queries_per_type", 4)
  for t in types:
    _, k = parse_query_type(t)
    if config.queries_per_type > 9 ** k:
      raise ValueError(f"config.queries_per_type must be <= {9 ** k}, the distinct queries of "
                       f"type {t!r}, got {config.queries_per_type!r}.")
  if not 0 < config.train_query_fraction < 1:
    raise ValueError(f"config.train_query_fraction must lie in (0, 1), got "
                     f"{config.train_query_fraction!r}.")
  if not 0 < config.threshold < 1:
    raise ValueError(f"config.threshold must lie in (0, 1), got {config.threshold!r}.")
  m = config.model
  for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
    if not isinstance(m[field], int) or m[field] < 1:
      raise ValueError(f"config.model.{field} must be a positive integer, got {m[field]!r}.")
  if m.hidden_size % m.num_heads or m.num_heads % m.num_kv_heads:
    raise ValueError("config.model: hidden_size must divide by num_heads and num_heads by "
                     "num_kv_heads.")


# --- the world: prefixes, reliabilities, queries, corpus ------------------------------------


@dataclasses.dataclass
class World:
  """One seed's setup.

  Attributes:
    prefixes: `[P]` prefix strings, shuffled: the first `num_train_prompts` are the
      training prompts.
    families: `[T]` strings, the letters that make each query type reliable.
    rho: `[P, T]` reliability of each prefix on each query type.
    train_queries, test_queries: lists of `(type index, operands)`, shuffled then split.
    corpus: the language model's demonstrations `{"prompt", "response"}`.
  """

  prefixes: list
  families: list
  rho: np.ndarray
  train_queries: list
  test_queries: list
  corpus: list


def ordered_derivation(op: str, operands) -> str:
  """The expert's derivation combining the numbers left to right (`3+5=8`, `8+8=16`,
  `#### 16`): one correct response per query, so that at every token the correct
  continuation is unique and an early stop competes with it alone."""
  total, lines = operands[0], []
  for x in operands[1:]:
    new = total + x if op == "+" else total * x
    lines.append(f"{total}{op}{x}={new}")
    total = new
  return "\n".join([*lines, f"#### {total}"])


def early_stop(derivation: str) -> str:
  """The derivation with its last step dropped and `#### <that step's first operand>`: a wrong
  final answer (operands are ≥ 1, so the dropped step changes the result)."""
  lines = derivation.split("\n")
  last = arithmetic._STEP.match(lines[-2])
  return "\n".join([*lines[:-2], f"#### {last.group(1)}"])


def make_world(config, rng: np.random.Generator) -> World:
  types = [parse_query_type(t) for t in config.query_types]
  num_types = len(types)
  letters = list(config.letters)
  order = rng.permutation(len(letters))
  families = ["".join(letters[i] for i in part) for part in np.array_split(order, num_types)]
  family_of = {ch: t for t, fam in enumerate(families) for ch in fam}
  prefixes: list[str] = []
  while len(prefixes) < config.num_prompts:
    tag = "".join(rng.choice(letters, config.prefix_len, replace=False))
    if tag not in prefixes:
      prefixes.append(tag)
  prefixes = [prefixes[i] for i in rng.permutation(len(prefixes))]
  counts = np.array([[sum(family_of[ch] == t for ch in p) for t in range(num_types)]
                     for p in prefixes], np.float32)
  rho = config.rho_low + (config.rho_high - config.rho_low) * counts / config.prefix_len
  queries = []
  for t, (_, k) in enumerate(types):
    seen = set()
    while len(seen) < config.queries_per_type:
      seen.add(tuple(int(x) for x in rng.integers(1, 10, k)))
    queries += [(t, list(q)) for q in sorted(seen)]
  queries = [queries[i] for i in rng.permutation(len(queries))]   # shuffle, then split
  n_train = round(config.train_query_fraction * len(queries))
  corpus = []
  for _ in range(config.num_demonstrations):
    p = int(rng.integers(len(prefixes)))
    t = int(rng.integers(num_types))
    op, k = types[t]
    operands = [int(x) for x in rng.integers(1, 10, k)]
    response = ordered_derivation(op, operands)
    if rng.random() >= rho[p, t]:
      response = early_stop(response)
    corpus.append({"prompt": full_prompt(prefixes[p], op, operands), "response": response})
  return World(prefixes, families, rho, queries[:n_train], queries[n_train:], corpus)


def full_prompt(prefix: str, op: str, operands) -> str:
  return f"{prefix} {arithmetic.make_prompt(op, operands)}"


def alphabet(config) -> str:
  return arithmetic.ALPHABET + config.letters


# --- the language model -------------------------------------------------------------------


def model_config(config, vocab_size: int, seq_len: int) -> models.ModelConfig:
  mc = config.model
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=mc.hidden_size,
      num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
      head_dim=mc.hidden_size // mc.num_heads, intermediate_size=mc.intermediate_size,
      max_position_embeddings=seq_len + config.max_new_tokens + 8)


def train_language_models(config, corpora: list[dict], cfg: models.ModelConfig):
  """MLE on each seed's corpus, all seeds in one vmapped, compiled program.

  Returns `(params [S, ...], model_def, compile seconds, run seconds)`.
  """
  model_def, _ = split_model(nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))))
  spec = registry.get("mle")
  objective = spec.build(spec.hyperparameters())
  tx, schedule = optim.make_optimizer(
      learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      total_steps=config.steps, decay="cosine", clip_norm=1.0)

  def init_params(key):
    return split_model(models.Transformer(cfg, rngs=nnx.Rngs(key)))[1]

  def train_one(key, data):
    train = make_train(init_params, model_def, objective, tx, data, steps=config.steps,
                       batch_size=config.batch_size, schedule=schedule)
    state, log = train(key)
    return state.params, log["train"]["train/finite"], log["train"]["train/loss"]

  data = {k: jnp.asarray(np.stack([c[k] for c in corpora])) for k in LM_KEYS}
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  t0 = time.perf_counter()
  compiled = jax.jit(jax.vmap(train_one)).lower(keys, data).compile()
  t1 = time.perf_counter()
  params, finite, loss = compiled(keys, data)
  jax.block_until_ready(params)
  t2 = time.perf_counter()
  finite = np.asarray(finite)
  if not finite.all():
    bad = np.argwhere(finite == 0)[0]
    raise FloatingPointError(f"non-finite loss or gradient at seed {bad[0]}, step {bad[1] + 1}.")
  return params, model_def, np.asarray(loss)[:, -50:].mean(1), t1 - t0, t2 - t1


def encode(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """`(ids, mask)` `[B, L]`: BOS then each text's characters, right-padded."""
  rows = [[tokenizer.bos_token_id, *tokenizer.encode(t, add_special_tokens=False)]
          for t in texts]
  length = max(len(r) for r in rows)
  ids = np.full((len(rows), length), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = True
  return ids, mask


@nnx.jit
def _mean_hidden(model, ids, mask):
  hidden = model(ids, attention_mask=mask, return_hidden=True).astype(jnp.float32)
  keep = mask.at[:, 0].set(False).astype(jnp.float32)   # BOS excluded
  return jnp.sum(hidden * keep[..., None], 1) / jnp.maximum(keep.sum(1, keepdims=True), 1.0)


def embed(model, tokenizer, texts: list[str]) -> np.ndarray:
  """`[B, D]` the model's final hidden states mean-pooled over each text's tokens."""
  ids, mask = encode(tokenizer, texts)
  return np.asarray(_mean_hidden(model, jnp.asarray(ids), jnp.asarray(mask)))


def grade(config, model, tokenizer, key, prompts: list[str], queries: list[tuple],
          types) -> np.ndarray:
  """`[len(queries), len(prompts)]` 0/1: the model's decoded answer to each query under each
  prefix is correct (the task's checker)."""
  texts, task_prompts = [], []
  for t, operands in queries:
    op = types[t][0]
    task_prompts.append(arithmetic.make_prompt(op, operands))
    texts += [full_prompt(p, op, operands) for p in prompts]
  ids, mask = encode(tokenizer, texts)
  out = generate(model, ids, mask, key, max_new_tokens=config.max_new_tokens,
                 temperature=float(config.temperature), eos_id=tokenizer.eos_token_id,
                 pad_id=tokenizer.pad_token_id)
  tokens, rmask = np.asarray(out.tokens), np.asarray(out.response_mask)
  correct = np.zeros(len(texts), np.int32)
  for i in range(len(texts)):
    response = tokenizer.decode([int(t) for t, m in zip(tokens[i], rmask[i], strict=True) if m],
                                skip_special_tokens=True)
    correct[i] = arithmetic.check(task_prompts[i // len(prompts)], response).correct
  return correct.reshape(len(queries), len(prompts))


# --- one seed's records, reward model and selection ------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConstantRewardModel:
  """R̂ when every training record has the same label: that label's probability everywhere."""

  value: float

  def predict(self, query_emb, prompt_emb) -> np.ndarray:
    return np.full((len(query_emb), len(prompt_emb)), self.value, np.float32)


def evaluate_seed(config, world: World, model, tokenizer, key) -> dict:
  types = [parse_query_type(t) for t in config.query_types]
  n_train = config.num_train_prompts
  train_p, held_p = world.prefixes[:n_train], world.prefixes[n_train:]
  k_train, k_test = jax.random.split(key)
  t0 = time.perf_counter()
  c_train = grade(config, model, tokenizer, k_train, train_p, world.train_queries, types)
  c_test = grade(config, model, tokenizer, k_test, world.prefixes, world.test_queries, types)
  t1 = time.perf_counter()
  q_text = lambda qs: [arithmetic.make_prompt(types[t][0], ops) for t, ops in qs]
  qe_train = embed(model, tokenizer, q_text(world.train_queries))
  qe_test = embed(model, tokenizer, q_text(world.test_queries))
  pe = embed(model, tokenizer, [p + " " for p in world.prefixes])
  t2 = time.perf_counter()
  feats = ps.pair_features(qe_train, pe[:n_train])
  d = qe_train.shape[1]
  labels = c_train.reshape(-1)
  if labels.min() == labels.max():
    # One class only (e.g. a barely trained model in a quick run): nothing to separate, so
    # R̂ is the constant base rate and every choice falls to the lowest index.
    rm = ConstantRewardModel(float(labels[0]))
  else:
    rm = ps.fit_prompt_reward_model(feats[:, :d], feats[:, d:], labels,
                                    random_state=int(config.seed), n_jobs=1,
                                    **dict(config.lightgbm))
  t3 = time.perf_counter()
  r_test = rm.predict(qe_test, pe)                  # [Qtest, P]
  r_train_queries = rm.predict(qe_train, pe)        # [Qtrain, P], no labels used for held-out
  ct_train, ct_held = c_test[:, :n_train], c_test[:, n_train:]
  rt_train, rt_held = r_test[:, :n_train], r_test[:, n_train:]
  single_train = ps.best_single_prompt(c_train)
  single_held = ps.best_single_prompt_by_score(r_train_queries[:, n_train:])
  row = {
      "base_rate_train_records": float(c_train.mean()),
      "base_rate_test_train_prompts": float(ct_train.mean()),
      "base_rate_test_held_prompts": float(ct_held.mean()),
      "rm_fit": ps.binary_metrics(c_train.reshape(-1), rm.predict(qe_train, pe[:n_train])
                                  .reshape(-1), config.threshold),
      "rm_train_prompts": ps.binary_metrics(ct_train.reshape(-1), rt_train.reshape(-1),
                                            config.threshold),
      "rm_held_prompts": ps.binary_metrics(ct_held.reshape(-1), rt_held.reshape(-1),
                                           config.threshold),
      "train_prompts": {
          "random prompt": float(ct_train.mean()),
          "best single prompt": ps.selection_accuracy(ct_train, single_train),
          "best-of-N (R̂)": ps.selection_accuracy(ct_train, ps.best_of_n(rt_train)),
          "oracle": ps.oracle_accuracy(ct_train),
          "best single in hindsight": float(ct_train.mean(0).max()),
      },
      "held_prompts": {
          "random prompt": float(ct_held.mean()),
          "best single prompt": ps.selection_accuracy(ct_held, single_held),
          "best-of-N (R̂)": ps.selection_accuracy(ct_held, ps.best_of_n(rt_held)),
          "oracle": ps.oracle_accuracy(ct_held),
          "best single in hindsight": float(ct_held.mean(0).max()),
      },
      "best_single_train": world.prefixes[single_train],
      "best_single_held": held_p[single_held],
      "prefixes": world.prefixes, "families": world.families, "rho": world.rho.tolist(),
      # The model's accuracy per (prefix, query type) on held-out queries vs ρ: does the
      # language model follow its corpus's reliabilities?
      "cell_accuracy": cell_accuracy(c_test, world.test_queries, len(types)).tolist(),
      "rm_constant": isinstance(rm, ConstantRewardModel),
      "seconds": {"records": t1 - t0, "embeddings": t2 - t1, "lightgbm_fit": t3 - t2},
  }
  acc = np.asarray(row["cell_accuracy"]).ravel()
  rho = np.asarray(world.rho).ravel()
  ok = ~np.isnan(acc)
  row["rho_cell_correlation"] = (float(np.corrcoef(rho[ok], acc[ok])[0, 1])
                                 if ok.sum() > 1 and acc[ok].std() > 0 else float("nan"))
  return row


def cell_accuracy(correct, queries, num_types: int) -> np.ndarray:
  """`[P, T]` accuracy of each prompt on each query type (NaN for a type without queries)."""
  t = np.array([q[0] for q in queries])
  return np.array([[correct[t == ti, p].mean() if np.any(t == ti) else np.nan
                    for ti in range(num_types)] for p in range(correct.shape[1])])


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  tokenizer = char_tokenizer(alphabet(config))
  worlds = [make_world(config, np.random.default_rng([config.seed, s]))
            for s in range(config.num_seeds)]
  lengths = [len(ex["prompt"]) + len(ex["response"]) + 2 for w in worlds for ex in w.corpus]
  seq_len = max(lengths)
  corpora = [lm_arrays(w.corpus, tokenizer, seq_len=seq_len) for w in worlds]
  cfg = model_config(config, len(tokenizer), seq_len)
  params, model_def, final_loss, compile_s, train_s = train_language_models(config, corpora, cfg)
  log(f"  trained {config.num_seeds} language models in {train_s:.0f} s ({compile_s:.0f} s "
      f"compile); final loss {np.round(final_loss, 3).tolist()}")
  keys = jax.random.split(jax.random.key(config.seed + 1), config.num_seeds)
  per_seed = []
  for s in range(config.num_seeds):
    model = model_def.merge(jax.tree.map(lambda x, s=s: x[s], params))
    row = evaluate_seed(config, worlds[s], model, tokenizer, keys[s])
    row["final_train_loss"] = float(final_loss[s])
    per_seed.append(row)
    log(f"  seed {s}: base rate {row['base_rate_test_held_prompts']:.2f}; held-out prompts "
        + ", ".join(f"{m} {row['held_prompts'][m]:.2f}" for m in METHODS)
        + f"; training prompts best single {row['train_prompts']['best single prompt']:.2f}, "
        f"best-of-N {row['train_prompts']['best-of-N (R̂)']:.2f}; ρ–accuracy r "
        f"{row['rho_cell_correlation']:.2f}")
  summary = {}
  for split in ("train_prompts", "held_prompts"):
    names = (*METHODS, "best single in hindsight")
    summary[split] = {m: study.interval([r[split][m] for r in per_seed]) for m in names}
  for split in ("rm_fit", "rm_train_prompts", "rm_held_prompts"):
    summary[split] = {k: study.interval([r[split][k] for r in per_seed])
                      for k in ("accuracy", "precision", "recall", "f1", "base_rate",
                                "predicted_rate")}
  summary["rho_cell_correlation"] = study.interval([r["rho_cell_correlation"]
                                                    for r in per_seed])
  seconds = {k: float(sum(r["seconds"][k] for r in per_seed))
             for k in ("records", "embeddings", "lightgbm_fit")}
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "seq_len": seq_len,
             "num_records": {"train": len(worlds[0].train_queries) * config.num_train_prompts,
                             "test": len(worlds[0].test_queries) * config.num_prompts},
             "per_seed": per_seed, "summary": summary,
             "seconds": {"lm_compile": compile_s, "lm_train": train_s, **seconds}}
  results["verdicts"] = verdicts(results)
  results["seconds"]["total"] = time.perf_counter() - t_start
  return study.save(results, workdir, results_table(results, config),
                    lambda: plot_results(results, workdir))


# --- verdicts ------------------------------------------------------------------------------


def paired_gain(results, split: str):
  return study.interval([r[split]["best-of-N (R̂)"] - r[split]["best single prompt"]
                         for r in results["per_seed"]])


def verdicts(results) -> list[dict]:
  cfg = results["config"]
  n_train = cfg["num_train_prompts"]
  n_held = cfg["num_prompts"] - n_train
  rows = []
  for split, what, single in (
      ("train_prompts", f"the {n_train} training prompts",
       "highest accuracy on the training records"),
      ("held_prompts", f"{n_held} held-out prompts (no records)",
       "highest mean R̂ over the training queries")):
    gain = paired_gain(results, split)
    s = results["summary"][split]
    rows.append({
        "finding": f"Best-of-N by R̂ over {what} beats the best single prompt on held-out "
                   "queries, at one LM call per query",
        "verdict": study.decide(gain),
        "deciding": f"best-of-N − best single prompt ({single}), paired over seeds: "
                    f"{study.fmt_ci(gain, 3)}; best-of-N {study.fmt_pm(s['best-of-N (R̂)'])}, "
                    f"best single {study.fmt_pm(s['best single prompt'])}, oracle "
                    f"{study.fmt_pm(s['oracle'])}"})
  return rows


# --- outputs ---------------------------------------------------------------------------------


def results_table(results, config=None) -> str:
  del config
  cfg = results["config"]
  sec = results["seconds"]
  n_train = cfg["num_train_prompts"]
  n_held = cfg["num_prompts"] - n_train
  s = results["summary"]
  nr = results["num_records"]
  lines = [
      f"## Prompt-OIRL: query-dependent prompt selection ({len(cfg['query_types'])} query "
      f"types {', '.join(cfg['query_types'])}; {cfg['num_prompts']} prefixes, {n_train} "
      f"training and {n_held} held-out)", "",
      f"Task accuracy on held-out queries, mean ± 95% interval over {cfg['num_seeds']} seeds "
      f"(one language model, world and split each). Records per seed: {nr['train']} training "
      f"(training queries × training prompts), {nr['test']} test (held-out queries × all "
      f"prompts). CPU: {results['cpu']}.", "",
      "| candidates | random prompt | best single prompt | best-of-N (R̂) | oracle | "
      "best single in hindsight |", "|---|---|---|---|---|---|"]
  for split, label in (("train_prompts", f"{n_train} training prompts"),
                       ("held_prompts", f"{n_held} held-out prompts")):
    lines.append(f"| {label} | " + " | ".join(
        study.fmt_pm(s[split][m]) for m in (*METHODS, "best single in hindsight")) + " |")
  lines += [
      "", "Best single prompt: over training prompts, the highest accuracy on the training "
      "records; over held-out prompts, the highest mean R̂ over the training queries. In "
      "hindsight: the best single prompt by its accuracy on the held-out queries themselves "
      "(not a method; a reference).", "",
      f"Reward model R̂: LightGBM ({cfg['lightgbm']['n_estimators']} rounds, "
      f"{cfg['lightgbm']['num_leaves']} leaves) on [query, prefix] embeddings (the language "
      f"model's final hidden states, mean-pooled over each text alone), fitted on the "
      f"training records; threshold {cfg['threshold']}:", "",
      "| records | base rate (correct) | accuracy | precision | recall | F1 | predicted "
      "positive |", "|---|---|---|---|---|---|---|"]
  for split, label in (("rm_fit", "training records (fit)"),
                       ("rm_train_prompts", "held-out queries × training prompts"),
                       ("rm_held_prompts", "held-out queries × held-out prompts")):
    m = s[split]
    lines.append(f"| {label} | " + " | ".join(study.fmt_pm(m[k]) for k in (
        "base_rate", "accuracy", "precision", "recall", "f1", "predicted_rate")) + " |")
  lines += [
      "", f"Does the language model follow its corpus's reliabilities? Correlation over "
      f"(prefix, query type) cells of ρ with the model's accuracy on held-out queries: "
      f"{study.fmt_pm(s['rho_cell_correlation'])}.", "",
      f"Timings: language models {sec['lm_train']:.0f} s ({sec['lm_compile']:.0f} s compile, "
      f"all seeds vmapped), decoding the records {sec['records']:.0f} s, embeddings "
      f"{sec['embeddings']:.0f} s, LightGBM fits {sec['lightgbm_fit']:.1f} s; total "
      f"{sec.get('total', float('nan')):.0f} s.", "",
      "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  cfg = results["config"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  n_train = cfg["num_train_prompts"]
  for ax, split, title in ((axes[0], "train_prompts", f"{n_train} training prompts"),
                           (axes[1], "held_prompts",
                            f"{cfg['num_prompts'] - n_train} held-out prompts")):
    cis = [results["summary"][split][m] for m in METHODS]
    study.errorbars(ax, np.arange(len(METHODS)), cis, linestyle="none", label="mean, 95% CI")
    for r in results["per_seed"]:
      ax.plot(np.arange(len(METHODS)), [r[split][m] for m in METHODS], color="gray",
              alpha=0.4, linewidth=0.8)
    ax.set_xticks(np.arange(len(METHODS)), METHODS, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("task accuracy on held-out queries")
    ax.set_title(f"candidates: {title} (gray: seeds)", fontsize=9)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "prompt_oirl.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/prompt_oirl.py", "/tmp/prompt_oirl")
