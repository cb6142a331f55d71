"""Tabular MDPs in JAX: generators, dynamic programming, and IRL objectives and learners.

Everything is a pure function of arrays (a `TabularMDP` is a pytree), jit-compiled
and seed-vmappable; float64 works under `jax_enable_x64` for exactness checks.
"""

from irl_jax.tabular import constrained as constrained
from irl_jax.tabular import dp as dp
from irl_jax.tabular import envs as envs
from irl_jax.tabular import irl as irl
from irl_jax.tabular import language as language
from irl_jax.tabular import learners as learners
from irl_jax.tabular import resets as resets
from irl_jax.tabular.constrained import ConstrainedSolution as ConstrainedSolution
from irl_jax.tabular.constrained import constrained_soft_solve as constrained_soft_solve
from irl_jax.tabular.constrained import distance_to_constant_class as distance_to_constant_class
from irl_jax.tabular.constrained import distance_to_shaping_class as distance_to_shaping_class
from irl_jax.tabular.constrained import make_constrained_irl as make_constrained_irl
from irl_jax.tabular.constrained import shaping_residual as shaping_residual
from irl_jax.tabular.constrained import transfer_regret as transfer_regret
from irl_jax.tabular.dp import SoftSolution as SoftSolution
from irl_jax.tabular.dp import Trajectories as Trajectories
from irl_jax.tabular.dp import empirical_occupancy as empirical_occupancy
from irl_jax.tabular.dp import expected_return as expected_return
from irl_jax.tabular.dp import finite_occupancy as finite_occupancy
from irl_jax.tabular.dp import finite_soft_value_iteration as finite_soft_value_iteration
from irl_jax.tabular.dp import occupancy as occupancy
from irl_jax.tabular.dp import policy_evaluation as policy_evaluation
from irl_jax.tabular.dp import sample_trajectories as sample_trajectories
from irl_jax.tabular.dp import soft_value_iteration as soft_value_iteration
from irl_jax.tabular.dp import state_transition_matrix as state_transition_matrix
from irl_jax.tabular.envs import boundary_states as boundary_states
from irl_jax.tabular.envs import combination_lock as combination_lock
from irl_jax.tabular.envs import constrained_gridworld as constrained_gridworld
from irl_jax.tabular.envs import gridworld as gridworld
from irl_jax.tabular.envs import make as make
from irl_jax.tabular.envs import random_mdp as random_mdp
from irl_jax.tabular.envs import registered as registered
from irl_jax.tabular.irl import MCEExtras as MCEExtras
from irl_jax.tabular.irl import behaviour_cloning_loss as behaviour_cloning_loss
from irl_jax.tabular.irl import expert_log_likelihood as expert_log_likelihood
from irl_jax.tabular.irl import iq_learn_control as iq_learn_control
from irl_jax.tabular.irl import iq_learn_rewards as iq_learn_rewards
from irl_jax.tabular.irl import mce_irl_loss as mce_irl_loss
from irl_jax.tabular.irl import soft_values as soft_values
from irl_jax.tabular.irl import tabular_iq_learn_loss as tabular_iq_learn_loss
from irl_jax.tabular.learners import Transitions as Transitions
from irl_jax.tabular.learners import linear_reward as linear_reward
from irl_jax.tabular.learners import make_behaviour_cloning as make_behaviour_cloning
from irl_jax.tabular.learners import make_iq_learn as make_iq_learn
from irl_jax.tabular.learners import make_mce_irl as make_mce_irl
from irl_jax.tabular.learners import transitions_from as transitions_from
from irl_jax.tabular.mdp import TabularMDP as TabularMDP
from irl_jax.tabular.mdp import check_mdp as check_mdp
from irl_jax.tabular.mdp import make_mdp as make_mdp
