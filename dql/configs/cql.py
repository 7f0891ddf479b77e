"""CQL(H) with a SAC backbone (Kumar et al. 2020): 3 x 256 networks, actor lr 1e-4, critic lr 3e-4, automatic
entropy tuning, 10 sampled actions with importance sampling in the log-sum-exp.

Locomotion: fixed conservative weight 5. AntMaze: the Lagrange version (weight tuned to hold the gap at the
threshold), rewards (r - 0.5) * 4 as in the CQL code.

The Lagrange form. Ours penalises alpha' * w * (gap - target_action_gap); the paper's code
(aviralkumar2907/CQL, d4rl/rlkit/torch/sac/cql.py lines 272-273) alpha' * (w * gap - lagrange_thresh), so
ours equals it with target_action_gap = lagrange_thresh / w. Its README runs AntMaze with lagrange_thresh 5.0 and
min_q_weight 5.0 (`examples/cql_antmaze_new.py ... --lagrange_thresh=5.0 --min_q_wight=5.0`; the flag is
misspelt there, the script's own defaults are 1.0 and 5.0), hence our AntMaze rows: w 5, target_action_gap 1.0.
CORL's AntMaze rows (configs/offline/cql/antmaze/*_v2.yaml) differ: cql_alpha 5 with cql_target_action_gap 0.8
in our form, i.e. the paper's lagrange_thresh 4 (JaxCQL's suggested 0.2: thresh 1); besides that, max-target
backup, the gap clipped below at -200, rewards (r - 0.5) * 10, five hidden layers in its first critic, log alpha'
starting at 1 and a learned log-std scale and offset (below).

Options that reproduce each reference exactly (benchmarks/parity/cql.py sets them; the defaults are ours):
- log_alpha_prime_init: the paper's code starts log alpha' at 0 (ours), CORL and JaxCQL at 1.
- tanh_log_density_epsilon: the paper's code (rlkit's TanhNormal) takes log(1 - a^2 + 1e-6) for the tanh's
  Jacobian; 0 (ours) takes the exact log(1 - tanh(u)^2), as CORL (torch's TanhTransform) does.
- temperature_first: the paper's code steps the entropy temperature first and the actor with the new one; ours
  and CORL's step the actor with the current one.
- bc_steps: the actor clones the data's actions for this many updates (the paper's scripts:
  policy_eval_start=40000, i.e. 39,999 updates, "not much difference in performance" per its comment; CORL 0).
- log_std_affine, log_std_min: CORL's policy scales and shifts its log-std by learned scalars (1 and -1 at
  first) and clips it to [-20, 2]; ours and the paper's clip the network's log-std to [-5, 2].
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import PENDULUM_ROW, loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("cql", steps=1_000_000, eval_every=5_000)
    config.cql_weight = 5.0
    config.num_samples = 10
    config.cql_temperature = 1.0
    config.lagrange = False
    config.target_action_gap = 1.0  # ours: alpha' w (gap - this); the paper's lagrange_thresh = w * this
    config.lr = 1e-4
    config.critic_lr = 3e-4
    config.alpha_lr = 1e-4
    config.discount = 0.99
    config.tau = 0.005
    config.hidden_dims = (256, 256, 256)
    config.activation = "relu"
    config.log_alpha_prime_init = 0.0
    config.tanh_log_density_epsilon = 0.0
    config.temperature_first = False
    config.bc_steps = 0
    config.log_std_affine = False
    config.log_std_min = -5.0
    return config


def _domain_rows() -> dict[str, dict]:
    # The paper's README: lagrange_thresh 5 at min_q_weight 5, i.e. our target_action_gap 5 / 5 = 1.
    antmaze = dict(lagrange=True, cql_weight=5.0, target_action_gap=1.0, reward_tune="cql_antmaze",
                   eval_episodes=100)
    names = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
    return {f"antmaze-{name}-{v}": dict(antmaze) for name in names for v in ("v0", "v2")}


DATASET_OVERRIDES: dict[str, dict] = {**_domain_rows(), "pendulum-mixed-v0": dict(PENDULUM_ROW)}
