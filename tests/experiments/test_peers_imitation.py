"""The imitation-peer MCE IRL benchmark: only its irl_jax half runs here (no venv, no
network); the peer's input file, its output parsing and the missing-peer message are
checked without imitation."""

import json
import math
import sys

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
    assert {"cpu", "jax_threads", "mdp"} <= set(r)
  final = by["mce_irl_final_occupancy_error_irl_jax"]
  assert final["value"] < final["initial_error"]
  assert by["mce_irl_seeds_per_second"]["seeds"] == 2
  table = bench.format_rows(rows)
  assert "mce_irl_seeds_per_second" in table and "jax_threads=" in table


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
