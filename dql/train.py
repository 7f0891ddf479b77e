"""Command line: `python -m dql.train [--algo=dql] [--dataset=SPEC] [--workdir=DIR] [--config.KEY=VALUE ...]`.

With no flags it trains Diffusion-QL on the built-in pendulum-mixed-v0 task (generated on first use), evaluates it
in Gymnasium's Pendulum-v1 and writes config.json, metrics.csv, learning_curve.png, summary.json and orbax
checkpoints under ./runs/. Re-running with the same --workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from absl import app, flags, logging

from dql import configs, logs, run_folder
from dql.agents import hyperparams
from dql.data import DatasetError, is_dataset_name, load_dataset, tune_rewards
from dql.data.d4rl import is_d4rl_name
from dql.data.evaluation_envs import (
    check_env_matches,
    env_for_d4rl_name,
    env_for_dataset,
)
from dql.trainer import (
    Preempted,
    TrainingDiverged,
    check_loop_config,
    layout_for,
    train,
)

DEFAULT_DATASET = "pendulum-mixed-v0"
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process ended by it: not finished, resumable

flags.DEFINE_string("algo", "dql", f"Algorithm to train, one of {', '.join(configs.ALGOS)}; its config "
                    "(dql/configs/ALGO.py) is the base of --config.")
flags.DEFINE_string("dataset", DEFAULT_DATASET, "Built-in dataset name, D4RL name, minari:ID, gym:Env/level, or "
                    "path to a D4RL-format .hdf5.")
flags.DEFINE_string("env", None, "Gymnasium env id to evaluate in, when it cannot be inferred from the dataset.")
flags.DEFINE_string("workdir", None, "Run folder (default: a new folder under ./runs/). An existing one resumes.")
flags.DEFINE_string("config", None, "Config file with get_config() (default: dql/configs/<algo>.py, the --algo's); "
                    "override any value with --config.KEY=VALUE.")
flags.DEFINE_integer("seed", 0, "Random seed of the agent, the minibatches and the evaluation.")
# Top-level shorthands for config fields (one list, shared with launch.sweep); when given they override the
# dataset's row.
for _name, (_type, _help) in configs.LOOP_FLAGS.items():
    (flags.DEFINE_integer if _type is int else flags.DEFINE_string)(_name, None, _help)
flags.DEFINE_bool("multihost", False, "Join a multi-process run with jax.distributed.initialize() (auto-detected on "
                  "TPU VMs and Slurm) and train data-parallel over all processes' devices.")
flags.DEFINE_string("coordinator", None, "With --multihost: HOST:PORT of process 0, where it cannot be detected.")
flags.DEFINE_integer("num_processes", None, "With --multihost: number of processes, where it cannot be detected.")
flags.DEFINE_integer("process_id", None, "With --multihost: this process's index, where it cannot be detected.")
FLAGS = flags.FLAGS


def split_config_args(argv: list[str]) -> tuple[list[str], str | None, dict[str, str]]:
    """(argv without --config=FILE and the --config.KEY=VALUE overrides, the file, the overrides as text).

    absl parses the rest; the overrides are read once, as the types of the fields they set, by
    dql.configs.resolve, after the algorithm (and so its keys) is known."""
    rest, config_file, overrides = [], None, {}
    args = iter(argv)
    for arg in args:
        if arg == "--config" or arg.startswith("--config="):
            config_file = arg.split("=", 1)[1] if "=" in arg else next(args, None)
        elif arg.startswith("--config."):
            key, has_value, value = arg[len("--config."):].partition("=")
            overrides[key] = value if has_value else next(args, "")
        else:
            rest.append(arg)
    return rest, config_file, overrides


def load_config_file(path: str):
    """get_config() of a config file, as --config=FILE[:ARG] reads it."""
    path, _, arg = path.partition(":")
    if not Path(path).is_file():
        raise ValueError(f"--config={path}: no such file")
    spec = importlib.util.spec_from_file_location("dql_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={path}: the file defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def resolve_config(config_file: str | None, overrides: dict[str, str]):
    """The run's config, resolved once: the algorithm's base (or --config=FILE) < the dataset's row (or --row's) <
    the top-level flags < --config.KEY=VALUE (dql.configs.resolve, which checks every key)."""
    algo = FLAGS.algo
    base = load_config_file(config_file) if config_file else None
    if base is not None and base.get("algo", algo) != algo:
        if FLAGS["algo"].present:
            raise ValueError(f"--config={config_file} is a config of algo {base.algo!r}, but --algo={algo}")
        algo = base.algo
    algo_base = configs.get_config(algo)
    # Online runs read no dataset, except the online imitation learners (GAIL), whose demonstrations it holds.
    reads_dataset = not algo_base.get("online", False) or algo_base.get("demonstrations", False)
    loop_flags = {name: FLAGS[name].value for name in configs.LOOP_FLAGS if FLAGS[name].present}
    config = configs.resolve(algo, FLAGS.dataset if reads_dataset else None, base, loop_flags, overrides)
    config.algo, config.dataset = algo, FLAGS.dataset if reads_dataset else None
    config.env, config.seed = FLAGS.env, FLAGS.seed
    return config


def init_distributed() -> None:
    """jax.distributed.initialize() before any other JAX call; its arguments are detected on TPU VMs and Slurm."""
    import jax

    # CPU processes exchange their collectives through gloo (GPUs and TPUs have their own transports).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
    print(f"[multihost] process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local, "
          f"{jax.device_count()} global device(s)", flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the progress output
    if FLAGS.multihost:
        init_distributed()
    try:
        config = resolve_config(*_CONFIG_ARGS)
        if config.get("online", False) and config.get("demonstrations", False):
            return _train_imitation(config)
        if config.get("online", False):
            return _train_online(config)
        check_loop_config(config)
        if config.row is not None and not is_dataset_name(config.row):
            raise ValueError(f"--row={config.row!r} names no dataset (expected e.g. hopper-medium-replay-v2)")
        layout_for(config)  # devices, seeds and batch fit together
        hyperparams(config.algo, config, [1.0])  # before a download or a dataset generation, not after it
        if FLAGS.multihost and not FLAGS.workdir:
            raise ValueError("--multihost needs --workdir (a folder every process sees): the default name holds "
                             "each process's clock")
        dataset, env = _load_data(config)
        # Everything the run will need is checked before its folder is written.
        hyperparams(config.algo, config, dataset.max_action)
        tune_rewards(dataset.rewards, config.reward_tune, dataset.episode_returns)
        if config.tensorboard:
            logs.TensorBoard.require()
        if config.wandb:
            logs.WandB.require()
        workdir = Path(FLAGS.workdir).expanduser() if FLAGS.workdir else Path("runs") / default_run_name(
            config, dataset.name)
    except (DatasetError, ValueError, ImportError) as error:
        sys.exit(f"error: {error}")

    # train first checks (or creates) the run folders
    _report_and_run(config, dataset, lambda: train(config, dataset, workdir, env))


def _report_and_run(config, dataset, run) -> None:
    """Print the resolved config and the data, then run: SIGTERM exits 143 (resumable), a diverged run or bad data
    exits with its one-line error."""
    print("resolved config:\n" + json.dumps(run_folder.jsonable(config), indent=2, sort_keys=True), flush=True)
    print("dataset: " + json.dumps(dataset.summary()), flush=True)
    try:
        run()
    except Preempted:
        sys.exit(PREEMPTED_EXIT_CODE)
    except (TrainingDiverged, DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")


def default_run_name(config, dataset_name: str) -> str:
    last = config.seed + config.num_seeds - 1
    seeds = f"seed{config.seed}" if config.num_seeds == 1 else f"seeds{config.seed}-{last}"
    return f"{config.algo}-{logs.file_safe(dataset_name)}-{seeds}-{time.strftime('%Y%m%d-%H%M%S')}"


def _load_data(config):
    """The dataset and its evaluation env (None without evaluation), checked against each other."""
    evaluate = config.eval_episodes > 0
    if is_d4rl_name(FLAGS.dataset) and evaluate and not FLAGS.env:
        env_for_d4rl_name(FLAGS.dataset)  # before a download, not after it
    dataset = load_dataset(FLAGS.dataset)
    env = env_for_dataset(dataset, FLAGS.env) if evaluate else None
    if evaluate:
        if env is None:
            raise DatasetError(
                f"no Gymnasium environment is known for dataset {dataset.name}; pass --env=ID, or "
                "--eval_episodes=0 to train without evaluation"
            )
        dataset.max_action = check_env_matches(dataset, *env)
    return dataset, env


def _train_online(config) -> None:
    """--algo=sac: learn by interacting with --env (no dataset); a folder holding a run of the same config resumes
    from its last checkpoint (dql.online_state)."""
    from dql.online import check_online_config, check_online_env, train_online

    try:
        if not FLAGS.env:
            raise ValueError(f"--algo={config.algo} trains online and needs --env=ID (e.g. --env=Hopper-v5)")
        if FLAGS["dataset"].present:
            raise ValueError(f"--algo={config.algo} trains online; --dataset does not apply")
        if config.num_seeds != 1:
            raise ValueError(f"--algo={config.algo} trains one seed per process; --num_seeds does not apply")
        check_online_config(config)
        hyperparams(config.algo, config, [1.0])
        check_online_env(FLAGS.env)
        workdir = Path(FLAGS.workdir or Path("runs") / f"{config.algo}-{FLAGS.env}-seed{config.seed}-"
                       f"{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
        run_folder.prepare_program(workdir, config)  # a folder of another config is refused before any work
    except (DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")
    print("resolved config:\n" + json.dumps(run_folder.jsonable(config), indent=2, sort_keys=True), flush=True)
    try:
        train_online(config, FLAGS.env, workdir)
    except Preempted:
        sys.exit(PREEMPTED_EXIT_CODE)
    except (TrainingDiverged, DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")


def _train_imitation(config) -> None:
    """--algo=gail: learn online in the env of --dataset (or --env) from its demonstrations (observations and
    actions); a folder holding a run of the same config and data resumes from its last checkpoint."""
    from dql.online_imitation import check_imitation_config, train_imitation

    try:
        check_imitation_config(config)
        hyperparams(config.algo, config, [1.0])  # before a download or a dataset generation, not after it
        dataset, env = _load_data(config)  # check_imitation_config asked for evaluation, so the env is known
        hyperparams(config.algo, config, dataset.max_action)
        workdir = Path(FLAGS.workdir).expanduser() if FLAGS.workdir else Path("runs") / default_run_name(
            config, dataset.name)
    except (DatasetError, ValueError, ImportError) as error:
        sys.exit(f"error: {error}")
    _report_and_run(config, dataset, lambda: train_imitation(config, dataset, env, workdir))


_CONFIG_ARGS: tuple = (None, {})  # (--config file, --config.KEY overrides), taken from argv by run()


def run(argv: list[str] | None = None) -> None:
    global _CONFIG_ARGS
    rest, config_file, overrides = split_config_args(list(sys.argv if argv is None else argv))
    _CONFIG_ARGS = (config_file, overrides)
    app.run(main, rest)


if __name__ == "__main__":
    run()
