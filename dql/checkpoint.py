"""Orbax checkpoints of a run: the agent and the data-sampling key as arrays, the loop's bookkeeping as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Step-numbered checkpoints under `<workdir>/checkpoints`; orbax writes each one atomically."""

    def __init__(self, workdir: str | Path, max_to_keep: int = 2, read_only: bool = False):
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            # Saving synchronously: the next compiled call donates the agent's buffers, so they must be on disk
            # (or copied) before it runs, and checkpoints here are small.
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def delete_after(self, step: int) -> None:
        """Drop checkpoints newer than `step` (resuming from `step` rewrites them)."""
        for later in self.all_steps():
            if later > step:
                self._manager.delete(later)

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """Restore into the structure, dtypes and shardings of `template`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored.state, restored.meta

    def close(self) -> None:
        self._manager.close()
