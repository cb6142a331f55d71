"""Parity of irl_jax's reward-model, DPO/IPO and GRPO losses with TRL's own code.

Every TRL number here comes from TRL's trainer methods, called on identical float32 inputs:

- reward model: `trl.trainer.reward_trainer.RewardTrainer.compute_loss`;
- DPO / IPO: `trl.trainer.dpo_trainer.DPOTrainer._compute_loss` (TRL 1.16 has no separate
  `dpo_loss`; the per-pair losses and implicit rewards are computed inline there);
- GRPO advantages: `trl.trainer.grpo_trainer.GRPOTrainer._generate_and_score_completions`;
- GRPO loss: `trl.trainer.grpo_trainer.GRPOTrainer._compute_loss`.

None of them is re-implemented. Each is called on a trainer made with `object.__new__` and only the
attributes the method reads, with the model replaced by a stub that returns the given log-probs
(or rewards) and the accelerator by a single-process stand-in whose `gather` also records what
TRL gathers (TRL's per-pair implicit rewards are only exposed that way). Generation and reward
functions are stubbed for the advantage test (`_generate`, `_calculate_rewards`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")
dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
reward_trainer = pytest.importorskip("trl.trainer.reward_trainer")

from irl_jax.losses import bradley_terry, dpo, grpo, grpo_advantages, ipo  # noqa: E402

RTOL = 1e-5
ATOL = 1e-6


def _close(actual, desired, rtol=RTOL, atol=ATOL, err_msg=""):
  np.testing.assert_allclose(
      np.asarray(actual, np.float64), np.asarray(desired, np.float64), rtol=rtol, atol=atol,
      err_msg=err_msg,
  )


def _np(t):
  return t.detach().cpu().numpy()


class _Accelerator:
  """Single-process stand-in for `accelerate.Accelerator`; `gather` records its inputs."""

  device = torch.device("cpu")
  num_processes = 1
  process_index = 0
  sync_gradients = True

  def __init__(self):
    self.gathered = []

  def gather(self, x):
    self.gathered.append(x.detach().clone())
    return x

  def gather_for_metrics(self, x):
    return x

  def reduce(self, x, reduction="sum"):
    del reduction
    return x


def _bare(cls, **attrs):
  trainer = object.__new__(cls)
  trainer.accelerator = _Accelerator()
  trainer.model = SimpleNamespace(training=True, is_gradient_checkpointing=False)
  trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
  trainer._total_train_tokens = 0
  trainer._tp_size = 1
  for name, value in attrs.items():
    setattr(trainer, name, value)
  return trainer


# --- reward model --------------------------------------------------------------------------


def _trl_reward_loss(chosen, rejected, margin=None):
  """TRL's `RewardTrainer.compute_loss`, the model replaced by one returning the given rewards."""
  rewards = torch.tensor(np.concatenate([chosen, rejected])[:, None], requires_grad=True)
  trainer = _bare(
      reward_trainer.RewardTrainer, args=SimpleNamespace(center_rewards_coefficient=None)
  )
  inputs = {
      "input_ids": torch.zeros(rewards.shape[0], 3, dtype=torch.long),
      "attention_mask": torch.ones(rewards.shape[0], 3, dtype=torch.long),
  }
  if margin is not None:
    inputs["margin"] = torch.tensor(margin)
  model = lambda **kwargs: SimpleNamespace(logits=rewards)
  loss = trainer.compute_loss(model, inputs)
  (grad,) = torch.autograd.grad(loss, rewards)
  return float(loss.detach()), _np(grad)[:, 0]


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_matches_trl_reward_loss(with_margin):
  rng = np.random.default_rng(0)
  n = 16
  chosen = rng.normal(size=n).astype(np.float32) * 2
  rejected = rng.normal(size=n).astype(np.float32) * 2
  margin = rng.uniform(0, 1.5, size=n).astype(np.float32) if with_margin else None

  trl_loss, trl_grad = _trl_reward_loss(chosen, rejected, margin)

  def loss_fn(rewards):
    return jnp.mean(bradley_terry(rewards[:n], rewards[n:], margin=margin))

  rewards = jnp.concatenate([chosen, rejected])
  loss, grad = jax.value_and_grad(loss_fn)(rewards)
  _close(loss, trl_loss)
  # The gradient of the mean is σ(−(r_c − r_r − m))/N per pair: a per-pair check.
  _close(grad, trl_grad, atol=1e-7)
  assert float(loss) > 0


# --- DPO / IPO ----------------------------------------------------------------------------


