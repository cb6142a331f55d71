"""Reproduce "Imitating Language via Scalable Inverse RL" (Wulfmeier et al. 2024) at laptop scale.

    python -m experiments.imitate_language --workdir=/tmp/imitate                     # ~10 min
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.quick=True  # ~1-2 min

The task (`experiments.tasks.arithmetic`) has an expert program with many
correct outputs and an exact checker, so task performance, diversity and
reward correlation are measured, not estimated. Every method trains the same
small character-level transformer from scratch on expert derivations; three
seeds train in parallel with `jax.vmap`:

- MLE, and MLE with an entropy bonus;
- offline IQLearn (TD-regularised MLE) over a grid of TD weights and γ;
- online IQLearn, mixing in samples of the current policy (drawn inside the
  compiled step, no gradient through sampling).

Reported per method (mean ± std over seeds): final-answer accuracy and step
validity of samples on held-out prompts at temperature 1 and a lower one;
diversity (Self-BLEU, lower is more diverse; distinct-n; per-token entropy);
the Spearman correlation between each policy's extracted sequence rewards
(`irl_jax.losses.sequence_rewards`) and the checker's score on a mix of correct
and corrupted derivations; and train-step time relative to MLE. A data-size
sweep tests whether TD regularisation reduces overfitting. Outputs in the
work directory: `results.md`, `results.json`, and PNG plots.

The logic lives in importable functions (`run`, `train_method`, `evaluate`)
that the Colab notebook `colab/imitate_language.ipynb` calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from experiments.tasks import arithmetic as task
from irl_jax import losses, models
from irl_jax.data import char_tokenizer
from irl_jax.eval import distinct_n, self_bleu, spearman
from irl_jax.models.transformer import padded_positions
from irl_jax.train import lm, optim, registry
from irl_jax.train.state import TrainState, split_model
from irl_jax.train.step import make_train_step

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "imitate_language.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/imitate_language", "Output directory.")

# -- data ----------------------------------------------------------------------


def encode(examples, tokenizer, *, seq_len: int, prompt_len: int) -> dict[str, np.ndarray]:
  """BOS + prompt + response + EOS, right-padded to `seq_len`; prompts left-aligned to
  `prompt_len` for sampling. Over-long examples raise (never truncated)."""
  bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
  n = len(examples)
  ids = np.full((n, seq_len), pad, np.int32)
  loss = np.zeros((n, seq_len), bool)
  prompts = np.full((n, prompt_len), pad, np.int32)
  pmask = np.zeros((n, prompt_len), bool)
  for i, ex in enumerate(examples):
    p = [bos, *tokenizer.encode(ex["prompt"], add_special_tokens=False)]
    r = [*tokenizer.encode(ex["response"], add_special_tokens=False), eos]
    if len(p) + len(r) > seq_len or len(p) > prompt_len:
      raise ValueError(f"example {i} ({len(p)} + {len(r)} tokens) does not fit seq_len={seq_len}"
                       f" / prompt_len={prompt_len}: {ex}")
    ids[i, :len(p) + len(r)] = p + r
    loss[i, len(p):len(p) + len(r)] = True
    prompts[i, prompt_len - len(p):] = p
    pmask[i, prompt_len - len(p):] = True
  seg = (np.arange(seq_len)[None] < (ids != pad).sum(1, keepdims=True)).astype(np.int32)
  return dict(input_ids=ids, segment_ids=seg,
                 positions=np.tile(np.arange(seq_len, dtype=np.int32), (n, 1)), loss_mask=loss,
                 prompt_ids=prompts, prompt_mask=pmask)


LM_KEYS = ("input_ids", "segment_ids", "positions", "loss_mask")

# -- methods ---------------------------------------------------------------------


def method_name(m) -> str:
  kind = m["kind"]
  if kind == "mle":
    return "MLE" if not m.get("entropy") else f"MLE + entropy {m['entropy']}"
  name = f"IQLearn λ={m['td_weight']} γ={m['gamma']}"
  return name + (f" online α={m['mix']}" if kind == "iq_learn_online" else "")


def _objective(m):
  """The method's objective through the registry (its hyperparameters from the method)."""
  spec = registry.get(m["kind"])
  fields = {f.name for f in dataclasses.fields(spec.hyperparameters)}
  values = {"entropy_bonus": m.get("entropy", 0.0), **m}
  return spec.build(spec.hyperparameters(**{k: v for k, v in values.items() if k in fields}))


