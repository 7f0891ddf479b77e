"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2022): in-sample value learning and advantage-weighted BC.

Per step, in the reference's order: V regresses on min Q'(s, a) with the expectile loss; the actor maximises
exp(temperature * (min Q'(s, a) - V(s))) (clipped at 100) times log pi(a | s); the critics regress on
r + gamma (1 - done) V(s') with the updated V; the target critics follow by Polyak averaging.
The policy is a Gaussian with a tanh'd mean and a state-independent std; evaluation acts with its mean.
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
from dql.distributions import gaussian_log_prob
from dql.nets import CriticEnsemble, GaussianPolicy, ValueNet


@dataclasses.dataclass(frozen=True)
class IQLHyperparams(common.Hyperparams):
    expectile: float
    temperature: float
    max_weight: float
    lr: float
    critic_lr: float
    value_lr: float
    discount: float
    tau: float
    hidden_dims: tuple[int, ...]
    activation: str

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"temperature": 0}, positive=("lr", "critic_lr", "value_lr", "max_weight"),
                     unit_interval=("expectile", "discount", "tau"))


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|expectile - 1(diff < 0)| * diff^2, elementwise: an asymmetric square whose minimiser is the expectile."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * jnp.square(diff)


class IQLAgent(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target_params: Any
    value: TrainState
    rng: jax.Array
    hp: IQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: IQLHyperparams, observation_stats=None):
        rng, actor_key, critic_key, value_key = jax.random.split(rng, 4)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_net = GaussianPolicy(action_dim, hp.hidden_dims, hp.activation, state_dependent_std=False,
                                   tanh_mean=True)
        critic_net = CriticEnsemble(hp.hidden_dims, num_heads=2, activation=hp.activation)
        value_net = ValueNet(hp.hidden_dims, hp.activation)
        critic_params = critic_net.init(critic_key, observations, actions)
        # The actor's learning rate follows a cosine decay over the whole run (the IQL paper's schedule).
        actor_tx = optax.adam(optax.cosine_decay_schedule(hp.lr, hp.total_steps))
        return cls(
            actor=common.make_train_state(actor_net.apply, actor_net.init(actor_key, observations), actor_tx),
            critic=common.make_train_state(critic_net.apply, critic_params, optax.adam(hp.critic_lr)),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            value=common.make_train_state(value_net.apply, value_net.init(value_key, observations),
                                          optax.adam(hp.value_lr)),
            rng=rng,
            hp=hp,
        )

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        del rng  # the mean
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return mean * jnp.asarray(self.hp.max_action)

    def update(self, batch: common.Batch) -> tuple["IQLAgent", dict[str, Any]]:
        hp = self.hp
        observations = batch["observations"]
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        target_q = self.critic.apply_fn(self.critic_target_params, observations, unit_actions).min(axis=0)

        def value_loss_fn(params):
            v = self.value.apply_fn(params, observations)
            return jnp.mean(expectile_loss(target_q - v, hp.expectile)), v

        (value_loss, v), value_grads = jax.value_and_grad(value_loss_fn, has_aux=True)(self.value.params)
        value = self.value.apply_gradients(grads=common.pmean(value_grads, hp.axis_name))

        v_new = value.apply_fn(value.params, observations)
        weights = jnp.minimum(jnp.exp(hp.temperature * (target_q - v_new)), hp.max_weight)

        def actor_loss_fn(params):
            mean, log_std = self.actor.apply_fn(params, observations)
            return -jnp.mean(weights * gaussian_log_prob(mean, log_std, unit_actions))

        actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(self.actor.params)
        actor = self.actor.apply_gradients(grads=common.pmean(actor_grads, hp.axis_name))

        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * value.apply_fn(
            value.params, batch["next_observations"])

        def critic_loss_fn(params):
            q = self.critic.apply_fn(params, observations, unit_actions)
            return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))
        metrics = common.pmean({
            "value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss, "v_mean": jnp.mean(v),
            "q_mean": jnp.mean(q), "adv_weight_mean": jnp.mean(weights),
        }, hp.axis_name)
        agent = self.replace(actor=actor, critic=critic, value=value,
                             critic_target_params=common.soft_update(self.critic_target_params, critic.params, hp.tau))
        return agent, metrics
