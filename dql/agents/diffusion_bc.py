"""Diffusion-BC (the Diffusion-QL paper's BC-Diffusion): the DDPM actor trained on the diffusion loss alone.

No critic; evaluation draws one action per state from the reverse chain. Task conditioning as Diffusion Policy's
(dql.agents.conditioning): the observation's last `goal_dims` entries are the goal; with condition_dropout > 0 the
network also learns the goal-free model and guidance_scale mixes the two at sampling (classifier-free guidance).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common, conditioning, diffusion_actor


@dataclasses.dataclass(frozen=True)
class DiffusionBCHyperparams(diffusion_actor.DiffusionActorHyperparams):
    lr: float
    grad_norm: float
    goal_dims: int
    condition_dropout: float
    guidance_scale: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"grad_norm": 0, "goal_dims": 0, "guidance_scale": 0.0}, positive=("lr",),
                     unit_interval=("condition_dropout",))


class DiffusionBCAgent(struct.PyTreeNode):
    actor: TrainState
    rng: jax.Array
    hp: DiffusionBCHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: DiffusionBCHyperparams, observation_stats=None):
        rng, key = jax.random.split(rng)
        conditioning.check_guidance(hp.goal_dims, hp.condition_dropout, hp.guidance_scale, observation_dim)
        condition_dim = conditioning.condition_size(observation_dim, hp.goal_dims)
        params = diffusion_actor.init_params(hp, key, condition_dim, action_dim)
        tx = common.make_optimizer(optax.constant_schedule(hp.lr), hp.grad_norm)
        apply_fn = diffusion_actor.noise_net(hp, action_dim).apply
        return cls(actor=common.make_train_state(apply_fn, params, tx), rng=rng, hp=hp)

    def guided_apply(self, params, x, t, observations):
        """The noise prediction at the observations' goals, mixed with the goal-free one by guidance_scale (one
        network call when the scale is 1 or there is no goal)."""
        eps = conditioning.guided(lambda x, t, condition: self.actor.apply_fn(params, x, t, condition),
                                  self.hp.guidance_scale)
        return eps(x, t, lambda keep: conditioning.with_goal_kept(observations, self.hp.goal_dims, keep))

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        return diffusion_actor.sample_actions(self.guided_apply, self.actor.params, self.hp, observations, rng)

    def update(self, batch: common.Batch) -> tuple["DiffusionBCAgent", dict[str, Any]]:
        rng, step_key = jax.random.split(self.rng)
        keys = common.per_example_keys(step_key, batch["actions"].shape[0], self.hp.axis_name)
        t_keys, noise_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 2))(keys), 0, 1)
        # The keep draws come from keys of their own, so runs without a goal draw as before.
        keep = conditioning.keep_draws(jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys), self.hp.condition_dropout)
        conditions = conditioning.with_goal_kept(batch["observations"], self.hp.goal_dims, keep)

        def loss_fn(params):
            return diffusion_actor.bc_loss(
                self.actor.apply_fn, params, self.hp, batch["actions"], conditions, t_keys, noise_keys
            )

        loss, grads = jax.value_and_grad(loss_fn)(self.actor.params)
        grads = common.pmean(grads, self.hp.axis_name)
        metrics = common.pmean({"bc_loss": loss, "actor_grad_norm": optax.tree.norm(grads)}, self.hp.axis_name)
        return self.replace(actor=self.actor.apply_gradients(grads=grads), rng=rng), metrics
