"""Behaviour cloning with a tanh-squashed Gaussian policy (2 x 256, ReLU), as in CORL's BC baseline setup."""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("bc", steps=1_000_000, eval_every=5_000)
    config.lr = 3e-4
    config.hidden_dims = (256, 256)
    config.activation = "relu"
    config.grad_norm = 0.0
    return config


DATASET_OVERRIDES: dict[str, dict] = {"pendulum-mixed-v0": dict(PENDULUM_ROW)}
