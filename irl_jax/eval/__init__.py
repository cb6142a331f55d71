"""Evaluation metrics (host-side NumPy on `scipy.stats` and `sacrebleu`; not differentiated)."""

from irl_jax.eval.metrics import bleu as bleu
from irl_jax.eval.metrics import distinct_n as distinct_n
from irl_jax.eval.metrics import rankdata as rankdata
from irl_jax.eval.metrics import self_bleu as self_bleu
from irl_jax.eval.metrics import spearman as spearman
