"""Launchers for sweeps of `python -m dql.train` runs.

`launch.sweep` reads a sweep file (experiments/sweeps/*.py) and expands it into runs, each one trainer command
line; `launch.running` starts a run's process with its log and records the runs' statuses in ROOT/sweep.json;
`launch.local` runs them on this machine (a queue over GPUs or CPU slots), `launch.slurm` submits them as a Slurm
job array through submitit. Both skip finished runs and re-launch unfinished ones, which resume from their
checkpoints. See launch/README.md.
"""
