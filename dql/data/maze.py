"""D4RL maze2d-style data for Gymnasium-Robotics' point mazes: `--dataset=gym:PointMaze_UMaze-v3/waypoint[/N]`.

As D4RL made maze2d: a waypoint controller (shortest path over the maze's cells, PD tracking of the next cell's
centre, then of the goal) with Gaussian action noise drives one point mass through one long stream of random goals.
Differences from D4RL's generation (each for a reason):

- the stream is cut into episodes (a timeout row) at each goal arrival, the post-step position within
  ARRIVAL_RADIUS of the goal (D4RL's controller threshold), and after the env's max_episode_steps without one;
  `terminals` stay 0, as D4RL's: reaching a goal ends nothing in the env (its task is continuing). D4RL's file is
  one stream whose goal changes silently (Diffuser cuts it afresh where the point leaves the evaluation goal's
  0.5 radius); here the cuts are in the file.
- a new goal moves the env's target (its `goal`, the marker with it) without touching the point mass, as D4RL's
  `set_target` did, so the stream stays continuous; reset(options={"goal_cell": ...}) would teleport the agent to
  a cell centre at rest at every goal. It is an open cell drawn uniformly, plus the env's own uniform position
  noise (position_noise_range), redrawn while within the env's success radius (0.45) of the agent, as the env's
  own goal update does.
- the final waypoint is the goal itself, not its cell's centre: the env's goal noise (0.25) is larger than D4RL's
  (0.1), so the centre could be 0.35 away from it.
- intermediate waypoints are jittered symmetrically (uniform in +-WAYPOINT_JITTER / 2 per axis) where D4RL
  subtracted uniform(0, 0.2) from both coordinates, a bias toward one corner.
- observations are flattened for every algorithm: [x, y, vx, vy, goal_x, goal_y] (`dql.envs.flatten_maze_observation`,
  used by the evaluation env too), so a goal-conditioned policy can reach any goal; D4RL stored [x, y, vx, vy].

The normalized score is D4RL's maze2d one: 0 = uniform random actions, 100 = the (noise-free) controller, both
measured in the evaluation env by `maze_reference_returns` and stored in dql.data.scores. Two evaluations exist:
`waypoint` evaluates at D4RL's fixed goal cell (single task, as maze2d-*-v1), `waypoint-multitask` at a random
goal per episode (the env's default). Both read the same rows.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time

import numpy as np

from dql.envs import flatten_maze_observation, register_robotics, split_task_cells, with_task_cells

ENVS = ("PointMaze_UMaze-v3", "PointMaze_Medium-v3", "PointMaze_Large-v3")
# level -> evaluation: "single" at D4RL's fixed goal cell, "multi" at the env's random goals
LEVELS = {"waypoint": "single", "waypoint-multitask": "multi"}
DATA_LEVEL = "waypoint"  # every level reads this level's rows
# Recorded in the files; a cached file of another version is generated again. Bump it when the rows change.
GENERATOR_VERSION = 1
# The three layouts ('#' wall, 'O' open), D4RL's maze2d ones, which gymnasium-robotics' U_MAZE, MEDIUM_MAZE and
# LARGE_MAZE repeat; here so that a cached dataset loads (and trains without evaluation) without gymnasium-robotics.
LAYOUTS = {
    "PointMaze_UMaze-v3": ("#####", "#OOO#", "###O#", "#OOO#", "#####"),
    "PointMaze_Medium-v3": ("########", "#OO##OO#", "#OO#OOO#", "##OOO###", "#OO#OOO#", "#O#OO#O#", "#OOO#OO#",
                            "########"),
    "PointMaze_Large-v3": ("############", "#OOOO#OOOOO#", "#O##O#O#O#O#", "#OOOOOO#OOO#", "#O####O###O#",
                           "#OO#O#OOOOO#", "##O#O#O#O###", "#OO#OOO#OOO#", "############"),
}
# D4RL's goal cells of maze2d-{umaze,medium,large}-v1 (the 'G' of its maze strings).
FIXED_GOAL_CELLS = {"PointMaze_UMaze-v3": (1, 1), "PointMaze_Medium-v3": (6, 6), "PointMaze_Large-v3": (7, 9)}

# D4RL's waypoint controller (d4rl/pointmaze/waypoint_controller.py): action = P (waypoint - position) + D velocity,
# a waypoint counts as reached within 0.1; its generation script adds N(0, 0.5^2) to every action (--noisy).
P_GAIN = 10.0
D_GAIN = -1.0
SOLVE_RADIUS = 0.1
ACTION_NOISE = 0.5
WAYPOINT_JITTER = 0.2
ARRIVAL_RADIUS = SOLVE_RADIUS
SUCCESS_RADIUS = 0.45  # the env's: sparse reward 1 and `success` within it


def maze_cells(maze_map) -> list[tuple[int, int]]:
    """The open (row, col) cells of a maze map (1 is a wall; 0, 'r', 'g', 'c' are open), row by row."""
    return [(row, col) for row, line in enumerate(maze_map) for col, cell in enumerate(line) if cell != 1]


# Neighbour order fixes which of several shortest paths BFS returns: up, down, left, right.
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def shortest_path(maze_map, start_cell, goal_cell) -> list[tuple[int, int]]:
    """The cells from start to goal (both included) of a shortest 4-neighbour path through open cells.

    Breadth-first search visiting neighbours up, down, left, right, so ties break the same way every time.
    ValueError when either end is a wall or outside the map, or no path joins them.
    """
    open_cells = set(maze_cells(maze_map))
    start, goal = tuple(int(v) for v in start_cell), tuple(int(v) for v in goal_cell)
    for name, cell in (("start", start), ("goal", goal)):
        if cell not in open_cells:
            raise ValueError(f"the {name} cell {cell} is not an open cell of the maze")
    parent = {start: None}
    queue = collections.deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for d_row, d_col in _STEPS:
            neighbour = (cell[0] + d_row, cell[1] + d_col)
            if neighbour in open_cells and neighbour not in parent:
                parent[neighbour] = cell
                queue.append(neighbour)
    if goal not in parent:
        raise ValueError(f"no path joins {start} and {goal} in the maze")
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


@dataclasses.dataclass(frozen=True)
class MazeGeometry:
    """A maze map and the size of its cells, with gymnasium-robotics' conversions between cells and (x, y):
    the maze is centred on the origin, columns grow with x, rows grow against y."""

    maze_map: tuple
    scaling: float = 1.0

    @classmethod
    def from_env(cls, env) -> "MazeGeometry":
        maze = env.unwrapped.maze
        return cls(tuple(tuple(row) for row in maze.maze_map), float(maze.maze_size_scaling))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.maze_map), len(self.maze_map[0])

    def cell_to_xy(self, cell) -> np.ndarray:
        rows, cols = self.shape
        return np.array([(cell[1] + 0.5 - cols / 2) * self.scaling, (rows / 2 - cell[0] - 0.5) * self.scaling])

    def xy_to_cell(self, xy) -> tuple[int, int]:
        rows, cols = self.shape
        return (int(np.floor(rows / 2 - xy[1] / self.scaling)), int(np.floor(xy[0] / self.scaling + cols / 2)))


def crosses_wall(geometry: MazeGeometry, positions: np.ndarray, substeps: int = 4) -> np.ndarray:
    """Whether each path [..., H, 2] of (x, y) positions enters a wall cell (or leaves the maze) at any of its
    points or of `substeps` - 1 evenly spaced points between consecutive ones (the point mass's centre; its 0.1
    radius is not counted). Returns [...] booleans."""
    positions = np.asarray(positions, np.float64)
    fractions = np.arange(substeps)[:, None] / substeps  # [S, 1]
    start, end = positions[..., :-1, None, :], positions[..., 1:, None, :]
    between = (start + fractions * (end - start)).reshape(*positions.shape[:-2], -1, 2)
    points = np.concatenate([between, positions[..., -1:, :]], axis=-2)
    rows, cols = geometry.shape
    row = np.floor(rows / 2 - points[..., 1] / geometry.scaling).astype(int)
    col = np.floor(points[..., 0] / geometry.scaling + cols / 2).astype(int)
    inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    walls = np.array([[cell == 1 for cell in line] for line in geometry.maze_map])
    hit = ~inside | walls[np.clip(row, 0, rows - 1), np.clip(col, 0, cols - 1)]
    return hit.any(axis=-1)


class WaypointController:
    """D4RL's maze2d controller: PD tracking of waypoints along the shortest cell path to the goal.

    `set_goal(goal_xy, position)` plans from the position's cell: the centres of the path's cells after it, then
    the goal itself. `__call__(observation)` takes [x, y, vx, vy], moves on to the next waypoint once within
    solve_radius of the current one, and returns clip(p_gain (waypoint - position) + d_gain velocity) in
    [-action_high, action_high]. Pure numpy and deterministic; `jitter` > 0 moves each intermediate waypoint by a
    uniform offset in +-jitter / 2 drawn from `rng` when planning.
    """

    def __init__(self, geometry: MazeGeometry, p_gain: float = P_GAIN, d_gain: float = D_GAIN,
                 solve_radius: float = SOLVE_RADIUS, action_high: float = 1.0, jitter: float = 0.0,
                 rng: np.random.Generator | None = None):
        if jitter > 0 and rng is None:
            raise ValueError("a jittered controller needs rng")
        self.geometry, self.p_gain, self.d_gain = geometry, float(p_gain), float(d_gain)
        self.solve_radius, self.action_high = float(solve_radius), float(action_high)
        self.jitter, self.rng = float(jitter), rng
        self.waypoints = np.zeros((0, 2))
        self.index = 0

    def set_goal(self, goal_xy, position) -> None:
        goal_xy = np.asarray(goal_xy, np.float64)
        self.set_route(shortest_path(self.geometry.maze_map, self.geometry.xy_to_cell(position),
                                     self.geometry.xy_to_cell(goal_xy)), goal_xy)

    def set_route(self, cells, goal_xy) -> None:
        """Follow the given cells (the first the position's, the last the goal's): their centres between the two
        ends, then the goal itself."""
        goal_xy = np.asarray(goal_xy, np.float64)
        centres = [self.geometry.cell_to_xy(cell) for cell in cells[1:-1]]
        if centres and self.jitter > 0:
            centres = [c + self.rng.uniform(-self.jitter / 2, self.jitter / 2, 2) * self.geometry.scaling
                       for c in centres]
        self.waypoints = np.array(centres + [goal_xy])
        self.index = 0

    @property
    def goal(self) -> np.ndarray:
        return self.waypoints[-1]

    def __call__(self, observation) -> np.ndarray:
        if not len(self.waypoints):
            raise ValueError("WaypointController: call set_goal first")
        position, velocity = np.asarray(observation[:2], np.float64), np.asarray(observation[2:4], np.float64)
        while (self.index < len(self.waypoints) - 1
               and np.linalg.norm(self.waypoints[self.index] - position) < self.solve_radius):
            self.index += 1
        action = self.p_gain * (self.waypoints[self.index] - position) + self.d_gain * velocity
        return np.clip(action, -self.action_high, self.action_high)


def make_maze_env(env_id: str, **kwargs):
    """A point maze env (gymnasium-robotics, optional: a one-line install hint when it is missing), with its dict
    observations; a `task_cells` kwarg gives it fixed tasks (dql.envs.with_task_cells)."""
    import gymnasium as gym

    if env_id not in ENVS:
        raise ValueError(f"{env_id!r} is not one of the point mazes {', '.join(ENVS)}")
    register_robotics(env_id)
    kwargs, task_cells = split_task_cells(kwargs)
    env = gym.make(env_id, **kwargs)
    return env if task_cells is None else with_task_cells(env, task_cells)


def maze_map(env_id: str, fixed_goal: bool = False) -> list[list]:
    """An env's maze as gymnasium-robotics takes it (`maze_map`: 1 wall, 0 open); with fixed_goal, D4RL's goal
    cell marked 'g', the env's only goal then."""
    rows = [[1 if tile == "#" else 0 for tile in line] for line in LAYOUTS[env_id]]
    if fixed_goal:
        goal_row, goal_col = FIXED_GOAL_CELLS[env_id]
        rows[goal_row][goal_col] = "g"
    return rows


