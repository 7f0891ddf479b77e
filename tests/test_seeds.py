"""Many seeds in one compiled program: every seed's run folder equals the separate run with that seed."""

import jax
import numpy as np
import pytest

import dql
from dql import run_folder
from dql.checkpoint import Checkpoints
from dql.configs import offline_algos
from dql.data import d4rl
from dql.logs import read_csv
from dql.policy import checkpoint_template
from dql.trainer import train
from tests.helpers import die_after_saves, small_config

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

ENV = ("Pendulum-v1", {})


def _config(algo, **overrides):
    if algo == "dql":
        return small_config(steps=20, eval_every=10, save_every=10, **overrides)
    return small_config(algo, **{"steps": 10, "batch_size": 32, "eval_episodes": 0, **overrides})


def _run(config, dataset, workdir, env=None):
    run_folder.prepare_program(workdir, config)
    return train(config, dataset, workdir, env)


def _weights(policy) -> list[np.ndarray]:
    """The agent's float leaves (networks, targets, optimiser moments): what training changed, key aside."""
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(policy.agent)
            if np.issubdtype(np.asarray(leaf).dtype, np.floating)]


def _assert_same_policy(program_dir, single_dir, observations):
    program, single = dql.load_policy(program_dir), dql.load_policy(single_dir)
    for ours, theirs in zip(_weights(program), _weights(single), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    for seed in (0, 3):
        np.testing.assert_allclose(program(observations, seed), single(observations, seed), rtol=1e-4, atol=1e-4)


def test_a_program_stopped_in_its_first_save_starts_again(tmp_path, pendulum_file, monkeypatch):
    dataset = d4rl.read_hdf5(pendulum_file)
    config = _config("bc", num_seeds=2, steps=20)
    die_after_saves(monkeypatch, 1)  # seed 0 saved step 10, seed 1 nothing
    with pytest.raises(KeyboardInterrupt):
        _run(config, dataset, tmp_path / "program")
    monkeypatch.undo()
    _run(config, dataset, tmp_path / "program")
    _run(config, dataset, tmp_path / "straight")
    for seed in (0, 1):
        rows = [read_csv(tmp_path / d / f"seed_{seed}/metrics.csv") for d in ("program", "straight")]
        assert [r["bc_loss"] for r in rows[0]] == [r["bc_loss"] for r in rows[1]] and len(rows[0]) == 2


@pytest.mark.parametrize("algo", [algo for algo in offline_algos() if algo != "dql"])  # dql: the test below
def test_every_seed_of_a_program_equals_its_separate_run(tmp_path, pendulum_file, algo):
    dataset = d4rl.read_hdf5(pendulum_file)
    _run(_config(algo, num_seeds=2), dataset, tmp_path / "program")
    _run(_config(algo, seed=1), dataset, tmp_path / "alone")
    observations = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    _assert_same_policy(tmp_path / "program/seed_1", tmp_path / "alone", observations)
    # The two seeds differ (a program that trained one seed twice would pass the check above). Weights, not
    # actions: a tiny policy after 10 updates can sit at the action bound for every state whatever its seed.
    seed0, alone = dql.load_policy(tmp_path / "program/seed_0"), dql.load_policy(tmp_path / "alone")
    assert max(np.abs(a - b).max() for a, b in zip(_weights(seed0), _weights(alone), strict=True)) > 1e-3


def test_dql_program_evaluates_checkpoints_and_resumes_like_separate_runs(tmp_path, pendulum_file, monkeypatch):
    dataset = d4rl.read_hdf5(pendulum_file)
    config = _config("dql", num_seeds=2)
    # Stop the program while it saves step 20 (seed 0 saved it, seed 1 not), as a preemption could: it resumes
    # both seeds from step 10, their newest common checkpoint.
    die_after_saves(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _run(config, dataset, tmp_path / "program", ENV)
    monkeypatch.undo()
    assert Checkpoints(tmp_path / "program/seed_0", read_only=True).all_steps() == [10, 20]
    summaries = _run(config, dataset, tmp_path / "program", ENV)
    assert [s["final"]["step"] for s in summaries] == [20, 20]

    alone = _run(_config("dql", seed=1), dataset, tmp_path / "alone", ENV)[0]
    program_rows, alone_rows = (read_csv(tmp_path / d / "metrics.csv") for d in ("program/seed_1", "alone"))
    assert [r["step"] for r in program_rows] == [r["step"] for r in alone_rows] == ["10", "20"]
    for a, b in zip(program_rows, alone_rows):
        for key in ("critic_loss", "bc_loss", "actor_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5), key
    # Evaluation of both seeds ran in one vector env; seed 1's equals its separate evaluation.
    assert summaries[1]["final"]["return_mean"] == pytest.approx(alone["final"]["return_mean"], rel=1e-3)
    assert summaries[0]["final"]["return_mean"] != pytest.approx(alone["final"]["return_mean"], rel=1e-3)
    observations = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    _assert_same_policy(tmp_path / "program/seed_1", tmp_path / "alone", observations)
    # Every seed folder is a complete run folder.
    template = checkpoint_template(config, 3, 1, dataset.max_action)
    for seed in (0, 1):
        folder = tmp_path / f"program/seed_{seed}"
        assert run_folder.json.loads((folder / "config.json").read_text())["seed"] == seed
        state, meta = Checkpoints(folder, read_only=True).restore(20, template)
        assert [e["step"] for e in meta["evaluations"]] == [10, 20]
        assert int(jax.device_get(state["agent"].step)) == 20
