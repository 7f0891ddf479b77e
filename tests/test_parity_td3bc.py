"""TD3+BC's pieces that the comparison with the authors' code rests on: the split of update() into its draws and
update_with_noise, the clipped target smoothing, and torch's Adam. The update-for-update comparison itself is
`python -m benchmarks.parity --algo=td3bc` (it needs their checkout and PyTorch)."""

import jax
import jax.numpy as jnp
import numpy as np

from dql.agents import create_agent
from dql.agents.td3bc import TD3BCNoise
from dql.configs import resolve
from tests.helpers import random_batch, same_leaves

OBS, ACT, BATCH = 5, 3, 32


def _agent():
    config = resolve("td3bc", None)
    config.update(hidden_dims=(16, 16), steps=100)
    stats = (np.linspace(-1, 1, OBS).astype(np.float32), np.linspace(0.5, 2, OBS).astype(np.float32))
    return create_agent("td3bc", jax.random.PRNGKey(0), OBS, ACT, [1.0] * ACT, config, observation_stats=stats)


def _batch():
    return random_batch(BATCH, OBS, ACT, action_bound=1.0, seed=0)


def test_update_is_its_draws_then_update_with_noise():
    def both(agent, batch):
        rng, step_key = jax.random.split(agent.rng)
        noise = agent.draw_noise(step_key, BATCH)
        return agent.update(batch), agent.replace(rng=rng).update_with_noise(batch, noise), noise

    by_update, by_hand, noise = jax.jit(both)(_agent(), _batch())  # one program: the same rounding on both sides
    assert noise.target_smoothing.shape == (BATCH, ACT)
    assert same_leaves(by_update, by_hand)


def test_target_smoothing_is_clipped_at_noise_clip():
    agent, batch = _agent(), _batch()
    next_observations = agent._normalize(batch["next_observations"])
    at_clip = agent.hp.noise_clip / agent.hp.policy_noise  # a draw this large is smoothed by exactly noise_clip
    for sign in (1.0, -1.0):
        huge = agent.backup(batch, next_observations, TD3BCNoise(jnp.full((BATCH, ACT), sign * 1e3)))
        clipped = agent.backup(batch, next_observations, TD3BCNoise(jnp.full((BATCH, ACT), sign * at_clip)))
        np.testing.assert_array_equal(huge, clipped)


def test_adam_is_torchs():
    # torch.optim.Adam's first step is lr * g / (|g| + eps); optax.adam's is 6.5e-6 short of it in float32 (1 - 0.999
    # rounded), more than float32 rounding of the step.
    agent = _agent()
    for state, lr in ((agent.actor, agent.hp.lr), (agent.critic, agent.hp.critic_lr)):
        grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), state.params)
        updates, _ = state.tx.update(grads, state.opt_state, state.params)
        for leaf in jax.tree_util.tree_leaves(updates):
            np.testing.assert_allclose(leaf, -lr * 0.5 / (0.5 + 1e-8), rtol=1e-6)
