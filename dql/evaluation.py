"""Evaluation: all episodes at once in a Gymnasium vector env, one batched policy call per step."""

from __future__ import annotations

from typing import Callable

import numpy as np

from dql.envs import make_vector_env

BatchPolicy = Callable[[np.ndarray, int], np.ndarray]


def rollout(policy: BatchPolicy, env_id: str, env_kwargs: dict, num_episodes: int, seed: int | list[int]) -> dict:
    """Run `num_episodes` episodes in parallel; policy(observations [B, obs_dim], t) -> actions [B, act_dim].

    Each env runs until its first episode ends; environment i is seeded with seed + i (or with seed[i] when a list
    is given: several programs' evaluations stepped together), so a run is reproducible.
    Returns {"returns": [B], "lengths": [B]}.
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
        t = 0
        while running.any():
            actions = np.asarray(policy(np.asarray(observations, np.float32), t))
            observations, rewards, terminated, truncated, _ = envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            t += 1
    finally:
        envs.close()
    return {"returns": returns, "lengths": lengths}
