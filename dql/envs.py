"""Making Gymnasium environments as the data see them: the optional robotics registration, the flattening of a
point maze's dict observation, single and vector envs. The ground floor: it imports nothing else of dql but its
error type, and knows no datasets (which env evaluates which dataset: dql.data.evaluation_envs)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from dql.errors import DatasetError

ROBOTICS_PREFIXES = ("AdroitHand", "AntMaze", "PointMaze", "FrankaKitchen")
# Envs whose dict observations every algorithm sees flattened (flatten_maze_observation).
FLATTENED_PREFIXES = ("PointMaze",)


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


@contextlib.contextmanager
def _d4rl_era_envs_allowed():
    """Gymnasium warns that the v4 envs are out of date on every make; for D4RL's files they are the right ones."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is out of date\. You should consider upgrading",
                                category=DeprecationWarning)
        yield


def make_env(env_id: str, env_kwargs: dict):
    """One env of `env_id`, wrapped as the data see it (see flattening_wrappers)."""
    import gymnasium as gym

    register_robotics(env_id)
    try:
        with _d4rl_era_envs_allowed():
            env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error
    for wrapper in flattening_wrappers(env_id):
        env = wrapper(env)
    return env


def make_vector_env(env_id: str, env_kwargs: dict, num_envs: int):
    import gymnasium as gym

    register_robotics(env_id)
    try:
        with _d4rl_era_envs_allowed():
            return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                wrappers=flattening_wrappers(env_id) or None, **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error


