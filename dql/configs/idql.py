"""Implicit Diffusion Q-learning (Hansen-Estruch et al. 2023): the official code's defaults and its dataset table.

Source of every value: github.com/philippe-eecs/IDQL. The base is the offline launcher
`launcher/examples/train_ddpm_iql_offline.py` (3M updates of batch 512, evaluation every 250,000 updates over 50
episodes, lr 3e-4 for the policy, critics and value, the policy's decaying over 3M steps (the run), T = 5 with VP
betas, N = 64 candidates, 3 residual blocks with dropout 0.1 and LayerNorm, LayerNorm in V, actor_tau 0.001,
clip_sampler) over the defaults of `jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py` (2 x 256 critics, tau
0.005, discount 0.99, time_dim 128, swish, ddpm_temperature 1, AdamW's default weight decay 1e-4 for the policy)
and `examples/states/train_diffusion_offline.py` (rewards: AntMaze r - 1, our `iql_antmaze`; locomotion scaled so
the range of episode returns is 1000, our `iql_locomotion`) and `jaxrl5/data/d4rl_datasets.py` (actions clipped to
+-(1 - 1e-5)).

The rows are the launcher's datasets with its expectile: halfcheetah/hopper/walker2d medium, medium-replay,
medium-expert v2 at 0.7; antmaze umaze, umaze-diverse, medium-play, medium-diverse, large-play, large-diverse at
0.9 (v2 in the current launcher, v0 in the one before it; both names have the row).
N is an evaluation-time key (`--config.num_samples`; the launcher evaluates N in {16, 64, 256}), and so is
`selection`: "expectile" resamples with the implicit actor's weights, "argmax" takes the highest-Q candidate as the
authors' `evaluate` does.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("idql", steps=3_000_000, eval_every=250_000, eval_episodes=50)
    config.batch_size = 512
    config.expectile = 0.7  # the critic's tau (per dataset)
    config.lr = 3e-4  # the diffusion policy's, with a cosine decay over the run
    config.critic_lr = 3e-4
    config.value_lr = 3e-4
    config.actor_weight_decay = 1e-4  # AdamW's, on every policy parameter
    config.discount = 0.99
    config.tau = 0.005  # target critics
    config.actor_tau = 0.001  # the policy's EMA, which samples
    config.diffusion_steps = 5
    config.beta_schedule = "vp"
    config.time_dim = 128  # learnable Fourier features of the step; the conditioning MLP is 2 x (2 time_dim)
    config.actor_hidden_dim = 256  # LN_Resnet width (blocks widen to 4x inside)
    config.actor_num_blocks = 3
    config.actor_dropout = 0.1
    config.actor_layer_norm = True
    config.actor_activation = "swish"
    config.hidden_dims = (256, 256)  # critics and value
    config.value_layer_norm = True  # LayerNorm of V's input
    config.num_samples = 64  # N candidates per state at evaluation
    config.selection = "expectile"  # "expectile" (implicit-actor resampling) or "argmax"
    config.ddpm_temperature = 1.0
    config.clip_sampler = True
    config.action_clip_eps = 1e-5
    return config


def _rows() -> dict[str, dict]:
    rows = {}
    for env in ("halfcheetah", "hopper", "walker2d"):
        for level in ("medium", "medium-replay", "medium-expert"):
            rows[f"{env}-{level}-v2"] = {"expectile": 0.7, "reward_tune": "iql_locomotion"}
    for name in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
        for version in ("v0", "v2"):
            rows[f"antmaze-{name}-{version}"] = {"expectile": 0.9, "reward_tune": "iql_antmaze"}
    return rows


DATASET_OVERRIDES: dict[str, dict] = {**_rows(), "pendulum-mixed-v0": dict(PENDULUM_ROW)}
