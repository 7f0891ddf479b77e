"""Published D4RL normalized scores, shown beside ours by `experiments.report`.

Locomotion -v2, from Table 1 of the IQL paper (Kostrikov et al. 2022: its BC, TD3+BC and CQL columns quote the
TD3+BC and IQL papers' runs), reproduced in Table 1 of the Diffusion-QL paper (Wang et al. 2023), whose own column
is `dql`. Transcribed by hand; the column sums agree with the totals those tables print (BC 466.7, TD3+BC 677.4,
CQL 698.5, Diffusion-QL average 88.0).
"""

from __future__ import annotations

_DATASETS = (
    "halfcheetah-medium-v2", "hopper-medium-v2", "walker2d-medium-v2",
    "halfcheetah-medium-replay-v2", "hopper-medium-replay-v2", "walker2d-medium-replay-v2",
    "halfcheetah-medium-expert-v2", "hopper-medium-expert-v2", "walker2d-medium-expert-v2",
)
_COLUMNS = {
    "bc": (42.6, 52.9, 75.3, 36.6, 18.1, 26.0, 55.2, 52.5, 107.5),
    "td3bc": (48.3, 59.3, 83.7, 44.6, 60.9, 81.8, 90.7, 98.0, 110.1),
    "cql": (44.0, 58.5, 72.5, 45.5, 95.0, 77.2, 91.6, 105.4, 108.8),
    "iql": (47.4, 66.3, 78.3, 44.2, 94.7, 73.9, 86.7, 91.5, 109.6),
    "dql": (51.1, 90.5, 87.0, 47.8, 101.3, 95.5, 96.8, 111.1, 110.1),
}

PAPER_SCORES: dict[tuple[str, str], float] = {
    (algo, dataset): score for algo, column in _COLUMNS.items() for dataset, score in zip(_DATASETS, column)
}
