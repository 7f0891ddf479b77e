"""Diffusion Policy (Chi et al., RSS 2023), the CNN variant with low-dimensional observations: the official code's
defaults (real-stanford/diffusion_policy, `config/train_diffusion_unet_lowdim_workspace.yaml`).

- horizons: n_obs_steps 2, horizon 16, n_action_steps 8 (the paper's To, Tp, Ta; its Table 12 uses the same for
  the state-based CNN runs);
- ConditionalUnet1D: down_dims (256, 512, 1024) = dim 256 x dim_mults (1, 2, 4), diffusion_step_embed_dim 256 (here
  the time embedding is `dim` wide, 256), kernel_size 5, n_groups 8, cond_predict_scale True (FiLM),
  obs_as_global_cond True;
- DDPMScheduler: 100 training steps, squaredcos_cap_v2 (`cosine` here), clip_sample, epsilon prediction; the
  workspace samples with 100 DDPM steps; here DDIM with 10 steps at evaluation (the paper's real-robot setting:
  "DDIM ... 100 training iterations and 10 inference iterations"), `sampler=ddpm` gives the full chain;
- AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, cosine schedule with 500 warm-up steps, batch 256;
- EMA: power 0.75, max decay 0.9999 (update_after_step 0, inv_gamma 1);
- normaliser: observations and actions mapped to [-1, 1] by their limits.

Steps: the official runs train 5,000 epochs (about 500k updates on Push-T's low-dim data); 500k here, evaluation
every 50k (10 episodes). The Pendulum row (the built-in task) uses a U-Net of width 32 so that it fits the shared
CPU budget of every algorithm on it (U-Net width 16, batch 64: about 30 updates/s on one shared core of
the 2-core Intel Xeon; width 32 and batch 256 ran at 3).

Task conditioning: goal_dims > 0 marks the observation's last entries as the goal (a point maze's [goal_x,
goal_y]); condition_dropout > 0 trains classifier-free guidance and guidance_scale (1 = none) mixes it in.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("diffusion_policy", steps=500_000, eval_every=50_000)
    config.obs_horizon = 2
    config.pred_horizon = 16
    config.action_horizon = 8
    config.diffusion_steps = 100
    config.beta_schedule = "cosine"
    config.sampler = "ddim"  # or "ddpm" (the full chain)
    config.sample_steps = 10  # DDIM's
    config.dim = 256
    config.dim_mults = (1, 2, 4)
    config.kernel_size = 5
    config.lr = 1e-4
    config.adam_b1 = 0.95
    config.adam_b2 = 0.999
    config.weight_decay = 1e-6
    config.warmup_steps = 500
    config.ema_power = 0.75
    config.ema_max_decay = 0.9999
    config.goal_dims = 0  # the observation's last goal_dims entries are the goal (task condition)
    config.condition_dropout = 0.0  # classifier-free guidance: the probability of dropping the goal in training
    config.guidance_scale = 1.0  # 1: the conditional model alone
    return config


DATASET_OVERRIDES: dict[str, dict] = {
    "pendulum-mixed-v0": {**PENDULUM_ROW, "dim": 16, "batch_size": 64, "warmup_steps": 100},
    # The point mazes' observation is [x, y, vx, vy, goal_x, goal_y]: the goal is the task.
    **{f"gym:{maze}": {"goal_dims": 2} for maze in ("PointMaze_UMaze-v3", "PointMaze_Medium-v3",
                                                    "PointMaze_Large-v3")},
}
