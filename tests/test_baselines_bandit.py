"""The baselines on the 2-D multimodal bandit of dql.data.bandit (four action modes, rewards 1.0 / 0.6 / 0.2 / 0.6).

Each assertion is one a plausible bug would fail: a flipped Q or advantage sign sends the policy to the worst
mode, a flipped conservative term lets the policy leave the data, a unimodal BC that reproduced modes would mean
the likelihood is not the one we think.
"""

import importlib

import jax
import numpy as np
import pytest

from dql.agents import create_agent
from dql.data.bandit import BEST, MODES, bandit_data, mode_fractions
from dql.parallel import build_train_chunk, make_layout, seed_slice
from tests.helpers import compiled_for, run_chunk

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it


@pytest.fixture(scope="module")
def data():
    return bandit_data()


def train(algo, data, steps=1500, **overrides):
    config = importlib.import_module(f"dql.configs.{algo}").get_config()
    config.update(dict(hidden_dims=(64, 64), steps=steps))
    config.update(overrides)
    stats = (data["observations"].mean(0), data["observations"].std(0))
    agent = create_agent(algo, jax.random.PRNGKey(0), 1, 2, [1.0, 1.0], config, "data", stats)
    chunk = lambda agent, data, rng: run_chunk(agent, data, rng, 128, steps)  # noqa: E731
    agent, _, metrics = chunk(agent, data, jax.random.PRNGKey(1))
    actions = np.asarray(agent.sample_actions(np.zeros((500, 1), np.float32), jax.random.PRNGKey(3)))
    return agent, actions, metrics


def test_gaussian_bc_averages_the_modes(data):
    agent, actions, _ = train("bc", data, lr=1e-3)
    # Its mode sits at the data's mean, between the four modes, with a wide spread.
    np.testing.assert_allclose(actions.mean(0), data["actions"].mean(0), atol=0.15)
    assert mode_fractions(actions).sum() < 0.05
    _, log_std = agent.actor.apply_fn(agent.actor.params, np.zeros((1, 1), np.float32))
    assert np.all(np.exp(np.asarray(log_std)) > 0.4)


def test_diffusion_bc_reproduces_every_mode(data):
    _, actions, _ = train("diffusion_bc", data, lr=1e-3, beta_schedule="linear", diffusion_steps=10)
    fractions = mode_fractions(actions)
    assert np.all(fractions > 0.15) and fractions.sum() > 0.8, fractions


def test_td3bc_moves_to_the_best_mode(data):
    _, actions, metrics = train("td3bc", data, lr=1e-3, critic_lr=1e-3)
    assert mode_fractions(actions)[BEST] > 0.9
    assert float(metrics["lambda"][-1]) == pytest.approx(2.5 / float(np.abs(metrics["q_mean"][-1])), rel=0.5)


def test_iql_weights_toward_the_best_mode(data):
    agent, actions, _ = train("iql", data, lr=1e-3, critic_lr=1e-3, value_lr=1e-3, temperature=10.0)
    assert mode_fractions(actions)[BEST] > 0.9
    # V is the 0.7-expectile of Q over the behaviour actions: above the mean reward (0.6), below the best (1.0).
    v = float(agent.value.apply_fn(agent.value.params, np.zeros((1, 1), np.float32))[0])
    assert 0.62 < v < 0.95


def train_seeds(algo, data, num_seeds, steps=1500, **overrides):
    """`num_seeds` seeds of `algo` on the bandit in one vmapped program; a list of trained agents."""
    config = importlib.import_module(f"dql.configs.{algo}").get_config()
    config.update(dict(hidden_dims=(64, 64), steps=steps))
    config.update(overrides)
    stats = (data["observations"].mean(0), data["observations"].std(0))
    make = lambda key: create_agent(algo, key, 1, 2, [1.0, 1.0], config, "data", stats)  # noqa: E731
    agents = jax.vmap(make)(jax.random.split(jax.random.PRNGKey(0), num_seeds))
    layout = make_layout(1, num_seeds, "data", 128)
    args = (agents, jax.tree_util.tree_map(jax.numpy.asarray, data), jax.random.split(jax.random.PRNGKey(1), num_seeds))
    agents, _, _ = compiled_for(build_train_chunk(layout, steps), steps, *args)(*args)
    return [jax.tree_util.tree_map(jax.numpy.asarray, seed_slice(jax.device_get(agents), i)) for i in range(num_seeds)]


def test_cql_stays_on_the_data_where_unregularised_sac_does_not(data):
    # Which data mode a Gaussian policy settles on depends on its initialisation (CQL's penalty on the policy's own
    # actions moves it between modes), so the claims are about four seeds trained in one vmapped program.
    q = lambda a, x: np.asarray(a.critic.apply_fn(a.critic.params, np.zeros((len(x), 1), np.float32), x)).min(0)  # noqa
    between = np.array([[0.0, 0.0], [0.0, 0.7]], np.float32)  # actions the data never takes
    conservative = train_seeds("cql", data, 4, lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    plain = train_seeds("cql", data, 4, lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, cql_weight=0.0)
    on_data, on_worst = [], []
    for agent in conservative:
        actions = np.asarray(agent.sample_actions(np.zeros((500, 1), np.float32), jax.random.PRNGKey(3)))
        on_data.append(mode_fractions(actions).sum())
        on_worst.append(np.mean(np.argmin(np.linalg.norm(actions[:, None] - MODES[None], axis=-1), axis=1) == 2))
        assert np.all(q(agent, between) < q(agent, MODES[[BEST]]))  # the critic is conservative off the data
    assert np.mean(on_data) > 0.7 and np.mean(on_worst) < 0.5, (on_data, on_worst)
    # Without the conservative term the same SAC backbone extrapolates to actions between the modes.
    plain_on_data = []
    for agent, reference in zip(plain, conservative):
        actions = np.asarray(agent.sample_actions(np.zeros((500, 1), np.float32), jax.random.PRNGKey(3)))
        plain_on_data.append(mode_fractions(actions).sum())
        assert q(agent, between).max() > q(reference, between).max() + 0.2
    assert np.mean(plain_on_data) < 0.5, plain_on_data
