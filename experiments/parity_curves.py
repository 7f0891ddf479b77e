"""This project's Diffusion-QL against the paper's code, seed by seed: when each seed takes off, and the curves.

    python -m experiments.parity_curves runs/parity [--takeoff=SCORE] [--out_dir=experiments/results/dql-parity]

Reads every run folder below the given paths (ours from `python -m dql.train --algo=dql`, the reference's from
`python -m benchmarks.reference_curves`), groups them by algorithm on one dataset, and writes:

- `takeoff.json`: per seed the evaluated scores and the take-off step, the first evaluation at or above --takeoff
  (default: halfway from the data's average normalized score to 100), with the step where the line between the
  evaluations around it crosses --takeoff, and per algorithm the median of each
  (a seed that never reaches it counts as later than the last evaluation) and the mean score at each step;
  with two algorithms also, from rliable with 95% bootstrap intervals over seeds, at each evaluated step and for
  the area under the curve each one's mean score and the probability that a run of the first beats a run of the
  second, and the same for the interpolated take-off step (there "beats" means "takes off later"): whether the
  two differ by more than seed variance;
- `curves.png`: every seed's curve, thin, and each algorithm's mean, thick, with the take-off threshold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import estimates
from experiments.estimates import aggregate_estimates, improvement_estimates
from experiments.runs import check_one_file_per_dataset, find_runs, load_run

flags.adopt_module_key_flags(estimates)  # --bootstrap, --seed
flags.DEFINE_float("takeoff", None, "Take-off score (default: halfway from the data average to 100).")
flags.DEFINE_string("out_dir", "experiments/results/dql-parity", "Output folder (takeoff.json, curves.png).")
FLAGS = flags.FLAGS


def takeoff_step(steps: list[int], scores: list[float], threshold: float) -> int | None:
    """The first evaluated step whose score reaches threshold, None if none does."""
    return next((step for step, score in zip(steps, scores) if score >= threshold), None)


def interpolated_takeoff(steps: list[int], scores: list[float], threshold: float) -> float | None:
    """Where the straight line between the evaluations around the first crossing meets threshold: evaluations 10k
    steps apart round every take-off up to a multiple of 10k, and a seed crossing by 0.1 points at 30k then looks
    10k earlier than one missing it by 0.1. The first evaluation if it already reaches threshold, None if none does."""
    step = takeoff_step(steps, scores, threshold)
    if step is None or step == steps[0]:
        return step
    i = steps.index(step)
    fraction = (threshold - scores[i - 1]) / (scores[i] - scores[i - 1])
    return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1]))


def median_takeoff(takeoffs: list[float | None]) -> float | str:
    """Median over seeds, a seed that never took off ranking after all that did; when such seeds are among the middle
    ones, "never" or "between the last evaluation and never" instead of a step."""
    ranked = sorted(takeoffs, key=lambda t: (t is None, t or 0))
    middle = ranked[(len(ranked) - 1) // 2: len(ranked) // 2 + 1]
    if any(t is None for t in middle):
        return "never" if all(t is None for t in middle) else "between the last evaluation and never"
    return float(np.mean(middle))


def summarize(runs: list[dict], threshold: float) -> dict:
    by_algo: dict[str, list[dict]] = {}
    for run in runs:
        by_algo.setdefault(run["algo"], []).append(run)
    out = {}
    for algo, algo_runs in sorted(by_algo.items()):
        seeds = {}
        for run in sorted(algo_runs, key=lambda r: r["seed"]):
            steps, scores = run["curve"]
            crossing = interpolated_takeoff(steps, scores, threshold)
            seeds[str(run["seed"])] = {"steps": steps, "scores": [round(s, 2) for s in scores],
                                       "takeoff_step": takeoff_step(steps, scores, threshold),
                                       "takeoff_step_interpolated": None if crossing is None else round(crossing)}
        common = sorted(set.intersection(*(set(s["steps"]) for s in seeds.values())))
        mean = {str(step): round(float(np.mean([s["scores"][s["steps"].index(step)] for s in seeds.values()])), 2)
                for step in common}
        out[algo] = {"seeds": seeds, "median_takeoff_step": median_takeoff([s["takeoff_step"] for s in seeds.values()]),
                     "median_takeoff_step_interpolated": median_takeoff(
                         [s["takeoff_step_interpolated"] for s in seeds.values()]),
                     "mean_score_by_step": mean}
    return out


def compare_two(summary: dict, reps: int, seed: int = 0) -> dict:
    """rliable's estimates for two algorithms (first and second in name order) over their common evaluated steps:
    at each step, for the area under the curve (each run's mean over those steps, so a run's correlated scores are
    resampled together) and, when every seed took off, for the interpolated take-off step, each one's mean and
    P(a run of first has the larger value than one of second)."""
    first, second = sorted(summary)
    steps = sorted(set(summary[first]["mean_score_by_step"]) & set(summary[second]["mean_score_by_step"]), key=int)

    def scores(algo: str) -> np.ndarray:  # [seeds, steps]
        return np.array([[entry["scores"][entry["steps"].index(int(step))] for step in steps]
                         for entry in summary[algo]["seeds"].values()], np.float64)

    matrices = {first: scores(first), second: scores(second)}
    columns = {step: {algo: m[:, i:i + 1] for algo, m in matrices.items()} for i, step in enumerate(steps)}
    columns["area under the curve"] = {algo: m.mean(axis=1, keepdims=True) for algo, m in matrices.items()}
    crossings = {algo: [s["takeoff_step_interpolated"] for s in summary[algo]["seeds"].values()] for algo in matrices}
    if all(None not in seeds for seeds in crossings.values()):  # here "first > second": first took off later
        columns["take-off step (interpolated)"] = {algo: np.array(c, np.float64)[:, None]
                                                   for algo, c in crossings.items()}
    comparison = {}
    for name, one_task in columns.items():  # rliable's layout: [runs, 1 task]
        means = aggregate_estimates(one_task, reps, seed)
        improvement = improvement_estimates(one_task, [(first, second)], reps, seed)[first, second]
        comparison[name] = {**{f"{algo} mean": _rounded(means[algo]["mean"]) for algo in one_task},
                            f"P({first} > {second})": _rounded(improvement)}
    return {"by_step": comparison, "note": f"[point, low, high]: 95% bootstrap intervals over seeds, {reps} "
                                           f"resamples, seed {seed}"}


def _steps(median: float | str) -> str:
    return f"{median:,.0f}" if isinstance(median, float) else median


def _rounded(estimate: tuple[float, float, float]) -> list[float]:
    return [round(value, 3) for value in estimate]


def plot(runs: list[dict], summary: dict, threshold: float, dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(sorted(summary), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for run in runs:
        ax.plot(*run["curve"], color=colors[run["algo"]], alpha=0.35, linewidth=1)
    for algo, entry in summary.items():
        steps = [int(s) for s in entry["mean_score_by_step"]]
        ax.plot(steps, list(entry["mean_score_by_step"].values()), color=colors[algo], linewidth=2.5,
                label=f"{algo}: {len(entry['seeds'])} seeds, median take-off {_steps(entry['median_takeoff_step'])} "
                      f"(interpolated {_steps(entry['median_takeoff_step_interpolated'])})")
    ax.axhline(threshold, color="grey", linestyle=":", label=f"take-off score {threshold:.1f}")
    ax.axhline(runs[0]["data_average"], color="black", linestyle="--", linewidth=1, label="data average")
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalized score")
    ax.set_title(f"Diffusion-QL, this project against the paper's code\n{dataset}")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    runs = [run for run in (load_run(path) for path in find_runs(argv[1:] or ["runs"])) if run is not None]
    if not runs:
        sys.exit("error: no finished run folders (with summary.json) below the given paths")
    datasets = sorted({run["dataset"] for run in runs})
    if len(datasets) != 1 or not all(run["normalized"] for run in runs):
        sys.exit(f"error: expected runs on one dataset with normalized scores, found {', '.join(datasets)}")
    check_one_file_per_dataset(runs)
    threshold = FLAGS.takeoff if FLAGS.takeoff is not None else (runs[0]["data_average"] + 100.0) / 2
    summary = summarize(runs, threshold)
    out = Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"dataset": datasets[0], "data_average": runs[0]["data_average"], "takeoff_score": threshold,
              "algorithms": summary}
    if len(summary) == 2:
        result["comparison"] = compare_two(summary, FLAGS.bootstrap, FLAGS.seed)
    (out / "takeoff.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(runs, summary, threshold, datasets[0], out / "curves.png")
    for algo, entry in summary.items():
        takeoffs = {seed: s["takeoff_step"] for seed, s in entry["seeds"].items()}
        crossings = {seed: s["takeoff_step_interpolated"] for seed, s in entry["seeds"].items()}
        print(f"{algo}: take-off steps by seed {takeoffs}, median {_steps(entry['median_takeoff_step'])}; "
              f"interpolated {crossings}, median {_steps(entry['median_takeoff_step_interpolated'])}; "
              f"mean score by step {entry['mean_score_by_step']}")
    for name, row in result.get("comparison", {}).get("by_step", {}).items():
        print(f"{name}: " + ", ".join(f"{key} {point} [{low}, {high}]" for key, (point, low, high) in row.items()))
    print(f"wrote {out / 'takeoff.json'} and {out / 'curves.png'}")


if __name__ == "__main__":
    app.run(main)
