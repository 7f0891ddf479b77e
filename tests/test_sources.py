"""Every `--dataset` source kind: D4RL download over a loopback server, Minari, generated Gymnasium datasets."""

import http.server
import json
import platform
import subprocess
import sys
import threading
import warnings

import h5py
import numpy as np
import pytest

from dql import reproducible
from dql.data import DatasetError, d4rl, gym_datasets, load_dataset
from dql.data.behaviour import load_actor, save_actor
from dql.policy_training import pick_policies
from tests.helpers import write_d4rl_file

pytestmark = pytest.mark.slow  # generation runs dql.collect in a child process, training runs dql.train


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves /good.hdf5 whole, /truncated.hdf5 cut short of its Content-Length, /junk.hdf5 as non-hdf5 bytes."""

    payload = b""

    def do_GET(self):  # noqa: N802 (the http.server interface)
        body = self.payload
        declared = len(body)
        if self.path.startswith("/truncated"):
            body = body[: len(body) // 2]
        elif self.path.startswith("/junk"):
            body = b"not an hdf5 file" * 10
            declared = len(body)
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    source = tmp_path / "served.hdf5"
    write_d4rl_file(source, obs_dim=11, act_dim=3, episodes=((30, False), (20, True)))
    handler = type("Handler", (_Handler,), {"payload": source.read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_d4rl_name_is_downloaded_atomically_into_the_cache(tmp_path, monkeypatch, file_server):
    cache = tmp_path / "d4rl"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setitem(d4rl.D4RL_URLS, "hopper-medium-v2", f"{file_server}/good.hdf5")
    dataset = load_dataset("hopper-medium-v2")
    assert dataset.name == "hopper-medium-v2" and len(dataset) == 48  # timeout row and last row dropped
    assert (dataset.ref_min_score, dataset.ref_max_score) == (-20.272305, 3234.3)
    # Stored, as d4rl stores it, under the URL's file name: no temporary file is left beside it.
    assert sorted(p.name for p in cache.iterdir()) == ["good.hdf5"] == [d4rl.local_path("hopper-medium-v2").name]


@pytest.mark.parametrize("path, message", [
    ("truncated.hdf5", "stopped at .* of .* bytes"),
    ("junk.hdf5", "not a readable hdf5 file"),
])
def test_a_broken_transfer_leaves_no_file(tmp_path, monkeypatch, file_server, path, message):
    cache = tmp_path / "d4rl"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setitem(d4rl.D4RL_URLS, "hopper-medium-v2", f"{file_server}/{path}")
    with pytest.raises(DatasetError, match=message):
        load_dataset("hopper-medium-v2")
    assert list(cache.iterdir()) == []


def test_minari_dataset_made_with_its_data_collector(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # where minari[hf] is installed: fail at once instead of retrying
    _make_minari_store(tmp_path / "minari", monkeypatch, "test/pendulum/random-v0", episodes=3)
    dataset = load_dataset("minari:test/pendulum/random-v0")
    assert len(dataset) == 600 and dataset.episode_returns.shape == (3,)
    assert dataset.env_id == "Pendulum-v1" and dataset.max_action.tolist() == [2.0]
    # Next observations are the episode's own successors: row t + 1 of the same episode.
    np.testing.assert_array_equal(dataset.next_observations[:199], dataset.observations[1:200])
    assert dataset.dones.sum() == 0  # Pendulum only truncates
    expected = 100 * (dataset.episode_returns.mean() + 1224.16) / (1224.16 - 146.98)
    assert dataset.summary()["average_normalized_score"] == pytest.approx(expected)
    with pytest.raises(DatasetError, match="minari:test/pendulum/missing-v0: not in the local Minari store"):
        load_dataset("minari:test/pendulum/missing-v0")


@pytest.mark.parametrize("spec, message", [
    ("gym:Swimmer-v5/medium", "unknown env 'Swimmer-v5'"),
    ("gym:Hopper-v5/good", "unknown level 'good'"),
    ("gym:Hopper-v5/medium/0", "not a positive integer"),
    ("gym:Hopper-v5", "expected gym:<EnvId>/<level>"),
    ("hopper-medium-v9", "neither a built-in dataset"),
])
def test_bad_specs_name_what_was_expected(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def _check_d4rl_layout(path, transitions, env_id):
    with h5py.File(path, "r") as f:
        arrays = {key: f[key][()] for key in f}
        attrs = dict(f.attrs)
    assert attrs["env_id"] == env_id and len(arrays["rewards"]) == transitions
    ends = arrays["terminals"] | arrays["timeouts"]
    assert ends[-1] and not (arrays["terminals"] & arrays["timeouts"]).any()
    within = ~ends[:-1]  # inside an episode the next row starts where this one ended
    np.testing.assert_array_equal(arrays["next_observations"][:-1][within], arrays["observations"][1:][within])
    # An ending row keeps its episode's last observation, not the next episode's reset one.
    assert not np.any(np.all(arrays["next_observations"][:-1][~within] == arrays["observations"][1:][~within], axis=1))
    return arrays, attrs


@pytest.fixture
def tiny_policies(tmp_path, monkeypatch):
    """Hopper-v5 medium/expert files from a tiny real SAC run (two snapshots) in a temporary policy folder, trained
    as the shipped ones were: `dql.train --algo=sac` in a process with dql.reproducible's settings, the settings
    its replays run in."""
    monkeypatch.setenv("DQL_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    run = tmp_path / "sac"
    command = [sys.executable, "-m", "dql.train", "--algo=sac", "--env=Hopper-v5", "--seed=3", f"--workdir={run}",
               "--steps=200", "--eval_every=100", "--eval_episodes=1", "--batch_size=32", "--config.start_steps=100",
               "--config.update_after=100", "--config.update_every=50", "--config.hidden_dims=16,16"]
    result = subprocess.run(command, env=reproducible.subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "policies" / "Hopper-v5"
    for level, step in (("medium", 100), ("expert", 200)):
        params, meta = load_actor(run / "policies" / f"step_{step:08d}.npz")
        save_actor(out / f"{level}.npz", params, meta)
    (out / "reference.json").write_text('{"random_return": 10.0, "expert_return": 110.0}')
    return run


def test_generated_tiers_have_d4rl_layout_and_are_reproducible(tiny_policies, tmp_path):
    first = gym_datasets.generate("Hopper-v5", "random", 300, seed=1, path=tmp_path / "a.hdf5", num_envs=4)
    again = gym_datasets.generate("Hopper-v5", "random", 300, seed=1, path=tmp_path / "b.hdf5", num_envs=4)
    arrays, attrs = _check_d4rl_layout(first, 300, "Hopper-v5")
    assert first.read_bytes() == again.read_bytes()  # the identical file
    assert np.abs(arrays["actions"]).max() <= 1.0 and arrays["actions"].std() > 0.5  # uniform on [-1, 1]
    assert (attrs["ref_min_score"], attrs["ref_max_score"]) == (10.0, 110.0)
    # The CPU that made the file, and whether it was made with dql.reproducible's settings (here, in-process: not).
    assert json.loads(attrs["versions"])["cpu"].startswith(platform.machine()) and not attrs["cpu_independent"]

    # medium-expert is the medium tier then the expert tier (seeded seed and seed + 1000), row for row.
    both, _ = _check_d4rl_layout(
        gym_datasets.generate("Hopper-v5", "medium-expert", 200, seed=0, path=tmp_path / "me.hdf5"), 200, "Hopper-v5")
    medium, _ = _check_d4rl_layout(
        gym_datasets.generate("Hopper-v5", "medium", 100, seed=0, path=tmp_path / "m.hdf5"), 100, "Hopper-v5")
    expert, _ = _check_d4rl_layout(
        gym_datasets.generate("Hopper-v5", "expert", 100, seed=1000, path=tmp_path / "e.hdf5"), 100, "Hopper-v5")
    for key in both:
        np.testing.assert_array_equal(both[key], np.concatenate([medium[key], expert[key]]))
    dataset = load_dataset("gym:Hopper-v5/random/300")  # generated in a child process with the settings
    assert dataset.name == "gym:Hopper-v5/random/300" and dataset.env_id == "Hopper-v5"
    assert dataset.ref_max_score == 110.0  # the child read the policy folder of $DQL_POLICY_DIR
    with h5py.File(gym_datasets.dataset_path("Hopper-v5", "random", 300, 0), "r") as f:
        assert f.attrs["cpu_independent"]


def test_replay_tiers_rerun_the_seeded_sac_up_to_the_shipped_policies(tiny_policies):
    # The data layer does not run SAC itself: `python -m dql.collect` does, in a child process.
    dataset = load_dataset("gym:Hopper-v5/medium-replay")
    path = gym_datasets.dataset_path("Hopper-v5", "medium-replay", 0, 0)
    arrays, attrs = _check_d4rl_layout(path, 100, "Hopper-v5")
    assert attrs["replay_max_param_difference_to_shipped_medium"] == 0.0  # the same run, bit for bit
    assert len(dataset) == 100 - int(arrays["timeouts"].sum())

    # full-replay runs the same SAC on to the expert's step: the medium-replay rows are its beginning.
    load_dataset("gym:Hopper-v5/full-replay")
    full, full_attrs = _check_d4rl_layout(gym_datasets.dataset_path("Hopper-v5", "full-replay", 0, 0), 200,
                                          "Hopper-v5")
    assert full_attrs["replay_max_param_difference_to_shipped_expert"] == 0.0
    for key in ("observations", "actions", "rewards", "terminals"):
        np.testing.assert_array_equal(full[key][:100], arrays[key])


def test_a_cached_file_made_from_other_policies_is_regenerated(tiny_policies, capsys):
    first = load_dataset("gym:Hopper-v5/medium/150")
    load_dataset("gym:Hopper-v5/medium/150")
    assert capsys.readouterr().err.count("generating") == 1  # cached the second time
    # Re-trained policies (here: expert copied over medium) make the cached tier stale.
    expert = gym_datasets.policy_path("Hopper-v5", "expert")
    gym_datasets.policy_path("Hopper-v5", "medium").write_bytes(expert.read_bytes())
    second = load_dataset("gym:Hopper-v5/medium/150")
    assert "made from other behaviour policies" in capsys.readouterr().err
    assert not np.array_equal(first.actions, second.actions)


def test_policy_selection_picks_best_as_expert_and_first_third_as_medium(tmp_path):
    params = {"params": {"w": np.zeros(2, np.float32)}}
    for step, value in zip((10, 20, 30, 40), (12.0, 40.0, 100.0, 90.0)):
        save_actor(tmp_path / "policies" / f"step_{step:08d}.npz", params, {"eval_return_mean": value, "step": step})
    medium, expert = pick_policies(tmp_path)
    assert (medium.name, expert.name) == ("step_00000020.npz", "step_00000030.npz")


def test_missing_policies_name_the_command_that_trains_them(monkeypatch, tmp_path):
    monkeypatch.setenv("DQL_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="--train_policies --env=Walker2d-v5"):
        load_dataset("gym:Walker2d-v5/expert")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.hdf5"))


def test_shipped_policy_files_load_with_their_recorded_returns():
    reference = gym_datasets.reference("Hopper-v5")
    assert reference["random_return"] < reference["medium_return"] < reference["expert_return"]
    for level in ("medium", "expert"):
        _, meta = load_actor(gym_datasets.policy_path("Hopper-v5", level))
        assert meta["env_id"] == "Hopper-v5" and meta["level"] == level
        assert meta["sampled_return_mean"] == pytest.approx(reference[f"{level}_return"])



def _make_minari_store(path, monkeypatch, dataset_id="test/pendulum/tiny-v0", episodes=2):
    """A real Minari dataset of uniform-random Pendulum-v1 episodes, recorded with minari's DataCollector."""
    import gymnasium as gym
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    env = minari.DataCollector(gym.make("Pendulum-v1"))
    rng = np.random.default_rng(0)
    for episode in range(episodes):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(rng.uniform(-2, 2, 1).astype(np.float32))
            done = terminated or truncated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # minari asks for author and description metadata
        env.create_dataset(dataset_id=dataset_id, algorithm_name="uniform", eval_env="Pendulum-v1",
                           ref_min_score=-1224.16, ref_max_score=-146.98)


