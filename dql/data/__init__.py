"""Datasets: one `load_dataset(spec)` for every source, all producing the same validated `Dataset`."""

from __future__ import annotations

from pathlib import Path

from dql.data import builtin, d4rl, gym_datasets
from dql.data.dataset import (
    REWARD_TUNES,
    Dataset,
    DatasetError,
    sample_batch,
    training_arrays,
    tune_rewards,
)

BUILTIN_DATASETS = {builtin.NAME: builtin.load}
MINARI_PREFIX = "minari:"


def is_dataset_name(spec: str) -> bool:
    """Whether `spec` names a dataset of a known source (without reading or generating it)."""
    if spec in BUILTIN_DATASETS or spec.startswith(MINARI_PREFIX) or d4rl.is_d4rl_name(spec):
        return True
    if spec.startswith(gym_datasets.PREFIX):
        try:
            gym_datasets.parse_spec(spec)
        except DatasetError:
            return False
        return True
    return False


def load_dataset(spec: str) -> Dataset:
    """One `--dataset` for every source: a built-in name, gym:<EnvId>/<level> (generated on first use),
    minari:<dataset_id>, a D4RL name (cached or downloaded) or a path to a D4RL-format file."""
    if spec in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[spec]()
    if spec.startswith(gym_datasets.PREFIX):
        return gym_datasets.load(spec)
    if spec.startswith(MINARI_PREFIX):
        from dql.data import minari_source

        return minari_source.load(spec[len(MINARI_PREFIX):])
    if d4rl.is_d4rl_name(spec):
        return d4rl.load(spec)
    if spec.endswith((".hdf5", ".h5")) or Path(spec).expanduser().exists():
        return d4rl.read_hdf5(spec)
    raise DatasetError(
        f"--dataset={spec!r} is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}), a generated one "
        "(gym:Hopper-v5/medium), a Minari one (minari:mujoco/hopper/medium-v0), a D4RL name (e.g. "
        "hopper-medium-v2) nor a path to an existing .hdf5 file"
    )


__all__ = [
    "BUILTIN_DATASETS",
    "REWARD_TUNES",
    "Dataset",
    "DatasetError",
    "is_dataset_name",
    "load_dataset",
    "sample_batch",
    "training_arrays",
    "tune_rewards",
]
