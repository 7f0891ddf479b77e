"""The training loop: exact resume, divergence detection, model selection and the outputs of a run."""

import jax
import numpy as np
import pytest

from dql.checkpoint import Checkpoints
from dql.data import d4rl
from dql.logs import read_csv
from dql.policy import checkpoint_template
from dql.trainer import TrainingDiverged, select_models, train
from tests.helpers import die_after_saves, small_config

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

ENV = ("Pendulum-v1", {})


def _params(workdir, config, dataset, step):
    template = checkpoint_template(config, dataset.observation_dim, dataset.action_dim, dataset.max_action)
    state, meta = Checkpoints(workdir, read_only=True).restore(step, template)
    agent = state["agent"]
    return (agent.actor.params, agent.critic.params, agent.actor_ema_params, agent.critic_target_params,
            agent.actor.opt_state), meta


def test_resume_equals_an_uninterrupted_run(tmp_path, pendulum_file, monkeypatch):
    dataset = d4rl.read_hdf5(pendulum_file)
    config = small_config()
    train(config, dataset, tmp_path / "straight", ENV)

    # Interrupt the second run right after its first checkpoint, as a preemption would.
    original_save = die_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset, tmp_path / "resumed", ENV)
    monkeypatch.setattr(Checkpoints, "save", original_save)
    assert Checkpoints(tmp_path / "resumed", read_only=True).latest_step() == 20
    (summary,) = train(config, dataset, tmp_path / "resumed", ENV)

    straight, resumed = read_csv(tmp_path / "straight/metrics.csv"), read_csv(tmp_path / "resumed/metrics.csv")
    assert [int(r["step"]) for r in resumed] == [10, 20, 30, 40]
    for a, b in zip(straight, resumed):
        for key in a:
            if key not in ("wall_time_s", "steps_per_s"):
                assert a[key] == b[key], (key, a["step"])
    assert resumed[1]["eval_score_mean"] != "" and resumed[3]["eval_score_mean"] != ""
    (p_straight, meta_straight), (p_resumed, meta_resumed) = (
        _params(tmp_path / d, config, dataset, 40) for d in ("straight", "resumed")
    )
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p_straight, p_resumed)
    assert meta_straight["evaluations"] == meta_resumed["evaluations"]
    # Offline selection ranks the BC loss averaged over all steps since the previous evaluation.
    bc_rows = [float(r["bc_loss"]) for r in straight]
    assert meta_straight["evaluations"][1]["bc_loss"] == pytest.approx(np.mean(bc_rows[2:4]), rel=1e-6)
    assert summary["final"]["step"] == 40
    for name in ("metrics.csv", "learning_curve.png", "summary.json"):
        assert (tmp_path / "resumed" / name).stat().st_size > 0


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, pendulum_file):
    dataset = d4rl.read_hdf5(pendulum_file)
    # An absurd actor learning rate with no clipping: the first update throws the actor's weights to ~1e18, so the
    # losses of step 2 overflow while step 1's are finite.
    config = small_config(lr=1e18, grad_norm=0.0, save_every=1, eval_every=1000, steps=10)
    workdir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf|-inf) at step 2 .*last good checkpoint is step 1"):
        train(config, dataset, workdir, None)
    assert Checkpoints(workdir, read_only=True).all_steps() == [1]
    assert [int(r["step"]) for r in read_csv(workdir / "metrics.csv")] == [1]


def test_model_selection():
    evals = [
        {"step": 10, "score_mean": 50.0, "bc_loss": 0.30},
        {"step": 20, "score_mean": 80.0, "bc_loss": 0.10},
        {"step": 30, "score_mean": 70.0, "bc_loss": 0.20},
    ]
    chosen = select_models(evals, top_k=1)
    assert chosen["final"]["step"] == 30 and chosen["online"]["step"] == 20
    assert chosen["offline"]["step"] == 30  # second-smallest BC loss
    assert select_models(evals, top_k=0)["offline"]["step"] == 20
    assert select_models(evals, top_k=7)["offline"]["step"] == 10  # clipped to the largest rank
    assert select_models([], top_k=1) == {}
