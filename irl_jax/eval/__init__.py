"""Evaluation metrics (host-side NumPy on `scipy.stats` and `sacrebleu`; not differentiated),
query-dependent prompt selection from offline records (`prompt_selection`, Prompt-OIRL) and
behaviour evaluations in the model-written-evaluations format (`behaviour`, Perez et al. 2022),
and reward-model evaluation: preference accuracy and calibration, reward distributions and the
agreement of a recovered reward with a true one (`reward_models`)."""

from irl_jax.eval.behaviour import BehaviourRecord as BehaviourRecord
from irl_jax.eval.behaviour import evaluate_behaviours as evaluate_behaviours
from irl_jax.eval.behaviour import load_behaviour_jsonl as load_behaviour_jsonl
from irl_jax.eval.behaviour import match_probability as match_probability
from irl_jax.eval.behaviour import score_records as score_records
from irl_jax.eval.metrics import bleu as bleu
from irl_jax.eval.metrics import distinct_n as distinct_n
from irl_jax.eval.metrics import rankdata as rankdata
from irl_jax.eval.metrics import self_bleu as self_bleu
from irl_jax.eval.metrics import spearman as spearman
from irl_jax.eval.prompt_selection import PromptRewardModel as PromptRewardModel
from irl_jax.eval.prompt_selection import best_of_n as best_of_n
from irl_jax.eval.prompt_selection import best_single_prompt as best_single_prompt
from irl_jax.eval.prompt_selection import (
    best_single_prompt_by_score as best_single_prompt_by_score,
)
from irl_jax.eval.prompt_selection import binary_metrics as binary_metrics
from irl_jax.eval.prompt_selection import fit_prompt_reward_model as fit_prompt_reward_model
from irl_jax.eval.prompt_selection import oracle_accuracy as oracle_accuracy
from irl_jax.eval.prompt_selection import pair_features as pair_features
from irl_jax.eval.prompt_selection import selection_accuracy as selection_accuracy
from irl_jax.eval.reward_models import preference_metrics as preference_metrics
from irl_jax.eval.reward_models import ranking_accuracy as ranking_accuracy
from irl_jax.eval.reward_models import recovery_metrics as recovery_metrics
from irl_jax.eval.reward_models import reward_distribution as reward_distribution
