"""SIGTERM (Slurm, preemptible VMs, TPU maintenance): the run checkpoints at the end of its dispatch, exits, and the
same command resumes it to the result of an uninterrupted run."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np

import dql
from dql.checkpoint import Checkpoints
from dql.logs import read_csv
from tests.test_cli import ROOT
import pytest

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

# Short dispatches with an evaluation after each leave time for the signal to land mid-run.
FLAGS = ["--algo=bc", "--steps=200", "--eval_every=10", "--save_every=100", "--eval_episodes=1", "--batch_size=16",
         "--config.hidden_dims=16,16", "--config.steps_per_dispatch=10"]


def _command(dataset, workdir):
    return [sys.executable, "-m", "dql.train", f"--dataset={dataset}", f"--workdir={workdir}", *FLAGS]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu")


def test_sigterm_checkpoints_exits_and_resumes_to_the_uninterrupted_result(tmp_path, pendulum_file):
    workdir = tmp_path / "preempted"
    process = subprocess.Popen(_command(pendulum_file, workdir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "step 20/200" in line:  # training is under way
            process.send_signal(signal.SIGTERM)
            break
    lines.extend(process.stdout)
    assert process.wait(timeout=120) == 143, "".join(lines)[-3000:]
    output = "".join(lines)
    assert "SIGTERM: stopped at step" in output, output[-3000:]
    stopped = int(output.split("SIGTERM: stopped at step ")[1].split()[0])
    assert 20 <= stopped < 200
    assert Checkpoints(workdir, read_only=True).latest_step() == stopped
    assert not (workdir / "summary.json").exists()

    resumed = subprocess.run(_command(pendulum_file, workdir), cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from the checkpoint at step {stopped}" in resumed.stdout
    straight = subprocess.run(_command(pendulum_file, tmp_path / "straight"), cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]

    rows_resumed, rows_straight = (read_csv(tmp_path / d / "metrics.csv") for d in ("preempted", "straight"))
    assert [r["step"] for r in rows_resumed] == [r["step"] for r in rows_straight]
    for a, b in zip(rows_resumed, rows_straight):
        assert {k: v for k, v in a.items() if k not in ("wall_time_s", "steps_per_s")} == \
            {k: v for k, v in b.items() if k not in ("wall_time_s", "steps_per_s")}
    policies = [dql.load_policy(tmp_path / d) for d in ("preempted", "straight")]
    assert policies[0].step == policies[1].step == 200
    jax.tree_util.tree_map(np.testing.assert_array_equal, policies[0].agent.actor.params,
                           policies[1].agent.actor.params)
