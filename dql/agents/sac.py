"""Soft Actor-Critic (Haarnoja et al. 2018, with automatic entropy tuning): the online learner behind the project's
own datasets, and the backbone CQL builds on.

Twin critics regress to y = r + gamma (1 - done) (min Q'(s', a') - alpha log pi(a' | s')), a' ~ pi; the actor
minimises alpha log pi(a | s) - min Q(s, a); alpha is tuned so the policy's entropy stays near -action_dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.distributions import (tanh_gaussian_from_noise, tanh_gaussian_from_noise_with_epsilon,
                               tanh_gaussian_log_prob, tanh_gaussian_log_prob_with_epsilon)
from dql.nets import CriticEnsemble, GaussianPolicy


@dataclasses.dataclass(frozen=True)
class SACHyperparams(common.Hyperparams):
    lr: float
    critic_lr: float
    alpha_lr: float
    discount: float
    tau: float
    hidden_dims: tuple[int, ...]
    activation: str

    def __post_init__(self):
        super().__post_init__()
        self.require(positive=("lr", "critic_lr", "alpha_lr"), unit_interval=("discount", "tau"))


def tanh_policy(actor: TrainState, params, observations: jax.Array, noise: jax.Array,
                log_density_epsilon: float = 0.0):
    """Unit-box actions and their log-densities for noise [B, ..., A] drawn per example (B observations).

    log_density_epsilon > 0: the log-density in rlkit's form, log(1 - a^2 + epsilon) for the tanh (CQL's option);
    0: the exact one."""
    mean, log_std = actor.apply_fn(params, observations)
    expand = (slice(None),) + (None,) * (noise.ndim - mean.ndim)
    if log_density_epsilon > 0:
        return tanh_gaussian_from_noise_with_epsilon(mean[expand], log_std[expand], noise, log_density_epsilon)
    return tanh_gaussian_from_noise(mean[expand], log_std[expand], noise)


def data_log_prob(actor: TrainState, params, observations: jax.Array, actions: jax.Array,
                  log_density_epsilon: float = 0.0) -> jax.Array:
    """log pi(a | s) of given unit-box actions (behaviour cloning), in the form `tanh_policy` uses."""
    mean, log_std = actor.apply_fn(params, observations)
    if log_density_epsilon > 0:
        return tanh_gaussian_log_prob_with_epsilon(mean, log_std, actions, log_density_epsilon)
    return tanh_gaussian_log_prob(mean, log_std, actions)


def actor_and_temperature_step(actor: TrainState, log_alpha: TrainState, critic: TrainState,
                               observations: jax.Array, noise: jax.Array, axis_name: str | None, *,
                               temperature_first: bool = False, log_density_epsilon: float = 0.0,
                               data_actions: jax.Array | None = None, clone: jax.Array | bool = False):
    """One SAC actor step against `critic` and one entropy-temperature step; returns them and their metrics.

    Options (CQL's): temperature_first steps the temperature first and the actor with the new one (the CQL paper's
    order); log_density_epsilon as in `tanh_policy`; with data_actions, the actor maximises log pi(data action)
    instead of Q while `clone` holds (behaviour cloning for the first updates).
    """
    target_entropy = -float(noise.shape[-1])

    def alpha_step(log_alpha, log_prob):
        def alpha_loss_fn(log_alpha_params):
            return -jnp.mean(log_alpha_params["value"] * jax.lax.stop_gradient(log_prob + target_entropy))

        alpha_loss, alpha_grad = jax.value_and_grad(alpha_loss_fn)(log_alpha.params)
        return log_alpha.apply_gradients(grads=common.pmean(alpha_grad, axis_name)), alpha_loss

    if temperature_first:
        _, log_prob = tanh_policy(actor, actor.params, observations, noise, log_density_epsilon)
        log_alpha, alpha_loss = alpha_step(log_alpha, log_prob)
    alpha = jnp.exp(log_alpha.params["value"])

    def actor_loss_fn(params):
        actions, log_prob = tanh_policy(actor, params, observations, noise, log_density_epsilon)
        q = critic.apply_fn(critic.params, observations, actions).min(axis=0)
        if data_actions is not None:
            q = jnp.where(clone, data_log_prob(actor, params, observations, data_actions, log_density_epsilon), q)
        return jnp.mean(alpha * log_prob - q), log_prob

    (actor_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(actor.params)
    actor = actor.apply_gradients(grads=common.pmean(actor_grads, axis_name))
    if not temperature_first:
        log_alpha, alpha_loss = alpha_step(log_alpha, log_prob)
    metrics = {"actor_loss": actor_loss, "alpha": alpha, "alpha_loss": alpha_loss, "entropy": -jnp.mean(log_prob)}
    return actor, log_alpha, metrics


def adam(lr: float, like_torch: bool = False) -> optax.GradientTransformation:
    """optax's Adam, or with like_torch torch's (its bias corrections; `common.make_optimizer`)."""
    return common.make_optimizer(optax.constant_schedule(lr), 0.0, like_torch=True) if like_torch else optax.adam(lr)


def scalar_state(value: float, lr: float, like_torch: bool = False) -> TrainState:
    # Scalars held as {"value": x}: flax's TrainState expects a dict of parameters.
    return common.make_train_state(None, {"value": jnp.asarray(value, jnp.float32)}, adam(lr, like_torch))


def sac_parts(rng, observation_dim: int, action_dim: int, hp, actor_net: nn.Module | None = None,
              like_torch: bool = False) -> dict:
    """Tanh-Gaussian actor, twin critics and their target copy, entropy temperature: what SAC and CQL both hold.

    actor_net: another policy network returning (mean, log_std) (CQL's options); like_torch: torch's Adam
    (`common.make_optimizer(..., like_torch=True)`), for agents compared with PyTorch code."""
    rng, actor_key, critic_key = jax.random.split(rng, 3)
    observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
    actor_net = actor_net or GaussianPolicy(action_dim, hp.hidden_dims, hp.activation)
    critic_net = CriticEnsemble(hp.hidden_dims, num_heads=2, activation=hp.activation)
    critic_params = critic_net.init(critic_key, observations, actions)
    return {
        "actor": common.make_train_state(actor_net.apply, actor_net.init(actor_key, observations),
                                         adam(hp.lr, like_torch)),
        "critic": common.make_train_state(critic_net.apply, critic_params, adam(hp.critic_lr, like_torch)),
        "critic_target_params": jax.tree_util.tree_map(jnp.copy, critic_params),
        "log_alpha": scalar_state(0.0, hp.alpha_lr, like_torch),
        "rng": rng,
    }


class SACAgent(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target_params: Any
    log_alpha: TrainState
    rng: jax.Array
    hp: SACHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: SACHyperparams, observation_stats=None):
        return cls(**sac_parts(rng, observation_dim, action_dim, hp), hp=hp)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """The policy's mode (evaluation)."""
        del rng
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return jnp.tanh(mean) * jnp.asarray(self.hp.max_action)

    def explore_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """Actions drawn from the policy (exploration, and the behaviour of generated datasets)."""
        noise = jax.random.normal(rng, (observations.shape[0], len(self.hp.max_action)))
        actions, _ = tanh_policy(self.actor, self.actor.params, observations, noise)
        return actions * jnp.asarray(self.hp.max_action)

    def update(self, batch: common.Batch) -> tuple["SACAgent", dict[str, Any]]:
        hp = self.hp
        observations, next_observations = batch["observations"], batch["next_observations"]
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        local_batch, action_dim = unit_actions.shape
        rng, step_key = jax.random.split(self.rng)
        keys = common.per_example_keys(step_key, local_batch, hp.axis_name)
        next_key, actor_key = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 2))(keys), 0, 1)

        alpha = jnp.exp(self.log_alpha.params["value"])
        next_actions, next_log_prob = tanh_policy(self.actor, self.actor.params, next_observations,
                                                  common.per_example_normal(next_key, (action_dim,)))
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * (target_q - alpha * next_log_prob)

        def critic_loss_fn(params):
            q = self.critic.apply_fn(params, observations, unit_actions)  # [2, B]
            return jnp.sum(jnp.mean(jnp.square(q - backup[None]), axis=1)), q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))
        actor, log_alpha, actor_metrics = actor_and_temperature_step(
            self.actor, self.log_alpha, critic, observations, common.per_example_normal(actor_key, (action_dim,)),
            hp.axis_name)

        metrics = common.pmean({"critic_loss": critic_loss, "q_mean": jnp.mean(q), **actor_metrics}, hp.axis_name)
        agent = self.replace(
            actor=actor, critic=critic, log_alpha=log_alpha, rng=rng,
            critic_target_params=common.soft_update(self.critic_target_params, critic.params, hp.tau),
        )
        return agent, metrics
