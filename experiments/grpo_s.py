"""GRPO vs GRPO-S (dynamic reward scaling) on imbalanced prompt categories, each scored by its
own reward model (see the config's docstring; the scaling is partly a reconstruction).

    python -m experiments.grpo_s --workdir=/tmp/grpo_s
    python -m experiments.grpo_s --workdir=/tmp/grpo_s --config.quick=True
"""

from __future__ import annotations

import os
import time
import types

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from experiments import lm_study, study
from experiments.inverse_q_star import make_chains, sample_chain
from experiments.reward_recovery import (
  completion_log_probs,
  grpo_update,
  pair_arrays,
  sample_completions,
)
from irl_jax import losses, models
from irl_jax.train import registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PAD = 0
METHODS = ("grpo", "grpo_s")
LABELS = {"grpo": "GRPO", "grpo_s": "GRPO-S (α = α_D·α_M)"}


def first_token(config) -> int:
  """Content tokens follow PAD and one tag per category."""
  return 1 + config.num_categories


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  study.int_at_least(config, "num_categories", 2)
  weights = tuple(config.category_weights)
  if len(weights) != config.num_categories or any(
      isinstance(w, bool) or not isinstance(w, int | float) or not w > 0 for w in weights):
    raise ValueError(f"config.category_weights must hold {config.num_categories} positive "
                     f"numbers (one per category), got {weights!r}.")
  lm_study.check_pretraining(config)
  for field in ("bad_per_category", "prompt_len", "completion_len", "rm_steps", "rm_batch",
                "rl_updates", "rl_prompts", "eval_prompts", "eval_samples"):
    study.int_at_least(config, field, 1)
  for field in ("group_size", "num_pairs", "train_prompts"):
    study.int_at_least(config, field, 2)
  if config.num_categories * config.bad_per_category > config.num_tokens - 2:
    raise ValueError(f"config.bad_per_category ({config.bad_per_category}) × "
                     f"config.num_categories ({config.num_categories}) must leave at least two "
                     f"tokens of config.num_tokens ({config.num_tokens}) that no checker "
                     "penalises.")
  counts = pair_counts(config)
  if min(counts) < 1:
    raise ValueError(f"config.num_pairs ({config.num_pairs}) leaves a category without a "
                     f"preference pair (shares {counts}).")
  if config.rm_batch > max(counts):
    raise ValueError(f"config.rm_batch ({config.rm_batch}) exceeds the largest category's "
                     f"{max(counts)} pairs.")
  study.in_open_unit(config, "bad_mass")
  for field in ("concentration", "rm_learning_rate", "rl_learning_rate"):
    study.finite_positive(config, field)
  if isinstance(config.kl_coef, bool) or not config.kl_coef >= 0:
    raise ValueError(f"config.kl_coef must be >= 0, got {config.kl_coef!r}.")


def category_probs(config) -> np.ndarray:
  w = np.asarray(config.category_weights, np.float64)
  return w / w.sum()


def pair_counts(config) -> list[int]:
  """Preference pairs per category, in the categories' proportion."""
  return [round(float(config.num_pairs * p)) for p in category_probs(config)]


# --- the world ---------------------------------------------------------------------------------


def continue_chain(rng, matrix, last, length: int) -> np.ndarray:
  """`[len(last), length]` content-token indices continuing from the indices `last`."""
  out = np.zeros((len(last), length), np.int64)
  prev = np.asarray(last, np.int64) + 1
  for t in range(length):
    cum = np.cumsum(matrix[prev], axis=1)
    out[:, t] = np.minimum((rng.random((len(last), 1)) > cum).sum(1), matrix.shape[1] - 1)
    prev = out[:, t] + 1
  return out


