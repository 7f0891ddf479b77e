"""Submit a sweep to Slurm as one job array through submitit (`pip install 'dql[slurm]'`):

    python -m launch.slurm SWEEP_FILE --root=DIR --partition=P --gpus_per_job=1 --timeout_min=240
        [--cpus_per_task=8] [--mem_gb=64] [--array_parallelism=64] [--executor=slurm|local] [--wait] [--dry_run]

Every job runs one run's trainer command in a subprocess, exactly the command `launch.local` runs (both come from
launch.sweep), with its output appended to ROOT/logs/NAME.log; submitit keeps its own job logs in ROOT/submitit/.
Near the time limit, or on preemption, submitit calls the job's `checkpoint`: it stops the trainer with SIGTERM
(the trainer saves a checkpoint and exits) and requeues the same job, which resumes from that checkpoint.
Finished runs are not submitted, so submitting the sweep again runs only what is left. `--executor=local` runs
the jobs on this machine through submitit's LocalExecutor, the same code path (the tests use it).
"""

from __future__ import annotations

import importlib
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from launch import running
from launch import sweep as sweeps

try:  # submitit is an optional extra; main() says how to install it
    from submitit.helpers import Checkpointable
except ImportError:
    Checkpointable = object

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags, defined when it runs rather than at import: the jobs import this module by name (to
    unpickle TrainRun) while it may also be running as __main__, and absl refuses a flag defined twice."""
    flags.DEFINE_string("partition", None, "Slurm partition (required with --executor=slurm).")
    flags.DEFINE_integer("gpus_per_job", 1, "GPUs per job; 0 for CPU jobs.")
    flags.DEFINE_integer("cpus_per_task", None, "CPU cores per job (Slurm's default when unset).")
    flags.DEFINE_float("mem_gb", None, "Memory per job in GB (Slurm's default when unset).")
    flags.DEFINE_integer("timeout_min", None,
                         "Time limit of one job in minutes; a run that needs more is requeued.")
    flags.DEFINE_integer("array_parallelism", 64, "Jobs of the array running at a time.")
    flags.DEFINE_integer("max_requeues", 10, "How often a job may be requeued after reaching its time limit.")
    flags.DEFINE_enum("executor", "slurm", ("slurm", "local"), "slurm, or local: submitit's LocalExecutor.")
    flags.DEFINE_bool("wait", False, "Wait for the jobs and print the summary (exit code nonzero if one failed).")


STOP_TIMEOUT_S = 60.0  # under submitit's 90 s between the time-limit signal and the kill
POLL_S = 1.0


def job_signal() -> signal.Signals:
    """The signal submitit's job handles (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    from submitit import JobEnvironment

    return getattr(signal, "SIG" + JobEnvironment.USR_SIG)


class TrainRun(Checkpointable):
    """A submitit job: one run's trainer command in a subprocess. Requeued with its own arguments on timeout or
    preemption; the trainer's checkpoints carry the progress, so the callable carries no state of its own."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._stopping = False

    def __call__(self, run: sweeps.Run, root: str) -> dict:
        if run.finished(Path(root)):  # e.g. a requeued job whose run finished just before the signal
            return {"name": run.name, "status": "done", "returncode": 0}
        self._stopping = False
        self._process = running.start_run(run, Path(root), ignore_signals=(job_signal(),))
        started = time.time()
        # poll(), not wait(): checkpoint() runs in a signal handler on this thread and must be able to reap.
        while (returncode := self._process.poll()) is None:
            time.sleep(POLL_S)
        state = running.outcome(returncode, run.finished(Path(root)), self._stopping)
        if state != "done":
            raise RuntimeError(f"{run.name}: {state} (exit code {returncode}); log: {run.log_path(Path(root))}")
        return {"name": run.name, "status": state, "returncode": returncode,
                "duration_s": round(time.time() - started, 1)}

    def checkpoint(self, run: sweeps.Run, root: str):
        """Stop the trainer (it checkpoints on SIGTERM) and resubmit the same run, which resumes."""
        from submitit.helpers import DelayedSubmission

        process = self._process
        if process is not None and process.poll() is None:
            self._stopping = True
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        return DelayedSubmission(TrainRun(), run, root)

    def __getstate__(self):
        return {}  # a Popen does not pickle, and a resubmitted job starts its own process

    def __setstate__(self, state):
        self.__init__()


def check_job_flags() -> None:
    if FLAGS.executor == "slurm" and not FLAGS.partition:
        sys.exit("error: --partition is required with --executor=slurm")
    if FLAGS.timeout_min is None or FLAGS.timeout_min <= 0:
        sys.exit(f"error: --timeout_min must be a positive number of minutes, got {FLAGS.timeout_min}")
    if FLAGS.gpus_per_job < 0:
        sys.exit(f"error: --gpus_per_job must be >= 0, got {FLAGS.gpus_per_job}")


def make_executor(root: Path, sweep_name: str):
    """submitit's executor for --executor, with the job parameters from the flags."""
    try:
        import submitit
    except ImportError:
        sys.exit("error: launch.slurm needs submitit: pip install 'dql[slurm]'")
    executor = submitit.AutoExecutor(folder=root / "submitit" / "%j", cluster=FLAGS.executor,
                                     slurm_max_num_timeout=FLAGS.max_requeues)
    parameters = dict(name=f"dql-{sweep_name}", timeout_min=FLAGS.timeout_min, gpus_per_node=FLAGS.gpus_per_job,
                      tasks_per_node=1, nodes=1, cpus_per_task=FLAGS.cpus_per_task, mem_gb=FLAGS.mem_gb,
                      stderr_to_stdout=True)
    if FLAGS.executor == "slurm":
        parameters.update(slurm_partition=FLAGS.partition, slurm_array_parallelism=FLAGS.array_parallelism)
    executor.update_parameters(**{key: value for key, value in parameters.items() if value is not None})
    return executor


