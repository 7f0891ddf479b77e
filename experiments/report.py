"""Compare finished runs: `python -m experiments.report DIR... [--out=report] [--versus=ALGO] [--bootstrap=2000]
[--seed=0]`.

A DIR may be a run folder or any folder above run folders (a sweep's root): every folder below it holding a
`config.json` is a run, at any depth, except a folder whose `seed_<n>/` subfolders hold runs (a multi-seed
program's folder), whose seeds are the runs. Unfinished runs and runs without an evaluation are left out with a
warning.

Writes `<out>/report.md`:
- per dataset and algorithm: final score, mean ± standard error over seeds, the behaviour data's average and the
  published number where the dataset is a D4RL one (or a generated namesake);
- per algorithm, over the normalized-score datasets that every algorithm was run on: IQM, mean, median and
  optimality gap (threshold 100, expert level) with 95% stratified-bootstrap confidence intervals, and for each
  pair of algorithms the probability of improvement with its interval, all computed by rliable (Agarwal et al.
  2021, "Deep RL at the edge of the statistical precipice");
- at every evaluation step the runs share: each algorithm's IQM with its interval, and with `--versus=ALGO` the
  probability that ALGO beats each other algorithm;
and `<out>/performance_profile.png` (fraction of runs scoring above tau, with 95% bands) and
`<out>/curves_<dataset>.png` (evaluation score against steps, mean ± standard error over seeds).

rliable is an optional dependency (`pip install 'dql[report]'`), imported only where it is used.
"""

from __future__ import annotations

import itertools
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from absl import app, flags, logging

from dql.logs import file_safe
from experiments import estimates
from experiments.estimates import (AGGREGATES, GAP_THRESHOLD, aggregate_estimates, improvement_estimates,
                                  performance_profiles, require_rliable)
from experiments.paper_scores import PAPER_SCORES
from experiments.runs import check_one_file_per_dataset, find_runs, load_run  # noqa: F401  (report.find_runs is public)

flags.adopt_module_key_flags(estimates)  # --bootstrap, --seed
flags.DEFINE_string("out", "report", "Folder for report.md, performance_profile.png and the learning curves.")
flags.DEFINE_string("versus", None, "An algorithm to set against every other: P(it > X) at every evaluation.")
FLAGS = flags.FLAGS

# ------------------------------------------------------------------------------------------- score matrices


class ScoreMatrices(NamedTuple):
    """rliable's input: per algorithm a [num_runs, num_tasks] array, columns in `tasks` order; `notes` say what
    was left out to make the matrices."""

    by_algo: dict[str, np.ndarray]
    tasks: list[str]
    notes: list[str]


def at_step(runs: list[dict], step: int) -> list[dict]:
    """The runs as they stood at evaluation `step`: their score there (runs not evaluated at it are left out)."""
    return [{**run, "score": dict(zip(*run["curve"]))[step]} for run in runs if step in run["curve"][0]]


def score_matrices(runs: list[dict]) -> ScoreMatrices:
    """Final normalized scores as runs x datasets matrices over the datasets every algorithm has.

    A matrix needs the same number of runs on every task, so each algorithm keeps, per dataset, its runs with the
    lowest seeds, as many as its smallest count over the tasks. Raw returns are left out: their scales differ per
    environment and the optimality gap's threshold is on the normalized scale.
    """
    cells: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    raw = sorted({run["dataset"] for run in runs if not run["normalized"]})
    for run in runs:
        if run["normalized"]:
            cells[run["algo"]][run["dataset"]].append(run)
    notes = [f"Left out (scored in return, not normalized): {', '.join(raw)}."] if raw else []
    if not cells:
        return ScoreMatrices({}, [], notes)
    everywhere = set.intersection(*(set(datasets) for datasets in cells.values()))
    tasks = sorted(everywhere)
    partial = sorted({d for datasets in cells.values() for d in datasets} - everywhere)
    for dataset in partial:
        have = sorted(algo for algo, datasets in cells.items() if dataset in datasets)
        notes.append(f"Left out (not run by every algorithm): {dataset}, run by {', '.join(have)}.")
    if not tasks:
        return ScoreMatrices({}, [], notes)
    by_algo = {}
    for algo, datasets in sorted(cells.items()):
        keep = min(len(datasets[task]) for task in tasks)
        columns = []
        for task in tasks:
            members = sorted(datasets[task], key=lambda run: (run["seed"], str(run["path"])))
            if len(members) > keep:
                dropped = ", ".join(str(run["seed"]) for run in members[keep:])
                notes.append(f"{algo} on {task}: seeds {dropped} left out to keep {keep} runs on every dataset.")
            columns.append([run["score"] for run in members[:keep]])
        by_algo[algo] = np.array(columns, np.float64).T  # rliable's layout: rows are runs, columns are tasks
    single = sorted(algo for algo, matrix in by_algo.items() if matrix.shape[0] == 1)
    if single:
        notes.append(f"One run per dataset for {', '.join(single)}: a bootstrap over one run has nothing to resample, "
                     "so those intervals have zero width and those probabilities of improvement are 0, 0.5 or 1; "
                     "they say nothing about the algorithms. Run 3 or more seeds.")
    return ScoreMatrices(by_algo, tasks, notes)


