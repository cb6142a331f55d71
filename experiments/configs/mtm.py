"""Study C8: Masked Trajectory Models (MTM, Wu et al. 2023) on Pendulum.

    python -m experiments.mtm --workdir=/tmp/mtm
    python -m experiments.mtm --workdir=/tmp/mtm --config.quick=True

Findings under test:
  (1) One MTM, trained once with random autoregressive masks and then queried with
      each task's inference mask, matches or beats specialised networks of the same
      size trained for that one task: on inverse dynamics, forward dynamics, BC and
      return-conditioned BC (RCBC).
  (2) Heteromodal training: when only `action_fraction` (5%) of the trajectories keep
      their actions, MTM trained on every trajectory (states and returns everywhere,
      actions on the 5%) beats the same MTM trained on the 5% with actions alone, on
      inverse dynamics and on BC return.

Environment: gymnax Pendulum-v1 (continuous actions, 200-step episodes).

Dataset: study C6/C7's (`experiments.preference_offline.mixture_dataset`): a PPO
expert trained by the library and episodes of a mixture of behaviour policies (the
expert's stochastic policy, Gaussian action noise, ε-random actions, uniform). A
fraction `heldout_fraction` of the episodes (drawn with `seed`) is held out for the
prediction measures; the rest train. For finding (2), `action_fraction` of the
training episodes (at least 2, drawn with `seed`) keep their actions.

Methods (`irl_jax.control.mtm`, all the same transformer: `mtm.*` settings, one
encoder stack with per-modality heads; segments of `segment_length` steps):
  MTM                 random autoregressive masks, all training episodes;
  specialised <task>  the same architecture and data, trained only with that task's
                      fixed inference mask at a uniform time (inverse dynamics,
                      forward dynamics, BC, RCBC): the paper's "specialised" baseline,
                      and the fairest equal-size comparison (identical parameter
                      count, data, steps and optimiser; only the masks differ). No
                      separate MLP baseline is run;
  heteromodal MTM     MTM on all training episodes, actions only on the 5%;
  actions-only MTM    MTM on the 5% of training episodes that have actions.
Every method and seed runs in one vmapped program (`num_seeds` seeds; seed `i` has
the same initialisation and batches' keys for every method, so differences are
paired). The dataset and the splits are fixed by `seed`.

Measures:
  inverse dynamics: mean squared error of the predicted `a_t` (torque units, the box
    is [−2, 2]) on `heldout_segments` held-out segments, every `t ≤ L − 2` (states
    all visible, actions before `t`);
  forward dynamics: mean squared error of the predicted `s_{t+1}` in normalised state
    units (states and actions up to `t` visible), same segments;
  BC / RCBC return: expert-normalised return (0 random, 1 the deterministic expert)
    of the deterministic predicted action in `eval_episodes` episodes, with a rolling
    window of the last `L` steps; RCBC conditions on a target return equal to the best
    training episode's return, decremented by each observed reward.

Verdicts (rules fixed before the first full run; margins are this study's choices):
  (1) inverse dynamics and forward dynamics: non-inferiority of MTM against the
      specialised model on the paired relative improvement `d = 1 − MSE_MTM /
      MSE_spec`: reproduced when the 95% interval of `d` lies above `−relative_margin`
      (MTM at most 10% worse), contradicted when it lies below it. Finding (1)'s
      headline verdict is reproduced when both are, contradicted when either is.
      BC and RCBC (reported with their own verdicts, not in the headline): the same
      rule on the paired difference of normalised returns, margin `return_margin`.
  (2) `study.decide` on the paired differences `MSE_actions-only − MSE_heteromodal`
      (inverse dynamics) and `return_heteromodal − return_actions-only` (BC); the
      headline is reproduced when both are, contradicted when either is.

Scale: a laptop-sized model (width 32, 2 blocks, 4 heads, MLP ratio 2, `L` = 10, 32
segments per batch, 4500 AdamW steps), not the paper's; 7 methods × 5 seeds train
together on 2 CPU cores (about 16 minutes). The first full run used 1500 steps; every
model then stayed close to the trivial predictors (forward dynamics 0.010–0.015
against 0.0165 for predicting no change), so the budget was tripled before any other
change, and both runs are reported. `quick`: a smaller expert budget and dataset, 2 seeds, a
1-block width-16 model and 60 steps; it checks the pipeline, not the findings (about
55 s on the same cores, with compilation and expert training).

Reading the comparisons. In (2), at equal steps the heteromodal model draws a segment
with actions in about `action_fraction` of its batches' rows, the actions-only model in
all of them, so part of any difference is this gradient budget. RCBC shows every
return-to-go up to `t` (some MTM implementations show `R_t` only); both are within
the training masks' distribution. The table also gives, for scale, a least-squares
linear inverse-dynamics model fitted on every training transition with its action.

Measured results and their verdicts: the README's studies section (C8) and
docs/pipelines.md.
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
  c.mixture = preference_offline.get_config().mixture   # study C6/C7's dataset
  c.heldout_fraction = 0.2
  c.action_fraction = 0.05
  c.heldout_segments = 256
  c.eval_episodes = 16
  c.mtm = ml_collections.ConfigDict(dict(
      num_steps=4500, batch_size=32, segment_length=10, width=32, depth=2, heads=4,
      mlp_ratio=2, return_scale=1e-3, learning_rate=1e-3, weight_decay=1e-4,
      warmup_steps=100, max_grad_norm=1.0, dtype="float32"))
  c.relative_margin = 0.1
  c.return_margin = 0.1
  c.quick_settings = ml_collections.ConfigDict(dict(
      num_seeds=2, expert_steps_scale=0.3, eval_episodes=2, heldout_segments=32,
      action_fraction=0.3,
      mixture=(("expert", 0.0, 0.0, 2), ("eps_0.5", 0.5, 0.0, 3), ("uniform", 1.0, 0.0, 3)),
      mtm=dict(num_steps=60, batch_size=8, segment_length=5, width=16, depth=1, heads=2,
               mlp_ratio=2, return_scale=1e-3, learning_rate=1e-3, weight_decay=1e-4,
               warmup_steps=10, max_grad_norm=1.0, dtype="float32")))
  return c
