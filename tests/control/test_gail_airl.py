"""GAIL and AIRL on PPO (`irl_jax.control.adversarial`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_jax.control import adversarial, envs, ppo
from irl_jax.control.types import Transitions


def cartpole_expert(key, obs):
  del key
  return (obs[2] + 0.5 * obs[3] > 0).astype(jnp.int32)


@pytest.fixture(scope="module")
def cartpole():
  env = envs.make("gymnax/CartPole-v1")
  state, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 2))
  act = lambda k, o: (cartpole_expert(k, o), jnp.zeros(()))
  _, _, r = jax.vmap(lambda s, o, k: envs.rollout(env, act, s, o, k, 500))(
      state, obs, jax.random.split(jax.random.key(2), 2))
  r = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), r)
  demos = Transitions(r.obs, r.action, r.reward, r.next_obs, r.terminated, r.truncated,
                      r.log_prob, jnp.ones_like(r.reward))
  return env, demos


SMALL = ppo.PPOConfig(total_timesteps=100_000, num_envs=8, num_steps=128)


@pytest.mark.parametrize("method", ["gail", "airl"])
def test_adversarial_imitation_learns_cartpole(cartpole, method):
  env, demos = cartpole
  adv = adversarial.make_adversarial(adversarial.AdversarialConfig(method=method, ppo=SMALL), env)
  state, metrics = jax.jit(adv.train)(jax.random.key(0), demos)
  returns = adv.ppo.evaluate(state.ppo.params, jax.random.key(5), 8, deterministic=True)
  # Random play: about 20; the expert: 500.
  assert float(returns.mean()) >= 150, method
  assert metrics["env_steps"][-1] == SMALL.num_iterations * SMALL.batch_size
  for k in ("disc/loss", "disc/expert_accuracy", "disc/policy_accuracy", "learned_reward"):
    assert np.isfinite(np.asarray(metrics[k])).all(), k


def test_without_absorbing_states_airl_learns_to_fall(cartpole):
  """AIRL's reward turns negative on the policy's states, so without the absorbing
  state the policy learns to end its episodes: the reason `absorbing` is the default."""
  env, demos = cartpole
  config = adversarial.AdversarialConfig(method="airl", ppo=SMALL, absorbing=False)
  adv = adversarial.make_adversarial(config, env)
  state, metrics = jax.jit(adv.train)(jax.random.key(0), demos)
  assert float(np.asarray(metrics["learned_reward"])[-10:].mean()) < 0
  returns = adv.ppo.evaluate(state.ppo.params, jax.random.key(5), 8, deterministic=True)
  assert float(returns.mean()) < 60


def test_vmapped_seeds_equal_sequential_runs(cartpole):
  env, demos = cartpole
  small = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=1,
                        num_minibatches=2)
  adv = adversarial.make_adversarial(
      adversarial.AdversarialConfig(method="airl", ppo=small, disc_batch_size=64), env)
  keys = jax.random.split(jax.random.key(3), 2)
  batched, _ = jax.jit(jax.vmap(adv.train, in_axes=(0, None)))(keys, demos)
  train = jax.jit(adv.train)
  for i, k in enumerate(keys):
    one, _ = train(k, demos)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5),
                 batched.disc, one.disc)


@pytest.mark.parametrize("method", ["gail", "airl"])
def test_absorbing_reward_and_terminal_fraction_are_logged(cartpole, method):
  """With absorbing states, every iteration logs r_abs (the reward of the absorbing
  state's self-transition, from the updated discriminator) and the rollout's fraction of
  terminal rows; without them, neither."""
  env, demos = cartpole
  small = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=1,
                        num_minibatches=2)
  adv = adversarial.make_adversarial(
      adversarial.AdversarialConfig(method=method, ppo=small, disc_batch_size=64), env)
  state, metrics = jax.jit(adv.train)(jax.random.key(4), demos)
  r_abs = np.asarray(metrics["absorbing_reward"])
  assert r_abs.shape == (small.num_iterations,) and np.all(np.isfinite(r_abs))
  # The absorbing state: zero observation, indicator 1, no action (and no log π).
  zero = jnp.zeros((1, 4))
  row = Transitions(zero, jnp.zeros((1,), jnp.int32), jnp.zeros(1), zero, jnp.zeros(1, bool),
                    jnp.zeros(1, bool), jnp.zeros(1), jnp.ones(1))
  logit = float(adv.discriminator_logits(state.disc, row, jnp.zeros(1), flag=1.0)[0])
  # GAIL: softplus of the logit; AIRL: f − log π with log π = 0, i.e. the logit itself.
  expected = np.log1p(np.exp(logit)) if method == "gail" else logit
  np.testing.assert_allclose(r_abs[-1], expected, rtol=1e-5, atol=1e-6)
  # Independently, from the networks' weights: the absorbing input is a zero observation
  # with the indicator 1 and no action; AIRL's self-transition is g + γ·h − h there.
  x_abs = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
  g_abs = _mlp(state.disc["g"], np.concatenate([x_abs, [0.0, 0.0]]))
  gamma = small.gamma
  by_hand = (np.logaddexp(0.0, g_abs) if method == "gail"
             else g_abs + (gamma - 1.0) * _mlp(state.disc["h"], x_abs))
  np.testing.assert_allclose(r_abs[-1], by_hand, rtol=1e-5, atol=1e-6)
  # In 64-step rollouts of fresh CartPole play no episode is truncated, so every ended
  # episode is one terminal row.
  frac = np.asarray(metrics["terminal_fraction"])
  np.testing.assert_allclose(frac * small.batch_size, np.asarray(metrics["num_episodes"]))
  assert frac.max() > 0
  plain = adversarial.make_adversarial(adversarial.AdversarialConfig(
      method=method, ppo=small, disc_batch_size=64, absorbing=False), env)
  _, m = jax.jit(plain.train)(jax.random.key(4), demos)
  assert "absorbing_reward" not in m and "terminal_fraction" not in m


def _mlp(params, x):
  """The discriminator's tanh MLP in float64 NumPy, from its weights."""
  layers = params["layers"]
  x = np.asarray(x, np.float64)
  for i in sorted(layers):
    x = x @ np.asarray(layers[i]["kernel"], np.float64) + np.asarray(layers[i]["bias"],
                                                                     np.float64)
    if i != max(layers):
      x = np.tanh(x)
  return float(x[0])


@pytest.mark.parametrize("absorbing", [True, False])
@pytest.mark.parametrize("method", ["gail", "airl"])
def test_generator_reward_of_ended_episodes_on_hand_examples(method, absorbing):
  """The reward PPO is trained on, by hand from the networks' weights (SPEC §10a).
  With absorbing states a terminated row scores its successor as the absorbing state
  and earns γ/(1 − γ)·r_abs more; without them AIRL's terminated row drops `γ·h(s')` and
  nothing is added. A truncated row scores its true successor either way."""
  env = envs.make("gymnax/CartPole-v1")
  adv = adversarial.make_adversarial(
      adversarial.AdversarialConfig(method=method, ppo=SMALL, absorbing=absorbing), env)
  disc = adv.init(jax.random.key(7)).disc
  rng = np.random.default_rng(0)
  obs, nxt = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  action = np.array([1, 0, 1])
  log_pi = np.array([-0.3, -0.9, -0.6])
  terminated, truncated = np.array([False, True, False]), np.array([False, False, True])
  rows = Transitions(jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.int32),
                     jnp.zeros(3), jnp.asarray(nxt, jnp.float32), jnp.asarray(terminated),
                     jnp.asarray(truncated), jnp.asarray(log_pi, jnp.float32), jnp.ones(3))
  r = np.asarray(adv.generator_reward(disc, rows), np.float64)
  gamma = SMALL.gamma
  feat = (lambda o, flag: np.concatenate([o, [flag]])) if absorbing else (lambda o, flag: o)
  onehot = lambda a: np.eye(2)[a]
  x_abs = feat(np.zeros(4), 1.0)
  g_abs = _mlp(disc["g"], np.concatenate([x_abs, [0.0, 0.0]])) if absorbing else None
  expected = []
  for i in range(3):
    g = _mlp(disc["g"], np.concatenate([feat(obs[i], 0.0), onehot(action[i])]))
    if method == "gail":
      r_i = np.logaddexp(0.0, g)
      r_abs = np.logaddexp(0.0, g_abs) if absorbing else 0.0
    else:
      if not terminated[i]:
        h_next = gamma * _mlp(disc["h"], feat(nxt[i], 0.0))
      else:  # into the absorbing state, or nothing
        h_next = gamma * _mlp(disc["h"], x_abs) if absorbing else 0.0
      r_i = g + h_next - _mlp(disc["h"], feat(obs[i], 0.0)) - log_pi[i]
      r_abs = g_abs + (gamma - 1.0) * _mlp(disc["h"], x_abs) if absorbing else 0.0
    bonus = gamma / (1 - gamma) * r_abs if (terminated[i] and absorbing) else 0.0
    expected.append(r_i + bonus)
  np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-5)
  # The bonus is what separates the terminated row from `learned_reward` (GAIL: the same
  # reward without it).
  if method == "gail":
    plain = np.asarray(adv.learned_reward(disc, rows.obs, rows.action, rows.next_obs))
    gap = gamma / (1 - gamma) * np.logaddexp(0.0, g_abs) if absorbing else 0.0
    np.testing.assert_allclose(r - plain, [0.0, gap, 0.0], rtol=1e-5, atol=1e-4)


