"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term and normalised states.

Actor loss: -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2 with lambda = alpha / stop_grad(mean |Q1(s, pi(s))|).
Critics regress on r + gamma (1 - done) min Q'(s', clip(pi'(s') + clip(noise))); the actor and both targets move
every `policy_freq` steps. States are standardised with the dataset's mean and std (eps 1e-3), kept in the agent
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
    policy_freq: int
    hidden_dims: tuple[int, ...]
    activation: str

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"policy_freq": 1, "alpha": 0, "policy_noise": 0, "noise_clip": 0},
                     positive=("lr", "critic_lr"), unit_interval=("discount", "tau"))


def bc_weight(alpha: float, q: jax.Array, axis_name: str | None) -> jax.Array:
    """TD3+BC's lambda = alpha / mean |Q|, the mean over the global batch and held constant in the gradient."""
    return alpha / jax.lax.stop_gradient(common.pmean(jnp.mean(jnp.abs(q)), axis_name))


def torch_adam(lr: float) -> optax.GradientTransformation:
    """torch.optim.Adam, the authors' optimiser. optax.adam's float32 bias correction (its first step 6.5e-6 short)
    left our float32 run 2.3e-7 from theirs after 10 updates, torch's 9.3e-8 (benchmarks/parity/td3bc.py)."""
    return common.make_optimizer(optax.constant_schedule(lr), 0.0, like_torch=True)


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
            actor=common.make_train_state(actor_net.apply, actor_params, torch_adam(hp.lr)),
            actor_target_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(critic_net.apply, critic_params, torch_adam(hp.critic_lr)),
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

    def draw_noise(self, step_key: jax.Array, local_batch: int) -> "TD3BCNoise":
        """The target-smoothing draws, from per-example keys (the same numbers on one device or many)."""
        keys = common.per_example_keys(step_key, local_batch, self.hp.axis_name)
        return TD3BCNoise(target_smoothing=common.per_example_normal(keys, (len(self.hp.max_action),)))

    def update(self, batch: common.Batch) -> tuple["TD3BCAgent", dict[str, Any]]:
        rng, step_key = jax.random.split(self.rng)
        noise = self.draw_noise(step_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def backup(self, batch: common.Batch, next_observations: jax.Array, noise: "TD3BCNoise") -> jax.Array:
        """r + gamma (1 - done) min Q'(s', a'), a' the target actor's action smoothed by clipped noise (in the
        unit box)."""
        hp = self.hp
        smoothing = jnp.clip(hp.policy_noise * noise.target_smoothing, -hp.noise_clip, hp.noise_clip)
        next_actions = jnp.clip(self.actor.apply_fn(self.actor_target_params, next_observations) + smoothing,
                                -1.0, 1.0)
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        return batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * target_q

    def critic_loss(self, params, observations: jax.Array, unit_actions: jax.Array, backup: jax.Array):
        q = self.critic.apply_fn(params, observations, unit_actions)
        return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

    def actor_loss(self, params, critic_params, observations: jax.Array, unit_actions: jax.Array):
        policy_actions = self.actor.apply_fn(params, observations)
        q1 = self.critic.apply_fn(critic_params, observations, policy_actions)[0]
        lam = bc_weight(self.hp.alpha, q1, self.hp.axis_name)
        bc = jnp.mean(jnp.square(policy_actions - unit_actions))
        return -lam * jnp.mean(q1) + bc, (bc, lam)

    def update_with_noise(self, batch: common.Batch, noise: "TD3BCNoise") -> tuple["TD3BCAgent", dict[str, Any]]:
        """One update with given target-smoothing draws (`draw_noise`'s, or another implementation's for a parity
        check)."""
        agent, metrics, _ = self.update_and_gradients(batch, noise)
        return agent, metrics

    def update_and_gradients(self, batch: common.Batch, noise: "TD3BCNoise"):
        """(agent, metrics, the gradients of critic and actor): one update; the actor's are applied only on the
        steps the policy delay lets it move."""
        hp = self.hp
        observations = self._normalize(batch["observations"])
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        backup = self.backup(batch, self._normalize(batch["next_observations"]), noise)
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, unit_actions, backup)
        critic_grads = common.pmean(critic_grads, hp.axis_name)
        critic = self.critic.apply_gradients(grads=critic_grads)

        (actor_loss, (bc, lam)), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            self.actor.params, critic.params, observations, unit_actions)
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        # The actor and both targets move every policy_freq steps; TD3's code counts iterations from 1, so with
        # a delay of 2 the first actor update is the second step's.
        due = (self.step + 1) % hp.policy_freq == 0
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
                             critic_target_params=critic_target, step=self.step + 1)
        return agent, metrics, {"critic": critic_grads, "actor": actor_grads}


class TD3BCNoise(struct.PyTreeNode):
    """The random inputs of one TD3+BC update: the target policy's smoothing draws, standard normal [B, A] (scaled
    by policy_noise and clipped at noise_clip in the update)."""

    target_smoothing: jax.Array
