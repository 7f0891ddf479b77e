"""Shared setup of the benchmarks: a config with overrides, random device-resident data, device facts."""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags

from dql.configs import get_config

# The flags every benchmark shares: which agent, at what sizes, with which config overrides.
flags.DEFINE_string("algo", "dql", "Algorithm.")
flags.DEFINE_integer("obs_dim", 17, "Observation size.")
flags.DEFINE_integer("act_dim", 6, "Action size.")
flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE, e.g. --set=max_q_backup=True.")


def config_for(algo: str, overrides: list[str]):
    """The algorithm's base config with KEY=VALUE overrides (values parsed as Python literals when they can be)."""
    import ast

    config = get_config(algo)
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        config[key] = parsed
    return config


def random_transitions(num_rows: int, obs_dim: int, act_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(num_rows, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (num_rows, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=num_rows).astype(np.float32),
        "next_observations": rng.normal(size=(num_rows, obs_dim)).astype(np.float32),
        "dones": (rng.random(num_rows) < 0.01).astype(np.float32),
        "next_actions": rng.uniform(-1, 1, (num_rows, act_dim)).astype(np.float32),  # ReBRAC's critic penalty
    }


def device_facts() -> dict:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "jax_version": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
