"""Reproduce "Imitating Language via Scalable Inverse RL" (Wulfmeier et al. 2024) at laptop scale.

    python -m experiments.imitate_language --workdir=/tmp/imitate                     # ~9 min
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.quick=True  # ~1-2 min
    python -m experiments.imitate_language --workdir=/tmp/imitate --config.full_grid=True

One study, two scales, one code path. At laptop scale (`config.backend =
"compiled"`), every method trains the same small character-level transformer
from scratch on the arithmetic task's expert derivations, through the
library's own pieces: `irl_jax.data.lm_arrays` encodes the data, the
registry builds the objective, `irl_jax.train.make_train_step` is the step
(with `irl_jax.train.rollouts.in_step_sampler` for online IQLearn), and
`irl_jax.train.compiled.make_train` turns a method into `train(key)`, so
the seeds run in parallel under `jax.vmap`. At accelerator scale
(`backend = "trainer"`, `experiments/configs/imitate_language_gsm8k.py`),
each method and seed is a sharded, checkpointed run of
`irl_jax.train.train` from a pretrained checkpoint on GSM8K. Either way the
policies are measured by the same generation-based metrics
(`irl_jax.train.generation`): accuracy with the task's checker, Self-BLEU,
distinct-n, per-token entropy, and the within-prompt correlation between
extracted rewards and checker scores.

Methods: MLE, MLE with an entropy bonus, offline IQLearn (TD-regularised MLE)
over TD weights λ and discounts γ, online IQLearn (policy samples drawn inside
the compiled step). A small-data run tests whether TD regularisation reduces
overfitting. `results.md` closes with one verdict per finding of the paper,
decided by the paired difference to MLE over seeds (95% t-interval). Outputs
in the work directory: `results.md`, `results.json` and PNG plots.

The logic lives in importable functions (`run`, `make_train`, `evaluate`)
that the Colab notebook `colab/imitate_language.ipynb` calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import study
from experiments.study import decide, fmt_pm, interval
from experiments.tasks import load as load_task
from irl_jax import losses, models
from irl_jax.data import char_tokenizer, lm_arrays
from irl_jax.train import generation, lm, optim, registry, rollouts
from irl_jax.train.compiled import compile_seeds, cpu_compiler_options
from irl_jax.train.compiled import make_train as make_compiled_train
from irl_jax.train.state import TrainState, split_model
from irl_jax.train.step import make_train_step

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "imitate_language.py")

LM_KEYS = ("input_ids", "segment_ids", "positions", "loss_mask")

# -- methods ---------------------------------------------------------------------------------


def method_name(m) -> str:
  m = dict(m)
  if m.get("label"):
    return m["label"]
  kind = m["objective"]
  if kind == "mle":
    return "MLE" if not m.get("entropy_bonus") else f"MLE + entropy {m['entropy_bonus']}"
  name = f"IQLearn λ={m['td_weight']} γ={m['gamma']}"
  return name + (f" online α={m['mix']}" if kind == "iq_learn_online" else "")


def method_spec(m):
  """`(spec, hyperparameters)` of a method dict `{"objective": name, **hyperparameters}`."""
  m = {k: v for k, v in dict(m).items() if k != "label"}
  name = m.pop("objective")
  spec = registry.get(name)
  fields = {f.name for f in dataclasses.fields(spec.hyperparameters)}
  unknown = sorted(set(m) - fields)
  if unknown:
    raise ValueError(f"config.methods: {name!r} has no hyperparameters {unknown}; "
                     f"it has {sorted(fields)}.")
  if spec.data != "demonstrations" or spec.reward_fn or spec.reference or spec.reward_head:
    raise ValueError(f"config.methods: {name!r} needs more than demonstrations (a reward "
                     "function, a reference or preferences); this study trains on "
                     "demonstrations only.")
  return spec, spec.hyperparameters(**m)


def resolve(config):
  """The config with its quick settings (or the full λ×γ grid) applied."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if config.get("quick"):
      for k, v in config.quick_settings.items():
        config[k] = v
      config.methods = list(config.quick_methods)
    elif config.get("full_grid"):
      names = {method_name(m) for m in config.methods}
      extra = [dict(objective="iq_learn", td_weight=lam, gamma=g)
               for lam in config.grid_td_weights for g in config.grid_gammas]
      config.methods = list(config.methods) + [m for m in extra if method_name(m) not in names]
  names = [method_name(m) for m in config.methods]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"config.methods: {repeated} appear twice (methods that differ in fields "
                     "the name does not show need a 'label').")
  if method_name(config.baseline) not in names:
    raise ValueError(f"config.baseline: {method_name(config.baseline)!r} is not one of "
                     f"config.methods {names}.")
  return config


