"""Diffusion-QL's Q-loss weight eta on the project's Hopper-v5 medium-replay data, beside IQL as a reference.

3 values of eta x 3 seeds for dql (PER_ALGO: eta is dql's knob only) and 3 seeds of iql: 12 runs, or 4 programs of
3 seeds each where seeds are grouped (on a GPU). 200,000 steps each, evaluated every 10,000 with 10 episodes.

    python -m launch.local experiments/sweeps/hopper_eta.py --root=runs/hopper_eta
    python -m launch.slurm experiments/sweeps/hopper_eta.py --root=runs/hopper_eta --partition=gpu --timeout_min=240
"""

ALGOS = ["dql", "iql"]
DATASETS = ["gym:Hopper-v5/medium-replay"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 200_000, "eval_every": 10_000, "save_every": 10_000, "eval_episodes": 10}
PER_ALGO = {"dql": {"axes": {"config.eta": [0.5, 1.0, 2.0]}}}