def _dpo_batch(seed, n=8, t=12):
  """Per-token policy log-probs `[2N, T]` (chosen rows first, as TRL concatenates them), a
  ragged response mask (every response at least 2 tokens) and reference sequence log-probs."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, t + 1, size=2 * n)
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  tok = -rng.uniform(0.05, 3.0, size=(2 * n, t)).astype(np.float32)
  seq = (tok * mask).sum(1)
  ref = (seq + rng.normal(scale=2.0, size=2 * n)).astype(np.float32)
  return tok, mask, ref[:n], ref[n:]


def _trl_dpo(tok, mask, ref_chosen, ref_rejected, *, loss_type, beta, label_smoothing=0.0):
  """TRL's `DPOTrainer._compute_loss` with precomputed reference log-probs.

  The stub model plays the causal LM: TRL passes `labels` = input ids with non-completion
  positions set to −100, and reads `outputs.log_probs[:, -(L-1):]`, the log-prob of each next
  token, 0 where the label is −100. Position 0 is a prompt token, so the completion mask over
  `input_ids` is `[0, mask]`.

  Returns the loss, its gradient with respect to the per-token log-probs, and the per-pair
  implicit rewards β·(c − c_ref), β·(r − r_ref) and margins that TRL gathers for its metrics.
  """
  rows, t = tok.shape
  completion_mask = torch.cat([torch.zeros(rows, 1), torch.tensor(mask)], 1).long()
  tok_t = torch.tensor(tok, requires_grad=True)

  def model(*, input_ids, attention_mask, labels, fused_lm_head, use_cache):
    del input_ids, attention_mask, fused_lm_head, use_cache
    zeros = torch.zeros(rows, t)
    return SimpleNamespace(
        log_probs=tok_t.masked_fill(labels[:, 1:] == -100, 0.0),
        entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(),
    )

  trainer = _bare(
      dpo_trainer.DPOTrainer,
      beta=beta, label_smoothing=label_smoothing, loss_types=[loss_type], loss_weights=[1.0],
      f_divergence_type="reverse_kl", ld_alpha=None, precompute_ref_logps=True,
      aux_loss_enabled=False, use_weighting=False,
  )
  inputs = {
      "input_ids": torch.arange(rows * (t + 1)).reshape(rows, t + 1) % 7 + 1,
      "attention_mask": torch.ones(rows, t + 1, dtype=torch.long),
      "completion_mask": completion_mask,
      "ref_chosen_logps": torch.tensor(ref_chosen),
      "ref_rejected_logps": torch.tensor(ref_rejected),
  }
  loss = trainer._compute_loss(model, inputs, return_outputs=False)
  (grad,) = torch.autograd.grad(loss, tok_t)
  # DPOTrainer gathers, in order: chosen rewards, rejected rewards, accuracies, margins,
  # chosen logps, rejected logps.
  chosen_r, rejected_r, _, margins, chosen_logps, _ = trainer.accelerator.gathered
  return SimpleNamespace(
      loss=float(loss.detach()), grad=_np(grad), chosen_rewards=_np(chosen_r),
      rejected_rewards=_np(rejected_r), margins=_np(margins), chosen_logps=_np(chosen_logps),
  )


def _jax_pairs(tok, mask):
  n = tok.shape[0] // 2
  seq = jnp.sum(jnp.where(mask > 0, tok, 0), axis=1)
  return seq[:n], seq[n:]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_sigmoid_matches_trl(beta):
  tok, mask, ref_c, ref_r = _dpo_batch(1)
  out = _trl_dpo(tok, mask, ref_c, ref_r, loss_type="sigmoid", beta=beta)

  def loss_fn(tok):
    c, r = _jax_pairs(tok, mask)
    return jnp.mean(dpo(c, r, ref_c, ref_r, beta=beta))

  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(tok))
  _close(loss, out.loss)
  _close(grad, out.grad, atol=1e-7)
  assert np.all(grad[mask == 0] == 0) and np.all(out.grad[mask == 0] == 0)
  assert np.abs(out.grad[mask > 0]).min() > 0

  # Implicit rewards β·(c − c_ref), β·(r − r_ref) and their margin β·h.
  c, r = _jax_pairs(tok, mask)
  _close(c, out.chosen_logps)
  _close(beta * (c - ref_c), out.chosen_rewards, atol=1e-5)
  _close(beta * (r - ref_r), out.rejected_rewards, atol=1e-5)
  _close(beta * (c - ref_c - (r - ref_r)), out.margins, atol=1e-5)


def test_trl_sigmoid_ignores_label_smoothing():
  """TRL 1.16 dropped label smoothing from `loss_type="sigmoid"` (DPOConfig: "used in Robust DPO
  and EXO"); conservative DPO there is only reachable through "aot" (see the next test). So TRL's
  "sigmoid" with ε = 0.1 equals irl_jax's plain DPO, and irl_jax's cDPO exceeds it by exactly
  ε·mean(βh), since softplus(z) = softplus(−z) + z."""
  beta, eps = 0.1, 0.1
  tok, mask, ref_c, ref_r = _dpo_batch(2)
  plain = _trl_dpo(tok, mask, ref_c, ref_r, loss_type="sigmoid", beta=beta)
  smoothed = _trl_dpo(tok, mask, ref_c, ref_r, loss_type="sigmoid", beta=beta, label_smoothing=eps)
  assert smoothed.loss == plain.loss
  c, r = _jax_pairs(tok, mask)
  _close(jnp.mean(dpo(c, r, ref_c, ref_r, beta=beta)), smoothed.loss)
  cdpo = jnp.mean(dpo(c, r, ref_c, ref_r, beta=beta, label_smoothing=eps))
  _close(cdpo, smoothed.loss + eps * np.mean(smoothed.margins))
  assert abs(float(cdpo) - smoothed.loss) > 1e-3


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_conservative_dpo_matches_trl_aot_on_presorted_pairs(beta):
  """TRL's "aot" loss is `−(1−ε)·log σ(βδ) − ε·log σ(−βδ)` (cDPO's form) with δ built from the
  separately *sorted* policy and reference log-ratios. On pairs ordered so that both
  `c − r` and `c_ref − r_ref` are already ascending, the sort is the identity, δ = h, and it
  is exactly conservative DPO."""
  eps = 0.1
  n = 8
  tok, mask, _, _ = _dpo_batch(3, n=n)
  seq = torch.tensor(tok * mask).sum(1).numpy()  # float32, as TRL sums it
  order = np.argsort(seq[:n] - seq[n:])
  tok = np.concatenate([tok[:n][order], tok[n:][order]])
  mask = np.concatenate([mask[:n][order], mask[n:][order]])
  rng = np.random.default_rng(4)
  ref_r = -rng.uniform(5, 20, size=n).astype(np.float32)
  ref_c = (ref_r + np.sort(rng.normal(scale=3.0, size=n))).astype(np.float32)
  c, r = _jax_pairs(tok, mask)
  assert np.all(np.diff(np.asarray(c - r)) > 0) and np.all(np.diff(ref_c - ref_r) > 0)

  out = _trl_dpo(tok, mask, ref_c, ref_r, loss_type="aot", beta=beta, label_smoothing=eps)

  def loss_fn(tok):
    c, r = _jax_pairs(tok, mask)
    return jnp.mean(dpo(c, r, ref_c, ref_r, beta=beta, label_smoothing=eps))

  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(tok))
  _close(loss, out.loss)
  _close(grad, out.grad, atol=1e-7)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_with_lengths_matches_trl(beta):
  """TRL's "ipo" divides each (policy − reference) log-ratio by the response's token count
  (`completion_mask.sum`), which is irl_jax's `ipo` with `chosen_lengths`/`rejected_lengths`."""
  n = 8
  tok, mask, ref_c, ref_r = _dpo_batch(5, n=n)
  lengths = mask.sum(1)
  out = _trl_dpo(tok, mask, ref_c, ref_r, loss_type="ipo", beta=beta)

  def loss_fn(tok):
    c, r = _jax_pairs(tok, mask)
    return jnp.mean(ipo(
        c, r, ref_c, ref_r, beta=beta, chosen_lengths=lengths[:n], rejected_lengths=lengths[n:]
    ))

  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(tok))
  _close(loss, out.loss)
  _close(grad, out.grad, atol=1e-7)
  # Without the lengths irl_jax's IPO is on summed log-probs (the paper's form): by design not
  # TRL's number.
  c, r = _jax_pairs(tok, mask)
  summed = jnp.mean(ipo(c, r, ref_c, ref_r, beta=beta))
  assert abs(float(summed) - out.loss) > 1e-2 * abs(out.loss)