def model_config(config, vocab_size: int) -> models.ModelConfig:
  mc = config.model
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=mc.hidden_size,
      num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
      head_dim=mc.hidden_size // mc.num_heads, intermediate_size=mc.intermediate_size,
      max_position_embeddings=config.seq_len + config.max_new_tokens)


def _sample_batch(model, prompts, prompt_mask, key, max_new_tokens, eos_id):
  """On-policy samples as `sample_*` arrays (inside the compiled step, no gradient)."""
  out = models.generate(model, prompts, prompt_mask, key, max_new_tokens=max_new_tokens,
                        temperature=1.0, eos_id=eos_id)
  attention = out.attention_mask
  p = out.prompt_ids.shape[1]
  return {
      "sample_input_ids": out.sequences.astype(jnp.int32),
      "sample_segment_ids": attention.astype(jnp.int32),
      "sample_positions": padded_positions(attention),
      "sample_loss_mask": jnp.concatenate(
          [jnp.zeros((attention.shape[0], p), bool), out.response_mask], axis=1),
      "sample_terminal": out.terminal,
  }


def train_method(m, data: dict, heldout: dict, config, tokenizer, *, seeds):
  """Train one method for every seed at once (vmap); returns params, curves, step time."""
  cfg = model_config(config, len(tokenizer))
  per_seed = []
  for s in seeds:
    model_def, params = split_model(models.Transformer(cfg, rngs=nnx.Rngs(s)))
    per_seed.append(params)
  params = jax.tree.map(lambda *x: jnp.stack(x), *per_seed)
  tx, schedule = optim.make_optimizer(
      learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      total_steps=config.steps, decay="cosine", clip_norm=1.0)
  base = make_train_step(model_def, _objective(m), tx, schedule)
  online = m["kind"] == "iq_learn_online"
  eos = tokenizer.eos_token_id

  def step(state, batch):
    if online:
      key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 1)
      model = model_def.merge(jax.lax.stop_gradient(state.params))
      batch = dict(batch, **_sample_batch(model, batch["prompt_ids"], batch["prompt_mask"], key,
                                          config.max_new_tokens, eos))
    return base(state, {k: v for k, v in batch.items() if not k.startswith("prompt")})

  states = jax.vmap(lambda p, s: TrainState(
      step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
      rng=jax.random.key_data(jax.random.key(s))))(params, jnp.asarray(seeds))
  step_fn = jax.jit(jax.vmap(step))
  nll_fn = jax.jit(jax.vmap(lambda p, b: _heldout_nll(model_def, p, b), in_axes=(0, None)))
  n, b = len(data["input_ids"]), config.batch_size
  orders = [np.random.default_rng(1000 + s).permutation(n) for s in seeds]
  keys = (*LM_KEYS, "prompt_ids", "prompt_mask")
  curve, times = [], []
  held = {k: heldout[k] for k in LM_KEYS}
  for t in range(config.steps):
    idx = [(o[np.arange(t * b, (t + 1) * b) % n]) for o in orders]
    batch = {k: np.stack([data[k][i] for i in idx]) for k in keys}
    start = time.perf_counter()
    states, metrics = step_fn(states, batch)
    jax.block_until_ready(metrics)
    if t > 0:
      times.append(time.perf_counter() - start)
    if (t + 1) % config.eval_every == 0 or t + 1 == config.steps:
      curve.append((t + 1, np.asarray(nll_fn(states.params, held)).tolist()))
  return {"params": states.params, "model_def": model_def, "curve": curve,
          "step_time": statistics.median(times) if times else float("nan"),
          "final_train_loss": np.asarray(metrics["train/loss"]).tolist()}


def _heldout_nll(model_def, params, batch):
  stats = lm.lm_stats(model_def.merge(params), batch["input_ids"], batch["segment_ids"],
                              batch["positions"], chunk_size=None)
  where = lm.lm_targets(batch["loss_mask"])
  return losses.token_mean(losses.mle(stats, where=where), where)


# -- evaluation ---------------------------------------------------------------------

_TOKEN = re.compile(r"\d+|[+*=#]|\n")


def words(text: str) -> list[str]:
  """Tokens for diversity metrics: numbers, operators, line breaks."""
  return _TOKEN.findall(text)


def _decode(tokenizer, ids, mask) -> str:
  return tokenizer.decode([int(t) for t, keep in zip(ids, mask, strict=True) if keep],
                          skip_special_tokens=True)


