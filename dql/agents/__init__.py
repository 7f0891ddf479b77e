"""Agents: pytrees with a pure `update(batch) -> (agent, metrics)` and `sample_actions(observations, rng)`."""

from __future__ import annotations

import importlib
import inspect

import jax

from dql.agents.common import Agent, Hyperparams, hook
from dql.configs import ALGOS


def _registered(algo: str) -> tuple[type, type]:
    """The agent class and its hyperparameter class defined in dql/agents/<algo>.py: the one class named *Agent
    that is an Agent and the one subclass of Hyperparams named *Hyperparams, both defined in that module."""
    module = importlib.import_module(f"dql.agents.{algo}")
    own = [value for value in vars(module).values() if inspect.isclass(value) and value.__module__ == module.__name__]
    agents = [cls for cls in own if cls.__name__.endswith("Agent") and issubclass(cls, Agent)]
    params = [cls for cls in own if cls.__name__.endswith("Hyperparams") and issubclass(cls, Hyperparams)]
    if len(agents) != 1 or len(params) != 1:
        raise ImportError(f"dql/agents/{algo}.py must define one *Agent class with create, update and sample_actions "
                          f"and one *Hyperparams class (dql/configs/{algo}.py exists); found {agents} and {params}")
    return agents[0], params[0]


# The registry: --algo name -> (agent class, hyperparameter class), one entry per config file (dql.configs.ALGOS).
AGENTS: dict[str, tuple[type, type]] = {algo: _registered(algo) for algo in ALGOS}
"""Each `--algo` name (a config file in dql/configs/) -> (its agent class, its hyperparameter class), found in
`dql/agents/NAME.py`: the one `*Agent` class and the one `*Hyperparams` class defined there."""


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
    begin = hook(agent, "begin")
    return begin(observations, key) if begin is not None else {}


def act(agent, observations: jax.Array, memory, t: jax.Array, key: jax.Array):
    """(actions, memory) at episode step t: the agent's `act` where it has one, else `sample_actions`."""
    act_with_memory = hook(agent, "act")
    if act_with_memory is not None:
        return act_with_memory(observations, memory, t, key)
    return agent.sample_actions(observations, key), memory
