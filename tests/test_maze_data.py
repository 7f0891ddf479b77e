"""The point-maze data (dql.data.maze): shortest paths, the waypoint controller, the generated
gym:PointMaze_*-v3/waypoint tiers and the flattened evaluation env."""

import json
import sys

import numpy as np
import pytest

from dql.data import DatasetError, gym_datasets, load_dataset, maze, scores
from dql.envs import flatten_maze_observation
from tests.helpers import read_hdf5

pytest.importorskip("gymnasium_robotics")

UMAZE = "PointMaze_UMaze-v3"
SMALL_MAZE = [
    [1, 1, 1, 1, 1, 1],  # row 0
    [1, 0, 0, 0, 0, 1],  # row 1
    [1, 0, 1, 1, 0, 1],  # row 2
    [1, 0, 0, 1, 0, 1],  # row 3
    [1, 1, 1, 1, 1, 1],  # row 4
]


def test_shortest_path_follows_open_cells_and_breaks_ties_the_same_way():
    # Around the wall block: from (3, 2) the only way out is left, up the left column, along the top.
    assert maze.shortest_path(SMALL_MAZE, (3, 2), (3, 4)) == [(3, 2), (3, 1), (2, 1), (1, 1), (1, 2), (1, 3), (1, 4),
                                                              (2, 4), (3, 4)]
    assert maze.shortest_path(SMALL_MAZE, (1, 2), (1, 2)) == [(1, 2)]
    # In an open 2 x 2 block two shortest paths join opposite corners: neighbours are tried up, down, left, right.
    block = [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    assert maze.shortest_path(block, (2, 1), (1, 2)) == [(2, 1), (1, 1), (1, 2)]
    assert maze.shortest_path(block, (1, 2), (2, 1)) == [(1, 2), (2, 2), (2, 1)]
    walled = [row[:] for row in SMALL_MAZE]
    walled[1][3] = 1  # cut the top corridor: (3, 4) is now unreachable from the left part
    with pytest.raises(ValueError, match="no path"):
        maze.shortest_path(walled, (3, 2), (3, 4))
    with pytest.raises(ValueError, match="not an open cell"):
        maze.shortest_path(SMALL_MAZE, (2, 2), (1, 1))
    path = maze.shortest_path(maze.maze_map("PointMaze_Large-v3"), (1, 1), (7, 9))
    open_cells = set(maze.maze_cells(maze.maze_map("PointMaze_Large-v3")))
    assert all(cell in open_cells for cell in path)
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(path, path[1:]))


def test_layouts_and_geometry_are_the_envs():
    from gymnasium_robotics.envs.maze import maps

    for env_id, layout in (("PointMaze_UMaze-v3", maps.U_MAZE), ("PointMaze_Medium-v3", maps.MEDIUM_MAZE),
                           ("PointMaze_Large-v3", maps.LARGE_MAZE)):
        assert maze.maze_map(env_id) == layout
    env = maze.make_maze_env("PointMaze_Medium-v3")
    try:
        geometry, env_maze = maze.MazeGeometry.from_env(env), env.unwrapped.maze
        for cell in maze.maze_cells(geometry.maze_map):
            np.testing.assert_allclose(geometry.cell_to_xy(cell), env_maze.cell_rowcol_to_xy(np.array(cell)))
            for offset in ((0.3, -0.4), (-0.45, 0.45)):
                xy = geometry.cell_to_xy(cell) + offset
                assert geometry.xy_to_cell(xy) == cell == tuple(env_maze.cell_xy_to_rowcol(xy))
    finally:
        env.close()


def test_controller_action_is_pd_toward_the_next_waypoint():
    geometry = maze.MazeGeometry(tuple(tuple(row) for row in SMALL_MAZE))
    controller = maze.WaypointController(geometry)
    start, goal = geometry.cell_to_xy((3, 2)), geometry.cell_to_xy((1, 2)) + np.array([0.1, -0.2])
    controller.set_goal(goal, start)
    expected = [geometry.cell_to_xy(cell) for cell in [(3, 1), (2, 1), (1, 1)]] + [goal]
    np.testing.assert_allclose(controller.waypoints, expected)
    state = np.array([*(start + [-0.05, 0.0]), 0.3, -0.2])
    np.testing.assert_allclose(controller(state), np.clip(10.0 * (expected[0] - state[:2]) - state[2:], -1, 1))
    near = np.array([*(expected[0] + [0.01, 0.02]), 0.1, 0.05])  # within the solve radius: on to the next one
    np.testing.assert_allclose(controller(near), np.clip(10.0 * (expected[1] - near[:2]) - near[2:], -1, 1))
    assert controller.index == 1


