"""Optimizers: AdamW with warmup and cosine (or constant) decay and global-norm clipping."""

from __future__ import annotations

import optax


def learning_rate_schedule(*, learning_rate: float, warmup_steps: int, total_steps: int,
                           decay: str = "cosine", final_fraction: float = 0.1) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to `final_fraction` of it (or constant)."""
  if decay not in ("cosine", "constant"):
    raise ValueError(f"unknown learning-rate decay {decay!r}; use 'cosine' or 'constant'.")
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  if decay == "constant":
    rest = optax.constant_schedule(learning_rate)
  else:
    rest = optax.cosine_decay_schedule(
        learning_rate, max(total_steps - warmup_steps, 1), alpha=final_fraction)
  return optax.join_schedules([warmup, rest], [warmup_steps])


def make_optimizer(*, learning_rate: float, warmup_steps: int, total_steps: int,
                   decay: str = "cosine", weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.95, eps: float = 1e-8, clip_norm: float | None = 1.0):
  """`(optax transform, schedule)`: clip by global norm, then AdamW on the schedule.

  Gradient accumulation is done by the train step over micro-batches (sums and
  counts, so the mean is exact), not by the optimizer.
  """
  schedule = learning_rate_schedule(learning_rate=learning_rate, warmup_steps=warmup_steps,
                                    total_steps=total_steps, decay=decay)
  parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  return optax.chain(*parts), schedule
