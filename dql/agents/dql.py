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

from dql.agents import common
from dql.diffusion import DiffusionSchedule, diffusion_loss, make_betas, sample
from dql.nets import CriticEnsemble, NoisePredictor, activation_by_name


@dataclasses.dataclass(frozen=True)
class DQLHyperparams:
    max_action: tuple[float, ...]
    total_steps: int
    lr: float = 3e-4
    critic_lr: float = 3e-4
    lr_decay: bool = True
    steps_per_epoch: int = 1000
    lr_decay_every: int = 50_000
    grad_norm: float = 9.0
    discount: float = 0.99
    tau: float = 0.005
    eta: float = 1.0
    diffusion_steps: int = 5
    beta_schedule: str = "vp"
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    time_dim: int = 16
    activation: str = "mish"
    max_q_backup: bool = False
    num_q_backup_samples: int = 10
    ema_decay: float = 0.995
    ema_start: int = 1000
    ema_every: int = 5
    num_action_candidates: int = 50
    axis_name: str | None = None

    def __post_init__(self):
        """Reject values the update cannot run with, naming the --config flag."""
        make_betas(self.beta_schedule, self.diffusion_steps)
        activation_by_name(self.activation)
        positive = ("total_steps", "steps_per_epoch", "lr_decay_every", "ema_every", "num_q_backup_samples",
                    "num_action_candidates")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--config.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--config.{name} must be > 0, got {getattr(self, name)}")
        for name, low, high in (("discount", 0.0, 1.0), ("tau", 0.0, 1.0), ("ema_decay", 0.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"--config.{name} must be in [{low}, {high}], got {getattr(self, name)}")
        for name in ("eta", "grad_norm", "ema_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"--config.{name} must be >= 0, got {getattr(self, name)}")
        if self.time_dim < 4 or self.time_dim % 2:
            raise ValueError(f"--config.time_dim must be even and >= 4, got {self.time_dim}")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"--config.hidden_dims must be positive layer widths, got {self.hidden_dims}")
        if not self.max_action or min(self.max_action) <= 0:
            raise ValueError(f"action bounds must be positive, got {self.max_action}")

    @classmethod
    def from_config(cls, config, max_action, axis_name: str | None = None) -> "DQLHyperparams":
        names = {f.name for f in dataclasses.fields(cls)} - {"max_action", "total_steps", "axis_name"}
        values = {name: config[name] for name in names if name in config}
        if "hidden_dims" in values:
            values["hidden_dims"] = tuple(int(v) for v in values["hidden_dims"])
        return cls(
            max_action=tuple(float(m) for m in max_action),
            total_steps=int(config.steps),
            axis_name=axis_name,
            **values,
        )


def _noise_net(hp: DQLHyperparams, action_dim: int) -> NoisePredictor:
    return NoisePredictor(action_dim, hp.hidden_dims, hp.time_dim, hp.activation)


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
    def create(cls, rng: jax.Array, observation_dim: int, action_dim: int, hp: DQLHyperparams) -> "DQLAgent":
        if len(hp.max_action) != action_dim:
            raise ValueError(f"max_action has {len(hp.max_action)} entries, expected action_dim={action_dim}")
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        observations = jnp.zeros((1, observation_dim), jnp.float32)
        actions = jnp.zeros((1, action_dim), jnp.float32)
        noise_net, critic_net = _noise_net(hp, action_dim), _critic_net(hp)
        actor_params = noise_net.init(actor_key, actions, jnp.zeros((1,), jnp.int32), observations)
        critic_params = critic_net.init(critic_key, observations, actions)
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
    @property
    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.create(self.hp.beta_schedule, self.hp.diffusion_steps)

    def _sample(self, actor_params, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """Reverse chain with given noise [B, T + 1, A]: noise[:, 0] is x_T, noise[:, 1:] the per-step draws."""

        def eps_fn(x, t, s):
            return self.actor.apply_fn(actor_params, x, t, s)

        step_noise = jnp.swapaxes(noise[:, 1:], 0, 1)
        return sample(eps_fn, self.schedule, observations, noise[:, 0], step_noise, jnp.asarray(self.hp.max_action))

    def sample_actor(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """One draw per state from the online actor's reverse chain, with no critic involved."""
        noise = jax.random.normal(rng, (observations.shape[0], self.hp.diffusion_steps + 1, len(self.hp.max_action)))
        return self._sample(self.actor.params, observations, noise)

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
        bc_t = jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(bc_t_keys)
        bc_noise = common.per_example_normal(bc_noise_keys, (action_dim,))
        policy_noise = common.per_example_normal(policy_keys, (hp.diffusion_steps + 1, action_dim))
        first_head = jax.random.bernoulli(order_key)
        schedule = self.schedule

        def actor_loss_fn(actor_params):
            def eps_fn(x, t, s):
                return self.actor.apply_fn(actor_params, x, t, s)

            bc_loss = diffusion_loss(eps_fn, schedule, actions, observations, bc_t, bc_noise)
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
