"""irl_jax: inverse reinforcement learning for language models and control, in JAX."""

from irl_jax import losses as losses

__version__ = "0.1.0"