@pytest.mark.parametrize("kind", ["path", "d4rl", "minari", "gym"])
def test_the_same_training_command_on_every_source_kind(tmp_path, monkeypatch, file_server, pendulum_file, kind):
    from tests.test_cli import run_cli

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    if kind == "d4rl":  # downloaded here (the child process cannot see the patched URL), then read from the cache
        monkeypatch.setitem(d4rl.D4RL_URLS, "hopper-medium-v2", f"{file_server}/good.hdf5")
        load_dataset("hopper-medium-v2")
        (tmp_path / "d4rl" / "good.hdf5").rename(tmp_path / "d4rl" / "hopper_medium-v2.hdf5")
    if kind == "minari":
        _make_minari_store(tmp_path / "minari", monkeypatch)
    spec = {"path": str(pendulum_file), "d4rl": "hopper-medium-v2", "minari": "minari:test/pendulum/tiny-v0",
            "gym": "gym:Hopper-v5/random/400"}[kind]
    workdir = tmp_path / "run"
    # BC keeps the compile short; the loop, data path and evaluation are the ones every algorithm uses.
    result = run_cli("--algo=bc", f"--dataset={spec}", f"--workdir={workdir}", "--steps=10", "--eval_every=10",
                     "--save_every=10", "--eval_episodes=2", "--batch_size=16", "--config.hidden_dims=16,16",
                     "--config.steps_per_dispatch=10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final policy at step 10" in result.stdout
    env_id = {"path": "Pendulum-v1", "d4rl": "Hopper-v4", "minari": "Pendulum-v1", "gym": "Hopper-v5"}[kind]
    assert json.loads((workdir / "dataset.json").read_text())["eval_env_id"] == env_id


def test_a_d4rl_name_without_an_environment_fails_before_downloading(tmp_path, monkeypatch):
    from tests.test_cli import run_cli

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    result = run_cli("--dataset=antmaze-umaze-v2", f"--workdir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "dataset antmaze-umaze-v2: no Gymnasium environment evaluates it" in result.stderr
    assert "--eval_episodes=0" in result.stderr
    assert not (tmp_path / "d4rl").exists() and not (tmp_path / "run").exists()
    # Without evaluation it trains, from the cached file.
    (tmp_path / "d4rl").mkdir()
    write_d4rl_file(d4rl.local_path("antmaze-umaze-v2"), obs_dim=29, act_dim=8, episodes=((40, False), (30, True)))
    result = run_cli("--algo=bc", "--dataset=antmaze-umaze-v2", f"--workdir={tmp_path / 'run'}", "--eval_episodes=0",
                     "--steps=10", "--save_every=10", "--eval_every=10", "--batch_size=16",
                     "--config.hidden_dims=16,16", "--config.steps_per_dispatch=10")
    assert result.returncode == 0, result.stderr[-3000:]


def test_d4rl_names_are_evaluated_in_the_d4rl_era_envs_generated_tiers_in_v5_and_env_wins(tmp_path, monkeypatch):
    from dql.data.evaluation_envs import env_for_d4rl_name, env_for_dataset
    from dql.envs import make_env

    assert [env_for_d4rl_name(f"{domain}-medium-v2") for domain in ("hopper", "halfcheetah", "walker2d")] == [
        ("Hopper-v4", {}), ("HalfCheetah-v4", {}), ("Walker2d-v4", {})]

    def foot_frictions(env_id):
        env = make_env(env_id, {})
        try:
            model = env.unwrapped.model
            return [float(model.geom(name).friction[0]) for name in ("foot_geom", "foot_left_geom")]
        finally:
            env.close()

    # Why v4: it keeps the model D4RL recorded in (right and left foot frictions 0.9 and 1.9), v5 changed it; and
    # v4's ant observes D4RL's 111 dims (v5 drops the world body's contact forces).
    assert foot_frictions("Walker2d-v4") == [0.9, 1.9] and foot_frictions("Walker2d-v5") == [1.9, 1.9]
    ant = make_env(*env_for_d4rl_name("ant-medium-v2"))
    assert ant.observation_space.shape == (111,)
    ant.close()

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path / "cache"))
    (tmp_path / "d4rl").mkdir()
    write_d4rl_file(d4rl.local_path("hopper-medium-v2"), obs_dim=11, act_dim=3)
    d4rl_file, generated = load_dataset("hopper-medium-v2"), load_dataset("gym:Hopper-v5/random/200")
    assert env_for_dataset(d4rl_file, None) == ("Hopper-v4", {})
    assert env_for_dataset(generated, None)[0] == "Hopper-v5"
    assert env_for_dataset(d4rl_file, "Hopper-v5") == ("Hopper-v5", {}) == env_for_dataset(generated, "Hopper-v5")


