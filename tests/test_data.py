"""The D4RL reader's qlearning_dataset semantics, validation errors, reward transforms and normalized scores."""

import h5py
import jax
import numpy as np
import pytest

from dql.data import DatasetError, load_dataset, sample_batch, tune_rewards
from dql.data import d4rl, scores
from dql.data.dataset import episode_returns
from tests.helpers import write_d4rl_file


def test_next_observations_from_successor_rows_timeouts_dropped_terminals_kept(tmp_path):
    path = tmp_path / "tiny.hdf5"
    raw = write_d4rl_file(path, episodes=((5, False), (4, True), (3, False)))
    ds = d4rl.read_hdf5(path)
    # Rows 4 (timeout) and 11 (timeout, also the last row) are dropped: 12 - 2 transitions remain.
    kept = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    np.testing.assert_array_equal(ds.observations[:, 0], kept)
    np.testing.assert_array_equal(ds.next_observations[:, 0], np.array(kept) + 1)
    np.testing.assert_array_equal(ds.dones, [0, 0, 0, 0, 0, 0, 0, 1, 0, 0])  # the terminal at row 8 is kept
    np.testing.assert_array_equal(ds.actions, raw["actions"][kept])
    # Each kept row's next action is its successor row's, also where that successor is a dropped timeout row
    # (row 3 -> 4); at the terminal (row 8) it is the next episode's first, masked by done.
    np.testing.assert_array_equal(ds.next_actions, raw["actions"][np.array(kept) + 1])
    np.testing.assert_array_equal(ds.rewards, raw["rewards"][kept])
    # Episode returns use every row, split at terminals and timeouts.
    r = raw["rewards"].astype(np.float64)
    np.testing.assert_allclose(ds.episode_returns, [r[:5].sum(), r[5:9].sum(), r[9:].sum()], rtol=1e-6)


def test_file_next_observations_are_used_when_present(tmp_path):
    path = tmp_path / "with_next.hdf5"
    write_d4rl_file(path, episodes=((3, True), (3, False)), next_observations=True)
    ds = d4rl.read_hdf5(path)
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 3, 4])  # only the timeout row 5 is dropped
    np.testing.assert_array_equal(ds.next_observations[:, 0], np.array([0, 1, 2, 3, 4]) + 1000)


def test_metadata_attributes_and_reference_scores(tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    write_d4rl_file(path)
    ds = d4rl.read_hdf5(path, name="hopper-medium-v2")
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    np.testing.assert_array_equal(ds.max_action, [1.0])
    own = tmp_path / "own.hdf5"
    write_d4rl_file(own, attrs={"env_id": "Pendulum-v1", "ref_min_score": -1000.0, "ref_max_score": 0.0,
                                "max_action": np.array([2.0], np.float32), "name": "own-v0"})
    ds = d4rl.read_hdf5(own)
    assert ds.env_id == "Pendulum-v1" and ds.name == "own-v0"
    assert float(ds.normalized_score(-250.0)) == pytest.approx(75.0)
    np.testing.assert_array_equal(ds.max_action, [2.0])


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"rewards": None}, r"missing key\(s\) \['rewards'\]"),
        ({"terminals": None, "dones": np.zeros(12, bool)}, r"missing key\(s\) \['terminals'\].*'dones'"),
        ({"actions": np.zeros((11, 1), np.float32)}, "key 'actions' has 11 rows but 'observations' has 12"),
        ({"observations": np.zeros((12, 3), np.int32)}, "key 'observations' has dtype int32, expected float"),
        ({"rewards": np.zeros((12, 2), np.float32)}, r"key 'rewards' has shape \(12, 2\), expected \(12,\)"),
        ({"observations": np.zeros(12, np.float32)}, "key 'observations' has shape"),
        ({"rewards": np.where(np.arange(12) == 7, np.nan, 0.0)}, "key 'rewards' has 1 NaN/inf value.*row 7"),
        ({"actions": np.full((12, 1), np.inf, np.float32)}, "key 'actions' has 12 NaN/inf"),
    ],
)
def test_bad_files_are_rejected_naming_file_and_key(tmp_path, replace, message):
    path = tmp_path / "bad.hdf5"
    write_d4rl_file(path, **replace)
    with pytest.raises(DatasetError, match=message) as error:
        d4rl.read_hdf5(path)
    assert str(path) in str(error.value)


