"""One data-parallel update over 4 (forced host) devices equals the single-device update on the whole batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_data_parallel_update_equals_single_device_update():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "tests.dp_check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    for algo in ("dql", "bc", "diffusion_bc", "td3bc", "iql", "cql"):
        gaps = report[algo]
        assert gaps["metric_gap"] <= 1e-4, (algo, gaps)
        assert gaps["param_gap"] < 1e-5 * max(1.0, gaps["param_scale"]), (algo, gaps)
    assert report["chunk_finite"] and report["chunk_step"] == 5
    assert "was trained on 4 device(s), this machine offers 2" in report["device_change"]
