"""Behaviour policies for generated datasets: SAC actors saved as small .npz parameter files with their metadata.

A file holds the actor's parameters (flattened, keys joined by "/") and a JSON string `meta` (env id, network
sizes, action bound, training step, measured returns). `BehaviourPolicy` acts with it on a batch of observations in
one jitted call: sampled actions (the behaviour of the medium and expert datasets, as D4RL's were sampled from
stochastic SAC policies) or the mode.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dql.data.dataset import DatasetError
from dql.distributions import tanh_gaussian_from_noise
from dql.nets import GaussianPolicy


def save_actor(path: str | Path, actor_params, meta: dict) -> Path:
    """Write the actor's parameters and `meta` (needs hidden_dims, activation, max_action, env_id) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = traverse_util.flatten_dict(jax.device_get(actor_params), sep="/")
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps(meta, sort_keys=True)),
             **{f"param:{key}": np.asarray(value) for key, value in flat.items()})
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load_actor(path: str | Path) -> tuple[dict, dict]:
    """(actor parameters, meta) from a file written by save_actor."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            flat = {key[len("param:"):]: data[key] for key in data.files if key.startswith("param:")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: not a behaviour-policy file ({error})") from error
    return traverse_util.unflatten_dict(flat, sep="/"), meta


class BehaviourPolicy:
    """A saved SAC actor acting on batches: policy(observations [B, obs_dim], key) -> actions [B, act_dim]."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.params, self.meta = load_actor(self.path)
        self.max_action = jnp.asarray(self.meta["max_action"], jnp.float32)
        net = GaussianPolicy(len(self.meta["max_action"]), tuple(self.meta["hidden_dims"]), self.meta["activation"])

        def act(params, observations, key, sample):
            mean, log_std = net.apply(params, observations)
            noise = jax.random.normal(key, mean.shape) * sample
            actions, _ = tanh_gaussian_from_noise(mean, log_std, noise)
            return actions * self.max_action

        self._act = jax.jit(act)

    def __call__(self, observations: np.ndarray, key: jax.Array, sample: bool = True) -> np.ndarray:
        return np.asarray(self._act(self.params, jnp.asarray(observations, jnp.float32), key, float(sample)))
