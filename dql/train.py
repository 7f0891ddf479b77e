"""Command line: `python -m dql.train [--algo=dql] [--dataset=SPEC] [--workdir=DIR] [--config.KEY=VALUE ...]`.

With no flags it trains Diffusion-QL on the built-in pendulum-mixed-v0 task (generated on first use), evaluates it
in Gymnasium's Pendulum-v1 and writes config.json, metrics.csv, learning_curve.png, summary.json and orbax
checkpoints under ./runs/. Re-running with the same --workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

import experiments.configs
from experiments.configs.common import dataset_row
from dql import logs
from dql.agents import hyperparams
from dql.data import DatasetError, load_dataset, tune_rewards
from dql.data.d4rl import is_d4rl_name
from dql.envs import check_env_matches, env_for_d4rl_name, env_for_dataset
from dql.trainer import TrainingDiverged, check_loop_config, make_mesh, train

DEFAULT_DATASET = "pendulum-mixed-v0"
# Top-level flags that are shorthands for config fields; when given they override the per-dataset defaults.
LOOP_FLAGS = ("steps", "batch_size", "eval_every", "eval_episodes", "save_every")

flags.DEFINE_string("algo", "dql", "Algorithm to train.")
flags.DEFINE_string("dataset", DEFAULT_DATASET, "Built-in dataset name, D4RL name, or path to a D4RL-format .hdf5.")
flags.DEFINE_string("env", None, "Gymnasium env id to evaluate in, when it cannot be inferred from the dataset.")
flags.DEFINE_string("workdir", None, "Run folder (default: a new folder under ./runs/). An existing one resumes.")
flags.DEFINE_integer("seed", 0, "Random seed of the agent, the minibatches and the evaluation.")
flags.DEFINE_integer("steps", None, "Gradient steps (default: the config's, per dataset).")
flags.DEFINE_integer("batch_size", None, "Global minibatch size, split over devices.")
flags.DEFINE_integer("eval_every", None, "Evaluate every N steps.")
flags.DEFINE_integer("eval_episodes", None, "Episodes per evaluation; 0 trains without an environment.")
flags.DEFINE_integer("save_every", None, "Checkpoint every N steps.")
config_flags.DEFINE_config_file(
    "config",
    str(Path(experiments.configs.__file__).parent / "dql.py"),
    "Config file with get_config(); override any value with --config.KEY=VALUE.",
    lock_config=True,
)
FLAGS = flags.FLAGS


def algo_module(algo: str):
    try:
        return importlib.import_module(f"experiments.configs.{algo}")
    except ModuleNotFoundError:
        raise ValueError(f"--algo={algo!r}: no config module experiments/configs/{algo}.py") from None


def _set_path(config: ConfigDict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        config = config[name]
    config[leaf] = value


def resolve_config(algo: str, dataset: str, env: str | None, seed: int, base: ConfigDict,
                   config_given: bool, user_overrides: dict, loop_flags: dict) -> ConfigDict:
    """Base config < the dataset's row < top-level flags < --config.* overrides."""
    module = algo_module(algo)
    config = ConfigDict(base.to_dict()) if config_given else module.get_config()
    config.update(dataset_row(module.DATASET_OVERRIDES, dataset))
    for name, value in loop_flags.items():
        config[name] = value
    for dotted, value in user_overrides.items():
        _set_path(config, dotted, value)
    online = bool(config.get("online", False))  # online runs read no dataset
    config.algo, config.dataset, config.env, config.seed = algo, None if online else dataset, env, seed
    return config


def _jsonable(config: ConfigDict) -> dict:
    return json.loads(json.dumps(config.to_dict(), default=list))