# --- GRPO advantages ----------------------------------------------------------------------


def _trl_advantages(rewards, group_size, scale_rewards="group", lengths=None):
  """TRL's `GRPOTrainer._generate_and_score_completions` with generation and the reward
  functions stubbed: returns its advantages, completion mask and `num_items_in_batch`."""
  b = len(rewards)
  lengths = np.full(b, 3) if lengths is None else lengths
  completion_ids = [list(range(1, int(k) + 1)) for k in lengths]

  def generate(prompts):
    prompt_ids = [[5, 6] for _ in prompts]
    return prompt_ids, completion_ids, None, ["x"] * len(prompts), None, {}, None, []

  trainer = _bare(
      grpo_trainer.GRPOTrainer,
      environment_factories=None, environments=None, tools=None, use_vllm=False, beta=0.0,
      _tokenizer=SimpleNamespace(pad_token_id=0), pad_to_multiple_of=None,
      mask_truncated_completions=False, num_iterations=1, num_generations=group_size,
      multi_objective_aggregation="sum_then_normalize", reward_weights=torch.ones(1),
      scale_rewards=scale_rewards, reward_func_names=["stub"], log_multimodal=False,
      _pending_extra_logs={}, _pending_metrics={},
      _logs={
          "prompt": [], "completion": [], "advantages": [], "images": [],
          "rewards": defaultdict(list), "extra": defaultdict(list),
      },
      args=SimpleNamespace(
          per_device_train_batch_size=b, gradient_checkpointing_kwargs=None,
          steps_per_generation=1, gradient_accumulation_steps=1,
      ),
      _generate=generate,
      _calculate_rewards=lambda *args: torch.tensor(rewards, dtype=torch.float32)[:, None],
  )
  out = trainer._generate_and_score_completions([{"prompt": "p"} for _ in range(b)])
  return out


