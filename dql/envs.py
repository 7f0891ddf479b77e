"""Which Gymnasium environment evaluates a dataset, and the checks that it fits the data."""

from __future__ import annotations

import numpy as np

from dql.data.dataset import Dataset, DatasetError

# D4RL's locomotion tasks, evaluated in Gymnasium's MuJoCo v5 versions (same observation layouts and action
# bounds as the mujoco-py v2 envs d4rl used). D4RL's ant includes the world body's contact forces (111 dims); Ant-v5
# drops them (105 dims), so ant datasets fail the dimension check with a message saying so.
D4RL_ENVS: dict[str, tuple[str, dict]] = {
    "hopper": ("Hopper-v5", {}),
    "halfcheetah": ("HalfCheetah-v5", {}),
    "walker2d": ("Walker2d-v5", {}),
    "ant": ("Ant-v5", {"use_contact_forces": True}),
}


def env_for_dataset(dataset: Dataset, env_flag: str | None) -> tuple[str, dict] | None:
    """(env_id, kwargs) to evaluate `dataset` in: --env when given, else the file's metadata, else D4RL's domain."""
    if env_flag:
        return env_flag, {}
    if dataset.env_id:
        return dataset.env_id, dict(dataset.env_kwargs)
    domain = dataset.name.split("-", 1)[0]
    return D4RL_ENVS.get(domain)


def make_vector_env(env_id: str, env_kwargs: dict, num_envs: int):
    import gymnasium as gym

    try:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error


def check_env_matches(dataset: Dataset, env_id: str, env_kwargs: dict) -> np.ndarray:
    """Check the env against the dataset (sizes, symmetric bounds holding the data's actions); return its bound.

    The env's action bound is what the policy must respect, so it replaces any bound inferred from the data.
    """
    import gymnasium as gym

    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        raise DatasetError(f"--env: cannot make Gymnasium environment {env_id!r}: {error}") from error
    try:
        obs_shape, act_space = env.observation_space.shape, env.action_space
    finally:
        env.close()
    if obs_shape != (dataset.observation_dim,):
        raise DatasetError(
            f"dataset {dataset.name} has {dataset.observation_dim}-dim observations but env {env_id} has shape "
            f"{obs_shape}; pass --env=ID for a matching environment or --eval_episodes=0 to train without one"
        )
    if not isinstance(act_space, gym.spaces.Box) or act_space.shape != (dataset.action_dim,):
        raise DatasetError(
            f"dataset {dataset.name} has {dataset.action_dim}-dim actions but env {env_id} has action space "
            f"{act_space}; pass --env=ID for a matching environment or --eval_episodes=0 to train without one"
        )
    if not np.allclose(-act_space.low, act_space.high):
        raise DatasetError(f"env {env_id}: action bounds {act_space.low}..{act_space.high} are not symmetric")
    high = np.asarray(act_space.high, np.float32)
    largest = np.abs(dataset.actions).max(axis=0)
    if np.any(largest > high * (1 + 1e-5)):
        raise DatasetError(
            f"dataset {dataset.name} has actions up to {largest.tolist()} in absolute value, outside env {env_id}'s "
            f"bounds {high.tolist()}"
        )
    return high

