"""Stability over training: each run's score at every evaluation, its best and final score, and whether it
collapsed (final score under half its best), with the steps it ran and its wall time. Read from run folders'
summary.json; used for GAIL's runs by the imitation studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def mean_se(values, digits: int = 2) -> str:
    """'mean ± standard error' over seeds (0 for one value)."""
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {se:.{digits}f}"


def stability_table(workdirs: list[Path], steps_name: str = "environment steps") -> list[str]:
    """Markdown lines: one row per run, then the count of collapsed runs."""
    lines = [f"| run | {steps_name} | wall time | score at each evaluation | best | final | collapsed |",
             "|---|---|---|---|---|---|---|"]
    collapsed = []
    for workdir in workdirs:
        summary = json.loads((workdir / "summary.json").read_text())
        scores = [e["score_mean"] for e in summary["evaluations"]]
        best, final = max(scores), scores[-1]
        collapsed.append(best > 0 and final < best / 2)
        lines.append(f"| {workdir.name} | {summary['steps']:,} | {summary['wall_time_s'] / 60:.1f} min | "
                     f"{' / '.join(f'{score:.0f}' for score in scores)} | {best:.0f} | {final:.0f} | "
                     f"{'yes' if collapsed[-1] else 'no'} |")
    lines.append(f"\nCollapsed (final score under half the run's best): {sum(collapsed)} of {len(collapsed)} runs.")
    return lines
