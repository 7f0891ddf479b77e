"""Closed-form checks of the noise schedules, forward noising, posterior and the reverse sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.diffusion import DiffusionSchedule, make_betas, posterior_mean_log_variance, predict_x0_from_eps, q_sample
from dql.diffusion import sample as diffusion_sample


def test_vp_betas_match_the_discretised_sde():
    T, b_min, b_max = 5, 0.1, 10.0
    betas = make_betas("vp", T)
    for t in range(1, T + 1):
        alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
        assert betas[t - 1] == pytest.approx(1 - alpha, rel=1e-12)
    # For T = 5 the first beta is 1 - exp(-0.02 - 0.198) = 0.1958...
    assert betas[0] == pytest.approx(1 - np.exp(-0.218), rel=1e-12)
    assert np.all(np.diff(betas) > 0) and np.all((betas > 0) & (betas < 1))


def test_linear_and_cosine_betas():
    np.testing.assert_allclose(make_betas("linear", 3), [1e-4, (1e-4 + 2e-2) / 2, 2e-2])
    np.testing.assert_allclose(make_betas("scaled_linear", 1000), make_betas("linear", 1000))
    np.testing.assert_allclose(make_betas("scaled_linear", 100)[[0, -1]], [1e-3, 0.2])
    T, s = 10, 0.008
    betas = make_betas("cosine", T)
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(np.cumprod(1 - betas)[:-1], f(np.arange(1, T)) / f(0), rtol=1e-10)
    assert betas[-1] == 0.999  # alpha_bar(T) = 0 would make beta_T = 1; it is clipped as in Nichol & Dhariwal
    with pytest.raises(ValueError, match=r"needs more than 20 diffusion steps \(--config.diffusion_steps\), got 20"):
        make_betas("scaled_linear", 20)
    with pytest.raises(ValueError, match="unknown beta schedule 'sigmoid'"):
        make_betas("sigmoid", 5)


@pytest.mark.parametrize("name", ["vp", "linear", "cosine"])
def test_posterior_matches_gaussian_conditioning(name):
    """q(x_{t-1} | x_t, x_0) from conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    sch = DiffusionSchedule.create(name, 8)
    for i in range(1, 8):  # t = i + 1 >= 2 so the posterior variance is nonzero
        ab_prev, ab, alpha = sch.alphas_cumprod_prev[i], sch.alphas_cumprod[i], sch.alphas[i]
        assert ab == pytest.approx(ab_prev * alpha, rel=1e-12)
        var_prev, var_t = 1 - ab_prev, 1 - ab
        cov = np.sqrt(alpha) * var_prev  # Cov(x_{t-1}, x_t | x_0)
        # mean = sqrt(ab_prev) x0 + cov / var_t (x_t - sqrt(ab) x0) = c1 x0 + c2 x_t
        c2 = cov / var_t
        c1 = np.sqrt(ab_prev) - c2 * np.sqrt(ab)
        assert sch.posterior_mean_coef1[i] == pytest.approx(c1, rel=1e-10)
        assert sch.posterior_mean_coef2[i] == pytest.approx(c2, rel=1e-10)
        assert sch.posterior_variance[i] == pytest.approx(var_prev - cov**2 / var_t, rel=1e-10)
    assert sch.posterior_variance[0] == 0.0 and sch.posterior_mean_coef1[0] == pytest.approx(1.0)


def test_forward_noising_statistics_and_inverse():
    sch = DiffusionSchedule.create("vp", 5)
    x0 = jnp.full((200_000, 1), 0.7)
    for i in range(5):
        t = jnp.full((x0.shape[0],), i)
        noise = jax.random.normal(jax.random.PRNGKey(i), x0.shape)
        x_t = q_sample(sch, x0, t, noise)
        assert float(x_t.mean()) == pytest.approx(0.7 * np.sqrt(sch.alphas_cumprod[i]), abs=5e-3)
        assert float(x_t.var()) == pytest.approx(1 - sch.alphas_cumprod[i], rel=2e-2)
        np.testing.assert_allclose(predict_x0_from_eps(sch, x_t, t, noise), x0, atol=1e-4)


def test_oracle_denoiser_recovers_x0_and_posterior_step():
    """With the true noise as the prediction, ancestral sampling returns x_0 exactly (its last step is the mean)."""
    sch = DiffusionSchedule.create("vp", 5)
    x0 = jnp.array([[0.3, -0.5], [0.9, 0.1]])

    def oracle(x_t, t, s):
        a = jnp.asarray(sch.sqrt_alphas_cumprod, jnp.float32)[t][:, None]
        b = jnp.asarray(sch.sqrt_one_minus_alphas_cumprod, jnp.float32)[t][:, None]
        return (x_t - a * x0) / b

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    out = diffusion_sample(
        oracle, sch, jnp.zeros((2, 3)), jax.random.normal(keys[0], (2, 2)), jax.random.normal(keys[1], (5, 2, 2)), 1.0
    )
    np.testing.assert_allclose(out, x0, atol=1e-5)
    # One posterior step from x_t with x_0 known equals coef1 x0 + coef2 x_t.
    t = jnp.array([3, 3])
    x_t = jnp.ones((2, 2))
    mean, log_var = posterior_mean_log_variance(sch, x0, x_t, t)
    np.testing.assert_allclose(mean, sch.posterior_mean_coef1[3] * x0 + sch.posterior_mean_coef2[3] * x_t, rtol=1e-5)
    np.testing.assert_allclose(log_var, np.log(sch.posterior_variance[3]), rtol=1e-5)


def test_sampler_shapes_and_bounds_per_dimension():
    sch = DiffusionSchedule.create("vp", 5)
    max_action = jnp.array([0.4, 2.0, 1.0])

    def wild(x_t, t, s):  # a badly trained network: huge noise predictions
        return 50.0 * jnp.sin(37.0 * x_t + s.sum(-1, keepdims=True))

    B = 64
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(keys[0], (B, 4))
    out = diffusion_sample(
        wild, sch, obs, jax.random.normal(keys[1], (B, 3)), jax.random.normal(keys[2], (5, B, 3)), max_action
    )
    assert out.shape == (B, 3)
    assert np.all(np.abs(np.asarray(out)) <= np.asarray(max_action) + 1e-6)
    assert np.abs(np.asarray(out)).max(axis=0)[0] == pytest.approx(0.4)  # the bound binds, per dimension
