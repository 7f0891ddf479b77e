"""Diffusion-QL against CQL, IQL, TD3+BC and BC on one fixed Hopper dataset, at a CPU budget.

`gym:Hopper-v5/full-replay` (SAC's replay buffer up to its expert policy, the same data on every x86 CPU), 50,000
gradient steps, 10 evaluation episodes every 10,000, 3 seeds per algorithm; every algorithm at its
hopper-medium-replay-v2 row (the nearest D4RL tuning: replay data of a learning SAC). 50k steps is early training,
not the papers' 1M: the comparison ranks how fast each method gets off the data's level, not where it ends.

    python -m launch.local experiments/sweeps/hopper_comparison.py --root=experiments/results/hopper-comparison/runs \
        --parallel=2 --pin_cores     # 2-core CPU: one run per core
    python -m experiments.report experiments/results/hopper-comparison/runs \
        --out=experiments/results/hopper-comparison/report --versus=dql

On a GPU, `experiments/sweeps/family_hopper.py` is the larger study (7 algorithms x 3 tiers, 100k steps).
"""

# Runs start in this order. CQL is last: at about 6.5 updates/s on one core of a 2-core Intel Xeon its 50k steps
# take over two hours, longer than what was left of the session that started the study; the others finish first
# and are committed, CQL's seeds run in the next session on the same bytes (the dataset is CPU-independent).
ALGOS = ["dql", "iql", "td3bc", "bc", "cql"]
DATASETS = ["gym:Hopper-v5/full-replay"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 50_000, "eval_every": 10_000, "save_every": 5_000, "eval_episodes": 10,
               "row": "hopper-medium-replay-v2"}
