"""RLHF as online IRL: SFT vs reward model + GRPO vs IQLearn on one data budget, accuracy
against derivation length (see the config's docstring).

    python -m experiments.rlhf_online_irl --workdir=/tmp/rlhf_online_irl
    python -m experiments.rlhf_online_irl --workdir=/tmp/rlhf_online_irl --config.quick=True
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
from experiments.per_step_negatives import LM_KEYS, Sampler
from experiments.tasks import arithmetic
from irl_jax import losses, models
from irl_jax.data import char_tokenizer, lm_arrays
from irl_jax.train import lm, optim, registry, rollouts
from irl_jax.train.compiled import make_train
from irl_jax.train.state import split_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METHODS = ("sft", "iq_learn", "rlhf")
LABELS = {"sft": "SFT (behaviour cloning)", "iq_learn": "IQLearn (offline IRL)",
          "rlhf": "RLHF: reward model + GRPO"}


# --- config ------------------------------------------------------------------------------


def check_config(config) -> None:
  """Raises `ValueError` naming the config field that is out of range."""
  study.int_at_least(config, "num_seeds", 2)
  study.int_at_least(config, "min_operands", 2)
  if not isinstance(config.max_operands, int) or config.max_operands < config.min_operands + 1:
    raise ValueError(f"config.max_operands must be an int above config.min_operands "
                     f"({config.min_operands}) so that lengths vary, got "
                     f"{config.max_operands!r}.")
  for field in ("seq_len", "max_new_tokens", "eval_per_length", "hidden_size", "num_layers",
                "num_heads", "intermediate_size", "sft_steps", "rm_steps", "rl_updates",
                "rl_prompts"):
    study.int_at_least(config, field, 1)
  for field in ("num_demonstrations", "sft_batch", "rm_batch", "group_size"):
    study.int_at_least(config, field, 2)
  if config.hidden_size % config.num_heads:
    raise ValueError(f"config.hidden_size ({config.hidden_size}) must be a multiple of "
                     f"config.num_heads ({config.num_heads}).")
  for field in ("sft_batch", "rm_batch", "rl_prompts"):
    if config[field] > config.num_demonstrations:
      raise ValueError(f"config.{field} ({config[field]}) exceeds config.num_demonstrations "
                       f"({config.num_demonstrations}).")
  for field in ("sft_learning_rate", "rm_learning_rate", "rl_learning_rate", "iq_td_weight"):
    study.finite_positive(config, field)
  study.in_open_unit(config, "iq_gamma")
  if isinstance(config.kl_coef, bool) or not config.kl_coef >= 0:
    raise ValueError(f"config.kl_coef must be >= 0, got {config.kl_coef!r}.")


# --- data ----------------------------------------------------------------------------------


def lengths(config) -> list[int]:
  """Operand counts evaluated; a derivation of k operands has k − 1 steps."""
  return list(range(config.min_operands, config.max_operands + 1))


def make_problems(config) -> tuple[list[dict], dict[int, list[str]]]:
  """`(demonstrations, held-out prompts per operand count)`; no held-out prompt is among the
  demonstrations'."""
  heldout = {}
  for k in lengths(config):
    difficulty = arithmetic.Difficulty(k, k, 1, "+")
    rows = arithmetic.make_dataset(np.random.default_rng([config.data_seed, 1, k]),
                                   config.eval_per_length, difficulty)
    heldout[k] = [r["prompt"] for r in rows]
  held = {p for ps in heldout.values() for p in ps}
  difficulty = arithmetic.Difficulty(config.min_operands, config.max_operands, 1, "+")
  rng = np.random.default_rng([config.data_seed, 0])
  demos = []
  while len(demos) < config.num_demonstrations:
    demos += [r for r in arithmetic.make_dataset(rng, config.num_demonstrations, difficulty)
              if r["prompt"] not in held]
  return demos[:config.num_demonstrations], heldout


def model_config(config, vocab_size: int) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=config.hidden_size,
      num_layers=config.num_layers, num_heads=config.num_heads,
      num_kv_heads=config.num_heads, head_dim=config.hidden_size // config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=config.seq_len + config.max_new_tokens + 8)


def preference_arrays(prompts, chosen, rejected, tokenizer, seq_len: int) -> dict:
  """`[N, 2, T]` preference arrays, each row's first response preferred."""
  sides = [lm_arrays([{"prompt": p, "response": r} for p, r in zip(prompts, side, strict=True)],
                     tokenizer, seq_len=seq_len) for side in (chosen, rejected)]
  out = {k: np.stack([s[k] for s in sides], axis=1) for k in ("input_ids", "segment_ids",
                                                                "positions")}
  out["rank_mask"] = np.ones(out["input_ids"].shape[:2], np.int32)
  return out


