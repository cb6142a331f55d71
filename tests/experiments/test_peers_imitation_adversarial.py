"""The GAIL/AIRL comparison against imitation: its measures on hand-made runs, its
irl_jax half on a small CartPole case, the peer's input (settings and the
demonstrations as imitation trajectories, with a stand-in for imitation's
`TrajectoryWithRew`), and its errors. imitation itself is not installed here."""

import ast
import json
import math
import sys
import types
from typing import NamedTuple

import numpy as np
import pytest

from experiments.benchmarks import _imitation_adversarial_peer as peer
from experiments.benchmarks import peers_imitation_adversarial as adv
from irl_jax.control import data, ppo


class _Expert(NamedTuple):
  mean_return: float
  random_return: float


class _Episodes(NamedTuple):
  episode_starts: np.ndarray


def _case():
  """A stand-in case: expert 500, random 20, so normalised 0.9 is return 452."""
  return adv.Case("CartPole-v1", None, _Expert(500.0, 20.0), _Episodes(np.zeros(3)), "",
                  ppo.PPOConfig(num_envs=2, num_steps=4, total_timesteps=40))


def _run(returns, seconds, finals, seed=0):
  n = len(returns)
  return {"seed": seed, "env_steps": [8 * (i + 1) for i in range(n)], "seconds": seconds,
          "recent_return": returns, "train_seconds": seconds[-1], "final_returns": finals,
          "rounds": n}


def test_time_to_threshold_and_median():
  case = _case()
  run = _run([100.0, float("nan"), 451.9, 452.0, 300.0], [1.0, 2.0, 3.0, 4.0, 5.0], [500.0])
  assert adv.time_to_threshold(run, case) == 4.0  # 452 is exactly 0.9; NaN never counts
  assert adv.time_to_threshold(run, case, threshold=0.95) is None
  assert adv.median_time([3.0, None, 1.0]) == (3.0, True)
  m, finite = adv.median_time([None, None, 1.0])
  assert m == math.inf and not finite


def test_compare_speedups_bounds_and_final_returns():
  case = _case()
  ours = {"compile_s": 2.0, "runs": [
      _run([460.0, 480.0], [0.5, 1.0], [500.0, 500.0], 0),
      _run([100.0, 470.0], [0.5, 1.0], [260.0, 260.0], 1),
      _run([100.0, 200.0], [0.5, 1.0], [20.0, 20.0], 2)]}
  # imitation: 10× slower per round, the same curves.
  theirs = {"runs": [dict(r, seconds=[10 * s for s in r["seconds"]],
                          train_seconds=10 * r["train_seconds"]) for r in ours["runs"]]}
  rows = {r["metric"]: r for r in adv.compare(case, "gail", ours, theirs, {"cpu": "x"})}
  s = rows["gail_speedup_vs_imitation"]
  # Times to 90%: 0.5, 1.0, never -> median 1.0 (ours) and 10.0 (theirs).
  assert s["bound"] == "exact" and s["value"] == pytest.approx(10.0)
  assert (s["reached_irl_jax"], s["reached_imitation"]) == (2, 2)
  assert rows["gail_round_time_ratio"]["value"] == pytest.approx(10.0)
  assert rows["gail_time_to_90pct_irl_jax"]["per_seed"] == [0.5, 1.0, None]
  # Final normalised returns: (1 + 0.5 + 0) / 3 on both sides.
  assert rows["gail_final_normalised_return_irl_jax"]["value"] == pytest.approx(0.5)
  assert rows["gail_final_return_vs_imitation"]["not_worse"]
  assert rows["gail_final_return_vs_imitation"]["value"] == pytest.approx(0.0)
  assert rows["gail_env_steps_per_second_irl_jax"]["value"] == pytest.approx(16 / 1.0)

  # imitation never reaches 90% on its median seed: a lower bound from its training time.
  slow = {"runs": [dict(r, recent_return=[0.0, 0.0]) for r in theirs["runs"]]}
  s = {r["metric"]: r for r in adv.compare(case, "airl", ours, slow, {})}[
      "airl_speedup_vs_imitation"]
  assert s["bound"] == "lower" and s["value"] == pytest.approx(10.0 / 1.0)
  # irl_jax does not reach it: no ratio.
  s = {r["metric"]: r for r in adv.compare(case, "airl", slow | {"compile_s": 1.0},
                                            theirs, {})}["airl_speedup_vs_imitation"]
  assert math.isnan(s["value"]) and s["bound"].startswith("irl_jax did not")
  # A worse final return is flagged.
  worse = {"compile_s": 1.0, "runs": [dict(r, final_returns=[20.0]) for r in ours["runs"]]}
  r = {r["metric"]: r for r in adv.compare(case, "gail", worse, theirs, {})}
  assert not r["gail_final_return_vs_imitation"]["not_worse"]
  # Ours 0.0 on every seed against theirs (1, 0.5, 0): Welch's interval of the
  # difference, −0.5 ± t(0.975, 2)·sd(1, 0.5, 0)/√3, still includes 0.
  row = r["gail_final_return_vs_imitation"]
  half = 4.302653 * 0.5 / np.sqrt(3)
  assert row["ci95_low"] == pytest.approx(-0.5 - half, rel=1e-5)
  assert row["ci95_high"] == pytest.approx(-0.5 + half, rel=1e-5)
  assert not row["worse_by_interval"]
  assert adv.final_difference_interval([0.1, 0.2, 0.15], [0.9, 0.95, 1.0])[1] < 0
  assert all(np.isnan(adv.final_difference_interval([0.5], [0.1, 0.2])))
  # Without the peer only irl_jax's rows come out.
  alone = [r["metric"] for r in adv.compare(case, "gail", ours, None, {})]
  assert alone == ["gail_time_to_90pct_irl_jax", "gail_final_normalised_return_irl_jax",
                   "gail_env_steps_per_second_irl_jax", "gail_compile_s_irl_jax"]


