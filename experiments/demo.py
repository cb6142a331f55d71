"""A tabular token MDP on which every family of objectives runs in seconds.

    python -m experiments.demo                 # ~1 minute on 2 CPU cores
    python -m experiments.demo --steps=50      # faster, less converged

The problem: a vocabulary of `V` tokens, responses of `T` tokens, state
`s_t = (t, y_{t-1})`, and a hidden reward `r*(y_{t-1}, y_t)`. The expert is the
soft-optimal policy for `r*` (finite horizon, γ = 1), so its log-probabilities
and the reward it implies are known exactly. A tabular "language model"
`Q[t, prev, ·]` plays the LM: its logits are soft Q-values (docs/objectives.md §1).

Table 1 fits the policy from expert demonstrations with MLE, offline IQLearn
and online IQLearn (policy samples mixed in), and reports held-out NLL, the
KL from the expert, how well the extracted token rewards `r̂ = Q − γV(s')`
rank the true `r*` over all state-actions (Spearman). With γ = 1, full-length
responses and one start state, the online value term telescopes to `v_0/T` on
both batches and cancels exactly (near γ = 1 it nearly cancels), so the
online variant and its offline twin run at γ = 0.5.
Step-time ratios belong to `experiments.benchmarks.losses`, not this toy.

Table 2 fits reward models and a DPO policy from rankings of random responses
by their true return, and reports held-out pairwise accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from irl_jax import losses
from irl_jax.eval import spearman

STEPS = flags.DEFINE_integer("steps", 300, "Adam steps per method.")
SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
NUM_DEMOS = flags.DEFINE_integer("num_demos", 256, "Expert demonstrations for table 1.")


class Problem:
  """The token MDP: reward table, soft-optimal expert and a sampler."""

  def __init__(self, key, vocab: int = 6, length: int = 8):
    self.vocab, self.length = vocab, length
    self.bos = vocab  # the start state's "previous token"
    self.reward = jax.random.normal(key, (vocab + 1, vocab))  # r*[prev, a]
    self.expert_q = soft_optimal_q(self.reward, length)

  def logits_of(self, table, tokens):
    """Per-position logits `[B, T, V]` of a `[T, V+1, V]` table for `tokens`."""
    prev = jnp.concatenate([jnp.full((tokens.shape[0], 1), self.bos), tokens[:, :-1]], axis=1)
    return table[jnp.arange(self.length)[None, :], prev]

  def sample(self, key, table, n: int):
    """`n` responses from `softmax(table)`, `[n, T]` int32."""

    def step(prev, xs):
      t, k = xs
      a = jax.random.categorical(k, table[t, prev])
      return a, a

    keys = jax.random.split(key, self.length)
    _, tokens = jax.lax.scan(step, jnp.full((n,), self.bos), (jnp.arange(self.length), keys))
    return tokens.T.astype(jnp.int32)

  def returns(self, tokens):
    prev = jnp.concatenate([jnp.full((tokens.shape[0], 1), self.bos), tokens[:, :-1]], axis=1)
    return jnp.sum(self.reward[prev, tokens], axis=1)


def soft_optimal_q(reward, length):
  """Soft Q-values of the finite-horizon MDP: Q_t(p, a) = r(p, a) + V_{t+1}(a)."""
  v_next = jnp.zeros(reward.shape[1])
  qs = []
  for _ in range(length):
    q = reward + v_next[None, :]
    qs.append(q)
    v_next = jax.nn.logsumexp(q, axis=1)[: reward.shape[1]]  # V_t(prev = a), a < V
  return jnp.stack(qs[::-1])  # [T, V+1, V]


def fit(loss_fn: Callable, params, steps: int, key, lr: float = 0.1):
  """Full-batch Adam; returns the parameters and the median step time (s)."""
  opt = optax.adam(lr)

  @jax.jit
  def update(params, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, key)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = opt.init(params)
  times = []
  for i, k in enumerate(jax.random.split(key, steps)):
    start = time.perf_counter()
    params, opt_state, loss = update(params, opt_state, k)
    loss.block_until_ready()
    if i > 0:  # the first call compiles
      times.append(time.perf_counter() - start)
  return params, float(np.median(times)) if times else float("nan")


def policy_table(problem, steps, key, demos, method: str, gamma=1.0, td_weight=0.5, mix=0.1):
  """Fit a Q-table on demonstrations with one objective."""
  where = jnp.ones(demos.shape, bool)

  def loss_fn(table, key):
    stats = losses.soft_q_stats(problem.logits_of(table, demos), demos)
    if method == "mle":
      return losses.token_mean(losses.mle(stats, where=where), where)
    if method == "iq_learn":
      per_token, _ = losses.iq_learn(stats, where=where, gamma=gamma, td_weight=td_weight)
      return losses.token_mean(per_token, where)
    samples = problem.sample(key, jax.lax.stop_gradient(table), demos.shape[0])
    policy_stats = losses.soft_q_stats(problem.logits_of(table, samples), samples)
    loss, _ = losses.iq_learn_online(
        stats, policy_stats, expert_where=where, policy_where=where, mix=mix, gamma=gamma,
        td_weight=td_weight,
    )
    return loss

  init = jnp.zeros((problem.length, problem.vocab + 1, problem.vocab))
  return fit(loss_fn, init, steps, key)


def token_reward_table(table, gamma):
  """`r̂_t(p, a) = Q_t(p, a) − γ·V_{t+1}(a)` for every state-action, `[T, V+1, V]`."""
  v = jax.nn.logsumexp(table, axis=-1)  # [T, V+1]
  v_next = jnp.concatenate([v[1:, : table.shape[2]], jnp.zeros((1, table.shape[2]))])
  return table - gamma * v_next[:, None, :]


def table1(problem, key, steps, num_demos):
  k_demo, k_test, k_fit = jax.random.split(key, 3)
  demos = problem.sample(k_demo, problem.expert_q, num_demos)
  test = problem.sample(k_test, problem.expert_q, 2048)
  where = jnp.ones(test.shape, bool)
  true_r = np.broadcast_to(problem.reward, (problem.length, *problem.reward.shape)).ravel()
  expert_logp = jax.nn.log_softmax(problem.logits_of(problem.expert_q, test), -1)
  rows = []
  methods = [
      ("MLE", "mle", {}),
      ("IQLearn offline λ=0.5 γ=1", "iq_learn", {"td_weight": 0.5}),
      ("IQLearn offline λ=2 γ=1", "iq_learn", {"td_weight": 2.0}),
      ("IQLearn offline λ=0.5 γ=0.5", "iq_learn", {"td_weight": 0.5, "gamma": 0.5}),
      ("IQLearn online λ=0.5 γ=0.5 α=0.25", "online",
       {"td_weight": 0.5, "gamma": 0.5, "mix": 0.25}),
  ]
  for name, method, kw in methods:
    table, _ = policy_table(problem, steps, k_fit, demos, method, **kw)
    logits = problem.logits_of(table, test)
    stats = losses.soft_q_stats(logits, test)
    nll = float(losses.token_mean(losses.mle(stats, where=where), where))
    logp = jax.nn.log_softmax(logits, -1)
    kl = float(jnp.mean(jnp.sum(jnp.exp(expert_logp) * (expert_logp - logp), -1)))
    rho = spearman(np.asarray(token_reward_table(table, kw.get("gamma", 1.0))).ravel(), true_r)
    rows.append({"method": name, "held-out NLL": nll, "KL(expert‖model)": kl,
                 "Spearman(r̂, r*)": rho})
  expert_nll = float(-jnp.mean(jnp.take_along_axis(expert_logp, test[..., None], -1)))
  rows.append({"method": "expert (reference)", "held-out NLL": expert_nll,
               "KL(expert‖model)": 0.0, "Spearman(r̂, r*)": 1.0})
  return rows


def table2(problem, key, steps):
  k_rank, k_test, k_fit = jax.random.split(key, 3)
  uniform = jnp.zeros_like(problem.expert_q)
  n, k = 256, 4
  seqs = problem.sample(k_rank, uniform, n * k).reshape(n, k, problem.length)
  order = jnp.argsort(-problem.returns(seqs.reshape(n * k, -1)).reshape(n, k), axis=1)
  ranked = jnp.take_along_axis(seqs, order[..., None], axis=1)  # best first
  test = problem.sample(k_test, uniform, 4096).reshape(2048, 2, problem.length)
  test_r = problem.returns(test.reshape(4096, -1)).reshape(2048, 2)

  def seq_reward(phi, tokens):  # linear reward model: Σ_t φ[prev_t, y_t]
    prev = jnp.concatenate([jnp.full((*tokens.shape[:-1], 1), problem.bos), tokens[..., :-1]], -1)
    return jnp.sum(phi[prev, tokens], axis=-1)

  def accuracy(score):
    return float(jnp.mean((score[:, 0] > score[:, 1]) == (test_r[:, 0] > test_r[:, 1])))

  phi0 = jnp.zeros(problem.reward.shape)
  objectives = {
      "Bradley–Terry (best vs worst)": lambda phi, _: jnp.mean(losses.bradley_terry(
          seq_reward(phi, ranked[:, 0]), seq_reward(phi, ranked[:, -1]))),
      "Pairwise split (K=4)": lambda phi, _: jnp.mean(
          losses.pairwise_split(seq_reward(phi, ranked))),
      "Plackett–Luce (K=4)": lambda phi, _: jnp.mean(losses.plackett_luce(seq_reward(phi, ranked))),
  }
  rows = []
  for name, loss_fn in objectives.items():
    phi, _ = fit(loss_fn, phi0, steps, k_fit)
    rows.append({"method": name, "held-out pair accuracy": accuracy(seq_reward(phi, test))})

  ref_logp = jnp.full((n,), -problem.length * np.log(problem.vocab))  # uniform reference

  def seq_logp(table, tokens):  # every response is a full T tokens: no mask needed
    return jnp.sum(losses.soft_q_stats(problem.logits_of(table, tokens), tokens).log_probs, -1)

  def dpo_loss(table, _):
    return jnp.mean(losses.dpo(seq_logp(table, ranked[:, 0]), seq_logp(table, ranked[:, -1]),
                               ref_logp, ref_logp, beta=0.5))

  table, _ = fit(dpo_loss, jnp.zeros_like(problem.expert_q), steps, k_fit)
  # β·log π/π_ref with a uniform reference orders pairs as log π does.
  score = jnp.stack([seq_logp(table, test[:, i]) for i in range(2)], 1)
  rows.append({"method": "DPO policy (β=0.5), implied reward", "held-out pair accuracy":
               accuracy(score)})
  return rows


def format_table(rows) -> str:
  keys = list(rows[0])
  cells = [[r[k] if isinstance(r[k], str) else f"{r[k]:.3f}" for k in keys] for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
  def line(vals):
    return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(keys), sep, *(line(c) for c in cells)])


def main(argv):
  del argv
  key = jax.random.key(SEED.value)
  k_problem, k1, k2 = jax.random.split(key, 3)
  problem = Problem(k_problem)
  print(f"Token MDP: V={problem.vocab}, T={problem.length}, γ=1, soft-optimal expert; "
        f"{STEPS.value} Adam steps per method.\n")
  print("Table 1: imitation from expert demonstrations "
        f"({NUM_DEMOS.value} demonstrations, 2048 held out)")
  print(format_table(table1(problem, k1, STEPS.value, NUM_DEMOS.value)))
  print("\nTable 2: learning from rankings of random responses by true return "
        "(256 rankings, 2048 held-out pairs)")
  print(format_table(table2(problem, k2, STEPS.value)))


if __name__ == "__main__":
  app.run(main)
