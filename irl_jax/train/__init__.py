"""Training: state, sharded jit-compiled steps, objectives, checkpoints, the loop.

`train(config, workdir)` runs a whole experiment from an `ml_collections`
config; `make_train(...)` turns a small model's whole run into one pure
`train(key)` (seeds in parallel with `jax.vmap`); the pieces both are made of
are public for users who write their own loop.
"""

from irl_jax.train.checkpoint import CheckpointError as CheckpointError
from irl_jax.train.checkpoint import Checkpoints as Checkpoints
from irl_jax.train.checkpoint import ConfigMismatchError as ConfigMismatchError
from irl_jax.train.checkpoint import IntegrityError as IntegrityError
from irl_jax.train.checkpoint import array_checksums as array_checksums
from irl_jax.train.compiled import make_train as make_train
from irl_jax.train.data_setup import build_data as build_data
from irl_jax.train.data_setup import load_tokenizer as load_tokenizer
from irl_jax.train.generation import generation_metrics as generation_metrics
from irl_jax.train.generation import reward_ranking as reward_ranking
from irl_jax.train.lm import batch_stats as batch_stats
from irl_jax.train.lm import lm_stats as lm_stats
from irl_jax.train.lm import lm_targets as lm_targets
from irl_jax.train.lm import sequence_log_probs as sequence_log_probs
from irl_jax.train.loop import ConfigError as ConfigError
from irl_jax.train.loop import NonFiniteError as NonFiniteError
from irl_jax.train.loop import VocabularyError as VocabularyError
from irl_jax.train.loop import WorkdirLockedError as WorkdirLockedError
from irl_jax.train.loop import build_model as build_model
from irl_jax.train.loop import build_objective as build_objective
from irl_jax.train.loop import check_config as check_config
from irl_jax.train.loop import evaluate as evaluate
from irl_jax.train.loop import export as export
from irl_jax.train.loop import train as train
from irl_jax.train.loop import workdir_lock as workdir_lock
from irl_jax.train.metrics import MetricWriter as MetricWriter
from irl_jax.train.metrics import read_metrics as read_metrics
from irl_jax.train.monitors import Alert as Alert
from irl_jax.train.monitors import ClipFraction as ClipFraction
from irl_jax.train.monitors import EntropyCollapse as EntropyCollapse
from irl_jax.train.monitors import InputDrift as InputDrift
from irl_jax.train.monitors import KLAcceleration as KLAcceleration
from irl_jax.train.monitors import KLCeiling as KLCeiling
from irl_jax.train.monitors import LengthDrift as LengthDrift
from irl_jax.train.monitors import MonitorConfig as MonitorConfig
from irl_jax.train.monitors import MonitorInputError as MonitorInputError
from irl_jax.train.monitors import Monitors as Monitors
from irl_jax.train.monitors import RewardGoldCorrelation as RewardGoldCorrelation
from irl_jax.train.monitors import RewardGoldDivergence as RewardGoldDivergence
from irl_jax.train.monitors import RewardHackingStop as RewardHackingStop
from irl_jax.train.monitors import cosine_distance as cosine_distance
from irl_jax.train.monitors import rank_correlation as rank_correlation
from irl_jax.train.monitors import symmetric_kl as symmetric_kl
from irl_jax.train.monitors import token_histogram as token_histogram
from irl_jax.train.objectives import direct_preference_objective as direct_preference_objective
from irl_jax.train.objectives import grpo_objective as grpo_objective
from irl_jax.train.objectives import iq_learn_objective as iq_learn_objective
from irl_jax.train.objectives import iq_learn_online_objective as iq_learn_online_objective
from irl_jax.train.objectives import mle_objective as mle_objective
from irl_jax.train.objectives import reward_model_objective as reward_model_objective
from irl_jax.train.optim import learning_rate_schedule as learning_rate_schedule
from irl_jax.train.optim import make_optimizer as make_optimizer
from irl_jax.train.per_step import monte_carlo_step_values as monte_carlo_step_values
from irl_jax.train.per_step import split_steps as split_steps
from irl_jax.train.per_step import step_prefixes as step_prefixes
from irl_jax.train.per_step import token_step_ids as token_step_ids
from irl_jax.train.registry import ObjectiveSpec as ObjectiveSpec
from irl_jax.train.registry import hyperparameters as hyperparameters
from irl_jax.train.registry import objective_config as objective_config
from irl_jax.train.rollouts import PolicySampler as PolicySampler
from irl_jax.train.rollouts import ReferenceLogProbs as ReferenceLogProbs
from irl_jax.train.rollouts import in_step_sampler as in_step_sampler
from irl_jax.train.sharding import MESH_AXES as MESH_AXES
from irl_jax.train.sharding import global_batch as global_batch
from irl_jax.train.sharding import make_mesh as make_mesh
from irl_jax.train.sharding import param_shardings as param_shardings
from irl_jax.train.state import ModelDef as ModelDef
from irl_jax.train.state import TrainState as TrainState
from irl_jax.train.state import init_train_state as init_train_state
from irl_jax.train.state import split_model as split_model
from irl_jax.train.step import loss_and_grads as loss_and_grads
from irl_jax.train.step import make_eval_step as make_eval_step
from irl_jax.train.step import make_train_step as make_train_step