def sample_metrics(model, tokenizer, prompts: dict, texts, *, temperature, num_samples,
                   max_new_tokens, key):
  """Accuracy, step validity and diversity of `num_samples` samples per held-out prompt."""
  out = models.generate(model, prompts["prompt_ids"], prompts["prompt_mask"], key,
                        max_new_tokens=max_new_tokens, temperature=temperature,
                        num_samples=num_samples, eos_id=tokenizer.eos_token_id)
  tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
  responses = [_decode(tokenizer, t, m) for t, m in zip(tokens, mask, strict=True)]
  scores = [task.check(texts[i // num_samples], r) for i, r in enumerate(responses)]
  groups = [[words(r) for r in responses[i:i + num_samples]]
            for i in range(0, len(responses), num_samples)]
  # Per-token entropy of the policy on its own samples.
  logits = model(out.sequences, attention_mask=out.attention_mask)
  p = out.prompt_ids.shape[1]
  where = jnp.asarray(mask)
  entropy = losses.token_mean(losses.token_entropy(logits[:, p - 1:-1], where=where), where)
  return {
      "accuracy": float(np.mean([s.correct for s in scores])),
      "step_validity": float(np.mean([s.step_validity for s in scores])),
      "self_bleu": float(np.mean([self_bleu(g) for g in groups if sum(map(len, g))])),
      "distinct_2": distinct_n([w for g in groups for w in g], 2),
      "distinct_3": distinct_n([w for g in groups for w in g], 3),
      "entropy": float(entropy),
      "examples": responses[:num_samples],
  }


def reward_probe(rng, prompts_text, tokenizer, config):
  """Correct and corrupted derivations of held-out prompts with their checker scores."""
  examples, scores = [], []
  for prompt in prompts_text:
    head = prompt.split()
    op, operands = head[0], [int(x) for x in head[1:]]
    good = task.expert_derivation(rng, op, operands)
    for kind in (None, "answer", "step", "both"):
      response = good if kind is None else task.corrupt(rng, good, kind)
      examples.append({"prompt": prompt, "response": response})
      scores.append(task.check(prompt, response).score)
  enc = encode(examples, tokenizer, seq_len=config.seq_len + 8, prompt_len=config.prompt_len)
  return enc, np.asarray(scores)


def sequence_reward_fn(model_def, gamma):
  @jax.jit
  def fn(params, batch):
    stats = lm.lm_stats(model_def.merge(params), batch["input_ids"],
                                batch["segment_ids"], batch["positions"], chunk_size=None)
    return losses.sequence_rewards(stats, where=lm.lm_targets(batch["loss_mask"]),
                                   gamma=gamma)

  return fn


def evaluate(m, trained, tokenizer, config, eval_prompts: dict, eval_texts, probe, seeds):
  """Per-seed metrics of one trained method (see `sample_metrics`, `reward_probe`)."""
  model_def = trained["model_def"]
  probe_enc, probe_scores = probe
  reward_fn = sequence_reward_fn(model_def, m.get("gamma", 1.0))
  per_seed = []
  for i, s in enumerate(seeds):
    params = jax.tree.map(lambda x, i=i: x[i], trained["params"])
    model = model_def.merge(params)
    row = {"seed": s, "heldout_nll": trained["curve"][-1][1][i]}
    for label, temp in (("t1", 1.0), ("tlow", config.low_temperature)):
      metrics = sample_metrics(model, tokenizer, eval_prompts, eval_texts, temperature=temp,
                               num_samples=config.num_samples, key=jax.random.key(s + 77),
                               max_new_tokens=config.max_new_tokens)
      examples = metrics.pop("examples")
      row.update({f"{k}_{label}": v for k, v in metrics.items()})
      if label == "t1":
        row["examples"] = examples
    rewards = np.asarray(reward_fn(params, {k: probe_enc[k] for k in LM_KEYS}))
    row["reward_spearman"] = spearman(rewards, probe_scores)
    row["probe_rewards"] = rewards.tolist()
    per_seed.append(row)
  return per_seed


# -- the study -------------------------------------------------------------------------


def _mean_std(values):
  v = np.asarray(values, float)
  return float(np.mean(v)), float(np.std(v))


def summarise(per_seed, keys):
  return {k: _mean_std([r[k] for r in per_seed]) for k in keys}


SUMMARY_KEYS = ("accuracy_t1", "step_validity_t1", "accuracy_tlow", "step_validity_tlow",
                "self_bleu_t1", "distinct_2_t1", "entropy_t1", "self_bleu_tlow",
                "reward_spearman", "heldout_nll")


def resolve(config):
  """The config with its quick settings applied when `config.quick` is set."""
  config = config.copy_and_resolve_references()
  if config.get("quick"):
    with config.unlocked():
      for k, v in config.quick_settings.items():
        config[k] = v
      config.methods = list(config.quick_methods)
  return config


def run(config, workdir: str, *, log=print) -> dict:
  """The whole study; writes results.md, results.json and plots into `workdir`."""
  config = resolve(config)
  os.makedirs(workdir, exist_ok=True)
  tokenizer = char_tokenizer(task.ALPHABET)
  difficulty = task.Difficulty(config.min_operands, config.max_operands, config.digits,
                               config.op)
  rng = np.random.default_rng(config.data_seed)
  pool = task.make_dataset(rng, max((*config.data_sizes, config.num_demonstrations)),
                           difficulty)
  heldout_examples = task.make_dataset(rng, config.num_heldout, difficulty)
  enc = lambda ex: encode(ex, tokenizer, seq_len=config.seq_len, prompt_len=config.prompt_len)
  heldout = enc(heldout_examples)
  eval_texts = [ex["prompt"] for ex in heldout_examples[:config.num_eval_prompts]]
  eval_prompts = {k: heldout[k][:config.num_eval_prompts] for k in ("prompt_ids", "prompt_mask")}
  probe = reward_probe(rng, eval_texts, tokenizer, config)
  seeds = list(range(config.num_seeds))
  results = {"config": config.to_dict(), "methods": {}, "sweep": {}}

  main_data = enc(pool[:config.num_demonstrations])
  curves = {}  # (method name, data size) -> curves, reused by the sweep
  trained_models = {}
  for m in config.methods:
    m = dict(m)
    name = method_name(m)
    t0 = time.perf_counter()
    trained = train_method(m, main_data, heldout, config, tokenizer, seeds=seeds)
    curves[(name, config.num_demonstrations)] = (trained["curve"], trained["final_train_loss"])
    per_seed = evaluate(m, trained, tokenizer, config, eval_prompts, eval_texts, probe, seeds)
    results["methods"][name] = {
        "method": m, "per_seed": per_seed, "summary": summarise(per_seed, SUMMARY_KEYS),
        "curve": trained["curve"], "step_time": trained["step_time"],
    }
    trained_models[name] = trained
    log(f"{name}: acc {results['methods'][name]['summary']['accuracy_t1'][0]:.3f} "
        f"self-BLEU {results['methods'][name]['summary']['self_bleu_t1'][0]:.3f} "
        f"ρ {results['methods'][name]['summary']['reward_spearman'][0]:.3f} "
        f"({time.perf_counter() - t0:.0f} s)")
  mle_time = results["methods"][method_name(dict(config.methods[0]))]["step_time"]
  for r in results["methods"].values():
    r["step_time_over_mle"] = r["step_time"] / mle_time

  for m in config.sweep_methods:
    m = dict(m)
    for size in config.data_sizes:
      if (method_name(m), size) not in curves:
        trained = train_method(m, enc(pool[:size]), heldout, config, tokenizer, seeds=seeds)
        curves[(method_name(m), size)] = (trained["curve"], trained["final_train_loss"])
      curve, train_loss = curves[(method_name(m), size)]
      nll = np.asarray([c[1] for c in curve])  # [evals, seeds]
      results["sweep"][f"{method_name(m)} | n={size}"] = {
          "method": method_name(m), "size": size,
          "final_heldout_nll": _mean_std(nll[-1]), "best_heldout_nll": _mean_std(nll.min(0)),
          "overfit_gap": _mean_std(nll[-1] - nll.min(0)),
          "final_train_loss": _mean_std(train_loss),
      }
      log(f"sweep {method_name(m)} n={size}: held-out NLL {nll[-1].mean():.3f}")

  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=float)
  table = results_table(results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table)
  plot_results(results, workdir, probe[1])
  # Trained parameters stay out of results.json; notebooks inspect them.
  results["trained"] = trained_models
  results["tokenizer"] = tokenizer
  return results


def token_rewards(trained, tokenizer, prompt: str, response: str, *, gamma: float, seed: int = 0):
  """Per-token implied rewards `r̂_t` of one response under a trained policy.

  Returns `[(character, reward)]` for the response tokens and the final EOS.
  """
  enc = encode([{"prompt": prompt, "response": response}], tokenizer,
               seq_len=len(prompt) + len(response) + 2, prompt_len=len(prompt) + 1)
  params = jax.tree.map(lambda x: x[seed], trained["params"])
  stats = lm.lm_stats(trained["model_def"].merge(params), enc["input_ids"],
                              enc["segment_ids"], enc["positions"], chunk_size=None)
  where = lm.lm_targets(jnp.asarray(enc["loss_mask"]))
  rewards = np.asarray(losses.implied_rewards(stats, where=where, gamma=gamma))[0]
  ids = enc["input_ids"][0]
  return [(tokenizer.decode([int(ids[t + 1])]) or "<eos>", float(rewards[t]))
          for t in np.nonzero(np.asarray(where[0]))[0]]


def _fmt(ms, digits=3):
  return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def results_table(results) -> str:
  cols = [("acc T=1", "accuracy_t1"), ("steps T=1", "step_validity_t1"),
          ("acc T=low", "accuracy_tlow"), ("Self-BLEU T=1 ↓", "self_bleu_t1"),
          ("distinct-2 T=1", "distinct_2_t1"), ("entropy T=1", "entropy_t1"),
          ("Self-BLEU T=low ↓", "self_bleu_tlow"), ("reward ρ", "reward_spearman"),
          ("held-out NLL", "heldout_nll")]
  lines = ["| method | " + " | ".join(c for c, _ in cols) + " | step time / MLE |",
           "|---" * (len(cols) + 2) + "|"]
  for name, r in results["methods"].items():
    cells = [_fmt(r["summary"][k]) for _, k in cols]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['step_time_over_mle']:.3f} |")
  if results["sweep"]:
    lines += ["", "| method | demonstrations | final held-out NLL | best held-out NLL | "
              "overfitting gap (final − best) | final train loss |", "|---" * 6 + "|"]
    for r in results["sweep"].values():
      lines.append(f"| {r['method']} | {r['size']} | {_fmt(r['final_heldout_nll'])} | "
                   f"{_fmt(r['best_heldout_nll'])} | {_fmt(r['overfit_gap'])} | "
                   f"{_fmt(r['final_train_loss'])} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir, probe_scores):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  methods = results["methods"]

  def one_axis_plot(filename, draw, xlabel, ylabel, title):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in methods.items():
      draw(ax, name, r)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, filename), dpi=120)
    plt.close(fig)

  def accuracy_vs_diversity(ax, name, r):
    (a, sa), (b, sb) = r["summary"]["accuracy_t1"], r["summary"]["self_bleu_t1"]
    ax.errorbar(b, a, xerr=sb, yerr=sa, fmt="o", capsize=3, label=name)

  def learning_curve(ax, name, r):
    ax.plot([c[0] for c in r["curve"]], [np.mean(c[1]) for c in r["curve"]], label=name)

  one_axis_plot("accuracy_vs_diversity.png", accuracy_vs_diversity,
                "Self-BLEU at T=1 (lower = more diverse)", "final-answer accuracy at T=1",
                "accuracy vs diversity (mean ± std over seeds)")
  one_axis_plot("learning_curves.png", learning_curve, "train step",
                "held-out NLL per token (mean over seeds)", "learning curves")

  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  iq = [n for n in methods if n.startswith("IQLearn")]
  best = max(iq, key=lambda n: methods[n]["summary"]["reward_spearman"][0]) if iq else None
  for ax, name in zip(axes, [n for n in (next(iter(methods)), best) if n], strict=False):
    rewards = methods[name]["per_seed"][0]["probe_rewards"]
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, len(probe_scores))
    ax.scatter(probe_scores + jitter, rewards, s=8, alpha=0.6)
    ax.set_title(f"{name}\nSpearman {methods[name]['per_seed'][0]['reward_spearman']:.2f}",
                 fontsize=8)
    ax.set_xlabel("checker score")
    ax.set_ylabel("extracted sequence reward")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "reward_vs_score.png"), dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  t0 = time.perf_counter()
  results = run(config, _WORKDIR.value)
  print(results_table(results))
  print(f"wrote {_WORKDIR.value}/results.md, results.json, *.png in "
        f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  app.run(main)
