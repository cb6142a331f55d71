"""Train with any irl_jax objective from an ml_collections config.

    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke
    python -m experiments.train --config=experiments/configs/smoke.py --workdir=/tmp/smoke \
        --config.objective.name=mle --config.steps=200

Re-running the same command resumes from the newest valid checkpoint in the
work directory. Multi-host: start one process per host with
`--config.distributed.num_processes=N --config.distributed.process_id=i
--config.distributed.coordinator_address=HOST:PORT`.
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

from irl_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics, export).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines out of the way
  summary = loop.train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({"final": summary}))


if __name__ == "__main__":
  app.run(main)
