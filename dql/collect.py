"""Generate the project's D4RL-style datasets, and train the behaviour policies behind them.

  python -m dql.collect --dataset=gym:Hopper-v5/medium [--num_transitions=N] [--seed=0] [--out=FILE]
  python -m dql.collect --train_policies --env=Hopper-v5 [--sac_steps=200000] [--from_run=DIR]

The first writes the same file that `--dataset=gym:...` generates on first use (into the cache unless --out is
given). The second trains SAC online (or takes a finished `--algo=sac` run folder), picks the expert (the best
evaluation) and the medium policy (the first evaluation reaching a third of the expert's return), measures the
random, medium and expert returns with sampled actions, and writes them into dql/data/policies/<EnvId>/.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

from dql import reproducible
from dql.data import gym_datasets
from dql.data.dataset import DatasetError
from dql.policy_training import replay_sac, train_policies

flags.DEFINE_string("dataset", None, "gym:<EnvId>/<level>, e.g. gym:Hopper-v5/medium.")
flags.DEFINE_integer("num_transitions", None, "Rows to collect (default 1,000,000; not for the replay tiers).")
flags.DEFINE_integer("seed", gym_datasets.DEFAULT_SEED, "Seed of the environments and the sampled actions.")
flags.DEFINE_integer("num_envs", gym_datasets.NUM_ENVS, "Environments stepped at once.")
flags.DEFINE_string("out", None, "Write here instead of the cache (never over an existing file).")
flags.DEFINE_bool("train_policies", False, "Train (or pick from --from_run) the medium and expert policies.")
flags.DEFINE_string("env", None, "With --train_policies: the env, one of " + ", ".join(gym_datasets.ENVS))
flags.DEFINE_integer("sac_steps", 200_000, "With --train_policies: SAC environment steps.")
flags.DEFINE_string("from_run", None, "With --train_policies: a finished --algo=sac run folder to pick from.")
flags.DEFINE_integer("measure_episodes", 20, "Episodes per measured return (random: 10x this).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    reproducible.enter()  # the same bits on every x86 CPU: before the first JAX computation
    try:
        if FLAGS.train_policies:
            if not FLAGS.env:
                raise DatasetError("--train_policies needs --env=ID, e.g. --env=Hopper-v5")
            print(json.dumps(train_policies(FLAGS.env, FLAGS.sac_steps, FLAGS.seed, FLAGS.from_run,
                                            FLAGS.measure_episodes), indent=2))
            return
        if not FLAGS.dataset:
            raise DatasetError("pass --dataset=gym:<EnvId>/<level> (or --train_policies --env=ID)")
        spec = FLAGS.dataset
        if FLAGS.num_transitions is not None:
            spec = f"{spec}/{FLAGS.num_transitions}"
        env_id, level, transitions = gym_datasets.parse_spec(spec)
        if level in gym_datasets.REPLAY_UNTIL and FLAGS["seed"].present:
            raise DatasetError(f"--seed does not apply to {level}: it is the replay of the SAC run (and seed) that "
                               f"made the shipped {gym_datasets.REPLAY_UNTIL[level]} policy")
        if not FLAGS.out and FLAGS.num_envs != gym_datasets.NUM_ENVS:
            raise DatasetError(f"--num_envs={FLAGS.num_envs} changes the data; the cache holds the "
                               f"{gym_datasets.NUM_ENVS}-env files that --dataset=gym:... reads, so pass --out=FILE")
        path = Path(FLAGS.out) if FLAGS.out else gym_datasets.dataset_path(env_id, level, transitions, FLAGS.seed)
        if path.exists():
            where = "--out" if FLAGS.out else "the cache"
            raise DatasetError(f"{path} ({where}) already exists; remove it first or choose another --out")
        start = time.monotonic()
        gym_datasets.generate(env_id, level, transitions, FLAGS.seed, path, FLAGS.num_envs, replay=replay_sac)
    except DatasetError as error:
        sys.exit(f"error: {error}")
    from dql.data import d4rl

    summary = d4rl.read_hdf5(path).summary()
    summary.update(path=str(path), seconds=round(time.monotonic() - start, 1))
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