# ----------------------------------------------------------------------------------------------- report.md


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def dataset_table(runs: list[dict]) -> list[str]:
    # Scores from different evaluation envs (a D4RL file in Hopper-v4 and in Hopper-v5 by --env) are not averaged.
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run.get("env") or "", run["algo"])].append(run)
    lines = ["## Final score per dataset (mean ± standard error over seeds)", "",
             "Wall time per run: the trainer's clock summed over the run's processes (a resumed run restarts it), "
             "averaged over seeds.", "",
             "| dataset | evaluated in | algorithm | score | seeds | data average | published | wall time per run |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, env, algo), members in sorted(groups.items()):
        mean, se = mean_and_se([m["score"] for m in members])
        published = PAPER_SCORES.get((algo, dataset))
        unit = "" if members[0]["normalized"] else " (return)"
        spread = f" ± {se:.1f}" if len(members) > 1 else ""  # one seed has no standard error
        walls = [m["wall_time_s"] for m in members if m.get("wall_time_s") is not None]
        wall = f"{sum(walls) / len(walls) / 60:.0f} min" if walls else ""
        lines.append(f"| {dataset} | {env} | {algo} | {mean:.1f}{spread}{unit} | {len(members)} | "
                     f"{members[0]['data_average']:.1f} | {'' if published is None else f'{published:.1f}'} | "
                     f"{wall} |")
    return lines


def _interval(point: float, low: float, high: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _bullets(notes: list[str]) -> list[str]:
    return [*(f"- {note}" for note in notes), ""] if notes else []


def aggregate_section(scores: ScoreMatrices, reps: int, seed: int) -> list[str]:
    lines = ["", "## Aggregates over datasets (rliable, 95% stratified-bootstrap confidence intervals)", ""]
    if not scores.tasks:
        return lines + ["No normalized-score dataset was run by every algorithm; nothing to aggregate.", "",
                        *_bullets(scores.notes)]
    lines += [f"Datasets (tasks): {', '.join(scores.tasks)}. {reps} bootstrap resamples of the runs within each "
              f"dataset, seed {seed}. IQM: mean of the middle 50% of all runs' scores; mean and median: of the "
              f"per-dataset means; optimality gap: {GAP_THRESHOLD:.0f} minus the mean of min(score, "
              f"{GAP_THRESHOLD:.0f}), lower is better.", "", *_bullets(scores.notes),
              "| algorithm | runs x datasets | " + " | ".join(AGGREGATES) + " |",
              "|---|---|" + "---|" * len(AGGREGATES)]
    estimates = aggregate_estimates(scores.by_algo, reps, seed)
    ranked = sorted(estimates, key=lambda algo: (-estimates[algo]["IQM"][0], algo))
    for algo in ranked:
        runs, tasks = scores.by_algo[algo].shape
        cells = " | ".join(_interval(*estimates[algo][name]) for name in AGGREGATES)
        lines.append(f"| {algo} | {runs} x {tasks} | {cells} |")
    if len(ranked) < 2:
        return lines
    pairs = list(itertools.combinations(ranked, 2))  # X ranked above Y by IQM; P(Y > X) is 1 - P(X > Y)
    improvement = improvement_estimates(scores.by_algo, pairs, reps, seed)
    lines += ["", "## Probability of improvement (rliable, 95% stratified-bootstrap confidence intervals)", "",
              "P(X > Y): the chance that a run of X scores above a run of Y on the same dataset (ties count half), "
              "averaged over the datasets above.", "",
              "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
    lines += [f"| {x} | {y} | {_interval(*improvement[(x, y)], digits=2)} |" for x, y in pairs]
    return lines


def evaluation_section(runs: list[dict], reps: int, seed: int, versus: str | None) -> list[str]:
    """At every evaluation step all runs share: each algorithm's IQM with its 95% interval and, with `versus`,
    P(versus > X) for every other algorithm X (rliable, over the aggregated datasets)."""
    steps = sorted(set.intersection(*(set(run["curve"][0]) for run in runs)))
    matrices = {step: score_matrices(at_step(runs, step)) for step in steps}
    matrices = {step: scores for step, scores in matrices.items() if scores.tasks}
    if len(matrices) < 2:
        return []
    algos = sorted(next(iter(matrices.values())).by_algo)
    lines = ["", "## At every evaluation (rliable IQM [95% CI], over the aggregated datasets)", "",
             "| step | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    for step, scores in matrices.items():
        estimates = aggregate_estimates(scores.by_algo, reps, seed)
        lines.append(f"| {step} | " + " | ".join(_interval(*estimates[a]["IQM"]) for a in algos) + " |")
    if versus is None:
        return lines
    others = [algo for algo in algos if algo != versus]
    if not others:
        return lines + ["", f"P({versus} > X): no other algorithm among the runs yet."]
    lines += ["", f"P({versus} > X) at every evaluation (rliable, 95% CI):", "",
              "| step | " + " | ".join(f"P({versus} > {x})" for x in others) + " |", "|---|" + "---|" * len(others)]
    for step, scores in matrices.items():
        improvement = improvement_estimates(scores.by_algo, [(versus, x) for x in others], reps, seed)
        lines.append(f"| {step} | " + " | ".join(_interval(*improvement[(versus, x)], digits=2) for x in others) + " |")
    return lines


def build_report(runs: list[dict], reps: int, seed: int = 0, versus: str | None = None) -> str:
    if versus is not None and versus not in {run["algo"] for run in runs}:
        raise SystemExit(f"error: --versus={versus}: no run of that algorithm among the given folders")
    lines = (dataset_table(runs) + aggregate_section(score_matrices(runs), reps, seed)
             + evaluation_section(runs, reps, seed, versus))
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: list[dict], out: Path) -> list[Path]:
    plt = _pyplot()
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


def plot_performance_profile(scores: ScoreMatrices, out: Path, reps: int, seed: int = 0) -> Path | None:
    """performance_profile.png: each algorithm's fraction of runs above tau, over the aggregated datasets."""
    if not scores.tasks:
        return None
    plt = _pyplot()
    from rliable import plot_utils  # after require_rliable() (in performance_profiles) has checked that it is installed

    everything = np.concatenate([m.ravel() for m in scores.by_algo.values()])
    taus = np.linspace(min(0.0, everything.min()), max(GAP_THRESHOLD, everything.max()), 101)
    profiles, intervals = performance_profiles(scores.by_algo, taus, reps, seed)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=intervals, ax=ax,
                                         xlabel=r"normalized score $\tau$",
                                         ylabel=r"fraction of runs with score $> \tau$",
                                         labelsize="medium", ticklabelsize="medium")
    ax.set_title(f"score distributions over {len(scores.tasks)} dataset(s), 95% bootstrap bands")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = out / "performance_profile.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more run folders (or folders above them)")
    require_rliable()  # fail before reading anything if it is missing
    logging.set_verbosity(logging.WARNING)  # rliable logs an INFO line per algorithm and interval
    runs = [run for run in map(load_run, find_runs(argv[1:])) if run is not None]
    if not runs:
        raise SystemExit("error: no finished run with an evaluation among the given folders")
    check_one_file_per_dataset(runs)
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(runs, FLAGS.bootstrap, FLAGS.seed, FLAGS.versus)
    (out / "report.md").write_text(report)
    written = plot_curves(runs, out)
    written.append(plot_performance_profile(score_matrices(runs), out, FLAGS.bootstrap, FLAGS.seed))
    for path in filter(None, written):
        print(f"wrote {path}", file=sys.stderr)
    print(report)


if __name__ == "__main__":
    app.run(main)
