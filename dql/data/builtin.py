"""The built-in dataset, generated on first use: `pendulum-mixed-v0`, mixed-quality data in Gymnasium's Pendulum-v1.

A scripted swing-up controller (energy pumping far from upright, a PD law near it) returns about -147 per episode;
uniform random actions about -1224. Each behaviour episode replaces the controller's action with a uniform
random one with probability p, p cycling through BEHAVIOUR_EPSILONS, so the data mixes near-expert, mediocre and
random play. An offline learner has to pick out the good actions to beat the data's average.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from dql.data import d4rl
from dql.data.dataset import Dataset

NAME = "pendulum-mixed-v0"
ENV_ID = "Pendulum-v1"
MAX_TORQUE = 2.0
BEHAVIOUR_EPSILONS = (0.1, 0.4, 0.7, 1.0)
NUM_EPISODES = 200
SEED = 0
# Mean returns over 1000 episodes (seeds 0..999) of uniform random actions and of the controller: the 0 and 100
# of the normalized score. `python -m dql.data.builtin --measure` recomputes them.
REF_MIN_SCORE = -1224.16
REF_MAX_SCORE = -146.98


def cache_dir() -> Path:
    return Path(os.environ.get("DQL_DATASET_DIR", "~/.cache/dql/datasets")).expanduser()


def swing_up_controller(observations: np.ndarray) -> np.ndarray:
    """Energy-based swing-up with a PD balance law near upright; observations are [cos th, sin th, th_dot]."""
    cos_theta, sin_theta, velocity = observations[:, 0], observations[:, 1], observations[:, 2]
    theta = np.arctan2(sin_theta, cos_theta)
    # Energy of a uniform rod (m = l = 1, g = 10) with theta = 0 upright; pump until it reaches the upright energy.
    energy = velocity**2 / 6.0 + 5.0 * cos_theta
    pump = MAX_TORQUE * np.sign(velocity * (5.0 - energy) + 1e-6)
    balance = np.clip(-(10.0 * theta + 2.0 * velocity), -MAX_TORQUE, MAX_TORQUE)
    near_upright = (cos_theta > 0.85) & (np.abs(velocity) < 4.0)
    return np.where(near_upright, balance, pump)[:, None].astype(np.float32)


def _episodes(policy, num_episodes: int, seed: int, record: bool):
    """Run num_episodes of Pendulum-v1 in one vector env; returns per-step arrays [T, B, ...] and episode returns."""
    from dql.envs import make_vector_env

    envs = make_vector_env(ENV_ID, {}, num_episodes)
    rng = np.random.default_rng(seed)
    try:
        observations, _ = envs.reset(seed=seed)
        steps = []
        returns = np.zeros(num_episodes)
        while True:
            actions = policy(observations, rng)
            next_observations, rewards, terminated, truncated, _ = envs.step(actions)
            returns += rewards
            if record:
                steps.append((observations, actions, rewards, next_observations, terminated, truncated))
            observations = next_observations
            # Pendulum only truncates, all envs at the same step: every episode ends together.
            if (terminated | truncated).all():
                break
    finally:
        envs.close()
    return steps, returns


def behaviour_policy(epsilons: np.ndarray):
    def policy(observations, rng):
        actions = swing_up_controller(observations)
        random_actions = rng.uniform(-MAX_TORQUE, MAX_TORQUE, actions.shape).astype(np.float32)
        replace = rng.random((len(observations), 1)) < epsilons[:, None]
        return np.where(replace, random_actions, actions)

    return policy


def generate(path: Path, num_episodes: int | None = None, seed: int = SEED) -> Path:
    """Write the dataset in D4RL's hdf5 layout (episode-major rows, timeouts at each episode's last step)."""
    num_episodes = num_episodes or NUM_EPISODES
    epsilons = np.resize(np.asarray(BEHAVIOUR_EPSILONS), num_episodes)
    steps, returns = _episodes(behaviour_policy(epsilons), num_episodes, seed, record=True)
    # [T, B, ...] -> episode-major [B * T, ...] as D4RL stores them.
    observations, actions, rewards, next_observations, terminated, truncated = (
        np.swapaxes(np.stack(column), 0, 1).reshape(num_episodes * len(steps), -1) for column in zip(*steps)
    )
    arrays = {
        "observations": observations.astype(np.float32),
        "actions": actions.astype(np.float32),
        "rewards": rewards[:, 0].astype(np.float32),
        "next_observations": next_observations.astype(np.float32),
        "terminals": terminated[:, 0].astype(bool),
        "timeouts": truncated[:, 0].astype(bool),
    }
    attrs = {
        "name": NAME,
        "env_id": ENV_ID,
        "ref_min_score": REF_MIN_SCORE,
        "ref_max_score": REF_MAX_SCORE,
        "max_action": np.full(1, MAX_TORQUE, np.float32),
        "behaviour": "swing-up controller with uniform random actions at rate p per episode, p in "
        + ",".join(str(e) for e in BEHAVIOUR_EPSILONS),
        "behaviour_mean_return": float(returns.mean()),
        "seed": seed,
    }
    return d4rl.write_hdf5(path, arrays, attrs)


def load() -> Dataset:
    path = cache_dir() / f"{NAME}.hdf5"
    if not path.exists():
        start = time.monotonic()
        print(f"generating {NAME} ({NUM_EPISODES} episodes of {ENV_ID}) into {path}", file=sys.stderr)
        generate(path)
        print(f"  done in {time.monotonic() - start:.1f}s", file=sys.stderr)
    return d4rl.read_hdf5(path, name=NAME)


def measure_reference_returns(num_episodes: int = 1000) -> dict[str, float]:
    """Mean returns of uniform random actions and of the controller, the normalized score's 0 and 100."""

    def random_policy(observations, rng):
        return rng.uniform(-MAX_TORQUE, MAX_TORQUE, (len(observations), 1)).astype(np.float32)

    _, random_returns = _episodes(random_policy, num_episodes, seed=0, record=False)
    _, expert_returns = _episodes(lambda o, rng: swing_up_controller(o), num_episodes, seed=0, record=False)
    return {"random": float(random_returns.mean()), "controller": float(expert_returns.mean())}


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(measure_reference_returns())
    else:
        print(load().summary())
