"""The benchmark scripts run and print the JSON they document (tiny sizes; the figures themselves are not tested)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16,)", "--set=num_action_candidates=4"]


def run_module(module, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_step_benchmark_reports_throughput_and_flops():
    report = run_module("benchmarks.train_step", *TINY, "--batch_size=8", "--steps_per_dispatch=5", "--repeats=2",
                        "--num_rows=50", "--num_seeds=3")
    assert report["steps_per_s"] > 0 and report["compile_s"] > 0 and report["metrics_finite"]
    assert report["num_seeds"] == 3
    assert abs(report["seed_steps_per_s"] - 3 * report["steps_per_s"]) <= 0.02
    assert len(report["steps_per_s_each_repeat"]) == 2
    # One update of these sizes does at least the matrix products of a forward pass of each network.
    assert report["flops_per_step"] > 2 * 8 * 16 * 5
    assert report["backend"] == "cpu" and report["devices"] >= 1


def test_act_latency_benchmark_reports_each_batch_size():
    report = run_module("benchmarks.act_latency", *TINY, "--calls=5", "--batch_sizes=1,3")
    for key in ("batch_1", "batch_3"):
        assert 0 < report[key]["min_ms"] <= report[key]["median_ms"] <= report[key]["p90_ms"]
    assert report["settings"] == {"num_action_candidates": 4, "diffusion_steps": 5}


def test_every_family_member_runs_in_the_benchmarks():
    """ReBRAC's update needs the data's next actions; IDQL acts with num_samples, not num_action_candidates."""
    rebrac = run_module("benchmarks.train_step", "--algo=rebrac", "--obs_dim=5", "--act_dim=2",
                        "--set=hidden_dims=(16,)", "--batch_size=8", "--steps_per_dispatch=5", "--repeats=1",
                        "--num_rows=50")
    assert rebrac["metrics_finite"]
    idql = run_module("benchmarks.act_latency", "--algo=idql", "--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16,)",
                      "--set=actor_hidden_dim=16", "--set=actor_num_blocks=1", "--set=time_dim=8",
                      "--set=num_samples=4", "--calls=5", "--batch_sizes=1")
    assert idql["settings"]["num_samples"] == 4 and idql["batch_1"]["median_ms"] > 0
