"""TD3+BC (Fujimoto & Gu 2021): alpha 2.5, policy noise 0.2 clipped at 0.5, delay 2, normalised states, 2 x 256.

The paper uses one setting for every D4RL dataset: 1M steps, evaluation every 5000 with 10 episodes.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("td3bc", steps=1_000_000, eval_every=5_000)
    config.alpha = 2.5
    config.lr = 3e-4
    config.critic_lr = 3e-4
    config.discount = 0.99
    config.tau = 0.005
    config.policy_noise = 0.2
    config.noise_clip = 0.5
    config.policy_freq = 2  # TD3_BC's name (--policy_freq), which ReBRAC keeps too
    config.hidden_dims = (256, 256)
    config.activation = "relu"
    return config


DATASET_OVERRIDES: dict[str, dict] = {"pendulum-mixed-v0": dict(PENDULUM_ROW)}
