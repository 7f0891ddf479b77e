"""Efficient Diffusion Policies (Kang et al., NeurIPS 2023): the official code's defaults and its per-dataset table.

Source of every value: github.com/sail-sg/edp. The base is `diffusion/dql.py`'s DiffusionQL.get_default_config()
(alpha 2, guide_coef 1, tau 0.005, target policy every 5 updates after 1000, lr 3e-4 for every network, no decay,
weight decay 0, max-Q backup off with 10 samples, CRR: 10 samples, beta 1, weights clipped at 20; IQL: expectile
0.7, temperature 3; DPM-Solver: 15 network calls, t_end 1e-3 = 1/T) with `diffusion/trainer.py`'s flags (batch 256,
2000 epochs of 1000 updates, evaluation every 10 epochs over 10 episodes, 3 x 256 mish networks without LayerNorm,
time embedding 16, dataset actions clipped at 0.999, 50 candidates for the energy-based action selection) and the
README's long-chain setting (`--sample_method=dpm --algo_cfg.num_timesteps=1000`: T = 1000, linear betas
1e-4 .. 2e-2 scaled by 1000 / T as EDP's schedule does for other T, our `scaled_linear`), sampled with DPM-Solver as
the samplers' author set it for EDP: singlestep, order 3, steps uniform in time (dpm_solver's `sample` defaults).

The rows: `diffusion/hps.py` lists 20 D4RL datasets (Diffusion-QL's table), of which the trainer reads only the
gradient-norm clip `gn`, so each row sets `grad_norm` from it. The objective follows the paper (Figure 1: "EDP is
trained with TD3 on locomotion and IQL on the other three domains"), and the rewards follow the trainer: AntMaze
r - 1 with IQL (`iql_antmaze`; (r - 0.5) x 4, our `cql_antmaze`, with TD3 or CRR), locomotion untouched (the IQL
example in its README adds --norm_reward=True, our `iql_locomotion`), Kitchen and Adroit min-max scaled to
[-1, 1] (`minmax`). The AntMaze rows set the IQL reward; with --config.loss_type=TD3 or CRR, EDP's trainer would use
(r - 0.5) x 4: set --config.reward_tune=cql_antmaze with it. Datasets: halfcheetah/hopper/walker2d medium,
medium-replay, medium-expert v2; antmaze umaze, umaze-diverse, medium-play, medium-diverse, large-play,
large-diverse v0; pen human, cloned v1; kitchen complete, partial, mixed v0.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, STEPS_PER_EPOCH, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("edp", steps=2000 * STEPS_PER_EPOCH, eval_every=10 * STEPS_PER_EPOCH)
    config.loss_type = "TD3"  # "TD3", "CRR" or "IQL" (EDP's algo_cfg.loss_type)
    config.diffusion_steps = 1000
    config.beta_schedule = "scaled_linear"  # equal to "linear" at T = 1000
    config.sampler = "dpm"  # "dpm" (DPM-Solver) or "ddpm" (the full ancestral chain): backup and evaluation
    config.dpm_steps = 15  # network calls per DPM-Solver sample
    config.dpm_order = 3
    config.dpm_spacing = "time_uniform"
    config.hidden_dims = (256, 256, 256)  # noise network, critics and value
    config.time_dim = 16
    config.activation = "mish"
    config.policy_layer_norm = False
    config.critic_layer_norm = False  # critics and value
    config.lr = 3e-4  # every network
    config.lr_decay = False  # cosine decay of the policy's rate over the run
    config.grad_norm = 0.0  # clip_by_global_norm per network (per critic head); 0: none. Per dataset.
    config.discount = 0.99
    config.tau = 0.005  # critic targets every update, the target policy every ema_every updates
    config.alpha = 2.0  # TD3: lambda = alpha / mean |Q|
    config.guide_coef = 1.0  # weight of the policy-improvement term
    config.max_q_backup = False
    config.num_q_backup_samples = 10
    config.ema_start = 1000  # the target policy stays at its initial copy for this many updates
    config.ema_every = 5
    config.crr_samples = 10  # CRR: draws of N(x0_hat, I) for the baseline
    config.crr_beta = 1.0
    config.crr_max_weight = 20.0
    config.expectile = 0.7  # IQL variant
    config.awr_temperature = 3.0  # IQL variant
    config.num_action_candidates = 50  # energy-based action selection at evaluation
    config.action_clip = 0.999  # dataset actions clipped to +-action_clip * max_action
    return config


_LOCOMOTION_GN = {
    "halfcheetah-medium-v2": 9.0,
    "hopper-medium-v2": 9.0,
    "walker2d-medium-v2": 1.0,
    "halfcheetah-medium-replay-v2": 2.0,
    "hopper-medium-replay-v2": 4.0,
    "walker2d-medium-replay-v2": 4.0,
    "halfcheetah-medium-expert-v2": 7.0,
    "hopper-medium-expert-v2": 5.0,
    "walker2d-medium-expert-v2": 5.0,
}
_ANTMAZE_GN = {
    "antmaze-umaze-v0": 2.0,
    "antmaze-umaze-diverse-v0": 3.0,
    "antmaze-medium-play-v0": 2.0,
    "antmaze-medium-diverse-v0": 1.0,
    "antmaze-large-play-v0": 10.0,
    "antmaze-large-diverse-v0": 7.0,
}
_OTHER_GN = {
    "pen-human-v1": 7.0,
    "pen-cloned-v1": 8.0,
    "kitchen-complete-v0": 9.0,
    "kitchen-partial-v0": 10.0,
    "kitchen-mixed-v0": 10.0,
}

DATASET_OVERRIDES: dict[str, dict] = {
    **{name: {"grad_norm": gn, "loss_type": "TD3"} for name, gn in _LOCOMOTION_GN.items()},
    **{name: {"grad_norm": gn, "loss_type": "IQL", "reward_tune": "iql_antmaze"} for name, gn in _ANTMAZE_GN.items()},
    **{name: {"grad_norm": gn, "loss_type": "IQL", "reward_tune": "minmax"} for name, gn in _OTHER_GN.items()},
    "pendulum-mixed-v0": dict(PENDULUM_ROW),
}
