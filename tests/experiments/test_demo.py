"""Smoke test of the README's main-job demo (few steps, same code path)."""

import jax
import numpy as np

from experiments import demo


def test_soft_optimal_expert_implies_the_true_reward():
  # For the soft-optimal expert, r̂ = Q − V(s') is exactly r* (γ = 1).
  problem = demo.Problem(jax.random.key(0), vocab=4, length=5)
  r_hat = np.asarray(demo.token_reward_table(problem.expert_q, 1.0))
  np.testing.assert_allclose(r_hat, np.broadcast_to(problem.reward, r_hat.shape), atol=1e-5)


def test_tables_run_and_learn():
  problem = demo.Problem(jax.random.key(0))
  k1, k2 = jax.random.split(jax.random.key(1))
  rows = demo.table1(problem, k1, steps=40, num_demos=128)
  assert rows[0]["method"] == "MLE" and len(rows) == 6
  expert_nll = rows[-1]["held-out NLL"]
  for row in rows[:-1]:
    assert np.isfinite(row["held-out NLL"]) and row["held-out NLL"] >= expert_nll - 0.05
    assert 0 <= row["KL(expert‖model)"] < np.log(problem.vocab)  # better than uniform
  rows2 = demo.table2(problem, k2, steps=40)
  for row in rows2:
    assert row["held-out pair accuracy"] > 0.6, row  # well above chance (0.5)
  table = demo.format_table(rows2)
  assert table.count("\n") == len(rows2) + 1 and "Plackett–Luce" in table
