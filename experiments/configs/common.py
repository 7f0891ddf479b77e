"""The training-loop part of every algorithm's config, and the built-in task's row shared by all of them."""

from __future__ import annotations

import ml_collections

STEPS_PER_EPOCH = 1000

# The built-in default task: sized to train, evaluate and report within ten minutes on a 2-core CPU. Every
# algorithm gets the same budget on it, so their scores compare.
PENDULUM_ROW = {
    "steps": 10_000,
    "eval_every": 2_500,
    "save_every": 2_500,
    "eval_episodes": 10,
}


def loop_config(algo: str, steps: int, eval_every: int, eval_episodes: int = 10) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.algo = algo
    config.steps = steps
    config.batch_size = 256
    config.steps_per_epoch = STEPS_PER_EPOCH
    config.steps_per_dispatch = 1000  # updates per compiled call (lax.scan)
    config.eval_every = eval_every
    config.eval_episodes = eval_episodes
    config.save_every = eval_every
    config.reward_tune = "no"
    config.top_k = 1  # offline model selection: the evaluation whose BC-loss rank is top_k
    config.num_devices = 0  # 0: all local devices
    config.tensorboard = False  # also write TensorBoard event files (pip install 'dql[tensorboard]')
    return config
