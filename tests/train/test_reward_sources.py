"""Reward sources of policy stages (irl_jax.train.rewards): an exported reward model scored as
the model scores it, tokenizer checks, re-tokenising through text, weighted sums that refuse
NaN rewards, the `config.reward` block, and a GRPO run of the trainer on a reward model."""

import os
import shutil

import numpy as np
import pytest
from flax import nnx
from reverse_task import ALPHABET, BOS, EOS, PAD, ReverseBatches

from irl_jax import models
from irl_jax.data import char_tokenizer
from irl_jax.train import loop, rewards


def _tiny_reward_model(vocab_size=13, seed=0):
  cfg = models.ModelConfig(model_type="llama", vocab_size=vocab_size, hidden_size=16,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                           intermediate_size=32, max_position_embeddings=64)
  return models.RewardModel(models.Transformer(cfg, rngs=nnx.Rngs(seed)),
                            rngs=nnx.Rngs(seed + 1))


@pytest.fixture(scope="module")
def tok():
  return char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tok):
  """A tiny reward model saved with its tokenizer, as training exports one."""
  path = str(tmp_path_factory.mktemp("rm") / "export")
  models.save_pretrained(_tiny_reward_model(), path, tokenizer=tok)
  return path


def _samples(tok, rows):
  """`(prompt_ids [N, P] left-aligned and pad-filled, prompt_mask, response_ids [N, M],
  response_mask)` of `(prompt, response, ended)` strings, as the sampler gives them."""
  prompts = [[BOS, *tok.encode(p, add_special_tokens=False)] for p, _, _ in rows]
  responses = [tok.encode(r, add_special_tokens=False) + ([EOS] if ended else [])
               for _, r, ended in rows]
  p, m = max(map(len, prompts)), max(map(len, responses)) + 1
  prompt_ids = np.full((len(rows), p), PAD, np.int32)
  response_ids = np.full((len(rows), m), PAD, np.int32)
  for i, (a, b) in enumerate(zip(prompts, responses, strict=True)):
    prompt_ids[i, p - len(a):] = a
    response_ids[i, :len(b)] = b
  return prompt_ids, prompt_ids != PAD, response_ids, response_ids != PAD


ROWS = [("abc=", "cba", True), ("h=", "h", True), ("abcdefgh=", "hgfe", False),
        ("ba=", "", True), ("fed=", "dxx", True), ("gg=", "gg", False)]


def _direct(model, tok, rows, width=32):
  """The reward model called on each row's own tokens (BOS, prompt, response, EOS), in one
  right-padded batch with its attention mask."""
  ids = np.zeros((len(rows), width), np.int32)
  for i, (p, r, ended) in enumerate(rows):
    row = [BOS, *tok.encode(p + r, add_special_tokens=False)] + ([EOS] if ended else [])
    ids[i, :len(row)] = row
  return np.asarray(model(ids, attention_mask=ids != PAD), np.float32)


def test_reward_model_scorer_matches_the_model_it_loads(exported, tok):
  score = rewards.reward_model_scorer(exported, tok, batch_size=4, length_multiple=8)
  reloaded = models.from_pretrained(exported)
  prompt_ids, prompt_mask, response_ids, response_mask = _samples(tok, ROWS)
  got = score(prompt_ids, response_ids, response_mask, prompt_mask=prompt_mask)
  assert got.dtype == np.float32 and got.shape == (len(ROWS),)
  want = _direct(reloaded, tok, ROWS)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # ... and as the model saved: the round trip through save_pretrained keeps every weight.
  np.testing.assert_allclose(got, _direct(_tiny_reward_model(), tok, ROWS), atol=1e-5)
  assert np.ptp(got) > 1e-3  # a real signal, not a constant
  # Without the mask the prompt is read off the pad id; the same rows, the same scores.
  np.testing.assert_allclose(score(prompt_ids, response_ids, response_mask), got, atol=0)
  # Six rows in chunks of 4 (filler rows in the second): one trace for the padded shape ...
  assert score.traces == 1
  # ... and only a longer padded width traces again.
  longer = [("abcdefgh=" * 2, "abcdefgh", True)]
  p2, m2, r2, rm2 = _samples(tok, longer)
  np.testing.assert_allclose(score(p2, r2, rm2, prompt_mask=m2),
                             _direct(reloaded, tok, longer, width=40), atol=1e-5)
  assert score.traces == 2


def test_only_real_prompt_tokens_reach_the_reward_model(exported, tok):
  score = rewards.reward_model_scorer(exported, tok, batch_size=8)
  prompt_ids, prompt_mask, response_ids, response_mask = _samples(tok, ROWS)
  clean = score(prompt_ids, response_ids, response_mask, prompt_mask=prompt_mask)
  junk = np.where(prompt_mask, prompt_ids, 7)  # e.g. a demonstration's answer in those slots
  np.testing.assert_allclose(score(junk, response_ids, response_mask, prompt_mask=prompt_mask),
                             clean, atol=0)


