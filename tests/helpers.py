"""Small D4RL-format files for the tests, written with h5py exactly as D4RL lays them out."""

from __future__ import annotations

import functools
from pathlib import Path

import h5py
import numpy as np

# Each algorithm's own knobs at tiny sizes, so that a test compiles and runs in seconds; the rest of its config is
# the real one (dql/configs/ALGO.py).
SMALL_SIZES = {
    "dql": dict(hidden_dims=(32, 32), batch_size=32, steps=40, eval_every=20, save_every=20,
                num_action_candidates=8, ema_start=5),
    "cql": dict(num_samples=3),
    "fql": dict(flow_steps=3),
    "edp": dict(diffusion_steps=40, dpm_steps=3, num_action_candidates=4),
    "idql": dict(actor_hidden_dim=16, actor_num_blocks=1, time_dim=8, num_samples=4),
    "diffuser": dict(horizon=8, diffusion_steps=4, dim=16, dim_mults=(1, 2), ema_start=0, ema_every=1,
                     use_value_guide=False),
    "diffusion_policy": dict(obs_horizon=2, pred_horizon=4, action_horizon=2, diffusion_steps=4, sample_steps=2,
                             dim=8, dim_mults=(1, 2), warmup_steps=0),
}


def small_config(algo: str = "dql", **overrides):
    """The real config of `algo` with tiny networks and a short loop (SMALL_SIZES), then `overrides`: the one small
    config of the test suite."""
    from dql.configs import get_config

    config = get_config(algo)
    config.update(dict(hidden_dims=(16, 16), steps=20, batch_size=16, steps_per_dispatch=10, eval_every=10,
                       save_every=10, eval_episodes=2))
    config.update(SMALL_SIZES.get(algo, {}))
    config.seed = 0
    config.update(overrides)
    return config


def write_d4rl_file(path: Path, episodes=((5, False), (4, True), (3, False)), obs_dim=3, act_dim=1,
                    next_observations=False, attrs=None, seed=0, act_scale=1.0, **replace) -> dict:
    """Episodes given as (length, ends_in_terminal); those not ending in a terminal end in a timeout.

    Observation rows are numbered so tests can check which successor each transition got.
    """
    rng = np.random.default_rng(seed)
    rows = sum(length for length, _ in episodes)
    observations = np.zeros((rows, obs_dim), np.float32)
    observations[:, 0] = np.arange(rows)
    observations[:, 1:] = rng.normal(size=(rows, obs_dim - 1))
    terminals = np.zeros(rows, bool)
    timeouts = np.zeros(rows, bool)
    end = 0
    for length, terminal in episodes:
        end += length
        (terminals if terminal else timeouts)[end - 1] = True
    arrays = {
        "observations": observations,
        "actions": (act_scale * rng.uniform(-1, 1, (rows, act_dim))).astype(np.float32),
        "rewards": rng.normal(size=rows).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    if next_observations:
        arrays["next_observations"] = observations + 1000.0
    arrays.update(replace)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return arrays


@functools.lru_cache(maxsize=None)
def _chunk(batch_size: int, length: int):
    from dql.parallel import build_train_chunk, make_layout

    return build_train_chunk(make_layout(num_devices=1, num_seeds=1, parallel="data", batch_size=batch_size), length)


# The suite compiles at LLVM optimisation level 0 (tests/conftest.py); a chunk of this many updates or more runs
# long enough that full optimisation (twice as fast to run, slower to compile) pays for itself.
LONG_CHUNK = 1000


def compiled_for(function, length: int, *args):
    """The jitted `function` compiled for `args`, at full optimisation when it runs `length` >= LONG_CHUNK updates."""
    if length < LONG_CHUNK:
        return function
    return function.lower(*args).compile({"xla_backend_optimization_level": 3})


def run_chunk(agent, data: dict, rng, batch_size: int, length: int):
    """`length` updates of one agent through the trainer's compiled chunk (a program of one seed on one device);
    returns (agent, rng, metrics of shape [length])."""
    import jax
    import jax.numpy as jnp

    chunk = _chunk(batch_size, length)
    stacked = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], agent)
    args = (stacked, jax.tree_util.tree_map(jnp.asarray, data), jnp.asarray(rng)[None])
    agents, rngs, metrics = compiled_for(chunk, length, *args)(*args)
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)  # noqa: E731
    return first(agents), rngs[0], {key: value[:, 0] for key, value in metrics.items()}


def config_of(algo: str, **overrides):
    """The algorithm's own config (dql/configs/ALGO.py) with `overrides`, each a key it has."""
    from dql.configs import resolve

    return resolve(algo, None, overrides=overrides)


def bandit_agent(algo: str, config, axis_name=None):
    """The agent for the 2-D bandit (1-D state, 2-D action), built in one compiled call (op by op takes seconds)."""
    import jax

    from dql.agents import create_agent

    return jax.jit(lambda key: create_agent(algo, key, 1, 2, [1.0, 1.0], config, axis_name))(jax.random.PRNGKey(0))


def train_on_bandit(algo: str, data: dict, config):
    """config.steps updates of batch 128 on the bandit's data; (agent, metrics)."""
    import jax

    agent, _, metrics = run_chunk(bandit_agent(algo, config, "data"), data, jax.random.PRNGKey(1), 128, config.steps)
    return agent, metrics


def die_after_saves(monkeypatch, count: int = 1):
    """Interrupt training (as a crash or a preemption would) right after the `count`-th checkpoint of any seed is
    written; returns the real Checkpoints.save, to put back with monkeypatch.setattr."""
    from dql.checkpoint import Checkpoints

    original_save = Checkpoints.save
    saves = []

    def save_then_die(self, step, state, meta):
        original_save(self, step, state, meta)
        saves.append(step)
        if len(saves) == count:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", save_then_die)
    return original_save


def random_batch(size: int, obs_dim: int, act_dim: int, action_bound: float = 1.0, seed: int = 0) -> dict:
    """A float32 minibatch of random transitions (actions uniform in +-action_bound, no terminals)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    return {"observations": jnp.asarray(rng.normal(size=(size, obs_dim)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-action_bound, action_bound, (size, act_dim)), jnp.float32),
            "rewards": jnp.asarray(rng.normal(size=size), jnp.float32),
            "next_observations": jnp.asarray(rng.normal(size=(size, obs_dim)), jnp.float32),
            "dones": jnp.zeros(size, jnp.float32)}


def same_leaves(a, b) -> bool:
    """Whether two pytrees hold bit-identical leaves."""
    import jax

    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def read_hdf5(path) -> tuple[dict, dict]:
    """Every dataset of an hdf5 file by its path inside the file ('infos/goal'), and the file's attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
        return arrays, dict(f.attrs)
