"""The Diffusion-QL paper's 2-D multimodal bandit: four separated action modes with different rewards.

One state, one-step episodes (every transition is terminal), so Q(s, a) = r(a): a policy that keeps every mode is
a faithful behaviour model, and a policy improved by a critic should pick the best mode. Tests and the example
script `experiments/bandit_policies.py` share it.
"""

from __future__ import annotations

import numpy as np

from dql.data.dataset import Dataset

MODES = np.array([[0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7], [0.7, -0.7]], np.float32)
MODE_REWARDS = np.array([1.0, 0.6, 0.2, 0.6], np.float32)
BEST = 0
RADIUS = 0.3  # a sample within RADIUS of a mode counts as taking it
SPREAD = 0.05  # the standard deviation of each mode's actions


def bandit_data(n: int = 4000, seed: int = 0, state: float = 0.0) -> dict[str, np.ndarray]:
    """n transitions, the mode of each uniform over the four; the observation is the constant `state`.

    `next_actions` (ReBRAC's critic penalty) are the actions themselves: every episode ends after one step, so
    they never enter a target.
    """
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, len(MODES), n)
    actions = np.clip(MODES[mode] + SPREAD * rng.normal(size=(n, 2)), -1, 1).astype(np.float32)
    observations = np.full((n, 1), state, np.float32)
    return {
        "observations": observations,
        "actions": actions,
        "rewards": MODE_REWARDS[mode],
        "next_observations": observations.copy(),
        "dones": np.ones(n, np.float32),
        "next_actions": actions.copy(),
    }


def bandit_dataset(n: int = 4000, seed: int = 0, state: float = 0.0) -> Dataset:
    """The bandit as a Dataset for the training loop (no environment: runs train without evaluation)."""
    data = bandit_data(n, seed, state)
    return Dataset(**data, name="bandit", source="dql.data.bandit", episode_returns=data["rewards"].copy(),
                   max_action=np.ones(2, np.float32))


def mode_fractions(actions: np.ndarray) -> np.ndarray:
    """The fraction of `actions` [N, 2] within RADIUS of each mode: [4]."""
    distance = np.linalg.norm(actions[:, None, :] - MODES[None], axis=-1)
    return (distance < RADIUS).mean(axis=0)
