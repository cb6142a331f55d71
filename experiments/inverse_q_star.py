"""Inverse-Q* (token-level RL and its distillation limit) vs sparse-reward GRPO on a tiny
language model whose corpus holds "bad" tokens (see the config's docstring; the method
is a reconstruction).

    python -m experiments.inverse_q_star --workdir=/tmp/inverse_q_star
    python -m experiments.inverse_q_star --workdir=/tmp/inverse_q_star --config.quick=True
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx

from experiments import lm_study, study
from irl_jax import losses, models
from irl_jax.models import sampling
from irl_jax.train.state import split_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PAD, TAG_MIXED, TAG_CLEAN = 0, 1, 2
FIRST_TOKEN = 3                      # content tokens are FIRST_TOKEN .. FIRST_TOKEN + n − 1
METHODS = ("token_rl", "distillation", "sparse")
LABELS = {"token_rl": "Inverse-Q*, token-level RL (dense r̂)",
          "distillation": "Inverse-Q*, distillation limit",
          "sparse": "GRPO, sparse sequence score"}


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  study.int_at_least(config, "num_tokens", 3)
  study.int_at_least(config, "num_bad", 1)
  if config.num_bad >= config.num_tokens - 1:
    raise ValueError(f"config.num_bad must leave at least two good tokens, got "
                     f"{config.num_bad!r} of config.num_tokens={config.num_tokens!r}.")
  for field in ("length", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "pretrain_steps", "updates", "log_every"):
    study.int_at_least(config, field, 1)
  for field in ("corpus_size", "pretrain_batch", "batch"):
    study.int_at_least(config, field, 2)
  if config.hidden_size % config.num_heads:
    raise ValueError(f"config.hidden_size ({config.hidden_size}) must be a multiple of "
                     f"config.num_heads ({config.num_heads}).")
  if config.pretrain_batch > config.corpus_size:
    raise ValueError(f"config.pretrain_batch ({config.pretrain_batch}) exceeds "
                     f"config.corpus_size ({config.corpus_size}).")
  if config.updates % config.log_every:
    raise ValueError(f"config.log_every ({config.log_every}) must divide config.updates "
                     f"({config.updates}).")
  for field in ("bad_mass", "clean_fraction"):
    study.in_open_unit(config, field)
  for field in ("concentration", "pretrain_learning_rate", "learning_rate", "beta"):
    study.finite_positive(config, field)
  n_clean = round(config.clean_fraction * config.corpus_size)
  if not 1 <= n_clean < config.corpus_size:
    raise ValueError(f"config.clean_fraction ({config.clean_fraction!r}) of "
                     f"config.corpus_size ({config.corpus_size!r}) leaves no clean or no mixed "
                     f"sequence.")
  if isinstance(config.kl_coef, bool) or not config.kl_coef >= 0:
    raise ValueError(f"config.kl_coef must be >= 0, got {config.kl_coef!r}.")


# --- the corpus and the pretrained model ---------------------------------------------------


def make_chains(config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`(mixed, clean)` transition matrices `[n + 1, n]` (row 0: the start distribution)."""
  n, bad = config.num_tokens, config.num_bad
  good = rng.dirichlet(np.full(n - bad, config.concentration), size=n + 1)
  worse = rng.dirichlet(np.full(bad, config.concentration), size=n + 1)
  mixed = np.concatenate([(1 - config.bad_mass) * good, config.bad_mass * worse], axis=1)
  clean = np.concatenate([good, np.zeros_like(worse)], axis=1)
  return mixed, clean


def sample_chain(rng, matrix, count: int, length: int) -> np.ndarray:
  """`[count, length]` content-token indices (0-based) from the chain."""
  out = np.zeros((count, length), np.int64)
  prev = np.zeros(count, np.int64)                     # row 0: the start distribution
  for t in range(length):
    cum = np.cumsum(matrix[prev], axis=1)
    out[:, t] = np.minimum((rng.random((count, 1)) > cum).sum(1), matrix.shape[1] - 1)
    prev = out[:, t] + 1
  return out


