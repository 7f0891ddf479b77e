"""Closed-form checks of the baselines' losses: expectile loss, CQL's log-sum-exp gap, TD3+BC's lambda, densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dql.agents.cql import conservative_gap
from dql.agents.iql import expectile_loss
from dql.agents.td3bc import bc_weight
from dql.distributions import gaussian_log_prob, tanh_gaussian_from_noise, tanh_gaussian_log_prob


def test_expectile_loss_weights_and_minimiser():
    diff = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(expectile_loss(diff, 0.7), [0.3 * 4, 0.3 * 0.25, 0.0, 0.7 * 0.25, 0.7 * 4], rtol=1e-6)
    # Minimising the mean loss over v gives the tau-expectile of the samples: E[(x - v)_+] tau = E[(v - x)_+](1 - tau).
    x = jnp.asarray(np.random.default_rng(0).normal(size=2000), jnp.float32)
    for tau in (0.5, 0.7, 0.9):
        loss_grad = jax.grad(lambda v: jnp.mean(expectile_loss(x - v, tau)))
        v = jax.jit(lambda v0: jax.lax.fori_loop(0, 3000, lambda _, v: v - 0.5 * loss_grad(v), v0))(jnp.asarray(0.0))
        lhs = tau * jnp.mean(jnp.maximum(x - v, 0))
        rhs = (1 - tau) * jnp.mean(jnp.maximum(v - x, 0))
        assert float(lhs) == pytest.approx(float(rhs), rel=1e-3)
        if tau == 0.5:
            assert float(v) == pytest.approx(float(x.mean()), abs=1e-4)  # the 0.5-expectile is the mean


def test_cql_gap_equals_a_direct_log_sum_exp():
    rng = np.random.default_rng(1)
    q_data = rng.normal(size=(2, 4))
    q_ood = rng.normal(size=(2, 4, 6))
    log_density = rng.normal(size=(1, 4, 6))
    for temperature in (1.0, 0.5):
        direct = temperature * np.log(np.sum(np.exp((q_ood - log_density) / temperature), axis=-1)) - q_data
        np.testing.assert_allclose(conservative_gap(q_data, q_ood, log_density, temperature), direct, rtol=1e-5)
    # Uniform actions on [-1, 1]^d have density 2^-d: with equal Q the gap is log(n) + d log 2 (T = 1) above Q.
    gap = conservative_gap(jnp.zeros((1, 1)), jnp.zeros((1, 1, 10)), jnp.full((1, 1, 10), -3 * np.log(2.0)), 1.0)
    assert float(gap[0, 0]) == pytest.approx(np.log(10) + 3 * np.log(2), rel=1e-6)


def test_td3bc_lambda():
    q = jnp.array([-4.0, 2.0, 6.0])
    assert float(bc_weight(2.5, q, None)) == pytest.approx(2.5 / 4.0)
    assert float(jax.grad(lambda q: bc_weight(2.5, q, None) * q.sum())(q)[0]) == pytest.approx(2.5 / 4.0)  # constant


def test_gaussian_densities_against_scipy():
    rng = np.random.default_rng(2)
    mean, log_std, x = rng.normal(size=3), rng.normal(size=3) * 0.3, rng.normal(size=3)
    expected = stats.norm(mean, np.exp(log_std)).logpdf(x).sum()
    assert float(gaussian_log_prob(mean, log_std, x)) == pytest.approx(expected, rel=1e-5)
    # tanh change of variables: log p(a) = log N(atanh a) - sum log(1 - a^2)
    a = np.tanh(x)
    expected_tanh = expected - np.log(1 - a**2).sum()
    assert float(tanh_gaussian_log_prob(mean, log_std, a)) == pytest.approx(expected_tanh, rel=1e-4)
    sample, log_prob = tanh_gaussian_from_noise(mean, log_std, (x - mean) / np.exp(log_std))
    np.testing.assert_allclose(sample, a, rtol=1e-5)
    assert float(log_prob) == pytest.approx(expected_tanh, rel=1e-4)
