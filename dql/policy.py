"""Load a trained policy from a run folder: `dql.load_policy(workdir)(observations, seed) -> actions`."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from jax.sharding import SingleDeviceSharding
from ml_collections import ConfigDict

from dql.agents import create_agent, select_actions
from dql.checkpoint import Checkpoints
from dql.configs import with_added_keys


class Policy:
    """The saved actor with the algorithm's action selection, batched and jit-compiled.

    For Diffusion-QL: 50 candidates per state from the online actor (the reference evaluates with it; the EMA
    copy only makes target actions), one picked with probability softmax(min of the target critics).
    """

    def __init__(self, agent, observation_dim: int, action_dim: int, step: int):
        self.agent = agent
        self.observation_dim, self.action_dim, self.step = observation_dim, action_dim, step

    def __call__(self, observations: np.ndarray, seed: int = 0) -> np.ndarray:
        observations = np.asarray(observations, np.float32)
        if observations.ndim != 2 or observations.shape[1] != self.observation_dim:
            raise ValueError(
                f"observations must have shape [B, {self.observation_dim}], got {observations.shape}"
            )
        return np.asarray(select_actions(self.agent, observations, jax.random.PRNGKey(seed)))


def checkpoint_template(config, observation_dim: int, action_dim: int, max_action) -> dict:
    """A run checkpoint's structure to restore into: one seed's agent (no named axis) and its minibatch key, as
    shapes on the first local device. Only traced, never run: building the agent for real compiles every
    initialiser, seconds that a restore does not need."""

    def build():
        agent = create_agent(config.algo, jax.random.PRNGKey(0), observation_dim, action_dim, max_action, config)
        return {"agent": agent, "data_rng": jax.random.PRNGKey(0)}

    device = SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                                  jax.eval_shape(build))


def load_policy(workdir: str | Path, step: int | None = None) -> Policy:
    """The policy saved in `workdir` at `step` (default: the latest checkpoint)."""
    workdir = Path(workdir)
    for name in ("config.json", "dataset.json"):
        if not (workdir / name).exists():
            raise FileNotFoundError(f"{workdir / name} not found: {workdir} is not a dql run folder")
    config = ConfigDict(with_added_keys(json.loads((workdir / "config.json").read_text())))
    info = json.loads((workdir / "dataset.json").read_text())
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoints.directory}")
    template = checkpoint_template(config, info["observation_dim"], info["action_dim"], info["max_action"])
    state, _ = checkpoints.restore(step, template)
    checkpoints.close()
    return Policy(state["agent"], info["observation_dim"], info["action_dim"], step)
