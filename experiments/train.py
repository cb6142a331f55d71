"""Train with any irl_jax objective from an ml_collections config.

    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke
    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke \
        --config.objective.name=mle --config.steps=200

Re-running the same command resumes from the newest valid checkpoint in the
work directory. Multi-host: start one process per host with
`--config.distributed.num_processes=N --config.distributed.process_id=i
--config.distributed.coordinator_address=HOST:PORT`.

`config.data.task` names a module of `experiments/tasks/` that generates the
data when `config.data.path` is empty and provides the reward function of
objectives that score samples (GRPO); `config.eval_generation.task` (default:
the data task) provides the checker of the generation metrics. This entry
point passes them to the library's trainer.

The samples of a policy stage (GRPO) are scored by the sources of
`config.reward` (`irl_jax.train.rewards.reward_config`): an exported reward
model (`config.reward.model_path`, weight `config.reward.model_weight`) plus
the data task's `make_reward_fn` (weight `config.reward.program_weight`):

    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/grpo \
        --config.objective.name=grpo --config.reward.model_path=/path/to/reward_model/export

On a Linux host where JAX can only use the CPU, the command re-executes itself once
with a retained, huge-page-backed heap (`experiments.host_memory`: glibc tunables;
`IRL_JAX_HUGE_PAGES=0` opts out), which spares XLA:CPU's steps the page faults of
freshly mapped temporaries; the process then keeps its peak host memory until it ends.
"""

if __name__ == "__main__":  # first, before the heavy imports: the re-exec starts afresh
  from experiments.host_memory import reexec_with_huge_pages

  reexec_with_huge_pages(cpu_only=True)

import json

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import tasks
from irl_jax.train import loop, rewards

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics, export).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines out of the way
  config = _CONFIG.value
  task = tasks.load(config.data.get("task", ""))
  gen = config.get("eval_generation") or {}
  checking = tasks.load(gen.get("task", "")) or task
  reward_fn = rewards.reward_fn_from_config(config, program=getattr(task, "make_reward_fn", None))
  summary = loop.train(config, _WORKDIR.value, task=task, reward_fn=reward_fn,
                       checker=getattr(checking, "checker", None))
  print(json.dumps({"final": summary}))


if __name__ == "__main__":
  app.run(main)