def make_corpus(config, rng) -> dict:
  """LM arrays `[N, 1 + length]` of tagged sequences, and the chains."""
  mixed, clean = make_chains(config, rng)
  n_clean = round(config.clean_fraction * config.corpus_size)
  tokens = np.concatenate([sample_chain(rng, mixed, config.corpus_size - n_clean, config.length),
                           sample_chain(rng, clean, n_clean, config.length)]) + FIRST_TOKEN
  tags = np.concatenate([np.full(config.corpus_size - n_clean, TAG_MIXED),
                         np.full(n_clean, TAG_CLEAN)])
  ids = np.concatenate([tags[:, None], tokens], axis=1).astype(np.int32)
  t = ids.shape[1]
  return {"input_ids": ids, "segment_ids": np.ones_like(ids),
          "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape).copy(),
          "loss_mask": np.concatenate([np.zeros((len(ids), 1), np.int32),
                                       np.ones((len(ids), t - 1), np.int32)], axis=1),
          "chains": (mixed, clean)}


def model_config(config) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="llama", vocab_size=FIRST_TOKEN + config.num_tokens,
      hidden_size=config.hidden_size, num_layers=config.num_layers,
      num_heads=config.num_heads, num_kv_heads=config.num_heads,
      head_dim=config.hidden_size // config.num_heads,
      intermediate_size=config.intermediate_size, max_position_embeddings=config.length + 8)


def bad_rate_of_chain(matrix, config) -> float:
  """Exact expected fraction of bad tokens in a `length`-token sample of the chain."""
  n, bad = config.num_tokens, config.num_bad
  dist = matrix[0]
  total = 0.0
  for _ in range(config.length):
    total += dist[n - bad:].sum()
    dist = dist @ matrix[1:]
  return total / config.length


# --- RL --------------------------------------------------------------------------------------


def response_log_probs(model, tag: int, tokens):
  """`[B, L]` log-probs of `tokens` after the one-token prompt `tag` (float32)."""
  ids = jnp.concatenate([jnp.full((tokens.shape[0], 1), tag, tokens.dtype), tokens], axis=1)
  logits = model(ids, attention_mask=jnp.ones_like(ids, bool))[:, :-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def make_rl(config, model_def, method: str):
  """`rl(key, params0) -> (params, log)`: `updates` steps of `method` from the pretrained
  `params0` (also the frozen π_ref after tag M and π̂* after tag C); pure, vmappable."""
  tx = optax.adam(config.learning_rate)
  batch, length = config.batch, config.length
  bad_first = FIRST_TOKEN + config.num_tokens - config.num_bad
  prompt = jnp.full((batch, 1), TAG_MIXED, jnp.int32)
  where = jnp.ones((batch, length), bool)

  def loss_fn(params, tokens, lr, lo):
    lp = response_log_probs(model_def.merge(params), TAG_MIXED, tokens)
    if method == "token_rl":
      per_token, _ = losses.inverse_q_star_policy_gradient(lp, lr, lo, where=where,
                                                           beta=config.beta)
      return jnp.mean(per_token), lp
    if method == "distillation":
      per_token, _ = losses.inverse_q_star(lp, lr, lo, where=where, beta=config.beta)
      return jnp.mean(per_token), lp
    score = -jnp.sum(tokens >= bad_first, axis=1).astype(jnp.float32)
    advantages = losses.grpo_advantages(score, group_size=batch)
    loss, _ = losses.grpo(lp, jax.lax.stop_gradient(lp), lr, advantages, where=where,
                          normaliser="token", kl_coef=config.kl_coef)
    return loss, lp

  def rl(key, params0):
    ref_model = model_def.merge(params0)

    def step(carry, _):
      params, opt_state, key = carry
      key, k_sample = jax.random.split(key)
      out = sampling.generate(model_def.merge(params), prompt, jnp.ones_like(prompt, bool),
                              k_sample, max_new_tokens=length, temperature=1.0, eos_id=())
      tokens = out.tokens
      lr = jax.lax.stop_gradient(response_log_probs(ref_model, TAG_MIXED, tokens))
      lo = jax.lax.stop_gradient(response_log_probs(ref_model, TAG_CLEAN, tokens))
      (loss, lp), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, lr, lo)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      metrics = {"bad_rate": jnp.mean(tokens >= bad_first),
                 "kl": jnp.mean(jnp.sum(lp - lr, axis=1)),
                 "loss": loss, "finite": jnp.isfinite(loss)}
      return (params, opt_state, key), metrics

    (params, _, _), log = jax.lax.scan(step, (params0, tx.init(params0), key), None,
                                       length=config.updates)
    return params, log

  return rl


