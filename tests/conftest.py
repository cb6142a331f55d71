"""Shared test settings: deterministic hypothesis runs, small shapes, one XLA compilation
cache for every test process."""

import os
import tempfile

import hypothesis

# Many tests compile the same programs in different processes: the end-to-end and
# multi-process tests start `python -m experiments.train` (the same smoke-config train
# step) a dozen times, and each xdist worker builds the same small models. JAX's persistent
# compilation cache lets a process load an executable that another one compiled (keyed by
# the program, the compiler flags and the jax/jaxlib versions, so a hit is the same
# executable; about a quarter off the subprocess tests here). Set through the environment
# so that the subprocesses and notebook kernels the tests start inherit it; a directory
# given by the caller is kept. Remove the directory for a cold-cache timing.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"irl_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024**3))  # bytes; LRU beyond
# Every program, not only those that take a second to compile: a subprocess's many small
# ones (initialisers, the eval step, data transforms) add up to most of what it saves.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # after the environment above

# The environment is read when jax is first imported; a plugin may have imported it earlier.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_compilation_cache_max_size",
                  int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

# Derandomised so that CI is reproducible; no deadline because the first
# example of each test pays for jit compilation.
hypothesis.settings.register_profile(
    "irl_jax", deadline=None, max_examples=25, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile("irl_jax")
