"""Diffuser as an agent: windowed minibatches, trajectory windows and returns, learning a known plan, value guidance,
and the trainer's data hooks (the loop itself, with checkpoints and exact resume, runs on a point maze in
test_diffuser_control.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.data.dataset import Dataset, sample_batch, training_arrays
from dql.data.windows import episode_ends, trajectory_windows


def _two_episodes(lengths=(5, 3), terminal_first=True, obs_dim=2):
    """Episode 0 (5 rows, ends in a terminal unless told) then episode 1 (3 rows, a timeout: its last successor is
    not the next row). observations[:, 0] numbers the rows; rewards are 1, 2, 3, ... per row."""
    n = sum(lengths)
    observations = np.zeros((n, obs_dim), np.float32)
    observations[:, 0] = np.arange(n)
    next_observations = observations + 0.0
    next_observations[:-1] = observations[1:]
    next_observations[-1, 0] = 100.0
    dones = np.zeros(n, np.float32)
    if terminal_first:
        dones[lengths[0] - 1] = 1.0
    else:  # a timeout: the successor of the first episode's last row is not the next row
        next_observations[lengths[0] - 1, 0] = 50.0
    return Dataset(
        observations=observations, actions=np.arange(n, dtype=np.float32)[:, None] / 10,
        rewards=np.arange(1, n + 1, dtype=np.float32), next_observations=next_observations, dones=dones,
        name="two", source="test", episode_returns=np.array([15.0, 21.0]), max_action=np.array([1.0], np.float32),
    )


# ------------------------------------------------------------------------------------------ windowed sampling
def test_windowed_sample_batch_gathers_consecutive_rows_of_one_episode():
    dataset = _two_episodes()
    data = trajectory_windows(training_arrays(dataset), dataset, horizon=3, use_padding=False, discount=1.0)
    batch = jax.jit(sample_batch, static_argnums=2)(jax.tree_util.tree_map(jnp.asarray, data),
                                                    jax.random.PRNGKey(0), 64)
    assert set(batch) == {"observations", "actions", "returns"}
    assert batch["observations"].shape == (64, 3, 2) and batch["actions"].shape == (64, 3, 1)
    assert batch["returns"].shape == (64, 3)
    rows = np.asarray(batch["observations"][..., 0])
    np.testing.assert_array_equal(np.diff(rows, axis=1), 1.0)  # consecutive rows
    # Without padding a window lies inside one episode: rows 0-4 or 5-7, so a start is 0, 1, 2 or 5.
    assert set(rows[:, 0].astype(int)) == {0, 1, 2, 5}
    np.testing.assert_allclose(np.asarray(batch["actions"][..., 0]), rows / 10, atol=1e-6)


def test_sample_batch_without_window_keys_keeps_the_transition_layout():
    dataset = _two_episodes()
    data = jax.tree_util.tree_map(jnp.asarray, training_arrays(dataset))
    key = jax.random.PRNGKey(3)
    batch = sample_batch(data, key, 16)
    assert {k: v.shape for k, v in batch.items()} == {
        "observations": (16, 2), "actions": (16, 1), "rewards": (16,), "next_observations": (16, 2), "dones": (16,)}
    index = np.asarray(jax.random.randint(key, (16,), 0, len(dataset)))
    np.testing.assert_array_equal(np.asarray(batch["rewards"]), dataset.rewards[index])


# ---------------------------------------------------------------------------------------- trajectory windows
def test_episode_ends_from_dones_and_broken_successors():
    np.testing.assert_array_equal(episode_ends(_two_episodes()), [4, 7])
    np.testing.assert_array_equal(episode_ends(_two_episodes(terminal_first=False)), [4, 7])


@pytest.mark.parametrize("use_padding", [False, True])
def test_trajectory_windows_starts_and_returns(use_padding):
    dataset = _two_episodes()
    gamma, penalty, horizon = 0.5, -10.0, 3
    out = trajectory_windows(training_arrays(dataset), dataset, horizon, use_padding, gamma,
                             termination_penalty=penalty)
    np.testing.assert_array_equal(out["window_offsets"], [0, 1, 2])
    rewards = [[1.0, 2.0, 3.0, 4.0, 5.0 + penalty], [6.0, 7.0, 8.0]]  # the first episode ends in a terminal

    def closed_form(episode):
        r = rewards[episode]
        return [sum(gamma ** k * r[i + k] for k in range(len(r) - i)) for i in range(len(r))]

    pad = horizon - 1 if use_padding else 0
    second = 5 + pad  # the second episode's first row
    if use_padding:
        np.testing.assert_array_equal(out["window_starts"], [0, 1, 2, 3, 4, second, second + 1, second + 2])
    else:
        np.testing.assert_array_equal(out["window_starts"], [0, 1, 2, second])
    expected_returns = closed_form(0) + [0.0] * pad + closed_form(1) + [0.0] * pad
    np.testing.assert_allclose(out["returns"], expected_returns, rtol=1e-6)
    assert len(out["observations"]) == len(out["actions"]) == len(out["returns"]) == 8 + 2 * pad
    # Padding rows are zeros (Diffuser's zero-filled episode slots); real rows keep their data.
    np.testing.assert_array_equal(out["observations"][5:5 + pad], 0.0)
    np.testing.assert_array_equal(out["observations"][second:second + 3, 0], [5, 6, 7])
    # Every window's rows stay inside the layout.
    assert out["window_starts"].max() + horizon <= len(out["observations"])


def test_trajectory_windows_cap_at_max_path_length_and_reject_short_episodes():
    dataset = _two_episodes()
    out = trajectory_windows(training_arrays(dataset), dataset, 3, True, 1.0, max_path_length=4)
    np.testing.assert_array_equal(out["window_starts"], [0, 1, 7, 8])  # starts <= 4 - 3 in each episode
    with pytest.raises(ValueError, match="horizon=6"):
        trajectory_windows(training_arrays(dataset), dataset, 6, False, 1.0)


# ------------------------------------------------------------------------------------------------- the agent
from dql.agents import create_agent  # noqa: E402
from dql.agents.diffuser import DiffuserAgent  # noqa: E402
from tests.helpers import config_of, run_chunk  # noqa: E402

TINY = dict(horizon=4, diffusion_steps=10, dim=8, dim_mults=(1, 2), ema_start=0, ema_every=1, ema_decay=0.9,
            lr=2e-3, value_lr=2e-3, num_plan_samples=4, steps=300, use_value_guide=False, max_path_length=100)


def _drift_dataset(episodes=40, length=12, seed=0):
    """A 1-D point moving x_{t+1} = x_t + a with a constant a per episode: +0.1 for starts in [0.2, 1], -0.1 for
    starts in [-1, -0.2]; the action at a state is therefore the sign of x times 0.1."""
    rng = np.random.default_rng(seed)
    observations, actions, next_observations, dones = [], [], [], []
    for episode in range(episodes):
        sign = 1.0 if episode % 2 == 0 else -1.0
        x = sign * rng.uniform(0.2, 1.0) + 0.1 * sign * np.arange(length + 1)
        observations.append(x[:-1, None])
        next_observations.append(x[1:, None])
        actions.append(np.full((length, 1), 0.1 * sign))
        dones.append(np.zeros(length))
    cat = lambda parts: np.concatenate(parts).astype(np.float32)  # noqa: E731
    return Dataset(observations=cat(observations), actions=cat(actions), rewards=cat(observations)[:, 0].copy(),
                   next_observations=cat(next_observations), dones=cat(dones), name="drift", source="test",
                   episode_returns=np.zeros(episodes), max_action=np.array([1.0], np.float32))


def _agent(dataset, config, seed=0):
    stats = DiffuserAgent.dataset_statistics(dataset, config)
    return jax.jit(lambda key: create_agent("diffuser", key, dataset.observation_dim, dataset.action_dim,
                                            dataset.max_action, config, None, stats))(jax.random.PRNGKey(seed))


@pytest.mark.slow
def test_diffuser_learns_the_data_s_first_action_and_dynamics():
    dataset = _drift_dataset()
    config = config_of("diffuser", **TINY)
    agent = _agent(dataset, config)
    data = DiffuserAgent.training_arrays(dataset, config)
    agent, _, metrics = run_chunk(agent, data, jax.random.PRNGKey(1), 64, config.steps)
    loss = np.asarray(metrics["bc_loss"])
    assert np.all(np.isfinite(loss)) and loss[-50:].mean() < 0.5 * loss[:10].mean()
    starts = jnp.array([[0.5], [-0.5], [0.8], [-0.3]])
    actions, chosen, _ = jax.jit(agent.plans)(starts, jax.random.PRNGKey(2))
    np.testing.assert_allclose(np.asarray(actions[:, 0]), [0.1, -0.1, 0.1, -0.1], atol=0.04)
    observations = np.asarray(agent.unnormalize(chosen[..., 1:], "observation"))[..., 0]
    np.testing.assert_allclose(observations[:, 0], starts[:, 0], atol=1e-5)  # the start is pinned
    # The plan moves the way the data does from there (a few hundred tiny updates learn the first action well,
    # the rest of the trajectory only roughly: its direction).
    np.testing.assert_array_equal(np.sign(observations[:, 1] - observations[:, 0]), [1, -1, 1, -1])
    assert np.array_equal(np.asarray(jax.jit(agent.sample_actions)(starts, jax.random.PRNGKey(2))),
                          np.asarray(actions))


@pytest.mark.slow
def test_value_guidance_moves_plans_toward_higher_value_and_the_best_plan_is_chosen():
    dataset = _drift_dataset(episodes=4)
    config = config_of("diffuser", **{**TINY, "use_value_guide": True, "dim_mults": (1, 4), "guide_scale": 1.0,
                                      "t_stopgrad": 0, "n_guide_steps": 2, "num_plan_samples": 8,
                                      "predict_epsilon": True, "clip_denoised": True, "scale_grad_by_std": False})
    agent = _agent(dataset, config)
    # A model predicting zero noise keeps x_t's content (x0 = clip(x_t / sqrt(abar))), so what a guide adds to x
    # reaches the plan; a known guide: the normalised first action.
    agent = agent.replace(model_ema_params=jax.tree_util.tree_map(jnp.zeros_like, agent.model_ema_params))
    starts = jnp.linspace(-1.0, 1.0, 8)[:, None]
    first_action = lambda x, t: x[:, 0, 0]  # noqa: E731
    key = jax.random.PRNGKey(4)
    unguided = agent.replace(hp=dataclasses.replace(agent.hp, guide_scale=0.0))
    n, shape = 8, (8 * 8, 4, 2)
    k1, k2 = jax.random.split(key)  # as `plans` splits its key
    noise = (jax.random.normal(k1, shape), jax.random.normal(k2, (10, *shape)))
    guided, sample_values = jax.jit(agent.plan_with_noise, static_argnums=3)(starts, *noise, first_action)
    plain, _ = jax.jit(unguided.plan_with_noise, static_argnums=3)(starts, *noise, first_action)
    # Normalised plans are clipped to [-1, 1]: the guide pushes every sample's first action to the top (+0.1 in the
    # data's units); without it they scatter.
    np.testing.assert_allclose(np.asarray(guided[:, :, 0, 0]), 1.0, atol=1e-4)
    assert float(np.mean(plain[:, :, 0, 0])) < 0.5
    # `plans` picks the highest-valued sample per state and acts with its first action.
    a_guided, chosen, values = jax.jit(agent.plans, static_argnums=2)(starts, key, first_action)
    best = np.argmax(np.asarray(sample_values), axis=1)
    np.testing.assert_allclose(np.asarray(chosen), np.asarray(guided)[np.arange(8), best], atol=1e-5)
    np.testing.assert_allclose(np.asarray(values), np.asarray(sample_values).max(axis=1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a_guided), 0.1, atol=1e-4)
    assert n == config.num_plan_samples


@pytest.mark.slow
def test_value_model_trains_on_window_returns_in_the_update():
    dataset = _drift_dataset(episodes=8)
    config = config_of("diffuser", **{**TINY, "use_value_guide": True, "dim_mults": (1, 4), "value_discount": 0.5})
    agent = _agent(dataset, config)
    data = DiffuserAgent.training_arrays(dataset, config)
    trained, _, metrics = run_chunk(agent, data, jax.random.PRNGKey(1), 64, 60)
    value_loss = np.asarray(metrics["value_loss"])
    assert np.all(np.isfinite(value_loss)) and value_loss[-10:].mean() < 0.5 * value_loss[:5].mean()
    assert int(trained.step) == 60
    # EMA with ema_start 0, every update, decay 0.9: not the online weights, not the initial ones.
    leaf = lambda tree: np.asarray(jax.tree_util.tree_leaves(tree)[0])  # noqa: E731
    assert not np.allclose(leaf(trained.value_ema_params), leaf(trained.value.params))
    assert not np.allclose(leaf(trained.value_ema_params), leaf(agent.value_ema_params))


# ----------------------------------------------------------------------------------------------- the real loop
from dql.data import d4rl  # noqa: E402
from dql.trainer import agent_arrays, agent_statistics  # noqa: E402


def _loop_config(**overrides):
    config = config_of("diffuser", **{**TINY, "diffusion_steps": 4, "dim_mults": (1, 4), "use_value_guide": True,
                                      "num_plan_samples": 2, "steps": 20, "batch_size": 16, "steps_per_dispatch": 10,
                                      "eval_every": 10, "save_every": 10, "eval_episodes": 1, **overrides})
    config.seed = 0  # set by dql.train, not a key of the algorithm's config
    return config


def test_trainer_hooks_give_windows_to_diffuser_and_transitions_to_the_others(pendulum_file):
    dataset = d4rl.read_hdf5(pendulum_file)
    windows = agent_arrays(_loop_config(), dataset)
    assert {"window_starts", "window_offsets", "returns"} <= set(windows)
    stats = agent_statistics(_loop_config(), dataset)
    np.testing.assert_allclose(stats["action_scale"], dataset.actions.std(0), rtol=1e-5)
    limits = agent_statistics(_loop_config(normalizer="limits"), dataset)
    np.testing.assert_allclose(limits["observation_shift"],
                               (dataset.observations.max(0) + dataset.observations.min(0)) / 2, rtol=1e-5)
    other = config_of("iql")
    np.testing.assert_array_equal(agent_arrays(other, dataset)["rewards"], training_arrays(dataset)["rewards"])
    assert set(agent_arrays(other, dataset)) == set(training_arrays(dataset))
    mean, std = agent_statistics(other, dataset)
    np.testing.assert_allclose(mean, dataset.observations.mean(0))


@pytest.mark.parametrize("overrides, message", [
    ({"horizon": 6, "dim_mults": (1, 2, 4)}, "--config.horizon=6 must be a positive multiple of 4"),
    ({"normalizer": "cdf"}, "--config.normalizer='cdf'"),
    ({"dim": 12}, "--config.dim=12"),
    ({"num_plan_samples": 0}, "--config.num_plan_samples must be >= 1"),
    ({"max_path_length": 2}, "--config.max_path_length=2"),
])
def test_bad_config_values_stop_with_the_flag(overrides, message):
    from dql.agents import hyperparams

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hyperparams("diffuser", config_of("diffuser", **{**TINY, **overrides}), [1.0])
