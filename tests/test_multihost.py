"""Multi-host training: two processes joined by jax.distributed (on loopback, CPU collectives over gloo) train
data-parallel over their global devices, and the result equals one process with two devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import dql
from dql.logs import read_csv
from tests.test_cli import ROOT

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

FLAGS = ["--algo=dql", "--steps=20", "--eval_every=10", "--save_every=10", "--eval_episodes=0", "--batch_size=16",
         "--config.hidden_dims=16,16", "--config.steps_per_dispatch=10", "--config.num_action_candidates=4",
         "--config.ema_start=5"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(devices: int) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"  # after the suite's
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


def test_two_processes_equal_one_process_with_two_devices(tmp_path, pendulum_file):
    port = _free_port()
    multihost = tmp_path / "multihost"
    processes = [
        subprocess.Popen([sys.executable, "-m", "dql.train", f"--dataset={pendulum_file}", f"--workdir={multihost}",
                          "--multihost", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                          f"--process_id={index}", *FLAGS],
                         cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index in range(2)
    ]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("the two-process run did not finish in 300 s")
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "process 0 of 2: 1 local, 2 global device(s)" in outputs[0]
    assert "process 1 of 2: 1 local, 2 global device(s)" in outputs[1]
    assert "final policy" not in outputs[1] and "== dql:" in outputs[0]  # only process 0 reports and writes

    single = tmp_path / "single"
    result = subprocess.run([sys.executable, "-m", "dql.train", f"--dataset={pendulum_file}", f"--workdir={single}",
                             *FLAGS], cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    rows_multi, rows_single = read_csv(multihost / "metrics.csv"), read_csv(single / "metrics.csv")
    assert [r["step"] for r in rows_multi] == [r["step"] for r in rows_single] == ["10", "20"]
    for a, b in zip(rows_multi, rows_single):
        for key in ("critic_loss", "bc_loss", "actor_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    meta = json.loads((multihost / "checkpoints/20/meta/metadata").read_text())
    assert meta["num_devices"] == 2  # the batch was split over the two processes' devices
    params = [dql.load_policy(folder).agent for folder in (multihost, single)]
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           (params[0].actor.params, params[0].critic.params),
                           (params[1].actor.params, params[1].critic.params))