@pytest.fixture(scope="module")
def cartpole_case(tmp_path_factory):
  return adv.make_case("CartPole-v1", budget=2048, num_demos=2, expert_scale=0.1,
                       workdir=str(tmp_path_factory.mktemp("adv")))


def test_irl_jax_half_on_cartpole(cartpole_case):
  case = cartpole_case
  disc = {**adv.DISC, "batch_size": 32}
  ours = adv.irl_jax_runs(case, "airl", [0, 1], eval_episodes=2, disc=disc)
  n = case.ppo.num_iterations
  assert n == 2048 // case.ppo.batch_size
  for r in ours["runs"]:
    assert r["rounds"] == n and len(r["recent_return"]) == n
    assert r["env_steps"] == [case.ppo.batch_size * (i + 1) for i in range(n)]
    assert r["seconds"][-1] == pytest.approx(r["train_seconds"])
    assert np.all(np.diff(r["seconds"]) > 0) and len(r["final_returns"]) == 2
    assert all(1.0 <= x <= 500.0 for x in r["final_returns"])
  assert ours["runs"][0]["recent_return"] != ours["runs"][1]["recent_return"]  # seeds differ
  # The peer gets the same PPO settings, budget and demonstrations file.
  s = adv.peer_settings(case, "airl", [0, 1], eval_episodes=2, disc=disc)
  for k, v in s["ppo"].items():
    assert v == (list(getattr(case.ppo, k)) if k == "hidden" else getattr(case.ppo, k)), k
  # The generator starts at stable-baselines3's log_std_init, which the peer passes on.
  assert s["ppo"]["init_log_std"] == case.ppo.init_log_std == adv.GENERATOR_INIT_LOG_STD == 0.0
  assert s["total_timesteps"] == n * case.ppo.batch_size and s["disc"]["batch_size"] == 32
  assert data.load(s["demos"]).num_steps == case.episodes.num_steps
  json.dumps(s)


def test_episode_ends_as_imitation_treats_them_unless_asked(cartpole_case, monkeypatch):
  """imitation's trainers have no absorbing states: the benchmark's irl_jax runs
  without them unless `absorbing=True` (`--adv_absorbing`), and every row records
  which."""
  assert adv.FULL["absorbing"] is False and adv.QUICK["absorbing"] is False
  seen = []

  class Stop(Exception):
    pass

  def fake_make(config, env):
    seen.append(config.absorbing)
    raise Stop

  monkeypatch.setattr(adv.adversarial, "make_adversarial", fake_make)
  for flag in (False, True):
    with pytest.raises(Stop):
      adv.irl_jax_runs(cartpole_case, "gail", [0], eval_episodes=1, disc=adv.DISC,
                       absorbing=flag)
  monkeypatch.setattr(adv, "make_case", lambda *a, **k: cartpole_case)
  with pytest.raises(Stop):
    adv.run(peer_python=None, envs_=["CartPole-v1"], methods=["gail"],
            settings=dict(adv.QUICK, disc={**adv.DISC, "batch_size": 32}), ctx={},
            workdir=str(cartpole_case.demos_path.rsplit("/", 1)[0]))
  assert seen == [False, True, False]
  ours = {"compile_s": 1.0, "runs": [_run([100.0], [1.0], [20.0])]}
  for flag in (False, True):
    rows = adv.compare(_case(), "gail", ours, ours, {}, absorbing=flag)
    assert rows and all(r["absorbing"] is flag for r in rows)


