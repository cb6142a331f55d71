"""Pure, jit-compatible IRL and preference objectives for language models, and the
adversarial-IRL and offline-RL objectives for control (`adversarial`, `offline_rl`).

Conventions (shapes, masks, EOS handling, reductions) follow docs/objectives.md §1: per-token
objectives take `TokenStats` `[B, T]` and a response mask `where`, and return
per-token or per-example values that the caller reduces with the `(sum, count)`
helpers in `reductions`.
"""

from irl_jax.losses.adversarial import DiscriminatorExtras as DiscriminatorExtras
from irl_jax.losses.adversarial import DiscriminatorLoss as DiscriminatorLoss
from irl_jax.losses.adversarial import airl_discriminator_loss as airl_discriminator_loss
from irl_jax.losses.adversarial import airl_logits as airl_logits
from irl_jax.losses.adversarial import airl_potential_shaping as airl_potential_shaping
from irl_jax.losses.adversarial import airl_reward as airl_reward
from irl_jax.losses.adversarial import gail_discriminator_loss as gail_discriminator_loss
from irl_jax.losses.adversarial import gail_reward as gail_reward
from irl_jax.losses.adversarial import gradient_penalty as gradient_penalty
from irl_jax.losses.dpo import StepAdvantages as StepAdvantages
from irl_jax.losses.dpo import advantage_weighted_steps as advantage_weighted_steps
from irl_jax.losses.dpo import dpo as dpo
from irl_jax.losses.dpo import ipo as ipo
from irl_jax.losses.dpo import preference_margin as preference_margin
from irl_jax.losses.dpo import prefix_mask as prefix_mask
from irl_jax.losses.dpo import step_advantages as step_advantages
from irl_jax.losses.dpo import step_log_probs as step_log_probs
from irl_jax.losses.grpo import GRPOExtras as GRPOExtras
from irl_jax.losses.grpo import demo_policy_similarity as demo_policy_similarity
from irl_jax.losses.grpo import dynamic_reward_scale as dynamic_reward_scale
from irl_jax.losses.grpo import grpo as grpo
from irl_jax.losses.grpo import grpo_advantages as grpo_advantages
from irl_jax.losses.inverse_q_star import InverseQStarExtras as InverseQStarExtras
from irl_jax.losses.inverse_q_star import InverseQStarPGExtras as InverseQStarPGExtras
from irl_jax.losses.inverse_q_star import gather_response as gather_response
from irl_jax.losses.inverse_q_star import inverse_q_star as inverse_q_star
from irl_jax.losses.inverse_q_star import inverse_q_star_kl as inverse_q_star_kl
from irl_jax.losses.inverse_q_star import (
  inverse_q_star_policy_gradient as inverse_q_star_policy_gradient,
)
from irl_jax.losses.iq_learn import IQLearnExtras as IQLearnExtras
from irl_jax.losses.iq_learn import IQLearnOnlineExtras as IQLearnOnlineExtras
from irl_jax.losses.iq_learn import implied_rewards as implied_rewards
from irl_jax.losses.iq_learn import iq_learn as iq_learn
from irl_jax.losses.iq_learn import iq_learn_online as iq_learn_online
from irl_jax.losses.iq_learn import iq_learn_online_from_terms as iq_learn_online_from_terms
from irl_jax.losses.iq_learn import next_state_values as next_state_values
from irl_jax.losses.iq_learn import sequence_rewards as sequence_rewards
from irl_jax.losses.max_margin import max_margin as max_margin
from irl_jax.losses.max_margin import reward_accuracy as reward_accuracy
from irl_jax.losses.mle import mle as mle
from irl_jax.losses.mle import token_entropy as token_entropy
from irl_jax.losses.offline_rl import AWRExtras as AWRExtras
from irl_jax.losses.offline_rl import IPLExtras as IPLExtras
from irl_jax.losses.offline_rl import awac_actor_loss as awac_actor_loss
from irl_jax.losses.offline_rl import awr_actor_loss as awr_actor_loss
from irl_jax.losses.offline_rl import expectile_loss as expectile_loss
from irl_jax.losses.offline_rl import ipl_implied_rewards as ipl_implied_rewards
from irl_jax.losses.offline_rl import ipl_preference_loss as ipl_preference_loss
from irl_jax.losses.offline_rl import ipl_regulariser as ipl_regulariser
from irl_jax.losses.offline_rl import iql_q_loss as iql_q_loss
from irl_jax.losses.offline_rl import iql_value_loss as iql_value_loss
from irl_jax.losses.offline_rl import td3_bc_actor_loss as td3_bc_actor_loss
from irl_jax.losses.ppo import PPOExtras as PPOExtras
from irl_jax.losses.ppo import kl_shaped_rewards as kl_shaped_rewards
from irl_jax.losses.ppo import ppo_losses as ppo_losses
from irl_jax.losses.ppo import token_gae as token_gae
from irl_jax.losses.ppo import whiten as whiten
from irl_jax.losses.preference import bradley_terry as bradley_terry
from irl_jax.losses.preference import linear_bradley_terry_mle as linear_bradley_terry_mle
from irl_jax.losses.preference import linear_ranking_mle as linear_ranking_mle
from irl_jax.losses.preference import pairwise_split as pairwise_split
from irl_jax.losses.preference import pessimistic_policy_values as pessimistic_policy_values
from irl_jax.losses.preference import plackett_luce as plackett_luce
from irl_jax.losses.reductions import MaskedMean as MaskedMean
from irl_jax.losses.reductions import Normaliser as Normaliser
from irl_jax.losses.reductions import masked_sum_count as masked_sum_count
from irl_jax.losses.reductions import normalise as normalise
from irl_jax.losses.reductions import safe_divide as safe_divide
from irl_jax.losses.reductions import sequence_mean as sequence_mean
from irl_jax.losses.reductions import sequence_sum_count as sequence_sum_count
from irl_jax.losses.reductions import token_mean as token_mean
from irl_jax.losses.token_stats import TokenStats as TokenStats
from irl_jax.losses.token_stats import chunked_soft_q_stats as chunked_soft_q_stats
from irl_jax.losses.token_stats import soft_q_stats as soft_q_stats