def _grouped_rewards(seed, num_groups=3, group_size=4):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(num_groups, group_size)).astype(np.float32)
  rewards[-1] = 0.5  # a zero-spread group (exactly representable: TRL's mean is exact too)
  return rewards.reshape(-1)


def test_grpo_advantages_match_trl_with_sample_std():
  g = 4
  rewards = _grouped_rewards(6, group_size=g)
  out = _trl_advantages(rewards, g)
  trl_adv = _np(out["advantages"])
  ours = grpo_advantages(rewards, group_size=g, std_ddof=1, eps=1e-4)
  _close(ours, trl_adv)
  assert np.all(trl_adv[-g:] == 0) and np.all(np.asarray(ours[-g:]) == 0)
  assert np.abs(trl_adv[:-g]).min() > 1e-3


def test_grpo_advantages_default_differs_from_trl_by_documented_factor():
  """Default irl_jax (population std, eps 1e-6) vs TRL (sample std, eps 1e-4). With
  `k = sqrt((G−1)/G)`, TRL's `c/(s·/k + 1e-4)` equals `k · c/(s + k·1e-4)`: irl_jax's
  population-std advantages with eps `k·1e-4`, scaled by k."""
  g = 4
  k = math.sqrt((g - 1) / g)
  rewards = _grouped_rewards(7, group_size=g)
  trl_adv = _np(_trl_advantages(rewards, g)["advantages"])
  _close(k * grpo_advantages(rewards, group_size=g, eps=k * 1e-4), trl_adv)
  default = np.asarray(grpo_advantages(rewards, group_size=g))
  _close(k * default[:-g], trl_adv[:-g], rtol=1e-3)  # the ≈13% factor, up to the eps
  assert np.abs(default[:-g] - trl_adv[:-g]).max() > 0.05


def test_grpo_advantages_unscaled_match_trl():
  g = 3
  rewards = _grouped_rewards(8, num_groups=4, group_size=g)
  trl_adv = _np(_trl_advantages(rewards, g, scale_rewards="none")["advantages"])
  _close(grpo_advantages(rewards, group_size=g, scale_by_std=False), trl_adv)


def test_trl_generation_batch_mask_and_token_count():
  """The padded completion mask and `num_items_in_batch` (used by "dapo") TRL builds for
  ragged completions, as fed to the loss tests below."""
  lengths = np.array([1, 4, 2, 3])
  out = _trl_advantages(np.arange(4, dtype=np.float32), 2, lengths=lengths)
  expected = (np.arange(4)[None, :] < lengths[:, None]).astype(np.int64)
  np.testing.assert_array_equal(_np(out["completion_mask"]), expected)
  assert int(out["num_items_in_batch"]) == lengths.sum()


# --- GRPO loss ----------------------------------------------------------------------------


