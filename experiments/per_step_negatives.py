"""SFT vs rejection fine-tuning vs outcome DPO vs per-step DPO vs advantage-weighted steps on
arithmetic derivations, across synthetic-data sizes (see the config's docstring).

    python -m experiments.per_step_negatives --workdir=/tmp/per_step_negatives
    python -m experiments.per_step_negatives --workdir=/tmp/per_step_negatives --config.quick=True
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx

from experiments import study
from experiments.tasks import arithmetic
from irl_jax import losses, models
from irl_jax.data import char_tokenizer, lm_arrays
from irl_jax.models import sampling
from irl_jax.train import generation, lm, optim, per_step, registry
from irl_jax.train.compiled import make_train
from irl_jax.train.state import split_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METHODS = ("sft_more", "rft", "outcome_dpo", "step_dpo", "awr")
LABELS = {"sft": "SFT", "sft_more": "SFT continued (control: the same fine-tuning on the "
                                    "expert positives)",
          "rft": "RFT (self-generated positives)",
          "outcome_dpo": "outcome DPO (full negative)",
          "step_dpo": "per-step DPO (negative cut at its first pit)",
          "awr": "advantage-weighted steps"}
LM_KEYS = ("input_ids", "segment_ids", "positions", "loss_mask")


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  study.int_at_least(config, "min_operands", 2)
  if config.max_operands < config.min_operands:
    raise ValueError(f"config.max_operands ({config.max_operands!r}) is below "
                     f"config.min_operands ({config.min_operands!r}).")
  for field in ("seq_len", "max_new_tokens", "num_heldout", "hidden_size", "num_layers",
                "num_heads", "intermediate_size", "sft_steps", "sft_batch",
                "samples_per_question", "rollouts", "finetune_steps", "finetune_batch"):
    study.int_at_least(config, field, 1)
  study.int_at_least(config, "max_steps", config.max_operands)
  study.int_at_least(config, "num_questions", 2)
  study.increasing_ints(config, "data_sizes", 2, 1)
  study.increasing_ints(config, "sft_only_sizes", 2, 0)
  if config.sft_only_sizes and min(config.sft_only_sizes) <= max(config.data_sizes):
    raise ValueError("config.sft_only_sizes must all exceed the largest of "
                     f"config.data_sizes ({max(config.data_sizes)}).")
  if config.sft_batch > min(config.data_sizes):
    raise ValueError(f"config.sft_batch ({config.sft_batch}) exceeds the smallest of "
                     f"config.data_sizes ({min(config.data_sizes)}).")
  if config.finetune_batch > config.num_questions:
    raise ValueError(f"config.finetune_batch ({config.finetune_batch}) exceeds "
                     f"config.num_questions ({config.num_questions}).")
  if config.hidden_size % config.num_heads:
    raise ValueError(f"config.hidden_size ({config.hidden_size}) must be a multiple of "
                     f"config.num_heads ({config.num_heads}).")
  if config.q_estimate not in ("mean", "best_of_k"):
    raise ValueError(f"config.q_estimate must be 'mean' or 'best_of_k', got "
                     f"{config.q_estimate!r}.")
  for field in ("sft_learning_rate", "finetune_learning_rate", "dpo_beta", "awr_beta",
                "awr_max_weight"):
    study.finite_positive(config, field)


# --- data and models -------------------------------------------------------------------------


def make_problems(config):
  """`(pool, questions, heldout)`: expert demonstrations (the largest n; smaller n are its
  prefixes), the self-generation questions (prompts only: no expert answer is used for
  them) and held-out prompts; the held-out prompts appear in neither of the others."""
  difficulty = arithmetic.Difficulty(config.min_operands, config.max_operands, 1, "+")
  heldout = arithmetic.make_dataset(np.random.default_rng([config.data_seed, 1]),
                                    config.num_heldout, difficulty)
  held = {ex["prompt"] for ex in heldout}
  need = max((*config.data_sizes, *config.sft_only_sizes))
  rng = np.random.default_rng([config.data_seed, 0])
  pool = []
  while len(pool) < need:
    pool += [ex for ex in arithmetic.make_dataset(rng, need, difficulty)
             if ex["prompt"] not in held]
  rng = np.random.default_rng([config.data_seed, 2])
  questions = []
  while len(questions) < config.num_questions:
    questions += [ex["prompt"] for ex in arithmetic.make_dataset(rng, config.num_questions,
                                                                 difficulty)
                  if ex["prompt"] not in held]
  return pool[:need], questions[:config.num_questions], [ex["prompt"] for ex in heldout]


def model_config(config, vocab_size: int) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=config.hidden_size,
      num_layers=config.num_layers, num_heads=config.num_heads,
      num_kv_heads=config.num_heads, head_dim=config.hidden_size // config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=config.seq_len + config.max_new_tokens + 8)


class Sampler:
  """Responses of one model to prompt texts (BOS + characters, left-padded to a fixed
  width so that every call with the same row count reuses one compilation)."""

  def __init__(self, config, tokenizer, width: int):
    self.config, self.tokenizer, self.width = config, tokenizer, width

  def encode(self, texts):
    ids = np.zeros((len(texts), self.width), np.int32)
    mask = np.zeros((len(texts), self.width), bool)
    for i, t in enumerate(texts):
      row = [self.tokenizer.bos_token_id, *self.tokenizer.encode(t, add_special_tokens=False)]
      if len(row) > self.width:
        raise ValueError(f"prompt of {len(row)} tokens exceeds the sampler width {self.width}: "
                         f"{t!r}")
      ids[i, self.width - len(row):] = row
      mask[i, self.width - len(row):] = True
    return ids, mask

  def __call__(self, model, texts, key, *, num_samples: int, temperature: float,
               rows: int | None = None) -> list[str]:
    """`len(texts) * num_samples` responses (text i's samples contiguous). With `rows`, the
    batch is padded to that many prompts (fixed shapes), padding rows' outputs dropped."""
    n = len(texts)
    padded = list(texts) + [texts[0]] * ((rows or n) - n)
    ids, mask = self.encode(padded)
    out = sampling.generate(model, ids, mask, key, max_new_tokens=self.config.max_new_tokens,
                            temperature=temperature, num_samples=num_samples,
                            eos_id=self.tokenizer.eos_token_id,
                            pad_id=self.tokenizer.pad_token_id)
    tokens = np.asarray(out.tokens)[: n * num_samples]
    keep = np.asarray(out.response_mask)[: n * num_samples]
    return [generation.decode_masked(self.tokenizer, row, mk)
            for row, mk in zip(tokens, keep, strict=True)]


def accuracy(model, sampler, prompts, key) -> float:
  responses = sampler(model, prompts, key, num_samples=1, temperature=0.0)
  return float(np.mean([arithmetic.check(p, r).correct for p, r in
                        zip(prompts, responses, strict=True)]))


# --- self-generated pairs and step values --------------------------------------------------------


def build_pairs(config, model, sampler, tokenizer, prompts, key, demos) -> tuple[dict, dict]:
  """One seed's fine-tuning arrays `[Q, ...]` and counts, from its SFT model's own samples
  on the self-generation `prompts` (a question's pair needs a correct and an incorrect
  sample; RFT needs a correct one)."""
  q = config.num_questions
  g = config.samples_per_question
  k_gen, k_roll = jax.random.split(key)
  samples = sampler(model, prompts, k_gen, num_samples=g, temperature=1.0)
  graded = np.array([arithmetic.check(prompts[i // g], r).correct
                     for i, r in enumerate(samples)]).reshape(q, g)
  positives, negatives, has_neg, has_self = [], [], [], []
  for i in range(q):
    mine = samples[i * g:(i + 1) * g]
    good = [r for r, ok in zip(mine, graded[i], strict=True) if ok]
    # A usable negative has 1..max_steps steps and fits a training row (BOS, EOS).
    # A usable negative also has no empty step (its text is its steps joined by newlines),
    # so that its step indices and its tokens' step ids agree.
    bad = [r for r, ok in zip(mine, graded[i], strict=True) if not ok
           and 1 <= len(per_step.split_steps(r)) <= config.max_steps
           and "\n".join(per_step.split_steps(r)) == r
           and len(prompts[i]) + len(r) + 2 <= config.seq_len]
    good = [r for r in good if len(prompts[i]) + len(r) + 2 <= config.seq_len]
    # Rows without a sample of a kind hold a placeholder (the other kind's sample) that
    # the masks exclude from every loss.
    filler = (good or bad or ["#### 0"])[0]
    positives.append(good[0] if good else filler)
    has_self.append(bool(good))
    negatives.append(bad[0] if bad else filler)
    has_neg.append(bool(bad))
  has_neg = np.array(has_neg)
  # Step values of the real negatives: one batched rollout call on fixed-size batches.
  rows_cap = q * config.max_steps

  def rollout(texts, k):
    if len(texts) > rows_cap:
      raise ValueError(f"{len(texts)} rollout prompts exceed the capacity {rows_cap}.")
    outs = sampler(model, texts, k_roll, num_samples=k, temperature=1.0, rows=rows_cap)
    # A text is prompt + a response prefix; the prompt is its first line.
    return np.array([[arithmetic.check(t.split("\n", 1)[0] + "\n",
                                       t.split("\n", 1)[1] + outs[i * k + j]).correct
                      for j in range(k)] for i, t in enumerate(texts)], np.float32)

  idx = np.flatnonzero(has_neg)
  values = np.zeros((q, config.max_steps), np.float32)
  initial = np.zeros(q, np.float32)
  valid = np.zeros((q, config.max_steps), bool)
  if len(idx):
    v, i0, ok = per_step.monte_carlo_step_values(
        rollout, [prompts[i] for i in idx], [negatives[i] for i in idx], [0.0] * len(idx),
        k=config.rollouts, max_steps=config.max_steps, estimate=config.q_estimate)
    values[idx], initial[idx], valid[idx] = v, i0, ok
  adv = losses.step_advantages(values, initial_values=initial, where=valid)

  def arrays(responses):
    rows = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
    return {k: v for k, v in lm_arrays(rows, tokenizer, seq_len=config.seq_len).items()
            if k in LM_KEYS}

  has_self = np.array(has_self)
  demo_rows = [demos[i % len(demos)] for i in range(q)]      # the control's expert rows
  demo = {k: v for k, v in lm_arrays(demo_rows, tokenizer, seq_len=config.seq_len).items()
          if k in LM_KEYS}
  data = {"pos": arrays(positives), "neg": arrays(negatives), "demo": demo,
          "has_neg": has_neg & has_self, "has_self": has_self,
          "advantages": np.asarray(adv.advantages), "step_valid": valid,
          "first_pit": np.asarray(adv.first_pit)}
  pits = np.asarray(adv.first_pit)[has_neg]
  steps = valid[has_neg].sum(1)
  counts = {"sample_accuracy": float(graded.mean()), "questions_with_negative": int(has_neg.sum()),
            "questions_with_pair": int(np.sum(has_neg & has_self)),
            "questions_with_self_positive": int(np.sum(has_self)),
            "pit_before_last_step": float(np.mean(pits < steps - 1)) if len(pits) else 0.0,
            "initial_value": float(initial[has_neg].mean()) if has_neg.any() else 0.0,
            "pairs_with_zero_initial_value": int(np.sum(has_neg & has_self & (initial == 0)))}
  return data, counts


# --- fine-tuning ---------------------------------------------------------------------------------


def token_log_probs(model, arrays):
  """`(log-probs [B, T], where [B, T])` of an LM batch's targets."""
  stats, where = lm.batch_stats(model, arrays)
  return stats.log_probs, where


def method_loss(config, method, newline_id):
  """`loss(model, ref_model, batch) -> scalar` of one fine-tuning method."""

  def seq(model, arrays, where=None):
    lp, w = token_log_probs(model, arrays)
    w = w if where is None else where
    return jnp.sum(jnp.where(w, lp, 0), axis=1), lp, w

  def loss(model, ref_model, b):
    if method in ("rft", "sft_more"):
      rows, valid = (b["pos"], b["has_self"]) if method == "rft" else (b["demo"], None)
      lp, w = token_log_probs(model, rows)
      weight = w if valid is None else valid[:, None] & w
      return -jnp.sum(jnp.where(weight, lp, 0)) / jnp.maximum(jnp.sum(weight), 1)
    pair = b["has_neg"].astype(jnp.float32)
    if method in ("outcome_dpo", "step_dpo"):
      neg_where = lm.lm_targets(b["neg"]["loss_mask"])
      if method == "step_dpo":
        steps = lm.next_tokens(per_step.token_step_ids(b["neg"]["input_ids"],
                                                       b["neg"]["loss_mask"], newline_id))
        neg_where = losses.prefix_mask(neg_where, steps, b["first_pit"])
      c, _, _ = seq(model, b["pos"])
      r, _, _ = seq(model, b["neg"], neg_where)
      c_ref, _, _ = seq(ref_model, b["pos"])
      r_ref, _, _ = seq(ref_model, b["neg"], neg_where)
      per_pair = losses.dpo(c, r, jax.lax.stop_gradient(c_ref), jax.lax.stop_gradient(r_ref),
                            beta=config.dpo_beta)
      return jnp.sum(pair * per_pair) / jnp.maximum(jnp.sum(pair), 1)
    # Advantage-weighted steps: the negative's steps with their advantages, the positive's
    # steps with A = 0 (weight 1, i.e. MLE).
    steps = lm.next_tokens(per_step.token_step_ids(b["neg"]["input_ids"],
                                                   b["neg"]["loss_mask"], newline_id))
    lp_neg, w_neg = token_log_probs(model, b["neg"])
    step_lp = losses.step_log_probs(lp_neg, steps, where=w_neg, num_steps=config.max_steps)
    neg = losses.advantage_weighted_steps(step_lp, b["advantages"], where=b["step_valid"],
                                          beta=config.awr_beta, max_weight=config.awr_max_weight)
    pos, _, _ = seq(model, b["pos"])
    own = b["has_self"].astype(jnp.float32)
    tokens = jnp.sum(own[:, None] * lm.lm_targets(b["pos"]["loss_mask"])) + jnp.sum(
        pair[:, None] * lm.lm_targets(b["neg"]["loss_mask"]))
    return (jnp.sum(pair * neg) - jnp.sum(own * pos)) / jnp.maximum(tokens, 1)

  return loss


def make_finetune(config, model_def, method, newline_id):
  """`finetune(key, params0, data) -> (params, losses)`: pure, vmappable over seeds."""
  tx = optax.adam(config.finetune_learning_rate)
  loss = method_loss(config, method, newline_id)

  def finetune(key, params0, data):
    ref_model = model_def.merge(params0)
    q = data["has_neg"].shape[0]

    def step(carry, k):
      params, opt_state = carry
      rows = jax.random.choice(k, q, (config.finetune_batch,), replace=False)
      batch = jax.tree.map(lambda x: x[rows], data)
      value, grads = jax.value_and_grad(lambda p: loss(model_def.merge(p), ref_model, batch))(
          params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), value

    (params, _), values = jax.lax.scan(step, (params0, tx.init(params0)),
                                       jax.random.split(key, config.finetune_steps))
    return params, values

  return finetune


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  tokenizer = char_tokenizer(arithmetic.ALPHABET)
  newline_id = tokenizer.convert_tokens_to_ids("\n")
  pool, questions, heldout = make_problems(config)
  cfg = model_config(config, len(tokenizer))
  model_def, _ = split_model(nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))))
  sampler = Sampler(config, tokenizer, width=config.seq_len)
  seeds = config.num_seeds
  root = jax.random.key(config.seed)
  spec = registry.get("mle")
  sft_tx, _ = optim.make_optimizer(learning_rate=config.sft_learning_rate,
                                   warmup_steps=min(50, config.sft_steps // 10 + 1),
                                   total_steps=config.sft_steps, decay="cosine", clip_norm=1.0)
  finetunes = {m: jax.jit(jax.vmap(make_finetune(config, model_def, m, newline_id)))
               for m in METHODS}
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "sizes": {}, "sft_only": {}}
  sizes = list(config.data_sizes) + list(config.sft_only_sizes)
  for i, n in enumerate(sizes):
    t0 = time.perf_counter()
    demos = pool[:n]
    arrays = {k: v for k, v in lm_arrays(demos, tokenizer, seq_len=config.seq_len).items()
              if k in LM_KEYS}
    train = make_train(lambda k: split_model(models.Transformer(cfg, rngs=nnx.Rngs(k)))[1],
                       model_def, spec.build(spec.hyperparameters()), sft_tx, arrays,
                       steps=config.sft_steps, batch_size=config.sft_batch)
    k_sft, k_pairs, k_ft, k_eval = jax.random.split(jax.random.fold_in(root, i), 4)
    states, _ = jax.jit(jax.vmap(train))(jax.random.split(k_sft, seeds))
    params0 = states.params
    seed_params = [jax.tree.map(lambda x, s=s: x[s], params0) for s in range(seeds)]
    eval_keys = jax.random.split(k_eval, seeds)
    sft_acc = [accuracy(model_def.merge(p), sampler, heldout, eval_keys[s])
               for s, p in enumerate(seed_params)]
    row = {"sft": sft_acc, "sft_ci": study.interval(sft_acc)}
    if n not in config.data_sizes:
      results["sft_only"][str(n)] = row
      log(f"  n={n:>5}: SFT {study.fmt_pm(row['sft_ci'])} ({time.perf_counter() - t0:.0f} s)")
      continue
    t_sft = time.perf_counter() - t0
    pair_keys = jax.random.split(k_pairs, seeds)
    built = [build_pairs(config, model_def.merge(p), sampler, tokenizer, questions, pair_keys[s],
                         demos)
             for s, p in enumerate(seed_params)]
    data = jax.tree.map(lambda *x: jnp.stack(x), *[b[0] for b in built])
    row["counts"] = [b[1] for b in built]
    t_pairs = time.perf_counter() - t0 - t_sft
    for method in METHODS:
      tuned, values = finetunes[method](jax.random.split(k_ft, seeds), params0, data)
      values = np.asarray(values)
      if not np.all(np.isfinite(values)):
        raise FloatingPointError(f"n={n}, {method}: a non-finite fine-tuning loss.")
      acc = [accuracy(model_def.merge(jax.tree.map(lambda x, s=s: x[s], tuned)), sampler,
                      heldout, eval_keys[s]) for s in range(seeds)]
      row[method] = acc
      row[f"{method}_ci"] = study.interval(acc)
      row[f"{method}_loss"] = values[:, [0, -1]].tolist()
    row["seconds"] = {"sft_and_eval": t_sft, "pairs": t_pairs,
                      "finetune_and_eval": time.perf_counter() - t0 - t_sft - t_pairs}
    results["sizes"][str(n)] = row
    c = row["counts"]
    log(f"  n={n:>5}: " + ", ".join(f"{m} {study.fmt_pm(row[f'{m}_ci'])}"
                                    for m in ("sft", *METHODS))
        + f"; pairs {np.mean([x['questions_with_pair'] for x in c]):.0f}/"
          f"{config.num_questions}, pit before the last step "
          f"{np.mean([x['pit_before_last_step'] for x in c]):.2f} "
          f"({time.perf_counter() - t0:.0f} s: SFT {t_sft:.0f}, pairs {t_pairs:.0f})")
  results["total_seconds"] = time.perf_counter() - t_start
  results["multiples"] = multiples(results, config)
  results["verdicts"] = verdicts(results, config)
  return study.save(results, workdir, results_table(results, config),
                    lambda: plot_results(results, config, workdir))


