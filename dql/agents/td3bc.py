"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term and normalised states.

Actor loss: -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2 with lambda = alpha / stop_grad(mean |Q1(s, pi(s))|).
Critics regress on r + gamma (1 - done) min Q'(s', clip(pi'(s') + clip(noise))); the actor and both targets move
every `policy_delay` steps. States are standardised with the dataset's mean and std (eps 1e-3), kept in the agent
so a saved policy normalises the same way.
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
from dql.nets import CriticEnsemble, DeterministicPolicy


@dataclasses.dataclass(frozen=True)
class TD3BCHyperparams(common.Hyperparams):
    alpha: float
    lr: float
    critic_lr: float
    discount: float
    tau: float
    policy_noise: float
    noise_clip: float
    policy_delay: int
    hidden_dims: tuple[int, ...]
    activation: str

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"policy_delay": 1, "alpha": 0, "policy_noise": 0, "noise_clip": 0},
                     positive=("lr", "critic_lr"), unit_interval=("discount", "tau"))


def bc_weight(alpha: float, q: jax.Array, axis_name: str | None) -> jax.Array:
    """TD3+BC's lambda = alpha / mean |Q|, the mean over the global batch and held constant in the gradient."""
    return alpha / jax.lax.stop_gradient(common.pmean(jnp.mean(jnp.abs(q)), axis_name))


class TD3BCAgent(struct.PyTreeNode):
    actor: TrainState
    actor_target_params: Any
    critic: TrainState
    critic_target_params: Any
    observation_mean: jax.Array
    observation_std: jax.Array
    rng: jax.Array
    step: jax.Array
    hp: TD3BCHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: TD3BCHyperparams, observation_stats=None):
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        actor_net = DeterministicPolicy(action_dim, hp.hidden_dims, hp.activation)
        critic_net = CriticEnsemble(hp.hidden_dims, num_heads=2, activation=hp.activation)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_params = actor_net.init(actor_key, observations)
        critic_params = critic_net.init(critic_key, observations, actions)
        mean, std = observation_stats if observation_stats is not None else (
            jnp.zeros(observation_dim), jnp.ones(observation_dim))
        return cls(
            actor=common.make_train_state(actor_net.apply, actor_params, optax.adam(hp.lr)),
            actor_target_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(critic_net.apply, critic_params, optax.adam(hp.critic_lr)),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            observation_mean=jnp.asarray(mean, jnp.float32),
            observation_std=jnp.asarray(std, jnp.float32) + 1e-3,
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            hp=hp,
        )

    def _normalize(self, observations):
        return (observations - self.observation_mean) / self.observation_std

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        del rng  # deterministic policy
        return self.actor.apply_fn(self.actor.params, self._normalize(observations)) * jnp.asarray(self.hp.max_action)

    def update(self, batch: common.Batch) -> tuple["TD3BCAgent", dict[str, Any]]:
        hp = self.hp
        max_action = jnp.asarray(hp.max_action)
        observations = self._normalize(batch["observations"])
        next_observations = self._normalize(batch["next_observations"])
        unit_actions = batch["actions"] / max_action
        rng, step_key = jax.random.split(self.rng)
        keys = common.per_example_keys(step_key, unit_actions.shape[0], hp.axis_name)

        # Target policy smoothing, in unit-box action space.
        noise = jnp.clip(hp.policy_noise * common.per_example_normal(keys, unit_actions.shape[1:]),
                         -hp.noise_clip, hp.noise_clip)
        next_actions = jnp.clip(self.actor.apply_fn(self.actor_target_params, next_observations) + noise, -1.0, 1.0)
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * target_q

        def critic_loss_fn(params):
            q = self.critic.apply_fn(params, observations, unit_actions)
            return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))

        def actor_loss_fn(params):
            policy_actions = self.actor.apply_fn(params, observations)
            q1 = self.critic.apply_fn(critic.params, observations, policy_actions)[0]
            lam = bc_weight(hp.alpha, q1, hp.axis_name)
            bc = jnp.mean(jnp.square(policy_actions - unit_actions))
            return -lam * jnp.mean(q1) + bc, (bc, lam)

        (actor_loss, (bc, lam)), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(self.actor.params)
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        # The actor and both targets move every policy_delay steps; TD3's code counts iterations from 1, so with
        # a delay of 2 the first actor update is the second step's.
        due = (self.step + 1) % hp.policy_delay == 0
        actor = common.apply_where(due, self.actor.apply_gradients(grads=actor_grads), self.actor)
        actor_target = common.apply_where(
            due, common.soft_update(self.actor_target_params, actor.params, hp.tau), self.actor_target_params)
        critic_target = common.apply_where(
            due, common.soft_update(self.critic_target_params, critic.params, hp.tau), self.critic_target_params)
        metrics = common.pmean({
            "critic_loss": critic_loss, "actor_loss": actor_loss, "bc_loss": bc, "lambda": lam,
            "q_mean": jnp.mean(q), "target_q_mean": jnp.mean(backup),
        }, hp.axis_name)
        agent = self.replace(actor=actor, actor_target_params=actor_target, critic=critic,
                             critic_target_params=critic_target, rng=rng, step=self.step + 1)
        return agent, metrics
