"""Making Gymnasium environments as the data see them: the optional robotics registration, the flattening of a
point maze's dict observation, single and vector envs, and the batched rollout that evaluation and the studies run.
The ground floor: it imports nothing else of dql but its error type, and knows no datasets (which env evaluates
which dataset: dql.data.evaluation_envs)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import numpy as np

from dql.errors import DatasetError

ROBOTICS_PREFIXES = ("AdroitHand", "AntMaze", "PointMaze", "FrankaKitchen")
# Envs whose dict observations every algorithm sees flattened (flatten_maze_observation).
FLATTENED_PREFIXES = ("PointMaze",)
# An env kwarg of the project's, not Gymnasium's: a point maze's fixed tasks as [[start_row, start_col],
# [goal_row, goal_col]] pairs (with_task_cells), taken out of the kwargs before gym.make sees them.
TASK_CELLS = "task_cells"


def register_robotics(env_id: str) -> None:
    """gymnasium-robotics registers its envs on import; it is optional, so say how to get it when it is missing."""
    if not env_id.startswith(ROBOTICS_PREFIXES):
        return
    import gymnasium as gym

    try:
        import gymnasium_robotics
    except ImportError as error:
        raise DatasetError(f"environment {env_id} comes from gymnasium-robotics, which is not installed ({error}); "
                           "pip install 'dql[robotics]'") from error
    gym.register_envs(gymnasium_robotics)


def flatten_maze_observation(observation: dict) -> np.ndarray:
    """A point maze's dict observation as one vector: [x, y, vx, vy, goal_x, goal_y] (observation, desired_goal)."""
    return np.concatenate([np.asarray(observation["observation"], np.float64).reshape(4),
                           np.asarray(observation["desired_goal"], np.float64).reshape(2)])


def flattening_wrappers(env_id: str) -> list:
    """The wrappers every env of `env_id` gets: a point maze's dict observation becomes the data's flat vector
    [x, y, vx, vy, goal_x, goal_y] (flatten_maze_observation)."""
    if not env_id.startswith(FLATTENED_PREFIXES):
        return []
    import gymnasium as gym

    space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float64)
    return [lambda env: gym.wrappers.TransformObservation(env, flatten_maze_observation, space)]


def split_task_cells(env_kwargs: dict) -> tuple[dict, list | None]:
    """(the kwargs Gymnasium takes, the task_cells entry or None)."""
    kwargs = dict(env_kwargs)
    return kwargs, kwargs.pop(TASK_CELLS, None)


def with_task_cells(env, task_cells):
    """A point maze whose every episode is one of K fixed tasks (start cell, goal cell): reset(seed=s) runs task
    s mod K, reset(options={"task": k}) task k, an unseeded reset the task after the previous one. The env's
    own uniform noise (position_noise_range) still moves the start and the goal within their cells. The task's
    index is in the reset's info["task"]."""
    import gymnasium as gym

    cells = [(tuple(int(v) for v in start), tuple(int(v) for v in goal)) for start, goal in task_cells]
    if not cells:
        raise DatasetError(f"env kwarg {TASK_CELLS}: no tasks given")

    class CellTasks(gym.Wrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self.task_cells, self.task = cells, -1

        def reset(self, *, seed=None, options=None):
            options = dict(options or {})
            if "task" in options:
                task = int(options.pop("task"))
            else:
                task = seed % len(cells) if seed is not None else (self.task + 1) % len(cells)
            self.task = task
            start, goal = cells[task]
            options.update(reset_cell=np.array(start), goal_cell=np.array(goal))
            observation, info = self.env.reset(seed=seed, options=options)
            return observation, {**info, "task": task}

    return CellTasks(env)


def _wrappers(env_id: str, task_cells) -> list:
    tasks = [] if task_cells is None else [lambda env: with_task_cells(env, task_cells)]
    return tasks + flattening_wrappers(env_id)


@contextlib.contextmanager
def _d4rl_era_envs_allowed():
    """Gymnasium warns that the v4 envs are out of date on every make; for D4RL's files they are the right ones."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is out of date\. You should consider upgrading",
                                category=DeprecationWarning)
        yield


def make_env(env_id: str, env_kwargs: dict):
    """One env of `env_id`, wrapped as the data see it (see flattening_wrappers; task_cells: with_task_cells)."""
    import gymnasium as gym

    register_robotics(env_id)
    env_kwargs, task_cells = split_task_cells(env_kwargs)
    try:
        with _d4rl_era_envs_allowed():
            env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error
    for wrapper in _wrappers(env_id, task_cells):
        env = wrapper(env)
    return env


def make_vector_env(env_id: str, env_kwargs: dict, num_envs: int):
    import gymnasium as gym

    register_robotics(env_id)
    env_kwargs, task_cells = split_task_cells(env_kwargs)
    try:
        with _d4rl_era_envs_allowed():
            return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                wrappers=_wrappers(env_id, task_cells) or None, **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error


BatchPolicy = Callable[[np.ndarray, int], np.ndarray]


def rollout(policy: BatchPolicy, env_id: str, env_kwargs: dict, num_episodes: int, seed: int | list[int],
            on_step: Callable[[np.ndarray, np.ndarray], None] | None = None) -> dict:
    """Run `num_episodes` episodes in parallel; policy(observations [B, obs_dim], t) -> actions [B, act_dim].

    Each env runs until its first episode ends; environment i is seeded with seed + i (or with seed[i] when a list
    is given: several programs' evaluations stepped together), so a run is reproducible. on_step(observations,
    running) sees the first observations and each step's, with the mask of the episodes they belong to (a study
    records paths with it). Returns {"returns": [B], "lengths": [B]}.
    """
    seeds = [seed + i for i in range(num_episodes)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != num_episodes:
        raise ValueError(f"rollout: {len(seeds)} env seeds for {num_episodes} episodes")
    envs = make_vector_env(env_id, env_kwargs, num_episodes)
    try:
        observations, _ = envs.reset(seed=seeds)
        returns = np.zeros(num_episodes, np.float64)
        lengths = np.zeros(num_episodes, np.int64)
        running = np.ones(num_episodes, bool)
        if on_step is not None:
            on_step(observations, running)
        t = 0
        while running.any():
            actions = np.asarray(policy(np.asarray(observations, np.float32), t))
            observations, rewards, terminated, truncated, _ = envs.step(actions)
            if on_step is not None:
                on_step(observations, running)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            t += 1
    finally:
        envs.close()
    return {"returns": returns, "lengths": lengths}
