"""Demonstrations (dql.data.demos): the point mazes' multi-route `demos` and the locomotion `expert-demos`."""

import json

import gymnasium as gym
import numpy as np
import pytest

from dql.data import (
    DatasetError,
    demos,
    gym_datasets,
    is_dataset_name,
    load_dataset,
    maze,
)
from tests.helpers import read_hdf5

pytest.importorskip("gymnasium_robotics")

UMAZE, MEDIUM = "PointMaze_UMaze-v3", "PointMaze_Medium-v3"
BLOCK = [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]  # an open 2 x 2 block
RING = [  # ten cells around a 1 x 2 wall
    [1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 1],
    [1, 0, 1, 1, 0, 1],
    [1, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1],
]
TOP = ((1, 1), (1, 2), (1, 3), (1, 4))
AROUND = ((1, 1), (2, 1), (3, 1), (3, 2), (3, 3), (3, 4), (2, 4), (1, 4))


def _episodes(arrays):
    """(first row, last row, positions [T + 1, 2]) of each episode of a file's arrays."""
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    for start, end in zip(np.concatenate([[0], ends[:-1] + 1]), ends):
        positions = np.concatenate([arrays["observations"][start:end + 1, :2],
                                    arrays["next_observations"][end:end + 1, :2]])
        yield start, end, positions


def test_routes_are_every_near_shortest_simple_path():
    # Two shortest ways across a 2 x 2 block, sorted by their cells; no longer simple path exists in it.
    assert demos.routes(BLOCK, (1, 1), (2, 2)) == [((1, 1), (1, 2), (2, 2)), ((1, 1), (2, 1), (2, 2))]
    assert demos.routes(BLOCK, (1, 1), (2, 2), cap=1) == [((1, 1), (1, 2), (2, 2))]
    # Around a ring: the way back round is 4 cells longer, so it counts from a slack of 4 on.
    assert demos.routes(RING, (1, 1), (1, 4)) == [TOP]
    assert demos.routes(RING, (1, 1), (1, 4), slack=3) == [TOP]
    assert demos.routes(RING, (1, 1), (1, 4), slack=4) == [TOP, AROUND]
    # The U-maze is one corridor: one route between any two cells.
    assert demos.routes(UMAZE, (1, 1), (3, 1)) == [((1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1))]
    assert demos.routes(RING, (1, 2), (1, 2)) == [((1, 2),)]
    with pytest.raises(ValueError, match="not an open cell"):
        demos.routes(RING, (2, 2), (1, 1))
    with pytest.raises(ValueError, match="no path"):
        demos.routes([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], (1, 1), (1, 3))


def test_tasks_are_fixed_far_apart_and_multi_route_where_the_maze_allows():
    medium = demos.tasks(MEDIUM)
    assert medium == (((1, 6), (6, 1)), ((1, 1), (1, 6)), ((6, 1), (1, 5)), ((6, 3), (1, 1)), ((1, 2), (6, 3)),
                      ((1, 5), (5, 1)), ((2, 6), (6, 2)), ((5, 1), (2, 6)), ((2, 1), (5, 3)), ((5, 3), (1, 2)))
    assert [len(demos.routes(MEDIUM, *task)) for task in medium] == [4, 4, 4, 4, 4, 3, 3, 3, 3, 3]
    for env_id in demos.ENVS:
        found = demos.tasks(env_id)
        assert len(found) == demos.NUM_TASKS[env_id]
        assert len({s for s, _ in found}) == len({g for _, g in found}) == len(found)  # distinct starts, goals
        shortest = [len(demos.routes(env_id, *task)[0]) for task in found]
        assert min(shortest) >= 5
    assert all(len(demos.routes(UMAZE, *task)) == 1 for task in demos.tasks(UMAZE))
    assert demos.evaluation_kwargs(MEDIUM) == {"continuing_task": False,
                                               "task_cells": [[list(s), list(g)] for s, g in medium]}


