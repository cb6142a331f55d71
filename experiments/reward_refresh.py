"""Static vs refreshed reward model during RLHF on preferences from disagreeing annotators
(see the config's docstring; the refresh's selection score is a reconstruction).

    python -m experiments.reward_refresh --workdir=/tmp/reward_refresh
    python -m experiments.reward_refresh --workdir=/tmp/reward_refresh --config.quick=True
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
from experiments.grpo_s import continue_chain, embed
from experiments.reward_recovery import (
  FIRST_TOKEN,
  completion_log_probs,
  grpo_update,
  make_world,
  model_config,
  pair_arrays,
  sample_completions,
  true_reward,
)
from irl_jax import losses
from irl_jax.train import refresh, registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ARMS = ("static", "refreshed")
LABELS = {"static": "static reward model", "refreshed": "refreshed reward model"}
LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  lm_study.check_chain(config)
  lm_study.check_pretraining(config)
  for field in ("prompt_len", "completion_len", "eval_prompts", "eval_samples",
                "num_annotators", "rm_steps", "rm_batch", "refresh_every", "top_n",
                "refresh_steps", "rl_updates", "rl_prompts"):
    study.int_at_least(config, field, 1)
  study.int_at_least(config, "num_anchors", 0)
  for field in ("train_prompts", "num_records", "group_size"):
    study.int_at_least(config, field, 2)
  if config.rm_batch > config.num_records:
    raise ValueError(f"config.rm_batch ({config.rm_batch}) exceeds config.num_records "
                     f"({config.num_records}).")
  if config.top_n + config.num_anchors > config.num_records:
    raise ValueError(f"config.top_n + config.num_anchors ({config.top_n} + "
                     f"{config.num_anchors}) exceeds config.num_records "
                     f"({config.num_records}).")
  if config.rl_updates % config.refresh_every:
    raise ValueError(f"config.refresh_every ({config.refresh_every}) must divide "
                     f"config.rl_updates ({config.rl_updates}).")
  for field in ("annotator_noise",
                "rm_learning_rate", "refresh_learning_rate", "rl_learning_rate"):
    study.finite_positive(config, field)
  if isinstance(config.kl_coef, bool) or not config.kl_coef >= 0:
    raise ValueError(f"config.kl_coef must be >= 0, got {config.kl_coef!r}.")


# --- the offline preference records ----------------------------------------------------------


def make_records(config, world, rng: np.random.Generator) -> dict:
  """`num_records` preference arrays `[N, 2, T]` over the training prompts, ordered by a
  random disagreeing annotator, and the fraction whose order agrees with the true reward."""
  n, length = config.num_records, config.completion_len
  prompts = world["prompts"][rng.integers(0, config.train_prompts, n)]
  bad = np.arange(config.num_tokens - config.num_bad, config.num_tokens)
  comps = np.zeros((n, 2, length), np.int64)
  for side in range(2):
    level = rng.integers(0, len(LEVELS), n)
    for i, lam in enumerate(LEVELS):
      rows = np.flatnonzero(level == i)
      chain = world["chain"].copy()
      chain[:, bad] *= lam
      chain /= chain.sum(1, keepdims=True)
      comps[rows, side] = continue_chain(rng, chain, prompts[rows, -1] - FIRST_TOKEN,
                                         length) + FIRST_TOKEN
  noise = rng.normal(0.0, config.annotator_noise, (config.num_annotators, len(world["weights"])))
  noise[:, :FIRST_TOKEN] = 0.0
  annotators = world["weights"][None] + noise
  who = rng.integers(0, config.num_annotators, n)
  scores = -annotators[who[:, None, None], comps].sum(-1)                     # [N, 2]
  first_wins = rng.random(n) < 1 / (1 + np.exp(-(scores[:, 0] - scores[:, 1])))
  order = np.where(first_wins[:, None], [0, 1], [1, 0])
  comps = np.take_along_axis(comps, order[:, :, None], axis=1)
  true = -world["weights"][comps].sum(-1)
  differs = true[:, 0] != true[:, 1]
  return {"arrays": pair_arrays(prompts, comps[:, 0], comps[:, 1]),
          "agreement": float(np.mean(true[differs, 0] > true[differs, 1]))}


# --- RLHF with or without refreshes ------------------------------------------------------------


def group_ranking_accuracy(reward, gold, group_size: int):
  """`(agree, pairs)`: pairs within a group ordered by `gold` (ties left out) that `reward`
  orders the same way (its ties count one half)."""
  r, g = reward.reshape(-1, group_size), gold.reshape(-1, group_size)
  dr, counted = r[:, :, None] - r[:, None, :], g[:, :, None] > g[:, None, :]
  agree = jnp.where(counted, (dr > 0) + 0.5 * (dr == 0), 0.0)
  return jnp.sum(agree), jnp.sum(counted)


def make_rlhf(config, model_def, rm_def, refresh_fn):
  """`rlhf(key, params0, rm0, prompts, weights, records, record_emb, do_refresh)`: GRPO from
  `params0` (also the frozen reference and the embedder) on the reward model `rm0`, which
  is refreshed every `refresh_every` updates when `do_refresh` (unbatched) is true; pure.
  Both arms split the same keys, so their sampling keys match."""
  tx = optax.adam(config.rl_learning_rate)
  b, g = config.rl_prompts, config.group_size
  start = 1 + config.prompt_len

  def rlhf(key, params0, rm0, prompts, weights, records, record_emb, do_refresh):
    base = model_def.merge(params0)

    def step(carry, _):
      params, opt_state, rm_params, key, _ = carry
      key, k_rows, k_sample = jax.random.split(key, 3)
      rows = jax.random.randint(k_rows, (b,), 0, prompts.shape[0])
      tokens = sample_completions(model_def.merge(params), prompts[rows], k_sample, config, g)
      full = jnp.repeat(prompts[rows], g, axis=0)
      ids = jnp.concatenate([full, tokens], axis=1)
      reward = rm_def.merge(rm_params)(ids, attention_mask=jnp.ones_like(ids, bool))
      gold = true_reward(weights, tokens)
      advantages = losses.grpo_advantages(reward, group_size=g)
      ref = jax.lax.stop_gradient(completion_log_probs(base, full, tokens))
      params, opt_state, loss, lp = grpo_update(model_def, tx, params, opt_state, full, tokens,
                                                ref, advantages, config.kl_coef)
      agree, pairs = group_ranking_accuracy(reward, gold, g)
      return (params, opt_state, rm_params, key, ids), {
          "true_reward": jnp.mean(gold), "reward": jnp.mean(reward),
          "rm_agree": agree, "rm_pairs": pairs,
          "kl": jnp.mean(jnp.sum(lp - ref, axis=1)), "finite": jnp.isfinite(loss)}

    rounds = config.rl_updates // config.refresh_every

    def one_round(carry, i):
      carry, log = jax.lax.scan(step, carry, None, length=config.refresh_every)
      params, opt_state, rm_params, key, ids = carry
      key, k_select, k_refresh = jax.random.split(key, 3)

      def do(rm_params):
        similarity = refresh.nearest_similarity(record_emb, embed(base, ids, start))
        chosen = refresh.select_for_refresh(similarity, k_select, top_n=config.top_n,
                                            num_anchors=config.num_anchors)
        return refresh_fn(rm_params, records, chosen, k_refresh)[0]

      # No refresh after the last round: nothing would use it.
      rm_params = jax.lax.cond(do_refresh & (i < rounds - 1), do, lambda p: p, rm_params)
      return (params, opt_state, rm_params, key, ids), log

    ids0 = jnp.zeros((b * g, start + config.completion_len), jnp.int32)
    init = (params0, tx.init(params0), rm0, key, ids0)
    (params, *_), log = jax.lax.scan(one_round, init, jnp.arange(rounds))
    return params, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), log)

  return rlhf


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  k_pre, k_rm, k_rl, k_eval = jax.random.split(jax.random.key(config.seed), 4)
  s_ = config.num_seeds
  rngs = [np.random.default_rng([config.seed, s]) for s in range(s_)]
  worlds = [make_world(config, rng) for rng in rngs]
  records = [make_records(config, w, rng) for w, rng in zip(worlds, rngs, strict=True)]
  agreement = [r["agreement"] for r in records]
  data = {k: jnp.stack([jnp.asarray(r["arrays"][k]) for r in records])
          for k in records[0]["arrays"]}
  lm_data = {k: jnp.stack([jnp.asarray(w["lm"][k]) for w in worlds]) for k in worlds[0]["lm"]}
  prompts = jnp.stack([jnp.asarray(w["prompts"]) for w in worlds])
  weights = jnp.stack([jnp.asarray(w["weights"]) for w in worlds])
  n_train = config.train_prompts
  log(f"  {config.num_records} records per seed; their order agrees with the true reward on "
      f"{np.mean(agreement):.3f} of the pairs it ranks")

  cfg = model_config(config)
  model_def, rm_def, _ = lm_study.model_defs(cfg)
  bt = registry.get("bradley_terry")
  t0 = time.perf_counter()
  base, pre_loss = lm_study.pretrain(config, cfg, model_def, jax.random.split(k_pre, s_),
                                     lm_data)
  timings = {"pretrain": time.perf_counter() - t0}
  log(f"  pretrained {s_} base policies in {timings['pretrain']:.0f} s: final loss "
      f"{pre_loss[:, -50:].mean():.3f}")

  objective = bt.build(bt.hyperparameters())

  def fit(key, backbone, arrays):
    params, log_ = lm_study.fit_reward_model(
        cfg, rm_def, objective, optax.adam(config.rm_learning_rate), key, backbone, arrays,
        steps=config.rm_steps, batch_size=config.rm_batch)
    return params, log_["train"]["train/accuracy"]

  start = 1 + config.prompt_len

  def record_embeddings(params, arrays):
    ids = arrays["input_ids"]
    e = embed(model_def.merge(params), ids.reshape(-1, ids.shape[-1]), start)
    return e.reshape(ids.shape[0], 2, -1).mean(1)

  t0 = time.perf_counter()
  rm0, rm_acc = jax.jit(jax.vmap(fit))(jax.random.split(k_rm, s_), base, data)
  record_emb = jax.jit(jax.vmap(record_embeddings))(base, data)
  rm_acc = np.asarray(rm_acc)[:, -max(1, config.rm_steps // 10):].mean(1)
  timings["reward_model"] = time.perf_counter() - t0
  log(f"  static reward models in {timings['reward_model']:.0f} s: training accuracy "
      f"{rm_acc.mean():.3f}")

  refresh_fn = refresh.make_refresh(rm_def, objective, optax.adam(config.refresh_learning_rate),
                                    steps=config.refresh_steps, batch_size=config.rm_batch)
  rlhf = jax.jit(jax.vmap(make_rlhf(config, model_def, rm_def, refresh_fn),
                          in_axes=(0, 0, 0, 0, 0, 0, 0, None)))

  def heldout(params, x, w, key):
    tokens = sample_completions(model_def.merge(params), x, key, config, config.eval_samples)
    return jnp.mean(true_reward(w, tokens))

  evaluate = jax.jit(jax.vmap(heldout))
  eval_args = (prompts[:, n_train:], weights, jax.random.split(k_eval, s_))
  reached = {"base": np.asarray(evaluate(base, *eval_args))}
  rl_keys = jax.random.split(k_rl, s_)
  arms = {}
  for arm in ARMS:
    t0 = time.perf_counter()
    params, lg = rlhf(rl_keys, base, rm0, prompts[:, :n_train], weights, data, record_emb,
                      arm == "refreshed")
    lg = jax.tree.map(np.asarray, lg)
    if not lg["finite"].all():
      raise FloatingPointError(f"RLHF with the {LABELS[arm]}: a non-finite loss.")
    reached[arm] = np.asarray(evaluate(params, *eval_args))
    # An update without a pair the true reward orders has no ranking accuracy (NaN).
    pairs = lg["rm_pairs"]
    rank = np.where(pairs > 0, lg["rm_agree"] / np.maximum(pairs, 1), np.nan)
    arms[arm] = {"label": LABELS[arm], "seconds": time.perf_counter() - t0,
                 "true_reward": lg["true_reward"].tolist(), "reward": lg["reward"].tolist(),
                 "kl": lg["kl"].tolist(), "rm_ranking_accuracy": rank.tolist(),
                 "rm_pairs": lg["rm_pairs"].tolist()}
    log(f"  {LABELS[arm]:24s} ({arms[arm]['seconds']:.0f} s): batch true reward "
        f"{lg['true_reward'][:, :5].mean():.3f} -> {lg['true_reward'][:, -5:].mean():.3f}, "
        f"reward-model ranking accuracy on the policy's samples "
        f"{np.nanmean(rank[:, :config.refresh_every]):.3f} -> "
        f"{np.nanmean(rank[:, -config.refresh_every:]):.3f}; held-out true reward "
        f"{reached[arm].mean():.3f}")

  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "timings": timings,
             "pretrain_final_loss": pre_loss[:, -50:].mean(axis=1).tolist(),
             "record_agreement": agreement, "rm_train_accuracy": rm_acc.tolist(),
             "arms": arms, "reached": {k: v.tolist() for k, v in reached.items()}}
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results)
  return study.save(results, workdir, results_table(results),
                    lambda: plot_results(results, workdir))


# --- verdicts and outputs ----------------------------------------------------------------------


def verdicts(results) -> list[dict]:
  a = results["arms"]
  faster = study.interval(np.mean(a["refreshed"]["true_reward"], axis=1)
                          - np.mean(a["static"]["true_reward"], axis=1))
  better = study.interval(np.asarray(results["reached"]["refreshed"])
                          - np.asarray(results["reached"]["static"]))
  both = (study.decide(faster), study.decide(better))
  if "contradicted" in both:
    verdict = "contradicted"
  elif both == ("reproduced", "reproduced"):
    verdict = "reproduced"
  else:
    verdict = "not at this scale"
  return [{"finding": "Refreshing the reward model on the preference records nearest the "
                      "policy's outputs aligns faster and better than a static reward model",
           "verdict": verdict,
           "deciding": f"refreshed − static, paired: mean batch true reward over updates "
                       f"{study.fmt_ci(faster)} ({both[0]}); final held-out true reward "
                       f"{study.fmt_ci(better)} ({both[1]})"}]


def results_table(results, config=None) -> str:
  del config
  cfg = results["config"]
  k = cfg["refresh_every"]
  lines = [f"## Static vs refreshed reward model ({cfg['num_seeds']} seeds, "
           f"{cfg['rl_updates']} GRPO updates, refresh every {k})", "",
           f"{cfg['num_records']} records from {cfg['num_annotators']} annotators (noise "
           f"{cfg['annotator_noise']}); the records' order agrees with the true reward on "
           f"{np.mean(results['record_agreement']):.3f} of the pairs; the static reward "
           f"model's training accuracy {np.mean(results['rm_train_accuracy']):.3f}. Mean ± "
           f"95% interval over seeds. CPU: {results['cpu']}.", "",
           "| arm | batch true reward, mean over updates | held-out true reward at the end | "
           f"RM ranking accuracy on the policy's samples, first / last {k} updates | run s |",
           "|---|---|---|---|---|"]
  for arm, r in results["arms"].items():
    rank = np.asarray(r["rm_ranking_accuracy"])
    lines.append(f"| {r['label']} | "
                 f"{study.fmt_pm(study.interval(np.mean(r['true_reward'], axis=1)))} | "
                 f"{study.fmt_pm(study.interval(results['reached'][arm]))} | "
                 f"{np.nanmean(rank[:, :k]):.3f} / {np.nanmean(rank[:, -k:]):.3f} | "
                 f"{r['seconds']:.0f} |")
  lines.append(f"| base policy | | {study.fmt_pm(study.interval(results['reached']['base']))} "
               "| | |")
  t = results["timings"]
  lines += ["", f"Pretraining {t['pretrain']:.0f} s, static reward models "
            f"{t['reward_model']:.0f} s; total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  for r in results["arms"].values():
    for ax, key in ((ax0, "true_reward"), (ax1, "rm_ranking_accuracy")):
      v = np.asarray(r[key])
      steps = np.arange(1, v.shape[1] + 1)
      line, = ax.plot(steps, np.nanmean(v, 0), label=r["label"])
      ax.fill_between(steps, np.nanmin(v, 0), np.nanmax(v, 0), color=line.get_color(),
                      alpha=0.15)
  ax0.set_ylabel("true reward of the batch")
  ax1.set_ylabel("reward model's ranking accuracy\non the policy's samples")
  for ax in (ax0, ax1):
    ax.set_xlabel("GRPO update")
  ax0.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, "reward_refresh.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/reward_refresh.py",
                     "/tmp/reward_refresh")