# -- data ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class StudyData:
  tokenizer: object
  train_pool: list  # demonstrations, the largest set; smaller sets are its prefixes
  heldout: dict  # [N_heldout, T] arrays
  eval_batch: dict  # the evaluation prompts' rows (prompt + reference response)
  probe: dict  # correct and corrupted responses to the eval prompts
  probe_scores: np.ndarray
  probe_groups: np.ndarray


def disjoint_pool(rng, n: int, difficulty, task, exclude: set[str]) -> list:
  """`n` demonstrations whose prompts are not in `exclude` (held-out prompts stay unseen)."""
  pool, drawn = [], 0
  while len(pool) < n:
    batch = task.make_dataset(rng, n, difficulty)
    drawn += len(batch)
    pool.extend(ex for ex in batch if ex["prompt"] not in exclude)
    if drawn > 20 * n and len(pool) < n:
      raise ValueError(f"only {len(pool)} of {drawn} drawn demonstrations have prompts outside "
                       "the held-out set: the task's difficulty allows too few distinct prompts "
                       "for config.num_demonstrations and config.num_heldout.")
  return pool[:n]


def make_data(config, task) -> StudyData:
  """Held-out prompts first (their own seed), then a training pool that never shows them,
  then correct and corrupted derivations of the eval prompts (the reward probe)."""
  tokenizer = char_tokenizer(task.ALPHABET)
  difficulty = task.Difficulty(config.min_operands, config.max_operands, config.digits,
                               config.op)
  heldout_examples = task.make_dataset(np.random.default_rng([config.data_seed, 1]),
                                       config.num_heldout, difficulty)
  pool = disjoint_pool(np.random.default_rng([config.data_seed, 0]),
                       max((*config.data_sizes, config.num_demonstrations)), difficulty, task,
                       {ex["prompt"] for ex in heldout_examples})
  heldout = lm_arrays(heldout_examples, tokenizer, seq_len=config.seq_len)
  rollouts.check_prompt_lengths(heldout, config.prompt_len)
  eval_batch = {k: v[:config.num_eval_prompts] for k, v in heldout.items()}
  rng = np.random.default_rng([config.data_seed, 2])
  probe, scores, groups = [], [], []
  for i, ex in enumerate(heldout_examples[:config.num_eval_prompts]):
    op, operands = ex["prompt"].split()[0], [int(x) for x in ex["prompt"].split()[1:]]
    good = task.expert_derivation(rng, op, operands)
    for kind in (None, "answer", "step", "both"):
      response = good if kind is None else task.corrupt(rng, good, kind)
      probe.append({"prompt": ex["prompt"], "response": response})
      scores.append(task.check(ex["prompt"], response).score)
      groups.append(i)
  probe_arrays = lm_arrays(probe, tokenizer, seq_len=config.seq_len + 8)
  return StudyData(tokenizer, pool, heldout, eval_batch, probe_arrays, np.asarray(scores),
                   np.asarray(groups))


# -- training -----------------------------------------------------------------------------------


