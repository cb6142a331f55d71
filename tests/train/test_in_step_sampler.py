"""Tests for the in-step policy sampler (irl_jax/train/rollouts.py: `sample_arrays`,
`prompt_prefix`, `check_prompt_lengths`, `in_step_sampler`) and its use inside
`make_train_step(..., sampler=...)`; `PolicySampler` (host) keeps its output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irl_jax.data import char_tokenizer, lm_batches
from irl_jax.models import ModelConfig, Transformer, generate
from irl_jax.models.transformer import padded_positions
from irl_jax.train import optim, registry, rollouts
from irl_jax.train.state import init_train_state, split_model
from irl_jax.train.step import make_train_step

ALPHABET = "abcd="
TOKENIZER = char_tokenizer(ALPHABET)
PAD, BOS, EOS = 0, 1, 2
CONFIG = ModelConfig(model_type="llama", vocab_size=4 + len(ALPHABET), hidden_size=16,
                     num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
                     max_position_embeddings=32, bos_token_id=BOS, eos_token_id=EOS,
                     pad_token_id=PAD)
EXAMPLES = [{"prompt": "ab=", "response": "ba"}, {"prompt": "abcd=", "response": "dcba"},
            {"prompt": "c=", "response": "c"}, {"prompt": "dab=", "response": "bad"}]
PROMPT_LEN = 1 + len("abcd=")  # BOS + the longest prompt
SEQ_LEN = 12
MAX_NEW, NUM_SAMPLES, NUM_PROMPTS = 4, 2, 3


def _batch(examples=EXAMPLES, seq_len=SEQ_LEN):
  ds = lm_batches(examples, TOKENIZER, batch_size=len(examples), seq_len=seq_len, shuffle=False,
                  num_epochs=1, shard_index=0, shard_count=1)
  return next(iter(ds))


@pytest.fixture(scope="module")
def model_parts():
  model = Transformer(CONFIG, rngs=nnx.Rngs(0))
  model_def, params = split_model(model)
  return model, model_def, params


def _sampler(num_prompts=NUM_PROMPTS):
  return rollouts.in_step_sampler(max_new_tokens=MAX_NEW, prompt_len=PROMPT_LEN, temperature=1.0,
                                  num_samples=NUM_SAMPLES, num_prompts=num_prompts, eos_id=EOS,
                                  pad_id=PAD)


def test_prompt_prefix_is_the_host_prompt_cut_to_length():
  batch = _batch()
  host_ids, host_mask = rollouts.prompts_of(batch)
  assert host_mask.sum(1).tolist() == [4, 6, 3, 5]  # BOS + prompt characters
  ids, mask = jax.jit(rollouts.prompt_prefix, static_argnums=1)(batch, PROMPT_LEN)
  assert ids.shape == mask.shape == (len(EXAMPLES), PROMPT_LEN)
  np.testing.assert_array_equal(ids, host_ids[:, :PROMPT_LEN])
  np.testing.assert_array_equal(mask, host_mask[:, :PROMPT_LEN])
  assert not host_mask[:, PROMPT_LEN:].any()  # nothing of a prompt was cut
  # The prompts decode to the examples' prompts.
  for row, ex in zip(range(len(EXAMPLES)), EXAMPLES, strict=True):
    tokens = np.asarray(ids[row])[np.asarray(mask[row])]
    assert tokens[0] == BOS
    assert TOKENIZER.decode(tokens[1:].tolist()) == ex["prompt"]


def test_check_prompt_lengths_names_the_row_and_the_length():
  batch = _batch()
  rollouts.check_prompt_lengths(batch, PROMPT_LEN)  # fits exactly
  rollouts.check_prompt_lengths(batch, SEQ_LEN)
  with pytest.raises(ValueError, match=r"row 1 has a prompt of 6 tokens \(BOS included\), longer "
                                       r"than the sampler's prompt_len=5"):
    rollouts.check_prompt_lengths(batch, PROMPT_LEN - 1)
  with pytest.raises(ValueError, match=r"row 3 has a prompt of 5 tokens.*prompt_len=4"):
    rollouts.check_prompt_lengths(_batch([EXAMPLES[0], EXAMPLES[2], EXAMPLES[0], EXAMPLES[3]]), 4)
  packed = dict(batch, segment_ids=np.where(batch["segment_ids"] > 0, 2, 0))
  with pytest.raises(ValueError, match="unpacked batches"):
    rollouts.check_prompt_lengths(packed, PROMPT_LEN)


def test_in_step_sampler_equals_generate_on_the_prompt_prefix(model_parts):
  model, model_def, params = model_parts
  batch = _batch()
  key = jax.random.key(5)
  sampler = _sampler()
  out_batch = jax.jit(lambda p, b, k: sampler(model_def.merge(p), b, k))(params, batch, key)
  n, width = NUM_PROMPTS * NUM_SAMPLES, PROMPT_LEN + MAX_NEW
  for k in ("sample_input_ids", "sample_segment_ids", "sample_positions", "sample_loss_mask"):
    assert out_batch[k].shape == (n, width), k
  assert out_batch["sample_terminal"].shape == (n,)
  for k, v in batch.items():  # the batch itself passes through
    np.testing.assert_array_equal(out_batch[k], v)

  ids, mask = rollouts.prompt_prefix(batch, PROMPT_LEN)
  out = generate(model, ids[:NUM_PROMPTS], mask[:NUM_PROMPTS], key, max_new_tokens=MAX_NEW,
                 temperature=1.0, num_samples=NUM_SAMPLES, eos_id=EOS, pad_id=PAD)
  np.testing.assert_array_equal(out_batch["sample_input_ids"][:, PROMPT_LEN:], out.tokens)
  direct = rollouts.sample_arrays(out)
  assert set(direct) == {"sample_input_ids", "sample_segment_ids", "sample_positions",
                         "sample_loss_mask", "sample_terminal"}
  for k, v in direct.items():
    np.testing.assert_array_equal(out_batch[k], v, err_msg=k)
    assert out_batch[k].dtype == v.dtype, k

  # The layout the online objectives read: each prompt's samples contiguous, the prompt
  # left-aligned, targets on the response tokens only, positions counting real tokens.
  seq = np.asarray(out_batch["sample_input_ids"])
  seg = np.asarray(out_batch["sample_segment_ids"])
  lm = np.asarray(out_batch["sample_loss_mask"])
  host_ids, host_mask = rollouts.prompts_of(batch)
  for i in range(n):
    row = i // NUM_SAMPLES
    real_prompt = host_ids[row][host_mask[row]]
    np.testing.assert_array_equal(seq[i, :PROMPT_LEN][seg[i, :PROMPT_LEN] > 0], real_prompt)
    assert not lm[i, :PROMPT_LEN].any()
    np.testing.assert_array_equal(lm[i, PROMPT_LEN:], np.asarray(out.response_mask[i]))
  np.testing.assert_array_equal(out_batch["sample_positions"],
                                padded_positions(jnp.asarray(seg)))
  # With num_prompts=None every row is sampled.
  everything = jax.jit(lambda p, b, k: _sampler(None)(model_def.merge(p), b, k))(
      params, batch, key)
  assert everything["sample_input_ids"].shape == (len(EXAMPLES) * NUM_SAMPLES, width)


def _online_objective():
  spec = registry.get("iq_learn_online")
  hp = spec.hyperparameters(gamma=0.9, td_weight=0.5, mix=0.5, max_new_tokens=MAX_NEW,
                            num_samples=NUM_SAMPLES)
  return spec.build(hp)


def test_in_step_sampling_in_the_train_step_carries_no_gradient(model_parts):
  """The step with a sampler equals the step given the same samples precomputed with the
  key the step splits off: sampling is data, the gradient is the objective's alone."""
  _, model_def, params = model_parts
  batch = _batch()
  objective = _online_objective()
  tx, schedule = optim.make_optimizer(learning_rate=1e-2, warmup_steps=1, total_steps=4)
  sampler = _sampler()
  with_sampler = jax.jit(make_train_step(model_def, objective, tx, schedule, sampler=sampler))
  plain = jax.jit(make_train_step(model_def, objective, tx, schedule))
  state = init_train_state(params, tx, seed=3)

  new, metrics = with_sampler(state, batch)
  assert np.isfinite(float(metrics["train/loss"])) and float(metrics["train/finite"]) == 1.0
  assert float(metrics["train/grad_norm"]) > 0 and int(new.step) == 1

  # The key schedule of step.py: (rng, step_rng) from the state, then the sample key.
  _, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
  _, sample_rng = jax.random.split(step_rng)
  sampled = sampler(model_def.merge(params), batch, sample_rng)
  assert sampled["sample_input_ids"].shape == (NUM_PROMPTS * NUM_SAMPLES, PROMPT_LEN + MAX_NEW)
  ref, ref_metrics = plain(state, {k: np.asarray(v) for k, v in sampled.items()})
  for name in ("train/loss", "train/grad_norm", "train/policy_value_gap", "train/nll"):
    np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(new.rng, ref.rng)

  # Another state key draws other samples, hence another loss (the key is really used).
  _, other = with_sampler(init_train_state(params, tx, seed=4), batch)
  assert float(other["train/policy_value_gap"]) != float(metrics["train/policy_value_gap"])


