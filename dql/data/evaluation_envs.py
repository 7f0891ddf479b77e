"""Which Gymnasium environment evaluates a dataset, and the checks that it fits the data."""

from __future__ import annotations

import numpy as np

from dql.data.dataset import Dataset
from dql.envs import make_env
from dql.errors import DatasetError

# D4RL's locomotion files were recorded in gym's mujoco-py v3 envs; Gymnasium's v4 envs keep their models (the same
# XML files) and rewards and only swap mujoco-py for the mujoco bindings, so D4RL names are evaluated in v4. The v5
# envs changed what the data were recorded in: Walker2d-v5's right foot has friction 1.9 where D4RL's had 0.9;
# Hopper-v5 and Walker2d-v5 pay the healthy reward only while healthy (v3/v4 also paid it on the falling step, +1
# per episode); Ant-v5's contact forces leave out the world body (105 dims where D4RL's ant has 111). HalfCheetah
# has no model or reward change. What stays different is the simulator: MuJoCo 2.x under mujoco-py then, today's
# mujoco now. The project's generated tiers and Minari's datasets name their own (v5) env; --env overrides all.
D4RL_ENVS: dict[str, tuple[str, dict]] = {
    "hopper": ("Hopper-v4", {}),
    "halfcheetah": ("HalfCheetah-v4", {}),
    "walker2d": ("Walker2d-v4", {}),
    "ant": ("Ant-v4", {"use_contact_forces": True}),
    # Adroit through gymnasium-robotics: the same 45/46/39/39-dim observation vectors as D4RL's hand_dapg files.
    "pen": ("AdroitHandPen-v1", {}),
    "hammer": ("AdroitHandHammer-v1", {}),
    "door": ("AdroitHandDoor-v1", {}),
    "relocate": ("AdroitHandRelocate-v1", {}),
}
# D4RL domains without a Gymnasium environment that reproduces their observations: train with --eval_episodes=0.
NO_MATCHING_ENV = {
    "antmaze": "gymnasium-robotics' AntMaze returns goal-conditioned dict observations with random goals, not "
    "D4RL's 29-dim vector with fixed goals",
    "kitchen": "gymnasium-robotics' FrankaKitchen-v1 observes 59 robot/object dims plus per-task goals, not D4RL's "
    "60-dim vector",
    "maze2d": "gymnasium-robotics' PointMaze returns goal-conditioned dict observations, not D4RL's 4-dim vector "
    "(the generated gym:PointMaze_UMaze-v3/waypoint data are evaluated in it, flattened)",
}

def env_for_dataset(dataset: Dataset, env_flag: str | None) -> tuple[str, dict] | None:
    """(env_id, kwargs) to evaluate `dataset` in: --env when given, else the file's metadata, else D4RL's domain."""
    if env_flag:
        return env_flag, {}
    if dataset.env_id:
        return dataset.env_id, dict(dataset.env_kwargs)
    return env_for_d4rl_name(dataset.name)


def env_for_d4rl_name(name: str) -> tuple[str, dict] | None:
    """The Gymnasium env of a D4RL dataset name; DatasetError for a D4RL domain that has none."""
    domain = name.split("-", 1)[0]
    if domain in NO_MATCHING_ENV:
        raise DatasetError(
            f"dataset {name}: no Gymnasium environment evaluates it ({NO_MATCHING_ENV[domain]}); train without "
            "evaluation (--eval_episodes=0) or pass --env=ID of an environment with the same observations"
        )
    return D4RL_ENVS.get(domain)


def check_env_matches(dataset: Dataset, env_id: str, env_kwargs: dict) -> np.ndarray:
    """Check the env against the dataset (sizes, symmetric bounds holding the data's actions); return its bound.

    The env's action bound is what the policy must respect, so it replaces any bound inferred from the data.
    """
    import gymnasium as gym

    env = make_env(env_id, env_kwargs)
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

