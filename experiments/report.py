"""Compare finished runs: `python -m experiments.report RUN_DIR... [--out=report]`.

Writes `<out>/report.md` (per dataset and algorithm: final normalized score, mean ± standard error over seeds,
beside the published number where the dataset is a D4RL one; per algorithm: the interquartile mean over all its
runs with a stratified-bootstrap 95% confidence interval, as rliable recommends) and `<out>/curves_<dataset>.png`
(evaluation score against steps, mean ± standard error over seeds). A RUN_DIR may be a run folder or a folder of
run folders.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from absl import app, flags

from dql.logs import file_safe, read_csv
from experiments.paper_scores import PAPER_SCORES

flags.DEFINE_string("out", "report", "Folder for report.md and the learning-curve PNGs.")
flags.DEFINE_integer("bootstrap", 2000, "Bootstrap resamples for the IQM confidence intervals.")
FLAGS = flags.FLAGS


def find_runs(paths: list[str]) -> list[Path]:
    runs = []
    for path in map(Path, paths):
        if (path / "config.json").exists():
            runs.append(path)
        elif path.is_dir():
            runs.extend(sorted(p.parent for p in path.glob("*/config.json")))
        else:
            raise SystemExit(f"error: {path} is neither a run folder (with config.json) nor a folder of them")
    return runs


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
    return {
        "algo": config["algo"],
        "dataset": summary["dataset"]["name"],
        "seed": config["seed"],
        "score": float(summary["final"][key]),
        "normalized": key == "score_mean",
        "curve": ([int(r["step"]) for r in rows], [float(r[f"eval_{key}"]) for r in rows]),
        "data_average": summary["dataset"]["average_normalized_score"] if key == "score_mean"
        else summary["dataset"]["average_return"],
    }


def interquartile_mean(scores: np.ndarray) -> float:
    """Mean of the middle 50% of the scores (rliable's IQM): sorted, a quarter trimmed from each end."""
    scores = np.sort(np.asarray(scores, np.float64))
    n = len(scores)
    # Fractional trimming so every size counts each score by the weight of its overlap with [n/4, 3n/4].
    edges = np.arange(n + 1)
    weights = np.clip(np.minimum(edges[1:], 0.75 * n) - np.maximum(edges[:-1], 0.25 * n), 0, None)
    return float(np.sum(weights * scores) / np.sum(weights))


def bootstrap_iqm(scores_by_dataset: list[np.ndarray], reps: int, seed: int = 0) -> tuple[float, float, float]:
    """IQM of all scores and a 95% percentile interval, resampling seeds within each dataset (stratified)."""
    rng = np.random.default_rng(seed)
    point = interquartile_mean(np.concatenate(scores_by_dataset))
    samples = [
        interquartile_mean(np.concatenate([s[rng.integers(0, len(s), len(s))] for s in scores_by_dataset]))
        for _ in range(reps)
    ]
    low, high = np.percentile(samples, [2.5, 97.5])
    return point, float(low), float(high)


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def build_report(runs: list[dict], reps: int) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run["algo"])].append(run)
    lines = ["## Final score per dataset (mean ± standard error over seeds)", "",
             "| dataset | algorithm | score | seeds | data average | published |", "|---|---|---|---|---|---|"]
    for (dataset, algo), members in sorted(groups.items()):
        mean, se = mean_and_se([m["score"] for m in members])
        published = PAPER_SCORES.get((algo, dataset))
        unit = "" if members[0]["normalized"] else " (return)"
        spread = f" ± {se:.1f}" if len(members) > 1 else ""  # one seed has no standard error
        lines.append(f"| {dataset} | {algo} | {mean:.1f}{spread}{unit} | {len(members)} | "
                     f"{members[0]['data_average']:.1f} | {'' if published is None else f'{published:.1f}'} |")
    lines += ["", "## Aggregate per algorithm (interquartile mean, stratified bootstrap 95% CI)", "",
              "| algorithm | IQM | 95% CI | mean | runs |", "|---|---|---|---|---|"]
    by_algo: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_algo[run["algo"]][run["dataset"]].append(run["score"])
    for algo, datasets in sorted(by_algo.items()):
        strata = [np.asarray(v) for v in datasets.values()]
        iqm, low, high = bootstrap_iqm(strata, reps)
        everything = np.concatenate(strata)
        lines.append(f"| {algo} | {iqm:.1f} | [{low:.1f}, {high:.1f}] | {everything.mean():.1f} | {len(everything)} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_dataset: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_dataset[run["dataset"]][run["algo"]].append(run)
    for dataset, algos in sorted(by_dataset.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for algo, members in sorted(algos.items()):
            steps = sorted(set.intersection(*(set(m["curve"][0]) for m in members)))
            values = np.array([[dict(zip(*m["curve"]))[s] for s in steps] for m in members])
            mean = values.mean(axis=0)
            se = values.std(axis=0, ddof=1) / np.sqrt(len(members)) if len(members) > 1 else np.zeros_like(mean)
            ax.plot(steps, mean, marker="o", label=f"{algo} (n={len(members)})")
            ax.fill_between(steps, mean - se, mean + se, alpha=0.2)
        first = next(iter(algos.values()))[0]
        ax.axhline(first["data_average"], color="gray", linestyle="--", label="behaviour data average")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("normalized score" if first["normalized"] else "return")
        ax.set_title(dataset)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = out / f"curves_{file_safe(dataset)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more run folders (or folders of run folders)")
    runs = [run for run in map(load_run, find_runs(argv[1:])) if run is not None]
    if not runs:
        raise SystemExit("error: no finished run with an evaluation among the given folders")
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(runs, FLAGS.bootstrap)
    (out / "report.md").write_text(report)
    for path in plot_curves(runs, out):
        print(f"wrote {path}", file=sys.stderr)
    print(report)


if __name__ == "__main__":
    app.run(main)