def make_world(config, rng: np.random.Generator) -> dict:
  """One seed's world: the tagged LM corpus, the imbalanced training prompts with their
  categories and clean demonstrations, balanced held-out prompts, the pair prompts, and the
  checkers' weights `[C, vocab]`."""
  c_, n, bpc = config.num_categories, config.num_tokens, config.bad_per_category
  first = first_token(config)
  chain = types.SimpleNamespace(num_tokens=n, num_bad=c_ * bpc, bad_mass=config.bad_mass,
                                concentration=config.concentration)
  mixed, _ = make_chains(chain, rng)
  bad = [np.arange(n - c_ * bpc + c * bpc, n - c_ * bpc + (c + 1) * bpc) for c in range(c_)]
  weights = np.zeros((c_, first + n), np.float32)
  clean = []
  for c in range(c_):
    weights[c, first + bad[c]] = rng.uniform(0.5, 1.5, bpc)
    m = mixed.copy()
    m[:, bad[c]] = 0
    clean.append(m / m.sum(1, keepdims=True))
  probs = category_probs(config)
  p, length = config.prompt_len, config.prompt_len + config.completion_len

  def prompts(cats):
    prefix = sample_chain(rng, mixed, len(cats), p)
    return np.concatenate([1 + np.asarray(cats)[:, None], prefix + first], 1).astype(np.int32)

  tags = rng.choice(c_, config.corpus_size, p=probs)
  seqs = sample_chain(rng, mixed, config.corpus_size, length) + first
  ids = np.concatenate([1 + tags[:, None], seqs], axis=1).astype(np.int32)
  t = ids.shape[1]
  train_cats = rng.choice(c_, config.train_prompts, p=probs)
  train = prompts(train_cats)
  demos = np.zeros((config.train_prompts, config.completion_len), np.int32)
  for c in range(c_):
    rows = np.flatnonzero(train_cats == c)
    demos[rows] = continue_chain(rng, clean[c], train[rows, -1] - first,
                                 config.completion_len) + first
  eval_cats = np.repeat(np.arange(c_), config.eval_prompts)
  pair_cats = np.concatenate([np.full(k, c) for c, k in enumerate(pair_counts(config))])
  return {"lm": {"input_ids": ids, "segment_ids": np.ones_like(ids),
                 "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape).copy(),
                 "loss_mask": np.concatenate([np.zeros((len(ids), 1), np.int32),
                                              np.ones((len(ids), t - 1), np.int32)], axis=1)},
          "train_prompts": train, "train_categories": train_cats.astype(np.int32),
          "demos": demos, "eval_prompts": prompts(eval_cats),
          "eval_categories": eval_cats.astype(np.int32), "pair_prompts": prompts(pair_cats),
          "pair_categories": pair_cats, "weights": weights}


def model_config(config) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="llama", vocab_size=first_token(config) + config.num_tokens,
      hidden_size=config.hidden_size, num_layers=config.num_layers,
      num_heads=config.num_heads, num_kv_heads=config.num_heads,
      head_dim=config.hidden_size // config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=1 + config.prompt_len + config.completion_len + 8)


def category_pairs(config, world, first_c, second_c, rng) -> dict:
  """Per-category preference arrays `[C, n_max, 2, T]`: each pair of base completions is
  ordered by a Bradley–Terry draw on its category's true reward; a category with fewer
  than `n_max` pairs has them repeated in order to fill its rows (fewer distinct pairs, the
  same number of steps)."""
  cats, prompts = world["pair_categories"], world["pair_prompts"]
  w = world["weights"]
  r1 = -w[cats[:, None], first_c].sum(-1)
  r2 = -w[cats[:, None], second_c].sum(-1)
  first_wins = rng.random(len(cats)) < 1 / (1 + np.exp(-(r1 - r2)))
  chosen = np.where(first_wins[:, None], first_c, second_c)
  rejected = np.where(first_wins[:, None], second_c, first_c)
  n_max = max(pair_counts(config))
  out = []
  for c in range(config.num_categories):
    rows = np.flatnonzero(cats == c)
    rows = np.resize(rows, n_max)
    out.append(pair_arrays(prompts[rows], chosen[rows], rejected[rows]))
  return {k: np.stack([o[k] for o in out]) for k in out[0]}


# --- policy optimisation ----------------------------------------------------------------------


def embed(model, ids, start: int):
  """`[N, E]` mean final hidden state over positions `start:` (the completion)."""
  h = model(ids, attention_mask=jnp.ones_like(ids, bool), return_hidden=True)
  return jnp.mean(h[:, start:].astype(jnp.float32), axis=1)


