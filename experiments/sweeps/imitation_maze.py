"""The imitation study on the point maze, CPU-sized: Diffusion Policy, Diffusion-BC, Gaussian BC and GAIL learning
from `gym:PointMaze_Medium-v3/demos` (10 start/goal tasks, 3-4 near-shortest routes each, the goal in the
observation), with 10 and 50 demonstrations per task, 3 seeds.

    python -m launch.local experiments/sweeps/imitation_maze.py --root=experiments/results/imitation-maze/runs \
        --parallel=1
    python -m experiments.report experiments/results/imitation-maze/runs --out=experiments/results/imitation-maze/report
    python -m experiments.imitation_maze experiments/results/imitation-maze/runs \
        --out=experiments/results/imitation-maze/analysis

Sizes (where they differ from the papers'): 10,000 gradient steps for the offline methods (Diffusion Policy trains
hundreds of thousands); Diffusion Policy's U-Net 16 wide (down_dims 16/32/64 where the paper's are 256/512/1024)
at batch 64: 465 GFLOP per update at the paper's size and batch 256, 0.5 here, about 25 updates/s on one core of
the 2-core Intel Xeon; GAIL 200,000 environment steps. Evaluation: 20 episodes (2 per task) every 5,000 steps.
Runs start in ALGOS order, fastest first, so that an interrupted study has every seed of the cheap methods.
"""

ALGOS = ["bc", "diffusion_bc", "diffusion_policy", "gail"]
DATASETS = ["gym:PointMaze_Medium-v3/demos/50", "gym:PointMaze_Medium-v3/demos/10"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 10_000, "eval_every": 5_000, "save_every": 5_000, "eval_episodes": 20}
PER_ALGO = {
    "diffusion_policy": {"config": {"dim": 16, "batch_size": 64}},
    "gail": {"config": {"steps": 200_000, "eval_every": 50_000, "save_every": 50_000}},
}
