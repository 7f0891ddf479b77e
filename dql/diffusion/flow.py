"""Flow matching over actions and its Euler sampler, with the conventions of Flow Q-Learning.

Conditional flow matching with the linear (rectified-flow) path (Lipman et al. 2023, "Flow Matching for Generative
Modeling"; Liu et al. 2023, "Flow Straight and Fast"), as Flow Q-Learning uses it (Park, Li & Levine 2025, "Flow
Q-Learning", repo seohongpark/fql): x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I) noise at t = 0 and x_1 an action
at t = 1, target velocity x_1 - x_0, t ~ U[0, 1]. Sampling integrates dx/dt = v(x, t) from t = 0 to 1.

`v_fn(x [B, A], t [B, 1] float, observations [B, d]) -> velocity [B, A]`: time is a column, as FQL feeds it
(concatenated to the network's inputs), so it broadcasts against actions. Randomness enters as explicit arrays.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _column(t: jax.Array) -> jax.Array:
    return t.reshape(-1, 1) if t.ndim == 1 else t


def interpolate(actions: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """The point at time t on the straight path from noise (t = 0) to actions (t = 1); t is [B, 1] or [B]."""
    t = _column(t)
    return (1 - t) * noise + t * actions


def flow_matching_loss(
    v_fn: VelocityFn, actions: jax.Array, observations: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """Mean squared error between v(x_t, t) and the path's velocity actions - noise, over batch and action dims.

    actions, noise: [B, A]; t: [B, 1] (or [B]) drawn from U[0, 1]. Minimised by v(x, t) = E[x_1 - x_0 | x_t = x].
    """
    t = _column(t)
    prediction = v_fn(interpolate(actions, noise, t), t, observations)
    return jnp.mean(jnp.square(prediction - (actions - noise)))


def euler_sample(
    v_fn: VelocityFn,
    observations: jax.Array,
    initial_noise: jax.Array,
    num_steps: int,
    max_action: jax.Array | float | None = None,
) -> jax.Array:
    """Integrate the flow from x_0 = initial_noise [B, A] at t = 0 to t = 1 in `num_steps` equal Euler steps.

    Step k evaluates v at t = k / num_steps (k = 0..num_steps-1), as FQL's compute_flow_actions. With max_action
    the final sample is clipped to [-max_action, max_action], as FQL clips actions; intermediate points are not.
    """
    if num_steps < 1:
        raise ValueError(f"Euler sampling needs num_steps >= 1, got {num_steps}")
    batch = observations.shape[0]
    dt = 1.0 / num_steps
    times = jnp.asarray(np.arange(num_steps) / num_steps, initial_noise.dtype)

    def step(x, t):
        return x + dt * v_fn(x, jnp.full((batch, 1), t, x.dtype), observations), None

    # Short chains are unrolled so XLA can fuse across steps; long ones stay a loop to keep compile time flat.
    x, _ = jax.lax.scan(step, initial_noise, times, unroll=num_steps <= 10)
    return x if max_action is None else jnp.clip(x, -max_action, max_action)