def evaluation_kwargs(env_id: str, level: str = DATA_LEVEL) -> dict:
    """The env kwargs of a level's evaluation: for the single task the maze with D4RL's goal cell as its only goal
    (start: any other open cell), for the multi-task one none (a random goal and start per episode, the env's
    default)."""
    return {} if LEVELS[level] == "multi" else {"maze_map": maze_map(env_id, fixed_goal=True)}


def _new_goal(rng, geometry, cells, position, noise_range) -> np.ndarray:
    """A uniformly drawn open cell's centre plus the env's uniform goal noise, redrawn while within the env's
    success radius of `position` (the env's own goal update does the same)."""
    while True:
        cell = cells[int(rng.integers(len(cells)))]
        goal = geometry.cell_to_xy(cell) + rng.uniform(-noise_range, noise_range, 2) * geometry.scaling
        if np.linalg.norm(goal - position) > SUCCESS_RADIUS:
            return goal


def generate_waypoint_data(env_id: str, transitions: int, seed: int, noise: float = ACTION_NOISE,
                           label: str = "") -> dict:
    """`transitions` rows of one noisy waypoint-controller stream in D4RL's maze2d layout (module docstring).

    Returns observations and next_observations [N, 6] (flattened), actions [N, 2] in [-1, 1], rewards (the env's
    sparse reward), terminals (all False), timeouts (goal arrivals, time limits, the last row), infos/goal,
    infos/qpos and infos/qvel (the row's state). The same seed gives identical arrays.
    """
    if transitions < 1:
        raise ValueError(f"need at least one transition, got {transitions}")
    env = make_maze_env(env_id)
    max_steps = int(env.spec.max_episode_steps)
    raw = env.unwrapped  # no time limit: the stream runs on, this function cuts its episodes
    geometry = MazeGeometry.from_env(raw)
    cells = maze_cells(geometry.maze_map)
    noise_range = float(raw.position_noise_range)
    rng = np.random.default_rng(seed)
    controller = WaypointController(geometry, jitter=WAYPOINT_JITTER, rng=rng)
    first_cell = cells[int(rng.integers(len(cells)))]
    observation, _ = raw.reset(seed=seed, options={"goal_cell": np.array(first_cell)})
    state = flatten_maze_observation(observation)
    controller.set_goal(state[4:], state[:2])
    columns = {key: np.zeros((transitions, dim)) for key, dim in
               (("observations", 6), ("actions", 2), ("next_observations", 6))}
    rewards = np.zeros(transitions)
    timeouts = np.zeros(transitions, bool)
    steps = 0
    start = last_print = time.monotonic()
    try:
        for row in range(transitions):
            action = controller(state)
            if noise > 0:
                action = action + rng.normal(0.0, noise, 2)
            action = np.clip(action, -1.0, 1.0)
            observation, reward, _, _, _ = raw.step(action)
            next_state = flatten_maze_observation(observation)
            steps += 1
            arrived = np.linalg.norm(next_state[:2] - next_state[4:]) <= ARRIVAL_RADIUS
            columns["observations"][row], columns["actions"][row] = state, action
            columns["next_observations"][row], rewards[row] = next_state, reward
            if arrived or steps >= max_steps:
                timeouts[row], steps = True, 0
                goal = _new_goal(rng, geometry, cells, next_state[:2], noise_range)
                raw.goal = goal
                raw.update_target_site_pos()
                next_state = np.concatenate([next_state[:4], goal])
                controller.set_goal(goal, next_state[:2])
            state = next_state
            if time.monotonic() - last_print > 5.0:
                rate = (row + 1) / (time.monotonic() - start)
                print(f"  [{label or env_id}] {row + 1}/{transitions} transitions | {rate:.0f}/s | "
                      f"ETA {(transitions - row - 1) / rate:.0f}s", file=sys.stderr, flush=True)
                last_print = time.monotonic()
    finally:
        env.close()
    timeouts[-1] = True  # the last episode is cut where the data ends, as D4RL's last episodes are
    observations = columns["observations"]
    return {
        "observations": observations.astype(np.float32),
        "actions": columns["actions"].astype(np.float32),
        "rewards": rewards.astype(np.float32),
        "next_observations": columns["next_observations"].astype(np.float32),
        "terminals": np.zeros(transitions, bool),
        "timeouts": timeouts,
        "infos/goal": observations[:, 4:].astype(np.float32),
        "infos/qpos": observations[:, :2].astype(np.float32),
        "infos/qvel": observations[:, 2:4].astype(np.float32),
    }


