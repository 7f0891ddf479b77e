"""Minari datasets behind `--dataset=minari:<dataset_id>` (e.g. minari:mujoco/hopper/medium-v0).

Loaded with the `minari` package (optional: pip install 'dql[minari]') from its local store ($MINARI_DATASETS_PATH,
default ~/.minari/datasets), downloaded first when it is not there. Episodes become transitions with explicit
next observations; `terminations` are the dones, truncations only end episodes. The dataset's own evaluation env
spec (else its env spec) evaluates it, and its ref_min_score / ref_max_score normalize the returns.
Goal-conditioned dict observations (the D4RL/pointmaze datasets: observation, achieved_goal, desired_goal) become
[observation, desired_goal] vectors, the layout the point-maze envs are flattened to for evaluation.
"""

from __future__ import annotations

import numpy as np

from dql.data.dataset import Dataset, DatasetError

INSTALL_HINT = "pip install 'dql[minari]'"


def _minari():
    try:
        import minari
    except ImportError as error:
        raise DatasetError(f"--dataset=minari:...: the minari package is not installed ({error}); {INSTALL_HINT}") \
            from error
    return minari


def _open(minari, dataset_id: str):
    from minari.storage import get_dataset_path

    if dataset_id not in minari.list_local_datasets():
        store = get_dataset_path()
        try:
            minari.download_dataset(dataset_id)
        except Exception as error:  # minari raises many kinds (no network, unknown id, missing hub package)
            raise DatasetError(
                f"--dataset=minari:{dataset_id}: not in the local Minari store {store} and could not be downloaded "
                f"({type(error).__name__}: {error}). Offline, copy the dataset into that folder or set "
                "MINARI_DATASETS_PATH to a store that holds it."
            ) from error
    try:
        return minari.load_dataset(dataset_id)
    except Exception as error:
        raise DatasetError(f"--dataset=minari:{dataset_id}: Minari could not load it ({error})") from error


def _env(minari_dataset) -> tuple[str | None, dict]:
    spec = getattr(minari_dataset.spec, "eval_env_spec", None) or getattr(minari_dataset.spec, "env_spec", None)
    if spec is None:
        return None, {}
    return spec.id, dict(spec.kwargs or {})


def load(dataset_id: str) -> Dataset:
    minari = _minari()
    minari_dataset = _open(minari, dataset_id)
    name = f"minari:{dataset_id}"
    columns = {key: [] for key in ("observations", "actions", "rewards", "next_observations", "terminals",
                                   "timeouts", "next_actions")}
    returns = []
    for episode in minari_dataset.iterate_episodes():
        observations = _flat_observations(episode.observations, name)
        terminations = np.asarray(episode.terminations, bool)
        truncations = np.asarray(episode.truncations, bool)
        columns["observations"].append(observations[:-1])
        columns["next_observations"].append(observations[1:])
        actions = np.asarray(episode.actions, np.float32).reshape(len(terminations), -1)
        columns["actions"].append(actions)
        columns["next_actions"].append(np.concatenate([actions[1:], actions[-1:]]))  # the last repeats its own
        columns["rewards"].append(np.asarray(episode.rewards, np.float32))
        columns["terminals"].append(terminations)
        columns["timeouts"].append(truncations & ~terminations)
        returns.append(float(np.sum(episode.rewards)))
    if not returns:
        raise DatasetError(f"--dataset={name}: the dataset has no episodes")
    arrays = {key: np.concatenate(value) for key, value in columns.items()}
    action_space = minari_dataset.action_space
    high = np.asarray(getattr(action_space, "high", np.abs(arrays["actions"]).max(axis=0)), np.float32)
    metadata = minari_dataset.storage.metadata
    env_id, env_kwargs = _env(minari_dataset)
    return Dataset(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        next_observations=arrays["next_observations"],
        dones=arrays["terminals"].astype(np.float32),
        name=name,
        source=f"minari store: {dataset_id}",
        episode_returns=np.asarray(returns),
        max_action=np.broadcast_to(high, (arrays["actions"].shape[1],)).copy(),
        env_id=env_id,
        env_kwargs=env_kwargs,
        ref_min_score=_float_or_none(metadata.get("ref_min_score")),
        ref_max_score=_float_or_none(metadata.get("ref_max_score")),
        next_actions=arrays["next_actions"],
    )


def _flat_observations(observations, name: str) -> np.ndarray:
    """[T + 1, obs] float32 rows of an episode's observations; a goal-conditioned dict as [observation, goal]."""
    if isinstance(observations, dict):
        if not {"observation", "desired_goal"} <= set(observations):
            raise DatasetError(f"--dataset={name}: dictionary observations with keys {sorted(observations)} are not "
                               "supported; expected flat vectors or goal-conditioned ones (observation, desired_goal)")
        parts = [np.asarray(observations[key], np.float32) for key in ("observation", "desired_goal")]
        return np.concatenate([part.reshape(len(part), -1) for part in parts], axis=1)
    return np.asarray(observations, np.float32).reshape(len(observations), -1)


def _float_or_none(value) -> float | None:
    return None if value is None else float(np.asarray(value).reshape(-1)[0])
