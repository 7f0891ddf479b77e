"""Latency of one action selection of any algorithm (for DQL: N candidates through the T-step chain, softmax over
target Q); JSON line.

    python -m benchmarks.act_latency --obs_dim=17 --act_dim=6

Each call is what an evaluation step or a deployed policy does: host observations in, host actions out. For
Diffuser that is one plan (its `sample_actions` replans); a maze episode plans once and then only runs its PD law.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import config_for, device_facts
from dql.agents import create_agent

flags.DEFINE_list("batch_sizes", ["1", "10"], "States per call.")
flags.DEFINE_integer("calls", 300, "Timed calls per batch size (after 20 warm-up calls).")
FLAGS = flags.FLAGS
# The config keys that set an algorithm's cost of acting, reported with the latencies where the algorithm has them.
SELECTION_KEYS = ("num_action_candidates", "num_samples", "selection", "diffusion_steps", "sampler", "dpm_steps",
                  "flow_steps", "horizon", "num_plan_samples", "use_value_guide", "n_guide_steps", "dim_mults",
                  "control", "sampler", "sample_steps", "pred_horizon", "action_horizon", "dim")


def main(argv):
    del argv
    config = config_for(FLAGS.algo, FLAGS.set, FLAGS.row)
    agent = create_agent(FLAGS.algo, jax.random.PRNGKey(0), FLAGS.obs_dim, FLAGS.act_dim, [1.0] * FLAGS.act_dim,
                         config)
    act = jax.jit(lambda agent, observations, key: agent.sample_actions(observations, key))
    rng = np.random.default_rng(0)
    results = {}
    for batch in (int(b) for b in FLAGS.batch_sizes):
        observations = [rng.normal(size=(batch, FLAGS.obs_dim)).astype(np.float32) for _ in range(8)]
        for i in range(20):
            np.asarray(act(agent, observations[i % 8], jax.random.PRNGKey(i)))
        keys = [jax.random.PRNGKey(i) for i in range(FLAGS.calls)]
        times = []
        for i in range(FLAGS.calls):
            start = time.perf_counter()
            actions = np.asarray(act(agent, observations[i % 8], keys[i]))
            times.append(time.perf_counter() - start)
        assert actions.shape == (batch, FLAGS.act_dim)
        times_ms = np.array(times) * 1e3
        results[f"batch_{batch}"] = {
            "median_ms": round(float(np.median(times_ms)), 4),
            "p90_ms": round(float(np.percentile(times_ms, 90)), 4),
            "min_ms": round(float(times_ms.min()), 4),
        }
    print(json.dumps({
        "benchmark": "act_latency",
        "algo": FLAGS.algo,
        "obs_dim": FLAGS.obs_dim,
        "act_dim": FLAGS.act_dim,
        "settings": {key: config[key] for key in SELECTION_KEYS if key in config},
        **results,
        "row": FLAGS.row,
        "overrides": FLAGS.set,
        **device_facts(),
    }))


if __name__ == "__main__":
    app.run(main)