def test_missing_unreadable_and_unknown_datasets(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        d4rl.read_hdf5(tmp_path / "nope.hdf5")
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match="not a readable hdf5 file"):
        load_dataset(str(garbage))
    with pytest.raises(DatasetError, match="--dataset='hopper-mediocre-v2' is neither"):
        load_dataset("hopper-mediocre-v2")


def test_d4rl_names_urls_and_cache_location(tmp_path, monkeypatch):
    assert d4rl.D4RL_URLS["hopper-medium-replay-v2"].endswith("/gym_mujoco_v2/hopper_medium_replay-v2.hdf5")
    assert d4rl.D4RL_URLS["walker2d-medium-replay-v0"].endswith("/gym_mujoco/walker_mixed.hdf5")
    assert d4rl.D4RL_URLS["antmaze-medium-play-v0"].endswith(
        "/ant_maze_new/Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse.hdf5"
    )
    assert d4rl.D4RL_URLS["pen-cloned-v1"].endswith("/hand_dapg_v1/pen-cloned-v1.hdf5")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert d4rl.local_path("hopper-medium-v2") == tmp_path / "hopper_medium-v2.hdf5"
    # A cached file is read without any download.
    write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5", obs_dim=11, act_dim=3)
    ds = load_dataset("hopper-medium-v2")
    assert ds.name == "hopper-medium-v2" and ds.observation_dim == 11


def test_failed_download_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setitem(d4rl.D4RL_URLS, "hopper-medium-v2", "http://127.0.0.1:9/hopper_medium-v2.hdf5")
    with pytest.raises(DatasetError, match="could not download .* put the file there by hand"):
        load_dataset("hopper-medium-v2")
    assert list(tmp_path.iterdir()) == []


# D4RL's infos.py constants (REF_MIN_SCORE, REF_MAX_SCORE), the same for every level and version of a domain.
D4RL_REFERENCE = {"halfcheetah": (-280.178953, 12135.0), "hopper": (-20.272305, 3234.3), "walker2d": (1.629008, 4592.3),
                  "ant": (-325.6, 3879.7), "antmaze": (0.0, 1.0), "kitchen": (0.0, 4.0),
                  "pen": (96.262799, 3076.8331017826877), "hammer": (-274.856578, 12794.134825156867),
                  "relocate": (-6.425911, 4233.877797728884), "door": (-56.512833, 2880.5693087298737)}
MAZE2D_REFERENCE = {"maze2d-umaze-v1": (23.85, 161.86), "maze2d-medium-v1": (13.13, 277.39),
                    "maze2d-large-v1": (6.7, 273.99)}


def test_every_downloadable_d4rl_dataset_gets_its_domains_reference_scores():
    """A name the downloader knows but the score table misses (or maps to another domain's constants, a level or a
    version left out) would be trained and reported in raw return only, or scored wrongly."""
    for name in d4rl.D4RL_URLS:
        domain = name.split("-", 1)[0]
        expected = MAZE2D_REFERENCE[name] if domain == "maze2d" else D4RL_REFERENCE[domain]
        assert scores.reference_scores(name) == expected, name
    assert scores.reference_scores("maze2d-umaze-dense-v1") is None  # dense rewards: D4RL gives no constants
    assert scores.reference_scores("cartpole-v0") is None


def test_reward_tunes():
    r = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    np.testing.assert_allclose(tune_rewards(r, "cql_antmaze", None), [-2, 2, 2, -2])
    np.testing.assert_allclose(tune_rewards(r, "iql_antmaze", None), [-1, 0, 0, -1])
    np.testing.assert_allclose(tune_rewards(np.array([0.0, 4.0, 1.0]), "minmax", None), [-1.0, 1.0, -0.5])
    normalized = tune_rewards(r, "normalize", None)
    assert normalized.mean() == pytest.approx(0.0) and normalized.std() == pytest.approx(1.0)
    np.testing.assert_allclose(tune_rewards(r, "iql_locomotion", np.array([10.0, 30.0, 20.0])), r * 50.0)
    with pytest.raises(DatasetError, match="unknown reward_tune 'clip'"):
        tune_rewards(r, "clip", None)


