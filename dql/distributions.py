"""Log-densities and samples of the Gaussian policies the baselines use, in closed form.

Actions live in the unit box [-1, 1]^d here; agents scale by their action bound outside.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """log N(x; mean, diag(exp(log_std)^2)) summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - _LOG_SQRT_2PI, axis=-1)


def _log_one_minus_tanh_squared(u: jax.Array) -> jax.Array:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def tanh_gaussian_from_noise(mean: jax.Array, log_std: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a = tanh(mean + std * noise), noise ~ N(0, I): returns (a, log pi(a)) with the change-of-variables term."""
    u = mean + jnp.exp(log_std) * noise
    log_prob = gaussian_log_prob(mean, log_std, u) - jnp.sum(_log_one_minus_tanh_squared(u), axis=-1)
    return jnp.tanh(u), log_prob


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array, eps: float = 1e-6) -> jax.Array:
    """log pi(a) of unit-box actions under the tanh-squashed Gaussian (actions clipped just inside the box)."""
    a = jnp.clip(actions, -1.0 + eps, 1.0 - eps)
    u = jnp.arctanh(a)
    return gaussian_log_prob(mean, log_std, u) - jnp.sum(_log_one_minus_tanh_squared(u), axis=-1)


# The form of rlkit's TanhNormal, which the CQL paper's code uses: log(1 - a^2 + epsilon) in place of the exact
# log(1 - tanh(u)^2), and arctanh of data actions with 1 +- a floored at 1e-6. CQL offers it as an option.


def tanh_gaussian_from_noise_with_epsilon(mean: jax.Array, log_std: jax.Array, noise: jax.Array,
                                          epsilon: float) -> tuple[jax.Array, jax.Array]:
    """a = tanh(mean + std * noise) and log pi(a) = log N(u) - sum log(1 - a^2 + epsilon) (rlkit's TanhNormal)."""
    u = mean + jnp.exp(log_std) * noise
    actions = jnp.tanh(u)
    log_prob = gaussian_log_prob(mean, log_std, u) - jnp.sum(jnp.log(1.0 - actions * actions + epsilon), axis=-1)
    return actions, log_prob


def tanh_gaussian_log_prob_with_epsilon(mean: jax.Array, log_std: jax.Array, actions: jax.Array,
                                        epsilon: float) -> jax.Array:
    """log pi(a) of unit-box actions in rlkit's form: u = 0.5 log(max(1 + a, 1e-6) / max(1 - a, 1e-6)), then
    log N(u) - sum log(1 - a^2 + epsilon)."""
    u = 0.5 * jnp.log(jnp.maximum(1.0 + actions, 1e-6) / jnp.maximum(1.0 - actions, 1e-6))
    return gaussian_log_prob(mean, log_std, u) - jnp.sum(jnp.log(1.0 - actions * actions + epsilon), axis=-1)
