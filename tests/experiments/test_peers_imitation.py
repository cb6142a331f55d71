"""The imitation-peer MCE IRL benchmark: only its irl_jax half runs here (no venv, no
network); the peer's input file, its output parsing and the missing-peer message are
checked without imitation."""

import json
import math
import sys

import jax
import numpy as np
import pytest

from experiments.benchmarks import peers_imitation as bench
from irl_jax.tabular.mdp import make_mdp


@pytest.fixture(scope="module")
def problem():
  return bench.make_problem(4, 3, 5)  # 12 states, 4 actions, horizon 5


def test_cliff_world_port_follows_seals():
  trans, initial, reward, obs = bench.cliff_world(4, 3)
  assert trans.shape == (12, 4, 12) and np.allclose(trans.sum(-1), 1)
  assert initial[0] == 1 and initial.sum() == 1
  np.testing.assert_array_equal(obs, np.eye(12, dtype=np.float32))
  # Row 0 holds start (-1), cliff (-10) and goal (+10); every other cell is -1.
  np.testing.assert_array_equal(reward[:4], [-1, -10, -10, 10])
  assert np.all(reward[4:] == -1)
  # From the start (row 0, col 0), action 3 = (down, right): (1, 1) with 0.7, else the
  # wind blows it one row further up, clamped to row 0: (0, 1).
  np.testing.assert_allclose(trans[0, 3, [5, 1]], [0.7, 0.3])


def test_irl_jax_half_runs_and_error_decreases(problem):
  errors = bench.irl_jax_errors(problem, steps=100, lr=0.1)
  assert errors.shape == (100,) and np.all(np.isfinite(errors))
  assert errors[-1] < 0.2 * errors[0]
  # The common error of the expert's own reward is 0 (float32 noise).
  assert bench.reward_error(problem, problem.peer_arrays["reward"]) < 1e-4

  rows = bench.run(problem, lr=0.1, max_iter=60, seeds=2, repeats=1, peer_python=None)
  by = {r["metric"]: r for r in rows}
  assert {"mce_irl_compile_s_irl_jax", "mce_irl_step_time_irl_jax",
          "mce_irl_final_occupancy_error_irl_jax", "mce_irl_seeds_per_second"} == set(by)
  for r in rows:
    assert math.isfinite(r["value"]) and r["value"] > 0
    assert {"cpu", "cpus_available", "mdp"} <= set(r) and "jax_threads" not in r
  final = by["mce_irl_final_occupancy_error_irl_jax"]
  assert final["value"] < final["initial_error"]
  assert by["mce_irl_seeds_per_second"]["seeds"] == 2
  table = bench.format_rows(rows)
  assert "mce_irl_seeds_per_second" in table and "cpus_available=" in table


def test_trajectory_is_the_learners(problem):
  weights, errors = bench.irl_jax_trajectory(problem, steps=20, lr=0.1)
  assert weights.shape == (20, 12) and errors.shape == (20,)
  # Row 0: the initial weights; errors: the learner's own log.
  np.testing.assert_array_equal(weights[0], np.asarray(bench.init_fn(12)(jax.random.key(0))))
  np.testing.assert_allclose(errors, bench.irl_jax_errors(problem, steps=20, lr=0.1),
                             rtol=1e-5, atol=1e-6)
  # Row k: the weights make_mce_irl returns after k steps.
  params, _ = jax.jit(bench.make_train(problem, steps=7, lr=0.1))(
      jax.random.key(0), problem.mdp, problem.expert_occupancy)
  np.testing.assert_allclose(weights[7], np.asarray(params), rtol=1e-5, atol=1e-6)


