"""How much a trained Diffusion Policy loses to open-loop execution: its saved policy evaluated again with each
executed horizon (action_horizon: the actions of a chunk played before replanning), nothing retrained.

    python -m experiments.executed_horizon RUN_FOLDER [RUN_FOLDER ...] [--horizons=8,4,1] [--episodes=10]

Prints one JSON line per run and horizon (return and normalized score, mean and std over the episodes). Every
horizon sees the same env seeds and sampling keys (experiments.runs.evaluate_agent), so the differences are the
execution's alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from absl import app, flags, logging

from dql.data import load_dataset
from dql.data.evaluation_envs import env_for_dataset
from dql.policy import load_policy
from experiments.runs import evaluate_agent, find_runs

flags.DEFINE_list("horizons", ["8", "4", "1"], "Executed horizons to evaluate (each at most the run's pred_horizon "
                  "minus obs_horizon plus one).")
flags.DEFINE_integer("episodes", 10, "Evaluation episodes per horizon.")
flags.DEFINE_integer("seed", 7, "Seed of the env resets and the sampling keys.")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax's per-restore lines
    if len(argv) < 2:
        raise app.UsageError("give one or more diffusion_policy run folders (or folders above them)")
    for folder in find_runs(argv[1:]):
        config = json.loads((Path(folder) / "config.json").read_text())
        if config["algo"] != "diffusion_policy":
            continue
        dataset = load_dataset(config["dataset"])
        agent = load_policy(folder).agent
        for horizon in map(int, FLAGS.horizons):
            try:
                hp = dataclasses.replace(agent.hp, action_horizon=horizon)  # checked as at training
            except ValueError as error:
                raise app.UsageError(f"--horizons={horizon} for {folder}: {error}") from None
            result = evaluate_agent(agent.replace(hp=hp), env_for_dataset(dataset, None), FLAGS.episodes,
                                    FLAGS.seed, dataset)
            print(json.dumps({"run": Path(folder).name, "action_horizon": horizon,
                              **{key: round(float(value), 2) for key, value in result.items()
                                 if key in ("return_mean", "return_std", "score_mean", "score_std")}}), flush=True)


if __name__ == "__main__":
    app.run(main)
