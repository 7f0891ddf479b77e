"""Evaluation: all episodes at once in a Gymnasium vector env, one batched policy call per step; for a program of
several seeds, all seeds' episodes together."""

from __future__ import annotations

import jax
import numpy as np

from dql.agents import act, begin_episode
from dql.data import Dataset
from dql.envs import rollout

# The key an episode's memory is made with: folded with a number no step index reaches, so the first step's
# action draws stay what they are for agents without memory.
_EPISODE_FOLD = 2**31 - 1


@jax.jit
def _begin_per_seed(agents, observations, keys):
    """[S, E, obs] first observations, [S] keys -> every seed's episode memory (dql.agents.begin_episode)."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, _EPISODE_FOLD)
    return jax.vmap(begin_episode)(agents, observations, keys)


@jax.jit
def _select_per_seed(agents, observations, memory, keys, t):
    """[S, E, obs] observations, memory, [S] keys, step t -> ([S, E, act], memory): every seed's action selection
    in one call."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
    return jax.vmap(lambda agent, obs, mem, key: act(agent, obs, mem, t, key))(agents, observations, memory, keys)


class EpisodePolicy:
    """The BatchPolicy of S seeds' agents, E episodes each, all started together: at t = 0 every agent makes its
    episode memory (dql.agents.begin_episode: a plan to follow, or nothing), then each step one compiled call acts
    on [S E, obs] observations and carries the memory on. keys [S]: each seed's evaluation key."""

    def __init__(self, agents, keys: np.ndarray, episodes: int):
        self.agents, self.keys, self.episodes = agents, keys, episodes
        self.memory = None

    def __call__(self, observations: np.ndarray, t: int) -> np.ndarray:
        per_seed = observations.reshape(len(self.keys), self.episodes, -1)
        if t == 0:
            self.memory = _begin_per_seed(self.agents, per_seed, self.keys)
        actions, self.memory = _select_per_seed(self.agents, per_seed, self.memory, self.keys, t)
        return np.asarray(actions).reshape(len(self.keys) * self.episodes, -1)


class Evaluator:
    """All seeds' episodes in one vector env with one batched action call per step; reproducible from
    (seed, step): seed s evaluates in envs seeded s + 100 + i with keys from s + 100, as its separate run would."""

    def __init__(self, env_id: str, env_kwargs: dict, episodes: int, seeds: list[int], dataset: Dataset):
        self.env_id, self.env_kwargs, self.episodes = env_id, env_kwargs, episodes
        self.seeds = [seed + 100 for seed in seeds]  # the reference evaluates with seed + 100
        self.dataset = dataset

    def __call__(self, agents, step: int) -> list[dict]:
        num_seeds, episodes = len(self.seeds), self.episodes
        keys = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(s), step)) for s in self.seeds])
        policy = EpisodePolicy(agents, keys, episodes)
        env_seeds = [seed + i for seed in self.seeds for i in range(episodes)]
        returns = rollout(policy, self.env_id, self.env_kwargs, num_seeds * episodes, env_seeds)["returns"]
        results = []
        for seed_returns in returns.reshape(num_seeds, episodes):
            scores = self.dataset.normalized_score(seed_returns)
            results.append({
                "step": step,
                "return_mean": float(seed_returns.mean()),
                "return_std": float(seed_returns.std()),
                "score_mean": None if scores is None else float(scores.mean()),
                "score_std": None if scores is None else float(scores.std()),
            })
        return results
