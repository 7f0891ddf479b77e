"""GAIL (--algo=gail): its losses and reward against closed forms, GAE by hand, learning on tiny problems, an exact
resume after SIGTERM, and `python -m dql.train --algo=gail` end to end with `dql.load_policy`."""

import csv
import dataclasses
import functools
import json
import math
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dql.agents import create_agent, hyperparams, select_actions
from dql.agents.gail import (
    GAILAgent,
    gae,
    gail_reward,
    gaussian_log_prob,
    logistic_loss,
)
from dql.configs import get_config

TINY = {"num_envs": 16, "rollout_length": 8, "batch_size": 32, "ppo_epochs": 2, "demo_batch_size": 64,
        "hidden_dims": (16, 16), "disc_hidden_dims": (16, 16), "disc_updates": 2, "steps": 640, "eval_every": 256,
        "save_every": 10_000, "eval_episodes": 2}


def tiny_config(**overrides):
    config = get_config("gail")
    config.update({**TINY, **overrides})
    config.seed = 0
    return config


@functools.cache
def base_agent():
    """One tiny agent for 2-dim observations and a 1-dim action bounded by 2, built by one compiled call (op by op
    its initialisers compile for seconds); tests vary it with `replace`."""
    return jax.jit(lambda key: create_agent("gail", key, 2, 1, [2.0], tiny_config()))(jax.random.PRNGKey(0))


def make_agent(**hyperparams):
    agent = base_agent()
    return agent.replace(hp=dataclasses.replace(agent.hp, **hyperparams))


def softplus(x):
    return math.log1p(math.exp(x))


def test_discriminator_loss_and_reward_match_closed_forms():
    expert, policy = jnp.array([2.0, -1.0, 0.0]), jnp.array([0.5, -3.0])
    # BCE with the expert labelled 1: -log sigmoid(l) = softplus(-l) for the expert, softplus(l) for the policy.
    want = 0.5 * (np.mean([softplus(-2.0), softplus(1.0), softplus(0.0)]) + np.mean([softplus(0.5), softplus(-3.0)]))
    assert float(logistic_loss(expert, policy)) == pytest.approx(want, rel=1e-6)
    # -log(1 - D), D = sigmoid(l): log 2 at l = 0, ~l for large l, ~e^l for very negative l; finite (no 1 - D = 0) at 100.
    logits = jnp.array([0.0, 3.0, -3.0, 100.0, -20.0])
    np.testing.assert_allclose(gail_reward(logits), [math.log(2.0), -math.log(1 - 1 / (1 + math.exp(-3.0))),
                                                     -math.log(1 - 1 / (1 + math.exp(3.0))), 100.0, softplus(-20.0)],
                               rtol=1e-5)
    # The agent's methods on a discriminator whose logits are a constant c (zero kernels, output bias c), with
    # actions given in the env's units (bound 2) and raw observations.
    agent = make_agent()
    c = 1.5
    params = jax.tree_util.tree_map(jnp.zeros_like, agent.discriminator.params)
    params["params"]["MLP_0"]["TorchDense_2"]["bias"] = jnp.array([c])
    agent = agent.replace(discriminator=agent.discriminator.replace(params=params))
    obs, actions = jnp.ones((4, 2)), jnp.full((4, 1), 2.0)
    loss, metrics = jax.jit(agent.discriminator_loss)(params, obs, actions, obs, actions)
    assert float(loss) == pytest.approx(0.5 * (softplus(-c) + softplus(c)), rel=1e-6)
    assert float(metrics["disc_expert_accuracy"]) == 1.0 and float(metrics["disc_policy_accuracy"]) == 0.0
    np.testing.assert_allclose(jax.jit(GAILAgent.rewards)(agent, obs, actions), np.full(4, softplus(c)), rtol=1e-6)


