"""Diffuser against BC, IQL and Diffusion-QL on the generated PointMaze UMaze data (1M rows), one budget for all.

Each algorithm keeps its own settings; Diffuser takes the point-maze row (Diffuser's maze2d settings: horizon 128,
64 diffusion steps, goal inpainting, one plan per episode tracked by its PD law) at a CPU size: width 16 and
dim_mults (1, 2, 4) instead of 32 and (1, 4, 8), batch 32 instead of 64 (about 8 updates/s on one core of the
2-core CPU where the full size makes 1.2). 20,000 gradient steps each, evaluated every 5,000 with 50 episodes at
D4RL's fixed goal; 1 seed (a CPU study; on a GPU use 3 seeds and the full row).

    python -m launch.local experiments/sweeps/maze_umaze.py --root=runs/maze_umaze
    python -m experiments.maze_planning runs/maze_umaze --out=experiments/results/maze-umaze
"""

ALGOS = ["diffuser", "bc", "iql", "dql"]
DATASETS = ["gym:PointMaze_UMaze-v3/waypoint"]
SEEDS = range(1)
TRAIN_FLAGS = {"steps": 20_000, "eval_every": 5_000, "save_every": 5_000, "eval_episodes": 50}
PER_ALGO = {"diffuser": {"config": {"dim": 16, "dim_mults": (1, 2, 4), "batch_size": 32}}}
