"""Finished runs on disk: finding run folders below a sweep's root and reading a run's score and curve.

Shared by `experiments.report` and `experiments.parity_curves`; no flags, so both can import it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dql.logs import read_csv


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
    rows = [r for r in read_csv(path / "metrics.csv") if r.get(f"eval_{key}")]
    dataset_file = path / "dataset.json"  # the evaluation env, as the trainer recorded it
    env = json.loads(dataset_file.read_text()).get("eval_env_id") if dataset_file.exists() else None
    return {
        "algo": config["algo"],
        "dataset": summary["dataset"]["name"],
        "env": env,
        "seed": config["seed"],
        "path": path,
        "score": float(summary["final"][key]),
        "normalized": key == "score_mean",
        "curve": ([int(r["step"]) for r in rows], [float(r[f"eval_{key}"]) for r in rows]),
        "data_average": summary["dataset"]["average_normalized_score"] if key == "score_mean"
        else summary["dataset"]["average_return"],
    }
