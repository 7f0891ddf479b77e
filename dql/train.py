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
from ml_collections import config_flags

from dql import configs, logs, run_folder
from dql.agents import hyperparams
from dql.policy_training import replay_sac
from dql.data import DatasetError, load_dataset, tune_rewards
from dql.data.d4rl import is_d4rl_name
from dql.envs import check_env_matches, env_for_d4rl_name, env_for_dataset
from dql.trainer import Preempted, TrainingDiverged, check_loop_config, layout_for, train

DEFAULT_DATASET = "pendulum-mixed-v0"
# Top-level flags that are shorthands for config fields; when given they override the per-dataset defaults.
LOOP_FLAGS = ("steps", "batch_size", "eval_every", "eval_episodes", "save_every", "num_seeds")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process ended by it: not finished, resumable

flags.DEFINE_string("algo", "dql", f"Algorithm to train, one of {', '.join(configs.ALGOS)}; its config "
                    "(dql/configs/ALGO.py) is the base of --config.")
flags.DEFINE_string("dataset", DEFAULT_DATASET, "Built-in dataset name, D4RL name, minari:ID, gym:Env/level, or "
                    "path to a D4RL-format .hdf5.")
flags.DEFINE_string("env", None, "Gymnasium env id to evaluate in, when it cannot be inferred from the dataset.")
flags.DEFINE_string("workdir", None, "Run folder (default: a new folder under ./runs/). An existing one resumes.")
flags.DEFINE_integer("seed", 0, "Random seed of the agent, the minibatches and the evaluation.")
flags.DEFINE_integer("num_seeds", None, "Train seeds seed .. seed+N-1 in one compiled program, each in its own "
                     "run folder <workdir>/seed_<n>/.")
flags.DEFINE_integer("steps", None, "Gradient steps (default: the config's, per dataset).")
flags.DEFINE_integer("batch_size", None, "Global minibatch size, split over devices.")
flags.DEFINE_integer("eval_every", None, "Evaluate every N steps.")
flags.DEFINE_integer("eval_episodes", None, "Episodes per evaluation; 0 trains without an environment.")
flags.DEFINE_integer("save_every", None, "Checkpoint every N steps.")
flags.DEFINE_bool("multihost", False, "Join a multi-process run with jax.distributed.initialize() (auto-detected on "
                  "TPU VMs and Slurm) and train data-parallel over all processes' devices.")
flags.DEFINE_string("coordinator", None, "With --multihost: HOST:PORT of process 0, where it cannot be detected.")
flags.DEFINE_integer("num_processes", None, "With --multihost: number of processes, where it cannot be detected.")
flags.DEFINE_integer("process_id", None, "With --multihost: this process's index, where it cannot be detected.")
FLAGS = flags.FLAGS


def _config_file_arg(argv: list[str]) -> str | None:
    """The value of --config=FILE / --config FILE in argv (not the --config.KEY overrides)."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def _override_names(argv: list[str]) -> list[str]:
    return [arg[len("--config."):].split("=", 1)[0] for arg in argv if arg.startswith("--config.")]


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


def define_config_flag(argv: list[str]) -> None:
    """Define --config with the file of --algo as its default, after checking every --config.KEY against the base.

    The default depends on another flag, so it is defined once --algo is known; a misspelt key then gets a one-line
    error listing the algorithm's keys instead of ml_collections' traceback.
    """
    FLAGS(argv, known_only=True)
    algo = FLAGS.algo
    configs.algo_module(algo)
    given = _config_file_arg(argv)
    base = load_config_file(given) if given else configs.get_config(algo)
    if given and base.get("algo", algo) != algo:
        if FLAGS["algo"].present:
            raise ValueError(f"--config={given} is a config of algo {base.algo!r}, but --algo={algo}")
        algo = base.algo
    for name in _override_names(argv):
        configs.check_key(base, name, algo)
    FLAGS.unparse_flags()
    config_flags.DEFINE_config_file("config", str(configs.config_file(algo)),
                                    "Config file with get_config() (default: that of --algo); override any value "
                                    "with --config.KEY=VALUE.", lock_config=True)
    if algo != FLAGS["algo"].default:
        FLAGS.set_default("algo", algo)


def resolve_config(algo: str, dataset: str, env: str | None, seed: int, base, config_given: bool,
                   user_overrides: dict, loop_flags: dict):
    """Base config < the dataset's row < top-level flags < --config.* overrides."""
    online = bool(configs.get_config(algo).get("online", False))  # online runs read no dataset
    config = configs.resolve(algo, None if online else dataset, base if config_given else None, loop_flags,
                             user_overrides)
    config.algo, config.dataset, config.env, config.seed = algo, None if online else dataset, env, seed
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
        config = resolve_config(
            FLAGS.algo, FLAGS.dataset, FLAGS.env, FLAGS.seed, FLAGS.config, FLAGS["config"].present,
            config_flags.get_override_values(FLAGS["config"]),
            {name: FLAGS[name].value for name in LOOP_FLAGS if FLAGS[name].present},
        )
        if config.get("online", False):
            return _train_online(config)
        check_loop_config(config)
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

    print("resolved config:\n" + json.dumps(run_folder.jsonable(config), indent=2, sort_keys=True), flush=True)
    print("dataset: " + json.dumps(dataset.summary()), flush=True)
    try:
        train(config, dataset, workdir, env)  # which first checks (or creates) the run folders
    except Preempted:
        sys.exit(PREEMPTED_EXIT_CODE)
    except (TrainingDiverged, DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")


def default_run_name(config, dataset_name: str) -> str:
    seeds = f"seed{config.seed}" if config.num_seeds == 1 else f"seeds{config.seed}-{config.seed + config.num_seeds - 1}"
    return f"{config.algo}-{logs.file_safe(dataset_name)}-{seeds}-{time.strftime('%Y%m%d-%H%M%S')}"


def _load_data(config):
    """The dataset and its evaluation env (None without evaluation), checked against each other."""
    evaluate = config.eval_episodes > 0
    if is_d4rl_name(FLAGS.dataset) and evaluate and not FLAGS.env:
        env_for_d4rl_name(FLAGS.dataset)  # before a download, not after it
    dataset = load_dataset(FLAGS.dataset, replay=replay_sac)
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


def run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    try:
        define_config_flag(argv)
    except (ValueError, flags.Error) as error:
        sys.exit(f"error: {error}")
    app.run(main, argv)


if __name__ == "__main__":
    run()
