"""Diffusion Policy: its training windows, EMA schedule, chunk queue, guidance arithmetic, and what it learns on the
four-mode bandit (every mode, where Gaussian BC averages them) and on a two-task bandit (the goal selects the
task's modes; guidance scale 0 is the unconditional model), and diffusion_bc's same goal conditioning on that
bandit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents import create_agent
from dql.agents.conditioning import guided, with_goal_kept
from dql.agents.diffusion_policy import DiffusionPolicyAgent, ema_decay
from dql.data import Dataset
from dql.data.bandit import MODES, bandit_data, bandit_dataset, mode_fractions
from dql.data.windows import action_chunk_windows
from tests.helpers import run_chunk, small_config


def episodes_dataset(lengths, obs_dim=2, act_dim=1):
    """Episodes of the given lengths; observation and action of row i hold i (an episode ends where the next
    observation is not the next row's)."""
    rows = sum(lengths)
    observations = np.repeat(np.arange(rows, dtype=np.float32)[:, None], obs_dim, axis=1)
    next_observations = np.roll(observations, -1, axis=0)
    next_observations[np.cumsum(lengths) - 1] += 0.5
    return Dataset(observations=observations, actions=observations[:, :act_dim].copy(),
                   rewards=np.zeros(rows, np.float32), next_observations=next_observations,
                   dones=np.zeros(rows, np.float32), name="rows", source="test",
                   episode_returns=np.zeros(len(lengths)), max_action=np.ones(act_dim, np.float32))


def test_chunk_windows_are_edge_padded_per_episode():
    data = action_chunk_windows(episodes_dataset([3, 1]), obs_horizon=2, pred_horizon=4)
    windows = data["window_starts"][:, None] + data["window_offsets"][None]
    actions = data["actions"][windows, 0]
    # One window per data row: observations t-1, t (the first row repeated before it), actions t-1 .. t+2 (the
    # last row repeated after it); the one-row episode is that row throughout.
    np.testing.assert_array_equal(actions, [[0, 0, 1, 2], [0, 1, 2, 2], [1, 2, 2, 2], [3, 3, 3, 3]])
    np.testing.assert_array_equal(data["observations"][windows[:, :2], 0], [[0, 0], [0, 1], [1, 2], [3, 3]])


def test_ema_decay_follows_diffusion_policys_schedule():
    decays = np.asarray([ema_decay(jnp.asarray(step), 0.75, 0.9999) for step in (0, 1, 2, 10, 10**7)])
    # EMAModel: 0 for its first two updates, then 1 - (1 + n)^-0.75 with n = step - 1, capped at 0.9999.
    np.testing.assert_allclose(decays, [0.0, 0.0, 1 - 2**-0.75, 1 - 10**-0.75, 0.9999], rtol=1e-6)


def test_guidance_mixes_conditional_and_unconditional_predictions():
    def eps_fn(x, t, condition):  # a stand-in network: the condition's keep flag picks the prediction
        return x * (1.0 + 2.0 * condition[:, -1:]) + t[:, None]

    x, t = jnp.ones((3, 2)), jnp.arange(3)
    condition_of = lambda keep: with_goal_kept(jnp.ones((3, 2)), 1, keep)  # noqa: E731
    conditional, unconditional = 3.0 * x + t[:, None], x + t[:, None]
    for scale in (0.0, 1.0, 2.5):
        np.testing.assert_allclose(guided(eps_fn, scale)(x, t, condition_of),
                                   unconditional + scale * (conditional - unconditional), rtol=1e-6)


def test_the_chunk_queue_replans_every_action_horizon_steps():
    config = small_config("diffusion_policy", pred_horizon=8, action_horizon=3, dim_mults=(1, 2))
    agent = create_agent("diffusion_policy", jax.random.PRNGKey(0), 2, 1, [1.0], config)
    act = jax.jit(lambda agent, *args: agent.act(*args))
    executed_chunk = jax.jit(lambda agent, history, key: agent.executed(agent.predict_chunks(history, key)))
    observations = [jnp.full((2, 2), float(i)) for i in range(5)]
    memory = agent.begin(observations[0], jax.random.PRNGKey(9))
    for t in range(5):
        action, memory = act(agent, observations[t], memory, jnp.asarray(t), jax.random.PRNGKey(t))
        if t == 0:  # the first chunk, planned from the first state repeated as its history
            expected = executed_chunk(agent, jnp.stack([observations[0]] * 2, 1), jax.random.PRNGKey(0))
        if t == 3:  # the next one at t = Ta, from the last two observations
            expected = executed_chunk(agent, jnp.stack(observations[2:4], 1), jax.random.PRNGKey(3))
        np.testing.assert_allclose(action, expected[:, t % 3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(memory["history"], jnp.stack(observations[3:5], 1))


def train_windows(data: Dataset, config, steps: int, seed: int = 0):
    arrays = DiffusionPolicyAgent.training_arrays(data, config)
    agent = create_agent("diffusion_policy", jax.random.PRNGKey(seed), data.observation_dim, data.action_dim,
                         data.max_action, config, None, DiffusionPolicyAgent.dataset_statistics(data, config))
    agent, _, metrics = run_chunk(agent, arrays, jax.random.PRNGKey(seed + 1), int(config.batch_size), steps)
    return agent, metrics


def bandit_config(**overrides):
    # A small U-Net over chunks of 4 (To 2, Ta 2), DDPM's full chain of 20 cosine steps (a 20-step linear schedule
    # leaves x_T 0.9 signal, so samples drawn from N(0, I) land between the modes): the bandit's chunks are one action
    # repeated, so the chunk model must find the four modes as a one-step model would.
    return small_config("diffusion_policy", pred_horizon=4, action_horizon=2, dim=16, dim_mults=(1, 2),
                        diffusion_steps=20, beta_schedule="cosine", sampler="ddpm", lr=1e-3, batch_size=64,
                        steps=1500, warmup_steps=50, **overrides)


@pytest.mark.slow
def test_diffusion_policy_keeps_every_bandit_mode():
    agent, metrics = train_windows(bandit_dataset(), bandit_config(), 1500)
    assert float(metrics["bc_loss"][-100:].mean()) < 0.5 * float(metrics["bc_loss"][:100].mean())
    actions = np.asarray(agent.sample_actions(jnp.zeros((400, 1)), jax.random.PRNGKey(3)))
    fractions = mode_fractions(actions)
    # Each mode holds a quarter of the data; Gaussian BC (tests/test_baselines_bandit.py) puts < 5% on all four.
    assert np.all(fractions > 0.2) and fractions.sum() > 0.9, fractions


def two_task_bandit(n=4000, seed=0) -> Dataset:
    """Observation [0, goal]: goal +1 takes the upper modes (0, 1) of the bandit, goal -1 the lower ones (2, 3)."""
    data = bandit_data(n, seed)
    upper = np.linalg.norm(data["actions"][:, None] - MODES[None], axis=-1).argmin(1) < 2
    goal = np.where(upper, 1.0, -1.0).astype(np.float32)
    observations = np.stack([np.zeros(n, np.float32), goal], axis=1)
    return Dataset(observations=observations, actions=data["actions"], rewards=data["rewards"],
                   next_observations=observations, dones=data["dones"], name="two-task bandit", source="test",
                   episode_returns=data["rewards"].copy(), max_action=np.ones(2, np.float32))


@pytest.mark.slow
def test_the_goal_selects_its_modes_and_guidance_zero_is_unconditional():
    agent, _ = train_windows(two_task_bandit(), bandit_config(goal_dims=1, condition_dropout=0.3), 1500)
    upper = jnp.tile(jnp.asarray([[0.0, 1.0]]), (400, 1))

    def fractions(scale):
        policy = agent.replace(hp=agent.hp.__class__(**{**agent.hp.__dict__, "guidance_scale": scale}))
        return mode_fractions(np.asarray(policy.sample_actions(upper, jax.random.PRNGKey(5))))

    conditional, unconditional, guided_samples = fractions(1.0), fractions(0.0), fractions(2.0)
    # Goal +1: both upper modes, nothing below.
    assert conditional[:2].min() > 0.4 and conditional[2:].sum() < 0.02, conditional
    # Scale 0 drops the goal: the data's mixture, a quarter per mode.
    np.testing.assert_allclose(unconditional, 0.25, atol=0.07)
    # Guidance past 1 stays on the goal's modes.
    assert guided_samples[:2].min() > 0.4 and guided_samples[2:].sum() < 0.02, guided_samples


@pytest.mark.slow
def test_diffusion_bc_takes_the_same_goal_conditioning_and_guidance():
    data = two_task_bandit()
    config = small_config("diffusion_bc", hidden_dims=(64, 64), lr=1e-3, beta_schedule="linear", diffusion_steps=10,
                          goal_dims=1, condition_dropout=0.3, steps=1500)
    agent = create_agent("diffusion_bc", jax.random.PRNGKey(0), 2, 2, [1.0, 1.0], config, axis_name="data")
    batches = {key: jnp.asarray(getattr(data, key)) for key in ("observations", "actions", "rewards",
                                                                  "next_observations", "dones")}
    agent, _, _ = run_chunk(agent, batches, jax.random.PRNGKey(1), 128, 1500)
    upper = jnp.tile(jnp.asarray([[0.0, 1.0]]), (400, 1))

    def fractions(scale):
        policy = agent.replace(hp=agent.hp.__class__(**{**agent.hp.__dict__, "guidance_scale": scale}))
        return mode_fractions(np.asarray(policy.sample_actions(upper, jax.random.PRNGKey(5))))

    conditional, unconditional = fractions(1.0), fractions(0.0)
    # Goal +1: its two modes (0.40 / 0.35 on the Intel Xeon), nothing below.
    assert conditional[:2].min() > 0.3 and conditional[2:].sum() < 0.02, conditional
    # Scale 0 drops the goal: the lower modes come back, about as many as the upper ones (0.15-0.19 each; the
    # 10-step chain of the 64-wide MLP leaves a third between the modes).
    assert unconditional.min() > 0.1 and abs(unconditional[:2].sum() - unconditional[2:].sum()) < 0.15, unconditional
