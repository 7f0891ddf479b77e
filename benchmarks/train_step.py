"""Training throughput of one algorithm's compiled update loop; prints one JSON line.

    python -m benchmarks.train_step --algo=dql --obs_dim=17 --act_dim=6 --batch_size=256 [--num_seeds=S]

It times the trainer's own dispatch (K updates of S seeds under lax.scan and vmap, minibatches drawn on device)
after compilation, reports the compile time separately, steps/s of the program and seed-steps/s (S x steps/s), and
the FLOPs of one update from XLA's cost analysis.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import benchmark_arrays, config_for, device_facts
from dql.agents import create_agent
from dql.data import sample_batch
from dql.parallel import build_train_chunk, make_layout, put

flags.DEFINE_integer("batch_size", 256, "Global minibatch size.")
flags.DEFINE_integer("steps_per_dispatch", 1000, "Updates per compiled call.")
flags.DEFINE_integer("repeats", 3, "Timed dispatches (after one warm-up dispatch).")
flags.DEFINE_integer("num_rows", 100_000, "Rows of the synthetic device-resident dataset.")
flags.DEFINE_integer("num_devices", 0, "Devices to lay the program over (0: all).")
flags.DEFINE_integer("num_seeds", 1, "Seeds trained together in the one compiled program (vmapped).")
flags.DEFINE_enum("parallel", "data", ["data", "seeds"], "Split each batch over the devices, or the seeds.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = config_for(FLAGS.algo, FLAGS.set, FLAGS.row)
    layout = make_layout(FLAGS.num_devices, FLAGS.num_seeds, FLAGS.parallel, FLAGS.batch_size)
    arrays = benchmark_arrays(FLAGS.algo, config, FLAGS.num_rows, FLAGS.obs_dim, FLAGS.act_dim)
    data = put(arrays, layout.replicated)
    max_action = [1.0] * FLAGS.act_dim

    def make(key):
        return create_agent(FLAGS.algo, key, FLAGS.obs_dim, FLAGS.act_dim, max_action, config, layout.agent_axis)

    keys = jax.random.split(jax.random.PRNGKey(0), FLAGS.num_seeds)
    agent = put(jax.device_get(jax.jit(jax.vmap(make))(keys)), layout.seed_sharding)
    rng = put(np.asarray(jax.random.split(jax.random.PRNGKey(1), FLAGS.num_seeds)), layout.seed_sharding)

    start = time.perf_counter()
    chunk = build_train_chunk(layout, FLAGS.steps_per_dispatch)
    compiled = chunk.lower(agent, data, rng).compile()
    compile_s = time.perf_counter() - start

    # FLOPs of one update on the global batch, from XLA's cost analysis of the single-device update.
    single = create_agent(FLAGS.algo, jax.random.PRNGKey(0), FLAGS.obs_dim, FLAGS.act_dim, max_action, config)
    batch = sample_batch(jax.device_put(arrays, jax.devices()[0]), jax.random.PRNGKey(2), FLAGS.batch_size)
    cost = jax.jit(lambda a, b: a.update(b)).lower(single, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_step = float(cost.get("flops", float("nan")))

    agent, rng, metrics = compiled(agent, data, rng)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        agent, rng, metrics = compiled(agent, data, rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    finite = all(bool(np.isfinite(np.asarray(v)).all()) for v in metrics.values())
    seconds = float(np.median(times))
    steps_per_s = FLAGS.steps_per_dispatch / seconds
    print(json.dumps({
        "benchmark": "train_step",
        "algo": FLAGS.algo,
        "obs_dim": FLAGS.obs_dim,
        "act_dim": FLAGS.act_dim,
        "batch_size": FLAGS.batch_size,
        "steps_per_dispatch": FLAGS.steps_per_dispatch,
        "num_seeds": FLAGS.num_seeds,
        "parallel": FLAGS.parallel,
        "steps_per_s": round(steps_per_s, 2),
        "seed_steps_per_s": round(FLAGS.num_seeds * steps_per_s, 2),
        "steps_per_s_each_repeat": [round(FLAGS.steps_per_dispatch / t, 2) for t in times],
        "compile_s": round(compile_s, 2),
        "flops_per_step": flops_per_step,
        "gflops_per_s": round(FLAGS.num_seeds * flops_per_step * steps_per_s / 1e9, 2),
        "metrics_finite": finite,
        "row": FLAGS.row,
        "overrides": FLAGS.set,
        **device_facts(),
    }))


if __name__ == "__main__":
    app.run(main)
