"""`python -m dql.train` end to end on a tiny file, its outputs, load_policy, and its refusals of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dql
from dql.logs import read_csv
from tests.helpers import write_d4rl_file

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--steps=20", "--eval_every=10", "--save_every=10", "--eval_episodes=2", "--batch_size=16",
    "--config.hidden_dims=32,32", "--config.steps_per_dispatch=10", "--config.num_action_candidates=4",
    "--config.tensorboard=True",
]


def run_cli(*args, cwd=ROOT, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "dql.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_trains_evaluates_saves_and_resumes(tmp_path, pendulum_file):
    workdir = tmp_path / "run"
    result = run_cli(f"--dataset={pendulum_file}", f"--workdir={workdir}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "steps/s" in out and "ETA" in out
    assert "behaviour data (3 episodes): average return" in out and "final policy at step 20" in out
    assert "offline selection (BC-loss rank 1)" in out and "normalized score" in out
    config = json.loads((workdir / "config.json").read_text())
    assert config["steps"] == 20 and config["hidden_dims"] == [32, 32] and config["algo"] == "dql"
    for name in ("metrics.csv", "learning_curve.png", "summary.json", "dataset.json"):
        assert (workdir / name).stat().st_size > 0
    assert (workdir / "checkpoints" / "20").is_dir()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/score_mean")] == [10, 20]
    critic_loss = [e.value for e in events.Scalars("train/critic_loss")]
    rows = [float(r["critic_loss"]) for r in read_csv(workdir / "metrics.csv")]
    np.testing.assert_allclose(critic_loss, rows, rtol=1e-6)  # the same numbers as metrics.csv

    policy = dql.load_policy(workdir)
    observations = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    actions = policy(observations, seed=1)
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)
    np.testing.assert_array_equal(actions, policy(observations, seed=1))
    with pytest.raises(ValueError, match=r"observations must have shape \[B, 3\]"):
        policy(np.zeros((2, 4)))

    # Same flags again: the run is complete, so it resumes at step 20 and only reports.
    again = run_cli(f"--dataset={pendulum_file}", f"--workdir={workdir}", *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from the checkpoint at step 20" in again.stdout and "compiled" not in again.stdout

    # A different config in the same workdir is refused before anything is touched.
    before = (workdir / "metrics.csv").read_text()
    changed = run_cli(f"--dataset={pendulum_file}", f"--workdir={workdir}", *TINY, "--config.eta=2.0")
    assert changed.returncode != 0
    assert "holds a run with a different config (eta: saved 1.0, now 2.0)" in changed.stderr
    assert (workdir / "metrics.csv").read_text() == before

    # So is other data at the same path (a replay tier re-generated on another CPU, a re-downloaded file).
    pendulum_file.unlink()
    write_d4rl_file(pendulum_file, episodes=((60, False), (50, True), (41, False)), obs_dim=3, act_dim=1, act_scale=2.0,
                    attrs={"env_id": "Pendulum-v1", "ref_min_score": -1224.16, "ref_max_score": -146.98,
                           "max_action": np.array([2.0], np.float32)})
    moved = run_cli(f"--dataset={pendulum_file}", f"--workdir={workdir}", *TINY)
    assert moved.returncode != 0
    assert "holds a run trained on other data than" in moved.stderr, moved.stderr
    assert "(transitions: saved 148, now 149; average_return: saved" in moved.stderr, moved.stderr
    assert (workdir / "metrics.csv").read_text() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset=hopper-mediocre-v2"], "--dataset='hopper-mediocre-v2' is neither"),
        (["--algo=dqn"], "--algo='dqn' is not a known algorithm"),
        (["--env=Hopper-v5"], "has 3-dim observations but env Hopper-v5 has shape (11,)"),
        (["--env=NoSuchEnv-v0"], "--env: cannot make Gymnasium environment 'NoSuchEnv-v0'"),
        (["--batch_size=0"], "--batch_size (config.batch_size) must be positive, got 0"),
        (["--config.beta_schedule=sigmoid"], "unknown beta schedule 'sigmoid'"),
        (["--config.reward_tune=clip"], "--config.reward_tune='clip'"),
        (["--config.nonexistent=1"], "nonexistent"),
        # Refused by the agent's create(), which sees the data's observation size: still before the folder exists.
        (["--algo=diffusion_bc", "--config.goal_dims=3"], "--config.goal_dims=3 must be between 0 and the obs"),
    ],
)
def test_cli_rejects_bad_input_before_training(tmp_path, pendulum_file, args, message):
    workdir = tmp_path / "run"
    result = run_cli(f"--dataset={pendulum_file}", f"--workdir={workdir}", *args, "--steps=5",
                     "--config.hidden_dims=8")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not workdir.exists()


def test_cli_rejects_unreadable_dataset_and_nan_data(tmp_path):
    bad = tmp_path / "nan.hdf5"
    write_d4rl_file(bad, rewards=np.where(np.arange(12) == 3, np.inf, 0.0).astype(np.float32))
    result = run_cli(f"--dataset={bad}", "--eval_episodes=0", f"--workdir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert f"{bad}: key 'rewards' has 1 NaN/inf value(s), first at row 3" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_folder_older_than_a_config_key_resumes_at_its_default(tmp_path):
    """Keys an algorithm gains later (diffusion_bc's guidance keys) are absent from older run folders: such a
    folder holds a run of today's config at the key's default (which computes what the run computed), and a
    changed value is still refused, naming the key."""
    from dql.configs import get_config
    from dql.run_folder import holds_run_of, jsonable

    config = get_config("diffusion_bc")
    older = {key: value for key, value in jsonable(config).items()
             if key not in ("goal_dims", "condition_dropout", "guidance_scale")}
    (tmp_path / "config.json").write_text(json.dumps(older))
    assert holds_run_of(tmp_path, config)
    config.goal_dims = 2
    with pytest.raises(ValueError, match=r"different config \(goal_dims: saved 0, now 2\)"):
        holds_run_of(tmp_path, config)
