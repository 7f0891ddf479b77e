"""CQL's agreement with the paper's code where it was checked by hand: the AntMaze rows' Lagrange penalty against
the paper's form, and the conservative gap and Lagrange penalty of `update_with_noise` against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents.cql import CQLAgent, CQLHyperparams, CQLNoise
from dql.configs import resolve
from dql.configs.cql import DATASET_OVERRIDES, get_config
from dql.distributions import (tanh_gaussian_from_noise, tanh_gaussian_from_noise_with_epsilon,
                               tanh_gaussian_log_prob, tanh_gaussian_log_prob_with_epsilon)

# The paper's README runs AntMaze with `--lagrange_thresh=5.0 --min_q_wight=5.0` (examples/cql_antmaze_new.py).
PAPER_ANTMAZE_THRESH, PAPER_ANTMAZE_WEIGHT = 5.0, 5.0


def _ours(alpha_prime, weight, target, gap):
    return alpha_prime * weight * (gap - target)  # dql/agents/cql.py


def _papers(alpha_prime, weight, thresh, gap):
    return alpha_prime * (weight * gap - thresh)  # rlkit/torch/sac/cql.py:272-273


@pytest.mark.parametrize("dataset", sorted(name for name in DATASET_OVERRIDES if name.startswith("antmaze")))
def test_antmaze_rows_penalise_the_gap_as_the_papers_code_does(dataset):
    config = resolve("cql", dataset)
    assert config.lagrange
    w, tau = config.cql_weight, config.target_action_gap
    for log_alpha_prime in (-1.0, 0.0, 2.0):
        for gap in (-3.0, 0.0, 0.7, 1.0, 1.3, 25.0):
            # The critics' penalty, equal for every alpha' and gap ...
            ours = _ours(np.exp(log_alpha_prime), w, tau, gap)
            papers = _papers(np.exp(log_alpha_prime), PAPER_ANTMAZE_WEIGHT, PAPER_ANTMAZE_THRESH, gap)
            assert ours == pytest.approx(papers, rel=1e-12, abs=1e-12)
            # ... and alpha' moves the same way: both minimise -penalty over log alpha'.
            grad_ours = jax.grad(lambda la, g=gap: -_ours(jnp.exp(la), w, tau, g))(log_alpha_prime)
            grad_papers = jax.grad(lambda la, g=gap: -_papers(jnp.exp(la), PAPER_ANTMAZE_WEIGHT, PAPER_ANTMAZE_THRESH,
                                                              g))(log_alpha_prime)
            assert np.sign(grad_ours) == np.sign(grad_papers) and float(grad_ours) == pytest.approx(
                float(grad_papers), rel=1e-6, abs=1e-9)
    # The rows before this fix (w 5, our gap 5) were the paper's threshold 25: alpha' rose where the paper's fell.
    assert np.sign(_ours(1.0, 5.0, 5.0, 3.0)) != np.sign(_papers(1.0, 5.0, 5.0, 3.0))


def _agent(**overrides):
    config = get_config()
    config.update(dict(hidden_dims=(16, 16), num_samples=3, **overrides))
    hp = CQLHyperparams.from_config(config, (1.0, 1.0))
    return CQLAgent.create(jax.random.PRNGKey(0), 3, 2, hp)


def _batch(rng, size=5):
    return {"observations": jnp.asarray(rng.normal(size=(size, 3)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-0.9, 0.9, (size, 2)), jnp.float32),
            "rewards": jnp.asarray(rng.normal(size=size), jnp.float32),
            "next_observations": jnp.asarray(rng.normal(size=(size, 3)), jnp.float32),
            "dones": jnp.zeros(size, jnp.float32)}


def _noise_at_data_actions(agent: CQLAgent, batch, rng):
    """Noise that puts all 3N sampled actions at the data action (the policy's by inverting a = tanh(m + s e)), and
    the closed-form gap that follows: Q cancels, T logsumexp(-log density / T) is left."""
    n = agent.hp.num_samples
    actions = batch["actions"]
    expected, noises = [], []
    for observations in (batch["observations"], batch["next_observations"]):
        mean, log_std = agent.actor.apply_fn(agent.actor.params, observations)
        noises.append(jnp.repeat(((jnp.arctanh(actions) - mean) / jnp.exp(log_std))[:, None], n, axis=1))
        expected.append(jnp.repeat(tanh_gaussian_log_prob(mean, log_std, actions)[:, None], n, axis=1))
    uniform_log_density = jnp.full((len(actions), n), -2 * np.log(2.0))
    log_density = jnp.concatenate([uniform_log_density, *expected], axis=1)
    t = agent.hp.cql_temperature
    gap = t * jax.scipy.special.logsumexp(-log_density / t, axis=1)
    noise = CQLNoise(actor=jnp.asarray(rng.normal(size=actions.shape), jnp.float32),
                     backup=jnp.asarray(rng.normal(size=actions.shape), jnp.float32), current=noises[0],
                     next=noises[1], uniform=jnp.repeat(actions[:, None], n, axis=1))
    return noise, float(jnp.mean(gap))


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_update_with_noise_at_the_data_actions_gives_the_closed_form_gap(temperature):
    rng = np.random.default_rng(0)
    agent = _agent(cql_temperature=temperature)
    batch = _batch(rng)
    noise, expected_gap = _noise_at_data_actions(agent, batch, rng)
    _, metrics = agent.update_with_noise(batch, noise)
    # Each head's Q cancels: the gap is the importance weights' log-sum-exp alone, whatever the critics.
    assert float(metrics["cql_gap"]) == pytest.approx(expected_gap, rel=1e-4)
    # The critics' loss: TD plus w times the gap per head (no Lagrange multiplier).
    assert float(metrics["critic_loss"]) == pytest.approx(
        float(metrics["td_loss"]) + 2 * agent.hp.cql_weight * expected_gap, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("above", [True, False])
def test_lagrange_penalty_and_its_multiplier_match_a_hand_computation(above):
    rng = np.random.default_rng(1)
    probe = _agent()
    batch = _batch(rng)
    noise, gap = _noise_at_data_actions(probe, batch, rng)
    target = gap - 1.0 if above else gap + 1.0  # the gap above / below its target
    agent = _agent(lagrange=True, target_action_gap=target, log_alpha_prime_init=0.3)
    new, metrics = agent.update_with_noise(batch, noise)
    alpha_prime, w = np.exp(0.3), agent.hp.cql_weight
    assert float(metrics["alpha_prime"]) == pytest.approx(alpha_prime, rel=1e-6)
    # Two heads, each alpha' w (gap - target); alpha' itself minimises -alpha' w (gap - target).
    assert float(metrics["critic_loss"]) == pytest.approx(
        float(metrics["td_loss"]) + 2 * alpha_prime * w * (gap - target), rel=1e-4)
    assert float(metrics["alpha_prime_loss"]) == pytest.approx(-alpha_prime * w * (gap - target), rel=1e-4)
    # Adam's first step moves log alpha' by its learning rate, up while the gap exceeds its target.
    step = float(new.log_alpha_prime.params["value"]) - 0.3
    assert step == pytest.approx(agent.hp.critic_lr if above else -agent.hp.critic_lr, rel=1e-3)


def test_update_draws_its_noise_with_draw_noise():
    agent = _agent(lagrange=True)
    batch = _batch(np.random.default_rng(2))
    rng, step_key = jax.random.split(agent.rng)
    expected, _ = agent.replace(rng=rng).update_with_noise(batch, agent.draw_noise(step_key, 5))
    updated, _ = agent.update(batch)
    for a, b in zip(jax.tree_util.tree_leaves(updated), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_the_papers_tanh_density_is_the_exact_one_up_to_its_epsilon():
    rng = np.random.default_rng(3)
    # Actions well inside the box, where float32 holds 1 - a^2 accurately.
    mean, log_std, noise = (jnp.asarray(scale * rng.normal(size=(4, 3)) + shift, jnp.float32)
                            for scale, shift in ((0.5, 0.0), (0.3, -1.0), (1.0, 0.0)))
    actions, exact = tanh_gaussian_from_noise(mean, log_std, noise)
    same_actions, papers = tanh_gaussian_from_noise_with_epsilon(mean, log_std, noise, 1e-6)
    np.testing.assert_array_equal(actions, same_actions)
    np.testing.assert_allclose(papers, exact, atol=1e-4)  # log(1 - a^2 + 1e-6) against log(1 - a^2): ~1e-6 / 0.1
    np.testing.assert_allclose(tanh_gaussian_log_prob_with_epsilon(mean, log_std, actions, 1e-6), papers, atol=1e-4)
    np.testing.assert_allclose(tanh_gaussian_log_prob(mean, log_std, actions), exact, atol=1e-4)
