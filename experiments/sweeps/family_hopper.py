"""The diffusion family against the baselines on the project's Hopper-v5 tiers, one budget for all.

7 algorithms x 3 tiers (medium, medium-replay, medium-expert) x 3 seeds = 63 runs, 21 programs where seeds are
grouped (on a GPU). Each algorithm keeps its paper's settings and its D4RL namesake's row (hopper-medium-v2 for
gym:Hopper-v5/medium, ...); only the number of gradient steps is shared: 100,000, evaluated every 10,000 with 10
episodes. At the CPU throughputs in benchmarks/README.md (cql about 7 updates/s) this is a GPU study.

    python -m launch.local experiments/sweeps/family_hopper.py --root=runs/family_hopper
    python -m experiments.report runs/family_hopper --out=experiments/results/family-hopper
"""

ALGOS = ["dql", "edp", "idql", "fql", "rebrac", "iql", "cql"]
DATASETS = ["gym:Hopper-v5/medium", "gym:Hopper-v5/medium-replay", "gym:Hopper-v5/medium-expert"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 100_000, "eval_every": 10_000, "save_every": 10_000, "eval_episodes": 10}