def make_rl(config, model_def, rm_def):
  """`rl(key, params0, rm_params [C], prompts, categories, demos, weights, scaled)`: GRPO
  (`scaled` False) or GRPO-S from `params0` (also the frozen reference and the embedder),
  each sample rewarded by its category's reward model; pure, vmappable."""
  tx = optax.adam(config.rl_learning_rate)
  b, g, c_ = config.rl_prompts, config.group_size, config.num_categories
  start = 1 + config.prompt_len

  def rl(key, params0, rm_params, prompts, categories, demos, weights, scaled):
    base = model_def.merge(params0)

    def rewards(ids):                                 # [C, N]: every category's model
      return jax.vmap(lambda p: rm_def.merge(p)(ids, attention_mask=jnp.ones_like(ids, bool))
                      )(rm_params)

    def step(carry, _):
      params, opt_state, key = carry
      key, k_rows, k_sample = jax.random.split(key, 3)
      rows = jax.random.randint(k_rows, (b,), 0, prompts.shape[0])
      cats = categories[rows]
      tokens = sample_completions(model_def.merge(params), prompts[rows], k_sample, config, g)
      full = jnp.repeat(prompts[rows], g, axis=0)
      cats_g = jnp.repeat(cats, g)
      ids = jnp.concatenate([full, tokens], axis=1)
      reward = rewards(ids)[cats_g, jnp.arange(b * g)]
      advantages = losses.grpo_advantages(reward, group_size=g)
      demo_ids = jnp.concatenate([prompts[rows], demos[rows]], axis=1)
      similarity = losses.demo_policy_similarity(
          embed(base, demo_ids, start)[:, None], embed(base, ids, start).reshape(b, g, -1),
          demo_where=jnp.ones((b, 1), bool), policy_where=jnp.ones((b, g), bool))
      gaps = rewards(demo_ids)[cats, jnp.arange(b)] - reward.reshape(b, g).mean(1)
      alpha = losses.dynamic_reward_scale(similarity, jnp.maximum(gaps, 0.0), cats,
                                          num_categories=c_)
      advantages = jnp.where(scaled, advantages * jnp.repeat(alpha, g), advantages)
      ref = jax.lax.stop_gradient(completion_log_probs(base, full, tokens))
      params, opt_state, loss, lp = grpo_update(model_def, tx, params, opt_state, full, tokens,
                                                ref, advantages, config.kl_coef)
      gold = -jnp.sum(weights[cats_g[:, None], tokens], axis=-1)
      onehot = jax.nn.one_hot(cats_g, c_)
      count = onehot.sum(0)
      return (params, opt_state, key), {
          "true_reward": (onehot * gold[:, None]).sum(0) / jnp.maximum(count, 1),
          "count": count, "alpha": (jax.nn.one_hot(cats, c_) * alpha[:, None]).sum(0)
          / jnp.maximum(jax.nn.one_hot(cats, c_).sum(0), 1),
          "kl": jnp.mean(jnp.sum(lp - ref, axis=1)), "finite": jnp.isfinite(loss)}

    (params, _, _), log = jax.lax.scan(step, (params0, tx.init(params0), key), None,
                                       length=config.rl_updates)
    return params, log

  return rl


