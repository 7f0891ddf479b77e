"""ReBRAC (Tarasov et al., NeurIPS 2023): CORL's defaults and its per-dataset table.

Source of every value: CORL (github.com/tinkoff-ai/CORL), `algorithms/offline/rebrac.py` (the `Config` defaults:
3 x 256 networks, LayerNorm in the critics, batch 1024, lr 1e-3, tau 5e-3, policy noise 0.2 clipped at 0.5,
policy_freq 2, normalize_q) and `configs/offline/rebrac/<env>/<dataset>.yaml`, one file per D4RL dataset. Those
files set, per dataset: actor_bc_coef (beta1), critic_bc_coef (beta2), the actor and critic learning rates, the
batch size, gamma, the evaluation interval and episodes, and normalize_reward (AntMaze rewards x 100, our
`reward_scale`). Every file trains num_epochs x num_updates_on_epoch = 1000 x 1000 = 1M updates, with
normalize_states off and actor_ln off. The base below is CORL's Config default; every listed dataset has its row.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, STEPS_PER_EPOCH, loop_config

EPOCHS = 1000  # CORL's num_epochs; num_updates_on_epoch = 1000 = STEPS_PER_EPOCH


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("rebrac", steps=EPOCHS * STEPS_PER_EPOCH, eval_every=5 * STEPS_PER_EPOCH)
    config.batch_size = 1024
    config.actor_bc_coef = 1.0  # beta1, the actor's penalty (every dataset row sets its own)
    config.critic_bc_coef = 1.0  # beta2, the critic target's penalty
    config.lr = 1e-3  # actor
    config.critic_lr = 1e-3
    config.discount = 0.99
    config.tau = 5e-3
    config.policy_noise = 0.2
    config.noise_clip = 0.5
    config.policy_freq = 2
    config.normalize_q = True
    config.normalize_states = False
    config.reward_scale = 1.0  # CORL's normalize_reward: x 100 on AntMaze
    config.hidden_dims = (256, 256, 256)
    config.actor_ln = False
    config.critic_ln = True
    return config


def _row(actor_bc_coef, critic_bc_coef, lr, critic_lr, batch_size, discount=0.99, eval_every_epochs=5,
         eval_episodes=10, reward_scale=1.0):
    return {
        "actor_bc_coef": actor_bc_coef,
        "critic_bc_coef": critic_bc_coef,
        "lr": lr,
        "critic_lr": critic_lr,
        "batch_size": batch_size,
        "discount": discount,
        "steps": EPOCHS * STEPS_PER_EPOCH,
        "eval_every": eval_every_epochs * STEPS_PER_EPOCH,
        "eval_episodes": eval_episodes,
        "reward_scale": reward_scale,
    }


# (actor_bc_coef, critic_bc_coef) per CORL yaml; gym locomotion: lr 1e-3 for both, batch 1024.
_LOCOMOTION = {
    "halfcheetah-random-v2": (0.001, 0.1),
    "halfcheetah-medium-v2": (0.001, 0.01),
    "halfcheetah-expert-v2": (0.01, 0.01),
    "halfcheetah-medium-expert-v2": (0.01, 0.1),
    "halfcheetah-medium-replay-v2": (0.01, 0.001),
    "halfcheetah-full-replay-v2": (0.001, 0.1),
    "hopper-random-v2": (0.001, 0.01),
    "hopper-medium-v2": (0.01, 0.01),
    "hopper-expert-v2": (0.1, 0.1),
    "hopper-medium-expert-v2": (0.1, 0.01),
    "hopper-medium-replay-v2": (0.05, 0.5),
    "hopper-full-replay-v2": (0.01, 0.01),
    "walker2d-random-v2": (0.01, 0.0),
    "walker2d-medium-v2": (0.05, 0.1),
    "walker2d-expert-v2": (0.01, 0.5),
    "walker2d-medium-expert-v2": (0.01, 0.01),
    "walker2d-medium-replay-v2": (0.05, 0.01),
    "walker2d-full-replay-v2": (0.01, 0.01),
}
# AntMaze: actor lr 3e-4, critic lr 5e-5, batch 256, gamma 0.999, rewards x 100, evaluation every 50 epochs with
# 100 episodes.
_ANTMAZE = {
    "antmaze-umaze-v2": (0.003, 0.002),
    "antmaze-umaze-diverse-v2": (0.003, 0.001),
    "antmaze-medium-play-v2": (0.001, 0.0005),
    "antmaze-medium-diverse-v2": (0.001, 0.0),
    "antmaze-large-play-v2": (0.002, 0.001),
    "antmaze-large-diverse-v2": (0.002, 0.002),
}
# Adroit: lr 3e-4 for both, batch 256, 10 evaluation episodes.
_ADROIT = {
    "pen-human-v1": (0.1, 0.5),
    "pen-cloned-v1": (0.05, 0.5),
    "pen-expert-v1": (0.01, 0.01),
    "door-human-v1": (0.1, 0.1),
    "door-cloned-v1": (0.01, 0.1),
    "door-expert-v1": (0.05, 0.01),
    "hammer-human-v1": (0.01, 0.5),
    "hammer-cloned-v1": (0.1, 0.5),
    "hammer-expert-v1": (0.01, 0.01),
    "relocate-human-v1": (0.1, 0.01),
    "relocate-cloned-v1": (0.1, 0.01),
    "relocate-expert-v1": (0.05, 0.01),
}
# Maze2D: lr 3e-4 for both, batch 256, 100 evaluation episodes.
_MAZE2D = {
    "maze2d-umaze-v1": (0.003, 0.001),
    "maze2d-medium-v1": (0.003, 0.001),
    "maze2d-large-v1": (0.003, 0.001),
}

DATASET_OVERRIDES: dict[str, dict] = {
    **{name: _row(*betas, lr=1e-3, critic_lr=1e-3, batch_size=1024) for name, betas in _LOCOMOTION.items()},
    **{name: _row(*betas, lr=3e-4, critic_lr=5e-5, batch_size=256, discount=0.999, eval_every_epochs=50,
                  eval_episodes=100, reward_scale=100.0) for name, betas in _ANTMAZE.items()},
    **{name: _row(*betas, lr=3e-4, critic_lr=3e-4, batch_size=256) for name, betas in _ADROIT.items()},
    **{name: _row(*betas, lr=3e-4, critic_lr=3e-4, batch_size=256, eval_episodes=100)
       for name, betas in _MAZE2D.items()},
    "pendulum-mixed-v0": dict(PENDULUM_ROW),
}