class _Traj(NamedTuple):
  """A stand-in for imitation's `TrajectoryWithRew` (imitation is not installed here)."""
  obs: np.ndarray
  acts: np.ndarray
  infos: object
  terminal: bool
  rews: np.ndarray


def _fake_imitation_types(monkeypatch):
  fake = types.ModuleType("imitation.data.types")
  fake.TrajectoryWithRew = _Traj
  for name in ("imitation", "imitation.data"):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  monkeypatch.setitem(sys.modules, "imitation.data.types", fake)


def test_peer_reads_the_demonstrations_as_trajectories(cartpole_case, monkeypatch):
  """The peer's conversion, with a stand-in for imitation's `TrajectoryWithRew`."""
  _fake_imitation_types(monkeypatch)
  eps = cartpole_case.episodes
  trajs = peer.load_trajectories(cartpole_case.demos_path)
  lengths = eps.episode_lengths if hasattr(eps, "episode_lengths") else np.diff(
      np.append(eps.episode_starts, eps.num_steps))
  assert [len(t.acts) for t in trajs] == list(lengths)
  for t, start, n in zip(trajs, eps.episode_starts, lengths, strict=True):
    np.testing.assert_array_equal(t.obs[:-1], eps.obs[start:start + n])
    np.testing.assert_array_equal(t.obs[-1], eps.next_obs[start + n - 1])
    np.testing.assert_array_equal(t.acts, eps.action[start:start + n])
    np.testing.assert_array_equal(t.rews, eps.reward[start:start + n])
    assert t.terminal == bool(eps.terminated[start + n - 1])


