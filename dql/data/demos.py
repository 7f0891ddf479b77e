"""Demonstrations for imitation: `gym:PointMaze_Medium-v3/demos[/N]` and `gym:Hopper-v5/expert-demos[/N]`.

Point mazes (`demos`, also UMaze and Large): a fixed set of tasks (`tasks(env_id)`: start cell, goal cell), and
for each task every near-shortest route (`routes`: the simple 4-neighbour cell paths at most ROUTE_SLACK cells
longer than a shortest one, shortest first, at most MAX_ROUTES). Each demonstration drives D4RL's waypoint
controller (maze.WaypointController: PD tracking of the route's cell centres, then of the goal) along one route
drawn at random, with low Gaussian action noise N(0, DEMO_ACTION_NOISE^2), in the same env the evaluation uses
(`evaluation_kwargs`: the task's start and goal cells plus the env's own +-0.25 position noise, and
continuing_task=False, so the env terminates the episode at the goal: within its success radius, 0.45). Route
draws are balanced: each run of R consecutive demonstrations of a task (R routes) uses each route once, in a random
order, so a task's routes are all in the data once N >= R. `/N` is demonstrations PER TASK (default 50), stored
round-robin (demo n of every task, then demo n + 1), so a smaller N's file is a prefix of a larger one's. Each
row records its task and route index (`infos/task`, `infos/route`); observations are [x, y, vx, vy, goal_x, goal_y]
as the waypoint tiers'. The score is the success rate x 100 (sparse reward 1 on arrival, which ends the
episode: an episode's return is 1 or 0), evaluated at the tasks in turn (episode seeded s runs task s mod K).

Locomotion (`expert-demos`, every env with a shipped expert policy): `/N` whole EPISODES (default 50) of the shipped
expert (the `expert` tier's policy file, actions sampled from it as that tier's are), scored as the other tiers.

Pure helpers for studies: `tasks`, `routes`, `route_of` (the cells a path visits), `evaluate_tasks` (success per
task and the paths of any batched policy), `episode_table` (each demonstration's task, route and rows).
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import sys
import time

import numpy as np

from dql.data.maze import ENVS, MazeGeometry, WaypointController, geometry_of, make_maze_env, maze_cells, maze_map
from dql.envs import TASK_CELLS, flatten_maze_observation, rollout

MAZE_LEVEL = "demos"
EXPERT_LEVEL = "expert-demos"
# level -> its count's default and meaning (the /N of the spec)
DEFAULT_COUNT = {MAZE_LEVEL: 50, EXPERT_LEVEL: 50}
COUNT_MEANING = {MAZE_LEVEL: "demonstrations per task", EXPERT_LEVEL: "whole episodes"}
ROUTE_SLACK = 2  # cells beyond a shortest route (grid paths between two cells differ by an even number of cells)
MAX_ROUTES = 6
NUM_TASKS = {"PointMaze_UMaze-v3": 4, "PointMaze_Medium-v3": 10, "PointMaze_Large-v3": 12}
DEMO_ACTION_NOISE = 0.1
# Recorded in the files; a cached file of another version is generated again. Bump it when the rows change.
DEMOS_VERSION = 1
SUCCESS_SCORES = (0.0, 1.0)  # ref_min_score, ref_max_score: the normalized score is the success rate x 100
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _maze(maze) -> list:
    return maze_map(maze) if isinstance(maze, str) else [list(row) for row in maze]


def _distances(open_cells: set, goal: tuple) -> dict:
    distance, queue = {goal: 0}, collections.deque([goal])
    while queue:
        cell = queue.popleft()
        for d_row, d_col in _STEPS:
            neighbour = (cell[0] + d_row, cell[1] + d_col)
            if neighbour in open_cells and neighbour not in distance:
                distance[neighbour] = distance[cell] + 1
                queue.append(neighbour)
    return distance


def routes(maze, start, goal, slack: int = ROUTE_SLACK, cap: int = MAX_ROUTES) -> list[tuple]:
    """The near-shortest routes from start to goal: every simple path of 4-neighbour open cells (both ends
    included) at most `slack` cells longer than a shortest one, sorted by length and then by their cells, the first
    `cap`. `maze`: an env id of the point mazes or a maze map (1 wall). ValueError when an end is not open or no
    path joins them."""
    grid = _maze(maze)
    open_cells = set(maze_cells(grid))
    start, goal = tuple(int(v) for v in start), tuple(int(v) for v in goal)
    for name, cell in (("start", start), ("goal", goal)):
        if cell not in open_cells:
            raise ValueError(f"the {name} cell {cell} is not an open cell of the maze")
    distance = _distances(open_cells, goal)
    if start not in distance:
        raise ValueError(f"no path joins {start} and {goal} in the maze")
    limit, found = distance[start] + 1 + slack, []

    def extend(path: list, seen: set) -> None:
        if path[-1] == goal:
            found.append(tuple(path))
            return
        for d_row, d_col in _STEPS:
            cell = (path[-1][0] + d_row, path[-1][1] + d_col)
            if cell in distance and cell not in seen and len(path) + 1 + distance[cell] <= limit:
                seen.add(cell)
                extend(path + [cell], seen)
                seen.discard(cell)

    extend([start], {start})
    return sorted(found, key=lambda route: (len(route), route))[:cap]


@functools.cache
def tasks(env_id: str) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
    """The fixed (start cell, goal cell) tasks of a maze's demonstrations, NUM_TASKS[env_id] of them.

    Chosen by a rule, not by hand: among ordered pairs at least half the maze's largest shortest distance apart and
    with at least 2 routes (all pairs where none has, as in the U-maze), most routes (up to MAX_ROUTES) first, then
    the farthest, then by cells; a pair is taken unless its start is already a task's start, its goal a task's goal
    or its reverse a task."""
    grid = maze_map(env_id)
    candidates = []
    for start, goal in itertools.permutations(maze_cells(grid), 2):
        found = routes(grid, start, goal)
        candidates.append((len(found), len(found[0]), start, goal))
    farthest = max(length for _, length, _, _ in candidates)
    pool = [c for c in candidates if c[0] >= 2] or candidates
    pool = sorted((c for c in pool if c[1] - 1 >= (farthest - 1) / 2), key=lambda c: (-c[0], -c[1], c[2], c[3]))
    chosen: list = []
    for _, _, start, goal in pool:
        if all(start != s and goal != g and (goal, start) != (s, g) for s, g in chosen):
            chosen.append((start, goal))
        if len(chosen) == NUM_TASKS[env_id]:
            break
    return tuple(chosen)


def route_of(positions, geometry: MazeGeometry, goal_cell=None, substeps: int = 4) -> tuple:
    """The route a path of (x, y) positions [T, 2] took: the cells it visits in order (with `substeps` - 1 points
    between consecutive positions, so a fast step does not skip a cell), each repeat removed with the loop since
    its first visit (a detour into a cell and back, or a circle, leaves no trace), so the result is a simple path.
    With `goal_cell`, a path that ends next to that cell (an episode ends within the success radius, 0.45, which
    can be just short of the goal's cell) gets it appended. Compare with `routes(...)` to name the route taken."""
    positions = np.asarray(positions, np.float64)
    fractions = np.arange(substeps)[:, None] / substeps
    points = (positions[:-1, None] + fractions * (positions[1:, None] - positions[:-1, None])).reshape(-1, 2)
    cells: list = []
    for xy in [*points, positions[-1]]:
        cell = geometry.xy_to_cell(xy)
        if cell in cells:
            del cells[cells.index(cell) + 1:]
        else:
            cells.append(cell)
    if goal_cell is not None:
        goal_cell = tuple(int(v) for v in goal_cell)
        if cells[-1] != goal_cell and abs(cells[-1][0] - goal_cell[0]) + abs(cells[-1][1] - goal_cell[1]) == 1:
            cells.append(goal_cell)
    return tuple(cells)


def evaluation_kwargs(env_id: str) -> dict:
    """The env kwargs of the demos' evaluation: episodic (the env ends an episode at the goal) at the fixed tasks."""
    return {"continuing_task": False, TASK_CELLS: [[list(start), list(goal)] for start, goal in tasks(env_id)]}


def maze_attrs(env_id: str) -> dict:
    """What a maze demos file records about itself: its behaviour, evaluation env kwargs, tasks, route counts and
    score references (success rate x 100)."""
    from dql.data.maze import D_GAIN, P_GAIN, SUCCESS_RADIUS

    task_list = tasks(env_id)
    return {"behaviour": f"waypoint controller (P {P_GAIN}, D {D_GAIN}) with N(0, {DEMO_ACTION_NOISE}^2) action "
                         f"noise along a near-shortest route (at most {ROUTE_SLACK} cells longer than a shortest, at "
                         f"most {MAX_ROUTES}) drawn per demonstration, balanced; each ends at the goal (the env's "
                         f"success radius {SUCCESS_RADIUS}) or its time limit",
            "env_kwargs": json.dumps(evaluation_kwargs(env_id)), "tasks": json.dumps(task_list),
            "route_counts": json.dumps([len(routes(env_id, *task)) for task in task_list]),
            "ref_min_score": SUCCESS_SCORES[0], "ref_max_score": SUCCESS_SCORES[1]}


def generate_maze_demos(env_id: str, per_task: int, seed: int, noise: float = DEMO_ACTION_NOISE,
                        label: str = "") -> dict:
    """`per_task` demonstrations of every task in D4RL's layout (module docstring): observations [N, 6], actions
    [N, 2], rewards (1 on arrival), terminals (arrivals), timeouts (the time limit without arrival), infos/task,
    infos/route (index into routes(env_id, *tasks(env_id)[task])), infos/goal, infos/qpos, infos/qvel. Demo n of
    task k draws from its own generator ([seed, k, n]), so it is the same in every file of the same seed."""
    if per_task < 1:
        raise ValueError(f"need at least one demonstration per task, got {per_task}")
    env = make_maze_env(env_id, **evaluation_kwargs(env_id))
    geometry = MazeGeometry.from_env(env.unwrapped)
    task_routes = [routes(env_id, start, goal) for start, goal in tasks(env_id)]
    columns = collections.defaultdict(list)
    start = last_print = time.monotonic()
    try:
        for n in range(per_task):
            for task, choices in enumerate(task_routes):
                route = int(np.random.default_rng([seed, task, n // len(choices)]).permutation(len(choices))
                            [n % len(choices)])
                rng = np.random.default_rng([seed, task, n, 1])
                observation, _ = env.reset(seed=int(rng.integers(2**31)), options={"task": task})
                state = flatten_maze_observation(observation)
                controller = WaypointController(geometry)
                controller.set_route(choices[route], state[4:])
                done = False
                while not done:
                    action = controller(state)
                    if noise > 0:
                        action = action + rng.normal(0.0, noise, 2)
                    action = np.clip(action, -1.0, 1.0)
                    observation, reward, terminated, truncated, _ = env.step(action)
                    next_state = flatten_maze_observation(observation)
                    for key, value in (("observations", state), ("actions", action), ("rewards", reward),
                                       ("next_observations", next_state), ("terminals", terminated),
                                       ("timeouts", truncated and not terminated), ("infos/task", task),
                                       ("infos/route", route)):
                        columns[key].append(value)
                    done, state = terminated or truncated, next_state
            if time.monotonic() - last_print > 5.0:
                print(f"  [{label or env_id}] {n + 1}/{per_task} demonstrations per task | "
                      f"{len(columns['rewards']) / (time.monotonic() - start):.0f} rows/s", file=sys.stderr, flush=True)
                last_print = time.monotonic()
    finally:
        env.close()
    arrays = {key: np.asarray(value) for key, value in columns.items()}
    observations = arrays["observations"].astype(np.float32)
    return {**{key: arrays[key].astype(np.float32) for key in ("actions", "rewards", "next_observations")},
            "observations": observations, "terminals": arrays["terminals"].astype(bool),
            "timeouts": arrays["timeouts"].astype(bool), "infos/task": arrays["infos/task"].astype(np.int32),
            "infos/route": arrays["infos/route"].astype(np.int32), "infos/goal": observations[:, 4:],
            "infos/qpos": observations[:, :2], "infos/qvel": observations[:, 2:4]}


def run_policy_episodes(env_id: str, act, episodes: int, seed: int, num_envs: int, label: str = "") -> dict:
    """`episodes` whole episodes of act(observations [E, d], step) -> actions in E = min(num_envs, episodes) envs
    at once, env i seeded seed + i. Demonstration j E + i is env i's (j + 1)-th episode, so the order of the rows
    does not depend on which episodes end first (taking the first to finish would favour short, failed ones).
    Returns D4RL-layout arrays (terminals: the env's; timeouts: its time limit)."""
    import gymnasium as gym

    if episodes < 1:
        raise ValueError(f"need at least one episode, got {episodes}")
    count = min(num_envs, episodes)
    envs = [gym.make(env_id) for _ in range(count)]
    needed = [len(range(i, episodes, count)) for i in range(count)]
    observations = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    running, finished = [[] for _ in envs], [[] for _ in envs]
    step, start, last_print = 0, time.monotonic(), time.monotonic()
    try:
        while any(len(done) < need for done, need in zip(finished, needed)):
            actions = np.asarray(act(observations, step), np.float32)
            step += 1
            for i, env in enumerate(envs):
                if len(finished[i]) == needed[i]:
                    continue
                next_observation, reward, terminated, truncated, _ = env.step(actions[i])
                running[i].append((observations[i].copy(), actions[i], reward, next_observation, terminated,
                                   truncated and not terminated))
                if terminated or truncated:
                    finished[i].append(running[i])
                    running[i] = []
                    next_observation, _ = env.reset()
                observations[i] = next_observation
            if time.monotonic() - last_print > 5.0:
                print(f"  [{label or env_id}] {sum(map(len, finished))}/{episodes} episodes | "
                      f"{step * count / (time.monotonic() - start):.0f} steps/s", file=sys.stderr, flush=True)
                last_print = time.monotonic()
    finally:
        for env in envs:
            env.close()
    ordered = [finished[d % count][d // count] for d in range(episodes)]
    columns = [np.concatenate([np.asarray([row[k] for row in episode]) for episode in ordered]) for k in range(6)]
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    return {key: value.astype(bool if key in ("terminals", "timeouts") else np.float32)
            for key, value in zip(keys, columns)}


class ControllerBatch:
    """The noise-free shortest-path controller (maze.ControllerPolicy) as a batched policy on flattened states,
    policy(observations [B, 6], t) -> actions [B, 2]: the 100 of the demos' success, for checks."""

    def __init__(self, env_id: str):
        self.geometry, self.policies = geometry_of(env_id), []

    def __call__(self, observations: np.ndarray, t: int) -> np.ndarray:
        from dql.data.maze import ControllerPolicy

        if t == 0:
            self.policies = [ControllerPolicy(self.geometry) for _ in observations]
        return np.stack([policy(state) for policy, state in zip(self.policies, np.asarray(observations, float))])


def evaluate_tasks(policy, env_id: str, episodes_per_task: int, seed: int = 0) -> dict:
    """Run a batched policy (observations [B, 6] -> actions [B, 2], called as policy(observations, t)) for
    `episodes_per_task` episodes of every task at once, in the demos' evaluation env; episode i runs task i mod K
    (env seed K seed + i). Returns the tasks, `success` [K] (the rate per task), `successes` [K, E], `lengths`
    [K, E], `paths` (K lists of E [T + 1, 2] position arrays, reset to end), `routes` (route_of of each path, K lists
    of E tuples) and `route_index` [K, E] (index into routes(env_id, *task), -1 for a route not among them)."""
    task_list = tasks(env_id)
    count, geometry = len(task_list), geometry_of(env_id)
    total = count * episodes_per_task
    paths = [[] for _ in range(total)]

    def record(observations, running):
        for i in np.flatnonzero(running):
            paths[i].append(np.asarray(observations[i, :2], np.float64))

    result = rollout(policy, env_id, evaluation_kwargs(env_id), total, [count * seed + i for i in range(total)],
                     on_step=record)
    returns, lengths = result["returns"], result["lengths"]
    index = np.arange(total).reshape(episodes_per_task, count).T  # [K, E]: episode i is task i mod K
    successes = returns[index] > 0
    taken = [[route_of(np.stack(paths[i]), geometry, goal_cell=task_list[k][1]) for i in index[k]]
             for k in range(count)]
    known = [routes(env_id, *task) for task in task_list]
    return {"tasks": task_list, "success": successes.mean(axis=1), "successes": successes, "lengths": lengths[index],
            "paths": [[np.stack(paths[i]) for i in index[k]] for k in range(count)], "routes": taken,
            "route_index": np.array([[known[k].index(r) if r in known[k] else -1 for r in taken[k]]
                                     for k in range(count)])}


def episode_table(spec: str, seed: int = 0) -> dict:
    """Per demonstration of a maze `demos` spec (generated on first use): `task`, `route`, `start` (its first row
    in the file) and `length` (rows), read from the cached file's infos."""
    import h5py

    from dql.data import gym_datasets

    gym_datasets.load(spec, seed)
    env_id, level, count = gym_datasets.parse_spec(spec)
    if level != MAZE_LEVEL:
        raise ValueError(f"{spec}: episode_table reads a point maze's {MAZE_LEVEL} level")
    with h5py.File(gym_datasets.dataset_path(env_id, level, count, seed), "r") as f:
        ends = np.flatnonzero(f["terminals"][()] | f["timeouts"][()])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return {"task": f["infos/task"][()][starts], "route": f["infos/route"][()][starts], "start": starts,
                "length": ends - starts + 1}


__all__ = ["ENVS", "episode_table", "evaluate_tasks", "route_of", "routes", "tasks"]
