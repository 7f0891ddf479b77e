"""Agents: pytrees with a pure `update(batch) -> (agent, metrics)` and `sample_actions(observations, rng)`."""

from __future__ import annotations

from dql.agents.dql import DQLAgent, DQLHyperparams

AGENTS = {"dql": (DQLAgent, DQLHyperparams)}


def create_agent(algo: str, rng, observation_dim: int, action_dim: int, max_action, config, axis_name=None):
    """Build the agent named by --algo from the resolved config."""
    if algo not in AGENTS:
        raise ValueError(f"--algo={algo!r} is not a known algorithm; expected one of {sorted(AGENTS)}")
    agent_cls, hyperparams_cls = AGENTS[algo]
    hp = hyperparams_cls.from_config(config, max_action, axis_name=axis_name)
    return agent_cls.create(rng, observation_dim, action_dim, hp)
