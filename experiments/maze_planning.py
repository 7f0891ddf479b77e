"""Diffuser on a point maze beside the policies trained on the same data: each way of driving an episode with the
trained planner, how often its plans cross a wall, and a picture of sampled plans (walls, start, goal).

    python -m launch.local experiments/sweeps/maze_umaze.py --root=runs/maze_umaze
    python -m experiments.maze_planning runs/maze_umaze --out=experiments/results/maze-umaze

For every finished run below the root it reads the final evaluation (50 episodes in the sweep, at D4RL's fixed
goal) and evaluates the saved policy at random goals (the waypoint-multitask evaluation of the same rows); for
each Diffuser run it also evaluates its saved planner with control=waypoints (plan once, Diffuser's PD law on the plan's states),
actions (plan once, play the plan's actions) and, with --replan, replanning every step; it draws 50 plans from the
evaluation's start states and counts those whose path enters a wall (`dql.data.maze.crosses_wall`), and draws
--samples plans for each of three start/goal pairs into plans.png, next to the path a BC run's policy drives from
the same start when the root holds one. Writes results.json, table.md and plans.png under --out.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import dql
from dql.data import load_dataset, maze
from dql.data.evaluation_envs import env_for_dataset
from dql.envs import flatten_maze_observation, make_vector_env
from experiments.maze_plots import draw_maze
from experiments.runs import evaluate_agent, find_runs, load_run

flags.DEFINE_string("out", "experiments/results/maze-umaze", "Folder for results.json, table.md and plans.png.")
flags.DEFINE_integer("episodes", 50, "Evaluation episodes per control.")
flags.DEFINE_integer("samples", 16, "Plans drawn per start/goal pair in the picture.")
flags.DEFINE_bool("replan", False, "Also evaluate replanning at every step (a plan per step: slow on a CPU).")
FLAGS = flags.FLAGS

# Start and goal cells (row, col) of the picture, per maze: corridors where routes can differ.
PAIRS = {
    "PointMaze_UMaze-v3": [((3, 1), (1, 1)), ((3, 3), (1, 2)), ((1, 3), (3, 1))],
    "PointMaze_Medium-v3": [((6, 1), (1, 6)), ((1, 1), (6, 6)), ((4, 1), (3, 6))],
    "PointMaze_Large-v3": [((7, 1), (1, 10)), ((1, 1), (7, 9)), ((5, 1), (3, 7))],
}


def evaluate_controls(agent, dataset, env, seed: int) -> dict:
    """Score of the planner under each control on the same episodes (the evaluation's env seeds)."""
    controls = ["waypoints", "actions"] + (["replan"] if FLAGS.replan else [])
    results = {}
    for control in controls:
        variant = agent.replace(hp=dataclasses.replace(agent.hp, control=control))
        result = evaluate_agent(variant, env, FLAGS.episodes, seed, dataset)
        results[control] = result
        print(f"  control={control}: score {result['score_mean']:.1f} ± {result['score_std']:.1f}", flush=True)
    return results


@functools.lru_cache(maxsize=None)
def cached_dataset(name: str):
    """Every run of a sweep shares its dataset (a million rows for the maze tiers): read each one once."""
    return load_dataset(name)


def multitask_score(folder: Path, seed: int) -> dict:
    """The saved policy's evaluation at a random goal per episode: the run's rows read as the waypoint-multitask
    level, which is evaluated in the env with random goals and normalized by that env's reference returns."""
    name = json.loads((folder / "config.json").read_text())["dataset"]
    parts = name.split("/")
    if len(parts) < 2 or parts[1] != maze.DATA_LEVEL:
        raise SystemExit(f"error: {folder} trained on {name}, not on a gym:PointMaze_*-v3/{maze.DATA_LEVEL} tier")
    dataset = cached_dataset("/".join([parts[0], "waypoint-multitask", *parts[2:]]))
    result = evaluate_agent(dql.load_policy(folder).agent, env_for_dataset(dataset, None), FLAGS.episodes, seed,
                            dataset)
    print(f"{folder}: multi-task score {result['score_mean']:.1f} ± {result['score_std']:.1f}", flush=True)
    return result


def first_states(env, seed: int) -> np.ndarray:
    """The evaluation's first observations (env i seeded seed + 100 + i, as Evaluator seeds them)."""
    envs = make_vector_env(env[0], env[1], FLAGS.episodes)
    try:
        observations, _ = envs.reset(seed=[seed + 100 + i for i in range(FLAGS.episodes)])
    finally:
        envs.close()
    return np.asarray(observations, np.float32)


def wall_crossing(agent, geometry, observations: np.ndarray) -> dict:
    plans = jax.jit(agent.plan_arrays)(observations, jax.random.PRNGKey(0))
    crossed = maze.crosses_wall(geometry, np.asarray(plans["states"])[..., :2])
    return {"plans": int(len(crossed)), "crossing_walls": int(crossed.sum()), "rate": float(crossed.mean())}


def pair_observations(geometry, pairs) -> np.ndarray:
    """[x, y, 0, 0, goal_x, goal_y] at the start cells' centres."""
    rows = [np.concatenate([geometry.cell_to_xy(start), [0.0, 0.0], geometry.cell_to_xy(goal)])
            for start, goal in pairs]
    return np.asarray(rows, np.float32)


def bc_path(policy, env_id: str, start_cell, goal_cell, steps: int) -> np.ndarray:
    """The positions a deterministic policy drives from a start cell to a goal cell in the env."""
    env = maze.make_maze_env(env_id)
    try:
        observation, _ = env.reset(seed=0, options={"reset_cell": np.array(start_cell),
                                                   "goal_cell": np.array(goal_cell)})
        state = flatten_maze_observation(observation)
        path = [state[:2]]
        for _ in range(steps):
            observation, *_ = env.step(policy(state[None].astype(np.float32), seed=0)[0])
            state = flatten_maze_observation(observation)
            path.append(state[:2])
    finally:
        env.close()
    return np.asarray(path)


def draw(path: Path, env_id: str, geometry, pairs, plans: np.ndarray, bc_paths: list | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = geometry.shape
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4 * rows / cols + 0.6))
    for index, (ax, (start, goal)) in enumerate(zip(np.atleast_1d(axes), pairs)):
        for trajectory in plans[index]:
            ax.plot(trajectory[:, 0], trajectory[:, 1], color="tab:blue", alpha=0.35, lw=1)
        if bc_paths is not None:
            ax.plot(bc_paths[index][:, 0], bc_paths[index][:, 1], color="tab:orange", lw=2, label="BC rollout")
        draw_maze(ax, geometry, start, goal, legend=index == 0)
    fig.suptitle(f"{env_id}: {plans.shape[1]} Diffuser plans per start/goal pair (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def planner_study(run: Path, bc_run: Path | None, out: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    dataset = cached_dataset(config["dataset"])
    env = env_for_dataset(dataset, config.get("env"))
    policy = dql.load_policy(run)
    agent, env_id = policy.agent, env[0]
    geometry = maze.geometry_of(env_id)
    print(f"{run}: {config['dataset']}, step {policy.step}", flush=True)
    study = {"run": str(run), "step": policy.step, "controls": evaluate_controls(agent, dataset, env,
                                                                                  int(config["seed"]))}
    study["wall_crossing"] = wall_crossing(agent, geometry, first_states(env, int(config["seed"])))
    print(f"  plans crossing a wall: {study['wall_crossing']}", flush=True)
    pairs = PAIRS[env_id]
    observations = np.repeat(pair_observations(geometry, pairs), FLAGS.samples, axis=0)
    plans = np.asarray(jax.jit(agent.plan_arrays)(observations, jax.random.PRNGKey(1))["states"])[..., :2]
    plans = plans.reshape(len(pairs), FLAGS.samples, *plans.shape[1:])
    bc_paths = None
    if bc_run is not None:
        bc = dql.load_policy(bc_run)
        bc_paths = [bc_path(bc, env_id, start, goal, agent.hp.horizon) for start, goal in pairs]
    draw(out / "plans.png", env_id, geometry, pairs, plans, bc_paths)
    study["picture_plans_crossing_walls"] = float(maze.crosses_wall(geometry, plans).mean())
    return study


def table(runs: list[dict], studies: list[dict]) -> str:
    lines = ["| algo | seed | step | fixed goal: score (mean ± std over episodes) | random goals: score |",
             "|---|---|---|---|---|"]
    for run in runs:
        multi = run["multitask"]
        lines.append(f"| {run['algo']} | {run['seed']} | {run['step']} | {run['score']:.1f} ± {run['score_std']:.1f} | "
                     f"{multi['score_mean']:.1f} ± {multi['score_std']:.1f} |")
    for study in studies:
        for control, result in study["controls"].items():
            lines.append(f"| diffuser, control={control} | | {study['step']} | "
                         f"{result['score_mean']:.1f} ± {result['score_std']:.1f} | |")
        crossing = study["wall_crossing"]
        lines.append(f"| diffuser plans entering a wall | | | {crossing['crossing_walls']} of {crossing['plans']} | |")
    return "\n".join(lines) + "\n"


def main(argv):
    roots = argv[1:]
    if not roots:
        raise app.UsageError("give the sweep root(s) with the maze runs")
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    folders = find_runs(roots)
    runs = []
    for folder in folders:
        run = load_run(folder)
        if run is not None:
            runs.append({"algo": run["algo"], "seed": run["seed"], "step": run["curve"][0][-1],
                         "score": run["score"], "score_std": run["score_std"], "folder": str(folder),
                         "multitask": multitask_score(folder, int(run["seed"]))})
    bc_runs = [Path(run["folder"]) for run in runs if run["algo"] == "bc"]
    studies = [planner_study(Path(run["folder"]), bc_runs[0] if bc_runs else None, out)
               for run in runs if run["algo"] == "diffuser"]
    (out / "results.json").write_text(json.dumps({"runs": runs, "diffuser": studies}, indent=2) + "\n")
    (out / "table.md").write_text(table(runs, studies))
    print(table(runs, studies))


if __name__ == "__main__":
    app.run(main)
