"""IQL's actor dropout (the authors' Kitchen and Adroit setting): the config rows, and dropout acting while the actor
trains and never while it acts. The update-for-update comparison with the authors' code is
`python -m benchmarks.parity --algo=iql` (it needs their checkout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents import create_agent
from dql.agents.iql import IQLNoise
from dql.configs import resolve
from dql.nets import GaussianPolicy
from tests.helpers import random_batch, same_leaves

OBS, ACT, BATCH = 5, 3, 64
KITCHEN_AND_ADROIT = ("kitchen-complete-v0", "kitchen-partial-v0", "kitchen-mixed-v0", "pen-human-v1",
                      "pen-cloned-v1")


def test_kitchen_and_adroit_rows_drop_out_a_tenth_as_the_reference_and_nothing_else_does():
    # ikostrikov/implicit_q_learning configs/kitchen_config.py (README: "Kitchen and Adroit"): dropout_rate = 0.1;
    # mujoco_config.py and antmaze_config.py: None.
    for row in KITCHEN_AND_ADROIT:
        config = resolve("iql", row)
        assert (config.dropout_rate, config.expectile, config.temperature) == (0.1, 0.7, 0.5), row
    for row in ("hopper-medium-v2", "walker2d-medium-expert-v2", "antmaze-large-play-v2", "gym:Hopper-v5/medium",
                None):
        assert resolve("iql", row).dropout_rate == 0.0, row


def _agent(dropout_rate, seed=0, **overrides):
    config = resolve("iql", None)
    config.update(hidden_dims=(32, 32), dropout_rate=dropout_rate, steps=100, **overrides)
    return create_agent("iql", jax.random.PRNGKey(seed), OBS, ACT, [1.0] * ACT, config)


def _batch(seed=0):
    return random_batch(BATCH, OBS, ACT, action_bound=0.9, seed=seed)


def test_the_dropout_policy_starts_as_the_gaussian_policy_did():
    # Same parameters from the same key: checkpoints of the policy before dropout existed still restore.
    key, observations = jax.random.PRNGKey(3), jnp.zeros((1, OBS))
    ours = _agent(0.1, seed=3).actor.params
    theirs = GaussianPolicy(ACT, (32, 32), "relu", state_dependent_std=False, tanh_mean=True).init(
        jax.random.split(key, 4)[1], observations)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs) and same_leaves(ours, theirs)


@pytest.mark.slow
def test_dropout_acts_while_the_actor_trains():
    plain, dropping = _agent(0.0), _agent(0.5)
    assert same_leaves(plain.actor.params, dropping.actor.params)
    batch = _batch()
    noise = dropping.draw_noise(jax.random.PRNGKey(1), BATCH)
    assert [m.shape for m in noise.dropout] == [(BATCH, 32), (BATCH, 32)]
    assert 0.4 < float(np.mean(np.concatenate([np.ravel(m) for m in noise.dropout]))) < 0.6  # the kept share

    after_plain, _ = plain.update(batch)
    after_dropping, metrics = dropping.update(batch)
    assert same_leaves(after_plain.value.params, after_dropping.value.params)  # only the actor drops units
    assert same_leaves(after_plain.critic.params, after_dropping.critic.params)
    assert not same_leaves(after_plain.actor.params, after_dropping.actor.params)
    # update() draws its masks from a key split off the agent's; without dropout it draws nothing.
    rng, key = jax.random.split(dropping.rng)
    by_hand, by_hand_metrics = dropping.replace(rng=rng).update_with_noise(batch, dropping.draw_noise(key, BATCH))
    assert same_leaves(after_dropping, by_hand) and float(metrics["actor_loss"]) == float(by_hand_metrics["actor_loss"])
    assert same_leaves(after_plain.rng, plain.rng)

    # Masks that drop every unit of the last hidden layer leave the hidden layers without gradient.
    all_dropped = IQLNoise(dropout=(jnp.ones((BATCH, 32), bool), jnp.zeros((BATCH, 32), bool)))
    moved, _ = dropping.update_with_noise(batch, all_dropped)
    before, after = dropping.actor.params["params"], moved.actor.params["params"]
    assert same_leaves(before["TorchDense_0"], after["TorchDense_0"]) and same_leaves(before["TorchDense_1"], after["TorchDense_1"])
    assert not same_leaves(before["TorchDense_2"], after["TorchDense_2"])


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_never_acts_when_the_policy_acts(rate):
    plain, dropping = _agent(0.0), _agent(rate)
    dropping, _ = dropping.update(_batch())
    plain = plain.replace(actor=plain.actor.replace(params=dropping.actor.params))
    observations = _batch(1)["observations"]
    actions = [np.asarray(dropping.sample_actions(observations, jax.random.PRNGKey(k))) for k in range(3)]
    assert all(np.array_equal(actions[0], a) for a in actions[1:])  # the mean, no random masks
    np.testing.assert_array_equal(actions[0], plain.sample_actions(observations, jax.random.PRNGKey(0)))


def test_dropout_rate_must_be_below_one():
    with pytest.raises(ValueError, match="dropout_rate must be < 1"):
        _agent(1.0)
    with pytest.raises(ValueError, match="dropout_rate must be >= 0"):
        _agent(-0.1)
