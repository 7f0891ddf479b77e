"""Diffusion-BC: the Diffusion-QL actor (T = 5, vp, 3 x 256 Mish) on the diffusion loss alone (Wang et al. 2023).

Task conditioning: the network sees the whole observation, so a goal in it (the point mazes' last two entries) already
conditions the actor. Classifier-free guidance as diffusion_policy's: goal_dims > 0 marks the observation's last
entries as the goal (2 on the mazes) and adds a keep flag to the input, condition_dropout > 0 trains the goal-free
model beside it, guidance_scale (1 = none) mixes the two at sampling. The maze rows leave goal_dims at 0, which keeps
the committed imitation study's runs reproducible.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, STEPS_PER_EPOCH, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("diffusion_bc", steps=2000 * STEPS_PER_EPOCH, eval_every=50 * STEPS_PER_EPOCH)
    config.lr = 3e-4
    config.grad_norm = 0.0
    config.diffusion_steps = 5
    config.beta_schedule = "vp"
    config.hidden_dims = (256, 256, 256)
    config.time_dim = 16
    config.activation = "mish"
    config.goal_dims = 0  # the observation's last goal_dims entries are the goal (task condition)
    config.condition_dropout = 0.0  # classifier-free guidance: the probability of dropping the goal in training
    config.guidance_scale = 1.0  # 1: the conditional model alone
    return config


DATASET_OVERRIDES: dict[str, dict] = {"pendulum-mixed-v0": dict(PENDULUM_ROW)}
