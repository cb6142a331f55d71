"""Deep control: JAX environments (gymnax, Brax), RL, imitation and IRL, offline RL.

- `envs`: the ecosystem's environments behind one pure interface.
- `networks`: Flax NNX networks, used as pure functions of their parameters.
- `data`: trajectory datasets, preference segments, `.npz` and Farama Minari files.
- `imitation`: behaviour cloning and IQ-Learn (offline and online).
"""

from irl_jax.control import data as data
from irl_jax.control import envs as envs
from irl_jax.control import imitation as imitation
from irl_jax.control import networks as networks
from irl_jax.control.types import Transitions as Transitions
