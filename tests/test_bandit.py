"""The Diffusion-QL paper's 2-D multimodal bandit: four separated action modes, one of them best.

Diffusion BC reproduces every mode, and Diffusion-QL concentrates on the best mode.
"""

import jax
import numpy as np
import pytest

from dql.agents import create_agent
from dql.data.bandit import BEST, MODE_REWARDS, MODES, RADIUS, bandit_data, mode_fractions
from tests.helpers import run_chunk, small_config

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

# The toy asks for a finer chain than the RL default (vp, T = 5) to separate four tight modes in few steps.
DIFFUSION = dict(beta_schedule="linear", diffusion_steps=10)


@pytest.fixture(scope="module")
def data():
    return bandit_data()


def train_on_bandit(data, eta, steps, seed=0):
    config = small_config(hidden_dims=(64, 64), eta=eta, lr=1e-3, critic_lr=1e-3, lr_decay=False, grad_norm=0.0,
                         steps=steps, ema_start=0, **DIFFUSION)
    agent = create_agent("dql", jax.random.PRNGKey(seed), 1, 2, [1.0, 1.0], config, axis_name="data")
    chunk = lambda agent, data, rng: run_chunk(agent, data, rng, 128, steps)  # noqa: E731
    agent, _, metrics = chunk(agent, data, jax.random.PRNGKey(seed + 1))
    samples = np.asarray(agent.sample_actor(np.zeros((2000, 1), np.float32), jax.random.PRNGKey(7)))
    return agent, samples, metrics


def test_diffusion_bc_reproduces_every_mode(data):
    """The diffusion loss alone (eta 0) keeps all four modes; the project's Gaussian BC trained on the same data
    does not (tests/test_baselines_bandit.py::test_gaussian_bc_averages_the_modes)."""
    _, samples, metrics = train_on_bandit(data, eta=0.0, steps=1500)
    fractions = mode_fractions(samples)
    assert np.all(fractions > 0.15), fractions  # each mode holds about a quarter of the samples
    assert fractions.sum() > 0.8, fractions  # and little falls between modes


def test_diffusion_ql_concentrates_on_the_best_mode(data):
    agent, samples, metrics = train_on_bandit(data, eta=5.0, steps=2000)
    # The Q term pulls samples toward, and a little beyond, the best mode's corner; the other modes empty out.
    near_best = np.linalg.norm(samples - MODES[BEST], axis=-1) < 1.5 * RADIUS
    assert near_best.mean() > 0.6, samples.mean(0)
    fractions = mode_fractions(samples)
    assert np.all(np.delete(fractions, BEST) < 0.1), fractions
    # The critic learned each mode's reward (one-step episodes, so Q = r).
    q = np.asarray(agent.critic.apply_fn(agent.critic.params, np.zeros((4, 1), np.float32), MODES))
    np.testing.assert_allclose(q.min(0), MODE_REWARDS, atol=0.1)
