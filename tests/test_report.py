"""experiments.report on hand-made run folders: table values, published column, IQM and its interval, curves."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.report import bootstrap_iqm, interquartile_mean

ROOT = Path(__file__).resolve().parent.parent


def make_run(folder: Path, algo: str, dataset: str, seed: int, scores: list[float]):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"algo": algo, "dataset": dataset, "seed": seed}))
    steps = [10 * (i + 1) for i in range(len(scores))]
    final = {"step": steps[-1], "return_mean": 0.0, "return_std": 0.0, "score_mean": scores[-1], "score_std": 1.0}
    summary = {"final": final, "dataset": {"name": dataset, "average_normalized_score": 40.0,
                                           "average_return": -1.0}}
    (folder / "summary.json").write_text(json.dumps(summary))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "eval_score_mean"])
        writer.writeheader()
        writer.writerows({"step": s, "eval_score_mean": v} for s, v in zip(steps, scores))


def test_interquartile_mean_closed_forms():
    assert interquartile_mean([1, 2, 3, 4]) == pytest.approx(2.5)
    assert interquartile_mean([0, 1, 2, 3, 4, 5, 6, 1000]) == pytest.approx(3.5)  # the outlier is trimmed
    assert interquartile_mean([5.0]) == 5.0
    point, low, high = bootstrap_iqm([np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 10.0])], reps=500)
    assert low <= point <= high and point == pytest.approx(interquartile_mean([1, 2, 3, 4, 10, 10]))
    assert bootstrap_iqm([np.array([7.0, 7.0, 7.0])], reps=50) == (7.0, 7.0, 7.0)


def test_report_tables_and_curves(tmp_path):
    runs = tmp_path / "runs"
    for seed, final in enumerate([60.0, 70.0, 80.0]):
        make_run(runs / f"iql-{seed}", "iql", "hopper-medium-v2", seed, [20.0, final])
    for seed, final in enumerate([50.0, 52.0]):
        make_run(runs / f"bc-{seed}", "bc", "hopper-medium-v2", seed, [30.0, final])
    make_run(runs / "dql-0", "dql", "gym:Hopper-v5/medium-replay", 0, [10.0, 37.5])  # one seed, a generated set
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "config.json").write_text(json.dumps({"algo": "bc", "dataset": "x", "seed": 9}))
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "experiments.report", str(runs), f"--out={out}", "--bootstrap=200"],
                            cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    table = (out / "report.md").read_text()
    # mean ± SE over seeds: IQL (60, 70, 80) -> 70.0 ± 5.8; published IQL hopper-medium-v2 66.3; BC 51.0 ± 1.0.
    assert "| hopper-medium-v2 | iql | 70.0 ± 5.8 | 3 | 40.0 | 66.3 |" in table
    assert "| hopper-medium-v2 | bc | 51.0 ± 1.0 | 2 | 40.0 | 52.9 |" in table
    assert "| iql | 70.0 |" in table and "unfinished" in result.stderr
    assert (out / "curves_hopper-medium-v2.png").stat().st_size > 0
    assert "| gym:Hopper-v5/medium-replay | dql | 37.5 | 1 | 40.0 |  |" in table  # no ± for a single seed
    assert (out / "curves_gym_Hopper-v5_medium-replay.png").stat().st_size > 0