def test_state_visitation_is_imitations(problem):
  """Σ_{t≤H} D_t, final state included: the expert's reward gives `demo_state_om`."""
  expert_r = problem.peer_arrays["reward"]
  om = bench.state_visitation(problem, expert_r)
  assert om.shape == (12,) and np.isclose(om.sum(), problem.horizon + 1, atol=1e-4)
  np.testing.assert_allclose(om, problem.peer_arrays["expert_state_om"], atol=1e-5)
  batch = np.stack([expert_r, np.zeros(12)])
  linf = bench.state_linf(problem, batch)
  assert linf.shape == (2,) and linf[0] < 1e-5 and linf[1] > 1e-2
  # A float64 NumPy transcription of imitation's mce_partition_fh / mce_occupancy_measures
  # (Q_{H-1} = r, Q_t = r + P V_{t+1}; D_0 = ν0, ..., D_H; Dcum = Σ_{t≤H} D_t).
  trans, init, h = problem.peer_arrays["transitions"], problem.peer_arrays["initial"], 5
  r = np.zeros(12)
  q = np.zeros((h, 12, 4))
  v = np.zeros((h, 12))
  q[h - 1] = r[:, None]
  v[h - 1] = np.log(np.exp(q[h - 1]).sum(1))
  for t in reversed(range(h - 1)):
    q[t] = r[:, None] + trans @ v[t + 1]
    v[t] = np.log(np.exp(q[t]).sum(1))
  pi = np.exp(q - v[:, :, None])
  d = np.zeros((h + 1, 12))
  d[0] = init
  for t in range(h):
    d[t + 1] = np.einsum("s,sa,sat->t", d[t], pi[t], trans)
  np.testing.assert_allclose(bench.state_visitation(problem, r), d.sum(0), atol=1e-5)


def test_run_with_a_stand_in_peer(problem, monkeypatch):
  """The peer rows and ratios, with a stand-in peer built from irl_jax's own iterates
  (no imitation here): same errors and state visitations, 1 ms per iteration."""
  n = 30
  # The first n of the 3n-step search run that `run` makes (same shapes, same floats).
  weights, errors = bench.irl_jax_trajectory(problem, steps=3 * n, lr=0.1)
  linf = bench.state_linf(problem, weights)[:n]
  weights, errors = weights[:n], errors[:n]
  eps_linf = float(linf.min())  # a linf rule the stand-in meets within its n iterations
  fake = {"versions": {"imitation": "stand-in"}, "torch_threads": 1, "blas_threads": None,
          "setup_s": 0.0, "train_s": n * 1e-3, "iterations": n, "stopped_by": "linf_eps",
          "time_s": [1e-3 * (i + 1) for i in range(n)], "error": errors.tolist(),
          "state_l1": linf.tolist(), "state_linf": linf.tolist(),
          "final_reward": weights[-1].tolist(), "checks": {}}
  calls = []

  def fake_eval(python, problem_, rewards, *, linf_eps):
    calls.append(len(rewards))
    values = bench.state_linf(problem_, rewards)
    hit = bench._first_at_or_below(values, linf_eps)
    values = values if hit is None else values[:hit + 1]
    return {"state_linf": values.tolist(), "state_l1": values.tolist()}

  monkeypatch.setattr(bench, "run_peer", lambda *a, **k: fake)
  monkeypatch.setattr(bench, "peer_state_linf", fake_eval)
  rows = bench.run(problem, lr=0.1, max_iter=n, seeds=2, repeats=1, peer_python="stand-in",
                   linf_eps=eps_linf)
  by = {r["metric"]: r for r in rows}
  assert calls == [3 * n]  # the search run: 3× the peer's iterations
  for m in ("mce_irl_step_time_ratio", "mce_irl_step_count_ratio",
            "mce_irl_speedup_vs_imitation", "mce_irl_speedup_end_to_end",
            "mce_irl_speedup_own_criterion", "mce_irl_time_to_own_criterion_imitation",
            "mce_irl_time_to_own_criterion_irl_jax"):
    assert math.isfinite(by[m]["value"]) and by[m]["value"] > 0, m
  step_jax = by["mce_irl_step_time_irl_jax"]["value"]
  assert math.isclose(by["mce_irl_step_time_ratio"]["value"], 1e-3 / step_jax)
  # Same iterates: irl_jax needs as many steps to ε and to the linf rule as the stand-in.
  assert by["mce_irl_step_count_ratio"]["value"] == 1.0
  own = by["mce_irl_speedup_own_criterion"]
  assert own["irl_jax_steps"] == own["imitation_iterations"] == int(np.argmin(linf)) + 1
  assert by["mce_irl_time_to_own_criterion_irl_jax"]["irl_jax_dp_check_abs_diff"] < 1e-5
  assert by["mce_irl_time_to_error_irl_jax"]["trajectory_check_abs_diff"] < 1e-5
  e2e = by["mce_irl_speedup_end_to_end"]
  assert e2e["value"] < by["mce_irl_speedup_vs_imitation"]["value"]
  assert math.isclose(e2e["irl_jax_s"], e2e["irl_jax_compile_s"]
                      + by["mce_irl_time_to_error_irl_jax"]["value"])
  # The table prints one line per JSON row, with the same values.
  table = bench.format_rows(rows).splitlines()[1:]
  assert [line.split()[0] for line in table] == [r["metric"] for r in rows]
  for line, r in zip(table, rows, strict=True):
    assert math.isclose(float(line.split()[1]), r["value"], rel_tol=1e-3)
  json.loads(json.dumps(rows))


