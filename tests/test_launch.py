"""Sweeps: expansion of sweep files into runs (names, products, seed groups, command lines), their refusals of bad
input, skipping and resuming, the local queue, and two real launches (local, and submitit's LocalExecutor).

Only three tests start trainer processes (each pays JAX's start-up and a compilation on CPU): the local launcher,
submitit's LocalExecutor and, where the trainer has --num_seeds, the grouped-seeds launch.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from dql.logs import file_safe
from launch import local, running, slurm
from launch import sweep as sweeps

ROOT = Path(__file__).resolve().parent.parent

SMALL_SWEEP = """
ALGOS = ["dql", "iql"]
DATASETS = ["pendulum-mixed-v0", "gym:Hopper-v5/random/5000"]
SEEDS = [0, 1]
TRAIN_FLAGS = {"steps": 300, "eval_every": 150, "batch_size": 64}
CONFIG = {"hidden_dims": (32, 32)}
PER_ALGO = {"dql": {"axes": {"config.eta": [1.0, 2.0]}}}
"""

# The cheapest real run: behaviour cloning, 20 steps of an 8-unit network, one evaluation episode at the end.
TINY_SWEEP = """
ALGOS = ["bc"]
DATASETS = ["pendulum-mixed-v0"]
SEEDS = {seeds}
TRAIN_FLAGS = {{"steps": 20, "eval_every": 20, "save_every": 10, "eval_episodes": 1, "batch_size": 16}}
CONFIG = {{"hidden_dims": (8, 8), "steps_per_dispatch": 10}}
"""


def write_sweep(folder: Path, text: str, name: str = "study.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_is_the_cartesian_product_with_readable_names(tmp_path):
    sweep = sweeps.load_sweep(write_sweep(tmp_path, SMALL_SWEEP))
    runs = sweeps.expand(sweep, group_seeds=False)
    # dql: 2 datasets x 2 etas x 2 seeds; iql (no eta axis): 2 datasets x 2 seeds.
    assert len(runs) == 8 + 4
    names = [run.name for run in runs]
    assert names[:4] == ["dql-pendulum-mixed-v0-eta1.0-seed0", "dql-pendulum-mixed-v0-eta1.0-seed1",
                         "dql-pendulum-mixed-v0-eta2.0-seed0", "dql-pendulum-mixed-v0-eta2.0-seed1"]
    assert "iql-gym_Hopper-v5_random_5000-seed1" in names and len(set(names)) == len(names)
    run = runs[2]
    assert run.command(Path("/runs/study")) == [
        "python", "-m", "dql.train", "--algo=dql", "--dataset=pendulum-mixed-v0", "--seed=0",
        "--workdir=/runs/study/dql-pendulum-mixed-v0-eta2.0-seed0", "--steps=300", "--eval_every=150",
        "--batch_size=64", "--config.hidden_dims=32,32", "--config.eta=2.0",
    ]
    assert run.seed_dirs(Path("/r")) == [Path("/r/dql-pendulum-mixed-v0-eta2.0-seed0")]
    assert run.log_path(Path("/r")) == Path("/r/logs/dql-pendulum-mixed-v0-eta2.0-seed0.log")


def test_grouped_seeds_are_contiguous_programs_named_by_their_range(tmp_path):
    path = write_sweep(tmp_path, 'ALGOS = ["iql"]\nDATASETS = ["gym:Hopper-v5/random/5000"]\n'
                                 'SEEDS = [6, 0, 1, 2, 4, 5, 9]\nAXES = {"steps": [100]}\n')
    runs = sweeps.expand(sweeps.load_sweep(path), group_seeds=True)
    assert [run.seeds for run in runs] == [(0, 1, 2), (4, 5, 6), (9,)]
    assert [run.name for run in runs] == ["iql-gym_Hopper-v5_random_5000-steps100-seeds0-2",
                                          "iql-gym_Hopper-v5_random_5000-steps100-seeds4-6",
                                          "iql-gym_Hopper-v5_random_5000-steps100-seed9"]
    root = Path("/r")
    assert runs[1].command(root) == [
        "python", "-m", "dql.train", "--algo=iql", "--dataset=gym:Hopper-v5/random/5000", "--seed=4",
        "--num_seeds=3", "--workdir=/r/iql-gym_Hopper-v5_random_5000-steps100-seeds4-6", "--steps=100"]
    assert "--num_seeds" not in " ".join(runs[2].command(root))  # one seed: the workdir is the run folder
    assert runs[1].seed_dirs(root) == [root / runs[1].name / f"seed_{s}" for s in (4, 5, 6)]
    assert sweeps.contiguous_groups([3, 1, 2, 7]) == [(1, 2, 3), (7,)]


def test_group_seeds_choice_and_value_formats():
    assert running.resolve_group_seeds("auto", True) and not running.resolve_group_seeds("auto", False)
    assert running.resolve_group_seeds("true", False) and not running.resolve_group_seeds("false", True)
    with pytest.raises(sweeps.SweepError, match="--group_seeds='maybe'"):
        running.resolve_group_seeds("maybe", True)
    assert [sweeps.flag_value(v) for v in ((32, 32), True, 3e-4, 1e-5, 7, "vp")] == \
        ["32,32", "True", "0.0003", "1e-05", "7", "vp"]
    assert sweeps.tag_value((32, 32)) == "32x32" and sweeps.tag_value("a/b c") == "a_b_c"
    assert file_safe("gym:Hopper-v5/random/5000") == "gym_Hopper-v5_random_5000"


@pytest.mark.parametrize(
    "text, message",
    [
        ('DATASETS = ["d"]\n', "ALGOS is required"),
        ('ALGOS = "dql"\nDATASETS = ["d"]\n', "ALGOS must be a non-empty list of names, got 'dql'"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nSEED = [1]\n', "unknown key SEED"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nSEEDS = [0, -1]\n', "SEEDS: -1 is not a non-negative integer"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nTRAIN_FLAGS = {"lr": 1}\n', "TRAIN_FLAGS['lr']: not a dql.train flag"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nTRAIN_FLAGS = {"steps": "10"}\n',
         "TRAIN_FLAGS['steps']: expected int, got '10'"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nAXES = {"config.eta": 2.0}\n',
         "AXES['config.eta']: expected a non-empty list of values, got 2.0"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nAXES = {"config.etaa": [1.0]}\n',
         "AXES: 'etaa' is not a key of --algo=dql's config"),
        ('ALGOS = ["dql", "iql"]\nDATASETS = ["d"]\nCONFIG = {"eta": 2.0}\n',
         "CONFIG: 'eta' is not a key of --algo=iql's config"),
        ('ALGOS = ["dqn"]\nDATASETS = ["d"]\n', "ALGOS: 'dqn' is not an algorithm of dql; expected one of dql, bc"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nCONFIG = {"env": None}\n', "CONFIG['env']: None cannot be given"),
        ('ALGOS = ["sac"]\nDATASETS = ["d"]\n', "ALGOS: 'sac' trains online, without a dataset"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nPER_ALGO = {"iql": {"config": {}}}\n',
         "PER_ALGO['iql']: 'iql' is not in ALGOS"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nAXES = {"config.eta": [1, "1"]}\n', "two runs get the name 'dql-d-eta1"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"\n', "line 2: SyntaxError"),
        ('ALGOS = ["dql"]\nDATASETS = ["d"]\nSEEDS = list(range(3))[5]\n', "line 3: IndexError"),
    ],
)
def test_bad_sweep_files_fail_in_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = write_sweep(tmp_path, text, name="bad.py")
    with pytest.raises(sweeps.SweepError) as error:
        sweeps.expand(sweeps.load_sweep(path), group_seeds=False)
    assert message in str(error.value) and str(error.value).startswith(f"{path}: ")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "sweeps").glob("[!_]*.py")), ids=lambda p: p.stem)
def test_committed_sweep_files_load_and_name_every_run_once(path):
    """A sweep file in the repository with an unknown algorithm, dataset kind or config key fails here, not after a
    cluster allocation."""
    sweep = sweeps.load_sweep(path)
    runs = sweeps.expand(sweep, group_seeds=False)
    assert {run.algo for run in runs} == set(sweep.algos) and {run.dataset for run in runs} == set(sweep.datasets)
    assert len({run.name for run in runs}) == len(runs)


def test_missing_sweep_file_and_foreign_manifest(tmp_path):
    with pytest.raises(sweeps.SweepError, match="no-such.py: no such sweep file"):
        sweeps.load_sweep(tmp_path / "no-such.py")
    sweep = sweeps.load_sweep(write_sweep(tmp_path, SMALL_SWEEP))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "sweep.json").write_text(json.dumps({"sweep": "other"}))
    with pytest.raises(sweeps.SweepError, match="holds sweep 'other'"):
        running.check_manifest_owner(tmp_path / "root", sweep)


def finish(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text("{}")


def test_finished_runs_are_skipped_and_partly_finished_groups_rerun(tmp_path):
    sweep = sweeps.load_sweep(write_sweep(tmp_path, SMALL_SWEEP))
    root = tmp_path / "root"
    single = sweeps.expand(sweep, group_seeds=False)
    finish(root / single[0].name)
    (root / single[1].name).mkdir(parents=True)  # started, no summary: interrupted, to be resumed
    assert single[0].finished(root) and not single[1].finished(root)

    grouped = sweeps.expand(sweep, group_seeds=True)
    finish(root / grouped[0].name / "seed_0")
    assert not grouped[0].finished(root)  # seed 1 of the program has not finished: the whole command runs again
    finish(root / grouped[0].name / "seed_1")
    assert grouped[0].finished(root)

    queue = local.LocalQueue(sweep, single, root, False, [{}])
    assert queue.status[single[0].name] == {"status": "finished earlier"}
    assert [run.name for run in queue.queue] == [run.name for run in single[1:]]


def fake_start(behaviour: dict):
    """start_run's stand-in: a tiny Python process that finishes the run (exit 0), fails or is preempted."""

    def start(run, root, env=None, ignore_signals=(), cores=None):
        code = behaviour[run.name]
        script = "import sys, pathlib, time\n"
        if code == "sleep":
            script += "time.sleep(60)\n"
        elif code == 0:
            script += f"p = pathlib.Path({str(run.workdir(root))!r}); p.mkdir(parents=True); " \
                      "(p / 'summary.json').write_text('{}')\n"
        script += f"sys.exit({code})"
        run.log_path(root).parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([sys.executable, "-c", script])

    return start