def test_route_of_erases_detours_and_completes_the_goal_cell():
    geometry = maze.MazeGeometry(tuple(tuple(row) for row in RING))
    centre = geometry.cell_to_xy
    # A detour into (1, 3) and back, then down the left side; the path stops next to the goal's cell.
    path = np.array([centre((1, 2)), centre((1, 3)), centre((1, 2)), centre((1, 1)), centre((2, 1)), centre((3, 1)),
                     centre((3, 1)) + [0.45, 0.0]])
    assert demos.route_of(path, geometry) == ((1, 2), (1, 1), (2, 1), (3, 1))
    assert demos.route_of(path, geometry, goal_cell=(3, 2)) == ((1, 2), (1, 1), (2, 1), (3, 1), (3, 2))
    assert demos.route_of(path, geometry, goal_cell=(3, 4)) == ((1, 2), (1, 1), (2, 1), (3, 1))  # not next to it
    # One long step from (1, 1) to (1, 3) passes through (1, 2): the points between count.
    assert demos.route_of(np.array([centre((1, 1)), centre((1, 3))]), geometry) == ((1, 1), (1, 2), (1, 3))
    # A full circle back to the start leaves the start only.
    circle = np.array([centre(cell) for cell in TOP + ((2, 4), (3, 4), (3, 3), (3, 2), (3, 1), (2, 1), (1, 1))])
    assert demos.route_of(circle, geometry) == ((1, 1),)


def test_medium_demos_reach_their_goals_along_several_routes_each(dataset_cache):
    dataset = load_dataset(f"gym:{MEDIUM}/demos/10")
    arrays, attrs = read_hdf5(gym_datasets.dataset_path(MEDIUM, "demos", 10, 0))
    task_list, geometry = demos.tasks(MEDIUM), maze.geometry_of(MEDIUM)
    episodes = list(_episodes(arrays))
    assert len(episodes) == 10 * len(task_list) and not arrays["timeouts"].any()
    seen = {task: set() for task in range(len(task_list))}
    for number, (start, end, positions) in enumerate(episodes):
        task, route = int(arrays["infos/task"][start]), int(arrays["infos/route"][start])
        assert task == number % len(task_list)  # round robin: demo n of every task, then demo n + 1
        assert (arrays["infos/task"][start:end + 1] == task).all()
        assert (arrays["infos/route"][start:end + 1] == route).all()
        start_cell, goal_cell = task_list[task]
        assert geometry.xy_to_cell(positions[0]) == start_cell
        np.testing.assert_array_equal(arrays["observations"][start:end + 1, 4:],
                                      np.repeat(arrays["observations"][start:start + 1, 4:], end - start + 1, axis=0))
        assert geometry.xy_to_cell(arrays["observations"][start, 4:]) == goal_cell
        # Every demonstration reaches its goal: the env's success radius ends it, with the sparse reward 1 there only.
        assert arrays["terminals"][end] and not arrays["terminals"][start:end].any()
        assert np.linalg.norm(positions[-1] - arrays["observations"][start, 4:]) <= maze.SUCCESS_RADIUS + 1e-5
        assert arrays["rewards"][end] == 1.0 and not arrays["rewards"][start:end].any()
        # The path it took is the route it was given.
        assert demos.route_of(positions, geometry, goal_cell=goal_cell) == demos.routes(MEDIUM, *task_list[task])[route]
        seen[task].add(route)
    # Balanced draws: with 10 >= R demonstrations every one of a task's R routes is there, so >= 2 per task.
    assert all(seen[task] == set(range(len(demos.routes(MEDIUM, *task_list[task])))) for task in seen)
    assert min(len(routes) for routes in seen.values()) >= 2
    assert 0 < np.abs(arrays["actions"]).max() <= 1.0
    assert dataset.env_id == MEDIUM and dataset.name == f"gym:{MEDIUM}/demos/10" and dataset.observation_dim == 6
    assert dataset.env_kwargs == demos.evaluation_kwargs(MEDIUM) == json.loads(attrs["env_kwargs"])
    assert len(dataset) == len(arrays["rewards"]) and dataset.summary()["average_normalized_score"] == 100.0
    assert json.loads(attrs["route_counts"]) == [4, 4, 4, 4, 4, 3, 3, 3, 3, 3]