def test_gradient_penalty_is_zero_for_a_unit_slope_discriminator():
    # logits = x_0 (the first observation feature, normalised with std 1): |grad| = 1 everywhere, so the penalty
    # vanishes; with slope 3 it is (3 - 1)^2 = 4 times the weight.
    agent = make_agent(gradient_penalty=10.0)
    params = jax.tree_util.tree_map(jnp.zeros_like, agent.discriminator.params)
    mlp = params["params"]["MLP_0"]
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 2)) + 3.0
    actions = jnp.zeros((8, 1))
    loss_fn = jax.jit(agent.discriminator_loss)
    for slope, penalty in ((1.0, 0.0), (3.0, 4.0)):
        # A linear path: first hidden unit = slope * x_0 + 30 (positive, so ReLU passes it), then copied out.
        mlp["TorchDense_0"]["kernel"] = jnp.zeros((3, 16)).at[0, 0].set(slope)
        mlp["TorchDense_0"]["bias"] = jnp.zeros(16).at[0].set(30.0)
        mlp["TorchDense_1"]["kernel"] = jnp.zeros((16, 16)).at[0, 0].set(1.0)
        mlp["TorchDense_2"]["kernel"] = jnp.zeros((16, 1)).at[0, 0].set(1.0)
        loss, metrics = loss_fn(params, obs, actions, -obs, actions, jax.random.PRNGKey(2))
        assert float(metrics["disc_gradient_penalty"]) == pytest.approx(penalty, abs=1e-4)
        assert float(loss) == pytest.approx(float(metrics["disc_loss"]) + 10.0 * penalty, abs=1e-3)


