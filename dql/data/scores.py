"""Reference returns and D4RL's normalized score, 100 * (return - random) / (expert - random)."""

from __future__ import annotations

import numpy as np

# Per domain: (REF_MIN_SCORE, REF_MAX_SCORE) from D4RL's infos.py; every level and version of a domain shares them.
# Adroit v1 uses the v0 constants (d4rl registers them that way).
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "kitchen": (0.0, 4.0),
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "door": (-56.512833, 2880.5693087298737),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
}

# The project's generated point-maze data (dql.data.maze, gym:PointMaze_*-v3/waypoint[-multitask]): mean returns of
# uniform random actions (0) and of the noise-free waypoint controller (100) in the evaluation env, per maze and
# evaluation ("single": D4RL's fixed goal cell, "multi": a random goal per episode), measured by
# dql.data.maze.maze_reference_returns(env_id, 50, 0, level) with gymnasium-robotics 1.4.2, gymnasium 1.4.0 and
# mujoco 4.0.0 (50 episodes each: the standard errors of these means are about 3-7 for random, 6-15 for the
# controller).
GENERATED_MAZE_REFERENCE_SCORES: dict[tuple[str, str], tuple[float, float]] = {
    ("PointMaze_UMaze-v3", "single"): (6.18, 213.1),
    ("PointMaze_UMaze-v3", "multi"): (11.64, 230.16),
    ("PointMaze_Medium-v3", "single"): (16.18, 431.26),
    ("PointMaze_Medium-v3", "multi"): (9.24, 457.56),
    ("PointMaze_Large-v3", "single"): (6.18, 564.92),
    ("PointMaze_Large-v3", "multi"): (6.48, 580.62),
}


def reference_scores(dataset_name: str) -> tuple[float, float] | None:
    """(min, max) reference returns for a D4RL dataset name, or None when the domain has none."""
    if "-dense" in dataset_name:  # maze2d's dense-reward variants have constants of their own, not listed here
        return None
    for domain in sorted(D4RL_REFERENCE_SCORES, key=len, reverse=True):
        if dataset_name.startswith(domain + "-"):
            return D4RL_REFERENCE_SCORES[domain]
    return None


def normalized_score(returns, ref_min: float, ref_max: float):
    if ref_max == ref_min:
        raise ValueError(f"reference scores must differ, got min=max={ref_min}")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
