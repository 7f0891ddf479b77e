"""Trajectory windows for models of whole trajectories (Diffuser): episodes recovered from a Dataset, laid out with
their padding rows, the windows' start rows and the discounted return from every row.

The layout feeds `dataset.sample_batch`'s window mode: per-row arrays ("observations", "actions", "returns"), plus
"window_starts" (row indices) and "window_offsets" (arange(horizon)); a window is rows start .. start + H - 1.

Padding. Diffuser's ReplayBuffer stores each episode in a zero-filled [max_path_length, dim] slot and normalises
the slot as a whole, so the steps past an episode's end are raw zeros (normalised like data) with zero reward.
Here each episode is followed by horizon - 1 rows of zeros when padding is used: enough for a window starting at
the episode's last row, and the same values Diffuser's windows see past the end (observations, actions and rewards
0). Without padding no rows are added and every window lies inside one episode.
"""

from __future__ import annotations

import numpy as np

from dql.data.dataset import Dataset


def episode_ends(dataset: Dataset) -> np.ndarray:
    """Indices of the rows that end an episode: dones[i] set, or next_observations[i] differing from
    observations[i + 1] (a timeout, or the seam between two episodes), and the last row."""
    n = len(dataset)
    ends = dataset.dones.astype(bool).copy()
    ends[:-1] |= np.any(dataset.next_observations[:-1] != dataset.observations[1:], axis=1)
    ends[n - 1] = True
    return np.flatnonzero(ends)


def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """sum_k discount^k rewards[i + k] over the rest of the episode, for every row i (float64)."""
    returns = np.zeros(len(rewards), np.float64)
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = float(rewards[i]) + discount * running
        returns[i] = running
    return returns


def trajectory_windows(arrays: dict[str, np.ndarray], dataset: Dataset, horizon: int, use_padding: bool,
                       discount: float, max_path_length: int | None = None,
                       termination_penalty: float = 0.0) -> dict[str, np.ndarray]:
    """Per-row "observations", "actions" and "returns" with padding rows, "window_starts" and "window_offsets".

    arrays: float arrays per dataset row (at least "observations", "actions", "rewards"; e.g. `training_arrays`),
    dataset: where the episode boundaries come from. Window starts per episode of length L, as Diffuser's
    SequenceDataset makes them: with padding every row of the episode (0 .. L - 1), without padding every start
    whose window fits inside the episode (0 .. L - H); both capped at max_path_length - H when given (Diffuser pads
    each episode only up to max_path_length, so a full-length episode gets no padded windows). Diffuser's
    `range(max_start)` also leaves out the last of those starts; here it is kept.

    "returns"[i] is Diffuser's ValueDataset target for a window starting at row i: the discounted sum of the
    rewards from i to the episode's end, with termination_penalty added to the reward of an episode's last row
    when that row is a terminal (dones set), as Diffuser's ReplayBuffer does. Padding rows hold zeros throughout.
    """
    if horizon < 1:
        raise ValueError(f"--config.horizon must be >= 1, got {horizon}")
    ends = episode_ends(dataset)
    begins = np.concatenate([[0], ends[:-1] + 1])
    pad = horizon - 1 if use_padding else 0
    keys = ("observations", "actions")
    pieces = {key: [] for key in (*keys, "returns")}
    starts = []
    row = 0
    for begin, end in zip(begins, ends):
        length = int(end - begin + 1)
        rewards = np.asarray(arrays["rewards"][begin:end + 1], np.float64).copy()
        if dataset.dones[end]:
            rewards[-1] += termination_penalty
        last_start = length - 1 if use_padding else length - horizon
        if max_path_length is not None:
            last_start = min(last_start, max_path_length - horizon)
        starts.append(row + np.arange(max(last_start + 1, 0)))
        for key in keys:
            value = np.asarray(arrays[key][begin:end + 1], np.float32)
            pieces[key] += [value, np.zeros((pad, *value.shape[1:]), np.float32)]
        pieces["returns"] += [discounted_returns(rewards, discount).astype(np.float32), np.zeros(pad, np.float32)]
        row += length + pad
    window_starts = np.concatenate(starts).astype(np.int32)
    if len(window_starts) == 0:
        raise ValueError(f"no episode of {dataset.source} is at least --config.horizon={horizon} steps long; "
                         "use a shorter horizon or --config.use_padding=True")
    out = {key: np.concatenate(value) for key, value in pieces.items()}
    out["window_starts"] = window_starts
    out["window_offsets"] = np.arange(horizon, dtype=np.int32)
    return out


def action_chunk_windows(dataset: Dataset, obs_horizon: int, pred_horizon: int) -> dict[str, np.ndarray]:
    """Diffusion Policy's training windows: for every row t of every episode, the observations of rows
    t - obs_horizon + 1 .. t and the actions of rows t - obs_horizon + 1 .. t - obs_horizon + pred_horizon.

    Per-row "observations" and "actions" with each episode edge-padded (its first row repeated obs_horizon - 1
    times before it, its last row pred_horizon - obs_horizon times after it, as Diffusion Policy's SequenceSampler
    pads with the edge values), "window_starts" (one per data row, at the row obs_horizon - 1 before it) and
    "window_offsets" (arange(pred_horizon)). Diffusion Policy pads after by action_horizon - 1 rows only, which
    drops the windows of an episode's last pred_horizon - action_horizon rows and every window of an episode
    shorter than that; padding to the full horizon keeps one window per row, so a one-step episode (a bandit)
    trains too.
    """
    if not 1 <= obs_horizon <= pred_horizon:
        raise ValueError(f"--config.obs_horizon={obs_horizon} must be between 1 and --config.pred_horizon="
                         f"{pred_horizon}")
    ends = episode_ends(dataset)
    begins = np.concatenate([[0], ends[:-1] + 1])
    before, after = obs_horizon - 1, pred_horizon - obs_horizon
    rows = np.concatenate([np.concatenate([np.full(before, begin), np.arange(begin, end + 1), np.full(after, end)])
                           for begin, end in zip(begins, ends)])
    lengths = ends - begins + 1
    padded_begins = np.concatenate([[0], np.cumsum(lengths + before + after)[:-1]])
    starts = np.concatenate([begin + np.arange(length) for begin, length in zip(padded_begins, lengths)])
    return {"observations": np.asarray(dataset.observations, np.float32)[rows],
            "actions": np.asarray(dataset.actions, np.float32)[rows],
            "window_starts": starts.astype(np.int32),
            "window_offsets": np.arange(pred_horizon, dtype=np.int32)}
