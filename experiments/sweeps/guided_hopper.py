"""One Diffuser with its value model on the generated Hopper-v5 full-replay tier (155k transitions of SAC's replay
buffer, from falls to the expert), for value-guided against unguided planning (`experiments.guided_planning`).

The locomotion row (horizon 32, 20 diffusion steps, guide scale 0.1, t_stopgrad 2, 2 guide steps) at a CPU size:
width 16 with dim_mults (1, 2, 4) instead of 32 with (1, 2, 4, 8), 8 plans per state instead of 64, 20,000
updates instead of Diffuser's 1M (diffusion model) and 200k (value model). Replanning at every step costs 0.74 s
per environment step for 10 episodes on one core of the 2-core CPU (`benchmarks.act_latency`), so the run
evaluates once, at its end, with 5 episodes; `experiments.guided_planning` evaluates 10 per variant.

    python -m launch.local experiments/sweeps/guided_hopper.py --root=runs/guided_hopper
    python -m experiments.guided_planning runs/guided_hopper --out=experiments/results/guided-hopper \
        --scales=0.01,1.0
"""

ALGOS = ["diffuser"]
DATASETS = ["gym:Hopper-v5/full-replay"]
SEEDS = range(1)
TRAIN_FLAGS = {"steps": 20_000, "eval_every": 20_000, "save_every": 5_000, "eval_episodes": 5}
CONFIG = {"dim": 16, "dim_mults": (1, 2, 4), "batch_size": 32, "num_plan_samples": 8}
