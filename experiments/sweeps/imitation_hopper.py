"""The imitation study on Hopper, CPU-sized: return against the number of expert demonstrations for Diffusion
Policy, Diffusion-BC, Gaussian BC and GAIL, learning from `gym:Hopper-v5/expert-demos/N` (N whole episodes of the
shipped expert, 10 and 50), 3 seeds.

    python -m launch.local experiments/sweeps/imitation_hopper.py --root=experiments/results/imitation-hopper/runs \
        --parallel=1
    python -m experiments.report experiments/results/imitation-hopper/runs \
        --out=experiments/results/imitation-hopper/report

Sizes (where they differ from the papers'): 10,000 gradient steps for the offline methods, Diffusion Policy's U-Net
16 wide at batch 64 (the maze study's sizes: the paper's 256/512/1024 U-Net trains hundreds of thousands of steps);
GAIL 1,000,000 environment steps (Ho & Ermon train Hopper's GAIL for hundreds of TRPO iterations of 50,000 steps,
about 10x more). Evaluation: 10 episodes every 5,000 gradient steps / 250,000 environment steps.
On one core of the 2-core Intel Xeon beside another training: BC about 1 min a run, Diffusion-BC 2, Diffusion Policy
6-8, GAIL 6-10.
"""

ALGOS = ["bc", "diffusion_bc", "diffusion_policy", "gail"]
DATASETS = ["gym:Hopper-v5/expert-demos/10", "gym:Hopper-v5/expert-demos/50"]
SEEDS = range(3)
TRAIN_FLAGS = {"steps": 10_000, "eval_every": 5_000, "save_every": 5_000, "eval_episodes": 10}
PER_ALGO = {
    "diffusion_policy": {"config": {"dim": 16, "batch_size": 64}},
    "gail": {"config": {"steps": 1_000_000, "eval_every": 250_000, "save_every": 250_000}},
}
