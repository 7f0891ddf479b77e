"""Behaviour cloning with a tanh-squashed Gaussian policy: maximise log pi(a | s) of the dataset's actions.

Evaluation acts with the distribution's mode, tanh(mean), scaled to the action bound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.distributions import tanh_gaussian_log_prob
from dql.nets import GaussianPolicy


@dataclasses.dataclass(frozen=True)
class BCHyperparams(common.Hyperparams):
    lr: float
    hidden_dims: tuple[int, ...]
    activation: str
    grad_norm: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"grad_norm": 0}, positive=("lr",))


class BCAgent(struct.PyTreeNode):
    actor: TrainState
    rng: jax.Array
    hp: BCHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: BCHyperparams, observation_stats=None):
        rng, key = jax.random.split(rng)
        policy = GaussianPolicy(action_dim, hp.hidden_dims, hp.activation)
        params = policy.init(key, jnp.zeros((1, observation_dim), jnp.float32))
        tx = common.make_optimizer(optax.constant_schedule(hp.lr), hp.grad_norm)
        return cls(actor=common.make_train_state(policy.apply, params, tx), rng=rng, hp=hp)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        del rng  # the mode
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return jnp.tanh(mean) * jnp.asarray(self.hp.max_action)

    def update(self, batch: common.Batch) -> tuple["BCAgent", dict[str, Any]]:
        unit_actions = batch["actions"] / jnp.asarray(self.hp.max_action)

        def loss_fn(params):
            mean, log_std = self.actor.apply_fn(params, batch["observations"])
            log_prob = tanh_gaussian_log_prob(mean, log_std, unit_actions)
            return -jnp.mean(log_prob), jnp.mean(jnp.square(jnp.tanh(mean) - unit_actions))

        (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(self.actor.params)
        grads = common.pmean(grads, self.hp.axis_name)
        metrics = common.pmean({"bc_loss": loss, "mode_mse": mse, "actor_grad_norm": optax.tree.norm(grads)},
                               self.hp.axis_name)
        return self.replace(actor=self.actor.apply_gradients(grads=grads)), metrics
