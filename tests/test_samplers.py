"""Closed-form checks of the samplers (DDPM, DDIM, DPM-Solver) and of flow matching with its Euler sampler.

Gaussian data x_0 ~ N(mu, diag(s^2)) make every quantity exact. At noise level alpha_bar the marginal is
N(sqrt(ab) mu, ab s^2 + 1 - ab) and the optimal noise predictor is E[eps | x_t] = sqrt(1 - ab)(x_t - sqrt(ab) mu) /
(ab s^2 + 1 - ab), linear in x_t. So the probability-flow ODE is linear, its flow map is affine and increasing, and
the only such map between two 1-D Gaussians standardises and rescales: from level ab_a to ab_b it is
x -> m_b + sd_b (x - m_a) / sd_a. From x_T = z it gives ~ mu + s z at the data end. Samplers that discretise the ODE
must approach this map at their order; the tolerances below sit just above the measured errors (noted beside them)
and orders of magnitude below what a flipped sign, a reversed time grid or a model time off by one index gives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.diffusion import DiffusionSchedule, predict_x0_from_eps
from dql.diffusion import sample as ddpm_sample
from dql.diffusion.flow import euler_sample, flow_matching_loss, interpolate
from dql.diffusion.samplers import ddim_sample, ddim_timesteps, dpm_solver_sample, singlestep_orders

MU = np.array([0.5, -0.2])
S = np.array([0.25, 0.6])  # one narrow dimension: the data end of the ODE is stiff there
LINEAR = DiffusionSchedule.create("linear", 1000)


def gaussian_eps(schedule, mu=MU, s=S):
    """E[eps | x_t] for Gaussian data; float indices interpolate log(alpha_bar) linearly, as DPM-Solver does."""
    T = schedule.num_steps
    log_alpha_bar = jnp.asarray(np.log(schedule.alphas_cumprod), jnp.float32)

    def eps_fn(x, t, observations):
        ab = jnp.exp(jnp.interp(t.astype(jnp.float32), jnp.arange(T, dtype=jnp.float32), log_alpha_bar))[:, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s**2 + 1 - ab)

    return eps_fn


def ode_map(z, ab_from, ab_to, mu=MU, s=S):
    """The exact probability-flow map between noise levels for Gaussian data (see the module docstring)."""
    m_from, sd_from = np.sqrt(ab_from) * mu, np.sqrt(ab_from * s**2 + 1 - ab_from)
    m_to, sd_to = np.sqrt(ab_to) * mu, np.sqrt(ab_to * s**2 + 1 - ab_to)
    return m_to + sd_to * (z - m_from) / sd_from


def standardised_normal(n, seed=0, dim=2):
    """Draws rescaled to sample mean 0 and std 1, so an affine map's sample moments are exact."""
    z = np.random.default_rng(seed).standard_normal((n, dim))
    return (z - z.mean(0)) / z.std(0)


Z_GRID = np.repeat(np.linspace(-3.0, 3.0, 61)[:, None], 2, axis=1)
Z_SAMPLE = standardised_normal(4000)


def run(sampler, z, **kwargs):
    """A jitted sampler on noise z [B, 2], returned in float64 numpy."""
    fn = jax.jit(lambda noise: sampler(observations=jnp.zeros((z.shape[0], 3)), initial_noise=noise, **kwargs))
    return np.asarray(fn(jnp.asarray(z, jnp.float32)), np.float64)


def assert_moments(x, mean_tol, rel_std_tol):
    np.testing.assert_allclose(x.mean(0), MU, atol=mean_tol)
    np.testing.assert_allclose(x.std(0), S, rtol=rel_std_tol)


# ---------------------------------------------------------------------------------------------------------------
# DDIM