def test_gail_reward_signs_on_hand_examples():
  """A discriminator that says "expert" (large logit) gives a large positive GAIL
  reward; one that says "policy" gives nearly 0 (softplus) or a negative logit."""
  env = envs.make("gymnax/CartPole-v1")
  config = adversarial.AdversarialConfig(method="gail", ppo=SMALL, absorbing=False)
  adv = adversarial.make_adversarial(config, env)
  params = adv.init(jax.random.key(0)).disc
  # Make the last layer's output a known constant: zero weights, bias b.
  last = params["g"]["layers"][max(params["g"]["layers"].keys())]
  for b, low, high in ((5.0, 4.9, 5.1), (-5.0, 0.0, 0.01)):
    last["kernel"][...] = jnp.zeros_like(last["kernel"][...])
    last["bias"][...] = jnp.full_like(last["bias"][...], b)
    obs = jnp.zeros((3, 4))
    r = adv.learned_reward(params, obs, jnp.zeros((3,), jnp.int32), obs)
    assert np.all((np.asarray(r) >= low) & (np.asarray(r) <= high)), (b, r)
  logit = adversarial.make_adversarial(dataclasses.replace(config, gail_reward="logit"), env)
  r = logit.learned_reward(params, obs, jnp.zeros((3,), jnp.int32), obs)
  np.testing.assert_allclose(r, -5.0, atol=1e-5)


