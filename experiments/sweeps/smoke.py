"""Smoke test of the launchers and the trainer: 2 algorithms x 2 datasets x 2 seeds = 8 short runs (4 grouped).

Tiny networks and 300 steps on two small datasets that the project makes itself on first use: the built-in
pendulum-mixed-v0 (about 2 s) and 5,000 transitions of uniform random actions in Hopper-v5 (seconds). It checks
that every piece runs end to end, not that anything learns.

    python -m launch.local experiments/sweeps/smoke.py --root=runs/smoke
"""

ALGOS = ["dql", "iql"]
DATASETS = ["pendulum-mixed-v0", "gym:Hopper-v5/random/5000"]
SEEDS = [0, 1]
TRAIN_FLAGS = {"steps": 300, "eval_every": 150, "save_every": 150, "eval_episodes": 2, "batch_size": 64}
CONFIG = {"hidden_dims": (32, 32)}