def test_episode_returns_leave_out_a_trailing_partial_episode():
    rewards = np.arange(7, dtype=np.float32)
    ends = np.array([0, 1, 0, 0, 1, 0, 0], bool)
    np.testing.assert_allclose(episode_returns(rewards, ends), [0 + 1, 2 + 3 + 4])
    np.testing.assert_allclose(episode_returns(rewards, np.zeros(7, bool)), [21.0])


def test_device_sampling_draws_rows_consistently():
    n = 50
    data = {"observations": np.arange(n, dtype=np.float32)[:, None].repeat(2, 1),
            "rewards": np.arange(n, dtype=np.float32) * 10}
    batch = sample_batch(jax.tree_util.tree_map(np.asarray, data), jax.random.PRNGKey(0), 4096)
    index = np.asarray(batch["observations"][:, 0]).astype(int)
    np.testing.assert_array_equal(np.asarray(batch["rewards"]), index * 10.0)  # rows stay aligned across keys
    counts = np.bincount(index, minlength=n)
    assert counts.min() > 40 and counts.max() < 130  # roughly uniform over all rows, none missing


def test_builtin_dataset_is_generated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DQL_DATASET_DIR", str(tmp_path))
    from dql.data import builtin

    monkeypatch.setattr(builtin, "NUM_EPISODES", 8)
    ds = load_dataset("pendulum-mixed-v0")
    path = tmp_path / "pendulum-mixed-v0.hdf5"
    assert path.exists() and ds.env_id == "Pendulum-v1"
    assert len(ds) == 8 * 199 and len(ds.episode_returns) == 8  # each episode's timeout row is dropped
    assert np.abs(ds.actions).max() <= 2.0 and list(ds.max_action) == [2.0]
    with h5py.File(path) as f:
        assert f["timeouts"][()].sum() == 8 and f["terminals"][()].sum() == 0
    mtime = path.stat().st_mtime_ns
    load_dataset("pendulum-mixed-v0")
    assert path.stat().st_mtime_ns == mtime


def test_missing_timeouts_follow_d4rl_episode_length_rule(tmp_path):
    path = tmp_path / "no_timeouts.hdf5"
    # 12 rows, no terminals: with episodes of at most 5 steps rows 4 and 9 time out; row 11 has no successor.
    write_d4rl_file(path, episodes=((12, False),), timeouts=None, attrs={"max_episode_steps": 5})
    ds = d4rl.read_hdf5(path)
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 3, 5, 6, 7, 8, 10])
    assert len(ds.episode_returns) == 2


def test_a_file_named_like_a_d4rl_download_is_that_dataset(tmp_path):
    path = tmp_path / "walker2d_medium_replay-v2.hdf5"
    write_d4rl_file(path, obs_dim=17, act_dim=6)
    ds = load_dataset(str(path))
    assert ds.name == "walker2d-medium-replay-v2" and (ds.ref_min_score, ds.ref_max_score) == (1.629008, 4592.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attrs={"max_action": np.array([1.0, 2.0], np.float32)}),
         r"attribute 'max_action' is \[1.0, 2.0\], expected 1 or 1 positive numbers"),
        (dict(attrs={"max_action": np.array([0.0], np.float32)}), "attribute 'max_action' is"),
        (dict(episodes=((1, False),)), "no transition is left"),
        (dict(episodes=(), observations=np.zeros((0, 3), np.float32)), "key 'observations' has no rows"),
        (dict(observations=np.float32(3.0)), r"key 'observations' has shape \(\)"),
    ],
)
def test_more_bad_files(tmp_path, kwargs, message):
    path = tmp_path / "bad.hdf5"
    write_d4rl_file(path, **kwargs)
    with pytest.raises(DatasetError, match=message):
        d4rl.read_hdf5(path)
