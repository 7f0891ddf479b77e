"""Task conditioning shared by the imitation agents: the goal (or task id) is the last `goal_dims` entries of the
observation, and classifier-free guidance (Ho & Salimans 2022) can drop it.

Training with condition dropout p: each example keeps its goal with probability 1 - p; a dropped goal is zeroed and
a keep flag (the last entry of the condition) says which, so the one network learns both the conditional and the
unconditional model. Sampling with guidance scale w: eps = eps_uncond + w (eps_cond - eps_uncond); w = 1 is the
conditional model alone, w = 0 the unconditional one, w > 1 pushes the samples further toward the goal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_guidance(goal_dims: int, condition_dropout: float, guidance_scale: float, observation_dim: int) -> None:
    """Errors that name the --config flags: guidance needs a goal to drop, and the goal must fit the observation."""
    if goal_dims < 0 or goal_dims >= observation_dim and goal_dims > 0:
        raise ValueError(f"--config.goal_dims={goal_dims} must be between 0 and the observation's {observation_dim} "
                         "entries minus one (the goal is the observation's last goal_dims entries)")
    if goal_dims == 0 and (condition_dropout > 0 or guidance_scale != 1.0):
        raise ValueError(f"--config.condition_dropout={condition_dropout} / --config.guidance_scale={guidance_scale}: "
                         "classifier-free guidance drops the goal, so it needs --config.goal_dims > 0")


def condition_size(observation_dim: int, goal_dims: int) -> int:
    """Entries of one observation's condition: the observation, plus the keep flag when a goal can be dropped."""
    return observation_dim + (1 if goal_dims else 0)


def with_goal_kept(observations: jax.Array, goal_dims: int, keep: jax.Array | float) -> jax.Array:
    """[..., obs] -> [..., obs + 1]: the goal entries times keep (0 or 1, one per leading index or one for all) and
    the keep flag appended; the observations unchanged when goal_dims is 0."""
    if goal_dims == 0:
        return observations
    keep = jnp.broadcast_to(jnp.asarray(keep, observations.dtype), observations.shape[:-1])[..., None]
    state, goal = observations[..., :-goal_dims], observations[..., -goal_dims:]
    return jnp.concatenate([state, goal * keep, keep], axis=-1)


def keep_draws(keys: jax.Array, condition_dropout: float) -> jax.Array:
    """[B] keep flags (1.0 keep the goal, 0.0 drop it) from per-example keys."""
    return jax.vmap(lambda key: jax.random.bernoulli(key, 1.0 - condition_dropout))(keys).astype(jnp.float32)


def guided(eps_fn, guidance_scale: float):
    """eps_fn(x, t, condition_of) -> eps, with condition_of(keep) giving the condition for keep in {0, 1}: the
    conditional prediction when guidance_scale is 1 (one network call), else both in one call of twice the batch,
    mixed as eps_uncond + w (eps_cond - eps_uncond)."""

    def guided_eps(x, t, condition_of):
        if guidance_scale == 1.0:
            return eps_fn(x, t, condition_of(1.0))
        both = eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                      jnp.concatenate([condition_of(1.0), condition_of(0.0)]))
        conditional, unconditional = jnp.split(both, 2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return guided_eps
