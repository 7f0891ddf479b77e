"""The benchmark scripts run and print the JSON they document (tiny sizes; the figures themselves are not tested)."""

import json
import os
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16,)", "--set=num_action_candidates=4"]


def run_module(module, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_step_benchmark_counts_the_flops_of_one_update_of_one_seed():
    """flops_per_step is XLA's count for one update of one seed: the same whatever the seeds per program and the
    updates per dispatch (a count of the whole dispatch or of every seed would be 2x or 3x off), and about twice as
    much for twice the batch (the matrix products grow with it, the optimiser's work does not)."""
    common = (*TINY, "--algo=bc", "--repeats=1", "--num_rows=50")
    base = run_module("benchmarks.train_step", *common, "--batch_size=8", "--steps_per_dispatch=5")
    grouped = run_module("benchmarks.train_step", *common, "--batch_size=8", "--steps_per_dispatch=10",
                         "--num_seeds=3")
    wider = run_module("benchmarks.train_step", *common, "--batch_size=16", "--steps_per_dispatch=5")
    assert base["metrics_finite"] and grouped["metrics_finite"] and grouped["num_seeds"] == 3
    assert grouped["flops_per_step"] == base["flops_per_step"] > 0
    assert 1.4 < wider["flops_per_step"] / base["flops_per_step"] < 2.1


def test_act_latency_benchmark_reports_each_batch_size():
    report = run_module("benchmarks.act_latency", *TINY, "--calls=5", "--batch_sizes=1,3")
    assert {"batch_1", "batch_3"} <= set(report)
    assert report["settings"] == {"num_action_candidates": 4, "diffusion_steps": 5}  # --set reached the agent


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


def test_the_replay_check_digests_a_buffer_and_the_file_generated_from_it_alike(tmp_path):
    """`cpu_independence --replay_steps=K` compares a re-run's first K buffer rows with the cached full-replay file's:
    the file that generate() writes from a buffer must give the buffer's digest (whatever dtypes and layout the
    writer uses, and the last row's timeout that the replay marks), over all rows or a prefix, and one changed value
    in the rows must change it."""
    import h5py
    import numpy as np

    from benchmarks.cpu_independence import rows_sha256
    from dql.data import gym_datasets
    from dql.online import ReplayBuffer

    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(40, 11, 3)
    for row in range(40):
        buffer.add(observations=rng.normal(size=11), actions=rng.uniform(-1, 1, 3), rewards=rng.normal(),
                   next_observations=rng.normal(size=11), terminals=row == 17, timeouts=row == 30)

    def replay(env_id, level):
        arrays = buffer.contents()
        arrays["timeouts"][-1] = True
        return arrays, {}

    path = gym_datasets.generate("Hopper-v5", "full-replay", path=tmp_path / "full-replay.hdf5", replay=replay)
    rows = buffer.contents()
    with h5py.File(path, "r") as file:
        assert rows_sha256(file, 40) == rows_sha256(rows, 40)
        assert rows_sha256(file, 25) == rows_sha256(rows, 25) != rows_sha256(rows, 40)
    rows["rewards"][24] += 1e-3
    assert rows_sha256(rows, 25) != rows_sha256(buffer.contents(), 25)
    rows = buffer.contents()
    rows["terminals"][3] = True
    assert rows_sha256(rows, 25) != rows_sha256(buffer.contents(), 25)