def model_config(config, vocab_size: int) -> models.ModelConfig:
  mc = config.model
  return models.ModelConfig(
      model_type="llama", vocab_size=vocab_size, hidden_size=mc.hidden_size,
      num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
      head_dim=mc.hidden_size // mc.num_heads, intermediate_size=mc.intermediate_size,
      max_position_embeddings=config.seq_len + config.max_new_tokens + 8)


def heldout_nll_fn(model_def, heldout: dict):
  """`params -> {"heldout_nll": token-mean NLL of the held-out responses}`."""
  arrays = {k: jnp.asarray(heldout[k]) for k in LM_KEYS}

  def fn(params):
    stats, where = lm.batch_stats(model_def.merge(params), arrays)
    return {"heldout_nll": losses.token_mean(losses.mle(stats, where=where), where)}

  return fn


@dataclasses.dataclass(frozen=True)
class MethodParts:
  """What a method trains with: the model's structure and initialiser, the objective,
  the optimizer and schedule, and the in-step sampler of online methods."""

  model_def: object
  init_params: object
  objective: object
  tx: object
  schedule: object
  sampler: object


def method_parts(config, method, *, tokenizer, steps: int) -> MethodParts:
  spec, hp = method_spec(method)
  cfg = model_config(config, len(tokenizer))
  model_def, _ = split_model(nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))))
  tx, schedule = optim.make_optimizer(
      learning_rate=config.learning_rate, warmup_steps=config.warmup_steps, total_steps=steps,
      decay="cosine", clip_norm=1.0)
  sampler = None
  if spec.sampler:
    sampler = rollouts.in_step_sampler(
        max_new_tokens=hp.max_new_tokens, prompt_len=config.prompt_len,
        temperature=hp.temperature, num_samples=hp.num_samples,
        num_prompts=config.get("online_sample_prompts") or None,
        eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
  return MethodParts(
      model_def=model_def,
      init_params=lambda key: split_model(models.Transformer(cfg, rngs=nnx.Rngs(key)))[1],
      objective=spec.build(hp), tx=tx, schedule=schedule, sampler=sampler)


def make_train(config, method, data: dict, heldout: dict, *, tokenizer, steps=None):
  """`(train(key) -> (state, log), model_def)` for one method: the study in the
  `make_train(config) -> train(key)` form (see `irl_jax.train.compiled`)."""
  steps = steps or config.steps
  parts = method_parts(config, method, tokenizer=tokenizer, steps=steps)
  train = make_compiled_train(
      parts.init_params, parts.model_def, parts.objective, parts.tx,
      {k: data[k] for k in LM_KEYS}, steps=steps, batch_size=config.batch_size,
      eval_every=min(config.eval_every, steps), eval_fn=heldout_nll_fn(parts.model_def, heldout),
      schedule=parts.schedule, sampler=parts.sampler)
  return train, parts.model_def


def step_times(config, methods, data: dict, *, tokenizer, rounds: int = 5,
               steps_per_round: int = 10) -> dict[str, float]:
  """Median seconds per train step of each method (one seed, one fixed batch), measured
  after compilation in interleaved rounds so that every method sees the same machine."""
  batch = {k: jnp.asarray(data[k][:config.batch_size]) for k in LM_KEYS}
  fns = {}
  for m in methods:
    parts = method_parts(config, m, tokenizer=tokenizer, steps=config.steps)
    step = make_train_step(parts.model_def, parts.objective, parts.tx, parts.schedule,
                           sampler=parts.sampler)
    params = parts.init_params(jax.random.key(0))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=parts.tx.init(params),
                       rng=jax.random.key_data(jax.random.key(1)))

    def many(state, batch, step=step):
      return jax.lax.scan(lambda s, _: step(s, batch), state, None, length=steps_per_round)

    fn = jax.jit(many).lower(state, batch).compile(compile_options(config))
    jax.block_until_ready(fn(state, batch))
    fns[method_name(m)] = (fn, state)
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, (fn, state) in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(state, batch))
      times[name].append((time.perf_counter() - t0) / steps_per_round)
  return {name: float(np.median(t)) for name, t in times.items()}


