"""Sweep files and their expansion into runs: the one definition of a run's name, folders and command line.

A sweep file (experiments/sweeps/*.py) is a Python module of plain values:

    ALGOS = ["dql", "iql"]                                # required
    DATASETS = ["pendulum-mixed-v0"]                      # required
    SEEDS = [0, 1, 2]                                     # default [0]
    TRAIN_FLAGS = {"steps": 300, "eval_every": 150}       # dql.train's top-level flags, for every run
    CONFIG = {"hidden_dims": (32, 32)}                    # --config.KEY=VALUE, for every run
    AXES = {"config.eta": [1.0, 2.0]}                     # swept: "config.KEY" or a TRAIN_FLAGS name
    PER_ALGO = {"dql": {"config": {...}, "axes": {...}}}  # CONFIG and AXES for one algorithm's runs only

`expand` makes the cartesian product algorithm x dataset x axis values x seeds. Each run is one trainer command,
`python -m dql.train --algo=A --dataset=D --seed=S [--num_seeds=N] --workdir=ROOT/NAME [flags] [--config.*]`.
With seed grouping the contiguous seeds of one configuration are one run (`--seed=first --num_seeds=N`, one
multi-seed program writing ROOT/NAME/seed_<s>/); without, each seed is a run whose folder is ROOT/NAME itself.
A run is finished when every one of its seed folders holds summary.json. Starting runs and recording them
(the launchers' shared flags, logs, outcomes, ROOT/sweep.json) is launch.running.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import traceback
from pathlib import Path

from dql import configs as dql_configs
from dql.logs import file_safe

# dql.train's top-level flags a sweep may set, in the order they appear on a command line: the config shorthands
# (num_seeds is the launcher's, from the seed grouping) and the evaluation env.
TRAIN_FLAG_TYPES = {**{name: kind for name, (kind, _) in dql_configs.LOOP_FLAGS.items() if name != "num_seeds"},
                    "env": str}
SWEEP_KEYS = ("ALGOS", "DATASETS", "SEEDS", "TRAIN_FLAGS", "CONFIG", "AXES", "PER_ALGO")
PER_ALGO_KEYS = ("config", "axes")
SUMMARY = "summary.json"


class SweepError(ValueError):
    """A sweep file that cannot be expanded; the message names the file and the key."""


@dataclasses.dataclass
class Sweep:
    path: Path
    algos: list[str]
    datasets: list[str]
    seeds: list[int]
    train_flags: dict
    config: dict
    axes: dict  # key ("config.KEY" or a train flag) -> list of values
    per_algo: dict  # algo -> {"config": {...}, "axes": {...}}

    @property
    def name(self) -> str:
        return self.path.stem


@dataclasses.dataclass
class Run:
    """One trainer process: one configuration and one or more contiguous seeds."""

    name: str
    algo: str
    dataset: str
    seeds: tuple[int, ...]
    train_flags: dict
    config: dict

    def workdir(self, root: Path) -> Path:
        return Path(root) / self.name

    def seed_dirs(self, root: Path) -> list[Path]:
        """The run folders the trainer writes: the workdir for one seed, workdir/seed_<s> for a group."""
        if len(self.seeds) == 1:
            return [self.workdir(root)]
        return [self.workdir(root) / f"seed_{seed}" for seed in self.seeds]

    def finished(self, root: Path) -> bool:
        return all((folder / SUMMARY).exists() for folder in self.seed_dirs(root))

    def log_path(self, root: Path) -> Path:
        return Path(root) / "logs" / f"{self.name}.log"

    def command(self, root: Path) -> list[str]:
        argv = ["python", "-m", "dql.train", f"--algo={self.algo}", f"--dataset={self.dataset}",
                f"--seed={self.seeds[0]}"]
        if len(self.seeds) > 1:
            argv.append(f"--num_seeds={len(self.seeds)}")
        argv.append(f"--workdir={self.workdir(root)}")
        argv += [f"--{name}={flag_value(value)}" for name, value in self.train_flags.items()]
        argv += [f"--config.{key}={flag_value(value)}" for key, value in self.config.items()]
        return argv


def flag_value(value) -> str:
    """A value as dql.train's flags parse it: tuples as "32,32" (ml_collections reads them back as tuples)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (tuple, list)):
        return ",".join(flag_value(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def tag_value(value) -> str:
    """A value as part of a run name: 2.0 -> 2.0, (32, 32) -> 32x32, gym:X/y -> gym_X_y."""
    if isinstance(value, (tuple, list)):
        return "x".join(tag_value(item) for item in value)
    return file_safe(flag_value(value))


# ---------------------------------------------------------------------------------------------------- loading


def load_sweep(path: str | Path) -> Sweep:
    """Execute the sweep file and check its values; any problem is a SweepError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    namespace = _execute(path)
    unknown = sorted(k for k in namespace if k.isupper() and not k.startswith("_") and k not in SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]}; a sweep file sets {', '.join(SWEEP_KEYS)}")
    sweep = Sweep(
        path=path,
        algos=_names(path, "ALGOS", namespace.get("ALGOS")),
        datasets=_names(path, "DATASETS", namespace.get("DATASETS")),
        seeds=_seeds(path, namespace.get("SEEDS", [0])),
        train_flags=_train_flags(path, "TRAIN_FLAGS", namespace.get("TRAIN_FLAGS", {})),
        config=_config(path, "CONFIG", namespace.get("CONFIG", {})),
        axes=_axes(path, "AXES", namespace.get("AXES", {})),
        per_algo=_per_algo(path, namespace.get("PER_ALGO", {})),
    )
    for algo in sweep.per_algo:
        if algo not in sweep.algos:
            raise SweepError(f"{path}: PER_ALGO[{algo!r}]: {algo!r} is not in ALGOS {sweep.algos}")
    for algo in sweep.algos:
        _check_config_keys(path, sweep, algo)
    return sweep


def _execute(path: Path) -> dict:
    spec = importlib.util.spec_from_file_location(f"_sweep_{file_safe(path.stem)}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise SweepError(f"{path}: line {error.lineno}: SyntaxError: {error.msg}") from None
    except Exception as error:  # the sweep file is user code; report where it failed, in one line
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
                 if Path(frame.filename).resolve() == path.resolve()]
        where = f"line {lines[-1]}: " if lines else ""
        raise SweepError(f"{path}: {where}{type(error).__name__}: {error}") from None
    return vars(module)


def _names(path: Path, key: str, value) -> list[str]:
    if value is None:
        raise SweepError(f"{path}: {key} is required (a list of names)")
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise SweepError(f"{path}: {key} must be a non-empty list of names, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise SweepError(f"{path}: {key}: {item!r} is not a name")
    if len(set(value)) != len(value):
        raise SweepError(f"{path}: {key} lists a name twice: {list(value)}")
    return list(value)


def _seeds(path: Path, value) -> list[int]:
    if isinstance(value, range):
        value = list(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise SweepError(f"{path}: SEEDS must be a non-empty list of integers, got {value!r}")
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepError(f"{path}: SEEDS: {seed!r} is not a non-negative integer")
    if len(set(value)) != len(value):
        raise SweepError(f"{path}: SEEDS lists a seed twice: {list(value)}")
    return sorted(value)


def _train_flags(path: Path, key: str, value) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {key} must be a dict of dql.train flags, got {value!r}")
    for name, flag in value.items():
        _check_train_flag(path, f"{key}[{name!r}]", name, flag)
    return dict(value)


def _check_train_flag(path: Path, where: str, name, value) -> None:
    if name not in TRAIN_FLAG_TYPES:
        raise SweepError(f"{path}: {where}: not a dql.train flag a sweep sets; expected one of "
                         f"{', '.join(TRAIN_FLAG_TYPES)} (other settings go in CONFIG)")
    wanted = TRAIN_FLAG_TYPES[name]
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise SweepError(f"{path}: {where}: expected {wanted.__name__}, got {value!r}")


def _config(path: Path, key: str, value) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {key} must be a dict of config keys to values, got {value!r}")
    for name, item in value.items():
        _check_config_value(path, f"{key}[{name!r}]", name, item)
    return dict(value)


def _check_config_value(path: Path, where: str, name, value) -> None:
    parts = name.split(".") if isinstance(name, str) else [""]
    if not all(part.isidentifier() for part in parts):
        raise SweepError(f"{path}: {where}: a config key is a dotted name such as 'eta' or 'nested.key'")
    items = value if isinstance(value, (tuple, list)) else [value]
    if isinstance(value, (tuple, list)) and not value:
        raise SweepError(f"{path}: {where}: an empty sequence cannot be given on the command line")
    for item in items:
        if not isinstance(item, (bool, int, float, str)):
            raise SweepError(f"{path}: {where}: {value!r} cannot be given on the command line "
                             "(use numbers, strings, booleans or tuples of them)")


def _axes(path: Path, key: str, value) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {key} must be a dict of axis name to list of values, got {value!r}")
    axes = {}
    for name, values in value.items():
        where = f"{key}[{name!r}]"
        if isinstance(values, range):
            values = list(values)
        if not isinstance(values, (list, tuple)) or not values:
            raise SweepError(f"{path}: {where}: expected a non-empty list of values, got {values!r}")
        for item in values:
            if isinstance(name, str) and name.startswith("config."):
                _check_config_value(path, where, name[len("config."):], item)
            else:
                _check_train_flag(path, where, name, item)
        axes[name] = list(values)
    return axes


def _per_algo(path: Path, value) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{path}: PER_ALGO must be a dict of algorithm to {{'config': ..., 'axes': ...}}")
    per_algo = {}
    for algo, extra in value.items():
        where = f"PER_ALGO[{algo!r}]"
        if not isinstance(extra, dict) or set(extra) - set(PER_ALGO_KEYS):
            raise SweepError(f"{path}: {where} must be a dict with keys {PER_ALGO_KEYS}, got {extra!r}")
        per_algo[algo] = {"config": _config(path, f"{where}['config']", extra.get("config", {})),
                          "axes": _axes(path, f"{where}['axes']", extra.get("axes", {}))}
    return per_algo


def _check_config_keys(path: Path, sweep: Sweep, algo: str) -> None:
    """Every config key must exist in the algorithm's config: a typo fails here, not in every run."""
    if algo not in dql_configs.ALGOS:
        raise SweepError(f"{path}: ALGOS: {algo!r} is not an algorithm of dql; expected one of "
                         f"{', '.join(dql_configs.ALGOS)}")
    base = dql_configs.get_config(algo)
    if base.get("online", False) and not base.get("demonstrations", False):
        raise SweepError(f"{path}: ALGOS: {algo!r} trains online, without a dataset; sweeps run training on "
                         "datasets (offline, or online from demonstrations such as gail)")
    extra = sweep.per_algo.get(algo, {"config": {}, "axes": {}})
    keys = [("CONFIG", key) for key in sweep.config]
    keys += [(f"PER_ALGO[{algo!r}]['config']", key) for key in extra["config"]]
    for where, axes in (("AXES", sweep.axes), (f"PER_ALGO[{algo!r}]['axes']", extra["axes"])):
        keys += [(where, name[len("config."):]) for name in axes if name.startswith("config.")]
    for where, dotted in keys:
        node = base
        for part in dotted.split("."):
            if not hasattr(node, "keys") or part not in node:
                raise SweepError(f"{path}: {where}: {dotted!r} is not a key of --algo={algo}'s config")
            node = node[part]


# -------------------------------------------------------------------------------------------------- expansion


def expand(sweep: Sweep, group_seeds: bool) -> list[Run]:
    """The runs of the sweep, in order algorithm, dataset, axis values, seeds."""
    runs = []
    for algo in sweep.algos:
        extra = sweep.per_algo.get(algo, {"config": {}, "axes": {}})
        axes = {**sweep.axes, **extra["axes"]}
        short = _short_axis_names(list(axes))
        for dataset in sweep.datasets:
            for values in itertools.product(*axes.values()):
                point = dict(zip(axes, values))
                train_flags = {**sweep.train_flags, **{k: v for k, v in point.items() if not k.startswith("config.")}}
                config = {**sweep.config, **extra["config"],
                          **{k[len("config."):]: v for k, v in point.items() if k.startswith("config.")}}
                stem = "-".join([algo, file_safe(dataset), *(f"{short[k]}{tag_value(v)}" for k, v in point.items())])
                groups = contiguous_groups(sweep.seeds) if group_seeds else [(seed,) for seed in sweep.seeds]
                for seeds in groups:
                    suffix = f"seed{seeds[0]}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}"
                    runs.append(Run(f"{stem}-{suffix}", algo, dataset, seeds, train_flags, config))
    _check_unique_names(sweep.path, runs)
    return runs


def contiguous_groups(seeds: list[int]) -> list[tuple[int, ...]]:
    """[0, 1, 2, 5, 6] -> [(0, 1, 2), (5, 6)]: --num_seeds trains seeds S..S+N-1, so a group has no gaps."""
    groups: list[list[int]] = []
    for seed in sorted(seeds):
        if groups and seed == groups[-1][-1] + 1:
            groups[-1].append(seed)
        else:
            groups.append([seed])
    return [tuple(group) for group in groups]


def _short_axis_names(keys: list[str]) -> dict[str, str]:
    """config.actor.lr -> lr in run names, unless two axes end in the same name; then the whole dotted key."""
    last = {key: key.split(".")[-1] for key in keys}
    counts = {name: list(last.values()).count(name) for name in last.values()}
    return {key: last[key] if counts[last[key]] == 1 else key.removeprefix("config.") for key in keys}


def _check_unique_names(path: Path, runs: list[Run]) -> None:
    seen = {}
    for run in runs:
        if run.name in seen:
            raise SweepError(f"{path}: two runs get the name {run.name!r} ({seen[run.name].config} and "
                             f"{run.config}); make the AXES values distinct")
        seen[run.name] = run

