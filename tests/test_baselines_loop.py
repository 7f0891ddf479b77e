"""Every registered algorithm through the real loop on a tiny Pendulum file: train, evaluate, checkpoint, restore,
act."""

import json

import jax
import numpy as np
import pytest

import dql
from dql.checkpoint import Checkpoints
from dql.configs import offline_algos
from dql.data import d4rl
from dql.policy import checkpoint_template
from dql.trainer import train
from tests.helpers import small_config
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it


# Sizes beyond tests.helpers.SMALL_SIZES for this test only.
LOOP_OVERRIDES = {"cql": {"num_samples": 2, "lagrange": True}}


@pytest.mark.parametrize("algo", offline_algos())  # every registered algorithm that trains on data
def test_every_algorithm_trains_evaluates_and_restores(tmp_path, pendulum_file, algo):
    dataset = d4rl.read_hdf5(pendulum_file)
    config = small_config(algo, **LOOP_OVERRIDES.get(algo, {}))
    (summary,) = train(config, dataset, tmp_path / "run", ("Pendulum-v1", {}))
    steps, every = config.steps, config.eval_every
    assert summary["final"]["step"] == steps and np.isfinite(summary["final"]["score_mean"])
    template = checkpoint_template(config, 3, 1, dataset.max_action)
    state, meta = Checkpoints(tmp_path / "run", read_only=True).restore(steps, template)
    assert [e["step"] for e in meta["evaluations"]] == list(range(every, steps + 1, every))
    observations = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    actions = np.asarray(state["agent"].sample_actions(observations, jax.random.PRNGKey(0)))
    assert actions.shape == (4, 1) and np.all(np.abs(actions) <= 2.0)


def test_td3bc_from_the_command_line_keeps_its_state_normalisation(tmp_path, pendulum_file):
    workdir = tmp_path / "run"
    result = run_cli("--algo=td3bc", f"--dataset={pendulum_file}", f"--workdir={workdir}", "--steps=20",
                     "--eval_every=10", "--save_every=10", "--eval_episodes=2", "--batch_size=16",
                     "--config.hidden_dims=16,16", "--config.steps_per_dispatch=10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["alpha"] == 2.5
    policy = dql.load_policy(workdir)
    dataset = d4rl.read_hdf5(pendulum_file)
    np.testing.assert_allclose(policy.agent.observation_mean, dataset.observations.mean(0), rtol=1e-5)
    actions = policy(dataset.observations[:5], seed=0)
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)