# --- verdicts and outputs --------------------------------------------------------------------


def sft_curve(results, config):
  """`(n [K], mean SFT accuracy [K])` over every size SFT was trained at."""
  rows = {**results["sizes"], **results["sft_only"]}
  ns = sorted(int(n) for n in rows)
  return np.asarray(ns, float), np.asarray([np.mean(rows[str(n)]["sft"]) for n in ns])


def equivalent_data(n_grid, acc_grid, target: float):
  """The n at which the (monotone envelope of the) SFT curve reaches `target`, by
  log-linear interpolation; `inf` above the curve's largest value, and 0 below its value
  at the smallest n (SFT needs fewer examples than the grid shows)."""
  env = np.maximum.accumulate(acc_grid)
  if target > env[-1]:
    return math.inf
  if target < env[0]:
    return 0.0
  if target == env[0]:
    return float(n_grid[0])
  j = int(np.argmax(env >= target))
  lo, hi = env[j - 1], env[j]
  frac = 0.0 if hi == lo else (target - lo) / (hi - lo)
  return float(np.exp(np.log(n_grid[j - 1]) + frac * (np.log(n_grid[j]) - np.log(n_grid[j - 1]))))


def multiples(results, config) -> dict:
  n_grid, acc = sft_curve(results, config)
  out = {}
  for m in METHODS:
    out[m] = {n: equivalent_data(n_grid, acc, float(np.mean(r[m]))) / int(n)
              for n, r in results["sizes"].items()}
  return out