def test_airl_state_only_reward_is_a_function_of_the_state(cartpole):
  env, _ = cartpole
  config = adversarial.AdversarialConfig(method="airl", ppo=SMALL, state_only=True)
  adv = adversarial.make_adversarial(config, env)
  params = adv.init(jax.random.key(0)).disc
  obs = jax.random.normal(jax.random.key(1), (5, 4))
  r0 = adv.learned_reward(params, obs, jnp.zeros((5,), jnp.int32), obs)
  r1 = adv.learned_reward(params, obs, jnp.ones((5,), jnp.int32), obs)
  np.testing.assert_array_equal(r0, r1)


@pytest.mark.parametrize("field, value, match", [
    ("method", "gan", "method"), ("disc_lr", 0.0, "disc_lr"), ("disc_updates", 0, "disc_updates"),
    ("gail_reward", "log", "gail_reward"), ("state_only", True, "state_only"),
    ("grad_penalty", -1.0, "grad_penalty"), ("grad_penalty_target", -0.5, "grad_penalty_target"),
    ("action_margin", -0.1, "action_margin"), ("action_margin", 1.0, "action_margin"),
    ("disc_batch_size", 0, "disc_batch_size")])
def test_bad_configs_name_the_field(field, value, match):
  env = envs.make("gymnax/CartPole-v1")
  config = dataclasses.replace(adversarial.AdversarialConfig(ppo=SMALL), **{field: value})
  with pytest.raises(ValueError, match=f"AdversarialConfig.{match}"):
    adversarial.make_adversarial(config, env)
  with pytest.raises(ValueError, match=f"AdversarialConfig.{match}"):
    adversarial.check_config(config)


def test_airl_on_continuous_actions_needs_a_positive_action_margin():
  pendulum = envs.make("gymnax/Pendulum-v1")
  small = dataclasses.replace(SMALL, total_timesteps=2048)
  with pytest.raises(ValueError, match=r"AdversarialConfig\.action_margin: AIRL"):
    adversarial.make_adversarial(adversarial.AdversarialConfig(
        method="airl", ppo=small, action_margin=0.0), pendulum)
  # GAIL never evaluates log π on expert actions, and discrete actions have no box.
  adversarial.make_adversarial(adversarial.AdversarialConfig(
      method="gail", ppo=small, action_margin=0.0), pendulum)
  adversarial.make_adversarial(adversarial.AdversarialConfig(
      method="airl", ppo=small, action_margin=0.0), envs.make("gymnax/CartPole-v1"))


def test_check_config_also_checks_the_generators_ppo_config():
  bad = dataclasses.replace(SMALL, ent_coef=-1.0)
  with pytest.raises(ValueError, match=r"PPOConfig\.ent_coef"):
    adversarial.check_config(adversarial.AdversarialConfig(ppo=bad))


def test_gradient_penalty_option_runs(cartpole):
  env, demos = cartpole
  small = ppo.PPOConfig(total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=1,
                        num_minibatches=2)
  adv = adversarial.make_adversarial(
      adversarial.AdversarialConfig(ppo=small, grad_penalty=10.0, disc_batch_size=64), env)
  _, metrics = jax.jit(adv.train)(jax.random.key(0), demos)
  gp = np.asarray(metrics["disc/grad_penalty"])
  assert np.isfinite(gp).all() and (gp > 0).all()
