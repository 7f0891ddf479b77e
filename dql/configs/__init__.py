"""Configs per algorithm: `<algo>.py` gives `get_config()` (the base values, the one source of every default) and
`DATASET_OVERRIDES` (the per-dataset table of the algorithm's paper).

Resolution, last wins: the algorithm's base (or a `--config=FILE`), the dataset's row, the top-level loop flags,
then `--config.KEY=VALUE` overrides.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import ml_collections

# LOOP_FLAGS: dql.train and launch.sweep read it here.
from dql.configs.common import LOOP_FLAGS, dataset_row  # noqa: F401

CONFIG_DIR = Path(__file__).parent
# The algorithms: one config file each (dql/configs/NAME.py). The agents' registry (dql.agents.AGENTS) is built from
# this list, and so are --algo's choices and the sweep files' check; adding an algorithm adds its config file, its
# agent file (dql/agents/NAME.py) and its tests, nothing else.
ALGOS = tuple(sorted((path.stem for path in CONFIG_DIR.glob("*.py") if path.stem not in ("__init__", "common")),
                     key=lambda name: (name != "dql", name)))


def offline_algos() -> tuple[str, ...]:
    """The algorithms that train on a dataset (all but the online learners, whose config says `online`)."""
    return tuple(algo for algo in ALGOS if not get_config(algo).get("online", False))


def algo_module(algo: str) -> ModuleType:
    if algo not in ALGOS:
        raise ValueError(f"--algo={algo!r} is not a known algorithm; expected one of {', '.join(ALGOS)}")
    return importlib.import_module(f"dql.configs.{algo}")


def config_file(algo: str) -> Path:
    """The file `--config` defaults to for `--algo=algo`."""
    algo_module(algo)
    return CONFIG_DIR / f"{algo}.py"


def get_config(algo: str) -> ml_collections.ConfigDict:
    return algo_module(algo).get_config()


def with_added_keys(saved: dict) -> dict:
    """A run folder's recorded config (JSON) completed with the keys its algorithm gained since, at their base
    defaults: a key is added with the default that computes what the run computed (goal_dims 0, for example), so an
    older run folder resumes, loads and compares as it was."""
    if saved.get("algo") not in ALGOS:
        return saved
    base = json.loads(json.dumps(get_config(saved["algo"]).to_dict(), default=list))
    return {**{key: value for key, value in base.items() if key not in saved}, **saved}


def resolve(algo: str, dataset: str | None, base: ml_collections.ConfigDict | None = None,
            loop_flags: dict | None = None, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Base (the algorithm's, or `base`) < the dataset's row < loop flags < dotted `--config.*` overrides.

    The row is `dataset`'s own, or that of the dataset named by the loop flag `row` (another dataset's tuning, e.g.
    hopper-medium-replay-v2's for gym:Hopper-v5/full-replay)."""
    config = get_config(algo) if base is None else ml_collections.ConfigDict(base.to_dict())
    loop_flags = dict(loop_flags or {})
    row = loop_flags.pop("row", None)
    if dataset is not None or row is not None:
        config.update(dataset_row(algo_module(algo).DATASET_OVERRIDES, row or dataset))
    if row is not None:
        config.row = row
    for name, value in loop_flags.items():
        config[name] = value
    for dotted, value in (overrides or {}).items():
        check_key(config, dotted, algo)
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        if isinstance(value, str):  # from the command line: read as the field's type
            value = parse_value(node, leaf, value, dotted)
        try:
            node[leaf] = value
        except TypeError as error:
            raise ValueError(f"--config.{dotted}={value!r}: {error}") from error
    return config


def parse_value(node: ml_collections.ConfigDict, leaf: str, text: str, dotted: str):
    """A command-line value as the type of the field it sets: numbers, True/False, tuples as "32,32" or "(32, 32)"
    (one number for a one-element tuple), anything else a string."""
    import ast

    current = node[leaf]
    kind = node.get_ref(leaf).get_type() if current is None else type(current)
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError(f"--config.{dotted}={text!r}: expected True or False")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if kind in (tuple, list) and not isinstance(value, (tuple, list)):
        value = (value,)
    if kind is tuple and isinstance(value, list):
        value = tuple(value)
    return value


def check_key(config: ml_collections.ConfigDict, dotted: str, algo: str) -> None:
    """A one-line error for `--config.KEY` naming the algorithm's keys, instead of ml_collections' traceback."""
    node = config
    for depth, name in enumerate(dotted.split(".")):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            keys = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
            where = ".".join(dotted.split(".")[:depth]) or f"--algo={algo}"
            raise ValueError(f"--config.{dotted}: {where} has no key {name!r}; its keys: {keys}")
        node = node[name]