def test_peer_problem_round_trips_exactly(problem, tmp_path):
  w0 = np.linspace(-0.1, 0.1, 12)
  path = bench.write_peer_problem(str(tmp_path / "p.npz"), problem, init_weight=w0, lr=0.1,
                                  max_iter=7)
  loaded = dict(np.load(path))
  for name, value in problem.peer_arrays.items():
    assert loaded[name].dtype == np.asarray(value).dtype, name
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  np.testing.assert_array_equal(loaded["init_weight"], w0)
  assert loaded["lr"] == 0.1 and loaded["max_iter"] == 7 and loaded["linf_eps"] == 1e-3
  # The MDP irl_jax runs is the written one (rounded to float32).
  mdp = make_mdp(loaded["transitions"], loaded["initial"], loaded["discount"])
  np.testing.assert_array_equal(np.asarray(mdp.transitions), np.asarray(problem.mdp.transitions))
  np.testing.assert_array_equal(np.asarray(mdp.initial), np.asarray(problem.mdp.initial))
  assert float(loaded["discount"]) == 1.0 and int(loaded["horizon"]) == problem.horizon
  # Conventions: irl_jax's ρ_E covers the H state-action pairs, imitation's state
  # visitation the H + 1 states of an episode (the final state included).
  h = problem.horizon
  assert np.isclose(loaded["expert_occupancy"].sum(), h, atol=1e-5)
  assert np.isclose(loaded["expert_state_om"].sum(), h + 1, atol=1e-5)
  np.testing.assert_allclose(loaded["expert_occupancy"], np.asarray(problem.expert_occupancy),
                             atol=1e-7)


def test_parse_peer_output_canned():
  result = {"versions": {"imitation": "1.0.1"}, "time_s": [0.1, 0.2], "error": [1.0, 0.5],
            "iterations": 2, "final_reward": [0.0, 1.0], "checks": {}}
  stdout = ("Logging to /tmp/x\n" + bench.RESULT_PREFIX + json.dumps({"stale": 1}) + "\n"
            + bench.RESULT_PREFIX + json.dumps(result) + "\n")
  assert bench.parse_peer_output(stdout) == result
  with pytest.raises(ValueError, match="printed no result line"):
    bench.parse_peer_output("Traceback (most recent call last):\n  boom\n")
  bad = dict(result, error=[1.0])
  with pytest.raises(ValueError, match="unequal length"):
    bench.parse_peer_output(bench.RESULT_PREFIX + json.dumps(bad))
  with pytest.raises(ValueError, match="lacks"):
    bench.parse_peer_output(bench.RESULT_PREFIX + json.dumps({"versions": {}}))


def test_missing_peer_python_gives_a_clear_message(tmp_path):
  missing = str(tmp_path / "nowhere" / "bin" / "python")
  with pytest.raises(bench.PeerUnavailable, match=r"--peer_python=.*is not an executable"):
    bench.resolve_peer_python(missing, str(tmp_path / "venv"), create=False)
  # A python without imitation (this one) is refused with what to install.
  with pytest.raises(bench.PeerUnavailable, match=r"cannot import imitation.*imitation==1\.0\.1"):
    bench.resolve_peer_python(sys.executable, str(tmp_path / "venv"), create=False)
  # No --peer_python and no venv: the peer is skipped (None) unless asked to create it.
  assert bench.resolve_peer_python(None, str(tmp_path / "venv"), create=False) is None


def test_first_at_or_below():
  assert bench._first_at_or_below([3.0, 2.0, 1.0, 1.5, 0.5], 1.5) == 2
  assert bench._first_at_or_below([3.0, 2.0], 1.0) is None
