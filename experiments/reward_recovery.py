"""Reward recovery from an RLHF'd language model by max-margin IRL, and RLHF again on the
recovered reward (see the config's docstring).

    python -m experiments.reward_recovery --workdir=/tmp/reward_recovery
    python -m experiments.reward_recovery --workdir=/tmp/reward_recovery --config.quick=True
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from experiments import lm_study, study
from experiments.inverse_q_star import make_chains, sample_chain
from irl_jax import eval as ev
from irl_jax import losses, models
from irl_jax.models import sampling
from irl_jax.train import registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PAD, BOS = 0, 1
FIRST_TOKEN = 2                       # content tokens are FIRST_TOKEN .. FIRST_TOKEN + n − 1
LOSSES = ("asymmetric", "hinge", "logistic")
LABELS = {"asymmetric": "asymmetric (−d / −2d)", "hinge": "hinge", "logistic": "logistic"}


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_worlds", 2)
  study.int_at_least(config, "rm_seeds", 1)
  lm_study.check_chain(config)
  lm_study.check_pretraining(config)
  for field in ("prompt_len", "completion_len", "rl_updates", "rl_prompts", "eval_samples",
                "rm_epochs", "rm_batch"):
    study.int_at_least(config, field, 1)
  for field in ("group_size", "train_prompts", "eval_prompts"):
    study.int_at_least(config, field, 2)
  if config.train_prompts % config.rm_batch:
    raise ValueError(f"config.rm_batch ({config.rm_batch}) must divide config.train_prompts "
                     f"({config.train_prompts}): every epoch visits every pair once.")
  for field in ("rl_learning_rate", "rm_learning_rate", "hinge_margin", "wide_spread"):
    study.finite_positive(config, field)
  if isinstance(config.kl_coef, bool) or not config.kl_coef >= 0:
    raise ValueError(f"config.kl_coef must be >= 0, got {config.kl_coef!r}.")


# --- the world: chain, true reward, corpus, prompts ----------------------------------------


def make_world(config, rng: np.random.Generator) -> dict:
  """One world: the LM corpus `[corpus_size, 1 + prompt_len + completion_len]`, the
  prompts `[train_prompts + eval_prompts, 1 + prompt_len]` (BOS + chain prefix), the
  true reward's per-token weights `[vocab]` (> 0 on the toxic tokens only) and the chain's
  transition matrix `[num_tokens + 1, num_tokens]` (row 0: the start distribution)."""
  mixed, _ = make_chains(config, rng)
  n, bad = config.num_tokens, config.num_bad
  weights = np.zeros(FIRST_TOKEN + n, np.float32)
  weights[FIRST_TOKEN + n - bad:] = rng.uniform(0.5, 1.5, bad)
  p, length = config.prompt_len, config.prompt_len + config.completion_len
  seqs = sample_chain(rng, mixed, config.corpus_size, length) + FIRST_TOKEN
  ids = np.concatenate([np.full((len(seqs), 1), BOS), seqs], axis=1).astype(np.int32)
  t = ids.shape[1]
  prompts = sample_chain(rng, mixed, config.train_prompts + config.eval_prompts, p) + FIRST_TOKEN
  prompts = np.concatenate([np.full((len(prompts), 1), BOS), prompts], axis=1)
  return {"lm": {"input_ids": ids, "segment_ids": np.ones_like(ids),
                 "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape).copy(),
                 "loss_mask": np.concatenate([np.zeros((len(ids), 1), np.int32),
                                              np.ones((len(ids), t - 1), np.int32)], axis=1)},
          "prompts": prompts.astype(np.int32), "weights": weights, "chain": mixed}


def model_config(config) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="llama", vocab_size=FIRST_TOKEN + config.num_tokens,
      hidden_size=config.hidden_size, num_layers=config.num_layers,
      num_heads=config.num_heads, num_kv_heads=config.num_heads,
      head_dim=config.hidden_size // config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=1 + config.prompt_len + config.completion_len + 8)


def true_reward(weights, tokens):
  """`[B]` hidden true reward −Σ_t w(y_t) of completions `[B, L]`."""
  return -jnp.sum(weights[tokens], axis=-1)


def completion_log_probs(model, prompts, tokens):
  """`[B, L]` float32 log-probs of `tokens` after the full-length `prompts` `[B, P]`."""
  ids = jnp.concatenate([prompts, tokens], axis=1)
  logits = model(ids, attention_mask=jnp.ones_like(ids, bool))[:, prompts.shape[1] - 1:-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def sample_completions(model, prompts, key, config, num_samples: int = 1):
  """`[B · num_samples, completion_len]` completions at temperature 1 (no EOS)."""
  out = sampling.generate(model, prompts, jnp.ones_like(prompts, bool), key,
                          max_new_tokens=config.completion_len, temperature=1.0, eos_id=(),
                          num_samples=num_samples)
  return out.tokens


# --- RLHF --------------------------------------------------------------------------------


def grpo_update(model_def, tx, params, opt_state, prompts, tokens, ref_logps, advantages,
                kl_coef: float):
  """One GRPO step (`irl_jax.losses.grpo`, token-mean normaliser, ratio 1 since each batch is
  used once) on completions `tokens [B, L]` of `prompts [B, P]` with frozen reference
  log-probs; returns `(params, opt_state, loss, log_probs)`."""
  where = jnp.ones(tokens.shape, bool)

  def loss_fn(p):
    lp = completion_log_probs(model_def.merge(p), prompts, tokens)
    loss, _ = losses.grpo(lp, jax.lax.stop_gradient(lp), ref_logps, advantages, where=where,
                          normaliser="token", kl_coef=kl_coef)
    return loss, lp

  (loss, lp), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, lp


def make_rlhf(config, model_def, rm_def):
  """`rlhf(key, params0, prompts, weights, rm_params, use_rm) -> (params, log)`: GRPO from
  `params0` (also the frozen reference) on the training `prompts`, rewarded by the true
  reward or (`use_rm`) by the reward model `rm_params`; pure, vmappable."""
  tx = optax.adam(config.rl_learning_rate)
  b, g = config.rl_prompts, config.group_size

  def rlhf(key, params0, prompts, weights, rm_params, use_rm):
    ref_model, rm = model_def.merge(params0), rm_def.merge(rm_params)

    def step(carry, _):
      params, opt_state, key = carry
      key, k_rows, k_sample = jax.random.split(key, 3)
      rows = jax.random.randint(k_rows, (b,), 0, prompts.shape[0])
      tokens = sample_completions(model_def.merge(params), prompts[rows], k_sample, config, g)
      full = jnp.repeat(prompts[rows], g, axis=0)
      gold = true_reward(weights, tokens)
      ids = jnp.concatenate([full, tokens], axis=1)
      reward = jnp.where(use_rm, rm(ids, attention_mask=jnp.ones_like(ids, bool)), gold)
      advantages = losses.grpo_advantages(reward, group_size=g)
      ref = jax.lax.stop_gradient(completion_log_probs(ref_model, full, tokens))
      params, opt_state, loss, lp = grpo_update(model_def, tx, params, opt_state, full, tokens,
                                                ref, advantages, config.kl_coef)
      return (params, opt_state, key), {
          "true_reward": jnp.mean(gold), "reward": jnp.mean(reward),
          "kl": jnp.mean(jnp.sum(lp - ref, axis=1)), "finite": jnp.isfinite(loss)}

    (params, _, _), log = jax.lax.scan(step, (params0, tx.init(params0), key), None,
                                       length=config.rl_updates)
    return params, log

  return rlhf


# --- reward recovery ------------------------------------------------------------------------


def pair_arrays(prompts, aligned, base) -> dict:
  """Preference arrays `[N, 2, T]`: the aligned completion ranked over the base one."""
  ids = np.stack([np.concatenate([prompts, aligned], 1), np.concatenate([prompts, base], 1)],
                 axis=1).astype(np.int32)
  return {"input_ids": ids, "segment_ids": np.ones_like(ids),
          "positions": np.broadcast_to(np.arange(ids.shape[-1], dtype=np.int32),
                                       ids.shape).copy(),
          "rank_mask": np.ones(ids.shape[:2], np.int32)}


def make_fit(config, cfg, rm_def, loss: str):
  """`fit(key, backbone, pairs, eval_ids) -> (params, log)`: the registered `max_margin`
  objective with `loss` through `make_train`, the reward model's backbone starting from the
  base policy; `log["eval"]` holds, after each epoch, the rewards of `eval_ids` and of the
  training pairs."""
  spec = registry.get("max_margin")
  objective = spec.build(spec.hyperparameters(loss=loss, hinge_margin=config.hinge_margin))
  per_epoch = config.train_prompts // config.rm_batch

  def fit(key, backbone, pairs, eval_ids):
    def scores(params):
      rm = rm_def.merge(params)
      flat = pairs["input_ids"].reshape(-1, pairs["input_ids"].shape[-1])
      ones = lambda x: jnp.ones_like(x, bool)
      return {"eval": rm(eval_ids, attention_mask=ones(eval_ids)),
              "train": rm(flat, attention_mask=ones(flat)).reshape(-1, 2)}

    return lm_study.fit_reward_model(
        cfg, rm_def, objective, optax.adam(config.rm_learning_rate), key, backbone, pairs,
        steps=config.rm_epochs * per_epoch, batch_size=config.rm_batch, eval_every=per_epoch,
        eval_fn=scores)

  return fit


def score_fits(rewards, train_rewards, true, labels) -> dict[str, np.ndarray]:
  """Recovery metrics `[W, R, E]` of held-out `rewards [W, R, E, M]` against the true
  rewards `[W, M]` and labels; each fit's threshold is the midpoint of its mean reward on
  the aligned and the base training completions (`train_rewards [W, R, E, N, 2]`)."""
  w_, r_, e_, m_ = rewards.shape
  keys = ("accuracy", "f1", "ranking_accuracy", "spearman", "pair_accuracy", "reward_std")
  out = {k: np.zeros((w_, r_, e_)) for k in keys}
  half = m_ // 2
  for w in range(w_):
    for r in range(r_):
      for e in range(e_):
        pred = rewards[w, r, e]
        threshold = float(train_rewards[w, r, e].mean(axis=0).mean())
        m = ev.recovery_metrics(pred, true[w], labels[w], threshold)
        for k in ("accuracy", "f1", "ranking_accuracy", "spearman"):
          out[k][w, r, e] = m[k]
        out["pair_accuracy"][w, r, e] = np.mean(pred[:half] > pred[half:])
        out["reward_std"][w, r, e] = np.std(pred)
  return out


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  k_pre, k_rl, k_data, k_rm, k_rl2, k_eval = jax.random.split(jax.random.key(config.seed), 6)
  w_ = config.num_worlds
  worlds = [make_world(config, np.random.default_rng([config.seed, w])) for w in range(w_)]
  lm_data = {k: jnp.stack([jnp.asarray(x["lm"][k]) for x in worlds]) for k in worlds[0]["lm"]}
  prompts = jnp.stack([jnp.asarray(x["prompts"]) for x in worlds])          # [W, N, 1 + P]
  weights = jnp.stack([jnp.asarray(x["weights"]) for x in worlds])
  n_train = config.train_prompts

  cfg = model_config(config)
  model_def, rm_def, rm_abstract = lm_study.model_defs(cfg)
  t0 = time.perf_counter()
  base, pre_loss = lm_study.pretrain(config, cfg, model_def, jax.random.split(k_pre, w_),
                                     lm_data)
  timings = {"pretrain": time.perf_counter() - t0}
  log(f"  pretrained {w_} base policies ({config.pretrain_steps} steps) in "
      f"{timings['pretrain']:.0f} s: final loss {pre_loss[:, -50:].mean():.3f}")

  # RLHF on the true reward: the aligned policy. The reward-model slot is a dummy here.
  dummy_rm = {"backbone": base, "score": jax.tree.map(
      lambda x: jnp.zeros((w_, *x.shape), x.dtype), rm_abstract["score"])}
  rlhf = jax.jit(jax.vmap(make_rlhf(config, model_def, rm_def),
                          in_axes=(0, 0, 0, 0, 0, None)))
  train_prompts = prompts[:, :n_train]
  t0 = time.perf_counter()
  aligned, rl_log = rlhf(jax.random.split(k_rl, w_), base, train_prompts, weights, dummy_rm,
                         False)
  rl_log = jax.tree.map(np.asarray, rl_log)
  timings["rlhf"] = time.perf_counter() - t0
  if not rl_log["finite"].all():
    raise FloatingPointError("RLHF on the true reward: a non-finite loss.")
  log(f"  RLHF (GRPO, true reward) in {timings['rlhf']:.0f} s: batch true reward "
      f"{rl_log['true_reward'][:, :5].mean():.3f} -> {rl_log['true_reward'][:, -5:].mean():.3f}"
      f", KL {rl_log['kl'][:, -5:].mean():.2f}")

  # One completion per prompt from each policy.
  sample = jax.jit(jax.vmap(lambda p, x, k, _n: sample_completions(
      model_def.merge(p), x, k, config, _n), in_axes=(0, 0, 0, None)), static_argnums=3)
  keys = jax.random.split(k_data, (2, w_))
  base_c = np.asarray(sample(base, prompts, keys[0], 1))
  aligned_c = np.asarray(sample(aligned, prompts, keys[1], 1))
  prompts_np, weights_np = np.asarray(prompts), np.asarray(weights)

  def gold(c):                                     # [W, K, L] completions -> [W, K]
    w = np.take_along_axis(weights_np, c.reshape(w_, -1), axis=1)
    return -w.reshape(c.shape).sum(-1)

  true_base, true_aligned = gold(base_c), gold(aligned_c)                    # [W, N]
  pairs = {k: jnp.asarray(np.stack([pair_arrays(prompts_np[w, :n_train], aligned_c[w, :n_train],
                                                base_c[w, :n_train])[k] for w in range(w_)]))
           for k in ("input_ids", "segment_ids", "positions", "rank_mask")}
  eval_ids = np.concatenate([np.concatenate([prompts_np[:, n_train:], aligned_c[:, n_train:]], 2),
                             np.concatenate([prompts_np[:, n_train:], base_c[:, n_train:]], 2)],
                            axis=1)                                         # [W, 2 · eval, T]
  true_eval = np.concatenate([true_aligned[:, n_train:], true_base[:, n_train:]], axis=1)
  labels = (true_eval == 0).astype(np.int32)                              # no toxic token
  majority = np.maximum(labels.mean(1), 1 - labels.mean(1))
  log(f"  completions: true reward base {true_base.mean():.3f}, aligned "
      f"{true_aligned.mean():.3f}; held-out non-toxic rate {labels.mean():.3f} "
      f"(majority-class accuracy {majority.mean():.3f})")

  # Reward recovery: W × R fits per loss, vmapped.
  r_ = config.rm_seeds
  rm_keys = jax.random.split(k_rm, (w_, r_))
  rep = lambda x: jnp.repeat(x[:, None], r_, axis=1)
  fits, final_rm = {}, {}
  for loss in LOSSES:
    fit = jax.jit(jax.vmap(jax.vmap(make_fit(config, cfg, rm_def, loss))))
    t0 = time.perf_counter()
    params, fit_log = fit(rm_keys, jax.tree.map(rep, base), jax.tree.map(rep, pairs),
                          rep(jnp.asarray(eval_ids)))
    ev_log = jax.tree.map(np.asarray, fit_log["eval"])
    if not np.isfinite(ev_log["eval"]).all():
      raise FloatingPointError(f"reward recovery, {loss} loss: a non-finite reward.")
    seconds = time.perf_counter() - t0
    scores = score_fits(ev_log["eval"], ev_log["train"], true_eval, labels)
    final_rm[loss] = jax.tree.map(lambda x: x[:, 0], params)
    fits[loss] = {"label": LABELS[loss], "seconds": seconds,
                  "train_loss": np.asarray(fit_log["train"]["train/loss"]).mean(axis=(0, 1)),
                  "train_pair_accuracy": (ev_log["train"][..., 0] > ev_log["train"][..., 1])
                  .mean(-1), **scores}
    last = scores["accuracy"][:, :, -1]
    log(f"  recovery, {LABELS[loss]:22s} ({seconds:.0f} s): held-out accuracy "
        f"{last.mean():.3f} (min {last.min():.3f}, max {last.max():.3f}), F1 "
        f"{scores['f1'][:, :, -1].mean():.3f}, ranking accuracy "
        f"{scores['ranking_accuracy'][:, :, -1].mean():.3f}, Spearman "
        f"{scores['spearman'][:, :, -1].mean():.3f}")

  # RLHF again, on each loss's first-seed recovered reward.
  rl_keys = jax.random.split(k_rl2, w_)
  again, again_log = {}, {}
  t0 = time.perf_counter()
  for loss in LOSSES:
    again[loss], lg = rlhf(rl_keys, base, train_prompts, weights, final_rm[loss], True)
    again_log[loss] = jax.tree.map(np.asarray, lg)
    if not again_log[loss]["finite"].all():
      raise FloatingPointError(f"RLHF on the recovered {loss} reward: a non-finite loss.")
  timings["rlhf_recovered"] = time.perf_counter() - t0
  held_out = prompts[:, n_train:]
  eval_keys = jax.random.split(k_eval, w_)          # the same keys for every policy
  policies = {"base": base, "aligned": aligned, **{f"recovered_{k}": v for k, v in again.items()}}
  reached = {name: gold(np.asarray(sample(p, held_out, eval_keys, config.eval_samples)))
             .mean(axis=1) for name, p in policies.items()}
  log("  true reward on held-out prompts: " + ", ".join(
      f"{k} {v.mean():.3f}" for k, v in reached.items()))

  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "timings": timings,
             "pretrain_final_loss": pre_loss[:, -50:].mean(axis=1).tolist(),
             "rlhf": {"true_reward": rl_log["true_reward"].tolist(), "kl": rl_log["kl"].tolist()},
             "completions": {"true_base": true_base.mean(1).tolist(),
                             "true_aligned": true_aligned.mean(1).tolist(),
                             "non_toxic_rate": labels.mean(1).tolist(),
                             "majority": majority.tolist()},
             "fits": {k: {kk: np.asarray(vv).tolist() if not isinstance(vv, str | float) else vv
                          for kk, vv in v.items()} for k, v in fits.items()},
             "rlhf_again": {k: {"true_reward": v["true_reward"].tolist(),
                                "reward": v["reward"].tolist(), "kl": v["kl"].tolist()}
                            for k, v in again_log.items()},
             "reached": {k: v.tolist() for k, v in reached.items()}}
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results, config)
  return study.save(results, workdir, results_table(results, config),
                    lambda: plot_results(results, workdir))


# --- verdicts and outputs ----------------------------------------------------------------------


def _per_world(values) -> np.ndarray:
  return np.asarray(values).reshape(len(values), -1).mean(axis=1)


def verdicts(results, config) -> list[dict]:
  fit = results["fits"]["asymmetric"]
  acc = np.asarray(fit["accuracy"])                                         # [W, R, E]
  ranking = np.asarray(fit["ranking_accuracy"])
  majority = np.asarray(results["completions"]["majority"])
  above = study.interval(_per_world(ranking[:, :, -1]) - 0.5)
  classifier = study.interval(_per_world(acc[:, :, -1]) - majority)
  spread = study.interval(acc.reshape(acc.shape[0], -1).std(axis=1, ddof=1)
                          if acc[0].size > 1 else np.zeros(acc.shape[0]))
  reached = results["reached"]
  gain = study.interval(np.asarray(reached["recovered_asymmetric"]) - np.asarray(reached["base"]))
  true_gain = np.mean(np.asarray(reached["aligned"]) - np.asarray(reached["base"]))
  others = ", ".join(
      f"{k} {np.mean(results['fits'][k]['ranking_accuracy'], axis=1)[:, -1].mean():.3f}"
      for k in LOSSES[1:])
  spread_verdict = "reproduced" if spread[1] > config.wide_spread else "not at this scale"
  return [
      {"finding": "Max-margin IRL (asymmetric loss) on (aligned, base) completion pairs "
                  "recovers a reward that agrees with the hidden true reward well above chance",
       "verdict": study.decide(above),
       "deciding": f"held-out pairwise ranking accuracy against the true reward at the last "
                   f"epoch − 0.5: {study.fmt_ci(above)} (hinge, logistic: {others}); as a "
                   f"classifier of 'no toxic token', accuracy {np.mean(acc[:, :, -1]):.3f}, "
                   f"minus the majority-class rate {study.fmt_ci(classifier)}"},
      {"finding": "The recovered reward varies widely across seeds and stopping points",
       "verdict": spread_verdict,
       "deciding": f"within-world s.d. of held-out accuracy over {acc.shape[1]} seeds × "
                   f"{acc.shape[2]} epochs: {study.fmt_ci(spread, signed=False)}, claimed above "
                   f"{config.wide_spread} (lower bound decides)"},
      {"finding": "The recovered reward drives RLHF again: GRPO on it raises the true reward",
       "verdict": study.decide(gain),
       "deciding": f"true reward on held-out prompts, GRPO on the recovered (asymmetric) "
                   f"reward − base: {study.fmt_ci(gain)}; GRPO on the true reward − base: "
                   f"{true_gain:+.3f}"},
  ]


def results_table(results, config=None) -> str:
  cfg = results["config"]
  comp = results["completions"]
  lines = [f"## Reward recovery from an RLHF'd policy ({cfg['num_worlds']} worlds × "
           f"{cfg['rm_seeds']} reward-model seeds, {cfg['rm_epochs']} epochs)", "",
           f"True reward of the completions: base {np.mean(comp['true_base']):.3f}, aligned "
           f"{np.mean(comp['true_aligned']):.3f}; held-out non-toxic rate "
           f"{np.mean(comp['non_toxic_rate']):.3f} (majority-class accuracy "
           f"{np.mean(comp['majority']):.3f}). Held-out metrics at the last epoch, mean over "
           f"worlds and seeds [min, max over fits]. CPU: {results['cpu']}.", "",
           "| loss | accuracy | F1 | ranking accuracy | Spearman | aligned > base (held-out) "
           "| reward s.d. | fit s |", "|---|---|---|---|---|---|---|---|"]
  for r in results["fits"].values():
    cells = []
    for k in ("accuracy", "f1", "ranking_accuracy", "spearman", "pair_accuracy", "reward_std"):
      v = np.asarray(r[k])[:, :, -1]
      cells.append(f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]")
    lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
  lines += ["", "Held-out accuracy by epoch (stopping point), mean over fits:", "",
            "| loss | " + " | ".join(str(e + 1) for e in range(cfg["rm_epochs"])) + " |",
            "|---|" + "---|" * cfg["rm_epochs"]]
  for r in results["fits"].values():
    acc = np.asarray(r["accuracy"]).mean(axis=(0, 1))
    lines.append(f"| {r['label']} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")
  lines += ["", "True reward on held-out prompts "
            f"({cfg['eval_samples']} samples each), mean over worlds:", "",
            "| policy | true reward |", "|---|---|"]
  for k, v in results["reached"].items():
    lines.append(f"| {k} | {study.fmt_pm(study.interval(v))} |")
  t = results["timings"]
  lines += ["", f"Pretraining {t['pretrain']:.0f} s, RLHF {t['rlhf']:.0f} s, RLHF on the "
            f"recovered rewards {t['rlhf_recovered']:.0f} s; total "
            f"{results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  for r in results["fits"].values():
    acc = np.asarray(r["accuracy"])
    flat = acc.reshape(-1, acc.shape[-1])
    epochs = np.arange(1, acc.shape[-1] + 1)
    line, = ax0.plot(epochs, flat.mean(0), marker="o", label=r["label"])
    ax0.fill_between(epochs, flat.min(0), flat.max(0), color=line.get_color(), alpha=0.2)
  ax0.axhline(np.mean(results["completions"]["majority"]), color="gray", linestyle=":",
              label="majority class")
  ax0.set_xlabel("epoch (stopping point)")
  ax0.set_ylabel("held-out accuracy, 'no toxic token'")
  ax0.legend(fontsize=7)
  curves = {"true reward": results["rlhf"]["true_reward"],
            **{f"recovered, {k}": v["true_reward"] for k, v in results["rlhf_again"].items()}}
  for name, v in curves.items():
    v = np.asarray(v)
    ax1.plot(np.arange(1, v.shape[1] + 1), v.mean(0), label=f"GRPO on {name}")
  ax1.set_xlabel("update")
  ax1.set_ylabel("true reward of the batch")
  ax1.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "reward_recovery.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/reward_recovery.py",
                     "/tmp/reward_recovery")
