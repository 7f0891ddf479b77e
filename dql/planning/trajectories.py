"""Diffuser's diffusion over trajectories: conditioning, the weighted loss, and (value-guided) planning.

A trajectory x is [B, H, D] with transitions laid out [action (action_dim), observation]. Conditions pin the
observation at given horizon indices ({0: start} for locomotion, {0: start, H - 1: goal} for mazes); they are
written into x, never generated. model_fn(x, t) -> [B, H, D] and guide_fn(x, t) -> [B] take the step as the 0-based
index t = 0..T-1 (the reference's convention and dql.diffusion's). Randomness enters as explicit noise arrays.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dql.diffusion.ddpm import posterior_mean_log_variance, predict_x0_from_eps, q_sample
from dql.diffusion.schedules import DiffusionSchedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
GuideFn = Callable[[jax.Array, jax.Array], jax.Array]
Conditions = Mapping[int, jax.Array]


def apply_conditioning(x: jax.Array, conditions: Conditions, action_dim: int) -> jax.Array:
    """Overwrite the observation part of x at each conditioned horizon index with its [B, obs_dim] value."""
    for index, observation in conditions.items():
        x = x.at[:, index, action_dim:].set(observation)
    return x


def loss_weights(
    horizon: int,
    action_dim: int,
    transition_dim: int,
    action_weight: float,
    discount: float = 1.0,
    observation_weights: Mapping[int, float] | None = None,
) -> np.ndarray:
    """[H, D] weights of the trajectory loss: discount^h over the horizon, normalised to mean 1 over h, times an
    optional per-observation-dimension factor; the first action's entries are then set to action_weight (the only
    action the planner executes)."""
    dim_weights = np.ones(transition_dim, np.float32)
    for index, weight in (observation_weights or {}).items():
        dim_weights[action_dim + index] *= weight
    discounts = discount ** np.arange(horizon, dtype=np.float32)
    weights = np.outer(discounts / discounts.mean(), dim_weights).astype(np.float32)
    weights[0, :action_dim] = action_weight
    return weights


def _flat(x: jax.Array) -> jax.Array:
    """dql.diffusion's coefficients are per-example columns [B, 1]: trajectories go through them as [B, H * D]."""
    return x.reshape(x.shape[0], -1)