def step_time_methods(config) -> list:
  """The methods timed in interleaved rounds: every method, or with
  `config.step_time_all_methods` off (the quick config), the two that finding (5)
  compares, MLE and `main_iq_learn`."""
  if config.get("step_time_all_methods", True):
    return list(config.methods)
  wanted = {method_name(config.baseline), method_name(config.main_iq_learn)}
  return [m for m in config.methods if method_name(m) in wanted]


def compile_options(config) -> dict | None:
  """The config's XLA:CPU compile options for the training programs (None off CPU)."""
  return cpu_compiler_options(config.get("xla_cpu_options"))


def seed_keys(config):
  return jax.random.split(jax.random.key(config.seed), config.num_seeds)


def train_method(config, method, data: dict, heldout: dict, *, tokenizer, steps=None) -> dict:
  """Train one method for every seed at once; compile and run are timed apart."""
  train, model_def = make_train(config, method, data, heldout, tokenizer=tokenizer, steps=steps)
  keys = seed_keys(config)
  t0 = time.perf_counter()
  compiled, placed = compile_seeds(train, keys,  # the seeds spread over the devices
                                   compiler_options=compile_options(config))
  t1 = time.perf_counter()
  state, log = compiled(*placed)
  jax.block_until_ready(state)
  run_time = time.perf_counter() - t1
  steps = steps or config.steps
  log = jax.device_get(log)
  if not np.all(log["train"]["train/finite"]):
    bad = np.argwhere(log["train"]["train/finite"] == 0)[0]
    raise FloatingPointError(f"{method_name(method)}: non-finite loss or gradient at seed "
                             f"{bad[0]}, step {bad[1] + 1}.")
  nll = np.asarray(log["eval"]["heldout_nll"])  # [seeds, evals]
  return {
      "params": state.params, "model_def": model_def,
      "curve": [(int(s), nll[:, i].tolist()) for i, s in enumerate(log["eval_step"][0])],
      "final_train_loss": np.asarray(log["train"]["train/loss"][:, -1]).tolist(),
      "compile_time": t1 - t0, "run_time": run_time, "step_time": run_time / steps,
  }


# -- evaluation ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\d+|[+*=#]|\n")


def words(text: str) -> list[str]:
  """Units of the diversity metrics: numbers, operators, line breaks."""
  return _TOKEN.findall(text)


def seed_params(trained, i: int):
  """Seed `i`'s parameters, on the default device (the seeds' evaluations run one
  after another there, with every core; `compile_seeds` may have spread them)."""
  return jax.device_put(jax.tree.map(lambda x: x[i], trained["params"]), jax.devices()[0])


def evaluate(config, trained, study: StudyData, checker) -> list[dict]:
  """Per-seed generation metrics (T=1 and the low temperature) and reward ranking."""
  model_def = trained["model_def"]
  rows = []
  for i in range(config.num_seeds):
    model = model_def.merge(seed_params(trained, i))
    row = {"seed": i, "heldout_nll": trained["curve"][-1][1][i]}
    for label, temp in (("t1", 1.0), ("tlow", config.low_temperature)):
      m = generation.generation_metrics(
          model, study.eval_batch, study.tokenizer, checker=checker,
          key=jax.random.fold_in(jax.random.key(config.seed), 1000 * i + 7),
          temperature=temp,
          num_samples=config.num_samples, max_new_tokens=config.max_new_tokens,
          gamma=config.reward_gamma, words=words, prompt_len=config.prompt_len)
      responses = m.pop("responses")
      row.update({f"{k}_{label}": v for k, v in m.items()})
      if label == "t1":
        row["examples"] = responses[:config.num_samples]
    ranking = generation.reward_ranking(model, study.probe, study.probe_scores,
                                        study.probe_groups, gamma=config.reward_gamma)
    loglik = generation.reward_ranking(model, study.probe, study.probe_scores,
                                       study.probe_groups, gamma=1.0)
    row["reward_spearman"] = ranking["spearman"]
    row["loglik_spearman"] = loglik["spearman"]
    row["probe_rewards"] = ranking["rewards"].tolist()
    rows.append(row)
  return rows


