"""Implicit Q-Learning (Kostrikov, Nair & Levine 2022), 2 x 256 networks, 1M steps.

Expectile / temperature: 0.7 / 3.0 for locomotion, 0.9 / 10.0 for AntMaze, 0.7 / 0.5 for Kitchen and Adroit.
Rewards: locomotion scaled so the range of episode returns is 1000; AntMaze r - 1.
Actor dropout: 0.1 for Kitchen and Adroit, as the authors' code runs them (ikostrikov/implicit_q_learning,
configs/kitchen_config.py, `config.dropout_rate = 0.1`, which its README names for "Kitchen and Adroit"; its
mujoco and antmaze configs set None); none elsewhere.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("iql", steps=1_000_000, eval_every=5_000)
    config.expectile = 0.7
    config.temperature = 3.0
    config.max_weight = 100.0
    config.lr = 3e-4  # actor, with a cosine decay over the run
    config.critic_lr = 3e-4
    config.value_lr = 3e-4
    config.discount = 0.99
    config.tau = 0.005
    config.hidden_dims = (256, 256)
    config.activation = "relu"
    config.dropout_rate = 0.0  # of the actor's hidden units while it trains; 0 = none
    return config


def _domain_rows() -> dict[str, dict]:
    rows = {}
    locomotion = dict(expectile=0.7, temperature=3.0, reward_tune="iql_locomotion")
    for env in ("halfcheetah", "hopper", "walker2d"):
        for level in ("medium", "medium-replay", "medium-expert"):
            rows[f"{env}-{level}-v2"] = dict(locomotion)
    antmaze = dict(expectile=0.9, temperature=10.0, reward_tune="iql_antmaze", eval_episodes=100)
    for name in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
        rows[f"antmaze-{name}-v0"] = dict(antmaze)
        rows[f"antmaze-{name}-v2"] = dict(antmaze)
    for name in ("kitchen-complete-v0", "kitchen-partial-v0", "kitchen-mixed-v0", "pen-human-v1", "pen-cloned-v1"):
        rows[name] = dict(expectile=0.7, temperature=0.5, dropout_rate=0.1, eval_episodes=100)
    return rows


DATASET_OVERRIDES: dict[str, dict] = {**_domain_rows(), "pendulum-mixed-v0": dict(PENDULUM_ROW)}
