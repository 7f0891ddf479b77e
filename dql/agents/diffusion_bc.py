"""Diffusion-BC (the Diffusion-QL paper's BC-Diffusion): the DDPM actor trained on the diffusion loss alone.

No critic; evaluation draws one action per state from the reverse chain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common, diffusion_actor


@dataclasses.dataclass(frozen=True)
class DiffusionBCHyperparams(diffusion_actor.DiffusionActorHyperparams):
    lr: float
    grad_norm: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"grad_norm": 0}, positive=("lr",))


class DiffusionBCAgent(struct.PyTreeNode):
    actor: TrainState
    rng: jax.Array
    hp: DiffusionBCHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: DiffusionBCHyperparams, observation_stats=None):
        rng, key = jax.random.split(rng)
        params = diffusion_actor.init_params(hp, key, observation_dim, action_dim)
        tx = common.make_optimizer(optax.constant_schedule(hp.lr), hp.grad_norm)
        apply_fn = diffusion_actor.noise_net(hp, action_dim).apply
        return cls(actor=common.make_train_state(apply_fn, params, tx), rng=rng, hp=hp)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        return diffusion_actor.sample_actions(self.actor.apply_fn, self.actor.params, self.hp, observations, rng)

    def update(self, batch: common.Batch) -> tuple["DiffusionBCAgent", dict[str, Any]]:
        rng, step_key = jax.random.split(self.rng)
        keys = common.per_example_keys(step_key, batch["actions"].shape[0], self.hp.axis_name)
        t_keys, noise_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 2))(keys), 0, 1)

        def loss_fn(params):
            return diffusion_actor.bc_loss(
                self.actor.apply_fn, params, self.hp, batch["actions"], batch["observations"], t_keys, noise_keys
            )

        loss, grads = jax.value_and_grad(loss_fn)(self.actor.params)
        grads = common.pmean(grads, self.hp.axis_name)
        metrics = common.pmean({"bc_loss": loss, "actor_grad_norm": optax.tree.norm(grads)}, self.hp.axis_name)
        return self.replace(actor=self.actor.apply_gradients(grads=grads), rng=rng), metrics