@pytest.mark.parametrize("gains, holds", [({}, True), ({"d_gain": 1.0}, False), ({"p_gain": -10.0}, False)])
def test_controller_reaches_and_holds_the_goal_only_with_the_right_signs(gains, holds):
    # PointMaze_UMaze-v3 at random goals: 300 steps, reward 1 per step within 0.45 of the goal.
    result = maze.run_episodes(UMAZE, {}, 5, 0, maze.ControllerPolicy(maze.geometry_of(UMAZE), **gains))
    held = (result["returns"] >= 100) & result["successes"]  # there for at least a third of the episode
    assert (held.sum() >= 4) if holds else (held.sum() <= 1), result


def test_waypoint_tier_layout_episodes_and_metadata(dataset_cache):
    dataset = load_dataset(f"gym:{UMAZE}/waypoint/2000")
    path = gym_datasets.dataset_path(UMAZE, "waypoint", 2000, 0)
    arrays, attrs = read_hdf5(path)
    observations, next_observations = arrays["observations"], arrays["next_observations"]
    timeouts = arrays["timeouts"]
    assert observations.shape == next_observations.shape == (2000, 6) and arrays["actions"].shape == (2000, 2)
    assert np.abs(arrays["actions"]).max() <= 1.0 and arrays["actions"].std() > 0.3  # noisy, bounded
    assert not arrays["terminals"].any() and timeouts[-1]
    np.testing.assert_array_equal(arrays["infos/goal"], observations[:, 4:])
    np.testing.assert_array_equal(arrays["infos/qpos"], observations[:, :2])
    np.testing.assert_array_equal(arrays["infos/qvel"], observations[:, 2:4])

    # A timeout exactly at each goal arrival (post-step position within the radius), and nowhere else but the time
    # limit and the data's end.
    distance = np.linalg.norm(next_observations[:, :2] - next_observations[:, 4:], axis=1)
    ends = np.flatnonzero(timeouts)
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert len(ends) >= 10 and lengths.max() < 300  # every episode here ends by arriving
    assert np.all(distance[ends[:-1]] <= maze.ARRIVAL_RADIUS + 1e-5)
    assert np.all(distance[~timeouts] > maze.ARRIVAL_RADIUS - 1e-5)
    # The env's sparse reward: 1 within 0.45 of the row's goal.
    near = distance <= maze.SUCCESS_RADIUS
    boundary = np.abs(distance - maze.SUCCESS_RADIUS) < 1e-5
    np.testing.assert_array_equal(arrays["rewards"][~boundary], near[~boundary].astype(np.float32))

    # Within an episode the next row starts where this one ended; across an arrival the point mass goes on where
    # it was (no teleport) toward a new goal.
    within = ~timeouts[:-1]
    np.testing.assert_array_equal(next_observations[:-1][within], observations[1:][within])
    np.testing.assert_array_equal(next_observations[ends[:-1], :4], observations[ends[:-1] + 1, :4])
    assert np.all(np.linalg.norm(next_observations[ends[:-1], 4:] - observations[ends[:-1] + 1, 4:], axis=1) > 0.1)
    assert np.all(np.linalg.norm(observations[ends[:-1] + 1, :2] - observations[ends[:-1] + 1, 4:], axis=1)
                  > maze.SUCCESS_RADIUS)

    # The Dataset: the timeout rows dropped (their successor is the next episode's), 6-dim, scored as the single task.
    assert len(dataset) == 2000 - len(ends) and dataset.observation_dim == 6 and dataset.action_dim == 2
    assert dataset.env_id == UMAZE and dataset.name == f"gym:{UMAZE}/waypoint/2000"
    assert dataset.env_kwargs == maze.evaluation_kwargs(UMAZE) and dataset.env_kwargs["maze_map"][1][1] == "g"
    assert (dataset.ref_min_score, dataset.ref_max_score) == scores.GENERATED_MAZE_REFERENCE_SCORES[(UMAZE, "single")]
    assert json.loads(attrs["env_kwargs"]) == dataset.env_kwargs
    assert attrs["generator_version"] == maze.GENERATOR_VERSION
    assert "gymnasium-robotics" in json.loads(attrs["versions"])

    # The multi-task level reads the same file, evaluated at random goals on its own scale.
    multi = load_dataset(f"gym:{UMAZE}/waypoint-multitask/2000")
    np.testing.assert_array_equal(multi.observations, dataset.observations)
    assert multi.env_kwargs == {} and multi.name == f"gym:{UMAZE}/waypoint-multitask/2000"
    assert (multi.ref_min_score, multi.ref_max_score) == scores.GENERATED_MAZE_REFERENCE_SCORES[(UMAZE, "multi")]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_same_seed_same_file_other_seed_other_data(dataset_cache, tmp_path):
    paths = [gym_datasets.generate(UMAZE, "waypoint", 1500, seed=seed, path=tmp_path / f"{name}.hdf5")
             for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    (first, first_attrs), (again, again_attrs), (other, _) = (read_hdf5(path) for path in paths)
    assert sorted(first) == sorted(again) == ["actions", "infos/goal", "infos/qpos", "infos/qvel", "next_observations",
                                              "observations", "rewards", "terminals", "timeouts"]
    for key in first:
        assert first[key].dtype == again[key].dtype and first[key].tobytes() == again[key].tobytes(), key
    assert first_attrs == again_attrs and paths[0].read_bytes() == paths[1].read_bytes()
    assert not np.array_equal(first["observations"], other["observations"])


def test_a_cached_file_of_another_generator_version_is_regenerated(dataset_cache, monkeypatch, capsys):
    load_dataset(f"gym:{UMAZE}/waypoint/300")
    monkeypatch.setattr(maze, "GENERATOR_VERSION", maze.GENERATOR_VERSION + 1)
    load_dataset(f"gym:{UMAZE}/waypoint/300")
    assert "another version of the waypoint generator" in capsys.readouterr().err
    _, attrs = read_hdf5(gym_datasets.dataset_path(UMAZE, "waypoint", 300, 0))
    assert attrs["generator_version"] == maze.GENERATOR_VERSION


def test_evaluation_env_sees_the_datas_flat_observations(dataset_cache):
    from dql.data.evaluation_envs import check_env_matches, env_for_dataset
    from dql.envs import make_vector_env, rollout

    dataset = load_dataset(f"gym:{UMAZE}/waypoint/300")
    env_id, env_kwargs = env_for_dataset(dataset, None)
    assert check_env_matches(dataset, env_id, env_kwargs).tolist() == [1.0, 1.0]
    envs = make_vector_env(env_id, env_kwargs, 2)
    raw = maze.make_maze_env(env_id, **env_kwargs)
    try:
        observations, _ = envs.reset(seed=[7, 8])
        assert observations.shape == (2, 6)
        np.testing.assert_array_equal(observations[0], flatten_maze_observation(raw.reset(seed=7)[0]))
        # The single task's goal: D4RL's cell (1, 1), at x = -1, y = 1 in the UMaze, with the env's +-0.25 noise.
        assert np.all(np.abs(observations[:, 4:] - [-1.0, 1.0]) <= 0.25)
    finally:
        envs.close()
        raw.close()

    # The controller, acting on those vectors through the evaluation loop, scores near its own 100.
    policies = [maze.ControllerPolicy(maze.geometry_of(env_id)) for _ in range(2)]

    def act(states, t):
        return np.stack([policy(state) for policy, state in zip(policies, states)])

    returns = rollout(act, env_id, env_kwargs, 2, seed=0)["returns"]
    assert np.all(dataset.normalized_score(returns) > 50)


def test_minari_pointmaze_reads_as_the_flat_vectors_the_env_is_evaluated_in(tmp_path, monkeypatch):
    """A Minari dataset in D4RL/pointmaze's form (dict observations, recorded with minari's DataCollector in the
    point maze) becomes [observation, desired_goal] rows that the flattened evaluation env accepts, and Diffuser
    takes the maze row for Minari's D4RL/pointmaze names."""
    import warnings

    import gymnasium as gym
    import minari

    from dql.configs import resolve
    from dql.data.evaluation_envs import check_env_matches, env_for_dataset
    from dql.envs import register_robotics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    register_robotics(UMAZE)
    env = minari.DataCollector(gym.make(UMAZE, max_episode_steps=25))
    raw_episodes = []
    rng = np.random.default_rng(0)
    for episode in range(3):
        observation, _ = env.reset(seed=episode)
        raw, done = [observation], False
        while not done:
            observation, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
            raw.append(observation)
            done = terminated or truncated
        raw_episodes.append(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # minari asks for author and description metadata
        env.create_dataset(dataset_id="test/pointmaze/umaze-v0", algorithm_name="uniform", eval_env=UMAZE)

    dataset = load_dataset("minari:test/pointmaze/umaze-v0")
    assert dataset.observations.shape == (75, 6)
    first = raw_episodes[0]
    for t in (0, 24):
        np.testing.assert_allclose(dataset.observations[t, :4], first[t]["observation"], rtol=1e-6)
        np.testing.assert_allclose(dataset.observations[t, 4:], first[t]["desired_goal"], rtol=1e-6)
        np.testing.assert_allclose(dataset.next_observations[t], flatten_maze_observation(first[t + 1]),
                                   rtol=1e-6)
    env_id, env_kwargs = env_for_dataset(dataset, None)
    assert env_id == UMAZE and check_env_matches(dataset, env_id, env_kwargs).tolist() == [1.0, 1.0]

    row = resolve("diffuser", "minari:D4RL/pointmaze/medium-dense-v2")
    assert (row.horizon, row.diffusion_steps, row.goal_conditioned, row.control) == (256, 256, True, "waypoints")


@pytest.mark.parametrize("spec, message", [
    (f"gym:{UMAZE}/medium", f"unknown level 'medium'; {UMAZE} has waypoint, waypoint-multitask"),
    ("gym:Hopper-v5/waypoint", "unknown level 'waypoint'; Hopper-v5 has random, medium"),
    ("gym:PointMaze_Open-v3/waypoint", "unknown env 'PointMaze_Open-v3'; generated datasets exist for .*Large-v3"),
    (f"gym:{UMAZE}/waypoint/0", "not a positive integer"),
])
def test_bad_maze_specs_name_what_exists(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_without_gymnasium_robotics_generation_says_how_to_install_it(dataset_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # as if not installed
    with pytest.raises(DatasetError, match=r"gymnasium-robotics, which is not installed.*dql\[robotics\]"):
        load_dataset(f"gym:{UMAZE}/waypoint/100")



def test_crosses_wall_sees_a_path_through_a_wall_between_its_points():
    geometry = maze.MazeGeometry(tuple(tuple(row) for row in SMALL_MAZE))
    centre = geometry.cell_to_xy
    along_top = np.array([centre((1, 1)), centre((1, 2)), centre((1, 3)), centre((1, 4))])
    # (3, 2) to (1, 2) straight up through the wall cell (2, 2): no point of the path is in it, a midpoint is.
    through = np.array([centre((3, 2)), centre((1, 2))])
    around = np.array([centre((3, 2)), centre((3, 1)), centre((2, 1)), centre((1, 1)), centre((1, 2))])
    outside = np.array([centre((1, 1)), centre((1, 1)) + [0.0, 1.6]])  # into the border wall row and beyond
    assert maze.crosses_wall(geometry, along_top[None]).tolist() == [False]
    assert maze.crosses_wall(geometry, through[None], substeps=1).tolist() == [False]  # endpoints only
    assert maze.crosses_wall(geometry, through[None]).tolist() == [True]
    assert maze.crosses_wall(geometry, around[None]).tolist() == [False]
    assert maze.crosses_wall(geometry, outside[None]).tolist() == [True]
    batch = np.stack([np.pad(p, ((0, 5 - len(p)), (0, 0)), mode="edge") for p in (along_top, through, around)])
    assert maze.crosses_wall(geometry, batch).tolist() == [False, True, False]
