"""Configs per algorithm: `<algo>.py` gives `get_config()` (the base values, the one source of every default) and
`DATASET_OVERRIDES` (the per-dataset table of the algorithm's paper).

Resolution, last wins: the algorithm's base (or a `--config=FILE`), the dataset's row, the top-level loop flags,
then `--config.KEY=VALUE` overrides.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import ml_collections

from dql.configs.common import dataset_row

CONFIG_DIR = Path(__file__).parent
ALGOS = ("dql", "bc", "diffusion_bc", "td3bc", "iql", "cql", "rebrac", "fql", "edp", "idql", "diffuser", "sac")


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


def resolve(algo: str, dataset: str | None, base: ml_collections.ConfigDict | None = None,
            loop_flags: dict | None = None, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Base (the algorithm's, or `base`) < the dataset's row < loop flags < dotted `--config.*` overrides."""
    config = get_config(algo) if base is None else ml_collections.ConfigDict(base.to_dict())
    if dataset is not None:
        config.update(dataset_row(algo_module(algo).DATASET_OVERRIDES, dataset))
    for name, value in (loop_flags or {}).items():
        config[name] = value
    for dotted, value in (overrides or {}).items():
        check_key(config, dotted, algo)
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def check_key(config: ml_collections.ConfigDict, dotted: str, algo: str) -> None:
    """A one-line error for `--config.KEY` naming the algorithm's keys, instead of ml_collections' traceback."""
    node = config
    for depth, name in enumerate(dotted.split(".")):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            keys = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
            where = ".".join(dotted.split(".")[:depth]) or f"--algo={algo}"
            raise ValueError(f"--config.{dotted}: {where} has no key {name!r}; its keys: {keys}")
        node = node[name]
