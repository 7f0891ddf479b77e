"""D4RL datasets without the d4rl package: names, URLs, the local cache, download, and the hdf5 reader.

The reader follows d4rl's `qlearning_dataset`: transitions at a timeout are dropped, because their successor
belongs to the next episode; `terminals` become `dones`; next observations are `observations[i + 1]`, and the last
row, which has no successor, is dropped. One difference: where a file has its own `next_observations` (D4RL's v2
files do), those are used and the last row is kept. Within an episode they equal observations[i + 1]; so on D4RL's
files the two readings differ at most in the file's last row.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np

from dql.data import scores
from dql.data.dataset import Dataset, DatasetError, check_finite, episode_returns

_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def _build_url_table() -> dict[str, str]:
    urls: dict[str, str] = {}
    levels = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
    for env in ("halfcheetah", "hopper", "walker2d", "ant"):
        for level in levels:
            for version in ("v1", "v2"):
                stem = f"{env}_{level.replace('-', '_')}-{version}"
                urls[f"{env}-{level}-{version}"] = f"{_BASE_URL}/gym_mujoco_{version}/{stem}.hdf5"
    v0_files = {"random": "random", "medium": "medium", "expert": "expert", "medium-replay": "mixed",
                "medium-expert": "medium_expert"}
    for env in ("halfcheetah", "hopper", "walker2d", "ant"):
        for level, stem in v0_files.items():
            prefix = "walker" if (env == "walker2d" and stem == "mixed") else env
            urls[f"{env}-{level}-v0"] = f"{_BASE_URL}/gym_mujoco/{prefix}_{stem}.hdf5"
    mazes = {"umaze": "u-maze", "medium": "big-maze", "large": "hardest-maze"}
    for size, maze in mazes.items():
        variants = {"umaze": [("", "False", "False"), ("-diverse", "True", "True")]}.get(
            size, [("-play", "True", "False"), ("-diverse", "True", "True")]
        )
        for suffix, multistart, multigoal in variants:
            stem = f"Ant_maze_{maze}_noisy_multistart_{multistart}_multigoal_{multigoal}_sparse"
            urls[f"antmaze-{size}{suffix}-v0"] = f"{_BASE_URL}/ant_maze_new/{stem}.hdf5"
            urls[f"antmaze-{size}{suffix}-v2"] = f"{_BASE_URL}/ant_maze_v2/{stem}_fixed.hdf5"
    urls["kitchen-complete-v0"] = f"{_BASE_URL}/kitchen/mini_kitchen_microwave_kettle_light_slider-v0.hdf5"
    urls["kitchen-partial-v0"] = f"{_BASE_URL}/kitchen/kitchen_microwave_kettle_light_slider-v0.hdf5"
    urls["kitchen-mixed-v0"] = f"{_BASE_URL}/kitchen/kitchen_microwave_kettle_bottomburner_light-v0.hdf5"
    for env in ("pen", "hammer", "relocate", "door"):
        for level in ("human", "cloned", "expert"):
            urls[f"{env}-{level}-v1"] = f"{_BASE_URL}/hand_dapg_v1/{env}-{level}-v1.hdf5"
    for size in ("umaze", "medium", "large"):
        urls[f"maze2d-{size}-v1"] = f"{_BASE_URL}/maze2d/maze2d-{size}-sparse-v1.hdf5"
    return urls


D4RL_URLS: dict[str, str] = _build_url_table()
# d4rl stores each download under the URL's file name; a file of that name is that dataset.
_NAME_BY_FILE: dict[str, str] = {url.rsplit("/", 1)[-1]: name for name, url in D4RL_URLS.items()}


def is_d4rl_name(name: str) -> bool:
    return name in D4RL_URLS


def dataset_dir() -> Path:
    """d4rl's cache folder: $D4RL_DATASET_DIR, else ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def local_path(name: str) -> Path:
    """Where d4rl keeps a dataset: the URL's file name inside dataset_dir()."""
    return dataset_dir() / D4RL_URLS[name].rsplit("/", 1)[-1]


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Download to a temporary name beside `destination`, check it, then rename: never a partial file in place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            expected = int(response.headers.get("Content-Length") or 0)
            received, last_report = 0, 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                received += len(chunk)
                if time.monotonic() - last_report > 2.0:
                    total = f"/{expected / 2**20:.0f}" if expected else ""
                    print(f"  downloading {destination.name}: {received / 2**20:.0f}{total} MiB", file=sys.stderr)
                    last_report = time.monotonic()
        if expected and received != expected:
            raise DatasetError(f"download of {url} stopped at {received} of {expected} bytes")
        check_hdf5(partial, display_name=url)
        os.replace(partial, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as error:
        raise DatasetError(
            f"could not download {url} to {destination}: {error}. Without internet, put the file there by hand "
            "or set D4RL_DATASET_DIR to the folder that holds it."
        ) from error
    finally:
        partial.unlink(missing_ok=True)
    return destination


def check_hdf5(path: Path, display_name: str | None = None) -> None:
    """Raise DatasetError unless `path` is a readable hdf5 file with D4RL's required keys."""
    display_name = display_name or str(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            available = sorted(f.keys())
    except OSError as error:
        raise DatasetError(f"{display_name}: not a readable hdf5 file ({error})") from error
    if missing:
        raise DatasetError(
            f"{display_name}: missing key(s) {missing} expected in a D4RL file; the file has {available}"
        )


def fetch(name: str) -> Path:
    """The local file of a D4RL dataset, downloading it when it is not cached."""
    path = local_path(name)
    if not path.exists():
        print(f"{name} is not in {path.parent}; downloading {D4RL_URLS[name]}", file=sys.stderr)
        download(D4RL_URLS[name], path)
    return path


def _read_array(f: h5py.File, key: str, path: Path, kind: str) -> np.ndarray:
    if key not in f:
        raise DatasetError(f"{path}: missing key {key!r} expected in a D4RL file; the file has {sorted(f.keys())}")
    if not isinstance(f[key], h5py.Dataset):
        raise DatasetError(f"{path}: key {key!r} is a group, expected an array")
    value = f[key][()]
    if kind == "float" and not np.issubdtype(value.dtype, np.floating):
        raise DatasetError(f"{path}: key {key!r} has dtype {value.dtype}, expected float32/float64")
    if kind == "flag" and not (value.dtype == np.bool_ or np.issubdtype(value.dtype, np.number)):
        raise DatasetError(f"{path}: key {key!r} has dtype {value.dtype}, expected bool or 0/1 numbers")
    return value


def _timeouts_from_episode_length(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """d4rl's rule for files without `timeouts`: an episode that runs max_episode_steps rows times out."""
    timeouts = np.zeros(len(terminals), bool)
    steps = 0
    for row, terminal in enumerate(terminals):
        steps += 1
        if terminal:
            steps = 0
        elif steps == max_episode_steps:
            timeouts[row], steps = True, 0
    return timeouts


def _check_shapes(path: Path, arrays: dict[str, np.ndarray]) -> None:
    observations = arrays["observations"]
    if observations.ndim != 2:
        raise DatasetError(f"{path}: key 'observations' has shape {observations.shape}, expected (N, obs_dim)")
    n = len(observations)
    if n == 0:
        raise DatasetError(f"{path}: key 'observations' has no rows")
    for key, value in arrays.items():
        if len(value) != n:
            raise DatasetError(f"{path}: key {key!r} has {len(value)} rows but 'observations' has {n}")
        expected = (n, observations.shape[1]) if key == "next_observations" else None
        if key == "actions" and value.ndim != 2:
            raise DatasetError(f"{path}: key 'actions' has shape {value.shape}, expected (N, act_dim)")
        if key in ("rewards", "terminals", "timeouts") and value.ndim != 1:
            raise DatasetError(f"{path}: key {key!r} has shape {value.shape}, expected ({n},)")
        if expected is not None and value.shape != expected:
            raise DatasetError(f"{path}: key {key!r} has shape {value.shape}, expected {expected}")
    for key in ("observations", "actions", "rewards", "next_observations"):
        if key in arrays:
            check_finite(arrays[key], key, str(path))


def _max_action(path: Path, attrs: dict, actions: np.ndarray) -> np.ndarray:
    if "max_action" not in attrs:
        return _infer_max_action(actions)
    value = np.asarray(attrs["max_action"], np.float32).reshape(-1)
    if value.size not in (1, actions.shape[1]) or np.any(value <= 0):
        raise DatasetError(
            f"{path}: attribute 'max_action' is {value.tolist()}, expected 1 or {actions.shape[1]} positive numbers"
        )
    return np.broadcast_to(value, (actions.shape[1],)).copy()


def read_hdf5(path: str | Path, name: str | None = None) -> Dataset:
    """Read a D4RL-format hdf5 file into a Dataset with qlearning_dataset semantics (see module docstring).

    Metadata the project writes into its own files (name, env_id, env_kwargs as JSON, reference scores,
    max_action) is read from the root attributes; a file named as d4rl names its downloads (hopper_medium-v2.hdf5)
    is taken for that dataset, with D4RL's reference scores.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    check_hdf5(path)
    with h5py.File(path, "r") as f:
        arrays = {
            "observations": _read_array(f, "observations", path, "float"),
            "actions": _read_array(f, "actions", path, "float"),
            "rewards": _read_array(f, "rewards", path, "float"),
            "terminals": _read_array(f, "terminals", path, "flag"),
        }
        for key, kind in (("timeouts", "flag"), ("next_observations", "float")):
            if key in f:
                arrays[key] = _read_array(f, key, path, kind)
        attrs = dict(f.attrs)
    rewards = arrays["rewards"]
    if rewards.ndim == 2 and rewards.shape[1] == 1:
        arrays["rewards"] = rewards.reshape(-1)
    _check_shapes(path, arrays)

    observations, actions, rewards = arrays["observations"], arrays["actions"], arrays["rewards"]
    terminals = arrays["terminals"].astype(bool)
    if "timeouts" in arrays:
        timeouts = arrays["timeouts"].astype(bool)
    else:
        max_episode_steps = int(attrs.get("max_episode_steps", 1000))
        print(f"warning: {path} has no 'timeouts'; treating episodes that reach {max_episode_steps} steps as timed "
              "out, as d4rl does (set the file attribute max_episode_steps to change it)", file=sys.stderr)
        timeouts = _timeouts_from_episode_length(terminals, max_episode_steps)
    keep = ~timeouts
    next_observations = arrays.get("next_observations")
    if next_observations is None:
        next_observations = np.concatenate([observations[1:], observations[-1:]], axis=0)
        keep[-1] = False  # the last row has no successor in the file
    if not keep.any():
        raise DatasetError(f"{path}: no transition is left after dropping the rows at timeouts")
    # Taken before the timeout rows go: the row before a timeout keeps its real successor's action (at a terminal
    # the next row belongs to another episode, which the done flag masks).
    next_actions = np.concatenate([actions[1:], actions[-1:]], axis=0)

    name = name or (str(attrs["name"]) if "name" in attrs else _NAME_BY_FILE.get(path.name, path.stem))
    if "ref_min_score" in attrs and "ref_max_score" in attrs:
        ref_min, ref_max = float(attrs["ref_min_score"]), float(attrs["ref_max_score"])
    else:
        ref_min, ref_max = scores.reference_scores(name) or (None, None)
    return Dataset(
        observations=observations[keep].astype(np.float32),
        actions=actions[keep].astype(np.float32),
        rewards=rewards[keep].astype(np.float32),
        next_observations=next_observations[keep].astype(np.float32),
        dones=terminals[keep].astype(np.float32),
        name=name,
        source=str(path),
        episode_returns=episode_returns(rewards, terminals | timeouts),
        max_action=_max_action(path, attrs, actions),
        env_id=str(attrs["env_id"]) if "env_id" in attrs else None,
        env_kwargs=_env_kwargs(path, attrs),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        next_actions=next_actions[keep].astype(np.float32),
    )


def _env_kwargs(path: Path, attrs: dict) -> dict:
    """The evaluation env's keyword arguments: the file's `env_kwargs` attribute, a JSON object."""
    if "env_kwargs" not in attrs:
        return {}
    try:
        kwargs = json.loads(str(attrs["env_kwargs"]))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: attribute 'env_kwargs' is not JSON ({error})") from error
    if not isinstance(kwargs, dict):
        raise DatasetError(f"{path}: attribute 'env_kwargs' is {type(kwargs).__name__}, expected a JSON object")
    return kwargs


def _infer_max_action(actions: np.ndarray) -> np.ndarray:
    """D4RL's control tasks act in [-1, 1]; where the data leaves that box, use each dimension's largest |a|."""
    largest = np.abs(actions).max(axis=0)
    return np.where(largest <= 1.0, 1.0, largest).astype(np.float32)


def load(name: str) -> Dataset:
    path = fetch(name)
    try:
        check_hdf5(path)
    except DatasetError as error:
        raise DatasetError(f"{error}. It is the cached copy of {name}: delete it and it will be downloaded "
                           "again") from error
    return read_hdf5(path, name=name)



def write_hdf5(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write arrays (and root attributes) in D4RL's layout: to a temporary name first, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value, compression="gzip" if value.size > 4096 else None)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