def category_true_reward(config, model_def, params, prompts, categories, weights, key):
  """`[C]` mean true reward of `eval_samples` samples per held-out prompt, per category."""
  tokens = sample_completions(model_def.merge(params), prompts, key, config,
                              config.eval_samples)
  cats = jnp.repeat(categories, config.eval_samples)
  gold = -jnp.sum(weights[cats[:, None], tokens], axis=-1)
  onehot = jax.nn.one_hot(cats, config.num_categories)
  return (onehot * gold[:, None]).sum(0) / onehot.sum(0)


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  k_pre, k_pairs, k_rm, k_rl, k_eval = jax.random.split(jax.random.key(config.seed), 5)
  s_, c_ = config.num_seeds, config.num_categories
  rngs = [np.random.default_rng([config.seed, s]) for s in range(s_)]
  worlds = [make_world(config, rng) for rng in rngs]
  stack = lambda key: jnp.stack([jnp.asarray(w[key]) for w in worlds])
  lm_data = {k: jnp.stack([jnp.asarray(w["lm"][k]) for w in worlds]) for k in worlds[0]["lm"]}

  cfg = model_config(config)
  model_def, rm_def, _ = lm_study.model_defs(cfg)
  t0 = time.perf_counter()
  base, pre_loss = lm_study.pretrain(config, cfg, model_def, jax.random.split(k_pre, s_),
                                     lm_data)
  timings = {"pretrain": time.perf_counter() - t0}
  log(f"  pretrained {s_} base policies in {timings['pretrain']:.0f} s: final loss "
      f"{pre_loss[:, -50:].mean():.3f}")

  # Category reward models on Bradley–Terry-labelled pairs of base completions.
  sample2 = jax.jit(jax.vmap(lambda p, x, k: sample_completions(model_def.merge(p), x, k,
                                                                 config, 2)))
  two = np.asarray(sample2(base, stack("pair_prompts"), jax.random.split(k_pairs, s_)))
  pairs = [category_pairs(config, w, two[s, 0::2], two[s, 1::2], rngs[s])
           for s, w in enumerate(worlds)]
  pairs = {k: jnp.stack([jnp.asarray(p[k]) for p in pairs]) for k in pairs[0]}  # [S, C, ...]
  bt = registry.get("bradley_terry")

  def fit(key, backbone, arrays):
    params, log_ = lm_study.fit_reward_model(
        cfg, rm_def, bt.build(bt.hyperparameters()), optax.adam(config.rm_learning_rate), key,
        backbone, arrays, steps=config.rm_steps, batch_size=config.rm_batch)
    return params, log_["train"]["train/accuracy"]

  t0 = time.perf_counter()
  rep = lambda x: jnp.repeat(x[:, None], c_, axis=1)
  rm_params, rm_acc = jax.jit(jax.vmap(jax.vmap(fit)))(
      jax.random.split(k_rm, (s_, c_)), jax.tree.map(rep, base), pairs)
  rm_acc = np.asarray(rm_acc)[:, :, -max(1, config.rm_steps // 10):].mean(-1)     # [S, C]
  timings["reward_models"] = time.perf_counter() - t0
  log(f"  {s_} × {c_} category reward models in {timings['reward_models']:.0f} s: training "
      f"accuracy by category {_fmt(rm_acc.mean(0))}")

  rl = jax.jit(jax.vmap(make_rl(config, model_def, rm_def),
                        in_axes=(0, 0, 0, 0, 0, 0, 0, None)))
  evaluate = jax.jit(jax.vmap(lambda p, x, c, w, k: category_true_reward(
      config, model_def, p, x, c, w, k)))
  eval_args = (stack("eval_prompts"), stack("eval_categories"), stack("weights"),
               jax.random.split(k_eval, s_))             # the same keys for every policy
  reached = {"base": np.asarray(evaluate(base, *eval_args))}
  rl_keys = jax.random.split(k_rl, s_)                  # the same sampling keys for both
  methods = {}
  for method in METHODS:
    t0 = time.perf_counter()
    params, lg = rl(rl_keys, base, rm_params, stack("train_prompts"),
                    stack("train_categories"), stack("demos"), stack("weights"),
                    method == "grpo_s")
    lg = jax.tree.map(np.asarray, lg)
    if not lg["finite"].all():
      raise FloatingPointError(f"{LABELS[method]}: a non-finite loss.")
    reached[method] = np.asarray(evaluate(params, *eval_args))                  # [S, C]
    methods[method] = {"label": LABELS[method], "seconds": time.perf_counter() - t0,
                       "true_reward": lg["true_reward"].tolist(), "count": lg["count"].tolist(),
                       "alpha": lg["alpha"].tolist(), "kl": lg["kl"].tolist()}
    log(f"  {LABELS[method]:22s} ({methods[method]['seconds']:.0f} s): held-out true reward "
        f"by category {_fmt(reached[method].mean(0))}")
  log(f"  base policy: {_fmt(reached['base'].mean(0))}")

  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "timings": timings,
             "pretrain_final_loss": pre_loss[:, -50:].mean(axis=1).tolist(),
             "pair_counts": pair_counts(config), "rm_train_accuracy": rm_acc.tolist(),
             "train_category_share": np.mean(
                 [np.bincount(w["train_categories"], minlength=c_) / config.train_prompts
                  for w in worlds], axis=0).tolist(),
             "methods": methods, "reached": {k: v.tolist() for k, v in reached.items()}}
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results)
  return study.save(results, workdir, results_table(results),
                    lambda: plot_results(results, workdir))


def _fmt(values) -> str:
  return "[" + ", ".join(f"{float(v):.3f}" for v in values) + "]"


# --- verdicts and outputs ----------------------------------------------------------------------


