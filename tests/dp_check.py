"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (see test_data_parallel.py)."""

import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dql.agents import AGENTS, create_agent
from dql.agents.common import hook
from dql.configs import offline_algos
from dql.data import d4rl
from dql.parallel import DATA_AXIS as AXIS
from dql.parallel import build_train_chunk, make_layout, seed_slice
from dql.trainer import initial_state, train
from tests.helpers import small_config, write_d4rl_file


def _baseline_config(algo):
    overrides = {"steps": 100}
    if algo == "cql":
        overrides["lagrange"] = True
    if algo == "td3bc":
        overrides["policy_freq"] = 1  # every update moves the actor and the targets
    if algo == "diffusion_policy":
        # Diffuser's test sizes. At width 8 every GroupNorm group is one channel, and over the 2 positions left at the
        # U-Net's deepest level its variance can be tiny: the last-bit difference between a batch of 32 and one of 8
        # (other kernels) grows to 4e-5 in the output and 10% in the gradient norm. At width 16 over 8 steps it stays
        # at rounding.
        overrides.update(dim=16, pred_horizon=8)
    # Small widths matter beyond speed: IDQL's 256-wide LN_Resnet has gradient entries of ~1e-9 that summation order
    # alone changes, which Adam's first steps (g / (|g| + 1e-8)) turn into parameter gaps of ~3e-5; at width 16 they
    # stay below 1e-6.
    return small_config(algo, **overrides)


def _compare_updates(algo, config, data, mesh, obs_dim, act_dim):
    """Three consecutive updates on one device (whole batch) and on four (a quarter each); largest differences."""
    key = jax.random.PRNGKey(3)
    # An agent with its own statistics hook (Diffuser's normaliser) gets None (the identity); the others (mean, std).
    stats = None if hook(AGENTS[algo][0], "dataset_statistics") else (data["observations"].mean(0),
                                                                       data["observations"].std(0))
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
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(single)
                if jnp.issubdtype(jnp.result_type(a), jnp.floating))
    return {"metric_gap": metric_gap, "param_gap": param_gap, "param_scale": scale}


def _chunk_result(config, dataset, num_devices, num_seeds, parallel, seed_index):
    """Seed `seed_index`'s agent and metrics after 5 steps of the trainer's compiled chunk under a layout."""
    layout = make_layout(num_devices, num_seeds, parallel, int(config.batch_size))
    agents, rngs = initial_state(config, dataset, layout)
    data = jax.tree_util.tree_map(jnp.asarray, dataset.arrays())
    agents, rngs, metrics = build_train_chunk(layout, 5)(agents, data, rngs)
    metrics = {key: np.asarray(value)[:, seed_index] for key, value in metrics.items()}
    return seed_slice(jax.device_get(agents), seed_index), metrics


def _gap(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _compare_layouts(data):
    """Seeds and devices compose: a seed trained among others, with the batch split over 4 devices or with the
    seeds split over them, equals that seed alone with the same data width."""
    with tempfile.TemporaryDirectory() as folder:
        write_d4rl_file(Path(folder) / "tiny.hdf5", obs_dim=3, act_dim=1)
        dataset = d4rl.read_hdf5(f"{folder}/tiny.hdf5")
    config = small_config(batch_size=16, seed=5)
    # seed 6 = second seed of a program starting at 5
    among_data, m1 = _chunk_result(config, dataset, 4, 2, "data", 1)
    config_alone = small_config(batch_size=16, seed=6)
    alone_data, m2 = _chunk_result(config_alone, dataset, 4, 1, "data", 0)
    # 4 seeds split over 4 devices: seed 7 (index 2) trains on its whole batch, as alone on one device
    among_split, m3 = _chunk_result(small_config(batch_size=16, seed=5), dataset, 4, 4, "seeds", 2)
    alone_one, m4 = _chunk_result(small_config(batch_size=16, seed=7), dataset, 1, 1, "data", 0)
    return {
        "data_param_gap": _gap(among_data, alone_data), "data_metric_gap": _gap(m1, m2),
        "seeds_param_gap": _gap(among_split, alone_one), "seeds_metric_gap": _gap(m3, m4),
        "seeds_vs_data_gap": _gap(among_split, alone_data), "step": int(among_split.step),
    }


def main():
    assert jax.device_count() == 4, jax.devices()
    config = small_config(ema_start=0, ema_every=1, max_q_backup=True, num_q_backup_samples=3, grad_norm=1.0)
    obs_dim, act_dim, batch = 5, 2, 32
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (batch, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=batch).astype(np.float32),
        "next_observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "dones": (rng.random(batch) < 0.3).astype(np.float32),
        "next_actions": rng.uniform(-1, 1, (batch, act_dim)).astype(np.float32),  # ReBRAC's critic penalty
    }
    mesh = make_layout(4).mesh
    report = {}
    # Agents that train on windows of episodes (their training_arrays hook: Diffuser, Diffusion Policy) get windows
    # of their own length.
    def windows(length):
        return {"observations": rng.normal(size=(batch, length, obs_dim)).astype(np.float32),
                "actions": rng.uniform(-1, 1, (batch, length, act_dim)).astype(np.float32),
                "returns": rng.normal(size=(batch, length)).astype(np.float32)}

    for algo in offline_algos():  # every registered algorithm that trains on data
        algo_config = config if algo == "dql" else _baseline_config(algo)
        length = algo_config.get("pred_horizon", algo_config.get("horizon"))
        batch_of = windows(length) if hook(AGENTS[algo][0], "training_arrays") else data
        report[algo] = _compare_updates(algo, algo_config, batch_of, mesh, obs_dim, act_dim)
    report["layouts"] = _compare_layouts(data)

    # A run trained on 4 devices refuses to resume on 2: each device draws its own minibatch stream.
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/tiny.hdf5"
        write_d4rl_file(Path(path), obs_dim=3, act_dim=1)
        dataset = d4rl.read_hdf5(path)
        run_config = small_config(steps=10, save_every=10, eval_every=10, batch_size=16)
        train(run_config, dataset, f"{folder}/run", None)
        # As when --config.num_devices=0 (all devices) resumes on a machine with fewer devices: same config.
        run_config.steps, run_config.num_devices = 20, 2
        saved = json.loads(Path(f"{folder}/run/config.json").read_text())
        saved.update(steps=20, num_devices=2)
        Path(f"{folder}/run/config.json").write_text(json.dumps(saved))
        try:
            train(run_config, dataset, f"{folder}/run", None)
            report["device_change"] = "accepted"
        except ValueError as error:
            report["device_change"] = str(error)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