def test_a_different_tokenizer_is_refused_naming_both_and_what_differs(exported, tok,
                                                                         tmp_path):
  moved = char_tokenizer("abcdefgh+")  # same size, '=' is gone and '+' sits at its id
  with pytest.raises(ValueError) as e:
    rewards.reward_model_scorer(exported, moved)
  msg = str(e.value)
  assert exported in msg and "differs from the policy's tokenizer" in msg
  assert "token(s) only in the reward model's tokenizer ('=')" in msg
  assert "token(s) only in the policy's tokenizer ('+')" in msg
  assert "retokenize=True" in msg
  with pytest.raises(ValueError, match=r"vocabulary size: 13 vs 12"):
    rewards.reward_model_scorer(exported, char_tokenizer("abcdefgh"))
  shuffled = char_tokenizer("bacdefgh=")
  with pytest.raises(ValueError, match=r"2 token\(s\) map to other ids \('a' is 4 vs 5, 'b' is "
                                       r"5 vs 4\)"):
    rewards.reward_model_scorer(exported, shuffled)
  # No tokenizer beside the weights: nothing to check the ids against.
  bare = str(tmp_path / "bare")
  models.save_pretrained(_tiny_reward_model(), bare)
  with pytest.raises(ValueError, match="holds no tokenizer files"):
    rewards.reward_model_scorer(bare, tok)
  rewards.reward_model_scorer(bare, tok, reward_tokenizer=tok)  # given explicitly: fine
  # A causal LM is not a reward model.
  lm = str(tmp_path / "lm")
  models.save_pretrained(_tiny_reward_model().backbone, lm, tokenizer=tok)
  with pytest.raises(ValueError, match="causal language model, not a reward model"):
    rewards.reward_model_scorer(lm, tok)


def test_retokenize_scores_through_text(exported, tok):
  policy_tok = char_tokenizer("hgfedcba=")  # the same characters at other ids
  score = rewards.reward_model_scorer(exported, policy_tok, retokenize=True)
  rows = ROWS[:3]
  prompts = [[BOS, *policy_tok.encode(p, add_special_tokens=False)] for p, _, _ in rows]
  responses = [policy_tok.encode(r, add_special_tokens=False) + ([EOS] if ended else [])
               for _, r, ended in rows]
  p, m = max(map(len, prompts)), max(map(len, responses))
  prompt_ids = np.zeros((len(rows), p), np.int32)
  response_ids = np.zeros((len(rows), m), np.int32)
  for i, (a, b) in enumerate(zip(prompts, responses, strict=True)):
    prompt_ids[i, p - len(a):] = a
    response_ids[i, :len(b)] = b
  got = score(prompt_ids, response_ids, response_ids != PAD)
  np.testing.assert_allclose(got, _direct(models.from_pretrained(exported), tok, rows),
                             atol=1e-5)


def test_combine_sums_with_weights_and_names_a_nan_source_and_row():
  p, r = np.zeros((4, 2), np.int32), np.zeros((4, 3), np.int32)
  m = np.ones((4, 3), bool)
  a = lambda p, r, m: np.arange(4, dtype=np.float32)
  b = lambda p, r, m: np.ones(4)
  total = rewards.combine(a, b, weights=(2.0, -0.5), names=("model", "program"))
  np.testing.assert_array_equal(total(p, r, m), 2 * np.arange(4) - 0.5)
  assert total(p, r, m).dtype == np.float32
  np.testing.assert_array_equal(total.last["program"], np.ones(4))

  nan = lambda p, r, m: np.array([0.0, 1.0, np.nan, np.nan])
  with pytest.raises(rewards.RewardSourceError,
                     match=r"reward source 'program' returned nan for row 2 \(and 1 more rows: "
                           r"\[3\]\)"):
    rewards.combine(a, nan, names=("model", "program"))(p, r, m)
  with pytest.raises(ValueError, match=r"reward source 'source 1' returned rewards of shape "
                                       r"\(4, 1\) for 4 samples"):
    rewards.combine(a, lambda p, r, m: np.ones((4, 1)))(p, r, m)
  with pytest.raises(ValueError, match="reward source 'source 0' returned inf for row 0"):
    rewards.combine(lambda p, r, m: np.full(4, np.inf))(p, r, m)
  with pytest.raises(ValueError, match="2 weights for 1 sources"):
    rewards.combine(a, weights=(1.0, 2.0))
  with pytest.raises(ValueError, match="weight 0 must be a finite number"):
    rewards.combine(a, weights=(float("nan"),))
  with pytest.raises(ValueError, match="at least one"):
    rewards.combine()
  # The prompt mask reaches a source that takes it, and only such a source.
  seen = {}

  def masked(p, r, m, prompt_mask=None):
    seen["mask"] = prompt_mask
    return np.zeros(len(p))

  rewards.combine(a, masked)(p, r, m, prompt_mask=np.ones((4, 2), bool))
  assert seen["mask"].shape == (4, 2)


