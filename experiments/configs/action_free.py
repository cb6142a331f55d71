"""Semi-supervised offline RL with action-free trajectories (SS-ORL, Zheng et al. 2023).

    python -m experiments.action_free --workdir=/tmp/action_free
    python -m experiments.action_free --workdir=/tmp/action_free --config.quick=True

Findings under test: when only a small fraction of the trajectories keep their
actions, labelling the others with an inverse-dynamics model and training TD3+BC on
everything (SS-TD3+BC) (a) does about as well as TD3+BC with every action known (the
oracle) and (b) far better than TD3+BC on the labelled trajectories alone.

Environment: gymnax Pendulum-v1 (continuous; TD3+BC needs continuous actions).

Dataset (our construction; the paper uses D4RL locomotion data): a PPO expert trained
by the library and episodes of a mixture of behaviour policies of decreasing quality
(the expert's stochastic policy, Gaussian action noise, ε-random actions), the same
mixture as study C5. `labelled_fraction` of the episodes (at least 2) keep their actions,
drawn from those whose return is below the median (the paper's harder setting); the
rest are action-free.

Methods, all TD3+BC (`irl_jax.control.offline.make_td3_bc`) with the same settings
except for their data, and BC:
  oracle          every episode with its true actions;
  labelled only   the labelled episodes;
  SS k=0, k=1     the labelled episodes plus the action-free ones relabelled by an
                  inverse-dynamics ensemble over windows `(s_{t−k}, …, s_t, s_{t+1})`
                  (`irl_jax.control.action_free`; `idm.*` settings; best members by
                  validation NLL on 10% of the labelled episodes);
  BC              behaviour cloning on the labelled episodes (our choice of BC data: the
                  only actions a practitioner has).
Seeds: `num_seeds`, vmapped; a seed draws the learners' initialisation and batches and,
for SS, the inverse-dynamics ensemble (so each seed has its own proxy labels). The
dataset and the labelled/action-free split are fixed (seed `seed`).

Measures: expert-normalised return of the final deterministic policy (0 random, 1 the
expert), `eval_episodes` episodes; the proxy labels' mean absolute error against the
true (hidden) actions.

Verdicts: (a) SS (k=1, chosen before the run) ≈ oracle: the 95% interval of the paired
difference lies within ±`equivalence_margin` (`study.equivalence`; contradicted when it
lies wholly beyond); (b) SS (k=1) − labelled only > 0 (`study.decide`).
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
  c.labelled_fraction = 0.1
  c.contexts = (0, 1)       # k of the SS variants; the verdicts use `verdict_context`
  c.verdict_context = 1
  c.eval_episodes = 16
  c.td3_bc = ml_collections.ConfigDict(dict(num_steps=5000, batch_size=256, hidden=(64, 64),
                                            actor_lr=1e-3, critic_lr=1e-3, alpha=2.5))
  c.bc = ml_collections.ConfigDict(dict(num_steps=3000, batch_size=256, hidden=(64, 64),
                                        learning_rate=1e-3))
  c.idm = ml_collections.ConfigDict(dict(ensemble=5, hidden=(128, 128), num_steps=3000,
                                         batch_size=256, learning_rate=1e-3, eval_every=250))
  c.val_fraction = 0.1
  c.equivalence_margin = 0.1
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, expert_steps_scale=0.3, eval_episodes=4, labelled_fraction=0.3,
      mixture=(("expert", 0.0, 0.0, 2), ("eps_0.5", 0.5, 0.0, 4), ("uniform", 1.0, 0.0, 4)),
      td3_bc=dict(num_steps=200, batch_size=64, hidden=(32, 32), actor_lr=1e-3,
                  critic_lr=1e-3, alpha=2.5),
      bc=dict(num_steps=200, batch_size=64, hidden=(32, 32), learning_rate=1e-3),
      idm=dict(ensemble=2, hidden=(32, 32), num_steps=200, batch_size=64, learning_rate=1e-3,
               eval_every=100)))
  return c
