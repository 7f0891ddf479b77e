"""rliable's interval estimates over score matrices ([runs, tasks] per algorithm): the aggregates, the probability of
improvement and performance profiles, each with 95% stratified-bootstrap intervals and a seeded bootstrap.

rliable is an optional dependency (`pip install 'dql[report]'`), imported only where it is used.
"""

from __future__ import annotations

import contextlib

import numpy as np
from absl import flags

# The command-line tools built on these estimates (experiments.report, experiments.parity_curves) share these flags.
flags.DEFINE_integer("bootstrap", 2000, "Bootstrap resamples for the confidence intervals. The probability of "
                     "improvement is the slow part: ~6 ms per resample per pair of algorithms on 9 datasets.")
flags.DEFINE_integer("seed", 0, "Seed of the bootstrap's random draws.")

AGGREGATES = ("IQM", "mean", "median", "optimality gap")
GAP_THRESHOLD = 100.0  # normalized scores put the expert at 100; rliable's default gamma=1 assumes a 0-1 scale


def require_rliable():
    """rliable's `library` and `metrics` modules, or a one-line exit saying how to install them."""
    try:
        from rliable import library, metrics
    except ImportError:
        raise SystemExit("error: rliable is not installed (experiments.report and experiments.parity_curves use it): "
                         "pip install 'dql[report]'") from None
    return library, metrics


@contextlib.contextmanager
def _bootstrap_seed(seed: int):
    """Seed numpy's global generator for one rliable call, restoring the caller's state afterwards.

    rliable 1.2 draws its resampling indices from `np.random` directly; its `random_state` argument does not reach
    those draws (and arch warns that it is deprecated), so the global generator is the only handle on them.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate_estimates(matrices: dict[str, np.ndarray], reps: int, seed: int = 0) -> dict[str, dict]:
    """Per algorithm: {aggregate name: (point, low, high)} for AGGREGATES, 95% stratified-bootstrap intervals."""
    library, metrics = require_rliable()

    def aggregates(scores):
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                         metrics.aggregate_median(scores),
                         metrics.aggregate_optimality_gap(scores, gamma=GAP_THRESHOLD)])

    with _bootstrap_seed(seed):
        points, intervals = library.get_interval_estimates(matrices, aggregates, reps=reps)
    return {algo: {name: (float(points[algo][i]), float(intervals[algo][0, i]), float(intervals[algo][1, i]))
                   for i, name in enumerate(AGGREGATES)}
            for algo in matrices}


def improvement_estimates(matrices: dict[str, np.ndarray], pairs: list[tuple[str, str]], reps: int,
                          seed: int = 0) -> dict[tuple[str, str], tuple[float, float, float]]:
    """P(X > Y) for each pair (X, Y): per task the chance a run of X beats one of Y (ties count half), averaged
    over tasks; point and 95% interval, the two algorithms' runs resampled independently within each task."""
    library, metrics = require_rliable()
    # A tuple of arrays makes rliable bootstrap each algorithm's runs separately (their counts may differ).
    score_pairs = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in pairs}
    with _bootstrap_seed(seed):
        points, intervals = library.get_interval_estimates(score_pairs, metrics.probability_of_improvement, reps=reps)
    return {(x, y): (float(points[f"{x},{y}"]), *map(float, np.ravel(intervals[f"{x},{y}"])))
            for x, y in pairs}


def performance_profiles(matrices: dict[str, np.ndarray], taus: np.ndarray, reps: int, seed: int = 0):
    """Score distributions: per algorithm the fraction of its runs (all tasks) scoring above each tau, with 95%
    intervals ([2, len(taus)])."""
    library, _ = require_rliable()
    with _bootstrap_seed(seed):
        return library.create_performance_profile(matrices, taus, reps=reps)
