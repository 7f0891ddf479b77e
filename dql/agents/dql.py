"""Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023): a conditional DDPM actor trained with twin Q critics.

The actor's loss is the diffusion (behaviour-cloning) loss plus eta times a normalised Q term,
L = L_bc + eta * (-mean Q_i(s, a~pi) / stop_grad(mean |Q_j(s, a~pi)|)), with (i, j) a random order of the two
heads and a~pi drawn through the whole reverse chain so the gradient reaches every denoising step. The critics
regress on r + gamma (1 - done) min_k Q'_k(s', a'), with a' from an EMA copy of the actor (optionally the max over
several a' per head: the max-Q backup). The order of the sub-updates follows the reference implementation:
critic, then actor against the updated critic, then EMA actor and critic target.
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
from dql.nets import CriticEnsemble


@dataclasses.dataclass(frozen=True)
class DQLHyperparams(diffusion_actor.DiffusionActorHyperparams):
    lr: float
    critic_lr: float
    lr_decay: bool
    steps_per_epoch: int
    lr_decay_every: int
    grad_norm: float
    discount: float
    tau: float
    eta: float
    max_q_backup: bool
    num_q_backup_samples: int
    ema_decay: float
    ema_start: int
    ema_every: int
    num_action_candidates: int

    def __post_init__(self):
        """Reject values the update cannot run with, naming the --config flag."""
        super().__post_init__()
        self.require(
            at_least={"steps_per_epoch": 1, "lr_decay_every": 1, "ema_every": 1, "num_q_backup_samples": 1,
                      "num_action_candidates": 1, "eta": 0, "grad_norm": 0, "ema_start": 0},
            positive=("lr", "critic_lr"),
            unit_interval=("discount", "tau", "ema_decay"),
        )


def _critic_net(hp: DQLHyperparams) -> CriticEnsemble:
    return CriticEnsemble(hp.hidden_dims, num_heads=2, activation=hp.activation)


class DQLAgent(struct.PyTreeNode):
    actor: TrainState
    actor_ema_params: Any
    critic: TrainState
    critic_target_params: Any
    rng: jax.Array
    step: jax.Array
    hp: DQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng: jax.Array, observation_dim: int, action_dim: int, hp: DQLHyperparams,
               observation_stats=None) -> "DQLAgent":
        if len(hp.max_action) != action_dim:
            raise ValueError(f"max_action has {len(hp.max_action)} entries, expected action_dim={action_dim}")
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        noise_net, critic_net = diffusion_actor.noise_net(hp, action_dim), _critic_net(hp)
        actor_params = diffusion_actor.init_params(hp, actor_key, observation_dim, action_dim)
        critic_params = critic_net.init(critic_key, jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim)))
        actor_schedule, critic_schedule = (
            common.learning_rate_schedule(lr, hp.lr_decay, hp.total_steps, hp.steps_per_epoch, hp.lr_decay_every)
            for lr in (hp.lr, hp.critic_lr)
        )
        return cls(
            actor=common.make_train_state(
                noise_net.apply, actor_params, common.make_optimizer(actor_schedule, hp.grad_norm)
            ),
            # Copies, not aliases: the trainer donates the agent's buffers and each must be donated once.
            actor_ema_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(
                critic_net.apply, critic_params, common.make_optimizer(critic_schedule, hp.grad_norm)
            ),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            hp=hp,
        )

    # ----------------------------------------------------------------------------------------------- sampling
    def _sample(self, actor_params, observations: jax.Array, noise: jax.Array) -> jax.Array:
        return diffusion_actor.sample_with_noise(self.actor.apply_fn, actor_params, self.hp, observations, noise)

    def sample_actor(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """One draw per state from the online actor's reverse chain, with no critic involved."""
        return diffusion_actor.sample_actions(self.actor.apply_fn, self.actor.params, self.hp, observations, rng)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """DQL's action selection: N candidates per state from the actor, one drawn with p = softmax(min_k Q'_k)."""
        batch, action_dim = observations.shape[0], len(self.hp.max_action)
        n = self.hp.num_action_candidates
        noise_key, choice_key = jax.random.split(rng)
        repeated = jnp.repeat(observations, n, axis=0)
        candidates = self.sample_actor(repeated, noise_key)
        q = self.critic.apply_fn(self.critic_target_params, repeated, candidates).min(axis=0).reshape(batch, n)
        choice = jax.random.categorical(choice_key, q, axis=-1)
        return candidates.reshape(batch, n, action_dim)[jnp.arange(batch), choice]

    # ------------------------------------------------------------------------------------------------ update
    def update(self, batch: common.Batch) -> tuple["DQLAgent", dict[str, jax.Array]]:
        hp = self.hp
        observations, actions = batch["observations"], batch["actions"]
        local_batch, action_dim = actions.shape
        rng, step_key, order_key = jax.random.split(self.rng, 3)
        keys = common.per_example_keys(step_key, local_batch, hp.axis_name)
        target_keys, bc_t_keys, bc_noise_keys, policy_keys = jnp.swapaxes(
            jax.vmap(lambda k: jax.random.split(k, 4))(keys), 0, 1
        )

        # ---- critic: regress both heads on the backup computed with the EMA actor and the target critic.
        n_backup = hp.num_q_backup_samples if hp.max_q_backup else 1
        next_noise = common.per_example_normal(target_keys, (n_backup, hp.diffusion_steps + 1, action_dim))
        next_observations = jnp.repeat(batch["next_observations"], n_backup, axis=0)
        next_actions = self._sample(
            self.actor_ema_params, next_observations, next_noise.reshape(-1, hp.diffusion_steps + 1, action_dim)
        )
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions)
        target_q = target_q.reshape(2, local_batch, n_backup).max(axis=-1).min(axis=0)
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * target_q

        def critic_loss_fn(critic_params):
            q = self.critic.apply_fn(critic_params, observations, actions)
            return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(self.critic.params)
        critic_grads = common.pmean(critic_grads, hp.axis_name)
        critic = self.critic.apply_gradients(grads=critic_grads)

        # ---- actor: diffusion loss on the data plus the normalised Q of fresh samples under the new critic.
        policy_noise = common.per_example_normal(policy_keys, (hp.diffusion_steps + 1, action_dim))
        first_head = jax.random.bernoulli(order_key)

        def actor_loss_fn(actor_params):
            bc_loss = diffusion_actor.bc_loss(
                self.actor.apply_fn, actor_params, hp, actions, observations, bc_t_keys, bc_noise_keys
            )
            new_actions = self._sample(actor_params, observations, policy_noise)
            q_new = critic.apply_fn(critic.params, observations, new_actions)
            q_i = jnp.where(first_head, q_new[0], q_new[1])
            q_j = jnp.where(first_head, q_new[1], q_new[0])
            # The scale is a mean over the *global* batch so that sharding the batch does not change the loss.
            scale = jax.lax.stop_gradient(common.pmean(jnp.mean(jnp.abs(q_j)), hp.axis_name))
            q_loss = -jnp.mean(q_i) / scale
            return bc_loss + hp.eta * q_loss, (bc_loss, q_loss)

        (actor_loss, (bc_loss, q_loss)), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            self.actor.params
        )
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        actor = self.actor.apply_gradients(grads=actor_grads)

        # ---- slow copies: EMA actor from ema_start every ema_every steps; critic target every step.
        ema_due = (self.step >= hp.ema_start) & (self.step % hp.ema_every == 0)
        decay = jnp.where(ema_due, hp.ema_decay, 1.0)
        actor_ema_params = common.soft_update(self.actor_ema_params, actor.params, 1.0 - decay)
        critic_target_params = common.soft_update(self.critic_target_params, critic.params, hp.tau)

        metrics = {
            "critic_loss": critic_loss,
            "bc_loss": bc_loss,
            "ql_loss": q_loss,
            "actor_loss": actor_loss,
            "q_mean": jnp.mean(q),
            "target_q_mean": jnp.mean(backup),
            "critic_grad_norm": optax.tree.norm(critic_grads),
            "actor_grad_norm": optax.tree.norm(actor_grads),
        }
        metrics = common.pmean(metrics, hp.axis_name)
        agent = self.replace(
            actor=actor,
            actor_ema_params=actor_ema_params,
            critic=critic,
            critic_target_params=critic_target_params,
            rng=rng,
            step=self.step + 1,
        )
        return agent, metrics
