"""Does this CPU compute the same bits as another? A fingerprint of SAC's training step, and what the settings of
dql.reproducible cost; prints JSON.

    python -m benchmarks.cpu_independence [--updates=200] [--settings=both|cpu_independent|default]
    python -m benchmarks.cpu_independence --replay_steps=6000 [--settings=...]

For each setting it starts a child process (XLA reads its flags at start), builds SAC at the generated datasets'
sizes (Hopper: 11 observations, 3 actions, 2 x 256, batch 256), runs --updates updates on fixed random minibatches
in compiled chunks of 50 and one exploration action per chunk, and prints the sha256 of every parameter, optimiser
moment and action, with the updates per second. Run it on two machines (or on one with
`--under="qemu-x86_64 -cpu EPYC-Milan"`, which runs the children on an emulated Zen 3 without AVX-512; qemu-user runs
what a process starts natively, so wrapping this command in qemu would not do) and compare the digests: with
`cpu_independent` they must agree; `default` shows what the settings guard against. Each child reports the widest
extension CPUID gave it. docs/datasets.md has the figures.

With --replay_steps=K the child instead re-runs the seeded SAC run behind `gym:Hopper-v5/full-replay` (the shipped
expert's config: 5,000 random steps, then one update per step in chunks of 50) to step K and prints the sha256 of
the K buffer rows; where that file is in the dataset cache, the sha256 of its first K rows is printed beside it.
Equal digests mean this CPU makes the first K rows of the file: a check of the tier itself that takes a minute at
K = 6,000, where the whole file (125,000 steps) takes 30 (docs/datasets.md records the file's digests, for a machine
without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("updates", 200, "SAC updates to fingerprint (a multiple of 50).")
flags.DEFINE_enum("settings", "both", ["both", "cpu_independent", "default"], "Which process settings to run.")
flags.DEFINE_integer("replay_steps", 0, "Instead: re-run full-replay's SAC to this step and hash the rows.")
flags.DEFINE_string("under", "", "A command the children run under, e.g. \"qemu-x86_64 -cpu EPYC-Milan\".")
flags.DEFINE_bool("child", False, "Internal: run the fingerprint in this process.")
FLAGS = flags.FLAGS
CHUNK = 50
REPLAY_ENV, REPLAY_LEVEL = "Hopper-v5", "full-replay"
# The rows a replay tier's file holds, as the file stores them (timeouts left out: the file marks its last row).
ROW_KEYS = (("observations", "<f4"), ("actions", "<f4"), ("rewards", "<f4"), ("next_observations", "<f4"),
            ("terminals", "|b1"))


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


def cpuid_widest() -> str:
    """The widest vector extension that CPUID reports to this process (numpy's run-time dispatch asks it): unlike
    /proc/cpuinfo, this is what an emulator such as qemu presents, and what XLA and oneDNN pick their kernels by."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return next((name.lower() for name in ("AVX512F", "AVX2", "AVX") if features.get(name)), "none")


def rows_sha256(arrays, rows: int) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for key, dtype in ROW_KEYS:
        digest.update(np.ascontiguousarray(np.asarray(arrays[key][:rows]), dtype=dtype).tobytes())
    return digest.hexdigest()


def replay_fingerprint(steps: int) -> dict:
    from dql.data.gym_datasets import REPLAY_UNTIL
    from dql.online import train_online
    from dql.policy_training import shipped_sac_run

    config = shipped_sac_run(REPLAY_ENV, REPLAY_UNTIL[REPLAY_LEVEL])[0]
    start = time.perf_counter()
    _, buffer, _ = train_online(config, REPLAY_ENV, None, stop_at=steps, verbose=False)
    return {"replay_steps": steps, "sha256": rows_sha256(buffer.contents(), steps),
            "wall_s": round(time.perf_counter() - start, 1)}


def cached_file_rows(steps: int) -> dict:
    """The sha256 of the cached full-replay file's first `steps` rows, or why there is none."""
    import h5py

    from dql.data.gym_datasets import DEFAULT_SEED, dataset_path, parse_spec

    env_id, level, transitions = parse_spec(f"gym:{REPLAY_ENV}/{REPLAY_LEVEL}")
    path = dataset_path(env_id, level, transitions, DEFAULT_SEED)
    if not path.exists():
        return {"file": str(path), "rows_sha256": None, "note": "not in the cache: compare with the digests in docs/datasets.md"}
    with h5py.File(path, "r") as file:
        available = len(file["rewards"])
        if steps > available:
            sys.exit(f"error: --replay_steps={steps} is past the {available} rows of {path}")
        return {"file": str(path), "rows_sha256": rows_sha256(file, steps),
                "cpu_independent": bool(file.attrs.get("cpu_independent", False))}


def run_child(settings: str) -> dict:
    from dql import reproducible
    from dql.data.gym_datasets import cpu_description

    env = reproducible.subprocess_env() if settings == "cpu_independent" else dict(os.environ)
    command = [*shlex.split(FLAGS.under), sys.executable, "-m", "benchmarks.cpu_independence", "--child",
               f"--updates={FLAGS.updates}", f"--replay_steps={FLAGS.replay_steps}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the {settings} child failed:\n{result.stderr[-2000:]}")
    return {"settings": settings, "cpu": cpu_description(), **json.loads(result.stdout.strip().splitlines()[-1])}


def main(argv):
    del argv
    if FLAGS.updates < CHUNK or FLAGS.updates % CHUNK:
        raise app.UsageError(f"--updates must be a positive multiple of {CHUNK}")
    if FLAGS.replay_steps < 0:
        raise app.UsageError(f"--replay_steps must be positive (0: fingerprint updates), got {FLAGS.replay_steps}")
    if FLAGS.child:
        result = replay_fingerprint(FLAGS.replay_steps) if FLAGS.replay_steps else fingerprint(FLAGS.updates)
        print(json.dumps({**result, "cpuid": cpuid_widest()}))
        return
    from dql.data.gym_datasets import cpu_description

    host = cpu_description().split()[1:]  # the widest extension /proc/cpuinfo lists, where it lists one
    if not FLAGS.under and host and host[0] != cpuid_widest():
        sys.exit(f"error: CPUID gives this process {cpuid_widest()} but /proc/cpuinfo lists {host[0]}: it runs under "
                 "an emulator, which would run its children natively (qemu-user does not follow exec); run it "
                 "natively with --under='qemu-x86_64 -cpu ...' instead")
    if FLAGS.under and not shutil.which(shlex.split(FLAGS.under)[0]):
        sys.exit(f"error: --under={FLAGS.under!r}: {shlex.split(FLAGS.under)[0]} is not on PATH")
    report = {"benchmark": "cpu_independence", "under": FLAGS.under or None}
    if FLAGS.replay_steps:  # before the children, so that a bad --replay_steps stops at once
        report[f"{REPLAY_LEVEL}_file"] = cached_file_rows(FLAGS.replay_steps)
    settings = ["cpu_independent", "default"] if FLAGS.settings == "both" else [FLAGS.settings]
    report["results"] = [run_child(s) for s in settings]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