def verdicts(results) -> list[dict]:
  reached = {k: np.asarray(v) for k, v in results["reached"].items()}
  diff = reached["grpo_s"] - reached["grpo"]                                   # [S, C]
  cis = [study.interval(diff[:, c]) for c in range(diff.shape[1])]
  weights = results["config"]["category_weights"]
  tail = int(np.argmin(weights))                                     # the rarest category
  others = "; ".join(f"category {c} (share {weights[c]}): {study.fmt_ci(cis[c])}"
                     for c in range(len(cis)) if c != tail)
  return [{"finding": "GRPO-S (category reward models, advantages scaled by data hardness and "
                      "model responsiveness) raises the tail category's true reward over GRPO",
           "verdict": study.decide(cis[tail]),
           "deciding": f"held-out true reward of the rarest category, GRPO-S − GRPO, paired: "
                       f"{study.fmt_ci(cis[tail])}; {others}"}]


def results_table(results, config=None) -> str:
  del config
  cfg = results["config"]
  c_ = cfg["num_categories"]
  lines = [f"## GRPO vs GRPO-S on imbalanced categories ({cfg['num_seeds']} seeds, "
           f"{cfg['rl_updates']} updates)", "",
           f"Category frequencies {tuple(cfg['category_weights'])}; preference pairs per "
           f"category {results['pair_counts']}; category reward models' training accuracy "
           f"{_fmt(np.mean(results['rm_train_accuracy'], 0))}. Held-out true "
           f"reward per category ({cfg['eval_prompts']} prompts × {cfg['eval_samples']} "
           f"samples), mean ± 95% interval over seeds. CPU: {results['cpu']}.", "",
           "| policy | " + " | ".join(f"category {c}" for c in range(c_)) + " |",
           "|---|" + "---|" * c_]
  for name, v in results["reached"].items():
    label = LABELS.get(name, "base policy")
    v = np.asarray(v)
    lines.append(f"| {label} | " + " | ".join(study.fmt_pm(study.interval(v[:, c]))
                                              for c in range(c_)) + " |")
  m = results["methods"]["grpo_s"]
  alpha, seen = np.asarray(m["alpha"]), np.asarray(m["count"]) > 0
  lines += ["", "GRPO-S's α over the updates where a category has prompts: mean "
            + ", ".join(f"{alpha[..., c][seen[..., c]].mean():.3f}" for c in range(c_))
            + "; fraction of those updates with α = 0 on all its prompts (no reward gap left) "
            + ", ".join(f"{np.mean(alpha[..., c][seen[..., c]] == 0):.3f}" for c in range(c_))
            + " (categories 0 to " + str(c_ - 1) + ")."]
  t = results["timings"]
  lines += ["", f"Pretraining {t['pretrain']:.0f} s, reward models {t['reward_models']:.0f} s, "
            + ", ".join(f"{m['label']} {m['seconds']:.0f} s" for m in results["methods"].values())
            + f"; total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  c_ = results["config"]["num_categories"]
  fig, axes = plt.subplots(1, c_ + 1, figsize=(4 * (c_ + 1), 3.6))
  for m in results["methods"].values():
    r = np.asarray(m["true_reward"])                                        # [S, U, C]
    n = np.asarray(m["count"])
    for c in range(c_):
      # Mean over seeds of the batch's per-category reward, updates without the category left out.
      seen = n[:, :, c] > 0
      mean = np.where(seen, r[:, :, c], 0).sum(0) / np.maximum(seen.sum(0), 1)
      axes[c].plot(np.arange(1, r.shape[1] + 1), np.where(seen.any(0), mean, np.nan),
                   label=m["label"], alpha=0.8)
      axes[c].set_title(f"category {c} (weight {results['config']['category_weights'][c]})")
      axes[c].set_xlabel("update")
    alpha = np.asarray(m["alpha"])
    if m["label"] == LABELS["grpo_s"]:
      for c in range(c_):
        seen = n[:, :, c] > 0
        mean = np.where(seen, alpha[:, :, c], 0).sum(0) / np.maximum(seen.sum(0), 1)
        axes[-1].plot(np.arange(1, alpha.shape[1] + 1), np.where(seen.any(0), mean, np.nan),
                      label=f"category {c}")
  axes[0].set_ylabel("true reward of the batch")
  axes[0].legend(fontsize=7)
  axes[-1].set_title("GRPO-S: mean α of a category's prompts")
  axes[-1].set_xlabel("update")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "grpo_s.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/grpo_s.py", "/tmp/grpo_s")
