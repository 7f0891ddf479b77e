import os
import tempfile

import numpy as np
import pytest

from tests.helpers import write_d4rl_file

# One compilation per distinct program in the whole suite: the tests and the command-line processes they start
# share JAX's persistent compilation cache, so a program compiled once (the same tiny run started again to resume
# or to compare, say) is read back instead of compiled again. It changes no result.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dql-tests-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# The suite's programs are tiny, so compiling them costs far more than running them: LLVM's optimisation level 0
# compiles about twice as fast on CPU (the tiny DQL update: 7.0 s to 4.1 s on one idle Zen 3 core) and changes no
# result beyond float rounding. The processes the tests start inherit it (the device-count tests append to it);
# tests/helpers.compiled_for compiles the long bandit trainings at full optimisation, where running dominates.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


@pytest.fixture
def pendulum_file(tmp_path):
    """A small D4RL-format file with Pendulum-v1's sizes (3-dim observations, torque in [-2, 2])."""
    path = tmp_path / "pendulum-tiny.hdf5"
    write_d4rl_file(
        path,
        episodes=((60, False), (50, True), (40, False)),
        obs_dim=3,
        act_dim=1,
        act_scale=2.0,
        attrs={"env_id": "Pendulum-v1", "ref_min_score": -1224.16, "ref_max_score": -146.98,
               "max_action": np.array([2.0], np.float32)},
    )
    return path


@pytest.fixture
def dataset_cache(tmp_path, monkeypatch):
    """A fresh dataset cache (DQL_DATASET_DIR) for tests that generate datasets."""
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
