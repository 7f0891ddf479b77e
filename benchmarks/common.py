"""Shared setup of the benchmarks: a config with overrides, random device-resident data, device facts."""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags

from dql.agents import AGENTS
from dql.agents.common import hook
from dql.configs import resolve
from dql.data import Dataset

# The flags every benchmark shares: which agent, at what sizes, with which config overrides.
flags.DEFINE_string("algo", "dql", "Algorithm.")
flags.DEFINE_integer("obs_dim", 17, "Observation size.")
flags.DEFINE_integer("act_dim", 6, "Action size.")
flags.DEFINE_string("row", None, "Take the settings of this dataset's row (e.g. gym:PointMaze_UMaze-v3/waypoint); "
                    "no data is read.")
flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE, e.g. --set=max_q_backup=True.")


def config_for(algo: str, overrides: list[str], row: str | None = None):
    """The algorithm's config (with a dataset's row when given) and KEY=VALUE overrides (values parsed as Python
    literals when they can be)."""
    import ast

    config = resolve(algo, row)
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


def benchmark_arrays(algo: str, config, num_rows: int, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """What the loop samples minibatches from for `algo`: random transitions, or for an agent with its own layout
    (Diffuser's trajectory windows) that layout of random episodes of 1,000 rows."""
    arrays = random_transitions(num_rows, obs_dim, act_dim)
    layout = hook(AGENTS[algo][0], "training_arrays")
    if layout is None:
        return arrays
    dones = np.zeros(num_rows, np.float32)
    dones[999::1000] = 1.0
    next_observations = np.roll(arrays["observations"], -1, axis=0)  # each row's successor is the next row
    dataset = Dataset(observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
                      next_observations=next_observations, dones=dones, name="random", source="benchmark",
                      episode_returns=np.zeros(1), max_action=np.ones(act_dim, np.float32))
    return layout(dataset, config)


def device_facts() -> dict:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "jax_version": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
