"""Diffuser on goal-reaching mazes: the planned state and its normaliser, the start and the goal pinned in every
plan and training window, the three ways to drive an episode (replan, waypoints, actions) and the evaluation's
per-episode memory, and
the point-maze row through the real loop."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents import create_agent, hyperparams
from dql.agents.diffuser import DiffuserAgent
from dql.data.dataset import Dataset
from dql.evaluation import EpisodePolicy
from tests.helpers import config_of, die_after_saves

pytestmark = pytest.mark.slow  # a planner's jitted episodes and the loop

MAZE_TINY = dict(horizon=8, diffusion_steps=4, dim=8, dim_mults=(1, 2), ema_start=0, ema_every=1, steps=20,
                 use_value_guide=False, goal_conditioned=True, state_dims=4, control="waypoints",
                 normalizer="limits", clip_denoised=True, use_padding=False, max_path_length=100,
                 action_weight=1.0, num_plan_samples=1)


def _maze_stream(length=40, seed=0):
    """A point mass [x, y, vx, vy] with its goal [gx, gy], rows as the generated maze data store them."""
    rng = np.random.default_rng(seed)
    velocity = rng.uniform(-0.5, 0.5, (length + 1, 2))
    position = np.cumsum(velocity, axis=0) * 0.1
    states = np.concatenate([position, velocity], axis=1)
    goals = np.tile(rng.uniform(-1, 1, 2), (length, 1))
    observations = np.concatenate([states[:-1], goals], axis=1).astype(np.float32)
    next_observations = np.concatenate([states[1:], goals], axis=1).astype(np.float32)
    return Dataset(observations=observations, actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
                   rewards=np.zeros(length, np.float32), next_observations=next_observations,
                   dones=np.zeros(length, np.float32), name="stream", source="test", episode_returns=np.zeros(1),
                   max_action=np.ones(2, np.float32))


@functools.lru_cache(maxsize=None)
def _stream_agent():
    """The agent on `_maze_stream()`, built once for the module (building compiles the U-Net's initialiser)."""
    dataset = _maze_stream()
    config = config_of("diffuser", **MAZE_TINY)
    stats = DiffuserAgent.dataset_statistics(dataset, config)
    return jax.jit(lambda key: create_agent("diffuser", key, dataset.observation_dim, dataset.action_dim,
                                            dataset.max_action, config, None, stats))(jax.random.PRNGKey(0))


def _maze_agent(dataset, control="waypoints"):
    """The module's agent (for `_maze_stream()`) with its control setting."""
    agent = _stream_agent()
    return agent.replace(hp=dataclasses.replace(agent.hp, control=control)), None


def test_the_normaliser_covers_the_planned_state_only():
    dataset = _maze_stream()
    agent, _ = _maze_agent(dataset)
    low, high = dataset.observations[:, :4].min(0), dataset.observations[:, :4].max(0)
    np.testing.assert_allclose(agent.normalizer["observation_shift"], (low + high) / 2, rtol=1e-6)
    np.testing.assert_allclose(agent.normalizer["observation_scale"], (high - low) / 2, rtol=1e-6)
    batch = {"observations": jnp.asarray(dataset.observations[None, :8]),
             "actions": jnp.asarray(dataset.actions[None, :8])}
    assert agent.trajectories(batch).shape == (1, 8, 2 + 4)  # actions + [x, y, vx, vy]; the goal is not planned


def test_every_plan_starts_at_the_state_and_ends_at_the_goal_at_rest():
    dataset = _maze_stream()
    agent, _ = _maze_agent(dataset)
    observations = jnp.asarray(dataset.observations[[3, 17, 30]])
    plan = jax.jit(agent.plan_arrays)(observations, jax.random.PRNGKey(1))
    states = np.asarray(plan["states"])
    assert states.shape == (3, 8, 4) and plan["actions"].shape == (3, 8, 2)
    np.testing.assert_allclose(states[:, 0], observations[:, :4], atol=1e-5)
    goal_at_rest = np.concatenate([observations[:, 4:], np.zeros((3, 2))], axis=1)
    # The limits normaliser clips plans to the data's range before mapping back: keep the goal inside it.
    inside = np.clip(goal_at_rest, dataset.observations[:, :4].min(0), dataset.observations[:, :4].max(0))
    np.testing.assert_allclose(states[:, -1], inside, atol=1e-5)
    # The states in between are generated, not copied from the conditions.
    assert not np.allclose(states[:, 1:-1], states[:, :1], atol=1e-3)


def test_training_pins_the_window_s_first_and_last_states():
    dataset = _maze_stream()
    agent, _ = _maze_agent(dataset)
    x0 = jax.random.normal(jax.random.PRNGKey(2), (5, 8, 6))
    noise = jax.random.normal(jax.random.PRNGKey(3), (5, 8, 6))
    t = jnp.array([0, 1, 2, 3, 3])
    # A model whose state outputs at the pinned steps are wildly wrong loses nothing for them: they are overwritten.
    base = agent.diffusion_loss(agent.model.params, x0, t, noise)[0]
    shift = jnp.zeros((5, 8, 6)).at[:, 0, 2:].set(100.0).at[:, -1, 2:].set(100.0)
    wrapped = agent.replace(model=agent.model.replace(apply_fn=lambda p, x, s: agent.model.apply_fn(p, x, s) + shift))
    np.testing.assert_allclose(wrapped.diffusion_loss(agent.model.params, x0, t, noise)[0], base, rtol=1e-6)
    # Without goal conditioning the last state is generated, so the same error counts.
    free = agent.replace(hp=dataclasses.replace(agent.hp, goal_conditioned=False))
    free_wrapped = free.replace(model=wrapped.model)
    assert float(free_wrapped.diffusion_loss(agent.model.params, x0, t, noise)[0]) > float(base) + 100.0


def test_waypoint_control_is_diffusers_pd_law_toward_the_next_planned_state():
    dataset = _maze_stream()
    agent, _ = _maze_agent(dataset)
    states = jnp.asarray(np.random.default_rng(4).uniform(-0.2, 0.2, (2, 8, 4)), jnp.float32)
    memory = {"states": states, "actions": jnp.zeros((2, 8, 2))}
    observations = jnp.asarray([[0.05, -0.1, 0.02, 0.01, 9.0, 9.0], [0.1, 0.1, -0.03, 0.0, 9.0, 9.0]])
    for t in (0, 3, 6):
        action, kept = agent.act(observations, memory, jnp.asarray(t), jax.random.PRNGKey(0))
        target = states[:, t + 1]
        expected = (target[:, :2] - observations[:, :2]) + (target[:, 2:] - observations[:, 2:4])
        np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-7)
        assert kept is memory
    for t in (7, 50):  # past the plan: its last state, at rest
        action, _ = agent.act(observations, memory, jnp.asarray(t), jax.random.PRNGKey(0))
        expected = (states[:, -1, :2] - observations[:, :2]) - observations[:, 2:4]
        np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-7)
    far = observations.at[:, :2].set(-50.0)
    action, _ = agent.act(far, memory, jnp.asarray(0), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(action, 1.0)  # clipped to the action box


def test_the_episode_policy_makes_one_plan_per_episode_and_follows_it():
    dataset = _maze_stream()
    agent, _ = _maze_agent(dataset, control="actions")
    agents = jax.tree_util.tree_map(lambda x: x[None], agent)  # one seed
    keys = np.asarray(jax.random.PRNGKey(5))[None]
    policy = EpisodePolicy(agents, keys, episodes=3)
    first = dataset.observations[[0, 12, 30]]
    taken = [policy(first, 0)]
    plan = np.asarray(policy.memory["actions"][0])  # [episodes, H, act]
    rng = np.random.default_rng(6)
    for t in range(1, 10):  # the observations change; the plan stays
        taken.append(policy(first + rng.normal(0, 0.1, first.shape).astype(np.float32), t))
    taken = np.stack(taken, axis=1)
    np.testing.assert_allclose(taken[:, :8], plan, rtol=1e-6)
    np.testing.assert_array_equal(taken[:, 8:], 0.0)
    # A new episode (t = 0 again) plans afresh from its own first states.
    policy(first[::-1].copy(), 0)
    np.testing.assert_allclose(np.asarray(policy.memory["states"][0][:, 0]), first[::-1, :4], atol=1e-5)
    assert not np.allclose(np.asarray(policy.memory["actions"][0]), plan)
    # Replanning keeps no memory and acts as sample_actions does.
    replanning = agent.replace(hp=dataclasses.replace(agent.hp, control="replan"))
    assert replanning.begin(jnp.asarray(first), jax.random.PRNGKey(0)) == {}
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(replanning.act(jnp.asarray(first), {}, jnp.asarray(4), key)[0],
                                  replanning.sample_actions(jnp.asarray(first), key))


@pytest.mark.parametrize("overrides, observation_dim, message", [
    ({"control": "pd"}, 6, "--config.control='pd'"),
    ({}, 5, "--config.goal_conditioned=True needs observations laid out"),
    ({"goal_conditioned": False, "state_dims": 6}, 6, "--config.control=waypoints tracks planned"),
    ({"state_dims": 8}, 6, "--config.state_dims=8 exceeds"),
])
def test_maze_layout_errors_name_the_flag(overrides, observation_dim, message):
    config = config_of("diffuser", **{**MAZE_TINY, **overrides})
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        create_agent("diffuser", jax.random.PRNGKey(0), observation_dim, 2, [1.0, 1.0], config)
    hyperparams("diffuser", config_of("diffuser", **MAZE_TINY), [1.0, 1.0])  # the base is valid


def test_the_point_maze_row_through_the_loop_plans_once_restores_and_resumes_exactly(tmp_path, monkeypatch):
    pytest.importorskip("gymnasium_robotics")
    import dql
    from dql.checkpoint import Checkpoints
    from dql.configs import resolve
    from dql.data import load_dataset
    from dql.data.evaluation_envs import env_for_dataset
    from dql.logs import read_csv
    from dql.trainer import train

    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    name = "gym:PointMaze_UMaze-v3/waypoint/3000"
    dataset = load_dataset(name)
    row = resolve("diffuser", name)
    assert (row.horizon, row.diffusion_steps, row.control, row.goal_conditioned) == (128, 64, "waypoints", True)
    config = resolve("diffuser", name, overrides={
        "horizon": 16, "diffusion_steps": 4, "dim": 8, "dim_mults": (1, 2), "steps": 20, "batch_size": 8,
        "steps_per_dispatch": 10, "eval_every": 10, "eval_episodes": 2, "save_every": 10})
    config.seed = 0
    env = env_for_dataset(dataset, None)
    (summary,) = train(config, dataset, tmp_path / "straight", env)
    # 300-step episodes of the flattened env, scored against the controller.
    assert summary["final"]["step"] == 20 and np.isfinite(summary["final"]["score_mean"])

    policy = dql.load_policy(tmp_path / "straight")
    low, high = dataset.observations[:, :4].min(0), dataset.observations[:, :4].max(0)
    np.testing.assert_allclose(policy.agent.normalizer["observation_shift"], (low + high) / 2, rtol=1e-5)
    actions = policy(dataset.observations[:5], seed=0)  # the replanning policy
    assert actions.shape == (5, 2)

    # Interrupted right after its first checkpoint, then resumed: the same metrics and parameters.
    original_save = die_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset, tmp_path / "resumed", env)
    monkeypatch.setattr(Checkpoints, "save", original_save)
    train(config, dataset, tmp_path / "resumed", env)
    straight, resumed = read_csv(tmp_path / "straight/metrics.csv"), read_csv(tmp_path / "resumed/metrics.csv")
    assert [int(r["step"]) for r in resumed] == [10, 20]
    for a, b in zip(straight, resumed):
        for key in a:
            if key not in ("wall_time_s", "steps_per_s"):
                assert a[key] == b[key], (key, a["step"])
    again = dql.load_policy(tmp_path / "resumed")
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           (policy.agent.model_ema_params, policy.agent.model.params),
                           (again.agent.model_ema_params, again.agent.model.params))
    np.testing.assert_array_equal(again(dataset.observations[:5], seed=0), actions)
