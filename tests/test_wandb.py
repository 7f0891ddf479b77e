"""Weights & Biases logging in offline mode: one W&B run per seed holding metrics.csv's numbers, continued on
resume."""

import json

import pytest

from dql import run_folder
from dql.data import d4rl
from dql.logs import read_csv
from dql.trainer import train

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

pytest.importorskip("wandb")


def _config(steps):
    from dql.configs import get_config

    config = get_config("bc")
    config.update(dict(hidden_dims=(16, 16), steps=steps, batch_size=16, steps_per_dispatch=10, eval_every=10,
                       save_every=10, eval_episodes=1, num_seeds=2, wandb=True, wandb_mode="offline",
                       wandb_project="dql-test"))
    config.seed = 0
    return config


def _wandb_files(folder):
    return sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))


def test_offline_wandb_runs_hold_the_metrics_and_resume_the_same_run(tmp_path, pendulum_file):
    dataset = d4rl.read_hdf5(pendulum_file)
    workdir = tmp_path / "program"
    run_folder.prepare_program(workdir, _config(20))
    train(_config(20), dataset, workdir, ("Pendulum-v1", {}))
    ids = {}
    for seed in (0, 1):
        folder = workdir / f"seed_{seed}"
        ids[seed] = (folder / "wandb_id.txt").read_text().strip()
        (log,) = _wandb_files(folder)
        assert log.name == f"run-{ids[seed]}.wandb"
        content = log.read_bytes()
        rows = read_csv(folder / "metrics.csv")
        # Every logged number is in the W&B run, under the name TensorBoard uses too.
        for tag in (b"train/bc_loss", b"eval/score_mean", b"eval/return_mean"):
            assert tag in content
        for row in rows:
            for key in ("bc_loss", "eval_score_mean"):
                assert json.dumps(float(row[key])).encode() in content, (seed, key, row[key])
    assert ids[0] != ids[1]  # one W&B run per seed

    # A longer run in the same folders resumes the checkpoints and continues the same W&B runs.
    config = _config(30)
    for folder in (workdir, workdir / "seed_0", workdir / "seed_1"):
        saved = json.loads((folder / "config.json").read_text())
        saved["steps"] = 30
        (folder / "config.json").write_text(json.dumps(saved))
    train(config, dataset, workdir, ("Pendulum-v1", {}))
    for seed in (0, 1):
        logs = _wandb_files(workdir / f"seed_{seed}")
        assert len(logs) == 2 and all(log.name == f"run-{ids[seed]}.wandb" for log in logs)
        rows = read_csv(workdir / f"seed_{seed}" / "metrics.csv")
        assert [r["step"] for r in rows] == ["10", "20", "30"]
        assert json.dumps(float(rows[-1]["bc_loss"])).encode() in max(logs).read_bytes()