def submit(executor, runs: list[sweeps.Run], root: Path) -> list:
    """One job array over the runs; the callable comes from `launch.slurm` by name, so that it unpickles in the
    job even when this file runs as __main__."""
    job_class = importlib.import_module("launch.slurm").TrainRun
    return executor.map_array(job_class(), runs, [str(root)] * len(runs))


def wait_for(jobs: list, runs: list[sweeps.Run]) -> dict[str, dict]:
    """Each job's outcome: its result, or the error submitit re-raises from it."""
    status = {}
    for job, run in zip(jobs, runs):
        try:
            status[run.name] = {"status": "done", "job_id": job.job_id, **job.result()}
        except Exception as error:  # submitit re-raises the job's error (or its own, e.g. a killed job)
            state = "interrupted" if "interrupted" in str(error) else "failed"
            status[run.name] = {"status": state, "job_id": job.job_id, "error": str(error).strip()[-500:]}
    return status


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m launch.slurm SWEEP_FILE --root=DIR --partition=P --timeout_min=N")
    if not FLAGS.root:
        sys.exit("error: --root is required (the folder of the sweep's runs)")
    if not FLAGS.dry_run:
        check_job_flags()
    root = running.absolute_root(FLAGS.root)
    try:
        sweep = sweeps.load_sweep(argv[1])
        group_seeds = running.resolve_group_seeds(FLAGS.group_seeds, FLAGS.gpus_per_job > 0)
        runs = sweeps.expand(sweep, group_seeds)
        if not FLAGS.dry_run:
            running.check_manifest_owner(root, sweep)
    except sweeps.SweepError as error:
        sys.exit(f"error: {error}")
    pending = [run for run in runs if not run.finished(root)]
    print(f"{len(runs)} runs ({len(runs) - len(pending)} finished earlier), seeds "
          f"{'grouped' if group_seeds else 'one per run'}; {len(pending)} to submit; root {root}", flush=True)
    if FLAGS.dry_run:
        for run in runs:
            print(f"{run.name} [{'finished' if run.finished(root) else 'to run'}]\n  {shlex.join(run.command(root))}")
        return 0
    status = {run.name: {"status": "finished earlier"} for run in runs if run.finished(root)}
    if not pending:
        print(f"nothing to submit.\nreport: {running.report_command(root)}")
        running.write_manifest(root, sweep, runs, group_seeds, status, launcher=f"submitit-{FLAGS.executor}")
        return 0
    jobs = submit(make_executor(root, sweep.name), pending, root)
    status.update({run.name: {"status": "submitted", "job_id": job.job_id} for job, run in zip(jobs, pending)})
    running.write_manifest(root, sweep, runs, group_seeds, status, launcher=f"submitit-{FLAGS.executor}")
    print(f"submitted {len(jobs)} job(s): {jobs[0].job_id}{' ...' if len(jobs) > 1 else ''}; job logs in "
          f"{root / 'submitit'}, run logs in {root / 'logs'}")
    if not FLAGS.wait:
        print(f"when they are done: {running.report_command(root)}")
        return 0
    status.update(wait_for(jobs, pending))
    running.write_manifest(root, sweep, runs, group_seeds, status, launcher=f"submitit-{FLAGS.executor}")
    failed = [run for run in pending if status[run.name]["status"] != "done"]
    print(f"sweep {sweep.name}: {len(pending) - len(failed)} of {len(pending)} submitted runs done")
    for run in failed:
        print(f"  {status[run.name]['status']} (job {status[run.name]['job_id']}): {run.log_path(root)}")
    print(f"report: {running.report_command(root)}")
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