def prepare_workdir(workdir: Path, config: ConfigDict) -> None:
    """Create the run folder, or check that an existing one holds a run of the same config."""
    wanted = _jsonable(config)
    saved_path = workdir / "config.json"
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
        changed = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
        if changed:
            details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}" for key in changed)
            raise ValueError(
                f"--workdir={workdir} holds a run with a different config ({details}). Use a new --workdir, "
                "or the same flags to resume it."
            )
        return
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"--workdir={workdir} is not empty and has no config.json: not a run folder of ours")
    workdir.mkdir(parents=True, exist_ok=True)
    partial = saved_path.with_name("config.json.partial")
    partial.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    os.replace(partial, saved_path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the progress output
    try:
        config = resolve_config(
            FLAGS.algo,
            FLAGS.dataset,
            FLAGS.env,
            FLAGS.seed,
            FLAGS.config,
            FLAGS["config"].present,
            config_flags.get_override_values(FLAGS["config"]),
            {name: FLAGS[name].value for name in LOOP_FLAGS if FLAGS[name].present},
        )
        if config.get("online", False):
            return _train_online(config)
        check_loop_config(config, make_mesh(int(config.num_devices)).size)
        if is_d4rl_name(FLAGS.dataset) and config.eval_episodes > 0 and not FLAGS.env:
            env_for_d4rl_name(FLAGS.dataset)  # before a download, not after it
        dataset = load_dataset(FLAGS.dataset)
        env = env_for_dataset(dataset, FLAGS.env) if config.eval_episodes > 0 else None
        if config.eval_episodes > 0:
            if env is None:
                raise DatasetError(
                    f"no Gymnasium environment is known for dataset {dataset.name}; pass --env=ID, or "
                    "--eval_episodes=0 to train without evaluation"
                )
            dataset.max_action = check_env_matches(dataset, *env)
        # Everything the run will need is checked before its folder is written.
        hyperparams(config.algo, config, dataset.max_action)
        tune_rewards(dataset.rewards, config.reward_tune, dataset.episode_returns)
        if config.tensorboard:
            logs.TensorBoard.require()
        if FLAGS.workdir:
            workdir = Path(FLAGS.workdir).expanduser()
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            workdir = Path("runs") / f"{config.algo}-{logs.file_safe(dataset.name)}-seed{config.seed}-{stamp}"
        prepare_workdir(workdir, config)
    except (DatasetError, ValueError, ImportError) as error:
        sys.exit(f"error: {error}")

    print("resolved config:\n" + json.dumps(_jsonable(config), indent=2, sort_keys=True), flush=True)
    print("dataset: " + json.dumps(dataset.summary()), flush=True)
    run_info = {**dataset.summary(), "max_action": dataset.max_action.tolist(),
                "env_kwargs": env[1] if env else {}, "eval_env_id": env[0] if env else None}
    (workdir / "dataset.json").write_text(json.dumps(run_info, indent=2) + "\n")
    try:
        train(config, dataset, workdir, env if config.eval_episodes > 0 else None)
    except (TrainingDiverged, DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")


def _train_online(config: ConfigDict) -> None:
    """--algo=sac: learn by interacting with --env (no dataset); resuming is not supported, a run starts anew."""
    from dql.online import check_online_config, check_online_env, train_online

    try:
        if not FLAGS.env:
            raise ValueError(f"--algo={config.algo} trains online and needs --env=ID (e.g. --env=Hopper-v5)")
        if FLAGS["dataset"].present:
            raise ValueError(f"--algo={config.algo} trains online; --dataset does not apply")
        check_online_config(config)
        hyperparams(config.algo, config, [1.0])
        check_online_env(FLAGS.env)
        workdir = Path(FLAGS.workdir or Path("runs") / f"{config.algo}-{FLAGS.env}-seed{config.seed}-"
                       f"{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
        if workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"--workdir={workdir} is not empty; online runs do not resume, use a new folder")
        prepare_workdir(workdir, config)
    except (DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")
    print("resolved config:\n" + json.dumps(_jsonable(config), indent=2, sort_keys=True), flush=True)
    try:
        train_online(config, FLAGS.env, workdir)
    except (TrainingDiverged, DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
