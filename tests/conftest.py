"""Shared test settings: deterministic hypothesis runs, small shapes."""

import hypothesis

# Derandomised so that CI is reproducible; no deadline because the first
# example of each test pays for jit compilation.
hypothesis.settings.register_profile(
    "irl_jax", deadline=None, max_examples=25, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile("irl_jax")
