"""experiments.parity_curves (take-off steps and their medians against hand-computed cases, the whole script on
small run folders), the progress line's ETA and the parity table (benchmarks.parity.table)."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dql.logs import Progress
from experiments.parity_curves import compare_two, interpolated_takeoff, median_takeoff, takeoff_step

ROOT = Path(__file__).resolve().parent.parent


def test_takeoff_is_the_first_evaluation_at_the_threshold():
    assert takeoff_step([10, 20, 30, 40], [5.0, 49.9, 50.0, 80.0], 50.0) == 30
    assert takeoff_step([10, 20, 30], [60.0, 10.0, 70.0], 50.0) == 10  # the first, not the last crossing
    assert takeoff_step([10, 20], [1.0, 2.0], 50.0) is None


def test_interpolated_takeoff_is_where_the_line_between_evaluations_meets_the_threshold():
    assert interpolated_takeoff([10, 20, 30, 40], [5.0, 40.0, 60.0, 80.0], 50.0) == 25.0  # halfway from 40 to 60
    assert interpolated_takeoff([10, 20, 30], [60.0, 10.0, 70.0], 50.0) == 10  # already there at the first
    assert interpolated_takeoff([10, 20, 30], [10.0, 70.0, 20.0], 40.0) == 15.0  # the first crossing
    assert interpolated_takeoff([10, 20], [1.0, 2.0], 50.0) is None


def test_median_takeoff_ranks_seeds_that_never_took_off_last():
    assert median_takeoff([30, 10, 20]) == 20
    assert median_takeoff([40, 10, 30, 20]) == 25  # even count: the two middle ones
    assert median_takeoff([None, 10, 20]) == 20  # the one that never took off is the latest
    assert median_takeoff([None, None, 20]) == "never"
    assert median_takeoff([None, 10, None, 20]) == "between the last evaluation and never"


def test_compare_two_compares_take_off_steps_when_every_seed_took_off():
    def algo(crossings):
        seeds = {str(i): {"steps": [10], "scores": [50.0], "takeoff_step_interpolated": c}
                 for i, c in enumerate(crossings)}
        return {"seeds": seeds, "mean_score_by_step": {"10": 50.0}}

    # Later take-off in 4 of the 6 pairs: 10k is earlier than both 20k, 30k and 40k later than both.
    row = compare_two({"a": algo([10_000, 30_000, 40_000]), "b": algo([20_000, 20_000])}, reps=200)["by_step"]
    assert row["take-off step (interpolated)"]["P(a > b)"][0] == 0.667
    assert row["take-off step (interpolated)"]["a mean"][0] == 26_666.667


def _run_folder(folder: Path, algo: str, seed: int, scores: list[float], transitions: int = 155_000) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"algo": algo, "seed": seed}))
    steps = [10_000 * (i + 1) for i in range(len(scores))]
    final = {"step": steps[-1], "return_mean": 0.0, "return_std": 0.0, "score_mean": scores[-1], "score_std": 0.0}
    dataset = {"name": "gym:Hopper-v5/full-replay", "average_normalized_score": 20.0, "average_return": 200.0,
               "transitions": transitions}
    (folder / "summary.json").write_text(json.dumps({"final": final, "dataset": dataset}))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "eval_score_mean"])
        writer.writeheader()
        writer.writerows({"step": s, "eval_score_mean": v} for s, v in zip(steps, scores))


@pytest.mark.slow
def test_parity_curves_writes_takeoffs_medians_and_the_figure(tmp_path):
    # Default threshold: halfway from the data average (20) to 100 = 60.
    for seed, scores in enumerate([[10, 70, 80], [10, 20, 65], [5, 10, 30]]):
        _run_folder(tmp_path / "runs" / "dql" / f"seed_{seed}", "dql", seed, scores)
    for seed, scores in enumerate([[60, 70, 80], [10, 61, 65]]):
        _run_folder(tmp_path / "runs" / "reference" / f"seed_{seed}", "dql-reference", seed, scores)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "experiments.parity_curves", str(tmp_path / "runs"),
                             f"--out_dir={out}", "--bootstrap=200"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "takeoff.json").read_text())
    assert summary["takeoff_score"] == 60.0
    ours, theirs = summary["algorithms"]["dql"], summary["algorithms"]["dql-reference"]
    assert [s["takeoff_step"] for s in ours["seeds"].values()] == [20_000, 30_000, None]
    assert ours["median_takeoff_step"] == 30_000
    assert theirs["median_takeoff_step"] == 15_000
    # 10k + 50/60 of 10k; 20k + 40/45 of 10k; never. Theirs: already at 60 at 10k; 10k + 50/51 of 10k.
    assert [s["takeoff_step_interpolated"] for s in ours["seeds"].values()] == [18_333, 28_889, None]
    assert ours["median_takeoff_step_interpolated"] == 28_889
    assert theirs["median_takeoff_step_interpolated"] == (10_000 + 19_804) / 2
    assert ours["mean_score_by_step"]["30000"] == 58.33  # (80 + 65 + 30) / 3, rounded
    assert (out / "curves.png").stat().st_size > 10_000
    # P(a run of ours beats one of theirs), ties half: at 10k 1 of 6 pairs (two ties), at 20k 1.5 of 6, at 30k 2 of
    # 6 (80 = 80 and 65 = 65 tie, 80 > 65); areas under the curves (run means) 53.3, 31.7, 15 against 70, 45.3:
    # only 53.3 > 45.3, 1 of 6.
    comparison = summary["comparison"]["by_step"]
    label = "P(dql > dql-reference)"
    assert [comparison[step][label][0] for step in ("10000", "20000", "30000")] == [0.167, 0.25, 0.333]
    assert comparison["10000"]["dql mean"][0] == 8.333  # (10 + 10 + 5) / 3
    assert comparison["10000"]["dql-reference mean"][0] == 35.0
    point, low, high = comparison["area under the curve"][label]
    assert point == 0.167 and low < point < high
    assert "take-off step (interpolated)" not in comparison  # one of ours never took off
    # A seed trained on another file under the same name (the replay re-generated on another CPU) is refused.
    _run_folder(tmp_path / "runs" / "reference" / "seed_2", "dql-reference", 2, [60, 70, 80], transitions=154_000)
    mixed = subprocess.run([sys.executable, "-m", "experiments.parity_curves", str(tmp_path / "runs"),
                            f"--out_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert mixed.returncode != 0
    assert "the runs trained on different files under the name gym:Hopper-v5/full-replay" in mixed.stderr
    assert "1 runs on {'name': 'gym:Hopper-v5/full-replay', 'transitions': 154000" in mixed.stderr
    assert "5 runs on" in mixed.stderr


def test_progress_eta_follows_the_latest_window():
    # SAC's random-action start runs far faster than its updates; the ETA must not keep that pace.
    stream = io.StringIO()
    progress = Progress(total_steps=100_000, label="run", stream=stream)
    progress.update(5_000, 5_000, 1.0, {})  # 5000 steps/s
    progress.update(10_000, 5_000, 50.0, {})  # 100 steps/s: 90,000 steps left -> 15 minutes
    assert "ETA 15m00s" in stream.getvalue().splitlines()[-1]


def _parity_result(updates: int, distance: float, overrides: list[str]) -> dict:
    diff = {"params": {"actor": {"rel_l2": distance}, "critic": {"rel_l2": distance / 2}}}
    at = {"1": diff, str(updates): diff}
    return {"algo": "cql", "reference": "corl", "repo": "tinkoff-ai/CORL", "file": "cql.py",
            "reference_commit": "6afec90abc", "overrides": overrides,
            "variants": [{"variant": "default", "float64": at, "float32": at, "float32_floor": at,
                          "ours_float32_vs_reference_float64": at}],
            "differences_found": [{"where": "cql.py:513", "what": "log alpha' starts at 1", "fate": "option"}]}


def test_parity_table_shows_each_runs_settings_and_each_finding_once():
    from benchmarks.parity.table import table

    text = table([_parity_result(20, 3e-15, []), _parity_result(1000, 4e-14, ["batch_size=32"])])
    rows = [line for line in text.splitlines() if line.startswith("| cql")]
    assert rows[0].split(" | ")[2:5] == ["default", "1 / 20", "3.0e-15 / 3.0e-15"]  # the worst group, per update
    assert rows[1].split(" | ")[2:5] == ["default (batch_size=32)", "1 / 1000", "4.0e-14 / 4.0e-14"]
    assert text.count("log alpha' starts at 1") == 1  # a reference compared twice: its findings listed once
