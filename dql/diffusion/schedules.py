"""Noise schedules of a DDPM and the coefficients derived from them.

All coefficients are computed once, in float64 numpy, and handed to the compiled code as constants: they depend
only on the schedule's name and length, never on data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine", "vp")


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> np.ndarray:
    """Ho et al. (2020): betas evenly spaced from beta_start to beta_end."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def scaled_linear_betas(num_steps: int) -> np.ndarray:
    """Nichol & Dhariwal's (2021) extension of Ho et al.'s linear betas to any T (EDP's "linear"): both ends scaled
    by 1000 / T, so that alpha_bar_T stays near zero for short chains; equal to `linear` at T = 1000."""
    scale = 1000.0 / num_steps
    if scale * 2e-2 >= 1.0:
        raise ValueError(f"beta schedule 'scaled_linear' needs more than 20 diffusion steps "
                         f"(--config.diffusion_steps), got {num_steps}")
    return linear_betas(num_steps, scale * 1e-4, scale * 2e-2)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2)."""
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    alpha_bar = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


def vp_betas(num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """The discretised variance-preserving SDE used by Diffusion-QL (Song et al. 2021, Wang et al. 2023).

    alpha_t = exp(-beta_min / T - 0.5 (beta_max - beta_min) (2t - 1) / T^2) for t = 1..T; beta_t = 1 - alpha_t.
    """
    t = np.arange(1, num_steps + 1, dtype=np.float64)
    alphas = np.exp(-beta_min / num_steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / num_steps**2)
    return 1.0 - alphas


def make_betas(name: str, num_steps: int) -> np.ndarray:
    if num_steps < 1:
        raise ValueError(f"diffusion steps must be >= 1 (--config.diffusion_steps), got {num_steps}")
    if name == "linear":
        return linear_betas(num_steps)
    if name == "scaled_linear":
        return scaled_linear_betas(num_steps)
    if name == "cosine":
        return cosine_betas(num_steps)
    if name == "vp":
        return vp_betas(num_steps)
    raise ValueError(f"unknown beta schedule {name!r} (--config.beta_schedule); expected one of {SCHEDULES}")


@dataclasses.dataclass(frozen=True)
class DiffusionSchedule:
    """Per-timestep coefficients of the forward process q(x_t | x_0) and the posterior q(x_{t-1} | x_t, x_0).

    Index i = 0..T-1 is diffusion step t = i + 1, as in the reference implementation.
    """

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @classmethod
    def create(cls, name: str, num_steps: int) -> "DiffusionSchedule":
        betas = make_betas(name, num_steps)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            posterior_variance=posterior_variance,
            # The posterior variance is 0 at t = 1; clip before the log as the reference does.
            posterior_log_variance_clipped=np.log(np.maximum(posterior_variance, 1e-20)),
            posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        )
