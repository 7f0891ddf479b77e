"""experiments.report: run discovery in a sweep root, score matrices, rliable's aggregates against closed forms,
the report's tables and figures."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import estimates, report
from experiments.runs import check_one_file_per_dataset, load_run

pytestmark = pytest.mark.slow  # the report runs as a command over run folders

ROOT = Path(__file__).resolve().parent.parent
REPS = 200  # small: CI runs these on a 2-core CPU
needs_rliable = pytest.mark.skipif(importlib.util.find_spec("rliable") is None,
                                   reason="experiments.report needs rliable: pip install 'dql[report]'")


# As dql.data.evaluation_envs maps D4RL names.
EVAL_ENVS = {"hopper-medium-v2": "Hopper-v4", "walker2d-medium-v2": "Walker2d-v4"}


def make_run(folder: Path, algo: str, dataset: str, seed: int, scores: list[float], normalized: bool = True):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"algo": algo, "dataset": dataset, "seed": seed}))
    env = EVAL_ENVS.get(dataset, "Hopper-v5")
    (folder / "dataset.json").write_text(json.dumps({"name": dataset, "eval_env_id": env}))
    steps = [10 * (i + 1) for i in range(len(scores))]
    key = "score_mean" if normalized else "return_mean"
    final = {"step": steps[-1], "return_mean": scores[-1] if not normalized else 0.0, "return_std": 0.0,
             "score_mean": scores[-1] if normalized else None, "score_std": 1.0 if normalized else None}
    summary = {"final": final, "steps": steps[-1],
               "dataset": {"name": dataset, "average_normalized_score": 40.0 if normalized else None,
                           "average_return": -1.0}}
    (folder / "summary.json").write_text(json.dumps(summary))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "wall_time_s", f"eval_{key}"])
        writer.writeheader()  # one minute of the trainer's clock per step: a run of N steps took N minutes
        writer.writerows({"step": s, "wall_time_s": 60.0 * s, f"eval_{key}": v} for s, v in zip(steps, scores))


def test_a_resumed_runs_wall_time_adds_up_its_processes(tmp_path):
    make_run(tmp_path / "run", "cql", "gym:Hopper-v5/full-replay", 0, [15.0, 20.0, 30.0, 80.0])
    # Three processes (SIGTERM after steps 20 and 30): the trainer's clock restarts in each, compile included.
    clock = {10: 150.0, 20: 310.0, 30: 240.0, 40: 200.0}
    with open(tmp_path / "run" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "wall_time_s", "eval_score_mean"])
        writer.writeheader()
        writer.writerows({"step": s, "wall_time_s": t, "eval_score_mean": 1.0} for s, t in clock.items())
    assert load_run(tmp_path / "run")["wall_time_s"] == 310.0 + 240.0 + 200.0  # not the last process's 200


def fake_run(algo: str, dataset: str, seed: int, score: float, normalized: bool = True) -> dict:
    return {"algo": algo, "dataset": dataset, "seed": seed, "path": Path(f"{algo}-{dataset}-{seed}"),
            "score": score, "normalized": normalized}


@needs_rliable
def test_aggregates_match_closed_forms():
    # 1..8 in no particular order: IQM trims the 2 lowest and 2 highest of the *sorted* scores -> mean(3..6) = 4.5.
    one_to_eight = np.array([[8.0, 1.0], [3.0, 6.0], [5.0, 2.0], [7.0, 4.0]])
    # 12 scores, one outlier: IQM = mean(4..9) = 6.5; per-dataset (column) means 2.5, 6.75, 257.25 -> mean 88.83,
    # median 6.75 (the row means' median would be 6.5); gap 100 - mean(min(s, 100)) = 100 - 166 / 12.
    outlier = np.array([[1.0, 5.0, 8.0], [2.0, 6.0, 10.0], [3.0, 7.0, 11.0], [4.0, 9.0, 1000.0]])
    expert = np.array([[100.0, 120.0], [100.0, 130.0]])  # at or above the threshold everywhere: no gap
    result = estimates.aggregate_estimates({"a": one_to_eight, "b": outlier, "c": expert}, reps=REPS)
    assert result["a"]["IQM"][0] == pytest.approx(4.5)
    b = {name: point for name, (point, _, _) in result["b"].items()}
    assert b == pytest.approx({"IQM": 6.5, "mean": 1066 / 12, "median": 6.75, "optimality gap": 100 - 166 / 12})
    for name, (point, low, high) in result["b"].items():
        assert low <= point <= high and low < high, name
    assert result["c"]["optimality gap"] == (0.0, 0.0, 0.0)
    assert result["c"]["mean"][0] == pytest.approx(112.5)


@needs_rliable
def test_probability_of_improvement_closed_forms():
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 50, (3, 4))
    high = rng.uniform(60, 100, (2, 4))  # beats every run of `low` on every task, with fewer runs
    # Task 0: x in (1, 3, 4) against y in (2, 2) wins 4 of 6 pairs; task 1: x never wins -> (2/3 + 0) / 2.
    x = np.array([[1.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    y = np.array([[2.0, 5.0], [2.0, 5.0]])
    pairs = [("high", "low"), ("low", "high"), ("low", "low2"), ("x", "y"), ("y", "x")]
    result = estimates.improvement_estimates({"high": high, "low": low, "low2": low.copy(), "x": x, "y": y},
                                          pairs, reps=REPS)
    assert result[("high", "low")] == (1.0, 1.0, 1.0)
    assert result[("low", "high")] == (0.0, 0.0, 0.0)
    assert result[("low", "low2")][0] == 0.5  # identical score matrices
    assert result[("x", "y")][0] == pytest.approx(1 / 3)
    assert result[("y", "x")][0] == pytest.approx(2 / 3)  # ties count half, so P(Y > X) = 1 - P(X > Y)
    assert result[("x", "y")][1] <= 1 / 3 <= result[("x", "y")][2]


@needs_rliable
def test_performance_profile_counts_runs_above_tau():
    profiles, intervals = estimates.performance_profiles({"a": np.array([[10.0], [30.0], [50.0], [70.0]])},
                                                      np.array([0.0, 20.0, 60.0, 100.0]), reps=REPS)
    np.testing.assert_allclose(profiles["a"], [1.0, 0.75, 0.25, 0.0])
    assert intervals["a"].shape == (2, 4)


@needs_rliable
def test_bootstrap_seed_is_reproducible_and_leaves_numpy_alone():
    scores = {"a": np.random.default_rng(1).normal(50, 10, (5, 3))}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = estimates.aggregate_estimates(scores, reps=REPS, seed=0)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's global generator is restored
    assert estimates.aggregate_estimates(scores, reps=REPS, seed=0) == first
    assert estimates.aggregate_estimates(scores, reps=REPS, seed=1)["a"]["IQM"] != first["a"]["IQM"]


def test_score_matrices_common_datasets_and_truncation():
    runs = [fake_run("iql", "d1", s, 10.0 + s) for s in (2, 0, 1)] + [fake_run("iql", "d2", s, 20.0 + s)
                                                                       for s in (0, 1)]
    runs += [fake_run("bc", "d1", 0, 1.0), fake_run("bc", "d2", 0, 2.0), fake_run("bc", "d3", 0, 3.0)]
    runs += [fake_run("bc", "pendulum", 0, -150.0, normalized=False)]
    scores = report.score_matrices(runs)
    assert scores.tasks == ["d1", "d2"]  # d3: bc only; pendulum: raw return
    # Rows are runs (lowest seeds kept, 2 of iql's 3 on d1), columns are datasets in `tasks` order.
    np.testing.assert_array_equal(scores.by_algo["iql"], [[10.0, 20.0], [11.0, 21.0]])
    np.testing.assert_array_equal(scores.by_algo["bc"], [[1.0, 2.0]])
    notes = "\n".join(scores.notes)
    assert "iql on d1: seeds 2 left out to keep 2 runs" in notes
    assert "d3, run by bc" in notes and "not normalized): pendulum" in notes
    assert "One run per dataset for bc:" in notes and "iql" not in notes.split("One run per dataset")[1]


def test_scores_from_different_evaluation_envs_are_not_averaged():
    runs = [dict(fake_run("bc", "hopper-medium-v2", seed, score), env=env, data_average=40.0)
            for seed, score, env in [(0, 50.0, "Hopper-v4"), (1, 54.0, "Hopper-v4"), (2, 10.0, "Hopper-v5")]]
    table = "\n".join(report.dataset_table(runs))
    assert "| hopper-medium-v2 | Hopper-v4 | bc | 52.0 ± 2.0 | 2 |" in table
    assert "| hopper-medium-v2 | Hopper-v5 | bc | 10.0 | 1 |" in table


def test_runs_on_different_files_under_one_name_are_refused():
    def run(dataset, seed, transitions):
        return dict(fake_run("dql", dataset, seed, 50.0), data_identity=(dataset, transitions, 1119))

    check_one_file_per_dataset([run("gym:Hopper-v5/full-replay", 0, 154999), run("hopper-medium-v2", 0, 999999),
                                run("gym:Hopper-v5/full-replay", 1, 154999)])  # one file per name: fine
    with pytest.raises(SystemExit, match=r"different files under the name gym:Hopper-v5/full-replay .*"
                                         r"1 runs on \{'name': 'gym:Hopper-v5/full-replay', 'transitions': 154000"):
        check_one_file_per_dataset([run("gym:Hopper-v5/full-replay", 0, 154999),
                                    run("gym:Hopper-v5/full-replay", 1, 154000)])


def test_missing_rliable_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # makes `from rliable import ...` raise ImportError
    with pytest.raises(SystemExit, match=r"^error: rliable is not installed \(experiments.report and "
                                         r"experiments.parity_curves use it\): pip install 'dql\[report\]'$"):
        estimates.aggregate_estimates({"a": np.ones((2, 2))}, reps=10)


def make_sweep(root: Path) -> None:
    """A sweep root: a multi-seed program with its own config.json, one without, flat and deeply nested runs,
    a dataset only one algorithm has, one unfinished run."""
    (root / "iql-hopper-s0-2").mkdir(parents=True)
    (root / "iql-hopper-s0-2" / "config.json").write_text(json.dumps({"algo": "iql", "seeds": [0, 1, 2]}))
    for seed, final in enumerate([60.0, 70.0, 80.0]):
        make_run(root / "iql-hopper-s0-2" / f"seed_{seed}", "iql", "hopper-medium-v2", seed, [20.0, final])
    for seed, final in enumerate([70.0, 74.0]):
        make_run(root / "iql-walker-s0-1" / f"seed_{seed}", "iql", "walker2d-medium-v2", seed, [20.0, final])
    for seed, final in enumerate([50.0, 52.0]):
        make_run(root / f"bc-hopper-seed{seed}", "bc", "hopper-medium-v2", seed, [30.0, final])
    for seed, final in enumerate([40.0, 44.0]):
        make_run(root / "more" / "deeper" / f"bc-walker-seed{seed}", "bc", "walker2d-medium-v2", seed, [30.0, final])
    make_run(root / "bc-gym-seed0", "bc", "gym:Hopper-v5/medium-replay", 0, [10.0, 37.5])
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text(json.dumps({"algo": "bc", "dataset": "x", "seed": 9}))


def test_find_runs_in_a_sweep_root(tmp_path):
    make_sweep(tmp_path)
    # The second argument reaches the same runs by another spelling: they count once.
    found = report.find_runs([str(tmp_path), str(tmp_path / "more" / ".." / "iql-hopper-s0-2")])
    names = [str(path.relative_to(tmp_path)) for path in found]
    assert names == ["bc-gym-seed0", "bc-hopper-seed0", "bc-hopper-seed1",
                     "iql-hopper-s0-2/seed_0", "iql-hopper-s0-2/seed_1", "iql-hopper-s0-2/seed_2",
                     "iql-walker-s0-1/seed_0", "iql-walker-s0-1/seed_1",
                     "more/deeper/bc-walker-seed0", "more/deeper/bc-walker-seed1", "unfinished"]
    with pytest.raises(SystemExit, match="neither a run folder"):
        report.find_runs([str(tmp_path / "absent")])


def aggregate_points(table: str) -> dict[str, list[float]]:
    """algorithm -> point estimates of the aggregate table's rows (IQM, mean, median, optimality gap)."""
    rows = [line.split("|")[1:-1] for line in table.splitlines() if " x 2 |" in line]
    return {cells[0].strip(): [float(cell.split("[")[0]) for cell in cells[2:]] for cells in rows}


