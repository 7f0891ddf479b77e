"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (see test_data_parallel.py)."""

import importlib
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dql.agents import create_agent
from dql.data import d4rl
from dql.trainer import AXIS, build_train_chunk, make_mesh, train
from tests.conftest import tiny_config
from tests.helpers import write_d4rl_file


def _baseline_config(algo):
    config = importlib.import_module(f"experiments.configs.{algo}").get_config()
    config.update(dict(hidden_dims=(16, 16), steps=100))
    if algo == "cql":
        config.update(dict(lagrange=True, num_samples=3))
    if algo == "td3bc":
        config.policy_delay = 1  # every update moves the actor and the targets
    return config


def _compare_updates(algo, config, data, mesh, obs_dim, act_dim):
    """Three consecutive updates on one device (whole batch) and on four (a quarter each); largest differences."""
    key = jax.random.PRNGKey(3)
    stats = (data["observations"].mean(0), data["observations"].std(0))
    single = create_agent(algo, key, obs_dim, act_dim, [1.0, 1.0], config, observation_stats=stats)
    parallel = create_agent(algo, key, obs_dim, act_dim, [1.0, 1.0], config, axis_name=AXIS,
                            observation_stats=stats)
    update_single = jax.jit(lambda agent, batch: agent.update(batch))
    update_parallel = jax.jit(
        jax.shard_map(lambda agent, batch: agent.update(batch), mesh=mesh, in_specs=(P(), P(AXIS)),
                      out_specs=(P(), P()), check_vma=False)
    )
    metric_gap = 0.0
    for _ in range(3):  # consecutive updates: EMA, targets and optimiser states must agree too
        single, m_single = update_single(single, data)
        parallel, m_parallel = update_parallel(parallel, data)
        metric_gap = max(metric_gap, max(abs(float(m_single[k]) - float(m_parallel[k])) / max(1.0, abs(float(
            m_single[k]))) for k in m_single))
    leaves = zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(parallel))
    param_gap = max(float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))
                    for a, b in leaves)
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(single.actor.params))
    return {"metric_gap": metric_gap, "param_gap": param_gap, "param_scale": scale}


def main():
    assert jax.device_count() == 4, jax.devices()
    config = tiny_config(ema_start=0, ema_every=1, max_q_backup=True, num_q_backup_samples=3, grad_norm=1.0)
    obs_dim, act_dim, batch = 5, 2, 32
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (batch, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=batch).astype(np.float32),
        "next_observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "dones": (rng.random(batch) < 0.3).astype(np.float32),
    }
    mesh = make_mesh(4)
    report = {}
    for algo in ("dql", "bc", "diffusion_bc", "td3bc", "iql", "cql"):
        algo_config = config if algo == "dql" else _baseline_config(algo)
        report[algo] = _compare_updates(algo, algo_config, data, mesh, obs_dim, act_dim)
    parallel = create_agent("dql", jax.random.PRNGKey(3), obs_dim, act_dim, [1.0, 1.0], config, axis_name=AXIS)

    # The trainer's own compiled loop on 4 devices: each device samples its quarter of the batch.
    chunk = build_train_chunk(mesh, local_batch=8, length=5)
    agent, data_rng, metrics = chunk(parallel, jax.tree_util.tree_map(jnp.asarray, data), jax.random.PRNGKey(1))
    report["chunk_finite"] = bool(all(np.isfinite(np.asarray(v)).all() for v in metrics.values()))
    report["chunk_step"] = int(agent.step)

    # A run trained on 4 devices refuses to resume on 2: each device draws its own minibatch stream.
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/tiny.hdf5"
        write_d4rl_file(Path(path), obs_dim=3, act_dim=1)
        dataset = d4rl.read_hdf5(path)
        run_config = tiny_config(steps=10, save_every=10, eval_every=10, batch_size=16)
        train(run_config, dataset, f"{folder}/run", None)
        run_config.steps, run_config.num_devices = 20, 2
        try:
            train(run_config, dataset, f"{folder}/run", None)
            report["device_change"] = "accepted"
        except ValueError as error:
            report["device_change"] = str(error)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
