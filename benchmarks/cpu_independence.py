"""Does this CPU compute the same bits as another? A fingerprint of SAC's training step, and what the settings of
dql.reproducible cost; prints JSON.

    python -m benchmarks.cpu_independence [--updates=200] [--settings=both|cpu_independent|default]

For each setting it starts a child process (XLA reads its flags at start), builds SAC at the generated datasets'
sizes (Hopper: 11 observations, 3 actions, 2 x 256, batch 256), runs --updates updates on fixed random minibatches
in compiled chunks of 50 and one exploration action per chunk, and prints the sha256 of every parameter, optimiser
moment and action, with the updates per second. Run it on two machines (or on one under
`qemu-x86_64 -cpu EPYC-Milan python -m ...`, which presents a Zen 3 without AVX-512) and compare the digests: with
`cpu_independent` they must agree; `default` shows what the settings guard against. docs/datasets.md has the
figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("updates", 200, "SAC updates to fingerprint (a multiple of 50).")
flags.DEFINE_enum("settings", "both", ["both", "cpu_independent", "default"], "Which process settings to run.")
flags.DEFINE_bool("child", False, "Internal: run the fingerprint in this process.")
FLAGS = flags.FLAGS
CHUNK = 50


def fingerprint(updates: int) -> dict:
    import jax
    import numpy as np

    from dql.agents import create_agent
    from dql.configs.sac import get_config
    from dql.online import _explore, _update_chunk

    config = get_config()
    agent = create_agent("sac", jax.random.PRNGKey(0), 11, 3, np.ones(3, np.float32), config)
    rng = np.random.default_rng(0)
    digest = hashlib.sha256()
    elapsed = 0.0
    for chunk in range(updates // CHUNK):
        shape = (CHUNK, int(config.batch_size))
        batch = {"observations": rng.normal(size=(*shape, 11)).astype(np.float32),
                 "actions": rng.uniform(-1, 1, (*shape, 3)).astype(np.float32),
                 "rewards": rng.normal(size=shape).astype(np.float32),
                 "next_observations": rng.normal(size=(*shape, 11)).astype(np.float32),
                 "dones": (rng.uniform(size=shape) < 0.1).astype(np.float32)}
        start = time.perf_counter()
        agent, _ = _update_chunk(agent, batch)
        action = np.asarray(_explore(agent, batch["observations"][0, 0], jax.random.PRNGKey(chunk)))
        if chunk > 0:  # the first chunk compiles
            elapsed += time.perf_counter() - start
        digest.update(action.tobytes())
    for leaf in jax.tree_util.tree_leaves(agent):
        digest.update(np.asarray(leaf).tobytes())
    timed = updates - CHUNK
    return {"sha256": digest.hexdigest(), "updates": updates,
            "updates_per_s": round(timed / elapsed, 1) if timed > 0 else None}


def run_child(settings: str) -> dict:
    from dql import reproducible
    from dql.data.gym_datasets import cpu_description

    env = reproducible.subprocess_env() if settings == "cpu_independent" else dict(os.environ)
    command = [sys.executable, "-m", "benchmarks.cpu_independence", "--child", f"--updates={FLAGS.updates}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the {settings} child failed:\n{result.stderr[-2000:]}")
    return {"settings": settings, "cpu": cpu_description(), **json.loads(result.stdout.strip().splitlines()[-1])}


def main(argv):
    del argv
    if FLAGS.updates < CHUNK or FLAGS.updates % CHUNK:
        raise app.UsageError(f"--updates must be a positive multiple of {CHUNK}")
    if FLAGS.child:
        print(json.dumps(fingerprint(FLAGS.updates)))
        return
    settings = ["cpu_independent", "default"] if FLAGS.settings == "both" else [FLAGS.settings]
    print(json.dumps({"benchmark": "cpu_independence", "results": [run_child(s) for s in settings]}, indent=1))


if __name__ == "__main__":
    app.run(main)