def _config(**reward):
  from experiments.configs import smoke

  c = smoke.get_config()
  c.reward.update(reward)
  return c


@pytest.mark.parametrize("fields, message", [
    ({"model_weight": float("nan")}, "config.reward.model_weight=nan: must be a finite number"),
    ({"program_weight": "1"}, "config.reward.program_weight='1': must be a finite number"),
    ({"batch_size": 0}, "config.reward.batch_size=0: must be a positive integer"),
    ({"dtype": "float16"}, "config.reward.dtype='float16': must be one of"),
    ({"model_path": "/no/such/reward_model"},
     "config.reward.model_path='/no/such/reward_model': no such directory"),
])
def test_bad_reward_config_fields_are_named(fields, message):
  c = _config()
  for k, v in fields.items():
    # Bypass the ConfigDict's own type check: a config file may hold anything.
    c.reward = {**c.reward.to_dict(), k: v}
  with pytest.raises(loop.ConfigError) as e:
    rewards.reward_fn_from_config(c, program=lambda tok: None)
  assert message in str(e.value)


def test_unknown_reward_field_and_no_source(exported):
  c = _config()
  c.reward.model_wieght = 2.0
  with pytest.raises(loop.ConfigError, match=r"config.reward has unknown fields "
                                             r"\['model_wieght'\]"):
    rewards.reward_fn_from_config(c)
  assert rewards.reward_fn_from_config(_config()) is None  # nothing scores: the trainer says so
  with pytest.raises(loop.ConfigError, match=r"config\.reward\.model_weight=0 and no other"):
    rewards.reward_fn_from_config(_config(model_path=exported, model_weight=0.0))


def test_config_sums_the_reward_model_and_the_program(exported, tok, tmp_path):
  program = lambda t: (lambda p, r, m: m.sum(axis=1).astype(np.float32))
  factory = rewards.reward_fn_from_config(
      _config(model_path=exported, model_weight=2.0, program_weight=0.5, batch_size=4),
      program=program)
  score = factory(tok)
  prompt_ids, prompt_mask, response_ids, response_mask = _samples(tok, ROWS)
  got = score(prompt_ids, response_ids, response_mask, prompt_mask=prompt_mask)
  want = 2.0 * _direct(models.from_pretrained(exported), tok, ROWS) + 0.5 * response_mask.sum(1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert score.names == ("reward_model", "program")
  # The tokenizer check at the factory's call names the config field.
  with pytest.raises(loop.ConfigError, match=r"config.reward.model_path=.*differs from the "
                                             r"policy's tokenizer"):
    factory(char_tokenizer("abcdefgh+"))
  # A reward model whose directory lacks the tokenizer: config.reward.tokenizer_path.
  bare = str(tmp_path / "bare")
  shutil.copytree(exported, bare)
  for f in os.listdir(bare):
    if f.startswith(("tokenizer", "special_tokens")):
      os.remove(os.path.join(bare, f))
  tok_dir = str(tmp_path / "tok")
  tok.save_pretrained(tok_dir)
  with pytest.raises(loop.ConfigError, match="holds no tokenizer files"):
    rewards.reward_fn_from_config(_config(model_path=bare))(tok)
  only_model = rewards.reward_fn_from_config(_config(model_path=bare, tokenizer_path=tok_dir))
  np.testing.assert_allclose(
      only_model(tok)(prompt_ids, response_ids, response_mask, prompt_mask=prompt_mask),
      _direct(models.from_pretrained(exported), tok, ROWS), atol=1e-5)


def test_grpo_trains_on_a_reward_model_from_the_config(exported, tok, tmp_path):
  c = _config(model_path=exported, batch_size=8)
  c.objective.name = "grpo"
  c.objective.grpo.max_new_tokens = 6
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 0, 2, 1
  c.progress_bar = c.tensorboard = c.export_hf = False
  c.model.arch.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64)
  factory = rewards.reward_fn_from_config(c, program=None)
  made = []
  data = (ReverseBatches(tok), lambda: iter(()), tok)
  summary = loop.train(c, str(tmp_path), data=data,
                       reward_fn=lambda t: made.append(factory(t)) or made[-1])
  score = made[0]
  assert score.names == ("reward_model",)
  # The logged mean reward is the reward model's mean score of the last step's samples.
  assert summary["train/samples/reward"] == pytest.approx(
      float(np.mean(score.last["reward_model"])), abs=1e-6)
  assert summary["train/finite"] == 1.0
