"""Agents: pytrees with a pure `update(batch) -> (agent, metrics)` and `sample_actions(observations, rng)`."""

from __future__ import annotations

import jax

from dql.agents.bc import BCAgent, BCHyperparams
from dql.agents.cql import CQLAgent, CQLHyperparams
from dql.agents.diffuser import DiffuserAgent, DiffuserHyperparams
from dql.agents.diffusion_bc import DiffusionBCAgent, DiffusionBCHyperparams
from dql.agents.dql import DQLAgent, DQLHyperparams
from dql.agents.edp import EDPAgent, EDPHyperparams
from dql.agents.fql import FQLAgent, FQLHyperparams
from dql.agents.idql import IDQLAgent, IDQLHyperparams
from dql.agents.iql import IQLAgent, IQLHyperparams
from dql.agents.rebrac import ReBRACAgent, ReBRACHyperparams
from dql.agents.sac import SACAgent, SACHyperparams
from dql.agents.td3bc import TD3BCAgent, TD3BCHyperparams

AGENTS = {
    "dql": (DQLAgent, DQLHyperparams),
    "bc": (BCAgent, BCHyperparams),
    "diffusion_bc": (DiffusionBCAgent, DiffusionBCHyperparams),
    "td3bc": (TD3BCAgent, TD3BCHyperparams),
    "iql": (IQLAgent, IQLHyperparams),
    "cql": (CQLAgent, CQLHyperparams),
    "rebrac": (ReBRACAgent, ReBRACHyperparams),
    "fql": (FQLAgent, FQLHyperparams),
    "edp": (EDPAgent, EDPHyperparams),
    "idql": (IDQLAgent, IDQLHyperparams),
    "diffuser": (DiffuserAgent, DiffuserHyperparams),  # trajectory planning: trains on windows of episodes
    "sac": (SACAgent, SACHyperparams),  # online: python -m dql.train --algo=sac --env=Hopper-v5
}


def hyperparams(algo: str, config, max_action, axis_name=None):
    """The agent's validated hyperparameters from the resolved config; errors name the --algo/--config flag."""
    if algo not in AGENTS:
        raise ValueError(f"--algo={algo!r} is not a known algorithm; expected one of {sorted(AGENTS)}")
    return AGENTS[algo][1].from_config(config, max_action, axis_name=axis_name)


def create_agent(algo: str, rng, observation_dim: int, action_dim: int, max_action, config, axis_name=None,
                 observation_stats=None):
    """Build the agent named by --algo from the resolved config.

    observation_stats: (mean, std) of the dataset's observations, for agents that normalise states (TD3+BC); they
    are stored in the agent, so a restored policy normalises the same way.
    """
    hp = hyperparams(algo, config, max_action, axis_name)
    return AGENTS[algo][0].create(rng, observation_dim, action_dim, hp, observation_stats)


@jax.jit
def select_actions(agent, observations: jax.Array, key: jax.Array) -> jax.Array:
    """The agent's batched action selection as one compiled call (evaluation and deployed policies)."""
    return agent.sample_actions(observations, key)


def begin_episode(agent, observations: jax.Array, key: jax.Array):
    """An episode's memory from its first states: the agent's `begin(observations, key)` where it keeps one (a
    planner that plans once per episode), else nothing."""
    return agent.begin(observations, key) if hasattr(agent, "begin") else {}


def act(agent, observations: jax.Array, memory, t: jax.Array, key: jax.Array):
    """(actions, memory) at episode step t: the agent's `act` where it has one, else `sample_actions`."""
    if hasattr(agent, "act"):
        return agent.act(observations, memory, t, key)
    return agent.sample_actions(observations, key), memory
