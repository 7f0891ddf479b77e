"""Flow Q-Learning (Park, Li & Levine, ICML 2025): the reference's defaults and its per-dataset table.

Source of every value: github.com/seohongpark/fql. The base is `agents/fql.py`'s get_config() (lr 3e-4, batch
256, 4 x 512 networks for the flow, the one-step policy and the critics, LayerNorm in the critics only, discount
0.99, tau 0.005, q_agg mean, alpha 10, 10 flow steps, normalize_q_loss off) with `main.py`'s defaults (1M offline
steps, evaluation every 100,000 steps with 50 episodes) and `envs/env_utils.py`'s dataset action clipping (1e-5).
The rows are the README's "FQL on D4RL" commands, the exact flags of the paper's D4RL results: every D4RL dataset
it reports (AntMaze v2 and Adroit v1) trains 500,000 steps; alpha and q_agg per dataset. AntMaze rewards are
r - 1 (its `d4rl_utils.get_dataset`, our `iql_antmaze`).

The paper reports no D4RL locomotion (gym MuJoCo) dataset, so those, and the generated gym: tiers, take the base.
The README advises, for a new task, normalize_q_loss=True and alpha tuned in {0.03, 0.1, 0.3, 1, 3, 10}.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("fql", steps=1_000_000, eval_every=100_000, eval_episodes=50)
    config.alpha = 10.0  # the distillation loss's weight (per dataset)
    config.lr = 3e-4  # every network
    config.discount = 0.99
    config.tau = 0.005
    config.q_agg = "mean"  # "mean" or "min" over the two target heads
    config.flow_steps = 10
    config.normalize_q_loss = False
    config.hidden_dims = (512, 512, 512, 512)  # the flow, the one-step policy and the critics
    config.layer_norm = True  # critics
    config.actor_layer_norm = False  # flow and one-step policy
    config.action_clip_eps = 1e-5  # dataset actions clipped to [-1 + eps, 1 - eps] (unit box)
    return config


def _row(alpha, q_agg, reward_tune="no"):
    return {"alpha": alpha, "q_agg": q_agg, "steps": 500_000, "reward_tune": reward_tune}


# README, "FQL on D4RL": python main.py --env_name=NAME --offline_steps=500000 [--agent.q_agg=min] --agent.alpha=A
DATASET_OVERRIDES: dict[str, dict] = {
    "antmaze-umaze-v2": _row(10.0, "mean", "iql_antmaze"),
    "antmaze-umaze-diverse-v2": _row(10.0, "mean", "iql_antmaze"),
    "antmaze-medium-play-v2": _row(10.0, "mean", "iql_antmaze"),
    "antmaze-medium-diverse-v2": _row(10.0, "mean", "iql_antmaze"),
    "antmaze-large-play-v2": _row(3.0, "mean", "iql_antmaze"),
    "antmaze-large-diverse-v2": _row(3.0, "mean", "iql_antmaze"),
    "pen-human-v1": _row(10000.0, "min"),
    "pen-cloned-v1": _row(10000.0, "min"),
    "pen-expert-v1": _row(3000.0, "min"),
    "door-human-v1": _row(30000.0, "min"),
    "door-cloned-v1": _row(30000.0, "min"),
    "door-expert-v1": _row(30000.0, "min"),
    "hammer-human-v1": _row(30000.0, "min"),
    "hammer-cloned-v1": _row(10000.0, "min"),
    "hammer-expert-v1": _row(30000.0, "min"),
    "relocate-human-v1": _row(10000.0, "min"),
    "relocate-cloned-v1": _row(30000.0, "min"),
    "relocate-expert-v1": _row(30000.0, "min"),
    "pendulum-mixed-v0": dict(PENDULUM_ROW),
}