def accuracy_by_length(model, sampler, heldout, key) -> list[float]:
  """Greedy accuracy on each operand count's held-out prompts (one decoding call)."""
  prompts = [p for ps in heldout.values() for p in ps]
  responses = sampler(model, prompts, key, num_samples=1, temperature=0.0)
  correct = np.array([arithmetic.check(p, r).correct for p, r in
                      zip(prompts, responses, strict=True)])
  return correct.reshape(len(heldout), -1).mean(1).tolist()


# --- RLHF: the policy stage ----------------------------------------------------------------


def rm_sampler(config, model_def, rm_def, tokenizer, prompt_len: int):
  """`make(rm_params, ref_params) -> sampler(model, batch, key)`: the in-step sampler of
  `irl_jax.train.rollouts` plus what the registered GRPO objective reads, with the rewards
  of the reward model `rm_params` and reference log-probs of `ref_params`."""
  draw = rollouts.in_step_sampler(max_new_tokens=config.max_new_tokens, prompt_len=prompt_len,
                                  temperature=1.0, num_samples=config.group_size,
                                  eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)

  def make(rm_params, ref_params):
    def sampler(model, batch, key):
      b = draw(model, batch, key)
      ids, seg, pos = b["sample_input_ids"], b["sample_segment_ids"], b["sample_positions"]
      reward = rm_def.merge(rm_params)(ids, attention_mask=seg > 0, positions=pos)
      b["sample_advantages"] = losses.grpo_advantages(reward, group_size=config.group_size)
      b["sample_old_logps"] = lm.lm_stats(model, ids, seg, pos, chunk_size=None).log_probs
      b["sample_ref_logps"] = lm.lm_stats(model_def.merge(ref_params), ids, seg, pos,
                                          chunk_size=None).log_probs
      return b

    return sampler

  return make


