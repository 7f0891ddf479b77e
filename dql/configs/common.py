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


# dql.train's top-level flags that set a config field, the one list of them: dql.train defines a flag for each and
# launch.sweep checks sweep files against it. name -> (type, help).
LOOP_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "Gradient steps (environment steps for the online learners sac and gail; default: "
                       "the config's, per dataset)."),
    "batch_size": (int, "Global minibatch size, split over devices."),
    "eval_every": (int, "Evaluate every N steps."),
    "eval_episodes": (int, "Episodes per evaluation; 0 trains without an environment."),
    "save_every": (int, "Checkpoint every N steps."),
    "num_seeds": (int, "Train seeds seed .. seed+N-1 in one compiled program, each in its own run folder "
                       "<workdir>/seed_<n>/."),
    "row": (str, "Take the hyperparameters of this dataset's row of the algorithm's table (e.g. "
                 "hopper-medium-replay-v2) instead of --dataset's own."),
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
    config.num_seeds = 1  # seeds seed .. seed + num_seeds - 1 trained in one compiled program
    config.num_devices = 0  # 0: all devices (all processes' in a multi-host run)
    config.parallel = "data"  # over devices: "data" splits each minibatch, "seeds" splits the seeds
    config.tensorboard = False  # also write TensorBoard event files (pip install 'dql[tensorboard]')
    config.wandb = False  # also log to Weights & Biases (pip install 'dql[wandb]')
    config.wandb_project = "dql"
    config.wandb_mode = "online"  # "offline": no account needed, `wandb sync` later
    config.row = ml_collections.config_dict.placeholder(str)  # the dataset row taken (None: --dataset's own)
    return config


# The project's generated datasets take the row of their D4RL namesake (gym:Hopper-v5/medium-replay ->
# hopper-medium-replay-v2): the same tiers made the same way, so the same tuning is the natural default.
GYM_NAMESAKES = {"Hopper-v5": "hopper", "HalfCheetah-v5": "halfcheetah", "Walker2d-v5": "walker2d"}


def dataset_row(overrides: dict[str, dict], dataset: str) -> dict:
    """The per-dataset row of `dataset`: its own, else for gym:<Env>/<level>[/N] the env's row ("gym:<Env>", for
    rows that hold for every tier of an env, such as the point mazes'), else its D4RL namesake's."""
    if dataset in overrides:
        return overrides[dataset]
    if dataset.startswith("gym:"):
        parts = dataset[len("gym:"):].split("/")
        if f"gym:{parts[0]}" in overrides:
            return overrides[f"gym:{parts[0]}"]
        if len(parts) >= 2 and parts[0] in GYM_NAMESAKES:
            return overrides.get(f"{GYM_NAMESAKES[parts[0]]}-{parts[1]}-v2", {})
    return {}