def test_policy_sampler_output_is_unchanged(model_parts):
  """The host sampler gives the arrays (values and dtypes) it built before `sample_arrays`."""
  model, model_def, params = model_parts
  batch = _batch()
  sampler = rollouts.PolicySampler(model_def, max_new_tokens=MAX_NEW, num_samples=NUM_SAMPLES,
                                   eos_id=EOS, pad_id=PAD, seed=9)
  out_batch = sampler(batch, params)

  _, key = jax.random.split(jax.random.key(9))
  prompt_ids, prompt_mask = rollouts.prompts_of(batch)
  out = generate(model, prompt_ids, prompt_mask, key, max_new_tokens=MAX_NEW, temperature=1.0,
                 num_samples=NUM_SAMPLES, eos_id=EOS, pad_id=PAD)
  p = out.prompt_ids.shape[1]
  attention = np.asarray(out.attention_mask)
  ids = np.asarray(out.sequences, np.int32)
  expected = {
      "sample_input_ids": ids,
      "sample_segment_ids": attention.astype(np.int32),
      "sample_positions": np.asarray(padded_positions(jnp.asarray(attention)), np.int32),
      "sample_loss_mask": np.concatenate(
          [np.zeros((ids.shape[0], p), bool), np.asarray(out.response_mask)], axis=1),
      "sample_terminal": np.asarray(out.terminal),
  }
  assert set(out_batch) == set(batch) | set(expected)
  for k, v in expected.items():
    assert isinstance(out_batch[k], np.ndarray), k
    assert out_batch[k].dtype == v.dtype, (k, out_batch[k].dtype, v.dtype)
    np.testing.assert_array_equal(out_batch[k], v, err_msg=k)
  assert out_batch["sample_input_ids"].dtype == np.int32
  assert out_batch["sample_loss_mask"].dtype == np.bool_
  assert out_batch["sample_terminal"].dtype == np.bool_
  assert out_batch["sample_input_ids"].shape == (len(EXAMPLES) * NUM_SAMPLES, SEQ_LEN + MAX_NEW)
