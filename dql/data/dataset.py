"""The in-memory dataset every source produces, its validation, reward transforms and on-device sampling."""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from dql.data import scores
from dql.errors import DatasetError

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "dones")
REWARD_TUNES = ("no", "normalize", "cql_antmaze", "iql_antmaze", "iql_locomotion", "minmax")


@dataclasses.dataclass
class Dataset:
    """Transitions (s, a, r, s', done) as host arrays, plus what is needed to evaluate and score a policy.

    `episode_returns` are the undiscounted returns of the behaviour episodes, `max_action` the symmetric per-
    dimension action bound, `env_id` the Gymnasium environment to evaluate in (None when there is none).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray
    name: str
    source: str
    episode_returns: np.ndarray
    max_action: np.ndarray
    env_id: str | None = None
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    # The action taken at s' (the next row of its episode; a repeat of `actions` where none follows): ReBRAC's
    # critic penalty needs it. Optional, so that a Dataset built by hand without it still trains the others.
    next_actions: np.ndarray | None = None

    def __post_init__(self):
        validate_transitions(self.arrays(), self.source)
        if self.next_actions is not None and self.next_actions.shape != self.actions.shape:
            raise DatasetError(f"{self.source}: 'next_actions' has shape {self.next_actions.shape}, expected the "
                               f"actions' {self.actions.shape}")

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def observation_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {key: getattr(self, key) for key in TRANSITION_KEYS}
        if self.next_actions is not None:
            arrays["next_actions"] = self.next_actions
        return arrays

    @functools.cached_property
    def content_sha256(self) -> str:
        """sha256 of the transitions (every array as float32 bytes, with its name and shape): two files give the
        same digest exactly when they hold the same data, whatever else their attributes record."""
        digest = hashlib.sha256()
        for key, value in self.arrays().items():
            value = np.ascontiguousarray(value, dtype=np.float32)
            digest.update(f"{key}{value.shape}".encode())
            digest.update(value.tobytes())
        return digest.hexdigest()

    def normalized_score(self, returns) -> np.ndarray | None:
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return scores.normalized_score(returns, self.ref_min_score, self.ref_max_score)

    def summary(self) -> dict:
        average = float(np.mean(self.episode_returns)) if len(self.episode_returns) else float("nan")
        normalized = self.normalized_score(average)
        return {
            "name": self.name,
            "source": self.source,
            "transitions": len(self),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "episodes": int(len(self.episode_returns)),
            "average_return": average,
            "average_normalized_score": None if normalized is None else float(normalized),
            "env_id": self.env_id,
            "content_sha256": self.content_sha256,
        }


def validate_transitions(arrays: dict[str, np.ndarray], source: str) -> None:
    """Shapes, dtypes, lengths and finiteness of the transition arrays; raise DatasetError naming the key."""
    n = None
    for key in TRANSITION_KEYS:
        if key not in arrays:
            raise DatasetError(f"{source}: missing key {key!r}")
        value = arrays[key]
        expected_ndim = 2 if key in ("observations", "actions", "next_observations") else 1
        if value.ndim != expected_ndim:
            raise DatasetError(
                f"{source}: key {key!r} has shape {value.shape}, expected {expected_ndim} dimension(s)"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise DatasetError(f"{source}: key {key!r} has dtype {value.dtype}, expected a float array")
        if n is None:
            n = len(value)
        elif len(value) != n:
            raise DatasetError(f"{source}: key {key!r} has {len(value)} rows but 'observations' has {n}")
        check_finite(value, key, source)
    if n == 0:
        raise DatasetError(f"{source}: the dataset has no transitions")
    if arrays["next_observations"].shape[1] != arrays["observations"].shape[1]:
        raise DatasetError(
            f"{source}: 'next_observations' has {arrays['next_observations'].shape[1]} columns, "
            f"'observations' has {arrays['observations'].shape[1]}"
        )


def check_finite(value: np.ndarray, key: str, source: str) -> None:
    bad = ~np.isfinite(value)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DatasetError(f"{source}: key {key!r} has {int(bad.sum())} NaN/inf value(s), first at row {row}")


def episode_returns(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """Undiscounted returns of the episodes ending where episode_ends is set.

    A trailing unfinished episode is left out unless the data holds no finished one.
    """
    ends = np.flatnonzero(episode_ends)
    if len(ends) == 0:
        return np.array([rewards.sum()], dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return cumulative[ends + 1] - cumulative[starts]


def tune_rewards(rewards: np.ndarray, mode: str, returns: np.ndarray) -> np.ndarray:
    """The reward transforms of Diffusion-QL's `reward_tune` option.

    normalize: standardise; cql_antmaze: (r - 0.5) * 4; iql_antmaze: r - 1; iql_locomotion: scale so that the
    range of episode returns is 1000 (IQL's locomotion scaling); minmax: map the rewards' range onto [-1, 1] (EDP's
    Kitchen and Adroit rewards).
    """
    rewards = rewards.astype(np.float32)
    if mode == "no":
        return rewards
    if mode == "normalize":
        return (rewards - rewards.mean()) / max(float(rewards.std()), 1e-8)
    if mode == "cql_antmaze":
        return (rewards - 0.5) * 4.0
    if mode == "iql_antmaze":
        return rewards - 1.0
    if mode == "iql_locomotion":
        spread = float(np.max(returns) - np.min(returns))
        if spread <= 0:
            raise DatasetError("reward_tune='iql_locomotion' needs episodes with different returns")
        return rewards * (1000.0 / spread)
    if mode == "minmax":
        low, high = float(rewards.min()), float(rewards.max())
        if high <= low:
            raise DatasetError("reward_tune='minmax' needs rewards that are not all equal")
        return (2.0 * (rewards - low) / (high - low) - 1.0).astype(np.float32)
    raise DatasetError(f"unknown reward_tune {mode!r}; expected one of {REWARD_TUNES}")


def training_arrays(dataset: Dataset, reward_tune: str = "no") -> dict[str, np.ndarray]:
    """float32 arrays ready to be put on device, with the reward transform applied."""
    arrays = {key: np.asarray(value, dtype=np.float32) for key, value in dataset.arrays().items()}
    arrays["rewards"] = tune_rewards(arrays["rewards"], reward_tune, dataset.episode_returns)
    return arrays


WINDOW_KEYS = ("window_starts", "window_offsets")


def sample_batch(data: dict[str, jax.Array], key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Uniform minibatch (with replacement) from device-resident arrays; runs inside the compiled loop.

    Transitions: every array is per row, and the batch is batch_size rows. Windows (trajectory models such as
    Diffuser): when `data` holds "window_starts" [N_w] (row indices) and "window_offsets" [H] (arange(H); its static
    shape is the horizon), batch_size starts are drawn uniformly and every other (per-row) array is gathered at rows
    start + offsets, giving [batch_size, H, ...]; the two window keys stay out of the batch.
    """
    if "window_starts" in data:
        starts, offsets = data["window_starts"], data["window_offsets"]
        chosen = jnp.take(starts, jax.random.randint(key, (batch_size,), 0, starts.shape[0]), axis=0)
        rows = chosen[:, None] + offsets[None, :]
        return {name: jnp.take(value, rows, axis=0) for name, value in data.items() if name not in WINDOW_KEYS}
    size = data["rewards"].shape[0]
    index = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree_util.tree_map(lambda x: jnp.take(x, index, axis=0), data)