# -- statistics and verdicts --------------------------------------------------------------------


def summarise(per_seed, keys):
  return {k: interval([r[k] for r in per_seed]) for k in keys}


SUMMARY_KEYS = ("accuracy_t1", "score_t1", "accuracy_tlow", "score_tlow",
                "self_bleu_t1", "distinct_2_t1", "entropy_t1", "self_bleu_tlow",
                "reward_spearman", "loglik_spearman", "heldout_nll")


def paired(results, a: str, b: str, key: str):
  """`(mean, low, high)` of `a − b` over seeds (same seeds, same data order)."""
  ra, rb = results["methods"][a]["per_seed"], results["methods"][b]["per_seed"]
  return interval([x[key] - y[key] for x, y in zip(ra, rb, strict=True)])


def _fmt_ci(ci, digits=3, seeds=None):
  m, lo, hi, n = ci
  text = f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
  return text + (f" (n={n})" if seeds is not None and n < seeds else "")


def verdicts(results, config) -> list[dict]:
  """One verdict per finding of the paper, each with the number that decides it.

  Rules (fixed before running), on paired differences over seeds with 95%
  t-intervals:

  (1) reproduced when `main_iq_learn`'s accuracy at the low temperature is not
      significantly below MLE's (interval's upper end ≥ 0), its Self-BLEU at T=1
      is significantly below MLE's (upper end < 0), and the entropy-bonus MLE
      does not buy as much (it is not both significantly more diverse than MLE,
      without a significant accuracy loss, and at least as diverse as IQLearn);
      contradicted when IQLearn's accuracy is significantly lower, its Self-BLEU
      significantly higher, or the entropy bonus buys the same;
  (2) the small-data overfitting gap (final − best held-out NLL), TD-regularised
      minus MLE, significantly below 0;
  (3) online minus offline IQLearn accuracy significantly above 0;
  (4) IQLearn minus MLE within-prompt reward correlation significantly above 0;
  (5) step-time ratio IQLearn / MLE ≤ 1.1 (contradicted above 1.25).

  Anything else is "not at this scale". A seed whose value is undefined (NaN)
  is left out and the count is shown.
  """
  methods = results["methods"]
  seeds = config.num_seeds
  fmt = lambda ci: _fmt_ci(ci, seeds=seeds)
  mle = method_name(config.baseline)
  iq = method_name(config.main_iq_learn)
  low_t = config.low_temperature
  out = []
  if mle in methods and iq in methods:
    acc = paired(results, iq, mle, "accuracy_tlow")
    div = paired(results, iq, mle, "self_bleu_t1")
    ent_name = next((n for n in methods if n.startswith("MLE + entropy")), None)
    same = False
    number = (f"{iq} − MLE: accuracy (T={low_t}) {fmt(acc)}, Self-BLEU (T=1) {fmt(div)}")
    if ent_name:
      ent_div = paired(results, ent_name, mle, "self_bleu_t1")
      ent_acc = paired(results, ent_name, mle, "accuracy_tlow")
      same = ent_div[2] < 0 and ent_acc[2] >= 0 and ent_div[0] <= div[0]
      number += (f"; {ent_name} − MLE: accuracy {fmt(ent_acc)}, Self-BLEU {fmt(ent_div)}")
    if min(acc[3], div[3]) < 2:
      v = "not at this scale"
    elif acc[2] < 0 or div[1] > 0 or same:
      v = "contradicted"
    elif acc[2] >= 0 and div[2] < 0:
      v = "reproduced"
    else:
      v = "not at this scale"
    out.append(dict(finding="(1) IQLearn matches or beats MLE on accuracy while keeping more "
                    "diversity; an entropy bonus on MLE does not buy the same",
                    verdict=v, number=number))
  sweep = results.get("sweep", {})
  small = [r for r in sweep.values() if r["size"] == min(config.data_sizes)] if sweep else []
  if len(small) == 2:
    gaps = {r["method"]: r for r in small}
    a, b = gaps.get(method_name(config.sweep_methods[1])), gaps.get(mle)
    if a and b:
      diff = interval(np.asarray(b["overfit_gap_per_seed"]) - np.asarray(a["overfit_gap_per_seed"]))
      out.append(dict(finding="(2) TD regularisation reduces overfitting on small datasets",
                      verdict=decide(diff),
                      number=f"n={a['size']}, {a['steps']} steps: overfitting gap (final − best "
                      f"held-out NLL) MLE − {a['method']} {fmt(diff)}; MLE's gap "
                      f"{fmt(interval(b['overfit_gap_per_seed']))}, {a['method']}'s "
                      f"{fmt(interval(a['overfit_gap_per_seed']))}"))
  online = next((n for n in methods if "online" in n), None)
  offline = method_name(config.online_baseline) if config.get("online_baseline") else None
  if online and offline in methods:
    d = paired(results, online, offline, "accuracy_tlow")
    out.append(dict(finding="(3) online IQLearn (policy samples mixed in) adds further gains",
                    verdict=decide(d),
                    number=f"{online} − {offline}: accuracy (T={low_t}) {fmt(d)}"))
  if mle in methods and iq in methods:
    d = paired(results, iq, mle, "reward_spearman")
    out.append(dict(
        finding="(4) rewards extracted from IQLearn correlate with task quality far better "
        "than MLE's", verdict=decide(d),
        number=f"within-prompt Spearman of extracted rewards (γ={config.reward_gamma}) with "
        f"checker scores: {iq} {fmt(methods[iq]['summary']['reward_spearman'])}, "
        f"MLE {fmt(methods[mle]['summary']['reward_spearman'])}, difference {fmt(d)}"))
    ratio = methods[iq]["step_time"] / methods[mle]["step_time"]
    v = ("not at this scale" if np.isnan(ratio) else "reproduced" if ratio <= 1.1
         else "contradicted" if ratio > 1.25 else "not at this scale")
    out.append(dict(finding="(5) an IQLearn update costs about the same as an MLE update",
                    verdict=v, number=f"step time {iq} / MLE = {ratio:.3f} "
                    f"({results['step_time_source']})"))
  return out


