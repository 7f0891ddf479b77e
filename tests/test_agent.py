"""The DQL agent's schedules, slow copies and hyperparameter checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents import create_agent, hyperparams
from dql.agents.common import clip_grad_norm_like_torch, learning_rate_schedule, make_optimizer
from tests.helpers import small_config


def test_learning_rate_schedule_is_cosine_over_epochs_stepped_every_decay_every():
    schedule = learning_rate_schedule(1.0, True, total_steps=10, steps_per_epoch=2, decay_every=4)
    for count in range(12):
        expected = 0.5 * (1 + np.cos(np.pi * min(count // 4, 5) / 5))  # T_max = 5 epochs
        assert float(schedule(count)) == pytest.approx(expected, abs=1e-6)
    assert float(learning_rate_schedule(0.3, False, 10, 2, 4)(7)) == pytest.approx(0.3)


def test_optimizer_like_torch_clips_with_its_epsilon_and_steps_adam_as_exactly_as_float32_allows():
    # torch's clip_grad_norm_: scale min(1, max_norm / (norm + 1e-6)), the norm over the leaves' norms (here 3 and 4).
    grads = {"a": jnp.array([0.003, 0.0]), "b": jnp.array([[0.004]])}
    clip = clip_grad_norm_like_torch(0.0025)
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(clipped["a"], [0.003 * 0.0025 / (0.005 + 1e-6), 0.0], rtol=1e-6)  # not 0.5x: 0.49990
    unclipped, _ = clip_grad_norm_like_torch(1.0).update(grads, clip.init(grads))
    np.testing.assert_array_equal(unclipped["b"], grads["b"])

    # Adam's first steps against float64 arithmetic: m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps), lr 3e-4. optax's own
    # adam is 6.6e-6 off at step 1 (1 - 0.999 in float32), which this tolerance would catch.
    g = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)
    optimizer = make_optimizer(lambda count: 3e-4, 0.0, like_torch=True)
    x, state = jnp.zeros(1000), optimizer.init(jnp.zeros(1000))
    m = v = exact = np.zeros(1000)
    for t in range(1, 4):
        update, state = optimizer.update(jnp.asarray(g[t - 1]), state)
        x = x + update
        m, v = 0.9 * m + 0.1 * g[t - 1], 0.999 * v + 0.001 * np.float64(g[t - 1]) ** 2
        exact = exact - 3e-4 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        assert np.linalg.norm(np.asarray(x, np.float64) - exact) / np.linalg.norm(exact) < 3e-7
    assert int(state[0].count) == 3  # optax's ScaleByAdamState: checkpoints of the optax.adam version restore


def _batch(rng, n=16, obs_dim=3, act_dim=2):
    return {
        "observations": jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (n, act_dim)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=n), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32),
        "dones": jnp.zeros(n, jnp.float32),
    }


@pytest.mark.slow
def test_ema_actor_starts_late_and_moves_every_k_steps_critic_target_every_step():
    config = small_config(ema_start=2, ema_every=2, ema_decay=0.9, tau=0.25)
    # Committed to the device like the update's outputs, so the jitted update compiles once.
    agent = jax.device_put(create_agent("dql", jax.random.PRNGKey(0), 3, 2, [1.0, 1.0], config), jax.devices()[0])
    host = jax.device_get  # compare on the host: eager jax arithmetic would compile every small op
    tree_map = jax.tree_util.tree_map
    initial_ema, initial_target = host(agent.actor_ema_params), host(agent.critic_target_params)
    batch = _batch(np.random.default_rng(0))
    update = jax.jit(lambda a, b: a.update(b))

    agent, _ = update(agent, batch)  # step 0: before ema_start
    tree_map(np.testing.assert_array_equal, host(agent.actor_ema_params), initial_ema)
    expected_target = tree_map(lambda t, c: 0.75 * t + 0.25 * c, initial_target, host(agent.critic.params))
    tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), host(agent.critic_target_params),
             expected_target)
    agent, _ = update(agent, batch)  # step 1: not yet
    tree_map(np.testing.assert_array_equal, host(agent.actor_ema_params), initial_ema)
    agent, _ = update(agent, batch)  # step 2: the first EMA step
    expected_ema = tree_map(lambda e, p: 0.9 * e + 0.1 * p, initial_ema, host(agent.actor.params))
    tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), host(agent.actor_ema_params),
             expected_ema)
    before = host(agent.actor_ema_params)
    agent, _ = update(agent, batch)  # step 3: skipped (every 2)
    tree_map(np.testing.assert_array_equal, host(agent.actor_ema_params), before)
    assert int(agent.step) == 4


def test_action_selection_draws_the_candidate_that_the_min_of_the_target_critics_prefers():
    """With the target critics' outputs scaled by 1000, softmax(min_k Q'_k) puts all its mass on one candidate: the
    chosen action must be that one. Fails if the choice ignores Q (uniform), uses the online critics, the max over
    the heads instead of the min, or is not the candidate drawn with sample_actions' own noise."""
    agent = create_agent("dql", jax.random.PRNGKey(1), 3, 2, [0.5, 2.0], small_config(num_action_candidates=16))
    layers = agent.critic_target_params["params"]["VmapMLP_0"]
    last = max(layers, key=lambda name: int(name.rsplit("_", 1)[1]))  # the output layer of both heads
    sharp = {"params": {"VmapMLP_0": {**layers, last: jax.tree_util.tree_map(lambda x: x * 1000.0, layers[last])}}}
    agent = agent.replace(critic_target_params=sharp)
    observations = jnp.asarray(np.random.default_rng(1).normal(size=(20, 3)), jnp.float32)
    key = jax.random.PRNGKey(4)
    chosen = np.asarray(jax.jit(lambda a, o, k: a.sample_actions(o, k))(agent, observations, key))

    @jax.jit
    def candidates_of(agent, observations, key):
        noise_key, _ = jax.random.split(key)  # sample_actions' own draws
        noise = jax.random.normal(noise_key, (20 * 16, agent.hp.diffusion_steps + 1, 2))
        candidates, q = agent.action_candidates(observations, noise)
        heads = agent.critic.apply_fn(agent.critic_target_params, jnp.repeat(observations, 16, 0),
                                      candidates.reshape(-1, 2))
        return candidates, q, heads.reshape(2, 20, 16)

    candidates, q, heads = jax.device_get(candidates_of(agent, observations, key))
    index = np.argmin(np.abs(candidates - chosen[:, None]).max(axis=-1), axis=1)  # the candidate drawn, per state
    np.testing.assert_allclose(chosen, candidates[np.arange(20), index], atol=1e-5)
    # Its Q is the best (ties within a probability factor e^-5 of it allowed); a uniform draw lands ~1000x lower.
    assert np.all(q[np.arange(20), index] >= q.max(axis=1) - 5.0), (q[np.arange(20), index], q.max(axis=1))
    by_max = np.argmax(heads.max(axis=0), axis=1)
    assert (by_max != np.argmax(q, axis=1)).any()  # the heads disagree, so min and max choose apart


