"""Run a sweep on this machine: `python -m launch.local SWEEP_FILE --root=DIR [--parallel=N] [--dry_run]`.

A queue of trainer processes, one per device: one per GPU (CUDA_VISIBLE_DEVICES set per process), one at a time on a
TPU VM (a process owns all its chips), or one per two CPU cores. Each run appends to ROOT/logs/NAME.log; the sweep's
progress is one line (done/running/queued/failed, elapsed, ETA from the finished runs' durations) and its state is
ROOT/sweep.json. Running the command again skips finished runs and re-launches the others, which resume from their
checkpoints. Ctrl-C (or SIGTERM) stops the runs with SIGTERM, so that they checkpoint, and records them as
interrupted. The exit code is nonzero when a run failed or was interrupted.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from dql.logs import format_duration
from launch import running
from launch import sweep as sweeps

flags.DEFINE_integer("parallel", None, "Runs at a time (default: one per GPU, 1 on a TPU VM, else cores // 2).")
flags.DEFINE_bool("pin_cores", False, "On a CPU, give each of the --parallel slots its own share of the cores "
                  "(e.g. one core each for --parallel=2 on 2 cores), so that runs do not slow each other down by "
                  "migrating between cores.")
FLAGS = flags.FLAGS

POLL_S = 1.0
STOP_TIMEOUT_S = 600.0  # time a stopped run gets to end its dispatch and checkpoint before it is killed (1,000
# CQL updates take 250 s on a busy 2-core CPU: 120 s lost two such runs their progress)


@dataclasses.dataclass
class Devices:
    kind: str  # "gpu", "tpu" or "cpu"
    gpu_ids: list[str]


def detect_devices() -> Devices:
    """GPUs from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`, a TPU from /dev/accel*; no JAX in the launcher, so it
    neither takes a device from its runs nor pays JAX's start-up."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [i.strip() for i in visible.split(",") if i.strip() and i.strip() != "-1"]
        if ids:
            return Devices("gpu", ids)
    elif shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        count = sum(line.startswith("GPU ") for line in listing.splitlines())
        if count:
            return Devices("gpu", [str(i) for i in range(count)])
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return Devices("tpu", [])
    return Devices("cpu", [])


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups), not the host's
    except AttributeError:
        return os.cpu_count() or 1


def default_parallel(devices: Devices) -> int:
    """One run per GPU; one on a TPU VM; on CPU one per two cores: XLA's CPU backend spreads each update over
    its cores and the evaluation episodes run in Python, so a run keeps about two cores busy, and every run
    also holds its dataset in memory."""
    if devices.kind == "gpu":
        return len(devices.gpu_ids)
    if devices.kind == "tpu":
        return 1
    return max(1, cpu_cores() // 2)


def slot_envs(devices: Devices, parallel: int) -> list[dict]:
    """The environment of each slot: its GPU, round robin when there are more slots than GPUs."""
    if devices.kind != "gpu":
        return [{} for _ in range(parallel)]
    shared = parallel > len(devices.gpu_ids)
    envs = []
    for slot in range(parallel):
        env = {"CUDA_VISIBLE_DEVICES": devices.gpu_ids[slot % len(devices.gpu_ids)]}
        if shared:  # JAX takes 75% of a GPU's memory up front; runs sharing one must allocate as they go
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        envs.append(env)
    return envs


def slot_cores(parallel: int) -> list[list[int]]:
    """The cores of each slot: this process's cores split into `parallel` contiguous shares, none empty."""
    cores = sorted(os.sched_getaffinity(0))
    if parallel > len(cores):
        raise ValueError(f"--pin_cores with --parallel={parallel}: only {len(cores)} core(s) to share")
    share, extra = divmod(len(cores), parallel)
    out, start = [], 0
    for slot in range(parallel):
        size = share + (slot < extra)
        out.append(cores[start:start + size])
        start += size
    return out


@dataclasses.dataclass
class Active:
    run: sweeps.Run
    process: subprocess.Popen
    slot: int
    started: float


class LocalQueue:
    """Runs the pending runs on `len(slot_envs)` slots and keeps ROOT/sweep.json and the progress line current."""

    def __init__(self, sweep: sweeps.Sweep, runs: list[sweeps.Run], root: Path, group_seeds: bool,
                 envs: list[dict], cores: list[list[int]] | None = None):
        self.sweep, self.runs, self.root, self.group_seeds, self.envs = sweep, runs, root, group_seeds, envs
        self.cores = cores
        self.status = {run.name: {"status": "finished earlier"} for run in runs if run.finished(root)}
        self.queue = [run for run in runs if run.name not in self.status]
        for run in self.queue:
            self.status[run.name] = {"status": "queued"}
        self.active: list[Active] = []
        self.durations: list[float] = []
        self.start = time.time()
        self.stop_signal: int | None = None
        self.progress = ProgressLine()

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._write()
            while (self.queue or self.active) and self.stop_signal is None:
                self._reap()
                self._fill_slots()
                self.progress.show(self._progress_text())
                if self.active:
                    time.sleep(POLL_S)
        finally:
            if self.active or self.stop_signal is not None:  # Ctrl-C, SIGTERM, or an error in the launcher
                self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.progress.show(self._progress_text(), final=True)
            self._write()

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signum

    def _fill_slots(self) -> None:
        busy = {active.slot for active in self.active}
        for slot in range(len(self.envs)):
            if slot in busy or not self.queue or self.stop_signal is not None:
                continue
            run = self.queue.pop(0)
            process = running.start_run(run, self.root, self.envs[slot],
                                        cores=self.cores[slot] if self.cores else None)
            self.active.append(Active(run, process, slot, time.time()))
            self.status[run.name] = {"status": "running", "pid": process.pid, **self._device(slot)}
            self._write()

    def _device(self, slot: int) -> dict:
        gpu = self.envs[slot].get("CUDA_VISIBLE_DEVICES")
        return {"gpu": gpu} if gpu is not None else {}

    def _reap(self, stopped_by_us: bool = False) -> None:
        for active in list(self.active):
            returncode = active.process.poll()
            if returncode is None:
                continue
            self.active.remove(active)
            duration = time.time() - active.started
            state = running.outcome(returncode, active.run.finished(self.root), stopped_by_us)
            if state == "done":
                self.durations.append(duration)
            self.status[active.run.name] = {"status": state, "returncode": returncode,
                                            "duration_s": round(duration, 1)}
            self._write()

    def _stop_all(self) -> None:
        """SIGTERM to every run (each checkpoints and exits), then wait; SIGKILL after STOP_TIMEOUT_S."""
        self.progress.clear()
        print(f"stopping {len(self.active)} run(s) with SIGTERM (they checkpoint) ...", flush=True)
        for active in self.active:
            active.process.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT_S
        while self.active and time.time() < deadline:
            self._reap(stopped_by_us=True)
            time.sleep(0.2)
        for active in self.active:
            active.process.kill()
            active.process.wait()
        self._reap(stopped_by_us=True)
        for run in self.queue:
            self.status[run.name] = {"status": "queued (not started)"}

    def counts(self) -> dict[str, int]:
        states = [entry["status"] for entry in self.status.values()]
        return {name: states.count(name) for name in
                ("finished earlier", "done", "running", "queued", "failed", "interrupted")}

    def eta_s(self) -> float | None:
        """Remaining work at the mean duration of the runs finished so far, shared by the slots."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.time()
        remaining = len(self.queue) * mean + sum(max(0.0, mean - (now - a.started)) for a in self.active)
        return remaining / len(self.envs)

    def _progress_text(self) -> str:
        counts = self.counts()
        eta = self.eta_s()
        done = counts["done"] + counts["finished earlier"]
        return (f"[{self.sweep.name}] {done}/{len(self.runs)} done ({counts['finished earlier']} earlier), "
                f"{counts['running']} running, {len(self.queue)} queued, {counts['failed']} failed"
                + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")
                + f" | elapsed {format_duration(time.time() - self.start)}"
                + f" | ETA {format_duration(eta) if eta is not None else '?'}")

    def _write(self) -> None:
        running.write_manifest(self.root, self.sweep, self.runs, self.group_seeds, self.status,
                              launcher="local", slots=len(self.envs))


class ProgressLine:
    """One line rewritten in place on a terminal; in a log file a new line only when the counts change."""

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.last_counts = None
        self.width = 0

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            padded = text.ljust(self.width)
            self.width = len(text)
            print("\r" + padded, end="\n" if final else "", flush=True)
            return
        counts = text.split(" | ")[0]
        if counts != self.last_counts:
            self.last_counts = counts
            print(text, flush=True)

    def clear(self) -> None:
        if self.tty and self.width:
            print("\r" + " " * self.width + "\r", end="", flush=True)
            self.width = 0


def print_plan(runs: list[sweeps.Run], root: Path, group_seeds: bool, parallel: int, devices: Devices) -> None:
    finished = sum(run.finished(root) for run in runs)
    where = {"gpu": f"{len(devices.gpu_ids)} GPU(s)", "tpu": "a TPU", "cpu": f"{cpu_cores()} CPU core(s)"}
    print(f"{len(runs)} runs ({finished} finished earlier), seeds {'grouped' if group_seeds else 'one per run'}, "
          f"{parallel} at a time on {where[devices.kind]}; root {root}", flush=True)


def print_summary(queue: LocalQueue) -> list[str]:
    """The end of the sweep: counts, the logs of failed runs, the report command. Returns the failed names."""
    counts = queue.counts()
    print(f"sweep {queue.sweep.name}: {len(queue.runs)} runs: {counts['done']} done now, "
          f"{counts['finished earlier']} finished earlier, {counts['failed']} failed, "
          f"{counts['interrupted']} interrupted, {len(queue.queue)} not started; "
          f"{format_duration(time.time() - queue.start)}")
    by_state = {}
    for run in queue.runs:
        by_state.setdefault(queue.status[run.name]["status"], []).append(run)
    for run in by_state.get("failed", []):
        code = queue.status[run.name].get("returncode")
        print(f"  failed (exit code {code}): {run.log_path(queue.root)}")
    for run in by_state.get("interrupted", []):
        print(f"  interrupted (run the same command again to resume): {run.log_path(queue.root)}")
    print(f"report: {running.report_command(queue.root)}", flush=True)
    return [run.name for run in by_state.get("failed", [])]


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m launch.local SWEEP_FILE --root=DIR [--parallel=N] [--dry_run]")
    if not FLAGS.root:
        sys.exit("error: --root is required (the folder of the sweep's runs)")
    if FLAGS.parallel is not None and FLAGS.parallel < 1:
        sys.exit(f"error: --parallel={FLAGS.parallel} must be at least 1")
    root = running.absolute_root(FLAGS.root)
    devices = detect_devices()
    try:
        sweep = sweeps.load_sweep(argv[1])
        group_seeds = running.resolve_group_seeds(FLAGS.group_seeds, devices.kind != "cpu")
        runs = sweeps.expand(sweep, group_seeds)
        if not FLAGS.dry_run:
            running.check_manifest_owner(root, sweep)
    except sweeps.SweepError as error:
        sys.exit(f"error: {error}")
    parallel = FLAGS.parallel or default_parallel(devices)
    cores = None
    if FLAGS.pin_cores:
        if devices.kind != "cpu":
            sys.exit("error: --pin_cores is for runs on the CPU; this machine has " + devices.kind.upper() + "s")
        try:
            cores = slot_cores(parallel)
        except ValueError as error:
            sys.exit(f"error: {error}")
    print_plan(runs, root, group_seeds, parallel, devices)
    if FLAGS.dry_run:
        for run in runs:
            state = "finished" if run.finished(root) else "to run"
            print(f"{run.name} [{state}]\n  {shlex.join(run.command(root))}")
        return 0
    queue = LocalQueue(sweep, runs, root, group_seeds, slot_envs(devices, parallel), cores)
    queue.run()
    failed = print_summary(queue)
    if queue.stop_signal is not None:
        return 128 + queue.stop_signal
    return 1 if failed or queue.counts()["interrupted"] else 0


if __name__ == "__main__":
    app.run(main)
