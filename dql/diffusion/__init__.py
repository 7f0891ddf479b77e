"""Diffusion models over actions: schedules, forward noising and reverse samplers."""

from dql.diffusion.ddpm import (
    diffusion_loss,
    posterior_mean_log_variance,
    predict_x0_from_eps,
    q_sample,
    sample,
)
from dql.diffusion.schedules import SCHEDULES, DiffusionSchedule, make_betas

__all__ = [
    "SCHEDULES",
    "DiffusionSchedule",
    "diffusion_loss",
    "make_betas",
    "posterior_mean_log_variance",
    "predict_x0_from_eps",
    "q_sample",
    "sample",
]
