"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2022): in-sample value learning and advantage-weighted BC.

Per step, in the reference's order: V regresses on min Q'(s, a) with the expectile loss; the actor maximises
exp(temperature * (min Q'(s, a) - V(s))) (clipped at 100) times log pi(a | s); the critics regress on
r + gamma (1 - done) V(s') with the updated V; the target critics follow by Polyak averaging.
The policy is a Gaussian with a tanh'd mean and a state-independent std; evaluation acts with its mean.
With dropout_rate > 0 (the reference's Kitchen and Adroit setting) the actor drops hidden units while it trains,
never when it acts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.distributions import gaussian_log_prob
from dql.nets import CriticEnsemble, TorchDense, ValueNet, activation_by_name


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
    dropout_rate: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"temperature": 0, "dropout_rate": 0},
                     positive=("lr", "critic_lr", "value_lr", "max_weight"),
                     unit_interval=("expectile", "discount", "tau"))
        if self.dropout_rate >= 1:
            raise ValueError(f"--config.dropout_rate must be < 1, got {self.dropout_rate}")


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|expectile - 1(diff < 0)| * diff^2, elementwise: an asymmetric square whose minimiser is the expectile."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * jnp.square(diff)


class IQLPolicy(nn.Module):
    """dql.nets.GaussianPolicy with a state-independent std and a tanh'd mean (the same parameters, initialised
    alike), whose hidden activations can be dropped: `dropout` holds one keep-mask per hidden layer ([B, width],
    True = kept); kept units are scaled by 1 / (1 - rate), as flax's nn.Dropout does. No masks: no dropout."""

    action_dim: int
    hidden_dims: tuple[int, ...]
    activation: str
    dropout_rate: float = 0.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array, dropout: tuple[jax.Array, ...] = ()):
        act = activation_by_name(self.activation)
        x = observations
        for layer, width in enumerate(self.hidden_dims):
            x = act(TorchDense(width)(x))
            if dropout:
                x = jnp.where(dropout[layer], x / (1.0 - self.dropout_rate), jnp.zeros_like(x))
        mean = jnp.tanh(TorchDense(self.action_dim)(x))
        log_std = jnp.broadcast_to(self.param("log_std", nn.initializers.zeros, (self.action_dim,)), mean.shape)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class IQLNoise(struct.PyTreeNode):
    """The random inputs of one IQL update: the actor's dropout keep-masks, one [B, width] per hidden layer
    (none when dropout_rate is 0, where the update draws nothing)."""

    dropout: tuple[jax.Array, ...] = ()


class IQLAgent(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target_params: Any
    value: TrainState
    rng: jax.Array
    hp: IQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: IQLHyperparams, observation_stats=None):
        """Gaussian actor, twin critics with their target copy and the value network, initialised from `rng`."""
        rng, actor_key, critic_key, value_key = jax.random.split(rng, 4)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_net = IQLPolicy(action_dim, hp.hidden_dims, hp.activation, hp.dropout_rate)
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
        """The policy's mean action (deterministic: `rng` is unused), in the environment's units."""
        del rng  # the mean
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return mean * jnp.asarray(self.hp.max_action)

    def draw_noise(self, key: jax.Array, local_batch: int) -> IQLNoise:
        """The actor's dropout masks, drawn from per-example keys (the same numbers on one device or many)."""
        if self.hp.dropout_rate == 0:
            return IQLNoise()
        keys = common.per_example_keys(key, local_batch, self.hp.axis_name)
        layer_keys = jax.vmap(lambda k: jax.random.split(k, len(self.hp.hidden_dims)))(keys)
        keep = 1.0 - self.hp.dropout_rate
        return IQLNoise(dropout=tuple(jax.vmap(lambda k, w=width: jax.random.bernoulli(k, keep, (w,)))(
            layer_keys[:, layer]) for layer, width in enumerate(self.hp.hidden_dims)))

    def update(self, batch: common.Batch) -> tuple["IQLAgent", dict[str, Any]]:
        """One update (value, actor, critics, targets); dropout masks are drawn from the agent's key only when
        dropout_rate > 0."""
        if self.hp.dropout_rate == 0:  # nothing to draw: the key stays as it is
            return self.update_with_noise(batch, IQLNoise())
        rng, key = jax.random.split(self.rng)
        noise = self.draw_noise(key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def value_loss(self, params, observations: jax.Array, target_q: jax.Array):
        v = self.value.apply_fn(params, observations)
        return jnp.mean(expectile_loss(target_q - v, self.hp.expectile)), v

    def actor_loss(self, params, observations: jax.Array, unit_actions: jax.Array, weights: jax.Array,
                   noise: IQLNoise) -> jax.Array:
        mean, log_std = self.actor.apply_fn(params, observations, noise.dropout)
        return -jnp.mean(weights * gaussian_log_prob(mean, log_std, unit_actions))

    def critic_loss(self, params, observations: jax.Array, unit_actions: jax.Array, backup: jax.Array):
        q = self.critic.apply_fn(params, observations, unit_actions)
        return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

    def update_with_noise(self, batch: common.Batch, noise: IQLNoise) -> tuple["IQLAgent", dict[str, Any]]:
        """One update with given dropout masks (`draw_noise`'s, or another implementation's for a parity check)."""
        agent, metrics, _ = self.update_and_gradients(batch, noise)
        return agent, metrics

    def update_and_gradients(self, batch: common.Batch, noise: IQLNoise):
        """(agent, metrics, the gradients applied to value, actor and critic): one update."""
        hp = self.hp
        observations = batch["observations"]
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        target_q = self.critic.apply_fn(self.critic_target_params, observations, unit_actions).min(axis=0)

        (value_loss, v), value_grads = jax.value_and_grad(self.value_loss, has_aux=True)(
            self.value.params, observations, target_q)
        value_grads = common.pmean(value_grads, hp.axis_name)
        value = self.value.apply_gradients(grads=value_grads)

        v_new = value.apply_fn(value.params, observations)
        weights = jnp.minimum(jnp.exp(hp.temperature * (target_q - v_new)), hp.max_weight)
        actor_loss, actor_grads = jax.value_and_grad(self.actor_loss)(
            self.actor.params, observations, unit_actions, weights, noise)
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        actor = self.actor.apply_gradients(grads=actor_grads)

        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * value.apply_fn(
            value.params, batch["next_observations"])
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, unit_actions, backup)
        critic_grads = common.pmean(critic_grads, hp.axis_name)
        critic = self.critic.apply_gradients(grads=critic_grads)
        metrics = common.pmean({
            "value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss, "v_mean": jnp.mean(v),
            "q_mean": jnp.mean(q), "adv_weight_mean": jnp.mean(weights),
        }, hp.axis_name)
        agent = self.replace(actor=actor, critic=critic, value=value,
                             critic_target_params=common.soft_update(self.critic_target_params, critic.params, hp.tau))
        return agent, metrics, {"value": value_grads, "actor": actor_grads, "critic": critic_grads}
