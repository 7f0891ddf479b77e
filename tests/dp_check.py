"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (see test_data_parallel.py)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dql.agents import create_agent
from dql.trainer import AXIS, build_train_chunk, make_mesh
from tests.conftest import tiny_config


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
    key = jax.random.PRNGKey(3)
    single = create_agent("dql", key, obs_dim, act_dim, [1.0, 1.0], config)
    parallel = create_agent("dql", key, obs_dim, act_dim, [1.0, 1.0], config, axis_name=AXIS)
    mesh = make_mesh(4)

    update_single = jax.jit(lambda agent, batch: agent.update(batch))
    update_parallel = jax.jit(
        jax.shard_map(lambda agent, batch: agent.update(batch), mesh=mesh, in_specs=(P(), P(AXIS)),
                      out_specs=(P(), P()), check_vma=False)
    )
    report = {"metrics": []}
    for _ in range(3):  # three consecutive updates: the EMA, targets and optimiser states must agree too
        single, m_single = update_single(single, data)
        parallel, m_parallel = update_parallel(parallel, data)
        report["metrics"].append({k: [float(m_single[k]), float(m_parallel[k])] for k in m_single})
    leaves_single = jax.tree_util.tree_leaves(single)
    leaves_parallel = jax.tree_util.tree_leaves(parallel)
    report["max_abs_diff"] = max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        for a, b in zip(leaves_single, leaves_parallel)
    )
    report["max_abs_param"] = max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(single.actor.params))

    # The trainer's own compiled loop on 4 devices: each device samples its quarter of the batch.
    chunk = build_train_chunk(mesh, local_batch=8, length=5)
    agent, data_rng, metrics = chunk(parallel, jax.tree_util.tree_map(jnp.asarray, data), jax.random.PRNGKey(1))
    report["chunk_finite"] = bool(all(np.isfinite(np.asarray(v)).all() for v in metrics.values()))
    report["chunk_step"] = int(agent.step)

    # A run trained on 4 devices refuses to resume on 2: each device draws its own minibatch stream.
    import sys
    import tempfile

    from dql.data import d4rl
    from dql.trainer import train
    from tests.helpers import write_d4rl_file

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
    print("REPORT " + json.dumps(report), file=sys.stdout)


if __name__ == "__main__":
    main()