@needs_rliable
def test_report_of_a_sweep_root(tmp_path):
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    make_sweep(sweep)
    result = subprocess.run([sys.executable, "-m", "experiments.report", str(sweep), f"--out={out}",
                             f"--bootstrap={REPS}", "--versus=bc"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "unfinished" in result.stderr
    table = (out / "report.md").read_text()
    # Per dataset, every finished run: IQL (60, 70, 80) -> 70.0 ± 5.8, published 66.3; BC (50, 52) -> 51.0 ± 1.0.
    assert "| hopper-medium-v2 | Hopper-v4 | iql | 70.0 ± 5.8 | 3 | 40.0 | 66.3 |" in table
    assert "| hopper-medium-v2 | Hopper-v4 | bc | 51.0 ± 1.0 | 2 | 40.0 | 52.9 |" in table
    # No ± for one seed; its 20 steps took 20 minutes of the trainer's clock (make_run).
    assert "| gym:Hopper-v5/medium-replay | Hopper-v5 | bc | 37.5 | 1 | 40.0 |  | 20 min |" in table
    # Aggregates over hopper and walker with 2 runs each (IQL's seed 2 on hopper left out):
    # IQL (60, 70 | 70, 74): IQM 70, mean = median = 68.5, gap 31.5; BC (50, 52 | 40, 44): IQM 47, 46.5, 53.5.
    assert aggregate_points(table) == {"iql": [70.0, 68.5, 68.5, 31.5], "bc": [47.0, 46.5, 46.5, 53.5]}
    assert table.index("| iql | 2 x 2 |") < table.index("| bc | 2 x 2 |")  # ranked by IQM
    assert "iql on hopper-medium-v2: seeds 2 left out" in table and "gym:Hopper-v5/medium-replay, run by bc" in table
    assert "| iql | bc | 1.00 [1.00, 1.00] |" in table  # IQL beats BC on every run of both datasets
    # At each evaluation: at step 10 every IQL run scored 20 and every BC run 30 (IQM 20 and 30, P(bc > iql) = 1);
    # at step 20 the final scores above (P(bc > iql) = 0).
    evaluations = table[table.index("## At every evaluation"):]
    assert "| step | bc | iql |" in evaluations
    assert "| 10 | 30.0 [30.0, 30.0] | 20.0 [20.0, 20.0] |" in evaluations
    assert "| 20 | 47.0 [" in evaluations and "| 10 | 1.00 [1.00, 1.00] |" in evaluations
    assert "| 20 | 0.00 [0.00, 0.00] |" in evaluations
    for name in ("performance_profile.png", "curves_hopper-medium-v2.png", "curves_gym_Hopper-v5_medium-replay.png"):
        assert (out / name).stat().st_size > 0, name


def test_score_against_the_number_of_demonstrations(tmp_path):
    """experiments.demo_count groups runs by method and N (the default N when the name leaves it out), and counts a
    GAIL run whose final score fell under half its best as collapsed."""
    root, out = tmp_path / "runs", tmp_path / "analysis"
    for seed, final in enumerate([80.0, 90.0, 70.0]):
        make_run(root / f"bc-10-seed{seed}", "bc", "gym:Hopper-v5/expert-demos/10", seed, [20.0, final])
    make_run(root / "bc-50-seed0", "bc", "gym:Hopper-v5/expert-demos", 0, [20.0, 95.0])  # /50 is the default
    for seed, scores in enumerate([[30.0, 60.0, 25.0], [30.0, 60.0, 55.0]]):
        folder = root / f"gail-10-seed{seed}"
        make_run(folder, "gail", "gym:Hopper-v5/expert-demos/10", seed, scores)
        summary = json.loads((folder / "summary.json").read_text())
        summary.update(evaluations=[{"score_mean": score} for score in scores], wall_time_s=120.0)
        (folder / "summary.json").write_text(json.dumps(summary))
    result = subprocess.run([sys.executable, "-m", "experiments.demo_count", str(root), f"--out={out}"], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert result.returncode == 0, result.stderr
    table = (out / "demos.md").read_text()
    assert "| method | N = 10 | N = 50 |" in table
    assert "| bc | 80.0 ± 5.8 (3) | 95.0 ± 0.0 (1) |" in table  # (80, 90, 70): mean 80, s.e. 10 / sqrt(3)
    assert "| gail | 40.0 ± 15.0 (2) |  |" in table
    assert "| gail-10-seed0 | 30 | 2.0 min | 30 / 60 / 25 | 60 | 25 | yes |" in table
    assert "Collapsed (final score under half the run's best): 1 of 2 runs." in table
    assert (out / "score_vs_demos.png").stat().st_size > 0
    mixed = root / "iql-seed0"
    make_run(mixed, "iql", "hopper-medium-v2", 0, [50.0])
    result = subprocess.run([sys.executable, "-m", "experiments.demo_count", str(root), f"--out={out}"], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert result.returncode != 0 and "'hopper-medium-v2': not a demonstrations dataset" in result.stderr
