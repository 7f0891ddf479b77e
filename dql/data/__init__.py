"""Datasets: one `load_dataset(spec)` for every source, all producing the same validated `Dataset`."""

from __future__ import annotations

from pathlib import Path

from dql.data import builtin, d4rl
from dql.data.dataset import (
    REWARD_TUNES,
    Dataset,
    DatasetError,
    sample_batch,
    training_arrays,
    tune_rewards,
)

BUILTIN_DATASETS = {builtin.NAME: builtin.load}


def load_dataset(spec: str) -> Dataset:
    """A built-in name (generated on first use), a D4RL name (cached or downloaded) or a path to a D4RL-format file."""
    if spec in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[spec]()
    if d4rl.is_d4rl_name(spec):
        return d4rl.load(spec)
    if spec.endswith((".hdf5", ".h5")) or Path(spec).expanduser().exists():
        return d4rl.read_hdf5(spec)
    raise DatasetError(
        f"--dataset={spec!r} is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}), a D4RL name "
        "(e.g. hopper-medium-v2) nor a path to an .hdf5 file"
    )


__all__ = [
    "BUILTIN_DATASETS",
    "REWARD_TUNES",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "sample_batch",
    "training_arrays",
    "tune_rewards",
]