def _grpo_batch(seed, b=9, t=10):
  """Per-token log-probs with old ≠ current (clipping active on some tokens), ragged lengths
  and, in the last row, an all-masked completion; padding holds arbitrary finite values."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  lengths[-1] = 0
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
  logps = -rng.uniform(0.05, 3.0, size=(b, t)).astype(np.float32)
  old = (logps + rng.normal(scale=0.3, size=(b, t))).astype(np.float32)
  ref = (logps + rng.normal(scale=0.3, size=(b, t))).astype(np.float32)
  adv = rng.normal(size=b).astype(np.float32)
  return logps, old, ref, adv, mask


def _trl_grpo(logps, old, ref, adv, mask, *, loss_type, beta, epsilon, max_completion_length):
  """TRL's `GRPOTrainer._compute_loss`, its `_get_per_token_logps_and_entropies` returning the
  given log-probs (a leaf, for the gradient)."""
  b, t = logps.shape
  logps_t = torch.tensor(logps, requires_grad=True)
  trainer = _bare(
      grpo_trainer.GRPOTrainer,
      loss_type=loss_type, beta=beta, epsilon_low=epsilon, epsilon_high=epsilon,
      importance_sampling_level="token", top_entropy_quantile=1.0, aux_loss_enabled=False,
      off_policy_mask_threshold=None, use_vllm=False, _entropy_bonus_enabled=False,
      current_gradient_accumulation_steps=1, max_completion_length=max_completion_length,
      args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
      _get_per_token_logps_and_entropies=lambda *a, **k: (logps_t, torch.zeros(b, t), None),
  )
  mask_t = torch.tensor(mask)
  inputs = {
      "prompt_ids": torch.ones(b, 2, dtype=torch.long),
      "prompt_mask": torch.ones(b, 2, dtype=torch.long),
      "completion_ids": torch.ones(b, t, dtype=torch.long),
      "completion_mask": mask_t,
      "advantages": torch.tensor(adv),
      "old_per_token_logps": torch.tensor(old),
      "ref_per_token_logps": torch.tensor(ref),
      "num_items_in_batch": mask_t.sum(),  # as `_generate_and_score_completions` sets it
  }
  loss = trainer._compute_loss(None, inputs)
  (grad,) = torch.autograd.grad(loss, logps_t)
  return float(loss.detach()), _np(grad), trainer._metrics["train"]


# TRL loss_type -> irl_jax normaliser (a callable of (B, max_completion_length) for constants):
# "grpo": mean over all rows of each row's token mean, an empty row as 0;
# "bnpo": Σ mask·ℓ / Σ mask; "dapo": Σ mask·ℓ / num_items_in_batch, the same token mean for one
# process without accumulation; "dr_grpo": Σ mask·ℓ / (B · max_completion_length).
_NORMALISERS = {
    "grpo": lambda b, m: "sequence_all_rows",
    "bnpo": lambda b, m: "token",
    "dapo": lambda b, m: "token",
    "dr_grpo": lambda b, m: float(b * m),
}


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", sorted(_NORMALISERS))
def test_grpo_loss_matches_trl(loss_type, beta):
  eps = 0.2
  logps, old, ref, adv, mask = _grpo_batch(10)
  b, t = logps.shape
  max_len = t + 6  # the config's max_completion_length, longer than this batch's padding
  trl_loss, trl_grad, metrics = _trl_grpo(
      logps, old, ref, adv, mask, loss_type=loss_type, beta=beta, epsilon=eps,
      max_completion_length=max_len,
  )
  normaliser = _NORMALISERS[loss_type](b, max_len)

  def loss_fn(lp):
    return grpo(
        lp, old, ref, adv, where=mask.astype(bool), normaliser=normaliser, clip_epsilon=eps,
        kl_coef=beta,
    )

  (loss, extras), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logps))
  _close(loss, trl_loss)
  _close(grad, trl_grad, atol=1e-7)
  assert np.all(grad[-1] == 0) and np.all(trl_grad[-1] == 0)  # the all-masked row

  # The clipped branch is active on some tokens, and both count the same ones.
  clip_fraction = float(extras.clip_fraction.mean())
  assert 0.05 < clip_fraction < 0.95
  _close(clip_fraction, metrics["clip_ratio/region_mean"][0])
  if beta:
    _close(extras.mean_kl.mean(), metrics["kl"][0])


def test_grpo_sequence_normaliser_differs_from_trl_only_by_empty_rows():
  """irl_jax's "sequence" normaliser averages over non-empty rows, TRL's "grpo" over all rows:
  with one of B rows empty they differ by exactly the factor B/(B−1)."""
  logps, old, ref, adv, mask = _grpo_batch(11)
  b, t = logps.shape
  trl_loss, _, _ = _trl_grpo(
      logps, old, ref, adv, mask, loss_type="grpo", beta=0.04, epsilon=0.2, max_completion_length=t,
  )
  loss, _ = grpo(logps, old, ref, adv, where=mask.astype(bool), normaliser="sequence")
  _close(loss * (b - 1) / b, trl_loss)
  assert abs(float(loss) - trl_loss) > 1e-4
