"""The peer half of `peers_imitation --suite=adversarial`: imitation 1.0.1's GAIL and AIRL.

    PEER_PYTHON experiments/benchmarks/_imitation_adversarial_peer.py SETTINGS.json

Runs in the peer's own virtual environment (imitation, seals, gymnasium 0.29,
stable-baselines3, torch), never in irl_jax's: it imports neither irl_jax nor
JAX. SETTINGS.json names the gymnasium environment, the method, the seeds, the
budget, the generator's PPO settings and the discriminator's, the expert's and
random play's returns (the ends of the expert-normalised scale), and the
demonstrations file: an irl_jax episodes `.npz` (`irl_jax.control.data.save`),
read here with NumPy alone and turned into imitation `TrajectoryWithRew`s (one
per episode: `obs` is the episode's observations plus its last `next_obs`,
`terminal` its last `terminated` flag).

Per seed it builds `imitation.util.make_vec_env(env_id, n_envs)` (gymnasium's
own environment with `Monitor`, whose episode returns are the true ones), a
stable-baselines3 `PPO` generator, imitation's reward net (GAIL:
`BasicRewardNet`; AIRL: `BasicShapedRewardNet`) and the trainer, and runs
`trainer.train(total_timesteps, callback)`. A round is one PPO rollout of
`n_envs × n_steps` steps and its update, then `n_disc_updates_per_round`
discriminator steps. The callback, after every round, records the environment
steps, the wall-clock since `train` began (minus the callback's own time) and
the training return: the mean true return of the last `n_envs` episodes that
finished (Monitor's `ep_info_buffer`). After training, the final policy is
evaluated deterministically for `eval_episodes` episodes on a fresh environment.

CartPole-v1 ends episodes early, so the trainers get
`allow_variable_horizon=True` (imitation refuses variable horizons otherwise).

With `"absorbing": true` in SETTINGS.json (`--adv_absorbing`) the peer uses
absorbing states the way imitation's ecosystem provides them, a fixed horizon:
each environment is wrapped in seals' `AbsorbAfterDoneWrapper` (after a terminal
step it repeats the last observation with reward 0 and ignores the action) and a
`TimeLimit` at the environment's episode limit, outside `Monitor`, which still
records the true episode returns. The demonstrations are padded to that horizon
the same way (`pad_to_horizon`), every trajectory ends at the horizon (`terminal`
set, as imitation's own rollouts mark it), and the trainers run with
`allow_variable_horizon=False`. The absorbing steps count in the step budget.

It prints one line `PEER_RESULT {json}` on stdout (anything else can be ignored).
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

RESULT_PREFIX = "PEER_RESULT "


def _versions():
  from importlib import metadata

  out = {"python": sys.version.split()[0]}
  for name in ("imitation", "gymnasium", "stable-baselines3", "torch", "numpy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def pad_to_horizon(obs, acts, rews, horizon: int):
  """One episode (`obs` has one more row than `acts`) padded to `horizon` steps as
  seals' `AbsorbAfterDoneWrapper` records it: the last observation repeated, reward 0;
  the action, which the wrapper ignores, repeats the episode's last one."""
  n = len(acts)
  if n > horizon:
    raise ValueError(f"an episode of {n} steps is longer than the horizon {horizon}")
  k = horizon - n
  return (np.concatenate([obs, np.repeat(obs[-1:], k, axis=0)]),
          np.concatenate([acts, np.repeat(acts[-1:], k, axis=0)]),
          np.concatenate([rews, np.zeros(k, rews.dtype)]))


def load_trajectories(path: str, horizon: int | None = None):
  """irl_jax episodes `.npz` -> list of imitation `TrajectoryWithRew`; with `horizon`,
  each padded to it with absorbing steps (`pad_to_horizon`) and marked terminal."""
  from imitation.data.types import TrajectoryWithRew

  with np.load(path, allow_pickle=False) as npz:
    a = {k: npz[k] for k in ("obs", "action", "reward", "terminated", "next_obs",
                             "episode_starts")}
  ends = [*a["episode_starts"][1:].tolist(), len(a["obs"])]
  trajs = []
  for start, end in zip(a["episode_starts"], ends, strict=True):
    obs = np.concatenate([a["obs"][start:end], a["next_obs"][end - 1:end]]).astype(np.float32)
    acts = a["action"][start:end]
    rews = a["reward"][start:end].astype(np.float32)
    terminal = bool(a["terminated"][end - 1])
    if horizon is not None:
      obs, acts, rews = pad_to_horizon(obs, acts, rews, horizon)
      terminal = True
    trajs.append(TrajectoryWithRew(obs=obs, acts=acts, infos=None, terminal=terminal,
                                   rews=rews))
  return trajs


def absorbing_wrappers(horizon: int):
  """`make_vec_env` post-wrappers for `"absorbing"`: absorbing states after the end of
  an episode, up to a fixed horizon (module doc)."""
  from gymnasium.wrappers import TimeLimit
  from seals.util import AbsorbAfterDoneWrapper

  return [lambda env, _: TimeLimit(AbsorbAfterDoneWrapper(env), max_episode_steps=horizon)]


def horizon_of(env_id: str) -> int:
  import gymnasium as gym

  return int(gym.spec(env_id).max_episode_steps)