def _paired(results, a, b):
  """Per-seed difference a − b averaged over the data sizes."""
  rows = results["sizes"].values()
  return np.mean([np.asarray(r[a]) - np.asarray(r[b]) for r in rows], axis=0)


def _fmt_multiple(x, n_min: int, n: int):
  """A multiple; `inf` is beyond the SFT curve's top, 0 below its first point."""
  if math.isinf(x):
    return "above every SFT size"
  return f"<{n_min / n:.2f}" if x == 0 else f"{x:.2f}"


def verdicts(results, config) -> list[dict]:
  mult = results["multiples"]
  sizes = list(results["sizes"])

  n_min = int(sft_curve(results, config)[0][0])

  def mults(m):
    return ", ".join(f"n={n}: {_fmt_multiple(mult[m][n], n_min, int(n))}×" for n in sizes)

  rows = []
  for finding, a, b in (
      ("Per-step DPO (first-pit negatives, π_ref = π_SFT) beats SFT on the same positives",
       "step_dpo", "sft"),
      ("Rejection fine-tuning on self-generated positives beats SFT", "rft", "sft"),
      ("Per-step DPO beats outcome-level DPO (full negatives)", "step_dpo", "outcome_dpo")):
    ci = study.interval(_paired(results, a, b))
    extra = (f"; data-efficiency multiple of {LABELS[a]}: {mults(a)}" if b == "sft" else
             f"; outcome DPO − SFT: {study.fmt_ci(study.interval(_paired(results, b, 'sft')))}")
    rows.append({"finding": finding, "verdict": study.decide(ci),
                 "deciding": f"accuracy {a} − {b}, paired over seeds, mean over n ∈ "
                             f"{{{', '.join(sizes)}}}: {study.fmt_ci(ci)}{extra}"})
  rows[0]["deciding"] += (f"; advantage-weighted steps − SFT: "
                          f"{study.fmt_ci(study.interval(_paired(results, 'awr', 'sft')))}")
  control = study.fmt_ci(study.interval(_paired(results, "sft_more", "sft")))
  for r in rows[:2]:
    r["deciding"] += f"; control, SFT continued − SFT: {control}"
  return rows


