"""What every update-for-update comparison with an official implementation shares (`python -m benchmarks.parity`).

A case (`benchmarks/parity/<algo>.py`) builds the reference and our agent from one set of initial weights, feeds
both the same minibatches and the reference's own random draws, and records each side as a `Run`: the parameter
groups after chosen updates, the gradients applied at them, and every update's losses. It does so four times:
both in float32, then both in float64 (the float64 reference replaying the float32 run's draws). `variant_report`
turns the four runs into the figures every case reports:

- `float64`: ours against the reference, both in float64. With rounding out of the way, what is left is a
  difference in the math.
- `float32`: ours against the reference, both in float32, as users run them.
- `float32_floor`: the reference's float32 run against its own float64 run: how far float32 rounding alone takes
  the reference. Ours in float32 is judged against the float64 reference by the same yardstick
  (`ours_float32_vs_reference_float64`).

Nothing of a reference is copied into this project: `load_file` imports its file from a checkout given by --repo.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Tree = Any


@dataclasses.dataclass(frozen=True)
class Settings:
    """One comparison's settings, from the command line."""

    repo: str  # checkout of the reference's repository
    reference: str  # which reference of the algorithm (e.g. "corl" or "paper" for CQL)
    data: dict  # float32 arrays: observations, actions, rewards, next_observations, dones (and next_actions)
    updates: int = 1000
    checkpoints: tuple[int, ...] = (1, 10)
    seed: int = 0
    overrides: tuple[str, ...] = ()  # --set=KEY=VALUE on our config
    variants: tuple[str, ...] = ()  # empty: every variant the case knows

    @property
    def compared_at(self) -> list[int]:
        """The updates after which both sides are compared: the checkpoints up to --updates, and the last."""
        return sorted({*(k for k in self.checkpoints if k <= self.updates), self.updates})

    def minibatch_indices(self, batch_size: int) -> np.ndarray:
        """[updates, batch_size] row indices, the same for every run of a comparison."""
        rows = len(self.data["rewards"])
        return np.random.default_rng(self.seed).integers(0, rows, (self.updates, batch_size))

    def minibatch(self, indices: np.ndarray, k: int, dtype=np.float32) -> dict[str, np.ndarray]:
        return {key: value[indices[k]].astype(dtype) for key, value in self.data.items()}


@dataclasses.dataclass
class Run:
    """One side's record: parameter groups after update k, the gradients applied at update k (1-based), and the
    losses of every update in order."""

    snapshots: dict[int, dict[str, Tree]] = dataclasses.field(default_factory=dict)
    gradients: dict[int, dict[str, Tree]] = dataclasses.field(default_factory=dict)
    losses: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)  # what a case keeps for later runs (draws, weights)

    def add_losses(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.losses.setdefault(key, []).append(float(value))


def to_numpy(tree: Tree) -> Tree:
    return jax.tree_util.tree_map(lambda x: np.array(x, dtype=np.float64), tree)


def max_difference(ours: Tree, theirs: Tree) -> dict:
    """Largest absolute difference over a pytree; relative to the reference's largest magnitude, and the relative
    L2 distance ||ours - theirs|| / ||theirs||."""
    a = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(ours)]
    b = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(theirs)]
    if [x.shape for x in a] != [x.shape for x in b]:
        raise RuntimeError(f"trees differ in shape ({[x.shape for x in a]} against {[x.shape for x in b]}): the "
                           "layer mapping is wrong")
    diff = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(y))) if y.size else 0.0 for y in b)
    l2 = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b)))
    norm = np.sqrt(sum(float(np.sum(y ** 2)) for y in b))
    return {"max_abs": diff, "max_rel": diff / max(scale, 1e-30), "rel_l2": float(l2 / max(norm, 1e-30))}


def differences(ours: Run, theirs: Run, compared_at: list[int]) -> dict:
    """Per compared update: every parameter group, every applied gradient, and the losses of all updates so far."""
    out = {}
    for k in compared_at:
        out[str(k)] = {
            "params": {name: max_difference(ours.snapshots[k][name], theirs.snapshots[k][name])
                       for name in theirs.snapshots[k]},
            "gradients": {name: max_difference(ours.gradients[k][name], theirs.gradients[k][name])
                          for name in theirs.gradients.get(k, {})},
            "losses": {name: max_difference(np.array(ours.losses[name][:k]), np.array(theirs.losses[name][:k]))
                       for name in theirs.losses},
        }
    return out


def worst(diff: dict, part: str = "params") -> float:
    """The largest relative L2 distance over one part (params, gradients, losses) of one compared update."""
    values = [entry["rel_l2"] for entry in diff[part].values()]
    return max(values) if values else float("nan")


def variant_report(name: str, compared_at: list[int], ours32: Run, ref32: Run, ours64: Run, ref64: Run,
                   **extra) -> dict:
    """The figures every case reports for one variant (see the module docstring)."""
    return {
        "variant": name,
        "float64": differences(ours64, ref64, compared_at),
        "float32": differences(ours32, ref32, compared_at),
        "float32_floor": differences(ref32, ref64, compared_at),
        "ours_float32_vs_reference_float64": differences(ours32, ref64, compared_at),
        "seconds": {"reference": round(ref32.seconds, 1), "ours": round(ours32.seconds, 1)},
        **extra,
    }


def as_float64(tree: Tree) -> Tree:
    """Every floating leaf (parameters, optimiser moments) in float64; call inside `jax.enable_x64(True)`."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def as_float32(tree: Tree) -> Tree:
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def git_commit(repo: str) -> str:
    """The checkout's commit, or "unknown" where it is not a git work tree."""
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stub_module(name: str, **attributes) -> types.ModuleType:
    """A stand-in module for an import a reference makes but the compared update never uses (wandb, d4rl, ...)."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__getattr__ = lambda attr: _Anything(f"{name}.{attr}")  # any other name: a harmless placeholder
    return module


class _Anything:
    """Callable, subscriptable, decoratable placeholder for names of stubbed modules."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator
        return _Anything(self._name + "()")

    def __getattr__(self, attr):
        return _Anything(f"{self._name}.{attr}")

    def __getitem__(self, key):
        return _Anything(f"{self._name}[]")

    def __mro_entries__(self, bases):
        return (object,)


def load_file(repo: str, relative: str, module_name: str, stubs: dict[str, types.ModuleType] | None = None,
              path: tuple[str, ...] = ()) -> types.ModuleType:
    """Import `repo/relative` as `module_name`, with `stubs` standing in for modules it imports but the compared
    code does not need; `path` adds folders of the checkout to sys.path (for its own package imports)."""
    file = Path(repo) / relative
    if not file.is_file():
        sys.exit(f"error: --repo={repo} does not hold {relative}: is it a checkout of the reference?")
    for name, module in (stubs or {}).items():
        sys.modules.setdefault(name, module)
    for folder in path:
        sys.path.insert(0, str(Path(repo) / folder))
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def require_torch():
    try:
        import torch
    except ImportError:
        sys.exit("error: this comparison needs PyTorch: pip install torch")
    return torch


def timed(fn: Callable, run: Run):
    """Call fn(), adding its wall time to run.seconds."""
    import time

    start = time.perf_counter()
    out = fn()
    run.seconds += time.perf_counter() - start
    return out