def test_robotics_envs_say_how_to_install_gymnasium_robotics(monkeypatch):
    import sys

    from dql.data.evaluation_envs import env_for_d4rl_name
    from dql.envs import make_vector_env

    assert env_for_d4rl_name("pen-human-v1") == ("AdroitHandPen-v1", {})
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # as if not installed
    with pytest.raises(DatasetError, match=r"gymnasium-robotics, which is not installed.*dql\[robotics\]"):
        make_vector_env("AdroitHandPen-v1", {}, 1)


def test_a_truncated_cached_file_is_an_error_that_says_how_to_recover(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    good = tmp_path / "good.hdf5"
    write_d4rl_file(good, obs_dim=11, act_dim=3)
    d4rl.local_path("hopper-medium-v2").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="not a readable hdf5 file.*cached copy of hopper-medium-v2: delete it"):
        load_dataset("hopper-medium-v2")


def test_generated_datasets_take_their_d4rl_namesakes_rows():
    from dql.configs import dql as dql_config
    from dql.configs import iql as iql_config
    from dql.configs.common import dataset_row

    assert dataset_row(dql_config.DATASET_OVERRIDES, "gym:Hopper-v5/medium-replay")["grad_norm"] == 4.0
    assert dataset_row(iql_config.DATASET_OVERRIDES, "gym:Walker2d-v5/medium/5000")["reward_tune"] == "iql_locomotion"
    assert dataset_row(dql_config.DATASET_OVERRIDES, "gym:Hopper-v5/random") == {}  # D4RL's table has no random row


def test_collect_command_writes_the_file_and_never_overwrites_one(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "random.hdf5"
    command = [sys.executable, "-m", "dql.collect", "--dataset=gym:Hopper-v5/random", "--num_transitions=300",
               "--num_envs=3", f"--out={out}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["transitions"] <= 300 and summary["env_id"] == "Hopper-v5" and summary["path"] == str(out)
    before = out.read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "already exists" in again.stderr and out.read_bytes() == before
