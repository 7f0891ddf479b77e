"""DDPM over actions: forward noising, the epsilon-prediction loss and the ancestral reverse sampler.

The functions take a noise-prediction function `eps_fn(noisy_actions, t_index, observations) -> eps`, so the same
math serves any network. Randomness enters as explicit noise arrays: callers decide how it is drawn, which lets the
data-parallel update draw exactly the same numbers as the single-device one.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dql.diffusion.schedules import DiffusionSchedule

EpsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _at(coefficients, t: jax.Array, like: jax.Array) -> jax.Array:
    """Gather per-example coefficients for integer steps t (shape [B]) as a [B, 1] column of `like`'s dtype (float32
    in training; float64 where a parity check runs the same math in double precision)."""
    return jnp.asarray(coefficients, dtype=like.dtype)[t][:, None]


def q_sample(schedule: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    return _at(schedule.sqrt_alphas_cumprod, t, x0) * x0 + _at(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def predict_x0_from_eps(schedule: DiffusionSchedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Invert q_sample: x_0 = x_t / sqrt(alpha_bar_t) - sqrt(1 / alpha_bar_t - 1) eps."""
    return (_at(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - _at(schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)


def posterior_mean_log_variance(
    schedule: DiffusionSchedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and (clipped) log-variance of q(x_{t-1} | x_t, x_0)."""
    mean = _at(schedule.posterior_mean_coef1, t, x_t) * x0 + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    return mean, _at(schedule.posterior_log_variance_clipped, t, x_t)


def diffusion_loss(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    actions: jax.Array,
    observations: jax.Array,
    t: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """The simplified DDPM objective: mean squared error between the true and the predicted noise."""
    noisy_actions = q_sample(schedule, actions, t, noise)
    return jnp.mean(jnp.square(eps_fn(noisy_actions, t, observations) - noise))


def sample(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    observations: jax.Array,
    initial_noise: jax.Array,
    step_noise: jax.Array,
    max_action: jax.Array | float,
) -> jax.Array:
    """Ancestral sampling x_T ~ N(0, I) -> x_0, differentiable in the network parameters.

    initial_noise: [B, A], the draw of x_T. step_noise: [T, B, A]; step_noise[i] perturbs the step from t = i + 1
    to t = i and step_noise[0] is unused (the last step is the posterior mean). The predicted x_0 is clipped to the
    action bounds at every step and the final sample once more, as in the reference implementation.
    """
    num_steps = schedule.num_steps
    batch = observations.shape[0]
    max_action = jnp.asarray(max_action, dtype=initial_noise.dtype)

    def reverse_step(x, inputs):
        i, noise = inputs
        t = jnp.full((batch,), i, dtype=jnp.int32)
        x0 = predict_x0_from_eps(schedule, x, t, eps_fn(x, t, observations))
        x0 = jnp.clip(x0, -max_action, max_action)
        mean, log_variance = posterior_mean_log_variance(schedule, x0, x, t)
        nonzero = (i > 0).astype(x.dtype)
        return mean + nonzero * jnp.exp(0.5 * log_variance) * noise, None

    steps = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
    # Short chains are unrolled so XLA can fuse across steps; long ones stay a loop to keep compile time flat.
    x, _ = jax.lax.scan(reverse_step, initial_noise, (steps, step_noise[::-1]), unroll=num_steps <= 10)
    return jnp.clip(x, -max_action, max_action)