def test_local_queue_records_done_failed_and_interrupted_runs(tmp_path, monkeypatch, capsys):
    sweep = sweeps.load_sweep(write_sweep(tmp_path, 'ALGOS = ["bc"]\nDATASETS = ["d"]\nSEEDS = [0, 1, 2, 3]\n'))
    runs = sweeps.expand(sweep, group_seeds=False)
    root = tmp_path / "root"
    finish(root / runs[3].name)
    monkeypatch.setattr(running, "start_run", fake_start({runs[0].name: 0, runs[1].name: 3, runs[2].name: 143}))
    monkeypatch.setattr(local, "POLL_S", 0.05)
    queue = local.LocalQueue(sweep, runs, root, False, [{}, {}])
    queue.run()
    failed = local.print_summary(queue)
    out = capsys.readouterr().out
    states = [queue.status[run.name]["status"] for run in runs]
    assert states == ["done", "failed", "interrupted", "finished earlier"]
    assert failed == [runs[1].name]
    assert f"failed (exit code 3): {runs[1].log_path(root)}" in out
    assert f"interrupted (run the same command again to resume): {runs[2].log_path(root)}" in out
    assert f"report: python -m experiments.report {root}" in out
    assert "[study] 2/4 done (1 earlier), 0 running, 0 queued, 1 failed, 1 interrupted" in out
    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["sweep"] == "study" and [r["status"] for r in manifest["runs"]][:2] == ["done", "failed"]
    assert manifest["runs"][0]["command"].startswith("python -m dql.train --algo=bc --dataset=d --seed=0")


