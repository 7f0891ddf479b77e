"""Few-step samplers for action diffusion models trained with the discrete DDPM objective.

- DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"): the non-Markovian reverse process over a
  sub-sequence of the training steps; eta = 0 is a first-order solver of the probability-flow ODE.
- DPM-Solver (Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
  Sampling in Around 10 Steps"): exact integration of the linear part of the ODE in the half-logSNR lambda and a
  Taylor expansion of the noise prediction; here the singlestep "DPM-Solver-fast" schedule of orders, as in the
  authors' `dpm_solver` package, which EDP (Kang et al. 2023, "Efficient Diffusion Policies for Offline
  Reinforcement Learning") uses for evaluation. Steps are uniform in lambda by default: on low-dimensional data
  that spacing converges at the solver's order, while steps uniform in t (EDP's choice) stall, see
  `dpm_solver_sample`.

Both take the same `eps_fn(noisy_actions [B, A], t [B], observations [B, d]) -> eps` as `dql.diffusion.ddpm`. DDIM
passes integer step indices (int32). DPM-Solver treats the discrete model as a continuous-time one and passes
*float* indices (the noise's dtype), so the network must embed t smoothly (the sinusoidal embedding of `dql.nets`
does).

Every time grid and coefficient depends only on the schedule and the static step counts, so it is computed once in
float64 numpy; the compiled code only evaluates the network and takes linear combinations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dql.diffusion.ddpm import EpsFn
from dql.diffusion.schedules import DiffusionSchedule

SPACINGS = ("time_uniform", "logSNR")


# ---------------------------------------------------------------------------------------------------------------
# DDIM


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """Step indices visited by DDIM, in sampling order: evenly spaced from T - 1 down to 0 (just T - 1 if one step).

    Rounds half up so that indices at least one apart never collide.
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"DDIM needs 1 <= num_steps <= {num_train_steps} (the training steps), got {num_steps}")
    return np.floor(np.linspace(num_train_steps - 1, 0, num_steps) + 0.5).astype(np.int32)


def ddim_sample(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    observations: jax.Array,
    initial_noise: jax.Array,
    num_steps: int,
    max_action: jax.Array | float | None = None,
    eta: float = 0.0,
    step_noise: jax.Array | None = None,
) -> jax.Array:
    """DDIM from x_T ~ N(0, I) to x_0 in `num_steps` network evaluations.

    num_steps: how many of the T training steps are visited (static), `ddim_timesteps(T, num_steps)`; each step goes
    from one visited index to the next, and the last from index 0 (t = 1) to the clean x_0. eps_fn receives int32
    indices [B]. initial_noise: [B, A]. eta: a Python float; 0 is deterministic, 1 with num_steps = T is exactly
    the ancestral DDPM sampler. step_noise: [num_steps, B, A], needed when eta > 0; step_noise[k] perturbs the k-th
    step in sampling order (the last one is noiseless, so step_noise[-1] is unused). With max_action, the
    predicted x_0 is clipped at every step (and the noise re-derived from it) and the final sample once more.
    """
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    if eta > 0 and step_noise is None:
        raise ValueError("DDIM with eta > 0 is stochastic: pass step_noise of shape [num_steps, B, A]")
    steps = ddim_timesteps(schedule.num_steps, num_steps)
    alpha_bar = schedule.alphas_cumprod[steps]
    alpha_bar_next = np.append(schedule.alphas_cumprod[steps[1:]], 1.0)  # the last step lands on x_0
    # Song et al. (2021), eq. 16: eta interpolates between the ODE (0) and the DDPM posterior variance (1).
    sigma = eta * np.sqrt((1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next))
    coefficients = {
        "sqrt_ab": np.sqrt(alpha_bar),
        "sqrt_1m_ab": np.sqrt(1 - alpha_bar),
        "sqrt_ab_next": np.sqrt(alpha_bar_next),
        "eps_scale": np.sqrt(np.maximum(1 - alpha_bar_next - sigma**2, 0.0)),
        "sigma": sigma,
    }
    coefficients = {name: jnp.asarray(value, initial_noise.dtype) for name, value in coefficients.items()}
    batch = observations.shape[0]
    if step_noise is None:
        step_noise = jnp.zeros((num_steps,) + initial_noise.shape, initial_noise.dtype)

    def step(x, inputs):
        t, c, noise = inputs
        eps = eps_fn(x, jnp.full((batch,), t, jnp.int32), observations)
        x0 = (x - c["sqrt_1m_ab"] * eps) / c["sqrt_ab"]
        if max_action is not None:
            x0 = jnp.clip(x0, -max_action, max_action)
            eps = (x - c["sqrt_ab"] * x0) / c["sqrt_1m_ab"]  # the noise consistent with the clipped x_0
        return c["sqrt_ab_next"] * x0 + c["eps_scale"] * eps + c["sigma"] * noise, None

    # Short chains are unrolled so XLA can fuse across steps; long ones stay a loop to keep compile time flat.
    x, _ = jax.lax.scan(step, initial_noise, (jnp.asarray(steps), coefficients, step_noise), unroll=num_steps <= 10)
    return x if max_action is None else jnp.clip(x, -max_action, max_action)


