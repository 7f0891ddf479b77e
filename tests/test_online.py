"""SAC, the online learner behind the generated datasets: its update on problems with known answers, the replay
buffer's dones, and `python -m dql.train --algo=sac` end to end."""

import json

import jax
import numpy as np
import pytest
from dql.configs.sac import get_config

from dql.agents import create_agent
from dql.data.behaviour import BehaviourPolicy
from dql.online import ReplayBuffer
from tests.test_cli import run_cli
from tests.helpers import run_chunk

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

TARGET = np.array([0.5, -0.3], np.float32)


def test_sac_moves_its_mode_to_the_best_action_and_keeps_entropy_near_target():
    # One-step problem (done = 1): r(a) = -|a - TARGET|^2, actions uniform on the box. Q(a) = r(a), so the policy's
    # mode must reach TARGET; a flipped sign in the actor loss sends it to the corner farthest away.
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (4096, 2)).astype(np.float32)
    data = {
        "observations": np.zeros((4096, 1), np.float32),
        "actions": actions,
        "rewards": -np.sum((actions - TARGET) ** 2, axis=1).astype(np.float32),
        "next_observations": np.zeros((4096, 1), np.float32),
        "dones": np.ones(4096, np.float32),
    }
    config = get_config()
    config.update(dict(hidden_dims=(64, 64), steps=2000, lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3))
    agent = create_agent("sac", jax.random.PRNGKey(0), 1, 2, [1.0, 1.0], config, "data")
    chunk = lambda agent, data, rng: run_chunk(agent, data, rng, 128, 2000)  # noqa: E731
    agent, _, metrics = chunk(agent, data, jax.random.PRNGKey(1))
    mode = np.asarray(agent.sample_actions(np.zeros((1, 1), np.float32), None))[0]
    np.testing.assert_allclose(mode, TARGET, atol=0.1)
    # The temperature is tuned: while the entropy is above its target (-action_dim = -2) alpha falls (a sign error
    # in the temperature loss would raise it), and the entropy falls with it.
    alpha, entropy = np.asarray(metrics["alpha"]), np.asarray(metrics["entropy"])
    assert np.all(entropy[-200:] > -2.0) and alpha[-1] < 0.3 * alpha[0]
    assert entropy[-200:].mean() < entropy[:200].mean() - 0.5
    q = agent.critic.apply_fn(agent.critic.params, np.zeros((2, 1), np.float32), np.stack([TARGET, -TARGET]))
    np.testing.assert_allclose(np.asarray(q).min(0), [0.0, -np.sum((2 * TARGET) ** 2)], atol=0.1)


def test_sac_backup_includes_the_entropy_bonus_and_bootstraps_unless_terminal():
    # Reward 0, never terminal, s' = s, alpha held at 1 (alpha_lr ~ 0): the soft Bellman fixed point is
    # Q = gamma (Q - log pi) in expectation, i.e. Q = gamma / (1 - gamma) * H(pi). A flipped entropy sign gives -H.
    n, gamma = 2048, 0.5
    data = {
        "observations": np.zeros((n, 1), np.float32),
        "actions": np.random.default_rng(0).uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "next_observations": np.zeros((n, 1), np.float32),
        "dones": np.zeros(n, np.float32),
    }
    config = get_config()
    config.update(dict(hidden_dims=(32, 32), steps=3000, lr=1e-3, critic_lr=1e-3, alpha_lr=1e-12, discount=gamma,
                       tau=0.05))
    agent = create_agent("sac", jax.random.PRNGKey(0), 1, 2, [1.0, 1.0], config, "data")
    chunk = lambda agent, data, rng: run_chunk(agent, data, rng, 256, 3000)  # noqa: E731
    _, _, metrics = chunk(agent, data, jax.random.PRNGKey(1))
    entropy, q = np.asarray(metrics["entropy"])[-300:].mean(), np.asarray(metrics["q_mean"])[-300:].mean()
    assert entropy > 0.5  # with Q flat in the action, the policy spreads out
    assert q == pytest.approx(gamma / (1 - gamma) * entropy, abs=0.15)
    # Terminal transitions do not bootstrap: with dones = 1 the same data gives Q = 0.
    data["dones"] = np.ones(n, np.float32)
    agent = create_agent("sac", jax.random.PRNGKey(0), 1, 2, [1.0, 1.0], config, "data")  # the chunk donated it
    _, _, metrics = chunk(agent, data, jax.random.PRNGKey(1))
    assert abs(np.asarray(metrics["q_mean"])[-300:].mean()) < 0.05