def test_count_is_per_task_seed_gives_the_same_bytes(dataset_cache, tmp_path):
    two, three = load_dataset(f"gym:{UMAZE}/demos/2"), load_dataset(f"gym:{UMAZE}/demos/3")
    assert two.summary()["episodes"] == 2 * 4 and three.summary()["episodes"] == 3 * 4
    assert gym_datasets.dataset_name(UMAZE, "demos", 50) == f"gym:{UMAZE}/demos"  # the default, 50 per task
    # Round robin with per-demonstration generators: the smaller file is the start of the larger one.
    np.testing.assert_array_equal(three.observations[:len(two)], two.observations)
    paths = [gym_datasets.generate(UMAZE, "demos", 2, seed=seed, path=tmp_path / f"{name}.hdf5")
             for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    digests = [gym_datasets.d4rl.read_hdf5(path).content_sha256 for path in paths]
    assert digests[0] == digests[1] != digests[2]


def test_demos_evaluate_by_success_at_the_tasks_in_turn(dataset_cache):
    from dql.data.evaluation_envs import check_env_matches, env_for_dataset
    from dql.envs import make_vector_env

    dataset = load_dataset(f"gym:{UMAZE}/demos/1")
    env_id, env_kwargs = env_for_dataset(dataset, None)
    assert check_env_matches(dataset, env_id, env_kwargs).tolist() == [1.0, 1.0]
    task_list, geometry = demos.tasks(UMAZE), maze.geometry_of(UMAZE)
    envs = make_vector_env(env_id, env_kwargs, 5)
    try:  # the evaluator seeds env i with s + i: it runs task (s + i) mod K
        observations, info = envs.reset(seed=[102 + i for i in range(5)])
        assert info["task"].tolist() == [(102 + i) % 4 for i in range(5)]
        for observation, task in zip(observations, info["task"]):
            assert geometry.xy_to_cell(observation[:2]) == task_list[task][0]
            assert geometry.xy_to_cell(observation[4:]) == task_list[task][1]
    finally:
        envs.close()
    result = demos.evaluate_tasks(demos.ControllerBatch(UMAZE), UMAZE, 1, seed=0)
    assert result["success"].tolist() == [1.0] * 4 and result["route_index"].tolist() == [[0]] * 4
    for (start, goal), [path] in zip(task_list, result["paths"]):
        assert geometry.xy_to_cell(path[0]) == start and len(path) >= 10
    # A return is 1 on arrival (which ends the episode) and 0 without: the score is the success rate x 100.
    assert (dataset.ref_min_score, dataset.ref_max_score) == demos.SUCCESS_SCORES
    assert dataset.normalized_score(np.array([1.0, 0.0])).tolist() == [100.0, 0.0]


def test_hopper_expert_demos_are_whole_expert_episodes(dataset_cache):
    reference = gym_datasets.reference("Hopper-v5")
    dataset = load_dataset("gym:Hopper-v5/expert-demos/2")
    arrays, attrs = read_hdf5(gym_datasets.dataset_path("Hopper-v5", "expert-demos", 2, 0))
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    assert len(ends) == 2 and ends[-1] == len(arrays["rewards"]) - 1 and dataset.summary()["episodes"] == 2
    # Demonstration i is env i's first episode, from its seeded reset (seed + i).
    env = gym.make("Hopper-v5")
    for start, seed in zip((0, ends[0] + 1), (0, 1)):
        np.testing.assert_allclose(arrays["observations"][start], env.reset(seed=seed)[0], rtol=1e-6)
    env.close()
    expert, spread = reference["expert_return"], reference["measured"]["expert"]["std"]
    assert np.all(np.abs(dataset.episode_returns - expert) < 2.5 * spread), dataset.episode_returns
    assert dataset.episode_returns.mean() > reference["medium_return"]
    assert (dataset.ref_min_score, dataset.ref_max_score) == (reference["random_return"], expert)
    assert attrs["cpu_independent"] and attrs["policies_sha256"] == gym_datasets.policies_digest("Hopper-v5", "expert")
    assert attrs["count_meaning"] == "whole episodes"


def test_a_cached_file_of_another_demos_version_is_regenerated(dataset_cache, monkeypatch, capsys):
    load_dataset(f"gym:{UMAZE}/demos/1")
    monkeypatch.setattr(demos, "DEMOS_VERSION", demos.DEMOS_VERSION + 1)
    load_dataset(f"gym:{UMAZE}/demos/1")
    assert "another version of the demonstrations' generator" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    (f"gym:{UMAZE}/demos/0", r"episode count '0' \(demos: demonstrations per task, not transitions\)"),
    ("gym:Hopper-v5/expert-demos/x", r"episode count 'x' \(expert-demos: whole episodes, not transitions\)"),
    ("gym:Hopper-v5/demos", "unknown level 'demos'; Hopper-v5 has random, .*expert-demos"),
    (f"gym:{UMAZE}/expert-demos", f"unknown level 'expert-demos'; {UMAZE} has waypoint, waypoint-multitask, demos"),
])
def test_bad_demo_specs_say_what_the_count_means(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)
    assert not is_dataset_name(spec)
    assert is_dataset_name(f"gym:{MEDIUM}/demos/7") and is_dataset_name("gym:Walker2d-v5/expert-demos")
    assert gym_datasets.parse_spec(f"gym:{MEDIUM}/demos") == (MEDIUM, "demos", 50)
    assert gym_datasets.parse_spec("gym:Hopper-v5/expert-demos/3") == ("Hopper-v5", "expert-demos", 3)
