"""Diffusion-QL against CQL, IQL, TD3+BC and BC on one fixed Hopper dataset, at a CPU budget.

`gym:Hopper-v5/full-replay` (SAC's replay buffer up to its expert policy, the same data on every x86 CPU), 50,000
gradient steps, 10 evaluation episodes every 10,000, 3 seeds per algorithm; every algorithm at its
hopper-medium-replay-v2 row (the nearest D4RL tuning: replay data of a learning SAC). 50k steps is early training,
not the papers' 1M: the comparison ranks how fast each method gets off the data's level, not where it ends.

    python -m launch.local experiments/sweeps/hopper_comparison.py --root=experiments/results/hopper-comparison/runs \
        --parallel=2 --pin_cores     # 2-core CPU: one run per core, CQL first (the slow one)
    python -m experiments.report experiments/results/hopper-comparison/runs \
        --out=experiments/results/hopper-comparison/report --versus=dql

On a GPU, `experiments/sweeps/family_hopper.py` is the larger study (7 algorithms x 3 tiers, 100k steps).
"""

ALGOS = ["cql", "dql", "iql", "td3bc", "bc"]
DATASETS = ["gym:Hopper-v5/full-replay"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 50_000, "eval_every": 10_000, "save_every": 5_000, "eval_episodes": 10,
               "row": "hopper-medium-replay-v2"}
