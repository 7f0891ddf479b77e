"""Finished runs on disk: finding run folders below a sweep's root, reading a run's score and curve, and evaluating
a run's saved agent again.

Shared by `experiments.report`, `experiments.parity_curves` and the planning studies; no flags, so all can import it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dql.logs import read_csv
from dql.run_folder import DATA_IDENTITY_KEYS


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders at or below `paths`: deduplicated, sorted."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise SystemExit(f"error: {path} is neither a run folder (with config.json) nor a folder above them")
        configs = sorted(path.rglob("config.json"))
        if not configs:
            print(f"warning: no run folder (with config.json) at or below {path}", file=sys.stderr)
        for config in configs:
            folder = config.parent
            if any(folder.glob("seed_*/config.json")):
                continue  # a multi-seed program's own config: its seed_<n>/ folders are the runs
            found.setdefault(folder.resolve(), folder)  # the same run reached through two arguments counts once
    return sorted(found.values())


def load_run(path: Path) -> dict | None:
    """algo, dataset, seed, final score (normalized where the dataset has reference scores) and the curve."""
    config = json.loads((path / "config.json").read_text())
    summary_path = path / "summary.json"
    if not summary_path.exists():
        print(f"warning: {path} has no summary.json (unfinished run); left out", file=sys.stderr)
        return None
    summary = json.loads(summary_path.read_text())
    if "final" not in summary:
        print(f"warning: {path} ran no evaluation; left out", file=sys.stderr)
        return None
    key = "score_mean" if summary["final"].get("score_mean") is not None else "return_mean"
    all_rows = read_csv(path / "metrics.csv")
    rows = [r for r in all_rows if r.get(f"eval_{key}")]
    wall_times = [float(r["wall_time_s"]) for r in all_rows if r.get("wall_time_s")]
    dataset_file = path / "dataset.json"  # the evaluation env, as the trainer recorded it
    env = json.loads(dataset_file.read_text()).get("eval_env_id") if dataset_file.exists() else None
    return {
        "algo": config["algo"],
        "dataset": summary["dataset"]["name"],
        "env": env,
        "seed": config["seed"],
        "path": path,
        "score": float(summary["final"][key]),
        "score_std": float(summary["final"][key.replace("_mean", "_std")]),
        "normalized": key == "score_mean",
        "curve": ([int(r["step"]) for r in rows], [float(r[f"eval_{key}"]) for r in rows]),
        "wall_time_s": summed_wall_time(wall_times) if wall_times else None,
        "data_average": summary["dataset"]["average_normalized_score"] if key == "score_mean"
        else summary["dataset"]["average_return"],
        # Two files under one name (a replay tier generated on two CPUs) differ here.
        "data_identity": tuple(summary["dataset"].get(k) for k in DATA_IDENTITY_KEYS),
    }


def summed_wall_time(clock: list[float]) -> float:
    """Wall time of a run over all its processes, from the trainer's clock in its metrics rows: each process of a
    resumed run starts the clock again, so a drop in it ends one process (the last value before it) and starts
    the next."""
    total = 0.0
    for previous, current in zip(clock, clock[1:]):
        if current < previous:
            total += previous
    return total + clock[-1]


def check_one_file_per_dataset(runs: list[dict]) -> None:
    """Exit naming the files when the runs under one dataset name trained on different data: their scores are not
    of one task (a replay tier generated on another CPU, a file replaced under the same path)."""
    for name in sorted({run["dataset"] for run in runs}):
        files = sorted({run["data_identity"] for run in runs if run["dataset"] == name}, key=str)
        if len(files) > 1:
            listing = "; ".join(f"{sum(run['data_identity'] == f for run in runs)} runs on "
                                f"{dict(zip(DATA_IDENTITY_KEYS, f))}" for f in files)
            raise SystemExit(f"error: the runs trained on different files under the name {name} (a replay tier "
                             f"generated on another CPU differs): {listing}")


def evaluate_agent(agent, env: tuple[str, dict], episodes: int, seed: int, dataset) -> dict:
    """One saved agent evaluated as the trainer evaluates a program of one seed (its env seeds and keys at step 0):
    every variant of the same agent is scored on the same episodes and noise."""
    import jax
    import numpy as np

    from dql.evaluation import Evaluator

    program = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], agent)
    (result,) = Evaluator(env[0], env[1], episodes, [seed], dataset)(program, step=0)
    return result