# --- the study -----------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  config = study.resolve_quick(config)
  check_config(config)
  t_start = time.perf_counter()
  tokenizer = char_tokenizer(arithmetic.ALPHABET)
  demos, heldout = make_problems(config)
  arrays = {k: v for k, v in lm_arrays(demos, tokenizer, seq_len=config.seq_len).items()
            if k in LM_KEYS}
  cfg = model_config(config, len(tokenizer))
  model_def, rm_def, _ = lm_study.model_defs(cfg)
  sampler = Sampler(config, tokenizer, width=config.seq_len)
  s_ = config.num_seeds
  k_init, k_pairs, k_rm, k_rl, k_eval = jax.random.split(jax.random.key(config.seed), 5)
  init_keys = jax.random.split(k_init, s_)        # SFT and IQLearn share init and data order
  sft_tx, _ = optim.make_optimizer(learning_rate=config.sft_learning_rate,
                                   warmup_steps=min(50, config.sft_steps // 10 + 1),
                                   total_steps=config.sft_steps, decay="cosine", clip_norm=1.0)
  init = lambda k: split_model(models.Transformer(cfg, rngs=nnx.Rngs(k)))[1]
  timings, params = {}, {}
  for method, name, hp in (("sft", "mle", {}),
                           ("iq_learn", "iq_learn", {"gamma": config.iq_gamma,
                                                     "td_weight": config.iq_td_weight})):
    spec = registry.get(name)
    train = make_train(init, model_def, spec.build(spec.hyperparameters(**hp)), sft_tx, arrays,
                       steps=config.sft_steps, batch_size=config.sft_batch)
    t0 = time.perf_counter()
    states, _ = jax.jit(jax.vmap(train))(init_keys)
    params[method] = jax.block_until_ready(states.params)
    timings[method] = time.perf_counter() - t0
    log(f"  {LABELS[method]} trained in {timings[method]:.0f} s")

  # The inverse step: a reward model from the demonstrations vs the SFT policy's samples.
  t0 = time.perf_counter()
  prompts = [d["prompt"] for d in demos]
  pair_keys = jax.random.split(k_pairs, s_)
  pairs, identical = [], []
  for s in range(s_):
    sft_s = model_def.merge(jax.tree.map(lambda x, s=s: x[s], params["sft"]))
    own = sampler(sft_s, prompts, pair_keys[s], num_samples=1, temperature=1.0)
    expert = [d["response"] for d in demos]
    arrays_s = preference_arrays(prompts, expert, own, tokenizer, config.seq_len)
    # A sample that is the expert's own text makes a pair of two identical rows: no
    # preference to learn. Its rejected slot is masked out, so the objective leaves the row
    # out of its loss and accuracy (the count is reported).
    same = np.array([o == e for o, e in zip(own, expert, strict=True)])
    arrays_s["rank_mask"][same, 1] = 0
    identical.append(int(same.sum()))
    pairs.append(arrays_s)
  if min(len(prompts) - n for n in identical) < 1:
    raise ValueError("every SFT sample equals its expert derivation: no preference pair is "
                     "left to fit a reward model on (raise config.num_demonstrations or lower "
                     "config.sft_steps).")
  pairs = {k: jnp.stack([jnp.asarray(p[k]) for p in pairs]) for k in pairs[0]}
  bt = registry.get("bradley_terry")

  def fit(key, backbone, data):
    params_, log_ = lm_study.fit_reward_model(
        cfg, rm_def, bt.build(bt.hyperparameters()), optax.adam(config.rm_learning_rate), key,
        backbone, data, steps=config.rm_steps, batch_size=config.rm_batch)
    return params_, log_["train"]["train/accuracy"]

  rm_params, rm_acc = jax.block_until_ready(jax.jit(jax.vmap(fit))(
      jax.random.split(k_rm, s_), params["sft"], pairs))
  rm_acc = np.asarray(rm_acc)[:, -max(1, config.rm_steps // 10):].mean(1)
  timings["reward_model"] = time.perf_counter() - t0
  log(f"  reward models (expert ≻ SFT sample) in {timings['reward_model']:.0f} s: training "
      f"accuracy {rm_acc.mean():.3f} on the pairs left after {np.mean(identical):.0f} of "
      f"{len(prompts)} identical ones (sample = expert text) were masked")

  # The policy stage: GRPO from SFT on the reward model, the registered objective.
  prompt_len = 1 + max(len(p) for p in prompts)
  rollouts.check_prompt_lengths(arrays, prompt_len)
  make_sampler = rm_sampler(config, model_def, rm_def, tokenizer, prompt_len)
  grpo = registry.get("grpo")
  objective = grpo.build(grpo.hyperparameters(kl_coef=config.kl_coef,
                                              max_new_tokens=config.max_new_tokens,
                                              num_samples=config.group_size))

  def rl(key, sft_params, rm_p):
    train = make_train(lambda _: sft_params, model_def, objective,
                       optax.adam(config.rl_learning_rate), arrays, steps=config.rl_updates,
                       batch_size=config.rl_prompts, sampler=make_sampler(rm_p, sft_params))
    state, log_ = train(key)
    return state.params, log_["train"]

  t0 = time.perf_counter()
  params["rlhf"], rl_log = jax.jit(jax.vmap(rl))(jax.random.split(k_rl, s_), params["sft"],
                                                 rm_params)
  rl_log = jax.tree.map(np.asarray, rl_log)
  timings["rlhf"] = time.perf_counter() - t0
  if not rl_log["train/finite"].all():
    raise FloatingPointError("GRPO on the reward model: a non-finite loss or gradient.")
  log(f"  GRPO on the reward model in {timings['rlhf']:.0f} s: KL to SFT "
      f"{rl_log['train/kl'][:, -5:].mean():.4f}")

  eval_keys = jax.random.split(k_eval, s_)
  acc = {}
  for method in METHODS:
    acc[method] = np.array([accuracy_by_length(
        model_def.merge(jax.tree.map(lambda x, s=s: x[s], params[method])), sampler, heldout,
        eval_keys[s]) for s in range(s_)])                                    # [S, K]
    log(f"  {LABELS[method]:28s} accuracy by operand count "
        + ", ".join(f"{k}: {a:.3f}" for k, a in zip(lengths(config), acc[method].mean(0),
                                                    strict=True)))
  results = {"config": config.to_dict(), "cpu": study.cpu_model(),
             "device": str(jax.devices()[0]), "timings": timings, "lengths": lengths(config),
             "rm_train_accuracy": rm_acc.tolist(), "identical_pairs": identical,
             "rl_kl": rl_log["train/kl"].tolist(),
             "rl_clip_fraction": rl_log["train/clip_fraction"].tolist(),
             "accuracy": {m: a.tolist() for m, a in acc.items()}}
  results["total_seconds"] = time.perf_counter() - t_start
  results["verdicts"] = verdicts(results)
  return study.save(results, workdir, results_table(results),
                    lambda: plot_results(results, workdir))


# --- verdicts and outputs ----------------------------------------------------------------------


def slopes(diff, steps) -> np.ndarray:
  """Least-squares slope of each row of `diff [S, K]` against `steps [K]`."""
  x = np.asarray(steps, np.float64) - np.mean(steps)
  return (np.asarray(diff) - np.mean(diff, axis=1, keepdims=True)) @ x / np.sum(x * x)


def verdicts(results) -> list[dict]:
  acc = {k: np.asarray(v) for k, v in results["accuracy"].items()}
  steps = np.asarray(results["lengths"]) - 1
  gap = acc["rlhf"] - acc["sft"]                                             # [S, K]
  rlhf = study.interval(gap.mean(1))
  slope = study.interval(slopes(gap, steps))
  longest = study.interval(gap[:, -1])
  sft_slope = study.interval(slopes(acc["sft"], steps))
  iq = study.interval((acc["iq_learn"] - acc["sft"]).mean(1))
  # (2) needs an advantage that grows: a positive slope and RLHF ahead at the longest
  # length (a gap that only narrows as both accuracies fall to 0 is not an advantage).
  if study.decide(slope) == "reproduced" and study.decide(longest) == "reproduced":
    growth = "reproduced"
  elif study.decide(longest) == "contradicted" or study.decide(slope) == "contradicted":
    growth = "contradicted"
  else:
    growth = "not at this scale"
  return [
      {"finding": "RLHF (reward model from the demonstrations + GRPO) beats SFT on the same "
                  "data",
       "verdict": study.decide(rlhf),
       "deciding": f"accuracy, RLHF − SFT, mean over lengths: {study.fmt_ci(rlhf)}"},
      {"finding": "RLHF's advantage over SFT grows with the derivation's length (compounding "
                  "error)",
       "verdict": growth,
       "deciding": f"RLHF − SFT at the longest length {study.fmt_ci(longest)}; slope of RLHF − "
                   f"SFT per derivation step {study.fmt_ci(slope, 4)}; SFT's own accuracy per "
                   f"step {study.fmt_ci(sft_slope, 3)}"},
      {"finding": "IQLearn beats SFT on the same data",
       "verdict": study.decide(iq),
       "deciding": f"accuracy, IQLearn − SFT, mean over lengths: {study.fmt_ci(iq)}"},
  ]


def results_table(results, config=None) -> str:
  del config
  cfg = results["config"]
  ks = results["lengths"]
  lines = [f"## SFT vs reward model + GRPO vs IQLearn ({cfg['num_demonstrations']} "
           f"demonstrations, {cfg['num_seeds']} seeds)", "",
           f"Greedy accuracy on {cfg['eval_per_length']} held-out prompts per operand count "
           f"(k operands: k − 1 steps), mean ± 95% interval over seeds. Reward models' "
           f"training accuracy {np.mean(results['rm_train_accuracy']):.3f}, on the pairs left "
           f"after {np.mean(results['identical_pairs']):.0f} of {cfg['num_demonstrations']} "
           f"(the SFT sample equal to the expert's text) were masked. CPU: "
           f"{results['cpu']}.", "",
           "| method | " + " | ".join(f"k = {k}" for k in ks) + " | mean |",
           "|---|" + "---|" * (len(ks) + 1)]
  for m, a in results["accuracy"].items():
    a = np.asarray(a)
    lines.append(f"| {LABELS[m]} | " + " | ".join(
        study.fmt_pm(study.interval(a[:, i])) for i in range(len(ks)))
        + f" | {a.mean():.3f} |")
  t = results["timings"]
  lines += ["", "Times: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
            + f"; total {results['total_seconds']:.0f} s.", "",
            "| finding | verdict | deciding number |", "|---|---|---|"]
  for v in results["verdicts"]:
    lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['deciding']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir) -> str:
  fig, ax = plt.subplots(figsize=(6, 4))
  ks = np.asarray(results["lengths"])
  for m, a in results["accuracy"].items():
    a = np.asarray(a)
    line, = ax.plot(ks - 1, a.mean(0), marker="o", label=LABELS[m])
    ax.fill_between(ks - 1, a.min(0), a.max(0), color=line.get_color(), alpha=0.15)
  ax.set_xlabel("derivation steps (operands − 1)")
  ax.set_ylabel("held-out accuracy (greedy)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, "rlhf_online_irl.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


if __name__ == "__main__":
  study.command_line(run, results_table, "experiments/configs/rlhf_online_irl.py",
                     "/tmp/rlhf_online_irl")
