"""Trajectory diffusion (Diffuser, Janner et al. 2022): the temporal U-Net and value function, conditioning, the
weighted trajectory loss and (value-guided) planning."""

from dql.planning.temporal_unet import TemporalUnet, ValueFunction, check_horizon
from dql.planning.trajectories import (
    PlannedTrajectories,
    apply_conditioning,
    best_plan,
    loss_weights,
    plan,
    trajectory_loss,
)

__all__ = [
    "PlannedTrajectories",
    "TemporalUnet",
    "ValueFunction",
    "apply_conditioning",
    "best_plan",
    "check_horizon",
    "loss_weights",
    "plan",
    "trajectory_loss",
]