def test_gae_by_hand_with_an_episode_end_in_the_middle():
    # One env, 4 steps; gamma 0.9, lambda 0.5. Step 1 ends its episode by termination (no bootstrap, no carry);
    # step 3 is the rollout's last and bootstraps from V(s'_3) = 4.
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])[:, None]
    values = jnp.array([0.5, 1.0, 1.5, 2.0])[:, None]
    next_values = jnp.array([1.0, 9.0, 2.0, 4.0])[:, None]  # 9: V of the terminal state, which must be ignored
    terminals = jnp.array([0.0, 1.0, 0.0, 0.0])[:, None]
    g, lam = 0.9, 0.5
    d3 = 4.0 + g * 4.0 - 2.0
    d2 = 3.0 + g * 2.0 - 1.5
    d1 = 2.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    a3 = d3
    a2 = d2 + g * lam * a3
    a1 = d1
    a0 = d0 + g * lam * a1
    advantages, returns = gae(rewards, values, next_values, terminals, terminals, g, lam)
    np.testing.assert_allclose(advantages[:, 0], [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(returns[:, 0], np.array([a0, a1, a2, a3]) + values[:, 0], rtol=1e-6)
    # A time-limit end (truncation) at step 1 bootstraps from V(s'_1) = 9 but still stops the carry.
    truncated, _ = gae(rewards, values, next_values, jnp.zeros_like(terminals), terminals, g, lam)
    np.testing.assert_allclose(truncated[:, 0], [d0 + g * lam * (d1 + g * 9.0), d1 + g * 9.0, a2, a3], rtol=1e-6)


def test_the_discriminator_separates_two_gaussians_and_rewards_the_expert_side():
    # Expert rows around +1, policy rows around -1 (observations and actions): a few hundred Adam steps of the loss
    # must classify both nearly perfectly and give expert-like rows the larger reward.
    agent = make_agent()
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    expert_obs = 1.0 + 0.3 * jax.random.normal(keys[0], (256, 2))
    policy_obs = -1.0 + 0.3 * jax.random.normal(keys[1], (256, 2))
    expert_act, policy_act = jnp.full((256, 1), 1.0), jnp.full((256, 1), -1.0)

    @jax.jit
    def train(disc):
        def step(disc, _):
            grads, metrics = jax.grad(agent.discriminator_loss, has_aux=True)(
                disc.params, policy_obs, policy_act, expert_obs, expert_act)
            return disc.apply_gradients(grads=grads), metrics
        return jax.lax.scan(step, disc, None, length=300)

    disc, metrics = train(agent.discriminator)
    assert float(metrics["disc_loss"][-1]) < 0.1 < float(metrics["disc_loss"][0])
    assert float(metrics["disc_expert_accuracy"][-1]) > 0.97 and float(metrics["disc_policy_accuracy"][-1]) > 0.97
    rewards = jax.jit(GAILAgent.rewards)
    trained = agent.replace(discriminator=disc)
    assert float(rewards(trained, expert_obs, expert_act).mean()) > 2.0
    assert float(rewards(trained, policy_obs, policy_act).mean()) < 0.1


def test_ppo_on_a_fixed_reward_moves_the_policy_to_the_rewarded_action():
    # A one-step bandit seen through ppo_loss: draws above 0 earn advantage +1, below 0 earn -1. Re-drawing from
    # the current policy each iteration (as rollouts do), the mean must climb well above 0; a sign error sends it
    # down. The entropy term (ent_coef > 0) must slow the std's collapse, not reverse the climb.
    agent = make_agent()
    adam = optax.adam(3e-2)  # a larger step than the tiny config's, so that 60 steps show the trend
    agent = agent.replace(policy=agent.policy.replace(tx=adam, opt_state=adam.init(agent.policy.params)),
                          value=agent.value.replace(tx=adam, opt_state=adam.init(agent.value.params)))
    obs = jnp.zeros((256, 2))

    @jax.jit
    def iteration(states, key):
        policy, value = states
        mean, log_std = policy.apply_fn(policy.params, obs)
        draws = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        batch = {"observations": obs, "draws": draws, "old_log_probs": gaussian_log_prob(mean, log_std, draws),
                 "advantages": jnp.sign(draws[:, 0]), "returns": jnp.zeros(256)}
        grads, metrics = jax.grad(agent.ppo_loss, has_aux=True)({"policy": policy.params, "value": value.params},
                                                              batch)
        return (policy.apply_gradients(grads=grads["policy"]), value.apply_gradients(grads=grads["value"])), metrics

    states = (agent.policy, agent.value)
    start = float(select_actions(agent, obs[:1], None)[0, 0])
    for key in jax.random.split(jax.random.PRNGKey(4), 60):
        states, metrics = iteration(states, key)
    moved = agent.replace(policy=states[0])
    assert abs(start) < 0.1 and float(select_actions(moved, obs[:1], None)[0, 0]) > 1.0  # unit mean > 0.5
    assert float(metrics["critic_loss"]) < 1e-3  # the value head regressed to the returns (0)


def _pendulum_demonstrations(pendulum_file):
    from dql.data import load_dataset
    from dql.data.evaluation_envs import check_env_matches

    dataset = load_dataset(str(pendulum_file))
    env = ("Pendulum-v1", {"max_episode_steps": 12})  # short episodes: several resets within a tiny run
    dataset.max_action = check_env_matches(dataset, *env)
    return dataset, env


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in ("wall_time_s", "steps_per_s")} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_to_the_same_parameters_and_metrics(tmp_path, pendulum_file, monkeypatch):
    """The rollout pairs each observation with the action taken there. SIGTERM in the middle of round 2 (each env 4
    steps into its second 12-step episode): the loop finishes the round, checkpoints and stops; the same call resumes (resetting each env with its episode's seed and replaying
    its actions) and ends with the parameters, metrics.csv and evaluations of a run never interrupted."""
    import dql.online_imitation as loop
    from dql.online_imitation import EnvGroup, train_imitation
    from dql.stopping import Preempted

    dataset, env = _pendulum_demonstrations(pendulum_file)
    config = tiny_config()
    batches, original_update = [], loop._update
    monkeypatch.setattr(loop, "_update", lambda agent, batch: (batches.append(batch), original_update(agent, batch))[1])
    _, whole = train_imitation(config, dataset, env, tmp_path / "whole", verbose=False)
    monkeypatch.setattr(loop, "_update", original_update)

    # The first round's batch: row t holds the observation the policy acted on at step t (each env's first one is
    # the reset of its seeded first episode), its draw, and the observation that followed, which is row t + 1's
    # (no episode ends in the first 8 steps).
    obs, next_obs, ends = (batches[0][key] for key in ("observations", "next_observations", "ends"))
    first = [loop.make_env(*env).reset(seed=loop.episode_seed(0, i, 0))[0] for i in range(16)]
    np.testing.assert_array_equal(obs[0], np.stack(first))
    assert not np.any(ends) and np.all(obs[1:] == next_obs[:-1]) and not np.any(np.all(obs == next_obs, -1))
    assert batches[0]["draws"].shape == (8, 16, 1) and len(batches) == 5

    original_step, calls = EnvGroup.step, []

    def step_then_sigterm(self, actions):
        calls.append(1)
        if len(calls) == 12:  # round 2 (steps 8..15 of each env)
            signal.raise_signal(signal.SIGTERM)
        return original_step(self, actions)

    monkeypatch.setattr(EnvGroup, "step", step_then_sigterm)
    with pytest.raises(Preempted, match="environment step 256"):
        train_imitation(config, dataset, env, tmp_path / "cut", verbose=False)
    monkeypatch.setattr(EnvGroup, "step", original_step)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.isdigit()) == ["256"]
    assert len(_rows(tmp_path / "cut" / "metrics.csv")) == 2
    _, resumed = train_imitation(config, dataset, env, tmp_path / "cut", verbose=False)

    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(whole), strict=True):
        np.testing.assert_array_equal(a, b)
    whole_rows, cut_rows = _rows(tmp_path / "whole" / "metrics.csv"), _rows(tmp_path / "cut" / "metrics.csv")
    assert len(whole_rows) == 5 and cut_rows == whole_rows
    assert whole_rows[-1]["train_return_mean"] != ""  # episodes ended and were counted
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("whole", "cut")]
    assert summaries[0]["evaluations"] == summaries[1]["evaluations"]
    assert [e["step"] for e in summaries[0]["evaluations"]] == [256, 512, 640]
    assert summaries[0]["train_episodes"] == summaries[1]["train_episodes"] == 16 * 3  # 40 steps per env

    # A replay that does not arrive where the checkpoint says is refused rather than silently diverging.
    from dql.online_imitation import _encode
    group = EnvGroup(*env, 2, seed=0)
    group.start()
    state = group.state()
    state["observations"] = _encode(np.asarray(group.observations, np.float64) + 1.0)
    with pytest.raises(ValueError, match="did not reproduce the observation"):
        EnvGroup(*env, 2, seed=0).restore(state, 1)


