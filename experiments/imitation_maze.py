"""The imitation study's maze analysis: success per task and route coverage of every run on a point maze's
`demos` data, and a picture of each method's paths from one start to one goal beside the demonstrations.

    python -m experiments.imitation_maze experiments/results/imitation-maze/runs \
        --out=experiments/results/imitation-maze/analysis [--episodes_per_task=5]

Each run folder's latest checkpoint acts in the demos' evaluation env, `episodes_per_task` episodes of every task
(dql.data.demos.evaluate_tasks), through the evaluation's own episode policy (Diffusion Policy keeps its chunk
queue). Route coverage of a task: the distinct near-shortest routes (dql.data.demos.routes) among its successful
episodes, against the number the demonstrations hold; a successful path off every listed route counts as "other".
Writes `<out>/routes.md` (per method and demos per task: success, routes covered per task, mean ± standard error
over seeds; GAIL's score at every evaluation of every seed and which runs collapsed), `<out>/routes.json` (per run
and task) and `<out>/paths_<dataset>.png`. Unfinished runs (no summary.json) are left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

from dql.data import gym_datasets, load_dataset, maze
from dql.data.demos import episode_table, evaluate_tasks, routes, tasks
from dql.evaluation import EpisodePolicy
from dql.policy import load_policy
from experiments.maze_plots import draw_maze
from experiments.runs import find_runs
from experiments.stability import mean_se, stability_table

flags.DEFINE_string("out", "analysis", "Folder for routes.md, routes.json and the path pictures.")
flags.DEFINE_integer("episodes_per_task", 5, "Evaluation episodes per task and run.")
flags.DEFINE_integer("task", 0, "The task whose paths are drawn.")
FLAGS = flags.FLAGS


def run_tasks(workdir: Path, env_id: str, episodes_per_task: int) -> dict:
    """evaluate_tasks with the run's latest policy acting as in evaluation (memory per episode)."""
    policy = load_policy(workdir)
    agents = jax.tree_util.tree_map(lambda leaf: leaf[None], policy.agent)
    keys = np.asarray(jax.random.PRNGKey(1234))[None]
    episodes = episodes_per_task * len(tasks(env_id))
    return evaluate_tasks(EpisodePolicy(agents, keys, episodes), env_id, episodes_per_task, seed=1)


def data_routes(spec: str) -> tuple[list[set], list[list[np.ndarray]]]:
    """Per task: the route indices the demonstrations take, and their paths (positions)."""
    table, dataset = episode_table(spec), load_dataset(spec)
    env_id = gym_datasets.parse_spec(spec)[0]
    taken, paths = [set() for _ in tasks(env_id)], [[] for _ in tasks(env_id)]
    for task, route, start, length in zip(table["task"], table["route"], table["start"], table["length"]):
        taken[int(task)].add(int(route))
        positions = dataset.observations[int(start):int(start) + int(length), :2]
        paths[int(task)].append(np.concatenate([positions, dataset.next_observations[int(start) + int(length) - 1,
                                                                                    None, :2]]))
    return taken, paths


def coverage(result: dict) -> dict:
    """Per task: success rate, distinct listed routes among successful episodes, and whether any other route."""
    out = {"success": [float(s) for s in result["success"]], "routes": [], "other": []}
    for successes, indices in zip(result["successes"], result["route_index"]):
        done = indices[successes]
        out["routes"].append(len(set(int(i) for i in done if i >= 0)))
        out["other"].append(bool(np.any(done < 0)))
    return out


def draw_paths(path: Path, spec: str, task: int, demo_paths: list[np.ndarray], method_paths: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("demonstrations", demo_paths)] + sorted(method_paths.items())
    env_id = gym_datasets.parse_spec(spec)[0]
    geometry = maze.geometry_of(env_id)
    rows, cols = geometry.shape
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2 * rows / cols + 0.6), squeeze=False)
    start, goal = tasks(env_id)[task]
    for index, (axis, (title, paths)) in enumerate(zip(axes[0], panels)):
        for positions in paths:
            axis.plot(positions[:, 0], positions[:, 1], lw=0.8, alpha=0.6)
        draw_maze(axis, geometry, start, goal, legend=index == 0)
        axis.set_title(f"{title} ({len(paths)})", fontsize=9)
    figure.suptitle(f"{spec}: task {task}, cells {start} -> {goal}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax's per-restore INFO lines
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    per_run, table, pictures = [], defaultdict(list), defaultdict(dict)
    finished = [workdir for workdir in find_runs(argv[1:]) if (workdir / "summary.json").exists()]
    for workdir in finished:
        config = json.loads((workdir / "config.json").read_text())
        spec = config["dataset"]
        env_id = gym_datasets.parse_spec(spec)[0]
        result = run_tasks(workdir, env_id, FLAGS.episodes_per_task)
        summary = coverage(result)
        per_run.append({"run": workdir.name, "algo": config["algo"], "dataset": spec, "seed": config["seed"],
                        **summary})
        table[(spec, config["algo"])].append(summary)
        pictures[spec].setdefault(config["algo"], result["paths"][FLAGS.task])
        print(f"{workdir.name}: success {np.mean(summary['success']):.2f}, routes per task "
              f"{np.mean(summary['routes']):.2f}", flush=True)
    lines = ["| dataset | method | seeds | success rate | routes per task (data) | tasks with another route |",
             "|---|---|---|---|---|---|"]
    for spec in sorted({spec for spec, _ in table}):
        taken, demo_paths = data_routes(spec)
        env_id = gym_datasets.parse_spec(spec)[0]
        listed = [len(routes(env_id, *task)) for task in tasks(env_id)]
        data_mean = np.mean([len(t) for t in taken])
        for (row_spec, algo), runs in sorted(table.items()):
            if row_spec != spec:
                continue
            lines.append(f"| {spec} | {algo} | {len(runs)} | {mean_se([np.mean(r['success']) for r in runs])} | "
                         f"{mean_se([np.mean(r['routes']) for r in runs])} ({data_mean:.2f} of {np.mean(listed):.2f} "
                         f"listed) | {mean_se([np.mean(r['other']) for r in runs])} |")
        draw_paths(out / f"paths_{spec.replace(':', '_').replace('/', '_')}.png", spec, FLAGS.task,
                   demo_paths[FLAGS.task], pictures[spec])
    gail_runs = [workdir for workdir in finished
                 if json.loads((workdir / "config.json").read_text())["algo"] == "gail"]
    if gail_runs:
        lines += ["", "GAIL's stability:", "", *stability_table(gail_runs)]
    (out / "routes.md").write_text("\n".join(lines) + "\n")
    (out / "routes.json").write_text(json.dumps(per_run, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
