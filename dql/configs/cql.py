"""CQL(H) with a SAC backbone (Kumar et al. 2020): 3 x 256 networks, actor lr 1e-4, critic lr 3e-4, automatic
entropy tuning, 10 sampled actions with importance sampling in the log-sum-exp.

Locomotion: fixed conservative weight 5. AntMaze: the Lagrange version (weight tuned to hold the gap at the
threshold), rewards (r - 0.5) * 4 as in the CQL code.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("cql", steps=1_000_000, eval_every=5_000)
    config.cql_weight = 5.0
    config.num_samples = 10
    config.cql_temperature = 1.0
    config.lagrange = False
    config.target_action_gap = 5.0
    config.lr = 1e-4
    config.critic_lr = 3e-4
    config.alpha_lr = 1e-4
    config.discount = 0.99
    config.tau = 0.005
    config.hidden_dims = (256, 256, 256)
    config.activation = "relu"
    return config


def _domain_rows() -> dict[str, dict]:
    antmaze = dict(lagrange=True, reward_tune="cql_antmaze", eval_episodes=100)
    names = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
    return {f"antmaze-{name}-{v}": dict(antmaze) for name in names for v in ("v0", "v2")}


DATASET_OVERRIDES: dict[str, dict] = {**_domain_rows(), "pendulum-mixed-v0": dict(PENDULUM_ROW)}