def test_ddim_timesteps_are_even_and_end_at_index_zero():
    np.testing.assert_array_equal(ddim_timesteps(1000, 10), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])
    np.testing.assert_array_equal(ddim_timesteps(5, 5), [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(ddim_timesteps(7, 1), [6])
    for n in range(2, 51):  # distinct and decreasing for every count up to T
        steps = ddim_timesteps(50, n)
        assert steps[0] == 49 and steps[-1] == 0 and np.all(np.diff(steps) < 0)
    for bad in (0, 51):
        with pytest.raises(ValueError, match="num_steps"):
            ddim_timesteps(50, bad)


def test_ddim_with_eta_one_over_all_steps_is_the_ancestral_sampler():
    """eta = 1 sets DDIM's variance to the DDPM posterior's, so its update is the posterior step, clipping included."""
    sch = DiffusionSchedule.create("vp", 5)
    max_action = jnp.array([0.4, 2.0, 1.0])

    def wild(x_t, t, s):  # large predictions, so the clipping binds
        return 5.0 * jnp.sin(3.0 * x_t + s.sum(-1, keepdims=True) + t[:, None])

    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    obs = jax.random.normal(keys[0], (64, 4))
    x_T = jax.random.normal(keys[1], (64, 3))
    noise = jax.random.normal(keys[2], (5, 64, 3))  # DDPM: indexed by step; DDIM: in sampling order
    expected = ddpm_sample(wild, sch, obs, x_T, noise, max_action)
    got = ddim_sample(wild, sch, obs, x_T, 5, max_action, eta=1.0, step_noise=noise[::-1])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.abs(np.asarray(got)).max(axis=0)[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="step_noise"):
        ddim_sample(wild, sch, obs, x_T, 5, eta=0.5)


def test_ddim_maps_noise_onto_gaussian_data():
    eps_fn = gaussian_eps(LINEAR)
    exact = ode_map(Z_GRID, LINEAR.alphas_cumprod[-1], 1.0)  # DDIM's last step lands on x_0
    errors = {n: np.abs(run(ddim_sample, Z_GRID, eps_fn=eps_fn, schedule=LINEAR, num_steps=n) - exact).max()
              for n in (50, 100)}
    assert errors[100] < 0.06  # measured 0.045 at |z| = 3
    assert errors[50] / errors[100] == pytest.approx(2.0, rel=0.1)  # first order in the step
    assert np.abs(exact - (MU + S * Z_GRID)).max() < 2e-3  # the exact map is mu + s z up to alpha_bar_T > 0
    x = run(ddim_sample, Z_SAMPLE, eps_fn=eps_fn, schedule=LINEAR, num_steps=100)
    assert_moments(x, mean_tol=2e-3, rel_std_tol=0.07)  # measured 8e-4 and 5 %


# ---------------------------------------------------------------------------------------------------------------
# DPM-Solver


def test_singlestep_orders_spend_exactly_the_evaluations():
    assert singlestep_orders(10, 3) == [3, 3, 3, 1]
    assert singlestep_orders(15, 3) == [3, 3, 3, 3, 2, 1]
    assert singlestep_orders(11, 3) == [3, 3, 3, 2]
    assert singlestep_orders(7, 2) == [2, 2, 2, 1]
    for order in (1, 2, 3):
        for n in range(1, 25):
            assert sum(singlestep_orders(n, order)) == n and max(singlestep_orders(n, order)) <= order


def test_dpm_solver_maps_noise_onto_gaussian_data():
    eps_fn = gaussian_eps(LINEAR)
    # DPM-Solver stops at t = 1/T (index 0), as the dpm_solver package does.
    exact = ode_map(Z_GRID, LINEAR.alphas_cumprod[-1], LINEAR.alphas_cumprod[0])
    x = run(dpm_solver_sample, Z_GRID, eps_fn=eps_fn, schedule=LINEAR, num_steps=20, order=3)
    assert np.abs(x - exact).max() < 0.02  # measured 0.012 at |z| = 3
    assert np.abs(x - (MU + S * Z_GRID)).max() < 0.02
    x = run(dpm_solver_sample, Z_SAMPLE, eps_fn=eps_fn, schedule=LINEAR, num_steps=20, order=3)
    assert_moments(x, mean_tol=2e-3, rel_std_tol=0.02)  # measured 8e-4 and 1.1 %


@pytest.mark.parametrize("order, min_ratio", [(2, 3.5), (3, 8.0)])
def test_dpm_solver_converges_at_its_order_in_log_snr_steps(order, min_ratio):
    """Halving the lambda step divides the error by 2^order (measured 4.3 and 12.6)."""
    eps_fn = gaussian_eps(LINEAR)
    exact = ode_map(Z_GRID, LINEAR.alphas_cumprod[-1], LINEAR.alphas_cumprod[0])
    errors = [np.abs(run(dpm_solver_sample, Z_GRID, eps_fn=eps_fn, schedule=LINEAR, num_steps=n, order=order)
                     - exact).max() for n in (24, 48)]
    assert errors[0] / errors[1] > min_ratio


def test_dpm_solver_3_beats_ddim_at_ten_evaluations():
    eps_fn = gaussian_eps(LINEAR)
    ab_T, ab_1 = LINEAR.alphas_cumprod[-1], LINEAR.alphas_cumprod[0]
    ddim = np.abs(run(ddim_sample, Z_GRID, eps_fn=eps_fn, schedule=LINEAR, num_steps=10)
                  - ode_map(Z_GRID, ab_T, 1.0)).max()
    errors = {spacing: np.abs(run(dpm_solver_sample, Z_GRID, eps_fn=eps_fn, schedule=LINEAR, num_steps=10, order=3,
                                  spacing=spacing) - ode_map(Z_GRID, ab_T, ab_1)).max()
              for spacing in ("logSNR", "time_uniform")}
    assert errors["logSNR"] < 0.2 * ddim  # measured 0.047 against 0.44
    assert errors["time_uniform"] < ddim  # measured 0.29 against 0.44 (erratic in num_steps: 0.72 at 14)


def test_dpm_solver_matches_the_reference_implementation():
    """Values from LuChengTHU/dpm-solver's dpm_solver_pytorch.py in float64: NoiseScheduleVP('discrete'),
    algorithm_type='dpmsolver', method='singlestep', the model called at (t - 1/T) T, on a nonlinear predictor."""
    T = 1000

    def eps_fn(x, t, s):
        return gaussian_eps(LINEAR, mu=0.5, s=0.4)(x, t, s) + 0.1 * jnp.sin(3 * x + t[:, None] / T)

    z = np.array([[-2.0], [-0.7], [0.0], [0.9], [2.2]])
    reference = {
        (2, 7, "time_uniform"): [0.593482, -0.496814, 1.210758, 0.586143, 1.939533],
        (3, 10, "logSNR"): [-0.597548, 0.277710, 0.226454, 1.348252, 1.246289],
        (3, 15, "time_uniform"): [-0.352347, 0.331263, 0.333782, 1.020685, 1.233368],  # EDP's evaluation setting
    }
    for (order, n, spacing), expected in reference.items():
        x = run(dpm_solver_sample, z, eps_fn=eps_fn, schedule=LINEAR, num_steps=n, order=order, spacing=spacing)
        np.testing.assert_allclose(x[:, 0], expected, atol=5e-5, err_msg=str((order, n, spacing)))


def test_dpm_solver_on_a_five_step_schedule_and_its_final_denoising():
    """With T = 5 an off-by-one in the model's time input would be a whole step of noise."""
    sch = DiffusionSchedule.create("vp", 5)
    eps_fn = gaussian_eps(sch)
    ab = sch.alphas_cumprod
    # 20 = 6 x 3 + 2: the trailing step is second order (a trailing first-order step costs 5x here).
    x = run(dpm_solver_sample, Z_GRID, eps_fn=eps_fn, schedule=sch, num_steps=20, order=3)
    assert np.abs(x - ode_map(Z_GRID, ab[-1], ab[0])).max() < 0.015  # measured 0.0074; index + 1 gives 0.6
    # The last level still carries noise of std sqrt(1 - alpha_bar_1) = 0.44; denoising returns E[x_0 | x_{t=1}].
    denoised = run(dpm_solver_sample, Z_GRID, eps_fn=eps_fn, schedule=sch, num_steps=20, order=3,
                   denoise_to_zero=True)
    x32, t0 = jnp.asarray(x, jnp.float32), jnp.zeros(len(x), jnp.int32)
    np.testing.assert_allclose(denoised, predict_x0_from_eps(sch, x32, t0, eps_fn(x32, t0, None)), atol=1e-5)


def test_dpm_solver_clips_predicted_actions_per_dimension():
    sch = DiffusionSchedule.create("vp", 5)
    max_action = jnp.array([0.4, 2.0, 1.0])

    def wild(x_t, t, s):
        return 50.0 * jnp.sin(37.0 * x_t + s.sum(-1, keepdims=True) + t[:, None])

    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    obs = jax.random.normal(keys[0], (64, 4))
    out = dpm_solver_sample(wild, sch, obs, jax.random.normal(keys[1], (64, 3)), 6, 3, max_action)
    assert np.all(np.abs(np.asarray(out)) <= np.asarray(max_action) + 1e-6)
    assert np.abs(np.asarray(out)).max(axis=0)[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="order"):
        dpm_solver_sample(wild, sch, obs, jnp.zeros((64, 3)), 6, 4)


# ---------------------------------------------------------------------------------------------------------------
# DDPM, side by side


def ddpm_chain_moments(schedule, mu=MU, s=S):
    """Exact mean and std of ancestral sampling with the exact eps: each step is affine in x_t plus Gaussian noise."""
    ab = schedule.alphas_cumprod
    mean, var = np.zeros_like(mu), np.ones_like(s)
    for i in range(schedule.num_steps - 1, -1, -1):
        v = ab[i] * s**2 + 1 - ab[i]
        slope = 1 / np.sqrt(ab[i]) - (1 - ab[i]) / (np.sqrt(ab[i]) * v)  # x0_hat = slope x_t + offset
        offset = (1 - ab[i]) * mu / v
        a = schedule.posterior_mean_coef1[i] * slope + schedule.posterior_mean_coef2[i]
        mean = a * mean + schedule.posterior_mean_coef1[i] * offset
        var = a**2 * var + (schedule.posterior_variance[i] if i > 0 else 0.0)
    return mean, np.sqrt(var)


def test_ddpm_sampler_matches_gaussian_moments():
    """Ancestral sampling is right in distribution; its posterior variance makes it 1.5 % narrow at s = 0.25."""
    chain_mean, chain_std = ddpm_chain_moments(LINEAR)
    np.testing.assert_allclose(chain_mean, MU, atol=1e-5)
    np.testing.assert_allclose(chain_std, S, rtol=0.02)
    n = 8000
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    fn = jax.jit(lambda z, noise: ddpm_sample(gaussian_eps(LINEAR), LINEAR, jnp.zeros((n, 1)), z, noise, 10.0))
    x = np.asarray(fn(jax.random.normal(keys[0], (n, 2)), jax.random.normal(keys[1], (1000, n, 2))), np.float64)
    assert np.all(np.abs(x.mean(0) - chain_mean) < 4 * S / np.sqrt(n))  # four standard errors
    assert np.all(np.abs(x.std(0) - chain_std) < 4 * S / np.sqrt(2 * n))
    assert_moments(x, mean_tol=4 * S.max() / np.sqrt(n), rel_std_tol=0.04)


# ---------------------------------------------------------------------------------------------------------------
# Flow matching


def gaussian_velocity(x, t, observations, mu=MU, s=S):
    """E[x_1 - x_0 | x_t = x] for x_1 ~ N(mu, s^2), x_0 ~ N(0, 1): Gaussian conditioning of v on x_t.

    E[x_t] = t mu, Var(x_t) = (1 - t)^2 + t^2 s^2, Cov(x_1 - x_0, x_t) = t s^2 - (1 - t), E[v] = mu.
    """
    return mu + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * mu)


def test_gaussian_velocity_is_the_conditional_mean():
    """Least squares of x_1 - x_0 on x_t over many draws recovers the derived slope and intercept."""
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    x1 = np.asarray(MU + S * jax.random.normal(keys[0], (200_000, 2)), np.float64)
    x0 = np.asarray(jax.random.normal(keys[1], (200_000, 2)), np.float64)
    for t in (0.1, 0.5, 0.9):
        x_t = (1 - t) * x0 + t * x1
        for d in range(2):
            slope, intercept = np.polyfit(x_t[:, d], x1[:, d] - x0[:, d], 1)
            at = gaussian_velocity(np.array([0.0, 1.0]), t, None, MU[d], S[d])
            assert intercept == pytest.approx(at[0], abs=0.01)
            assert slope == pytest.approx(at[1] - at[0], abs=0.01)


def test_euler_maps_noise_onto_gaussian_data():
    """x_t = t mu + sqrt(Var(x_t)) z solves dx/dt = v(x, t), so the flow sends z to mu + s z at t = 1."""
    errors = {n: np.abs(run(euler_sample, Z_GRID, v_fn=gaussian_velocity, num_steps=n) - (MU + S * Z_GRID)).max()
              for n in (250, 500)}
    assert errors[500] < 6e-3  # measured 5.0e-3 at |z| = 3
    assert errors[250] / errors[500] == pytest.approx(2.0, rel=0.05)  # first order
    x = run(euler_sample, Z_SAMPLE, v_fn=gaussian_velocity, num_steps=500)
    assert_moments(x, mean_tol=1e-4, rel_std_tol=0.01)  # measured 1e-8 and 0.4 %


def test_euler_evaluates_at_left_endpoints_and_clips():
    """With v = t the Euler sum is (1/n) sum_k k/n = (n - 1) / (2n): the FQL time grid, t as a [B, 1] column."""

    def v_fn(x, t, observations):
        assert t.shape == (x.shape[0], 1)
        return jnp.broadcast_to(t, x.shape)

    x = run(euler_sample, np.zeros((4, 2)), v_fn=v_fn, num_steps=10)
    np.testing.assert_allclose(x, 0.45, rtol=1e-6)
    clipped = run(euler_sample, np.full((4, 2), 0.5), v_fn=v_fn, num_steps=10, max_action=jnp.array([0.9, 2.0]))
    np.testing.assert_allclose(clipped, np.tile([0.9, 0.95], (4, 1)), rtol=1e-6)


def test_flow_matching_loss_is_minimised_by_the_exact_velocity():
    """At v* the loss is the irreducible E_t[Var(v | x_t)], and any shift of v adds its square.

    Var(v | x_t) = Var(v) - Cov(v, x_t)^2 / Var(x_t) = s^2 / ((1 - t)^2 + t^2 s^2) (the numerator collapses to s^2),
    and its mean over t ~ U[0, 1] is s (atan(s) + atan(1/s)) = (pi / 2) s per dimension.
    """
    n = 400_000
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    actions = MU + S * jax.random.normal(keys[0], (n, 2))
    noise = jax.random.normal(keys[1], (n, 2))
    t = jax.random.uniform(keys[2], (n, 1))
    obs = jnp.zeros((n, 1))
    loss = jax.jit(flow_matching_loss, static_argnums=0)
    best = float(loss(gaussian_velocity, actions, obs, t, noise))
    assert best == pytest.approx(np.mean(np.pi / 2 * S), rel=0.01)  # measured 0.08 %
    shifted = float(loss(lambda x, t, o: gaussian_velocity(x, t, o) + 0.1, actions, obs, t, noise))
    assert shifted - best == pytest.approx(0.01, rel=0.05)
    scaled = float(loss(lambda x, t, o: 1.1 * gaussian_velocity(x, t, o), actions, obs, t, noise))
    assert scaled > best
    assert float(loss(gaussian_velocity, actions, obs, t[:, 0], noise)) == pytest.approx(best, rel=1e-6)
    np.testing.assert_allclose(interpolate(actions[:3], noise[:3], jnp.array([0.0, 1.0, 0.5])),
                               jnp.stack([noise[0], actions[1], 0.5 * (noise[2] + actions[2])]), rtol=1e-6)