# -- the study ---------------------------------------------------------------------------------


def run(config, workdir: str, *, log=print) -> dict:
  """The whole study; writes results.md, results.json and plots into `workdir`."""
  config = resolve(config)
  if config.get("backend", "compiled") == "trainer":
    from experiments import imitate_language_trainer

    return imitate_language_trainer.run(config, workdir, log=log)
  os.makedirs(workdir, exist_ok=True)
  task = load_task(config.task)
  study = make_data(config, task)
  checker = task.checker
  encode = lambda examples: lm_arrays(examples, study.tokenizer, seq_len=config.seq_len)
  results = {"config": config.to_dict(), "backend": "compiled", "device": str(jax.devices()[0]),
             "methods": {}, "sweep": {}}
  trained_models = {}
  main_data = encode(study.train_pool[:config.num_demonstrations])
  rollouts.check_prompt_lengths(main_data, config.prompt_len)
  for m in config.methods:
    name = method_name(m)
    t0 = time.perf_counter()
    trained = train_method(config, m, main_data, study.heldout, tokenizer=study.tokenizer)
    per_seed = evaluate(config, trained, study, checker)
    results["methods"][name] = {
        "method": dict(m), "per_seed": per_seed, "summary": summarise(per_seed, SUMMARY_KEYS),
        "curve": trained["curve"], "step_time": trained["step_time"],
        "compile_time": trained["compile_time"], "run_time": trained["run_time"],
    }
    trained_models[name] = trained
    s = results["methods"][name]["summary"]
    log(f"{name}: acc T={config.low_temperature} {s['accuracy_tlow'][0]:.3f} "
        f"self-BLEU {s['self_bleu_t1'][0]:.3f} reward ρ {s['reward_spearman'][0]:.3f} "
        f"({trained['run_time']:.0f} s training, {time.perf_counter() - t0:.0f} s in all)")
  # Step times: interleaved rounds after compilation (the runs' own wall times above
  # include a shared machine's drift; these are comparable across methods).
  timed = step_time_methods(config)
  t0 = time.perf_counter()
  times = step_times(config, timed, main_data, tokenizer=study.tokenizer)
  mle_time = times[method_name(config.baseline)]
  results["step_time_source"] = (f"medians of 5 interleaved rounds of 10 compiled steps; "
                                 f"{mle_time * 1e3:.1f} ms per MLE step")
  for name, r in results["methods"].items():
    # A method left out of the rounds keeps its training run's seconds per step (all
    # seeds) and has no ratio: run times measured one after another are not compared.
    if name in times:
      r["step_time"] = times[name]
      r["step_time_over_mle"] = times[name] / mle_time
  log(f"step-time rounds of {len(timed)} methods: {time.perf_counter() - t0:.0f} s")

  for m in config.sweep_methods:
    for size in config.data_sizes:
      t0 = time.perf_counter()
      trained = train_method(config, m, encode(study.train_pool[:size]), study.heldout,
                             tokenizer=study.tokenizer, steps=config.sweep_steps)
      nll = np.asarray([c[1] for c in trained["curve"]])  # [evals, seeds]
      gap = nll[-1] - nll.min(0)
      results["sweep"][f"{method_name(m)} | n={size}"] = {
          "method": method_name(m), "size": size, "steps": config.sweep_steps,
          "final_heldout_nll": interval(nll[-1]), "best_heldout_nll": interval(nll.min(0)),
          "overfit_gap": interval(gap), "overfit_gap_per_seed": gap.tolist(),
          "final_train_loss": interval(trained["final_train_loss"]),
          "curve": trained["curve"],
      }
      log(f"sweep {method_name(m)} n={size}: held-out NLL {nll[-1].mean():.3f} "
          f"(best {nll.min(0).mean():.3f}; {time.perf_counter() - t0:.0f} s)")
  results["verdicts"] = verdicts(results, config)
  write_results(results, workdir, study.probe_scores)
  # Trained parameters stay out of results.json; notebooks inspect them.
  results["trained"] = trained_models
  results["tokenizer"] = study.tokenizer
  return results