@pytest.mark.parametrize(
    "override, message",
    [
        ({"beta_schedule": "sigmoid"}, "unknown beta schedule 'sigmoid'"),
        ({"diffusion_steps": 0}, "diffusion steps must be >= 1"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"ema_every": 0}, "--config.ema_every must be >= 1"),
        ({"time_dim": 7}, "--config.time_dim must be even and >= 4"),
        ({"discount": 1.5}, r"--config.discount must be in \[0.0, 1.0\]"),
        ({"num_action_candidates": 0}, "--config.num_action_candidates must be >= 1"),
        ({"lr": 0.0}, "--config.lr must be > 0"),
    ],
)
def test_bad_hyperparameters_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        hyperparams("dql", small_config(**override), [1.0])
    with pytest.raises(ValueError, match="--algo='dqn' is not a known algorithm"):
        hyperparams("dqn", small_config(), [1.0])


@pytest.mark.parametrize(
    "algo, override, message",
    [
        ("td3bc", {"policy_freq": 0}, "--config.policy_freq must be >= 1"),
        ("iql", {"expectile": 1.5}, r"--config.expectile must be in \[0.0, 1.0\]"),
        ("cql", {"num_samples": 0}, "--config.num_samples must be >= 1"),
        ("bc", {"activation": "swish"}, "unknown activation 'swish'"),
        ("diffusion_bc", {"beta_schedule": "sigmoid"}, "unknown beta schedule 'sigmoid'"),
    ],
)
def test_baseline_hyperparameters_are_checked(algo, override, message):
    import importlib

    config = importlib.import_module(f"dql.configs.{algo}").get_config()
    config.update(override)
    with pytest.raises(ValueError, match=message):
        hyperparams(algo, config, [1.0])