class ControllerPolicy:
    """The noise-free controller as an evaluation policy on flattened states: it plans at `reset` and again
    whenever the observed goal moves."""

    def __init__(self, geometry: MazeGeometry, **gains):
        self.controller = WaypointController(geometry, **gains)

    def reset(self, state, seed: int = 0) -> None:
        self.controller.set_goal(state[4:], state[:2])

    def __call__(self, state) -> np.ndarray:
        if not len(self.controller.waypoints) or not np.allclose(self.controller.goal, state[4:]):
            self.reset(state)
        return self.controller(state)


class RandomPolicy:
    """Uniform random actions in [-1, 1]^2: the 0 of the normalized score."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def reset(self, state, seed: int) -> None:
        self.rng = np.random.default_rng(seed)  # per episode: a split measurement gives the same numbers

    def __call__(self, state) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, 2)


def run_episodes(env_id: str, env_kwargs: dict, episodes: int, seed: int, policy) -> dict:
    """Returns and whether each episode ever succeeded (within the env's success radius), for `episodes`
    episodes of the env's own time limit, episode i seeded seed + i; policy has reset(state, episode_seed) and
    __call__(state) -> action on flattened states."""
    env = make_maze_env(env_id, **env_kwargs)
    returns, successes = np.zeros(episodes), np.zeros(episodes, bool)
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=seed + episode)
            state = flatten_maze_observation(observation)
            policy.reset(state, seed + episode)
            done = False
            while not done:
                observation, reward, terminated, truncated, info = env.step(policy(state))
                state = flatten_maze_observation(observation)
                returns[episode] += reward
                successes[episode] |= bool(info["success"])
                done = terminated or truncated
    finally:
        env.close()
    return {"returns": returns, "successes": successes}


def geometry_of(env_id: str) -> MazeGeometry:
    """An env's maze geometry (its cells are 1 x 1 in every point maze)."""
    return MazeGeometry(tuple(tuple(row) for row in maze_map(env_id)))


def maze_reference_returns(env_id: str, episodes: int, seed: int, level: str = DATA_LEVEL) -> dict:
    """The 0 and 100 of a level's normalized score: mean returns of uniform random actions and of the noise-free
    controller over `episodes` episodes of the level's evaluation env (seeded seed, seed + 1, ...)."""
    env_kwargs = evaluation_kwargs(env_id, level)
    random = run_episodes(env_id, env_kwargs, episodes, seed, RandomPolicy())["returns"]
    controller = run_episodes(env_id, env_kwargs, episodes, seed, ControllerPolicy(geometry_of(env_id)))["returns"]
    return {"random_return": float(random.mean()), "controller_return": float(controller.mean()),
            "random_return_std": float(random.std()), "controller_return_std": float(controller.std()),
            "episodes": episodes, "seed": seed}
