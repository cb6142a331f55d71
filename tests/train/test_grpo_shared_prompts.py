"""GRPO groups run their shared prompt once: `Transformer.grouped_prefix_hidden` equals the
plain forward pass on real positions (values and gradients, with rematerialisation and a
sliding window too); `lm.grouped_prompts` accepts only the samplers' group layout;
`lm.model_hidden` takes the grouped path exactly when it applies; the GRPO objective with
`share_prompts` gives the same loss and gradients as without, on grouped batches and on
batches that are not (where it falls back to the plain pass)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax import models
from irl_jax.models import ModelConfig
from irl_jax.train import lm, objectives

CONFIG = ModelConfig(model_type="llama", vocab_size=41, hidden_size=16, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=4, intermediate_size=32, max_position_embeddings=32)
G, P, M = 3, 5, 7  # samples per prompt, prompt columns, response columns
N, T = 2 * G, P + M


def _groups(seed=0):
  """Sampler-layout rows: 2 prompts (left-padded, different pad widths), each repeated G
  times contiguously, followed by ragged right-padded responses."""
  rng = np.random.default_rng(seed)
  prompts = rng.integers(3, CONFIG.vocab_size, (2, P)).astype(np.int32)
  prompt_real = np.arange(P)[None] >= np.array([[0], [2]])
  prompts = np.where(prompt_real, prompts, 0)
  ids = np.repeat(prompts, G, axis=0)
  prompt_real = np.repeat(prompt_real, G, axis=0)
  resp_len = np.array([[M], [3], [1], [5], [M], [2]])
  resp_real = np.arange(M)[None] < resp_len
  responses = np.where(resp_real, rng.integers(3, CONFIG.vocab_size, (N, M)), 0)
  real = np.concatenate([prompt_real, resp_real], axis=1)
  return {"sample_input_ids": np.concatenate([ids, responses], axis=1).astype(np.int32),
          "sample_segment_ids": real.astype(np.int32),
          "sample_positions": np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int32),
          "sample_loss_mask": np.concatenate([np.zeros((N, P), bool), resp_real], axis=1)}


def _args(b):
  return tuple(jnp.asarray(b[k]) for k in ("sample_input_ids", "sample_segment_ids",
                                            "sample_positions"))


GPT2_LIKE = dict(positions="learned", norm="layer", mlp="plain", activation="gelu_tanh",
                 qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True)
GEMMA_LIKE = dict(embed_scale=True, norm_offset=1.0, activation="gelu_tanh")


@pytest.mark.parametrize("remat,window,arch", [
    (False, None, {}), (True, None, {}), (False, 4, {}), (False, None, GPT2_LIKE),
    (False, None, GEMMA_LIKE)])
def test_grouped_prefix_hidden_is_the_plain_forward_pass(remat, window, arch):
  config = dataclasses.replace(CONFIG, sliding_window=window, **arch)
  model = models.Transformer(config, rngs=nnx.Rngs(1), remat=remat)
  b = _groups()
  ids, seg, pos = _args(b)
  real = np.asarray(seg) > 0

  def plain(m):
    return m(ids, segment_ids=seg, positions=pos, return_hidden=True)

  def grouped(m):
    return m.grouped_prefix_hidden(ids, segment_ids=seg, positions=pos, prefix_len=P,
                                   group_size=G)

  h_grouped = np.asarray(jax.jit(grouped)(model))
  np.testing.assert_allclose(h_grouped[real], np.asarray(jax.jit(plain)(model))[real],
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(h_grouped))
  model_def, params = nnx.split(model)

  def grad(f):  # of a nonlinear function of the real positions only
    loss = lambda p: jnp.sum(jnp.where(jnp.asarray(real)[..., None],
                                       jnp.sin(3.0 * f(nnx.merge(model_def, p))), 0.0))
    return jax.jit(jax.grad(loss))(params)

  g_plain, g_grouped = grad(plain), grad(grouped)
  for a, c in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_grouped), strict=True):
    a, c = np.asarray(a), np.asarray(c)  # float32 round-off, relative to the leaf's scale
    np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(a).max()))
  # With remat, the grouped pass rematerialises its blocks too (the cache carries gradients).
  text = str(jax.make_jaxpr(lambda m: grouped(m))(model))
  assert (("checkpoint" in text) or ("remat" in text)) == remat


def test_grouped_prefix_hidden_in_bfloat16_matches_the_plain_pass():
  model = models.Transformer(CONFIG, rngs=nnx.Rngs(1), param_dtype=jnp.bfloat16,
                             dtype=jnp.bfloat16)
  ids, seg, pos = _args(_groups())
  real = np.asarray(seg) > 0
  plain = jax.jit(lambda m: m(ids, segment_ids=seg, positions=pos, return_hidden=True))(model)
  grouped = jax.jit(lambda m: m.grouped_prefix_hidden(
      ids, segment_ids=seg, positions=pos, prefix_len=P, group_size=G))(model)
  assert grouped.dtype == plain.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(grouped, np.float32)[real],
                             np.asarray(plain, np.float32)[real], rtol=2e-2, atol=2e-2)


def test_grouped_prefix_hidden_refuses_bad_arguments():
  model = models.Transformer(CONFIG, rngs=nnx.Rngs(1))
  ids, seg, pos = _args(_groups())
  with pytest.raises(ValueError, match="group_size=4 must be a positive int dividing the 6"):
    model.grouped_prefix_hidden(ids, segment_ids=seg, positions=pos, prefix_len=P,
                                group_size=4)
  for bad in (0, T):
    with pytest.raises(ValueError, match=f"prefix_len={bad} must be an int in"):
      model.grouped_prefix_hidden(ids, segment_ids=seg, positions=pos, prefix_len=bad,
                                  group_size=G)
  with pytest.raises(ValueError, match="positions has shape"):
    model.grouped_prefix_hidden(ids, segment_ids=seg, positions=pos[:, :-1], prefix_len=P,
                                group_size=G)


def test_grouped_prompts_accepts_only_the_group_layout():
  b = _groups()
  check = lambda b, **kw: bool(lm.grouped_prompts(*_args(b), prompt_len=P, group_size=G, **kw))
  assert check(b)
  assert bool(lm.grouped_prompts(*_args(b), prompt_len=P, group_size=1))
  # The responses may differ; one changed prompt token, position or segment id may not.
  for key, row, col, value in (("sample_input_ids", 4, P - 1, 2),
                               ("sample_positions", 1, 3, 9),
                               ("sample_segment_ids", 5, 0, 1)):
    changed = {k: v.copy() for k, v in b.items()}
    changed[key][row, col] = value
    assert not check(changed), key
  packed = {k: v.copy() for k, v in b.items()}
  packed["sample_segment_ids"][0, P:] = 2 * packed["sample_segment_ids"][0, P:]
  assert not check(packed)
  # Groups of 2 over rows that come in groups of 3 do not share prompts.
  assert not bool(lm.grouped_prompts(*_args(b), prompt_len=P, group_size=2))


class _Spy(nnx.Module):
  """A model whose grouped path is told apart from its plain one (it adds 1)."""

  def __init__(self, model):
    self.model = model

  def __call__(self, *args, **kwargs):
    return self.model(*args, **kwargs)

  def grouped_prefix_hidden(self, *args, **kwargs):
    return self.model.grouped_prefix_hidden(*args, **kwargs) + 1.0


def test_model_hidden_takes_the_grouped_path_exactly_when_it_applies():
  spy = _Spy(models.Transformer(CONFIG, rngs=nnx.Rngs(2)))
  ids, seg, pos = _args(_groups())
  real = np.asarray(seg) > 0
  plain = np.asarray(spy(ids, segment_ids=seg, positions=pos, return_hidden=True))
  hidden = jax.jit(lambda m, i, s, p, groups: lm.model_hidden(m, i, s, p, prompt_groups=groups),
                   static_argnums=4)
  assert lm.shares_prompts(spy, (N, T), (P, G))
  np.testing.assert_allclose(np.asarray(hidden(spy, ids, seg, pos, (P, G)))[real],
                             plain[real] + 1.0, rtol=1e-5, atol=1e-5)
  # Statically inapplicable: no groups, groups of 1, a group size that does not divide the
  # rows, a prompt length outside (0, T), a model without the grouped pass.
  for groups in (None, (P, 1), (P, 4), (0, G), (T, G)):
    assert not lm.shares_prompts(spy, (N, T), groups)
    np.testing.assert_allclose(np.asarray(hidden(spy, ids, seg, pos, groups)), plain,
                               rtol=1e-5, atol=1e-5)
  assert not lm.shares_prompts(object(), (N, T), (P, G))


def _grpo_batch(policy, b, seed=0):
  from reverse_task import with_grpo_fields

  return with_grpo_fields(policy, b, seed)


def _loss_and_grads(objective, model, batch):
  model_def, params = nnx.split(model)

  def f(params):
    terms, _ = objective(nnx.merge(model_def, params), batch, jax.random.key(0))
    return terms.mean()

  return jax.jit(jax.value_and_grad(f))(params)


def test_grpo_with_shared_prompts_is_the_same_objective():
  policy = models.Transformer(CONFIG, rngs=nnx.Rngs(3))
  batch = _grpo_batch(policy, _groups())
  hp = dict(clip_epsilon=0.2, kl_coef=0.04, normaliser="token", max_new_tokens=M,
            num_samples=G)
  make = lambda share: objectives.grpo_objective(share_prompts=share, **hp)
  loss_off, g_off = _loss_and_grads(make(False), policy, batch)
  loss_on, g_on = _loss_and_grads(make(True), policy, batch)
  assert np.isfinite(float(loss_off)) and float(loss_off) != 0.0
  np.testing.assert_allclose(float(loss_on), float(loss_off), rtol=1e-5, atol=1e-7)
  for a, c in zip(jax.tree.leaves(g_off), jax.tree.leaves(g_on), strict=True):
    np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-4, atol=1e-6)
  _, metrics = make(True)(policy, batch, None)
  assert float(metrics[lm.PROMPT_GROUPS_BROKEN]) == 0.0
  assert lm.PROMPT_GROUPS_BROKEN not in make(False)(policy, batch, None)[1]
  assert objectives.GRPOConfig().share_prompts


def test_grpo_with_shared_prompts_refuses_rows_that_are_not_groups():
  policy = models.Transformer(CONFIG, rngs=nnx.Rngs(3))
  b = {k: v.copy() for k, v in _groups().items()}
  b["sample_input_ids"][-1, P - 1] = 2  # the last row's prompt differs from its group's
  batch = _grpo_batch(policy, b)
  hp = dict(clip_epsilon=0.2, kl_coef=0.04, max_new_tokens=M, num_samples=G)
  terms, metrics = objectives.grpo_objective(share_prompts=True, **hp)(policy, batch, None)
  assert float(metrics[lm.PROMPT_GROUPS_BROKEN]) == 1.0
  assert np.isnan(float(terms.sum)) and float(terms.count) == float(b["sample_loss_mask"].sum())
  terms, _ = objectives.grpo_objective(share_prompts=False, **hp)(policy, batch, None)
  assert np.isfinite(float(terms.mean()))


def test_the_trainer_names_share_prompts_when_sample_rows_are_not_groups(tmp_path,
                                                                          monkeypatch):
  from reverse_task import ALPHABET, TINY_ARCH, policy_stage_config, train_on_edited_samples

  from irl_jax.data import char_tokenizer
  from irl_jax.train import loop

  c = policy_stage_config("grpo", steps=2, max_new_tokens=4, arch=TINY_ARCH)
  assert c.objective.grpo.share_prompts and c.objective.grpo.num_samples > 1
  vocab = len(char_tokenizer(ALPHABET))

  def second_prompt_changed(out, call):  # the second step's rows break the groups
    if call != 2:
      return out
    ids = np.array(out["sample_input_ids"])
    col = ids.shape[1] - 4 - 1  # the prompt's last column, a real token
    ids[1, col] = 3 + (ids[1, col] - 2) % (vocab - 3)
    return {**out, "sample_input_ids": ids}

  with pytest.raises(loop.NonFiniteError, match=(
      r"at step 2 .*prompt_groups_broken=1\b.*config\.objective\.grpo\.share_prompts=False")):
    train_on_edited_samples(c, tmp_path / "run", monkeypatch, second_prompt_changed)


def test_share_prompts_stays_out_of_the_checkpoint_fingerprint():
  from reverse_task import TINY_ARCH, policy_stage_config

  from irl_jax.train import loop

  c = policy_stage_config("grpo", steps=1, max_new_tokens=4, arch=TINY_ARCH)
  model = loop.build_model(c, vocab_size=13)
  fingerprint = loop.run_fingerprint(c, model)["objective"]
  assert "share_prompts" not in fingerprint
  assert fingerprint["num_samples"] == c.objective.grpo.num_samples
  c.objective.grpo.share_prompts = False  # a run resumes across it
  assert loop.run_fingerprint(c, model)["objective"] == fingerprint