def test_a_stopped_local_queue_stops_its_runs_and_records_them_as_interrupted(tmp_path, monkeypatch, capsys):
    sweep = sweeps.load_sweep(write_sweep(tmp_path, 'ALGOS = ["bc"]\nDATASETS = ["d"]\nSEEDS = [0, 1, 2]\n'))
    runs = sweeps.expand(sweep, group_seeds=False)
    monkeypatch.setattr(running, "start_run", fake_start({run.name: "sleep" for run in runs}))
    monkeypatch.setattr(local, "POLL_S", 0.05)
    queue = local.LocalQueue(sweep, runs, tmp_path / "root", False, [{}, {}])
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C
    queue.run()
    assert queue.stop_signal == signal.SIGINT
    states = [queue.status[run.name]["status"] for run in runs]
    assert states == ["interrupted", "interrupted", "queued (not started)"]
    assert queue.status[runs[0].name]["returncode"] == -signal.SIGTERM  # stopped with SIGTERM, to checkpoint
    assert "stopping 2 run(s) with SIGTERM" in capsys.readouterr().out


def test_devices_decide_parallelism_and_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    devices = local.detect_devices()
    assert devices == local.Devices("gpu", ["2", "3"]) and local.default_parallel(devices) == 2
    assert local.slot_envs(devices, 2) == [{"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "3"}]
    shared = local.slot_envs(devices, 3)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in shared] == ["2", "3", "2"]
    assert all(env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for env in shared)
    assert local.default_parallel(local.Devices("tpu", [])) == 1
    assert local.default_parallel(local.Devices("cpu", [])) == max(1, local.cpu_cores() // 2)
    assert running.outcome(0, True) == "done" and running.outcome(0, False) == "failed"
    assert running.outcome(143, False) == "interrupted"
    assert running.outcome(-signal.SIGTERM, False) == "interrupted"
    assert running.outcome(1, False) == "failed"
    assert running.outcome(1, False, stopped_by_us=True) == "interrupted"


def test_submitit_job_stops_its_trainer_and_resubmits_itself(tmp_path):
    pytest.importorskip("submitit")
    from submitit.helpers import DelayedSubmission

    run = sweeps.Run("bc-d-seed0", "bc", "d", (0,), {}, {})
    job = slurm.TrainRun()
    job._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    resubmission = job.checkpoint(run, str(tmp_path))
    assert job._process.returncode == -signal.SIGTERM  # stopped, so that the trainer checkpoints
    assert isinstance(resubmission, DelayedSubmission) and isinstance(resubmission.function, slurm.TrainRun)
    assert resubmission.args == (run, str(tmp_path))
    assert pickle.loads(pickle.dumps(job))._process is None  # a job pickles without its process


def test_slurm_launcher_without_submitit_says_how_to_install_it(tmp_path):
    sweep_file = write_sweep(tmp_path, TINY_SWEEP.format(seeds=[0]))
    argv = ["launch.slurm", str(sweep_file), f"--root={tmp_path / 'root'}", "--executor=local", "--timeout_min=5"]
    code = ("import sys; sys.modules['submitit'] = None; from absl import app; from launch import slurm; "
            f"slurm.define_flags(); app.run(slurm.main, {argv!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error: launch.slurm needs submitit: pip install 'dql[slurm]'" in result.stderr


# ------------------------------------------------------------------------------- real runs of the trainer


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """One DQL_DATASET_DIR for the real runs: pendulum-mixed-v0 is generated once (about 2 s)."""
    return tmp_path_factory.mktemp("datasets")


def launch(module: str, sweep_file: Path, root: Path, dataset_dir: Path, *flags: str):
    env = dict(os.environ, JAX_PLATFORMS="cpu", DQL_DATASET_DIR=str(dataset_dir))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, "-m", module, str(sweep_file), f"--root={root}", *flags], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_local_launcher_runs_a_sweep_and_skips_it_when_run_again(tmp_path, dataset_dir):
    sweep_file = write_sweep(tmp_path, TINY_SWEEP.format(seeds=[0]), name="tiny.py")
    root = tmp_path / "root"
    result = launch("launch.local", sweep_file, root, dataset_dir, "--group_seeds=false", "--parallel=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = root / "bc-pendulum-mixed-v0-seed0"
    assert (run_dir / "summary.json").exists() and (run_dir / "checkpoints" / "20").is_dir()
    log = (root / "logs" / "bc-pendulum-mixed-v0-seed0.log").read_text()
    assert log.startswith("== ") and f"--workdir={run_dir}" in log.splitlines()[0]
    assert "final policy at step 20" in log
    assert "[tiny] 1/1 done (0 earlier), 0 running, 0 queued, 0 failed" in result.stdout
    assert f"report: python -m experiments.report {root}" in result.stdout
    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["runs"][0]["status"] == "done" and manifest["runs"][0]["returncode"] == 0

    again = launch("launch.local", sweep_file, root, dataset_dir, "--group_seeds=false")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 runs (1 finished earlier)" in again.stdout and "0 done now, 1 finished earlier" in again.stdout
    assert (root / "logs" / "bc-pendulum-mixed-v0-seed0.log").read_text() == log  # nothing was started


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_command(tmp_path, dataset_dir):
    pytest.importorskip("submitit")
    sweep_file = write_sweep(tmp_path, TINY_SWEEP.format(seeds=[1]), name="tiny.py")
    root = tmp_path / "root"
    result = launch("launch.slurm", sweep_file, root, dataset_dir, "--executor=local", "--gpus_per_job=0",
                    "--timeout_min=10", "--wait")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (root / "bc-pendulum-mixed-v0-seed1" / "summary.json").exists()
    assert "1 of 1 submitted runs done" in result.stdout
    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["runs"][0]["status"] == "done" and manifest["launcher"] == "submitit-local"
    assert any((root / "submitit").iterdir())
    log = (root / "logs" / "bc-pendulum-mixed-v0-seed1.log").read_text()
    assert "--seed=1 --workdir=" in log.splitlines()[0] and "final policy at step 20" in log


# GROUPED PATH: the trainer's --num_seeds (one program training seeds S..S+N-1 into seed_<s>/ folders).
@pytest.mark.slow
def test_local_launcher_trains_grouped_seeds_in_one_program(tmp_path, dataset_dir):
    sweep_file = write_sweep(tmp_path, TINY_SWEEP.format(seeds=[0, 1]), name="tiny.py")
    root = tmp_path / "root"
    result = launch("launch.local", sweep_file, root, dataset_dir, "--group_seeds=true")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    program = root / "bc-pendulum-mixed-v0-seeds0-1"
    assert (program / "seed_0" / "summary.json").exists() and (program / "seed_1" / "summary.json").exists()
    log = (root / "logs" / "bc-pendulum-mixed-v0-seeds0-1.log").read_text()
    assert "--seed=0 --num_seeds=2" in log.splitlines()[0]
    again = launch("launch.local", sweep_file, root, dataset_dir, "--group_seeds=true")
    assert again.returncode == 0 and "1 runs (1 finished earlier)" in again.stdout