def test_replay_buffer_bootstraps_through_timeouts_but_not_terminations():
    buffer = ReplayBuffer(4, 1, 1)
    for row, (terminal, timeout) in enumerate(((False, False), (True, False), (False, True), (False, False))):
        buffer.add(observations=[row], actions=[0.0], rewards=row, next_observations=[row + 1],
                   terminals=terminal, timeouts=timeout)
    batch = buffer.sample(np.random.default_rng(0), 3, 50)
    rows = batch["observations"][..., 0].astype(int)
    np.testing.assert_array_equal(batch["dones"], (rows == 1).astype(np.float32))
    np.testing.assert_array_equal(batch["next_observations"][..., 0], rows + 1)
    assert set(np.unique(rows)) == {0, 1, 2, 3}


def test_online_sac_from_the_command_line(tmp_path):
    workdir = tmp_path / "sac"
    result = run_cli("--algo=sac", "--config=dql/configs/sac.py", "--env=Pendulum-v1", "--steps=200",
                     "--eval_every=100", "--eval_episodes=1", "--batch_size=32", "--config.start_steps=100",
                     "--config.update_after=100", "--config.hidden_dims=16,16", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps/s" in result.stdout and "eval at step 200" in result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [100, 200]
    for name in ("metrics.csv", "learning_curve.png", "config.json", "policies/step_00000200.npz"):
        assert (workdir / name).stat().st_size > 0
    policy = BehaviourPolicy(workdir / "policies" / "step_00000200.npz")
    assert policy.meta["eval_return_mean"] == pytest.approx(summary["evaluations"][-1]["return_mean"])
    actions = policy(np.zeros((3, 3), np.float32), jax.random.PRNGKey(0))
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 2.0)
    # A run folder is never overwritten by another config (the same one resumes), and the online algorithm needs
    # an env.
    again = run_cli("--algo=sac", "--env=Pendulum-v1", f"--workdir={workdir}")
    assert again.returncode != 0 and "holds a run with a different config" in again.stderr
    assert "steps: saved 200, now 1000000" in again.stderr
    no_env = run_cli("--algo=sac", f"--workdir={tmp_path / 'other'}")
    assert no_env.returncode != 0 and "needs --env=ID" in no_env.stderr


def test_an_interrupted_online_run_resumes_exactly(tmp_path, monkeypatch):
    """A run killed right after its second checkpoint (step 250, inside its second Pendulum episode, which began
    at row 200) and run again ends with the same agent, replay buffer, evaluations and losses as a run never
    interrupted: the env's episode, the host RNG and the replay rows are all restored."""
    import csv

    from dql.online import train_online
    from tests.helpers import die_after_saves

    config = get_config()
    config.update(dict(steps=300, eval_every=125, eval_episodes=1, batch_size=16, start_steps=60, update_after=60,
                       update_every=30, hidden_dims=(16, 16)))
    config.seed = 0
    _, whole_buffer, whole_agent = train_online(config, "Pendulum-v1", tmp_path / "whole", verbose=False)

    original_save = die_after_saves(monkeypatch, count=2)
    with pytest.raises(KeyboardInterrupt):
        train_online(config, "Pendulum-v1", tmp_path / "cut", verbose=False)
    monkeypatch.setattr("dql.checkpoint.Checkpoints.save", original_save)
    assert sorted(path.name for path in (tmp_path / "cut" / "replay").iterdir()) == [
        "rows_000000000_000000125.npz", "rows_000000125_000000250.npz"]
    _, cut_buffer, cut_agent = train_online(config, "Pendulum-v1", tmp_path / "cut", verbose=False)

    for key, rows in whole_buffer.contents().items():
        np.testing.assert_array_equal(cut_buffer.contents()[key], rows, err_msg=key)
    for cut, whole in zip(jax.tree_util.tree_leaves(cut_agent), jax.tree_util.tree_leaves(whole_agent)):
        np.testing.assert_array_equal(cut, whole)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("whole", "cut")]
    assert summaries[0]["evaluations"] == summaries[1]["evaluations"]

    def losses(run):
        with open(tmp_path / run / "metrics.csv") as f:
            return [{key: row[key] for key in ("step", "critic_loss", "eval_return_mean")} for row in csv.DictReader(f)]

    assert losses("whole") == losses("cut") and len(losses("cut")) == 3