# ---------------------------------------------------------------------------------------------------------------
# DPM-Solver


class _DiscreteVP:
    """The discrete schedule as a continuous VP process: NoiseScheduleVP('discrete') of the dpm_solver package.

    Index n = 0..T-1 sits at time t_n = (n + 1) / T and log(alpha_t) = 0.5 log(alpha_bar) is piecewise linear in t
    between these knots. All functions are numpy float64 and only used on the static time grid.
    """

    def __init__(self, schedule: DiffusionSchedule):
        if schedule.num_steps < 2:
            raise ValueError("DPM-Solver needs a schedule of at least 2 steps to interpolate in time")
        self.num_train_steps = schedule.num_steps
        self.knots = np.arange(1, schedule.num_steps + 1, dtype=np.float64) / schedule.num_steps
        self.knot_log_alpha = 0.5 * np.log(schedule.alphas_cumprod)

    def log_alpha(self, t):
        return np.interp(t, self.knots, self.knot_log_alpha)

    def sigma(self, t):
        return np.sqrt(-np.expm1(2 * self.log_alpha(t)))

    def lam(self, t):
        """Half-logSNR lambda_t = log(alpha_t / sigma_t)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * np.log(-np.expm1(2 * log_alpha))

    def inverse_lam(self, lam):
        log_alpha = -0.5 * np.logaddexp(0.0, -2 * lam)
        # log(alpha) decreases with t; np.interp wants increasing abscissae.
        return np.interp(log_alpha, self.knot_log_alpha[::-1], self.knots[::-1])

    def model_time(self, t):
        """The network's input: the continuous t mapped back onto the discrete index scale, (t - 1/T) T."""
        return (t - 1.0 / self.num_train_steps) * self.num_train_steps

    def grid(self, t_start, t_end, num_intervals: int, spacing: str) -> np.ndarray:
        if spacing == "time_uniform":
            return np.linspace(t_start, t_end, num_intervals + 1)
        return self.inverse_lam(np.linspace(self.lam(t_start), self.lam(t_end), num_intervals + 1))


