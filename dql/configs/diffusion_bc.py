"""Diffusion-BC: the Diffusion-QL actor (T = 5, vp, 3 x 256 Mish) on the diffusion loss alone (Wang et al. 2023)."""

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
    return config


DATASET_OVERRIDES: dict[str, dict] = {"pendulum-mixed-v0": dict(PENDULUM_ROW)}
