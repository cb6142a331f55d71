"""Offline RL from a labeller's preferences over rendered frames (RL-VLM-F, offline).

    python -m experiments.vlm_preferences --workdir=/tmp/vlm_preferences
    python -m experiments.vlm_preferences --workdir=/tmp/vlm_preferences --config.quick=True

Findings under test: a reward learned from a noisy labeller's single-frame preferences,
`r_t = r̂(o_{t+1})`, trains offline RL (IQL) to (a) beat behaviour cloning on the same
data, (b) come close to IQL on the true reward, and (c) improve as the number of queries
grows.

Environment and data (our construction; the paper queries Gemini / GPT-4V about
rendered MetaWorld and SoftGym frames): gymnax Pendulum-v1 and study C5's dataset, a
PPO expert's episodes mixed with noisier behaviour (55 episodes, 11,000 transitions).
Frames are the library's `labellers.render_pendulum`, 32×32 grey images of the rod.

Labeller: the synthetic stand-in for a vision-language model,
`labellers.synthetic_labeller(pendulum_height)`: it prefers the frame whose pendulum is
higher (closer to upright), answers "no preference" when the heights differ by at most
`tie_margin`, and flips its answer with probability `flip_prob ∈ label_noise` (10–30% is
the range reported for VLM labellers). Queries: `max(query_counts)` pairs of dataset
frames drawn uniformly; a count `n` uses the first `n` (nested), labelled once per noise
level. Ties are dropped (and counted).

Methods (5 seeds vmapped, with every (noise, count) run in one program):
  learned reward  CNN Bradley–Terry reward on frames (`labellers.make_frame_reward`),
                  the transitions relabelled `r̂(render(next_obs))` and divided by their
                  standard deviation, then IQL;
  oracle          IQL on the true reward (divided by its standard deviation);
  BC              behaviour cloning on all transitions.
IQL settings are C5's (64×64, 3000 steps, expectile 0.7, β 3).

Verdicts, at `verdict_noise` (0.2, chosen before the run) and the largest count: (a)
learned − BC > 0 and (c) learned(largest) − learned(smallest) > 0 (`study.decide`), (b)
learned ≈ oracle within ±`equivalence_margin` (`study.equivalence`).
"""

import ml_collections

from experiments.configs import preference_offline


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  c.num_seeds = 5
  c.env = "gymnax/Pendulum-v1"
  c.expert_steps_scale = 1.0
  c.mixture = preference_offline.get_config().mixture   # study C5's dataset
  c.frame_size = 32
  c.query_counts = (50, 200, 1000)
  c.label_noise = (0.0, 0.2)
  c.verdict_noise = 0.2
  c.tie_margin = 0.02
  c.eval_episodes = 16
  c.reward = ml_collections.ConfigDict(dict(arch="cnn", channels=(8, 16), hidden=(32,),
                                            num_steps=1000, batch_size=32, learning_rate=1e-3))
  c.iql = ml_collections.ConfigDict(dict(num_steps=3000, batch_size=256, hidden=(64, 64),
                                         expectile=0.7, beta=3.0, lr=1e-3))
  c.bc = ml_collections.ConfigDict(dict(num_steps=3000, batch_size=256, hidden=(64, 64),
                                        learning_rate=1e-3))
  c.equivalence_margin = 0.1
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, expert_steps_scale=0.3, eval_episodes=4, frame_size=16,
      query_counts=(20, 80),
      mixture=preference_offline.get_config().quick_settings.mixture,
      reward=dict(arch="cnn", channels=(8, 8), hidden=(16,), num_steps=100, batch_size=32,
                  learning_rate=1e-3),
      iql=dict(num_steps=200, batch_size=64, hidden=(32, 32), expectile=0.7, beta=3.0, lr=1e-3),
      bc=dict(num_steps=200, batch_size=64, hidden=(32, 32), learning_rate=1e-3)))
  return c