def singlestep_orders(num_steps: int, order: int) -> list[int]:
    """DPM-Solver-fast: the orders of the steps that use exactly `num_steps` network evaluations (Lu et al. 2022)."""
    if order == 3:
        full, rest = divmod(num_steps, 3)
        return [3] * (full - 1) + [2, 1] if rest == 0 else [3] * full + [rest]
    if order == 2:
        return [2] * (num_steps // 2) + [1] * (num_steps % 2)
    return [1] * num_steps


def _singlestep_update(vp: _DiscreteVP, s: float, t: float, order: int, spacing: str) -> dict[str, np.ndarray]:
    """Coefficients of one singlestep DPM-Solver-`order` step from time s to time t (Lu et al. 2022, Algs. 1-2).

    The network is evaluated at `order` stages j, at times s = s_0 > s_1 > s_2, on the points
    x_j = x_coef[j] x + sum_{i<j} eps_coef[j, i] eps_i; the step returns final_x x + sum_i final_eps[i] eps_i.
    The stages are spaced within [s, t] as the outer grid is (in t or in lambda), as in dpm_solver; r_j are their
    fractions of the step h in lambda.
    """
    inner = vp.grid(s, t, order, spacing)[:order]
    lam = vp.lam(np.append(inner, t))
    h = lam[-1] - lam[0]
    r = (lam[:-1] - lam[0]) / h
    log_alpha = vp.log_alpha(inner)
    sigma, sigma_t = vp.sigma(inner), vp.sigma(t)
    x_coef = np.exp(log_alpha - log_alpha[0])  # alpha_u / alpha_s: the exactly integrated linear part of the ODE
    eps_coef = np.zeros((order, order))
    phi_1 = np.expm1(h)
    final_eps = np.zeros(order)
    if order == 1:  # DDIM in lambda
        final_eps[0] = -sigma_t * phi_1
    if order >= 2:
        eps_coef[1, 0] = -sigma[1] * np.expm1(r[1] * h)
    if order == 2:
        d = 0.5 / r[1] * sigma_t * phi_1  # weight of the first difference eps_1 - eps_0
        final_eps[:] = (-sigma_t * phi_1 + d, -d)
    if order == 3:
        phi_22 = np.expm1(r[2] * h) / (r[2] * h) - 1.0
        d2 = r[2] / r[1] * sigma[2] * phi_22
        eps_coef[2, :2] = (-sigma[2] * np.expm1(r[2] * h) + d2, -d2)
        d = sigma_t * (phi_1 / h - 1.0) / r[2]
        final_eps[:] = (-sigma_t * phi_1 + d, 0.0, -d)
    return {
        "model_time": vp.model_time(inner),
        "alpha": np.exp(log_alpha),
        "sigma": sigma,
        "x_coef": x_coef,
        "eps_coef": eps_coef,
        "final_x": np.exp(vp.log_alpha(t) - log_alpha[0]),
        "final_eps": final_eps,
    }


def dpm_solver_plan(
    schedule: DiffusionSchedule, num_steps: int, order: int, spacing: str = "logSNR"
) -> list[dict[str, np.ndarray]]:
    """The static plan of `dpm_solver_sample`: runs of consecutive steps of one order, their coefficients stacked.

    Each run is a dict of float64 arrays with a leading axis over its steps (see `_singlestep_update`).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order}")
    if num_steps < 1:
        raise ValueError(f"DPM-Solver needs num_steps >= 1 network evaluations, got {num_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown DPM-Solver spacing {spacing!r}; expected one of {SPACINGS}")
    vp = _DiscreteVP(schedule)
    t_start, t_end = 1.0, 1.0 / schedule.num_steps  # index T - 1 down to index 0
    orders = singlestep_orders(num_steps, order)
    if spacing == "logSNR":  # one interval per solver step, as in the paper's experiments
        outer = vp.grid(t_start, t_end, len(orders), spacing)
    else:  # the num_steps-interval grid, each step spanning as many intervals as its order
        outer = vp.grid(t_start, t_end, num_steps, spacing)[np.cumsum([0] + orders)]
    steps = [_singlestep_update(vp, outer[k], outer[k + 1], o, spacing) for k, o in enumerate(orders)]
    runs, start = [], 0
    for k in range(1, len(orders) + 1):
        if k == len(orders) or orders[k] != orders[start]:
            runs.append({name: np.stack([step[name] for step in steps[start:k]]) for name in steps[start]})
            start = k
    return runs


def dpm_solver_sample(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    observations: jax.Array,
    initial_noise: jax.Array,
    num_steps: int,
    order: int = 3,
    max_action: jax.Array | float | None = None,
    *,
    spacing: str = "logSNR",
    denoise_to_zero: bool = False,
) -> jax.Array:
    """Singlestep DPM-Solver ("DPM-Solver-fast") from t = 1 (index T - 1) to t = 1/T (index 0).

    num_steps: network evaluations (static), split into steps of order <= `order` as in `singlestep_orders`.
    eps_fn receives float indices (t - 1/T) T in [0, T - 1] [B] (the noise's dtype, float32 in the project), not
    integers. initial_noise: [B, A].
    spacing: "logSNR" (steps uniform in lambda, the paper's choice and the one that converges at the solver's order
    on low-dimensional data) or "time_uniform" (the dpm_solver default and EDP's setting; near t = 1/T lambda(t) is
    steep, so the last steps stay long in lambda and the error falls slowly with num_steps).
    The ODE is solved to index 0, so the result still carries noise of std sqrt(1 - alpha_bar_1), as in dpm_solver
    and EDP: 0.01 for T = 1000 linear betas, but 0.44 for T = 5 VP, where `denoise_to_zero=True` spends one more
    evaluation to return the predicted x_0 instead. With max_action, each predicted x_0 is clipped (and the noise
    re-derived from it, as EDP clips the noise) and so is the result.
    """
    runs = dpm_solver_plan(schedule, num_steps, order, spacing)
    batch = observations.shape[0]

    def model(x, model_time, alpha, sigma):
        """The noise prediction, and the predicted x_0 that it implies (clipped when max_action is given)."""
        eps = eps_fn(x, jnp.full((batch,), model_time, x.dtype), observations)
        x0 = (x - sigma * eps) / alpha
        if max_action is not None:
            x0 = jnp.clip(x0, -max_action, max_action)
            eps = (x - alpha * x0) / sigma
        return eps, x0

    def solver_step(x, c):
        eps = []
        for j in range(c["model_time"].shape[0]):  # the step's order: static
            x_stage = c["x_coef"][j] * x + sum(c["eps_coef"][j, i] * eps[i] for i in range(j))
            eps.append(model(x_stage, c["model_time"][j], c["alpha"][j], c["sigma"][j])[0])
        return c["final_x"] * x + sum(c["final_eps"][i] * eps[i] for i in range(len(eps))), None

    x = initial_noise
    # One scan per run of equal orders (at most three runs) keeps compile time flat in num_steps.
    for run in runs:
        run = {name: jnp.asarray(value, x.dtype) for name, value in run.items()}
        x, _ = jax.lax.scan(solver_step, x, run, unroll=len(run["final_x"]) <= 4)
    if denoise_to_zero:
        vp = _DiscreteVP(schedule)
        t_end = 1.0 / schedule.num_steps
        x = model(x, 0.0, float(np.exp(vp.log_alpha(t_end))), float(vp.sigma(t_end)))[1]
    return x if max_action is None else jnp.clip(x, -max_action, max_action)
