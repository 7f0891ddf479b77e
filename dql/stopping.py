"""Stopping a training loop: SIGTERM (checkpoint and stop, resumable) and NaN/inf (stop, naming the step); shared
by the offline loop (dql.trainer) and the online one (dql.online)."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np


class TrainingDiverged(RuntimeError):
    """A training metric became NaN or inf; the message names the step and the last good checkpoint."""


class Preempted(RuntimeError):
    """SIGTERM arrived; the loop checkpointed at the end of its dispatch and stopped. The same command resumes."""


def first_nonfinite(metrics: dict[str, np.ndarray]) -> tuple[int, str] | None:
    """(index, key) of the first NaN/inf along the leading (step) axis of per-step metrics, or None."""
    for index in range(len(next(iter(metrics.values())))):
        for key in sorted(metrics):
            if not np.all(np.isfinite(metrics[key][index])):
                return index, key
    return None


class StopSignal:
    """SIGTERM (sent by Slurm, preemptible VMs and TPU maintenance) asks the loop to checkpoint at the end of the
    current dispatch and stop; in a multi-host run the processes agree on it, so they stop at the same step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self.received
        from jax.experimental import multihost_utils

        return bool(np.max(multihost_utils.process_allgather(np.array([self.received]))))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