def results_table(results, config=None) -> str:
  cfg = results["config"]
  sizes = list(results["sizes"])
  lines = ["## Per-step negatives on arithmetic derivations", "",
           f"Held-out accuracy (greedy, {cfg['num_heldout']} prompts), mean ± 95% interval over "
           f"{cfg['num_seeds']} seeds; every method fine-tunes the SFT model of its n for "
           f"{cfg['finetune_steps']} steps. CPU: {results['cpu']}.", "",
           "| method | " + " | ".join(f"n={n}" for n in sizes) + " | multiple vs SFT |",
           "|---|" + "---|" * len(sizes) + "---|"]
  for m in ("sft", *METHODS):
    n_min = min(int(k) for k in (*results["sizes"], *results["sft_only"]))
    mult = ("" if m == "sft" else ", ".join(
        _fmt_multiple(results["multiples"][m][n], n_min, int(n)) for n in sizes))
    lines.append(f"| {LABELS[m]} | " + " | ".join(
        study.fmt_pm(results["sizes"][n][f"{m}_ci"]) for n in sizes) + f" | {mult} |")
  if results["sft_only"]:
    lines += ["", "SFT alone at larger n: " + ", ".join(
        f"n={n}: {study.fmt_pm(r['sft_ci'])}" for n, r in results["sft_only"].items())]
  lines += ["", "Self-generated data per seed (mean over seeds): "]
  for n in sizes:
    c = results["sizes"][n]["counts"]
    negatives = np.mean([x["questions_with_negative"] for x in c])
    pairs = np.mean([x["questions_with_pair"] for x in c])
    lines.append(f"- n={n}: sample accuracy {np.mean([x['sample_accuracy'] for x in c]):.2f}, "
                 f"questions with a pair {pairs:.0f}, with a negative {negatives:.0f}"
                 f"/{cfg['num_questions']}, with a self-generated positive "
                 f"{np.mean([x['questions_with_self_positive'] for x in c]):.0f}, first pit "
                 f"before the final line {np.mean([x['pit_before_last_step'] for x in c]):.2f}, "
                 f"Q̂ from the prompt {np.mean([x['initial_value'] for x in c]):.2f}")
  lines += ["", f"Total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  fig, ax = plt.subplots(figsize=(6, 4))
  n_grid, _ = sft_curve(results, config)
  rows = {**results["sizes"], **results["sft_only"]}
  study.errorbars(ax, n_grid, [rows[str(int(n))]["sft_ci"] for n in n_grid], label=LABELS["sft"])
  sizes = [int(n) for n in results["sizes"]]
  for m in METHODS:
    study.errorbars(ax, sizes, [results["sizes"][str(n)][f"{m}_ci"] for n in sizes],
                    label=LABELS[m])
  ax.set_xscale("log")
  ax.set_xlabel("synthetic positives n")
  ax.set_ylabel("held-out accuracy")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "per_step_negatives.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/per_step_negatives.py",
                     "/tmp/per_step_negatives")
