"""Diffusion models over actions: schedules, forward noising, reverse samplers (DDPM, DDIM, DPM-Solver) and flows."""

from dql.diffusion.ddpm import (
    diffusion_loss,
    posterior_mean_log_variance,
    predict_x0_from_eps,
    q_sample,
    sample,
)
from dql.diffusion.flow import euler_sample, flow_matching_loss
from dql.diffusion.samplers import ddim_sample, ddim_timesteps, dpm_solver_sample
from dql.diffusion.schedules import SCHEDULES, DiffusionSchedule, make_betas

__all__ = [
    "SCHEDULES",
    "DiffusionSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "diffusion_loss",
    "dpm_solver_sample",
    "euler_sample",
    "flow_matching_loss",
    "make_betas",
    "posterior_mean_log_variance",
    "predict_x0_from_eps",
    "q_sample",
    "sample",
]
