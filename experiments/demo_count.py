"""Score against the number of demonstrations: every finished run's final score grouped by method and by the N of
its dataset (`gym:Hopper-v5/expert-demos/N`, `gym:PointMaze_Medium-v3/demos/N`), a figure of the two, each
method's cost (steps trained, wall time per run), and the stability of the GAIL runs over training.

    python -m experiments.demo_count experiments/results/imitation-hopper/runs \
        --out=experiments/results/imitation-hopper/analysis

Writes `<out>/demos.md` (mean ± standard error over seeds per method and N; the demonstrations' own score; cost;
GAIL's score at every evaluation of every seed and which runs collapsed), `<out>/demos.json` (per run) and
`<out>/score_vs_demos.png`. Unfinished runs (no summary.json) are left out. The rliable intervals per dataset
come from `experiments.report` over the same runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from absl import app, flags

from dql.data import DatasetError, demos, gym_datasets
from experiments.runs import find_runs, load_run
from experiments.stability import mean_se, stability_table

flags.DEFINE_string("out", "analysis", "Folder for demos.md, demos.json and score_vs_demos.png.")
FLAGS = flags.FLAGS


def demo_count(dataset: str) -> int:
    """N of a generated demonstrations spec (its default when the spec leaves it out)."""
    try:
        _, level, count = gym_datasets.parse_spec(dataset)
    except DatasetError:
        level, count = None, 0
    if level not in demos.DEFAULT_COUNT:
        raise SystemExit(f"error: a run on {dataset!r}: not a demonstrations dataset (gym:<Env>/"
                         f"{{{','.join(demos.DEFAULT_COUNT)}}}/N), so it has no demonstration count")
    return count


def plot(path: Path, table: dict, data_scores: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    for algo in sorted({algo for algo, _ in table}):
        counts = sorted(n for a, n in table if a == algo)
        scores = [np.asarray(table[(algo, n)]) for n in counts]
        means = [s.mean() for s in scores]
        errors = [s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else 0.0 for s in scores]
        axis.errorbar(counts, means, yerr=errors, marker="o", capsize=3, label=algo)
    counts = sorted(data_scores)
    axis.plot(counts, [data_scores[n] for n in counts], "k--", lw=1, label="demonstrations")
    axis.set_xscale("log")
    axis.minorticks_off()  # a log axis would label 20, 30, 40 as 2 x 10^1, ...
    axis.set_xticks(counts, [str(n) for n in counts])
    axis.set_xlabel("demonstrations (episodes per task)")
    axis.set_ylabel("final normalized score")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more run folders (or folders above them)")
    runs = [run for run in map(load_run, find_runs(argv[1:])) if run is not None]
    if not runs:
        raise SystemExit("error: no finished run below " + ", ".join(argv[1:]))
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    table, data_scores, cost = defaultdict(list), {}, defaultdict(list)
    per_run = []
    for run in runs:
        count = demo_count(run["dataset"])
        table[(run["algo"], count)].append(run["score"])
        data_scores[count] = run["data_average"]
        summary = json.loads((run["path"] / "summary.json").read_text())
        cost[run["algo"]].append((summary["steps"], run["wall_time_s"] or summary.get("wall_time_s")))
        per_run.append({"run": run["path"].name, "algo": run["algo"], "demos": count, "seed": run["seed"],
                        "score": run["score"], "steps": summary["steps"], "wall_time_s": cost[run["algo"]][-1][1]})
    counts = sorted(data_scores)
    lines = ["| method | " + " | ".join(f"N = {n}" for n in counts) + " |", "|---|" + "---|" * len(counts),
             "| demonstrations (their average) | " + " | ".join(f"{data_scores[n]:.1f}" for n in counts) + " |"]
    for algo in sorted({algo for algo, _ in table}):
        cells = [f"{mean_se(table[(algo, n)], 1)} ({len(table[(algo, n)])})" if (algo, n) in table else ""
                 for n in counts]
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    lines += ["", "Final normalized score, mean ± standard error over seeds (seeds in brackets).", "",
              "| method | steps per run | wall time per run |", "|---|---|---|"]
    for algo, entries in sorted(cost.items()):
        steps = sorted({s for s, _ in entries})
        walls = [w for _, w in entries if w is not None]
        unit = "environment steps" if algo == "gail" else "gradient steps"
        lines.append(f"| {algo} | {' / '.join(f'{s:,}' for s in steps)} {unit} | "
                     f"{np.mean(walls) / 60:.1f} min |" if walls else f"| {algo} | {steps} | |")
    gail = [run["path"] for run in runs if run["algo"] == "gail"]
    if gail:
        lines += ["", "GAIL's stability:", "", *stability_table(gail)]
    plot(out / "score_vs_demos.png", table, data_scores)
    (out / "demos.md").write_text("\n".join(lines) + "\n")
    (out / "demos.json").write_text(json.dumps(per_run, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
