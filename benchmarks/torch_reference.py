"""Training throughput of the paper's PyTorch Diffusion-QL on the same sizes, for comparison; prints one JSON line.

    git clone https://github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL /tmp/dql-torch
    pip install torch
    python -m benchmarks.torch_reference --repo=/tmp/dql-torch --obs_dim=17 --act_dim=6

It imports the reference `Diffusion_QL` agent from that checkout (nothing of it is copied here) and times its
`train()` on random transitions with the settings of our dql config (the paper's: T = 5, vp schedule, batch 256),
--set=KEY=VALUE overriding them as for benchmarks.train_step.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from benchmarks import reference
from benchmarks.common import config_for, random_transitions

flags.DEFINE_string("repo", None, "Path to a checkout of Zhendong-Wang/Diffusion-Policies-for-Offline-RL.")
flags.DEFINE_integer("batch_size", 256, "Minibatch size.")
flags.DEFINE_integer("steps", 200, "Timed gradient steps (after 20 warm-up steps).")
flags.mark_flag_as_required("repo")
FLAGS = flags.FLAGS


class _Sampler:
    """The interface the reference agent's train() expects: sample(batch) -> (s, a, s', r, not_done)."""

    def __init__(self, torch, arrays):
        self.torch = torch
        self.columns = [torch.from_numpy(arrays[k]) for k in ("observations", "actions", "next_observations")]
        self.rewards = torch.from_numpy(arrays["rewards"])[:, None]
        self.not_done = 1.0 - torch.from_numpy(arrays["dones"])[:, None]

    def sample(self, batch_size):
        index = self.torch.randint(0, len(self.rewards), (batch_size,))
        s, a, s2 = (c[index] for c in self.columns)
        return s, a, s2, self.rewards[index], self.not_done[index]


def main(argv):
    del argv
    torch, ql_diffusion = reference.load_reference(FLAGS.repo)
    config = config_for("dql", FLAGS.set)
    agent = reference.reference_agent(ql_diffusion, config, FLAGS.obs_dim, FLAGS.act_dim)
    sampler = _Sampler(torch, random_transitions(100_000, FLAGS.obs_dim, FLAGS.act_dim))
    agent.train(sampler, 20, batch_size=FLAGS.batch_size)
    start = time.perf_counter()
    agent.train(sampler, FLAGS.steps, batch_size=FLAGS.batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "torch_reference_train_step",
        "obs_dim": FLAGS.obs_dim,
        "act_dim": FLAGS.act_dim,
        "batch_size": FLAGS.batch_size,
        "max_q_backup": config.max_q_backup,
        "steps_per_s": round(FLAGS.steps / seconds, 2),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    app.run(main)
