"""Diffuser as an agent: windowed minibatches, trajectory windows and returns, learning a known plan, value guidance,
and the real loop (train, checkpoint, restore, act, resume)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dql
from dql.data.dataset import Dataset, sample_batch, training_arrays
from dql.data.windows import episode_ends, trajectory_windows


def test_tests_import_this_worktree():
    assert "/work/diffuser/dql" in dql.__file__


def _two_episodes(lengths=(5, 3), terminal_first=True, obs_dim=2):
    """Episode 0 (5 rows, ends in a terminal unless told) then episode 1 (3 rows, a timeout: its last successor is
    not the next row). observations[:, 0] numbers the rows; rewards are 1, 2, 3, ... per row."""
    n = sum(lengths)
    observations = np.zeros((n, obs_dim), np.float32)
    observations[:, 0] = np.arange(n)
    next_observations = observations + 0.0
    next_observations[:-1] = observations[1:]
    next_observations[-1, 0] = 100.0
    dones = np.zeros(n, np.float32)
    if terminal_first:
        dones[lengths[0] - 1] = 1.0
    else:  # a timeout: the successor of the first episode's last row is not the next row
        next_observations[lengths[0] - 1, 0] = 50.0
    return Dataset(
        observations=observations, actions=np.arange(n, dtype=np.float32)[:, None] / 10,
        rewards=np.arange(1, n + 1, dtype=np.float32), next_observations=next_observations, dones=dones,
        name="two", source="test", episode_returns=np.array([15.0, 21.0]), max_action=np.array([1.0], np.float32),
    )


# ------------------------------------------------------------------------------------------ windowed sampling
def test_windowed_sample_batch_gathers_consecutive_rows_of_one_episode():
    dataset = _two_episodes()
    data = trajectory_windows(training_arrays(dataset), dataset, horizon=3, use_padding=False, discount=1.0)
    batch = jax.jit(sample_batch, static_argnums=2)(jax.tree_util.tree_map(jnp.asarray, data),
                                                    jax.random.PRNGKey(0), 64)
    assert set(batch) == {"observations", "actions", "returns"}
    assert batch["observations"].shape == (64, 3, 2) and batch["actions"].shape == (64, 3, 1)
    assert batch["returns"].shape == (64, 3)
    rows = np.asarray(batch["observations"][..., 0])
    np.testing.assert_array_equal(np.diff(rows, axis=1), 1.0)  # consecutive rows
    # Without padding a window lies inside one episode: rows 0-4 or 5-7, so a start is 0, 1, 2 or 5.
    assert set(rows[:, 0].astype(int)) == {0, 1, 2, 5}
    np.testing.assert_allclose(np.asarray(batch["actions"][..., 0]), rows / 10, atol=1e-6)


def test_sample_batch_without_window_keys_keeps_the_transition_layout():
    dataset = _two_episodes()
    data = jax.tree_util.tree_map(jnp.asarray, training_arrays(dataset))
    key = jax.random.PRNGKey(3)
    batch = sample_batch(data, key, 16)
    assert {k: v.shape for k, v in batch.items()} == {
        "observations": (16, 2), "actions": (16, 1), "rewards": (16,), "next_observations": (16, 2), "dones": (16,)}
    index = np.asarray(jax.random.randint(key, (16,), 0, len(dataset)))
    np.testing.assert_array_equal(np.asarray(batch["rewards"]), dataset.rewards[index])


# ---------------------------------------------------------------------------------------- trajectory windows
def test_episode_ends_from_dones_and_broken_successors():
    np.testing.assert_array_equal(episode_ends(_two_episodes()), [4, 7])
    np.testing.assert_array_equal(episode_ends(_two_episodes(terminal_first=False)), [4, 7])


@pytest.mark.parametrize("use_padding", [False, True])
def test_trajectory_windows_starts_and_returns(use_padding):
    dataset = _two_episodes()
    gamma, penalty, horizon = 0.5, -10.0, 3
    out = trajectory_windows(training_arrays(dataset), dataset, horizon, use_padding, gamma,
                             termination_penalty=penalty)
    np.testing.assert_array_equal(out["window_offsets"], [0, 1, 2])
    rewards = [[1.0, 2.0, 3.0, 4.0, 5.0 + penalty], [6.0, 7.0, 8.0]]  # the first episode ends in a terminal

    def closed_form(episode):
        r = rewards[episode]
        return [sum(gamma ** k * r[i + k] for k in range(len(r) - i)) for i in range(len(r))]

    pad = horizon - 1 if use_padding else 0
    second = 5 + pad  # the second episode's first row
    if use_padding:
        np.testing.assert_array_equal(out["window_starts"], [0, 1, 2, 3, 4, second, second + 1, second + 2])
    else:
        np.testing.assert_array_equal(out["window_starts"], [0, 1, 2, second])
    expected_returns = closed_form(0) + [0.0] * pad + closed_form(1) + [0.0] * pad
    np.testing.assert_allclose(out["returns"], expected_returns, rtol=1e-6)
    assert len(out["observations"]) == len(out["actions"]) == len(out["returns"]) == 8 + 2 * pad
    # Padding rows are zeros (Diffuser's zero-filled episode slots); real rows keep their data.
    np.testing.assert_array_equal(out["observations"][5:5 + pad], 0.0)
    np.testing.assert_array_equal(out["observations"][second:second + 3, 0], [5, 6, 7])
    # Every window's rows stay inside the layout.
    assert out["window_starts"].max() + horizon <= len(out["observations"])


def test_trajectory_windows_cap_at_max_path_length_and_reject_short_episodes():
    dataset = _two_episodes()
    out = trajectory_windows(training_arrays(dataset), dataset, 3, True, 1.0, max_path_length=4)
    np.testing.assert_array_equal(out["window_starts"], [0, 1, 7, 8])  # starts <= 4 - 3 in each episode
    with pytest.raises(ValueError, match="horizon=6"):
        trajectory_windows(training_arrays(dataset), dataset, 6, False, 1.0)
