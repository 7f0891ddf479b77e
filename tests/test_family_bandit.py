"""ReBRAC and FQL: their losses against closed forms, and their behaviour on the 2-D multimodal bandit of
test_bandit.py (four action modes, rewards 1.0 / 0.6 / 0.2 / 0.6, one-step episodes so Q(s, a) = r(a)).

The bandit's single state is the constant observation 1 here rather than 0. With an all-zero observation the
critics' input at the centre of the action box is near zero, so every first-layer unit outputs about its bias, and
the biases start equal (0.1 in ReBRAC, 0 in FQL); the LayerNorm that follows then divides by a near-zero spread,
and the critics come out flat or arbitrary near the centre: where no data lies, but where ReBRAC's actor starts
(its output layer is initialised within 1e-3) and where a behaviour-cloning pull averages the four modes. A
constant 1 carries no more information than a constant 0. The data's next actions (ReBRAC's critic penalty) are the
actions themselves: every episode ends after one step, so they never enter a target.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.agents import hyperparams, select_actions
from dql.agents.fql import q_loss
from dql.agents.rebrac import actor_objective, critic_backup
from dql.data.bandit import BEST, MODE_REWARDS, MODES, bandit_data, mode_fractions
from tests.helpers import bandit_agent, config_of, train_on_bandit

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` skips it

STATE = 1.0


@pytest.fixture(scope="module")
def data():
    return bandit_data(state=STATE)


# Both methods' bandit settings. The closed-form checks build their agents with the same ones, so the compiled
# initialiser is shared with the bandit runs (JAX's compilation cache, see conftest.py).
REBRAC = dict(hidden_dims=(64, 64), actor_bc_coef=0.01, critic_bc_coef=0.01, steps=1000)
FQL = dict(hidden_dims=(64, 64), lr=1e-3, alpha=0.03, steps=1500)


def train(algo, data, **overrides):
    return train_on_bandit(algo, data, config_of(algo, **overrides))


def states(n):
    return np.full((n, 1), STATE, np.float32)


def policy_actions(agent, n=2000, seed=3):
    return np.asarray(select_actions(agent, states(n), jax.random.PRNGKey(seed)))


@jax.jit
def flow_samples(agent):
    return agent.sample_flow(states(2000), jax.random.PRNGKey(5))


@jax.jit
def q_at_modes(agent):
    return agent.critic.apply_fn(agent.critic.params, states(4), MODES)


# ---- ReBRAC


def test_rebrac_critic_backup_and_actor_objective_closed_form():
    # r + gamma (1 - d) (Q' - beta ||a' - a'_data||^2): the second transition is terminal.
    backup = critic_backup(rewards=jnp.array([1.0, 2.0]), dones=jnp.array([0.0, 1.0]), next_q=jnp.array([3.0, 5.0]),
                           next_actions=jnp.array([[0.5, -0.5], [0.0, 0.0]]),
                           next_dataset_actions=jnp.array([[0.0, 0.0], [1.0, 1.0]]), discount=0.9, beta=2.0)
    np.testing.assert_allclose(backup, [1.0 + 0.9 * (3.0 - 2.0 * 0.5), 2.0], rtol=1e-6)
    # mean(beta ||pi - a||^2 - Q / mean |Q|) with the normaliser held constant.
    pi, a, q = jnp.array([[0.5, 0.0], [0.0, 0.0]]), jnp.array([[0.0, 0.0], [0.0, 1.0]]), jnp.array([-4.0, 2.0])
    loss, penalty, lam = actor_objective(pi, a, q, 0.5, True, None)
    assert float(lam) == pytest.approx(1 / 3)
    assert float(penalty) == pytest.approx((0.25 + 1.0) / 2)
    assert float(loss) == pytest.approx(np.mean([0.5 * 0.25 + 4 / 3, 0.5 * 1.0 - 2 / 3]), rel=1e-6)
    np.testing.assert_allclose(jax.grad(lambda q: actor_objective(pi, a, q, 0.5, True, None)[0])(q), [-1 / 6] * 2,
                               rtol=1e-6)
    assert float(actor_objective(pi, a, q, 0.5, False, None)[2]) == 1.0


def test_rebrac_agent_target_penalty_noise_and_update_schedule():
    rng = np.random.default_rng(0)
    s, a_data = rng.normal(size=(6, 1)).astype(np.float32), rng.uniform(-1, 1, (6, 2)).astype(np.float32)
    r, d = rng.normal(size=6).astype(np.float32), np.array([0, 1, 0, 0, 1, 0], np.float32)
    noise = 10.0 * rng.normal(size=(6, 2)).astype(np.float32)  # 0.2 x noise is clipped at 0.5
    beta = 0.7
    agent = bandit_agent("rebrac", config_of("rebrac", **REBRAC))
    agent = agent.replace(hp=dataclasses.replace(agent.hp, critic_bc_coef=beta))

    @jax.jit
    def target_and_pieces(agent):
        expected_actions = jnp.clip(agent.actor.apply_fn(agent.actor_target_params, s)
                                    + jnp.clip(0.2 * noise, -0.5, 0.5), -1, 1)
        q_next = agent.critic.apply_fn(agent.critic_target_params, s, expected_actions).min(axis=0)
        return agent.critic_targets(s, a_data, r, d, noise), expected_actions, q_next

    (backup, next_actions), expected_actions, q_next = target_and_pieces(agent)
    np.testing.assert_allclose(next_actions, expected_actions, atol=1e-6)
    penalty = np.sum((np.asarray(expected_actions) - a_data) ** 2, axis=-1)
    np.testing.assert_allclose(backup, r + 0.99 * (1 - d) * (q_next - beta * penalty), rtol=1e-5, atol=1e-5)

    # CORL's schedule with policy_freq 2: the actor moves on updates 0, 2, ...; the critic target follows the
    # updated critic, the actor target the actor as it was before the update.
    batch = {"observations": s, "actions": a_data, "rewards": r, "next_observations": s, "dones": d,
             "next_actions": a_data}
    update = jax.jit(lambda agent: agent.update(batch))
    first, _ = update(agent)
    second, _ = update(first)
    third, _ = update(second)
    leaf = lambda tree: np.asarray(jax.tree_util.tree_leaves(tree)[-1])  # noqa: E731
    assert not np.allclose(leaf(first.actor.params), leaf(agent.actor.params))
    np.testing.assert_array_equal(leaf(second.actor.params), leaf(first.actor.params))
    np.testing.assert_array_equal(leaf(second.critic_target_params), leaf(first.critic_target_params))
    tau = 5e-3
    np.testing.assert_allclose(leaf(third.actor_target_params),
                               tau * leaf(second.actor.params) + (1 - tau) * leaf(second.actor_target_params),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(leaf(third.critic_target_params),
                               tau * leaf(third.critic.params) + (1 - tau) * leaf(second.critic_target_params),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(KeyError, match="next actions"):
        agent.update({k: v for k, v in batch.items() if k != "next_actions"})


def test_rebrac_moves_to_the_best_mode(data):
    agent, metrics = train("rebrac", data, **REBRAC)
    actions = policy_actions(agent, n=4)  # deterministic: one action
    assert mode_fractions(actions)[BEST] == 1.0, actions
    # The critic learned each mode's reward, and lambda = 1 / mean |Q(s, pi(s))|.
    q = np.asarray(q_at_modes(agent)).min(0)
    np.testing.assert_allclose(q, MODE_REWARDS, atol=0.1)
    assert float(metrics["lambda"][-1]) == pytest.approx(1.0, abs=0.15)


# ---- FQL


def test_fql_q_loss_and_distillation_closed_form():
    q = jnp.array([-4.0, 2.0, 6.0])
    loss, lam = q_loss(q, True, None)
    assert float(loss) == pytest.approx(-(4 / 3) / 4) and float(lam) == pytest.approx(0.25)
    np.testing.assert_allclose(jax.grad(lambda q: q_loss(q, True, None)[0])(q), [-0.25 / 3] * 3, rtol=1e-6)
    assert float(q_loss(q, False, None)[0]) == pytest.approx(-4 / 3)

    # A flow with constant velocity b integrates z to clip(z + b); a one-step policy with only an output bias c
    # returns c: the distillation loss is then mean (c - clip(z + b))^2, and its gradient 2 mean (c - clip(z + b)).
    agent = bandit_agent("fql", config_of("fql", **FQL))
    b, c = np.array([0.3, -0.6], np.float32), np.array([0.1, 0.2], np.float32)

    def constant(params, value):
        params = jax.tree_util.tree_map(np.zeros_like, params)
        params["params"]["FQLMLP_0"]["Dense_2"]["bias"] = np.asarray(value, np.float32)
        return params

    agent = agent.replace(flow=agent.flow.replace(params=constant(agent.flow.params, b)),
                          actor=agent.actor.replace(params=constant(agent.actor.params, [1.5, -0.2])))
    rng = np.random.default_rng(1)
    s, z = rng.normal(size=(5, 1)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    r, d = rng.normal(size=5).astype(np.float32), np.array([0, 0, 1, 0, 1], np.float32)
    actor_params = constant(agent.actor.params, c)

    @jax.jit
    def quantities(agent, actor_params):
        distill, actions = agent.distillation_loss(actor_params, s, z)
        grads = jax.grad(lambda p: agent.distillation_loss(p, s, z)[0])(actor_params)
        # The critics' target uses the agent's one-step policy, whose output is the constant (1.5, -0.2).
        next_qs = agent.critic.apply_fn(agent.critic_target_params, s, jnp.tile(jnp.array([[1.0, -0.2]]), (5, 1)))
        targets = {agg: agent.replace(hp=dataclasses.replace(agent.hp, q_agg=agg)).critic_targets(
            s, r, d, z) for agg in ("mean", "min")}
        return agent.flow_actions(agent.flow.params, s, z), distill, actions, grads, next_qs, targets

    flow, distill, actions, grads, next_qs, targets = quantities(agent, actor_params)
    flow_actions = np.clip(z + b, -1, 1)
    np.testing.assert_allclose(flow, flow_actions, atol=1e-6)
    np.testing.assert_allclose(actions, np.broadcast_to(c, (5, 2)))
    assert float(distill) == pytest.approx(np.mean((c - flow_actions) ** 2), rel=1e-6)
    np.testing.assert_allclose(grads["params"]["FQLMLP_0"]["Dense_2"]["bias"],
                               2 * np.mean(c - flow_actions, axis=0) / 2, rtol=1e-5)
    # The critics' target: r + gamma (1 - d) agg_i Q'_i(s', clip(mu(s', z'))), agg the mean or the min.
    for agg, reduce in (("mean", np.mean), ("min", np.min)):
        np.testing.assert_allclose(targets[agg], r + 0.99 * (1 - d) * reduce(np.asarray(next_qs), axis=0),
                                   rtol=1e-5, atol=1e-6)


def test_fql_one_step_policy_picks_the_best_mode_and_its_flow_keeps_every_mode(data):
    agent, _ = train("fql", data, **FQL)
    actions = policy_actions(agent)
    assert mode_fractions(actions)[BEST] > 0.9, actions.mean(0)
    # The behaviour flow, trained on the flow-matching loss alone (neither alpha nor Q reaches it), reproduces
    # every mode: that is what the one-step policy is distilled from.
    fractions = mode_fractions(np.asarray(flow_samples(agent)))
    assert np.all(fractions > 0.15) and fractions.sum() > 0.7, fractions
    # The critics learned each mode's reward.
    np.testing.assert_allclose(np.asarray(q_at_modes(agent)).mean(0), MODE_REWARDS, atol=0.1)


@pytest.mark.parametrize("algo, override, message", [
    ("rebrac", {"policy_freq": 0}, "--config.policy_freq must be >= 1"),
    ("rebrac", {"critic_bc_coef": -1.0}, "--config.critic_bc_coef must be >= 0"),
    ("fql", {"q_agg": "max"}, "--config.q_agg must be one of mean, min, got 'max'"),
    ("fql", {"flow_steps": 0}, "--config.flow_steps must be >= 1"),
])
def test_hyperparameters_are_checked(algo, override, message):
    with pytest.raises(ValueError, match=message):
        hyperparams(algo, config_of(algo, **override), [1.0])
