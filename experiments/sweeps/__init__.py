"""Sweep definitions: each file names the algorithms, datasets, seeds, fixed settings and swept axes of one study.

Run one with `python -m launch.local experiments/sweeps/NAME.py --root=runs/NAME` (or `launch.slurm`); the format
is described in launch/README.md and launch/sweep.py.
"""
