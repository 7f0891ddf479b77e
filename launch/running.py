"""Running runs and recording them, for both launchers: their shared flags, a run's process and log, its outcome,
and the sweep's manifest ROOT/sweep.json.

launch.sweep says what a run is (its name, folders and command line); this module starts that command with its
output appended to ROOT/logs/NAME.log, classifies how the process ended (done, interrupted or failed) and writes
the runs with their statuses to the manifest, which also marks a root as the folder of one sweep.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from launch.sweep import Run, Sweep, SweepError

GROUP_SEEDS_CHOICES = ("auto", "true", "false")
MANIFEST = "sweep.json"
# A run stopped by a signal: killed by it (-N), or the trainer's own exit after checkpointing (128 + N).
INTERRUPTED_CODES = {-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT}

# The flags both launchers take (defined once here, so that both modules import into one process).
flags.DEFINE_string("root", None, "Folder of the sweep: a folder per run, logs/, sweep.json.")
flags.DEFINE_enum("group_seeds", "auto", GROUP_SEEDS_CHOICES,
                  "One multi-seed program (--num_seeds) per configuration; auto: where the target has an "
                  "accelerator (a GPU or TPU here; --gpus_per_job > 0 on Slurm).")
flags.DEFINE_bool("dry_run", False, "Print the runs and their commands; start or submit nothing.")


def absolute_root(root: str) -> Path:
    """Runs get absolute workdirs, so their commands work from any directory (and on a cluster's nodes)."""
    return Path(os.path.abspath(os.path.expanduser(root)))


def resolve_group_seeds(choice: str, has_accelerator: bool) -> bool:
    """--group_seeds: auto groups where one program has an accelerator to fill; true/false force it."""
    if choice not in GROUP_SEEDS_CHOICES:
        raise SweepError(f"--group_seeds={choice!r}: expected one of {', '.join(GROUP_SEEDS_CHOICES)}")
    return has_accelerator if choice == "auto" else choice == "true"


def start_run(run: Run, root: Path, env: dict | None = None, ignore_signals: tuple = (),
              cores: list[int] | None = None) -> subprocess.Popen:
    """Start the run's command with its output appended to ROOT/logs/NAME.log (a resumed run continues it), on
    `cores` only when given.

    The child gets a session of its own so that a Ctrl-C in the terminal reaches only the launcher, which then
    stops its runs with SIGTERM (the trainer checkpoints on SIGTERM, not on a KeyboardInterrupt).
    """
    log_path = run.log_path(root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = run.command(root)
    with open(log_path, "a") as log:
        log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
        log.flush()
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # Slurm signals every process of a job step; the submitit job stops the trainer itself (SIGTERM), so the
        # trainer must not die of the signal (USR2) that warns of the time limit. Ignored signals survive exec.
        def preexec():
            for sig in ignore_signals:
                signal.signal(sig, signal.SIG_IGN)
            if cores:
                os.sched_setaffinity(0, cores)

        return subprocess.Popen([sys.executable, *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child_env, start_new_session=True,
                                preexec_fn=preexec)


def outcome(returncode: int, finished: bool, stopped_by_us: bool = False) -> str:
    """done, interrupted or failed: the status of a run whose process has exited."""
    if returncode == 0 and finished:
        return "done"
    if stopped_by_us or returncode in INTERRUPTED_CODES:
        return "interrupted"
    return "failed"


def check_manifest_owner(root: Path, sweep: Sweep) -> None:
    """A root holds one sweep: a manifest of another sweep file is not overwritten."""
    manifest = Path(root) / MANIFEST
    if manifest.exists():
        try:
            owner = json.loads(manifest.read_text()).get("sweep")
        except (OSError, ValueError) as error:
            raise SweepError(f"{manifest}: unreadable sweep manifest ({error}); move it away") from None
        if owner != sweep.name:
            raise SweepError(f"--root={root} holds sweep {owner!r} ({manifest}), not {sweep.name!r}; "
                             "use another --root")


def write_manifest(root: Path, sweep: Sweep, runs: list[Run], group_seeds: bool, status: dict[str, dict],
                   **extra) -> None:
    """ROOT/sweep.json: the expanded runs with their commands, folders, logs and statuses (temporary, renamed)."""
    manifest = {
        "sweep": sweep.name,
        "sweep_file": str(sweep.path.resolve()),
        "group_seeds": group_seeds,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
        "runs": [{"name": run.name, "algo": run.algo, "dataset": run.dataset, "seeds": list(run.seeds),
                  "command": shlex.join(run.command(root)), "workdir": str(run.workdir(root)),
                  "log": str(run.log_path(root)), **status.get(run.name, {})} for run in runs],
    }
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, path)


def report_command(root: Path) -> str:
    return f"python -m experiments.report {shlex.quote(str(root))}"