def test_peer_pads_episodes_with_absorbing_steps(cartpole_case, monkeypatch):
  """`--adv_absorbing`: the peer's demonstrations padded to the horizon as seals'
  `AbsorbAfterDoneWrapper` records an episode (last observation repeated, reward 0)."""
  obs = np.arange(8, dtype=np.float32).reshape(4, 2)   # 3 steps, 4 observations
  acts, rews = np.array([1, 0, 1]), np.ones(3, np.float32)
  o, a, r = peer.pad_to_horizon(obs, acts, rews, 6)
  assert (o.shape, a.shape, r.shape) == ((7, 2), (6,), (6,))
  np.testing.assert_array_equal(o[:4], obs)
  np.testing.assert_array_equal(o[4:], np.tile(obs[-1], (3, 1)))
  np.testing.assert_array_equal(a, [1, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(r, [1, 1, 1, 0, 0, 0])
  same = peer.pad_to_horizon(obs, acts, rews, 3)
  assert all(np.array_equal(x, y) for x, y in zip(same, (obs, acts, rews), strict=True))
  with pytest.raises(ValueError, match="3 steps is longer than the horizon 2"):
    peer.pad_to_horizon(obs, acts, rews, 2)

  _fake_imitation_types(monkeypatch)
  eps = cartpole_case.episodes
  lengths = np.diff(np.append(eps.episode_starts, eps.num_steps))
  horizon = int(lengths.max()) + 5
  trajs = peer.load_trajectories(cartpole_case.demos_path, horizon)
  for t, start, n in zip(trajs, eps.episode_starts, lengths, strict=True):
    assert len(t.acts) == len(t.rews) == horizon and len(t.obs) == horizon + 1
    assert t.terminal   # every trajectory ends at the horizon
    np.testing.assert_array_equal(t.obs[:n], eps.obs[start:start + n])
    np.testing.assert_array_equal(t.obs[n:], np.tile(eps.next_obs[start + n - 1],
                                                     (horizon + 1 - n, 1)))
    np.testing.assert_array_equal(t.rews[:n], eps.reward[start:start + n])
    assert not t.rews[n:].any()


def test_absorbing_reaches_the_peer_and_is_checked(cartpole_case, monkeypatch, tmp_path):
  """`absorbing` goes to both sides; a peer that ran otherwise is an error, not a row."""
  asked = []
  ours = {"compile_s": 1.0, "runs": [_run([100.0], [1.0], [20.0])]}
  monkeypatch.setattr(adv, "make_case", lambda *a, **k: cartpole_case)
  monkeypatch.setattr(adv, "irl_jax_runs", lambda *a, absorbing, **k: asked.append(
      ("irl_jax", absorbing)) or ours)
  answer = {}

  def fake_peer(python, settings, workdir):
    asked.append(("imitation", settings["absorbing"]))
    return {**ours, **answer, "torch_threads": 2, "versions": {}}

  monkeypatch.setattr(adv, "run_peer", fake_peer)
  settings = dict(adv.QUICK, disc={**adv.DISC, "batch_size": 32}, absorbing=True)
  answer["absorbing"] = True
  rows, _ = adv.run(peer_python="py", envs_=["CartPole-v1"], methods=["airl"],
                    settings=settings, ctx={}, workdir=str(tmp_path))
  assert asked == [("irl_jax", True), ("imitation", True)]
  assert rows and all(r["absorbing"] is True for r in rows)
  answer["absorbing"] = False
  with pytest.raises(adv.PeerFailed, match="ran with absorbing=False, asked for True"):
    adv.run(peer_python="py", envs_=["CartPole-v1"], methods=["airl"], settings=settings,
            ctx={}, workdir=str(tmp_path))
  s = adv.peer_settings(cartpole_case, "airl", [0], eval_episodes=1, disc=adv.DISC)
  assert s["absorbing"] is False


def test_too_few_demonstration_rows_and_unknown_names(tmp_path):
  with pytest.raises(ValueError, match="--adv_methods: unknown method 'bc'"):
    adv.run(peer_python=None, envs_=["CartPole-v1"], methods=["bc"], settings=adv.QUICK,
            ctx={}, workdir=str(tmp_path))
  with pytest.raises(ValueError, match="--adv_envs: unknown environment 'Hopper'"):
    adv.make_case("Hopper", budget=1024, num_demos=1, expert_scale=0.1,
                  workdir=str(tmp_path))
  settings = dict(adv.QUICK, demos=1, disc={**adv.DISC, "batch_size": 100_000})
  with pytest.raises(ValueError, match="--adv_demos=1: CartPole-v1's 1 demonstration"):
    adv.run(peer_python=None, envs_=["CartPole-v1"], methods=["gail"], settings=settings,
            ctx={}, workdir=str(tmp_path))


def test_parse_peer_output_and_failure():
  out = "noise\nPEER_RESULT {\"runs\": [], \"torch_threads\": 2}\n"
  assert adv.parse_peer_output(out) == {"runs": [], "torch_threads": 2}
  with pytest.raises(adv.PeerFailed, match="no PEER_RESULT line"):
    adv.parse_peer_output("Traceback ...")


def test_peer_script_imports_neither_jax_nor_irl_jax():
  tree = ast.parse(open(peer.__file__).read())
  names = {a.name.split(".")[0] for node in ast.walk(tree)
           if isinstance(node, (ast.Import, ast.ImportFrom))
           for a in (node.names if isinstance(node, ast.Import) else [node])
           if getattr(a, "name", None)}
  names |= {node.module.split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module}
  assert not names & {"jax", "irl_jax", "flax", "experiments"}
  assert {"imitation", "stable_baselines3", "torch"} <= names


def test_command_line_settings_reach_the_comparison(monkeypatch, tmp_path):
  """`--adv_steps`, `--adv_seeds`, `--adv_demos` and `--adv_absorbing` as `run` gets them."""
  from experiments.benchmarks import peers_imitation as bench

  got = {}

  def fake_run(*, peer_python, envs_, methods, settings, ctx, workdir, log):
    got.update(settings)
    return [], {}

  monkeypatch.setattr(adv, "run", fake_run)
  monkeypatch.setattr(adv, "plot", lambda curves, path: None)
  fv = types.SimpleNamespace(adv_seeds=3, adv_demos=4, adv_absorbing=True, adv_steps=4096,
                             adv_workdir=str(tmp_path), adv_envs=["CartPole-v1"],
                             adv_methods=["airl"])
  assert bench.run_adversarial(None, quick=False, fv=fv) == []
  assert (got["seeds"], got["demos"], got["absorbing"]) == (3, 4, True)
  assert got["budgets"] == {"CartPole-v1": 4096, "Pendulum-v1": 4096}
  assert adv.FULL["budgets"] == {"CartPole-v1": 200_000, "Pendulum-v1": 500_000}  # untouched
  fv.adv_steps = None
  bench.run_adversarial(None, quick=True, fv=fv)
  assert got["budgets"] == adv.QUICK["budgets"]
  fv.adv_steps = 0
  with pytest.raises(SystemExit, match="--adv_steps must be >= 1"):
    bench.run_adversarial(None, quick=False, fv=fv)