def trajectory_loss(
    model_fn: ModelFn,
    schedule: DiffusionSchedule,
    x0: jax.Array,
    conditions: Conditions,
    action_dim: int,
    t: jax.Array,
    noise: jax.Array,
    weights: jax.Array,
    predict_epsilon: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Diffuser's training loss: weighted mean squared error of the model's output against the noise
    (predict_epsilon) or the clean trajectory, both with the conditions written in.

    t: [B] step indices; noise: [B, H, D]. info["a0_loss"] is the reference's first-action diagnostic: the
    unweighted squared error of the first action divided by action_weight.
    """
    x_noisy = q_sample(schedule, _flat(x0), t, _flat(noise)).reshape(x0.shape)
    x_noisy = apply_conditioning(x_noisy, conditions, action_dim)
    # The reference overwrites the conditioned entries of the output too, even when it predicts noise: those
    # entries then compare the condition with the noise, a constant that carries no gradient.
    prediction = apply_conditioning(model_fn(x_noisy, t), conditions, action_dim)
    target = noise if predict_epsilon else x0
    squared_error = jnp.square(prediction - target)
    loss = jnp.mean(squared_error * weights)
    a0_loss = jnp.mean(squared_error[:, 0, :action_dim] / weights[0, :action_dim])
    return loss, {"a0_loss": a0_loss}


class PlannedTrajectories(NamedTuple):
    """What `plan` returns. chain [T + 1, B, H, D]: x_T (conditioned) then x after each reverse step; guidance
    [T, B, H, D]: the increment the guide added to x in each step (row k belongs to chain[k] -> chain[k + 1]),
    before the conditions overwrite their entries. Both None unless asked for."""

    trajectories: jax.Array
    values: jax.Array
    chain: jax.Array | None = None
    guidance: jax.Array | None = None


def plan(
    model_fn: ModelFn,
    schedule: DiffusionSchedule,
    conditions: Conditions,
    action_dim: int,
    initial_noise: jax.Array,
    step_noise: jax.Array,
    predict_epsilon: bool,
    clip_denoised: bool,
    guide_fn: GuideFn | None = None,
    guide_scale: float = 0.0,
    t_stopgrad: int = 0,
    n_guide_steps: int = 1,
    scale_grad_by_std: bool = True,
    return_chain: bool = False,
) -> PlannedTrajectories:
    """Diffuser's reverse process x_T -> x_0 as one lax.scan over the T steps, conditions re-applied after each.

    initial_noise [B, H, D] is x_T before conditioning; step_noise[i] ([T, B, H, D]) perturbs the step at index i
    (step_noise[0] is unused: the last step returns the posterior mean). Each step at index i:
      with a guide, n_guide_steps times: g = d sum_b guide_fn(x, i)_b / dx, times the posterior variance at i when
      scale_grad_by_std (which makes it ~0 at i = 0, where the clipped variance is 1e-20), zero when
      i < t_stopgrad; x += guide_scale g; conditions re-applied;
      then x0 from the model (noise or x0 prediction), clipped to [-1, 1] when clip_denoised, and
      x = posterior mean + posterior std * noise.
    values are the guide's outputs from its last evaluation (the last guide step at i = 0), as the reference
    returns them; zeros without a guide. The batch keeps its order: `best_plan` picks by value.
    """
    num_steps = schedule.num_steps
    batch = initial_noise.shape[0]
    posterior_variance = jnp.exp(jnp.asarray(schedule.posterior_log_variance_clipped, jnp.float32))
    guided = guide_fn is not None

    def guide(x, i, t):
        step_scale = guide_scale * jnp.where(i < t_stopgrad, 0.0, 1.0)
        if scale_grad_by_std:
            step_scale = step_scale * posterior_variance[i]
        applied = jnp.zeros_like(x)
        values = jnp.zeros((batch,), x.dtype)
        for _ in range(n_guide_steps):
            values, pullback = jax.vjp(lambda trajectories: guide_fn(trajectories, t), x)
            (gradient,) = pullback(jnp.ones_like(values))
            increment = step_scale * gradient
            x = apply_conditioning(x + increment, conditions, action_dim)
            applied = applied + increment
        return x, values, applied

    def reverse_step(carry, inputs):
        x, values = carry
        i, noise = inputs
        t = jnp.full((batch,), i, dtype=jnp.int32)
        if guided:
            x, values, applied = guide(x, i, t)
        else:
            applied = jnp.zeros_like(x)
        model_output = model_fn(x, t)
        if predict_epsilon:
            x0 = predict_x0_from_eps(schedule, _flat(x), t, _flat(model_output)).reshape(x.shape)
        else:
            x0 = model_output
        if clip_denoised:
            x0 = jnp.clip(x0, -1.0, 1.0)
        mean, log_variance = posterior_mean_log_variance(schedule, _flat(x0), _flat(x), t)
        noise_scale = jnp.where(i > 0, jnp.exp(0.5 * log_variance), 0.0)
        x = mean.reshape(x.shape) + noise_scale[:, :, None] * noise
        x = apply_conditioning(x, conditions, action_dim)
        return (x, values), ((x, applied) if return_chain else None)

    x_start = apply_conditioning(initial_noise, conditions, action_dim)
    steps = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
    initial_values = jnp.zeros((batch,), initial_noise.dtype)
    (x, values), history = jax.lax.scan(reverse_step, (x_start, initial_values), (steps, step_noise[::-1]))
    if not return_chain:
        return PlannedTrajectories(x, values)
    chain, guidance = history
    return PlannedTrajectories(x, values, jnp.concatenate([x_start[None], chain], axis=0), guidance)


def best_plan(trajectories: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The highest-valued sample per condition, as the reference's policy takes the first after sorting by value.

    trajectories [..., N, H, D] and values [..., N] (N samples per condition) -> ([..., H, D], [...]).
    """
    best = jnp.argmax(values, axis=-1)
    chosen = jnp.take_along_axis(trajectories, best[..., None, None, None], axis=-3)[..., 0, :, :]
    return chosen, jnp.take_along_axis(values, best[..., None], axis=-1)[..., 0]
