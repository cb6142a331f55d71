"""Deep control: JAX environments (gymnax, Brax), RL, imitation and IRL, offline RL.

- `envs`: the ecosystem's environments behind one pure interface.
- `networks`: Flax NNX networks, used as pure functions of their parameters.
- `data`: trajectory datasets, preference segments, `.npz` and Farama Minari files.
- `imitation`: behaviour cloning and IQ-Learn (offline and online).
- `ppo`: PPO, in pieces (`collect`, `update`) that adversarial IRL composes.
- `sac`: SAC (continuous) and discrete SAC / soft-Q, with a flashbax replay buffer.
- `adversarial`: GAIL and AIRL on PPO.
- `experts`: PPO experts for the laptop suite and their demonstrations.
- `offline`: IQL, TD3+BC, AWAC, Inverse Preference Learning, and a reward model + IQL.
- `action_free`: inverse-dynamics labelling of trajectories without actions.
- `labellers`: preference labellers over observations or rendered frames, and a
  Bradley–Terry reward on frames.
- `musik`: multi-step inverse kinematics on a block-MDP combination lock (a
  reconstruction).
- `reward_programs`: reward functions written as source text, loaded in a sandbox,
  validated under jit/vmap, with provenance.
- `mtm`: masked trajectory models, one bidirectional transformer over (state,
  return-to-go, action) tokens used as inverse dynamics, forward dynamics, BC,
  return-conditioned BC or goal reaching by its mask.
- `resets`: expert resets (episodes that start at demonstration states with
  probability α), with the demonstrations' environment states.
- `runner`: checkpointed, resumable PPO and GAIL/AIRL runs.
"""

from irl_jax.control import action_free as action_free
from irl_jax.control import adversarial as adversarial
from irl_jax.control import data as data
from irl_jax.control import envs as envs
from irl_jax.control import experts as experts
from irl_jax.control import imitation as imitation
from irl_jax.control import labellers as labellers
from irl_jax.control import mtm as mtm
from irl_jax.control import musik as musik
from irl_jax.control import networks as networks
from irl_jax.control import offline as offline
from irl_jax.control import ppo as ppo
from irl_jax.control import resets as resets
from irl_jax.control import reward_programs as reward_programs
from irl_jax.control import sac as sac
from irl_jax.control.types import Transitions as Transitions
