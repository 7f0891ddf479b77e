"""A process whose JAX results on the CPU are the same bits on every x86-64 CPU with AVX2 and FMA: the process the
project's datasets are generated in (SAC's training for the shipped policies, its replays, the policy rollouts).

XLA's CPU backend hands parts of a program to libraries that pick their kernels, and how they block a sum, by the
CPU they find at run time: YNNPACK (dots, reductions and elementwise fusions) and oneDNN (the matrix products
under Eigen's contractions) take AVX-512 kernels on a Zen 4 or a Xeon and AVX2 ones on a Zen 3, and YNNPACK sizes
its blocks by the L2 cache. The sums then round differently, and a seeded SAC run, which amplifies every rounding,
ends elsewhere. Here those fusions are off (XLA emits the code itself, for at most AVX2) and oneDNN is held to
AVX2. What it costs and how it was checked: docs/datasets.md.

The settings must be in the environment before the process's first JAX computation: `subprocess_env()` gives them
to a child process (`dql.data.gym_datasets` generates a missing file in one), `enter()` sets them in a process
that has not computed yet (`python -m dql.collect`).
"""

from __future__ import annotations

import os

XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_experimental_xnn_fusion_type=",
             "--xla_cpu_max_isa=AVX2", "--xla_backend_optimization_level=3")
ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def subprocess_env(base: dict | None = None) -> dict:
    """`base` (default os.environ) with the settings added; XLA flags set earlier are kept, ours come last and win."""
    env = dict(os.environ if base is None else base)
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if flag not in XLA_FLAGS]
    env["XLA_FLAGS"] = " ".join(flags + list(XLA_FLAGS))
    env.update(ENV)
    return env


def active(env: dict | None = None) -> bool:
    """Whether `env` (default os.environ) holds the settings, ours last among the XLA flags."""
    env = os.environ if env is None else env
    flags = env.get("XLA_FLAGS", "").split()
    return flags[-len(XLA_FLAGS):] == list(XLA_FLAGS) and all(env.get(k) == v for k, v in ENV.items())


def enter() -> None:
    """Put the settings into this process's environment; RuntimeError if JAX has computed already (too late)."""
    if active():
        return
    from jax._src import xla_bridge

    if xla_bridge._backends:  # noqa: SLF001  (no public way to ask whether a backend exists yet)
        raise RuntimeError("the CPU-independent settings must be set before the first JAX computation")
    os.environ.update(subprocess_env())
