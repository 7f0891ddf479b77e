"""Diffuser (Janner et al., ICML 2022): the official code's locomotion defaults and its per-dataset rows.

Sources, all in github.com/jannerm/diffuser (`main`):
- `config/locomotion.py`, `base['diffusion']`: horizon 32, 20 diffusion steps, action_weight 10, loss_discount 1,
  predict_epsilon False, dim_mults (1, 2, 4, 8), no attention, GaussianNormalizer, clip_denoised False,
  use_padding True, max_path_length 1000, learning rate 2e-4, batch 32 with gradient_accumulate_every 2, EMA decay
  0.995; `base['values']`: the same horizon, steps and dim_mults, termination_penalty -100, normed False, lr 2e-4;
  `base['plan']`: 64 plans per state (its batch_size), n_guide_steps 2, scale 0.1, t_stopgrad 2,
  scale_grad_by_std True, and the value model trained with discount 0.997 (its value_loadpath names d0.997; the
  'values' block's own default is 0.99).
- the overrides in the same file: halfcheetah-{medium-replay, medium, medium-expert}-v2 horizon 4, dim_mults
  (1, 4, 8), attention (the diffusion model), scale 0.001, t_stopgrad 4; hopper-medium-expert-v2 scale 0.0001,
  t_stopgrad 4.
- `diffuser/utils/training.py` (Trainer): EMA every 10 updates from step 2000, a plain copy before;
  `diffuser/models/diffusion.py`: the cosine beta schedule; `diffuser/models/temporal.py`: dim 32.

Batch: Diffuser's 32 with two accumulated backward passes before one Adam step is one step on the mean gradient of
64 windows, so batch_size is 64 here. Diffuser trains the diffusion model for 1M steps and the value model in a
separate run of 200k; here both train in the same updates for `steps` (1M). Evaluation: this project's choice
(every 100k updates, 10 episodes). The Pendulum row (this project's built-in task) uses a short horizon and a
small plan batch so that it fits the shared CPU budget.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("diffuser", steps=1_000_000, eval_every=100_000, eval_episodes=10)
    config.batch_size = 64  # 32 x gradient_accumulate_every 2
    config.horizon = 32
    config.diffusion_steps = 20
    config.beta_schedule = "cosine"
    config.dim = 32
    config.dim_mults = (1, 2, 4, 8)
    config.attention = False
    config.predict_epsilon = False
    config.clip_denoised = False
    config.action_weight = 10.0
    config.loss_discount = 1.0
    config.normalizer = "gaussian"  # or "limits"
    config.lr = 2e-4
    config.value_lr = 2e-4
    config.ema_decay = 0.995
    config.ema_every = 10
    config.ema_start = 2000
    config.use_padding = True
    config.max_path_length = 1000
    config.value_discount = 0.997
    config.termination_penalty = -100.0
    config.use_value_guide = True
    config.guide_scale = 0.1
    config.t_stopgrad = 2
    config.n_guide_steps = 2
    config.scale_grad_by_std = True
    config.num_plan_samples = 64
    config.state_dims = 0  # the observation entries planned (0: all)
    config.goal_conditioned = False
    config.control = "replan"  # or "waypoints" / "actions" (plan once per episode)
    return config


_HALFCHEETAH = {"horizon": 4, "dim_mults": (1, 4, 8), "attention": True, "guide_scale": 0.001, "t_stopgrad": 4}

DATASET_OVERRIDES: dict[str, dict] = {
    "halfcheetah-medium-replay-v2": dict(_HALFCHEETAH),
    "halfcheetah-medium-v2": dict(_HALFCHEETAH),
    "halfcheetah-medium-expert-v2": dict(_HALFCHEETAH),
    "hopper-medium-expert-v2": {"guide_scale": 0.0001, "t_stopgrad": 4},
    "pendulum-mixed-v0": {**PENDULUM_ROW, "horizon": 8, "dim_mults": (1, 2, 4), "num_plan_samples": 16},
}

# The maze2d branch's config/maze2d.py for the point mazes (every tier of gym:PointMaze_*-v3, and Minari's
# D4RL/pointmaze/{umaze,medium,large}[-dense]-v2, recorded in the same envs): plain inpainting,
# no value model; the planned state is [x, y, vx, vy] (the goal entries of the flattened observation are pinned,
# at rest, at the plan's last step); limits normaliser with clipped x0, no padding, max_path_length 40000,
# action_weight 1, dim_mults (1, 4, 8), 2M updates, one plan per episode followed by the PD controller. Horizon
# and steps: UMaze 128 / 64, Medium 256 / 256, Large 384 / 256. Evaluation: 50 episodes. Windows lie between goal
# arrivals, as Diffuser's: it cuts its paths at D4RL's maze2d terminals, which mark the arrivals.
_MAZE = {"use_value_guide": False, "goal_conditioned": True, "state_dims": 4, "control": "waypoints",
         "normalizer": "limits", "clip_denoised": True, "use_padding": False, "max_path_length": 40_000,
         "action_weight": 1.0, "dim_mults": (1, 4, 8), "num_plan_samples": 1, "steps": 2_000_000,
         "eval_every": 100_000, "eval_episodes": 50}
for _env, _maze, (_horizon, _steps) in [("PointMaze_UMaze-v3", "umaze", (128, 64)),
                                        ("PointMaze_Medium-v3", "medium", (256, 256)),
                                        ("PointMaze_Large-v3", "large", (384, 256))]:
    DATASET_OVERRIDES[f"gym:{_env}"] = {**_MAZE, "horizon": _horizon, "diffusion_steps": _steps}
    for _reward in ("", "-dense"):
        DATASET_OVERRIDES[f"minari:D4RL/pointmaze/{_maze}{_reward}-v2"] = dict(DATASET_OVERRIDES[f"gym:{_env}"])