def write_results(results, workdir: str, probe_scores=None) -> None:
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({k: v for k, v in results.items() if k not in ("trained", "tokenizer")}, f,
              indent=1, default=float)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(results_table(results))
  plot_results(results, workdir, probe_scores)


def token_rewards(trained, tokenizer, prompt: str, response: str, *, gamma: float, seed: int = 0):
  """Per-token implied rewards `r̂_t` of one response under a trained policy.

  Returns `[(character, reward)]` for the response tokens and the final EOS.
  """
  batch = lm_arrays([{"prompt": prompt, "response": response}], tokenizer,
                    seq_len=len(prompt) + len(response) + 2)
  model = trained["model_def"].merge(seed_params(trained, seed))
  stats, where = lm.batch_stats(model, {k: jnp.asarray(batch[k]) for k in LM_KEYS})
  rewards = np.asarray(losses.implied_rewards(stats, where=where, gamma=gamma))[0]
  ids = batch["input_ids"][0]
  return [(tokenizer.decode([int(ids[t + 1])]) or "<eos>", float(rewards[t]))
          for t in np.nonzero(np.asarray(where[0]))[0]]


def results_table(results) -> str:
  low = results["config"].get("low_temperature", "low")
  cols = [("acc T=1", "accuracy_t1"), ("score T=1", "score_t1"),
          (f"acc T={low}", "accuracy_tlow"), ("Self-BLEU T=1 ↓", "self_bleu_t1"),
          ("distinct-2 T=1", "distinct_2_t1"), ("entropy T=1", "entropy_t1"),
          (f"Self-BLEU T={low} ↓", "self_bleu_tlow"), ("reward ρ", "reward_spearman"),
          ("log-lik ρ", "loglik_spearman"), ("held-out NLL", "heldout_nll")]
  lines = ["| method | " + " | ".join(c for c, _ in cols) + " | step time / MLE |",
           "|---" * (len(cols) + 2) + "|"]
  for name, r in results["methods"].items():
    cells = [fmt_pm(r["summary"][k]) if k in r["summary"] else "–" for _, k in cols]
    ratio = r.get("step_time_over_mle")
    lines.append(f"| {name} | " + " | ".join(cells) + " | "
                 + ("–" if ratio is None else f"{ratio:.3f}") + " |")
  if results.get("sweep"):
    lines += ["", "| method | demonstrations | steps | final held-out NLL | best held-out NLL | "
              "overfitting gap (final − best) | final train loss |", "|---" * 7 + "|"]
    for r in results["sweep"].values():
      lines.append(f"| {r['method']} | {r['size']} | {r['steps']} | "
                   f"{fmt_pm(r['final_heldout_nll'])} | {fmt_pm(r['best_heldout_nll'])} | "
                   f"{fmt_pm(r['overfit_gap'])} | {fmt_pm(r['final_train_loss'])} |")
  if results.get("verdicts"):
    lines += ["", "| finding | verdict | deciding number (mean [95% interval] over seeds) |",
              "|---|---|---|"]
    for v in results["verdicts"]:
      lines.append(f"| {v['finding']} | **{v['verdict']}** | {v['number']} |")
  return "\n".join(lines) + "\n"


