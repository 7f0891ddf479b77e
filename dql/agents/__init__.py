"""Agents: pytrees with a pure `update(batch) -> (agent, metrics)` and `sample_actions(observations, rng)`."""

from __future__ import annotations

import jax

from dql.agents.dql import DQLAgent, DQLHyperparams

AGENTS = {"dql": (DQLAgent, DQLHyperparams)}


def hyperparams(algo: str, config, max_action, axis_name=None):
    """The agent's validated hyperparameters from the resolved config; errors name the --algo/--config flag."""
    if algo not in AGENTS:
        raise ValueError(f"--algo={algo!r} is not a known algorithm; expected one of {sorted(AGENTS)}")
    return AGENTS[algo][1].from_config(config, max_action, axis_name=axis_name)


def create_agent(algo: str, rng, observation_dim: int, action_dim: int, max_action, config, axis_name=None):
    """Build the agent named by --algo from the resolved config."""
    return AGENTS[algo][0].create(rng, observation_dim, action_dim, hyperparams(algo, config, max_action, axis_name))


@jax.jit
def select_actions(agent, observations: jax.Array, key: jax.Array) -> jax.Array:
    """The agent's batched action selection as one compiled call (evaluation and deployed policies)."""
    return agent.sample_actions(observations, key)