def sampled_bad_rate(config, model_def, params, tag: int, key, count: int = 512):
  """Bad-token rate of `count` samples of the model after `tag`."""
  prompt = jnp.full((count, 1), tag, jnp.int32)
  out = sampling.generate(model_def.merge(params), prompt, jnp.ones_like(prompt, bool), key,
                          max_new_tokens=config.length, temperature=1.0, eos_id=())
  return jnp.mean(out.tokens >= FIRST_TOKEN + config.num_tokens - config.num_bad)


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  root = jax.random.key(config.seed)
  k_pre, k_rl, k_eval = jax.random.split(root, 3)
  seeds = config.num_seeds
  corpora = [make_corpus(config, np.random.default_rng([config.seed, s])) for s in range(seeds)]
  data = {k: jnp.stack([jnp.asarray(c[k]) for c in corpora])
          for k in ("input_ids", "segment_ids", "positions", "loss_mask")}
  exact = {"mixed": [bad_rate_of_chain(c["chains"][0], config) for c in corpora]}

  cfg = model_config(config)
  model_def, _ = split_model(nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))))
  t0 = time.perf_counter()
  params0, pre_loss = lm_study.pretrain(config, cfg, model_def, jax.random.split(k_pre, seeds),
                                        data)
  pretrain_seconds = time.perf_counter() - t0
  eval_keys = jax.random.split(k_eval, (2, seeds))
  rate = jax.jit(jax.vmap(lambda p, k, tag: sampled_bad_rate(config, model_def, p, tag, k),
                          in_axes=(0, 0, None)), static_argnums=2)
  ref_rate = np.asarray(rate(params0, eval_keys[0], TAG_MIXED))
  opt_rate = np.asarray(rate(params0, eval_keys[1], TAG_CLEAN))
  log(f"  pretrained {config.pretrain_steps} steps in {pretrain_seconds:.0f} s: final loss "
      f"{pre_loss[:, -50:].mean():.3f}; bad-token rate π_ref {ref_rate.mean():.3f} (chain "
      f"{np.mean(exact['mixed']):.3f}), π̂* {opt_rate.mean():.4f}")
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "pretrain_seconds": pretrain_seconds,
             "pretrain_final_loss": pre_loss[:, -50:].mean(axis=1).tolist(),
             "ref_bad_rate": ref_rate.tolist(), "optimal_bad_rate": opt_rate.tolist(),
             "chain_bad_rate": exact["mixed"], "methods": {}}

  rl_keys = jax.random.split(k_rl, seeds)      # the same sampling keys for every method
  for method in METHODS:
    rl = jax.jit(jax.vmap(make_rl(config, model_def, method)))
    t0 = time.perf_counter()
    compiled = rl.lower(rl_keys, params0).compile()
    t1 = time.perf_counter()
    _, rl_log = compiled(rl_keys, params0)
    rl_log = jax.tree.map(np.asarray, rl_log)
    t2 = time.perf_counter()
    bad, kl = rl_log["bad_rate"], rl_log["kl"]                        # [S, U]
    row = {"label": LABELS[method], "compile_seconds": t1 - t0, "run_seconds": t2 - t1,
           "bad_rate": bad.tolist(), "kl": kl.tolist(),
           "finite": bool(rl_log["finite"].all()),
           "area": bad.mean(axis=1).tolist(), "area_ci": study.interval(bad.mean(axis=1)),
           "final_bad_ci": study.interval(bad[:, -config.log_every:].mean(axis=1)),
           "final_kl_ci": study.interval(kl[:, -config.log_every:].mean(axis=1))}
    if not row["finite"]:
      raise FloatingPointError(f"{method}: a non-finite loss during RL ({LABELS[method]}).")
    results["methods"][method] = row
    log(f"  {LABELS[method]:40s} bad-token rate: mean over updates "
        f"{study.fmt_pm(row['area_ci'])}, last {config.log_every} updates "
        f"{study.fmt_pm(row['final_bad_ci'])}; KL to π_ref {study.fmt_pm(row['final_kl_ci'])} "
        f"({t2 - t1:.0f} s run, {t1 - t0:.0f} s compile)")
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results, config)
  return study.save(results, workdir, results_table(results, config),
                    lambda: plot_results(results, config, workdir))


