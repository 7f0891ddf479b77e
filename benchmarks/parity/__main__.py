"""Update-for-update comparison of one of our agents with its official implementation; writes and prints JSON.

    python -m benchmarks.parity --algo=cql --repo=/path/to/CORL [--reference=corl] [--updates=1000]
        [--dataset=gym:Hopper-v5/medium] [--obs_dim=11 --act_dim=3] [--set=KEY=VALUE] [--out=FILE]

The references (their repositories and files) are listed by `--algo=NAME --list`; a checkout of the one compared
is given by --repo and nothing of it is copied into this project. How the comparison works: see
benchmarks/parity/common.py. The result goes to experiments/results/parity/<algo>-<reference>.json (or --out);
`python -m benchmarks.parity.table` collects every result into one table.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import random_transitions
from benchmarks.parity.common import Settings, git_commit, worst

CASES = ("dql", "cql", "iql", "td3bc", "rebrac", "fql", "edp", "idql")
RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "parity"

flags.DEFINE_string("repo", None, "Checkout of the reference's repository.")
flags.DEFINE_string("reference", None, "Which reference of --algo (default: the case's first); see --list.")
flags.DEFINE_bool("list", False, "List the references of --algo and exit.")
flags.DEFINE_string("dataset", None, "A --dataset to draw minibatches from (default: random transitions).")
flags.DEFINE_integer("updates", 1000, "Updates to compare.")
flags.DEFINE_list("checkpoints", ["1", "10"], "Updates after which to compare, besides the last.")
flags.DEFINE_list("variants", [], "Variants to compare (default: every variant of the case).")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights, the draws and the minibatches.")
flags.DEFINE_string("out", None, "Result file (default experiments/results/parity/<algo>-<reference>.json).")
FLAGS = flags.FLAGS


def case_module(algo: str):
    if algo not in CASES:
        raise app.UsageError(f"--algo={algo!r}: parity cases exist for {', '.join(CASES)}")
    return importlib.import_module(f"benchmarks.parity.{algo}")


def comparison_data(dataset: str | None, obs_dim: int, act_dim: int, seed: int) -> dict[str, np.ndarray]:
    if not dataset:
        return random_transitions(100_000, obs_dim, act_dim, seed)
    from dql.data import load_dataset

    loaded = load_dataset(dataset)
    data = {key: np.asarray(getattr(loaded, key), np.float32) for key in
            ("observations", "actions", "rewards", "next_observations", "dones")}
    data["next_actions"] = np.asarray(loaded.next_actions, np.float32) if hasattr(loaded, "next_actions") else \
        data["actions"]
    return data


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: Path, result: dict) -> None:
    """Write to a temporary name, then rename: an interrupted run leaves the previous result whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(temporary, path)


def main(argv):
    del argv
    case = case_module(FLAGS.algo)
    if FLAGS.list:
        for name, ref in case.REFERENCES.items():
            print(f"{name}: {ref['repo']} {ref['file']}")
        return
    if not FLAGS.repo:
        raise app.UsageError("--repo: give a checkout of the reference (see --list)")
    reference = FLAGS.reference or next(iter(case.REFERENCES))
    if reference not in case.REFERENCES:
        raise app.UsageError(f"--reference={reference!r}: --algo={FLAGS.algo} has {', '.join(case.REFERENCES)}")
    out = Path(FLAGS.out) if FLAGS.out else RESULTS / f"{FLAGS.algo}-{reference}.json"
    settings = Settings(repo=FLAGS.repo, reference=reference,
                        data=comparison_data(FLAGS.dataset, FLAGS.obs_dim, FLAGS.act_dim, FLAGS.seed),
                        updates=FLAGS.updates, checkpoints=tuple(int(k) for k in FLAGS.checkpoints), seed=FLAGS.seed,
                        overrides=tuple(FLAGS.set), variants=tuple(FLAGS.variants))
    start = time.perf_counter()
    compared = case.compare(settings)
    versions = {"jax": jax.__version__}
    if "torch" in sys.modules:
        versions["torch"] = sys.modules["torch"].__version__
    result = {"benchmark": "parity", "algo": FLAGS.algo, "reference": reference, **case.REFERENCES[reference],
              "reference_commit": git_commit(FLAGS.repo), "dataset": FLAGS.dataset or "random transitions",
              "updates": FLAGS.updates, "overrides": list(FLAGS.set), "date": time.strftime("%Y-%m-%d"),
              "machine": cpu_name(),
              "versions": versions, "seconds": round(time.perf_counter() - start, 1), **compared,
              "differences_found": case.DIFFERENCES.get(reference, [])}
    write_json(out, result)
    for variant in result["variants"]:
        last = str(FLAGS.updates)
        print(f"{FLAGS.algo} against {reference} ({variant['variant']}): params rel L2 after {last} updates: "
              f"float64 {worst(variant['float64'][last]):.2g}, float32 {worst(variant['float32'][last]):.2g}, "
              f"ours float32 vs reference float64 {worst(variant['ours_float32_vs_reference_float64'][last]):.2g} "
              f"(the reference's own float32 floor {worst(variant['float32_floor'][last]):.2g})")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
