"""Soft Actor-Critic, online (Haarnoja et al. 2018; SpinningUp's loop): 2 x 256 networks, lr 3e-4, batch 256,
automatic entropy tuning, 5,000 uniform-random steps first, 50 updates every 50 environment steps.

It trains the behaviour policies of the project's own datasets (`python -m dql.collect --train_policies`).
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("sac", steps=1_000_000, eval_every=5_000, eval_episodes=5)
    config.online = True
    config.start_steps = 5_000
    config.update_after = 5_000
    config.update_every = 50
    config.lr = 3e-4
    config.critic_lr = 3e-4
    config.alpha_lr = 3e-4
    config.discount = 0.99
    config.tau = 0.005
    config.hidden_dims = (256, 256)
    config.activation = "relu"
    return config


DATASET_OVERRIDES: dict[str, dict] = {}
