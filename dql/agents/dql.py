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
        """The diffusion actor (noise network), its EMA copy, twin critics and their targets, initialised from `rng`."""
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
                noise_net.apply, actor_params, common.make_optimizer(actor_schedule, hp.grad_norm, like_torch=True)
            ),
            # Copies, not aliases: the trainer donates the agent's buffers and each must be donated once.
            actor_ema_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(
                critic_net.apply, critic_params, common.make_optimizer(critic_schedule, hp.grad_norm, like_torch=True)
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
        batch, n = observations.shape[0], self.hp.num_action_candidates
        noise_key, choice_key = jax.random.split(rng)
        noise = jax.random.normal(noise_key, (batch * n, self.hp.diffusion_steps + 1, len(self.hp.max_action)))
        candidates, q = self.action_candidates(observations, noise)
        choice = jax.random.categorical(choice_key, q, axis=-1)
        return candidates[jnp.arange(batch), choice]

    def action_candidates(self, observations: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(candidates [B, N, A] from the online actor's chains with noise [B N, T + 1, A], their min_k Q'_k [B, N]):
        the choice probabilities are softmax(Q) over the N."""
        batch, n = observations.shape[0], self.hp.num_action_candidates
        repeated = jnp.repeat(observations, n, axis=0)
        candidates = self._sample(self.actor.params, repeated, noise)
        q = self.critic.apply_fn(self.critic_target_params, repeated, candidates).min(axis=0).reshape(batch, n)
        return candidates.reshape(batch, n, -1), q

    # ------------------------------------------------------------------------------------------------ update
    def draw_noise(self, step_key: jax.Array, order_key: jax.Array, local_batch: int) -> "DQLNoise":
        """All the randomness of one update, drawn from per-example keys so that a batch split over devices draws
        the same numbers as on one device."""
        hp = self.hp
        action_dim = len(hp.max_action)
        keys = common.per_example_keys(step_key, local_batch, hp.axis_name)
        target_keys, bc_t_keys, bc_noise_keys, policy_keys = jnp.swapaxes(
            jax.vmap(lambda k: jax.random.split(k, 4))(keys), 0, 1
        )
        n_backup = hp.num_q_backup_samples if hp.max_q_backup else 1
        return DQLNoise(
            next_actions=common.per_example_normal(target_keys, (n_backup, hp.diffusion_steps + 1, action_dim)),
            bc_steps=jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(bc_t_keys),
            bc_noise=common.per_example_normal(bc_noise_keys, (action_dim,)),
            policy=common.per_example_normal(policy_keys, (hp.diffusion_steps + 1, action_dim)),
            q1_first=jax.random.bernoulli(order_key),
        )

    def backup(self, batch: common.Batch, next_action_noise: jax.Array) -> jax.Array:
        """r + gamma (1 - done) min_k Q'_k(s', a'), a' from the EMA actor; with the max-Q backup each head takes
        the max over its n a' per state before the min over heads. next_action_noise: [B, n, T + 1, A]."""
        local_batch, n_backup = next_action_noise.shape[:2]
        next_observations = jnp.repeat(batch["next_observations"], n_backup, axis=0)
        next_actions = self._sample(
            self.actor_ema_params, next_observations, next_action_noise.reshape(-1, *next_action_noise.shape[2:])
        )
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions)
        target_q = target_q.reshape(2, local_batch, n_backup).max(axis=-1).min(axis=0)
        return batch["rewards"] + self.hp.discount * (1.0 - batch["dones"]) * target_q

    def critic_loss(self, critic_params, batch: common.Batch, backup: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(sum over the two heads of the mean squared TD error, Q [2, B])."""
        q = self.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
        return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

    def actor_loss(self, actor_params, critic: TrainState, batch: common.Batch, noise: "DQLNoise"):
        """(L_bc + eta L_q, (L_bc, L_q)): the diffusion loss on the data plus the normalised Q of fresh samples."""
        hp = self.hp
        observations = batch["observations"]
        bc_loss = diffusion_actor.bc_loss_with_noise(
            self.actor.apply_fn, actor_params, hp, batch["actions"], observations, noise.bc_steps, noise.bc_noise
        )
        new_actions = self._sample(actor_params, observations, noise.policy)
        q_new = critic.apply_fn(critic.params, observations, new_actions)
        q_i = jnp.where(noise.q1_first, q_new[0], q_new[1])
        q_j = jnp.where(noise.q1_first, q_new[1], q_new[0])
        # The scale is a mean over the *global* batch so that sharding the batch does not change the loss.
        scale = jax.lax.stop_gradient(common.pmean(jnp.mean(jnp.abs(q_j)), hp.axis_name))
        q_loss = -jnp.mean(q_i) / scale
        return bc_loss + hp.eta * q_loss, (bc_loss, q_loss)

    def update(self, batch: common.Batch) -> tuple["DQLAgent", dict[str, jax.Array]]:
        """One update: draws this step's randomness from the agent's key, then `update_with_noise`."""
        rng, step_key, order_key = jax.random.split(self.rng, 3)
        noise = self.draw_noise(step_key, order_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def update_with_noise(self, batch: common.Batch, noise: "DQLNoise") -> tuple["DQLAgent", dict[str, jax.Array]]:
        """One update with given randomness (`draw_noise`'s, or another implementation's for a parity check)."""
        hp = self.hp
        # ---- critic: regress both heads on the backup computed with the EMA actor and the target critic.
        backup = self.backup(batch, noise.next_actions)
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, batch, backup
        )
        critic_grads = common.pmean(critic_grads, hp.axis_name)
        critic = self.critic.apply_gradients(grads=critic_grads)

        # ---- actor: against the critic just updated, as the reference does.
        (actor_loss, (bc_loss, q_loss)), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            self.actor.params, critic, batch, noise
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
            step=self.step + 1,
        )
        return agent, metrics


class DQLNoise(struct.PyTreeNode):
    """The random inputs of one Diffusion-QL update, in the order the reference draws them.

    next_actions [B, n, T + 1, A]: the EMA actor's chains for the backup (n = 1 without the max-Q backup);
    bc_steps [B] and bc_noise [B, A]: the diffusion loss's step and noise; policy [B, T + 1, A]: the chains of the
    Q term; q1_first: whether head 1 is the one maximised (head 2 then gives the scale). Each chain's noise is
    [x_T, then the draw of step t at index t + 1] as `diffusion_actor.sample_with_noise` takes it.
    """

    next_actions: jax.Array
    bc_steps: jax.Array
    bc_noise: jax.Array
    policy: jax.Array
    q1_first: jax.Array