@pytest.mark.slow
def test_gail_from_the_command_line_and_load_policy(tmp_path):
    import dql
    from tests.test_cli import run_cli

    workdir = tmp_path / "gail"
    result = run_cli("--algo=gail", "--dataset=pendulum-mixed-v0", "--steps=4096", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps/s" in result.stdout and "ETA" in result.stdout and "final return" in result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [4096] and summary["steps"] == 4096
    assert np.isfinite(summary["evaluations"][0]["return_mean"])
    for name in ("metrics.csv", "learning_curve.png", "config.json", "dataset.json"):
        assert (workdir / name).stat().st_size > 0
    rows = _rows(workdir / "metrics.csv")
    assert [r["step"] for r in rows] == ["2048", "4096"] and rows[-1]["eval_score_mean"] != ""
    policy = dql.load_policy(workdir)
    observations = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    actions = policy(observations[:5])
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)
    np.testing.assert_array_equal(actions, policy(observations[:5], seed=7))  # deterministic


def test_settings_that_do_not_fit_together_are_refused_naming_the_flag():
    with pytest.raises(ValueError, match=r"--batch_size=100 \(PPO's minibatch\) must divide .* 2048 rows"):
        hyperparams("gail", tiny_config(batch_size=100, rollout_length=128), [2.0])
    with pytest.raises(ValueError, match=r"--config.demo_batch_size=4096 exceeds a rollout's 128 policy rows"):
        hyperparams("gail", tiny_config(demo_batch_size=4096), [2.0])
    with pytest.raises(ValueError, match=r"--config.gae_lambda must be in \[0.0, 1.0\]"):
        hyperparams("gail", tiny_config(gae_lambda=1.5), [2.0])
