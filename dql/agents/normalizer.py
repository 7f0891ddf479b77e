"""The per-dimension affine normaliser of the trajectory and chunk models (Diffuser, Diffusion Policy), held in the
agent as arrays so that a restored policy normalises as the trained one did: x -> (x - shift) / scale for the
observations and the actions, from the dataset (the trainer's `dataset_statistics` hook)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("gaussian", "limits")
STAT_KEYS = ("observation_shift", "observation_scale", "action_shift", "action_scale")


def statistics(observations: np.ndarray, actions: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Per-dimension (shift, scale). Gaussian: (mean, std); limits: (centre, half range), which maps [min, max]
    onto [-1, 1]. A constant dimension gets scale 1 (Diffuser would divide by 0; its SafeLimitsNormalizer widens
    such a range by 1 on each side, which is the same)."""
    stats = {}
    for name, x in (("observation", observations), ("action", actions)):
        x = np.asarray(x, np.float64)
        if kind == "gaussian":
            shift, scale = x.mean(axis=0), x.std(axis=0)
        else:
            low, high = x.min(axis=0), x.max(axis=0)
            shift, scale = (high + low) / 2, (high - low) / 2
        stats[f"{name}_shift"] = shift.astype(np.float32)
        stats[f"{name}_scale"] = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    return stats


def from_statistics(stats, observation_dim: int, action_dim: int, owner: str) -> dict[str, jax.Array]:
    """The agent's normaliser from `statistics`' dict; None (a template to restore into) gives the identity.
    `owner` names the agent class in the error for anything else."""
    if stats is None:
        stats = {"observation_shift": np.zeros(observation_dim), "observation_scale": np.ones(observation_dim),
                 "action_shift": np.zeros(action_dim), "action_scale": np.ones(action_dim)}
    if not isinstance(stats, dict) or set(stats) != set(STAT_KEYS):
        raise ValueError(f"{owner}.create takes the normaliser of {owner}.dataset_statistics "
                         f"(a dict of {', '.join(STAT_KEYS)})")
    normalizer = {key: jnp.asarray(value, jnp.float32) for key, value in stats.items()}
    if normalizer["observation_shift"].shape != (observation_dim,):
        raise ValueError(f"the normaliser covers {normalizer['observation_shift'].shape[0]} observation entries, "
                         f"{owner} models {observation_dim}")
    return normalizer


def normalize(normalizer: dict[str, jax.Array], x: jax.Array, name: str) -> jax.Array:
    """name: 'observation' or 'action'."""
    return (x - normalizer[f"{name}_shift"]) / normalizer[f"{name}_scale"]


def unnormalize(normalizer: dict[str, jax.Array], x: jax.Array, name: str, clip: bool) -> jax.Array:
    """The inverse map; clip: to [-1, 1] first (the limits normaliser's range, as Diffuser and Diffusion Policy do
    before mapping back)."""
    if clip:
        x = jnp.clip(x, -1.0, 1.0)
    return x * normalizer[f"{name}_scale"] + normalizer[f"{name}_shift"]
