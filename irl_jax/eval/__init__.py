"""Evaluation metrics (host-side NumPy; not differentiated)."""

from irl_jax.eval.metrics import rankdata as rankdata
from irl_jax.eval.metrics import spearman as spearman