def run_seed(s: dict, seed: int, trajs) -> dict:
  import torch
  from imitation.algorithms.adversarial.airl import AIRL
  from imitation.algorithms.adversarial.gail import GAIL
  from imitation.data.wrappers import RolloutInfoWrapper
  from imitation.rewards.reward_nets import BasicRewardNet, BasicShapedRewardNet
  from imitation.util import logger as imit_logger
  from imitation.util.networks import RunningNorm
  from imitation.util.util import make_vec_env
  from stable_baselines3 import PPO
  from stable_baselines3.common.evaluation import evaluate_policy
  from stable_baselines3.ppo import MlpPolicy

  rng = np.random.default_rng(seed)
  torch.manual_seed(seed)
  p = s["ppo"]
  absorbing = bool(s.get("absorbing", False))
  pre = absorbing_wrappers(horizon_of(s["env_id"])) if absorbing else []
  venv = make_vec_env(s["env_id"], rng=rng, n_envs=p["num_envs"],
                      post_wrappers=[*pre, lambda env, _: RolloutInfoWrapper(env)])
  rollout = p["num_envs"] * p["num_steps"]
  iterations = s["total_timesteps"] // rollout
  lr = p["lr"]
  if p["anneal_lr"]:
    # SB3 calls a schedule with the remaining progress, 1 -> 0 over `learn`'s budget;
    # imitation calls `learn` once per round, so anneal over rounds explicitly instead.
    state = {"round": 0}

    def schedule(_progress):
      return lr * max(0.0, 1.0 - state["round"] / iterations)
  else:
    state, schedule = None, lr
  act = torch.nn.Tanh if p["activation"] == "tanh" else torch.nn.ReLU
  learner = PPO(
      env=venv, policy=MlpPolicy, n_steps=p["num_steps"],
      batch_size=rollout // p["num_minibatches"], n_epochs=p["update_epochs"],
      learning_rate=schedule, gamma=p["gamma"], gae_lambda=p["gae_lambda"],
      clip_range=p["clip_eps"], ent_coef=p["ent_coef"], vf_coef=p["vf_coef"],
      max_grad_norm=p["max_grad_norm"], normalize_advantage=p["normalize_advantages"],
      policy_kwargs=dict(net_arch=dict(pi=list(p["hidden"]), vf=list(p["hidden"])),
                         activation_fn=act, optimizer_kwargs=dict(eps=p["adam_eps"]),
                         **({} if p.get("init_log_std") is None
                            else {"log_std_init": float(p["init_log_std"])})),
      seed=seed, device="cpu", verbose=0)
  d = s["disc"]
  hidden = tuple(d["hidden"])
  tmp = tempfile.mkdtemp(prefix="irl_jax_peer_")
  custom_logger = imit_logger.configure(tmp, format_strs=[])
  common = dict(demonstrations=trajs, demo_batch_size=d["batch_size"],
                n_disc_updates_per_round=d["updates"], venv=venv, gen_algo=learner,
                disc_opt_kwargs={"lr": d["lr"]}, allow_variable_horizon=not absorbing,
                log_dir=tmp, custom_logger=custom_logger)
  if s["method"] == "gail":
    net = BasicRewardNet(venv.observation_space, venv.action_space, hid_sizes=hidden,
                         normalize_input_layer=RunningNorm)
    trainer = GAIL(reward_net=net, **common)
  else:
    net = BasicShapedRewardNet(venv.observation_space, venv.action_space,
                               reward_hid_sizes=hidden, potential_hid_sizes=hidden,
                               discount_factor=p["gamma"], normalize_input_layer=RunningNorm)
    trainer = AIRL(reward_net=net, **common)

  steps, seconds, returns = [], [], []
  excluded = [0.0]

  def callback(r):
    t = time.perf_counter()
    if state is not None:
      state["round"] = r + 1
    recent = [ep["r"] for ep in list(learner.ep_info_buffer)[-p["num_envs"]:]]
    steps.append(int(learner.num_timesteps))
    seconds.append(t - t0 - excluded[0])
    returns.append(float(np.mean(recent)) if recent else float("nan"))
    excluded[0] += time.perf_counter() - t

  t0 = time.perf_counter()
  trainer.train(iterations * rollout, callback=callback)
  train_seconds = time.perf_counter() - t0 - excluded[0]
  eval_env = make_vec_env(s["env_id"], rng=np.random.default_rng(seed + 10_000), n_envs=1)
  final, _ = evaluate_policy(learner.policy, eval_env, n_eval_episodes=s["eval_episodes"],
                             deterministic=True, return_episode_rewards=True)
  return {"seed": seed, "env_steps": steps, "seconds": seconds, "recent_return": returns,
          "train_seconds": train_seconds, "final_returns": [float(x) for x in final],
          "rounds": iterations}


def main(path: str) -> dict:
  import torch

  with open(path) as f:
    s = json.load(f)
  trajs = load_trajectories(s["demos"], horizon_of(s["env_id"]) if s.get("absorbing")
                            else None)
  runs = [run_seed(s, int(seed), trajs) for seed in s["seeds"]]
  return {"versions": _versions(), "torch_threads": torch.get_num_threads(),
          "num_trajectories": len(trajs), "absorbing": bool(s.get("absorbing", False)),
          "demo_lengths": sorted({len(t.acts) for t in trajs}), "runs": runs}


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(f"usage: {os.path.basename(sys.argv[0])} SETTINGS.json")
  print(RESULT_PREFIX + json.dumps(main(sys.argv[1])), flush=True)
