"""Run folders: what one seed's run writes (config, dataset info, checkpoints, metrics, TensorBoard, W&B) and the
check that a folder being resumed holds a run of the same config.

A program of S seeds writes one complete run folder per seed, `<workdir>/seed_<n>/`, each readable on its own by
`dql.load_policy` and `experiments.report` as if that seed had run alone; `<workdir>/config.json` records the
program. A single seed writes its run folder at `<workdir>` itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from dql import logs
from dql.checkpoint import Checkpoints
from dql.configs import with_added_keys


def jsonable(config) -> dict:
    return json.loads(json.dumps(config.to_dict(), default=list))


def seed_dirs(workdir: Path, first_seed: int, num_seeds: int) -> list[Path]:
    if num_seeds == 1:
        return [workdir]
    return [workdir / f"seed_{first_seed + index}" for index in range(num_seeds)]


def seed_config(config, seed: int):
    """The config of one seed of a program: what the separate run with that seed would record."""
    single = config.copy_and_resolve_references()
    with single.unlocked():
        single.seed, single.num_seeds = seed, 1
    return single


# How a run is laid out and logged rather than what it computes: a resume may change them. (The device split of a
# seed's batch does change the result; the checkpoint records it and the trainer checks it.)
RUNTIME_KEYS = ("num_devices", "parallel", "steps_per_dispatch", "tensorboard", "wandb", "wandb_project", "wandb_mode")
# What identifies the data a run trained on. A generated file's spec gave other data on another CPU before generation
# was made CPU-independent, and a D4RL name can give other data after a re-download, so the name alone does not; the
# path may move. Run folders written before content_sha256 existed are compared on the other keys.
DATA_IDENTITY_KEYS = ("name", "transitions", "episodes", "observation_dim", "action_dim", "average_return",
                      "content_sha256")


def holds_run_of(workdir: Path, config) -> bool:
    """True when `workdir` holds a run of this config, False when it is absent or empty; ValueError otherwise."""
    saved_path = workdir / "config.json"
    if saved_path.exists():
        saved, wanted = with_added_keys(json.loads(saved_path.read_text())), jsonable(config)
        changed = sorted(key for key in set(saved) | set(wanted)
                         if saved.get(key) != wanted.get(key) and key not in RUNTIME_KEYS)
        if changed:
            details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}" for key in changed)
            raise ValueError(
                f"--workdir={workdir} holds a run with a different config ({details}). Use a new --workdir, "
                "or the same flags to resume it."
            )
        return True
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"--workdir={workdir} is not empty and has no config.json: not a run folder of ours")
    return False


def check_same_data(workdir: Path, data: dict) -> None:
    """ValueError when the run in `workdir` was trained on other data than `data` (a Dataset.summary())."""
    saved_path = workdir / "dataset.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    changed = [key for key in DATA_IDENTITY_KEYS if key in saved and saved[key] != data.get(key)]
    if changed:
        details = "; ".join(f"{key}: saved {saved[key]!r}, now {data.get(key)!r}" for key in changed)
        raise ValueError(f"--workdir={workdir} holds a run trained on other data than {data.get('source')} "
                         f"({details}). Use a new --workdir, or the run's data to resume it.")


def prepare_program(workdir: Path, config, data: dict | None = None) -> list[Path]:
    """Check the program's folder and its seeds' folders (a resumed run must be of the same config and, given the
    dataset's summary `data`, of the same data), then create the new ones; nothing is written unless every folder
    passes. Returns the seeds' folders.

    In a multi-host run process 0 does this alone and every process gets its verdict, so that all raise the same
    error or all go on.
    """
    num_seeds, first = int(config.num_seeds), int(config.seed)
    dirs = seed_dirs(workdir, first, num_seeds)
    folders = [(workdir, config)]
    if num_seeds > 1:
        folders += [(directory, seed_config(config, first + index)) for index, directory in enumerate(dirs)]
    error = None
    if jax.process_index() == 0:
        try:
            new = [(folder, folder_config) for folder, folder_config in folders
                   if not holds_run_of(folder, folder_config)]
            if data is not None:
                for folder in dirs:
                    check_same_data(folder, data)
            for folder, folder_config in new:
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / "config.json", jsonable(folder_config))
        except ValueError as failure:
            error = str(failure)
    error = _process_zero_says(error)
    if error:
        raise ValueError(error)
    return dirs


def _process_zero_says(message: str | None) -> str | None:
    """Process 0's message (None for none) on every process of a multi-host run; a barrier as well."""
    if jax.process_count() == 1:
        return message
    from jax.experimental import multihost_utils

    buffer = np.zeros(4096, np.uint8)
    if message is not None:
        encoded = message.encode()[: len(buffer) - 1]
        buffer[0], buffer[1:len(encoded) + 1] = 1, np.frombuffer(encoded, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(received[1:]).rstrip(b"\0").decode() if received[0] else None


def write_json(path: Path, value: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


class SeedRun:
    """One seed's outputs. Every process of a multi-host run saves checkpoints (orbax coordinates them); only
    process 0 writes metrics, TensorBoard and W&B."""

    def __init__(self, directory: Path, seed: int, config, data_width: int):
        self.directory, self.seed = directory, seed
        self.writer = jax.process_index() == 0
        self.checkpoints = Checkpoints(directory)
        # bc_loss_sum/count: the BC loss since the last evaluation, which offline model selection ranks.
        self.meta = {"evaluations": [], "last_saved": None, "num_devices": data_width, "bc_loss_sum": 0.0,
                     "bc_loss_count": 0}
        self.metrics_csv = None
        self.tensorboard = None
        self.wandb = None
        if self.writer and config.get("tensorboard"):
            self.tensorboard = logs.TensorBoard(directory / "tensorboard")
        if self.writer and config.get("wandb"):
            self.wandb = logs.WandB(directory, seed_config(config, seed))

    def restore(self, step: int, template) -> object:
        state, self.meta = self.checkpoints.restore(step, template)
        return state

    def save(self, step: int, state) -> None:
        self.meta["last_saved"] = step
        self.checkpoints.save(step, state, self.meta)

    def record(self, row: dict, resume_step: int) -> None:
        """Append one dispatch's row to metrics.csv (cut back to `resume_step` when first opened) and the loggers."""
        if not self.writer:
            return
        if self.metrics_csv is None:
            train_keys = [key for key in row if key not in ("step", "wall_time_s", "steps_per_s")
                          and not key.startswith("eval_")]
            self.metrics_csv = logs.MetricsCSV(self.directory / "metrics.csv", train_keys, resume_step=resume_step)
        self.metrics_csv.append(row)
        scalars = {("eval/" + key[5:] if key.startswith("eval_") else f"train/{key}"): value
                   for key, value in row.items() if key not in ("step", "wall_time_s")}
        if self.tensorboard is not None:
            self.tensorboard.scalars(row["step"], scalars)
        if self.wandb is not None:
            self.wandb.scalars(row["step"], scalars)

    def close(self) -> None:
        self.checkpoints.close()
        for logger in (self.tensorboard, self.wandb):
            if logger is not None:
                logger.close()