def plot_results(results, workdir, probe_scores=None):
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

  def half(ci):
    return 0.0 if np.isnan(ci[1]) else (ci[2] - ci[1]) / 2

  def accuracy_vs_diversity(ax, name, r):
    a, b = r["summary"]["accuracy_tlow"], r["summary"]["self_bleu_t1"]
    ax.errorbar(b[0], a[0], xerr=half(b), yerr=half(a), fmt="o", capsize=3, label=name)

  def learning_curve(ax, name, r):
    ax.plot([c[0] for c in r["curve"]], [np.mean(c[1]) for c in r["curve"]], label=name)

  low = results["config"].get("low_temperature", "low")
  one_axis_plot("accuracy_vs_diversity.png", accuracy_vs_diversity,
                "Self-BLEU at T=1 (lower = more diverse)", f"final-answer accuracy at T={low}",
                "accuracy vs diversity (mean, 95% interval over seeds)")
  one_axis_plot("learning_curves.png", learning_curve, "train step",
                "held-out NLL per token (mean over seeds)", "learning curves")
  if probe_scores is None:
    return
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  iq = [n for n in methods if n.startswith("IQLearn")]
  shown = [n for n in (next(iter(methods)), iq[0] if iq else None) if n]
  for ax, name in zip(axes, shown, strict=False):
    rewards = methods[name]["per_seed"][0]["probe_rewards"]
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, len(probe_scores))
    ax.scatter(np.asarray(probe_scores) + jitter, rewards, s=8, alpha=0.6)
    ax.set_title(f"{name}\nwithin-prompt Spearman "
                 f"{methods[name]['per_seed'][0]['reward_spearman']:.2f}", fontsize=8)
    ax.set_xlabel("checker score")
    ax.set_ylabel("extracted sequence reward")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "reward_vs_score.png"), dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  study.command_line(run, lambda results, config: results_table(results),
                     _DEFAULT_CONFIG, "/tmp/imitate_language")