# --- verdicts and outputs ----------------------------------------------------------------------


def verdicts(results, config) -> list[dict]:
  m = results["methods"]
  sparse = np.asarray(m["sparse"]["area"])
  dense = study.interval(sparse - np.asarray(m["token_rl"]["area"]))
  distill = study.interval(sparse - np.asarray(m["distillation"]["area"]))
  return [{"finding": "Dense token rewards r̂_t = β·log(π̂*/π_ref) (Inverse-Q*, token-level "
                      "RL) remove bad tokens faster than sparse-reward GRPO on the true "
                      f"sequence score ({config.updates} updates)",
           "verdict": study.decide(dense),
           "deciding": f"mean bad-token rate over updates, GRPO − Inverse-Q* RL, paired: "
                       f"{study.fmt_ci(dense, 4)}; distillation limit: GRPO − distillation "
                       f"{study.fmt_ci(distill, 4)}"}]


def results_table(results, config=None) -> str:
  cfg = results["config"]
  lines = [f"## Inverse-Q* vs sparse-reward GRPO ({cfg['num_tokens']} tokens, "
           f"{cfg['num_bad']} bad, length {cfg['length']})", "",
           f"Bad-token rate of the policy's own samples and KL(π_θ ‖ π_ref), mean ± 95% "
           f"interval over {cfg['num_seeds']} seeds, {cfg['updates']} updates of "
           f"{cfg['batch']} samples. π_ref's bad-token rate "
           f"{np.mean(results['ref_bad_rate']):.3f} (its chain's exact rate "
           f"{np.mean(results['chain_bad_rate']):.3f}), π̂*'s "
           f"{np.mean(results['optimal_bad_rate']):.4f}. CPU: {results['cpu']}.", "",
           f"| method | mean bad-token rate over updates | last {cfg['log_every']} updates | "
           f"KL to π_ref, last {cfg['log_every']} | run s (compile s) |",
           "|---|---|---|---|---|"]
  for r in results["methods"].values():
    lines.append(f"| {r['label']} | {study.fmt_pm(r['area_ci'], 4)} | "
                 f"{study.fmt_pm(r['final_bad_ci'], 4)} | {study.fmt_pm(r['final_kl_ci'])} | "
                 f"{r['run_seconds']:.0f} ({r['compile_seconds']:.0f}) |")
  lines += ["", f"Pretraining {results['pretrain_seconds']:.0f} s; total "
            f"{results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, config, workdir) -> str:
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  for r in results["methods"].values():
    bad, kl = np.asarray(r["bad_rate"]), np.asarray(r["kl"])
    steps = np.arange(1, bad.shape[1] + 1)
    for ax, v in ((ax0, bad), (ax1, kl)):
      line, = ax.plot(steps, v.mean(0), label=r["label"])
      ax.fill_between(steps, v.min(0), v.max(0), color=line.get_color(), alpha=0.2)
  ax0.axhline(np.mean(results["optimal_bad_rate"]), color="gray", linestyle=":",
              label="π̂* (tag C)")
  ax0.set_ylabel("bad-token rate")
  ax1.set_ylabel("KL(π_θ ‖ π_ref) per sequence")
  for ax in (ax0, ax1):
    ax.set_xlabel("update")
  ax0.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "inverse_q_star.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/inverse_q_star.py",
                     "/tmp/inverse_q_star")
