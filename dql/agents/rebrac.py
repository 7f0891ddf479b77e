"""ReBRAC (Tarasov, Kurenkov, Nikulin & Kolesnikov, NeurIPS 2023): TD3+BC with separate actor and critic penalties.

Follows CORL's `algorithms/offline/rebrac.py`, the authors' JAX code:

- Critics: two Q networks regressing on r + gamma (1 - done) (min_i Q'_i(s', a') - beta2 ||a' - a'_data||^2),
  a' = clip(pi'(s') + clip(noise)) the target policy's smoothed next action and a'_data the dataset's next action
  (so every batch carries `next_actions`). Loss: sum over heads of the batch mean of squared errors.
- Actor: mean over the batch of beta1 ||pi(s) - a||^2 - lambda min_i Q_i(s, pi(s)), lambda = 1 / mean |min_i Q_i|
  held constant in the gradient (normalize_q), else 1; squared distances are summed over action dimensions. The
  actor loss uses the critics updated this step.
- Every `policy_freq` updates (the first one included) the actor moves and both targets follow by Polyak
  averaging: the critic target toward this step's updated critics, the actor target toward the actor as it was
  before this step's gradient, as CORL does (it passes the pre-update actor to the soft update).
- Networks: 3 x 256 ReLU, each hidden layer Dense -> ReLU -> LayerNorm (critics always in CORL's configs, the actor
  when actor_ln); hidden kernels uniform in +-1/sqrt(fan_in) and biases 0.1 (EDAC's init); the last layer's
  kernel and bias uniform in +-3e-3 (critic) and +-1e-3 (actor); tanh on the actor's output.

Actions are handled in the unit box (divided by max_action) and scaled back when acting. `reward_scale` multiplies
the rewards inside the update (CORL's normalize_reward: x 100 on AntMaze); `normalize_states` standardises states
with the dataset's mean and std (+ 1e-3), off in all of CORL's configs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dql.agents import common
from dql.agents.td3bc import TD3BCAgent


@dataclasses.dataclass(frozen=True)
class ReBRACHyperparams(common.Hyperparams):
    actor_bc_coef: float
    critic_bc_coef: float
    lr: float
    critic_lr: float
    discount: float
    tau: float
    policy_noise: float
    noise_clip: float
    policy_freq: int
    normalize_q: bool
    normalize_states: bool
    reward_scale: float
    hidden_dims: tuple[int, ...]
    actor_ln: bool
    critic_ln: bool

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"policy_freq": 1, "actor_bc_coef": 0, "critic_bc_coef": 0, "policy_noise": 0,
                               "noise_clip": 0},
                     positive=("lr", "critic_lr", "reward_scale"), unit_interval=("discount", "tau"))


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class ReBRACMLP(nn.Module):
    """CORL's ReBRAC trunk: [Dense -> ReLU -> LayerNorm?] per hidden layer, then a Dense with a small uniform init."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool
    final_bound: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=_uniform(1.0 / math.sqrt(x.shape[-1])),
                         bias_init=nn.initializers.constant(0.1))(x)
            x = nn.relu(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.output_dim, kernel_init=_uniform(self.final_bound),
                        bias_init=_uniform(self.final_bound))(x)


class ReBRACActor(nn.Module):
    action_dim: int
    hidden_dims: Sequence[int]
    layer_norm: bool

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(ReBRACMLP(self.hidden_dims, self.action_dim, self.layer_norm, 1e-3)(observations))


class ReBRACCritics(nn.Module):
    """num_heads Q(s, a) networks as one batched computation (nn.vmap): returns [num_heads, B]."""

    hidden_dims: Sequence[int]
    layer_norm: bool
    num_heads: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        heads = nn.vmap(ReBRACMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                        out_axes=0, axis_size=self.num_heads)(self.hidden_dims, 1, self.layer_norm, 3e-3)
        return heads(jnp.concatenate([observations, actions], axis=-1))[..., 0]


def critic_backup(rewards, dones, next_q, next_actions, next_dataset_actions, discount: float, beta: float):
    """r + gamma (1 - done) (Q'(s', a') - beta ||a' - a'_data||^2), the squared distance summed over actions."""
    penalty = jnp.sum(jnp.square(next_actions - next_dataset_actions), axis=-1)
    return rewards + discount * (1.0 - dones) * (next_q - beta * penalty)


def actor_objective(policy_actions, dataset_actions, q, beta: float, normalize_q: bool, axis_name: str | None):
    """mean(beta ||pi(s) - a||^2 - lambda Q); lambda = 1 / mean |Q| over the global batch (held constant) or 1.

    Returns (loss, bc penalty mean, lambda).
    """
    penalty = jnp.sum(jnp.square(policy_actions - dataset_actions), axis=-1)
    lam = (jax.lax.stop_gradient(1.0 / common.pmean(jnp.mean(jnp.abs(q)), axis_name)) if normalize_q
           else jnp.ones((), q.dtype))
    return jnp.mean(beta * penalty - lam * q), jnp.mean(penalty), lam


class ReBRACAgent(TD3BCAgent):
    """TD3+BC's state (actor, critics, their targets, observation statistics) and deterministic action selection,
    with ReBRAC's networks, penalties and update."""

    hp: ReBRACHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: ReBRACHyperparams, observation_stats=None):
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        actor_net = ReBRACActor(action_dim, hp.hidden_dims, hp.actor_ln)
        critic_net = ReBRACCritics(hp.hidden_dims, hp.critic_ln)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_params = actor_net.init(actor_key, observations)
        critic_params = critic_net.init(critic_key, observations, actions)
        if hp.normalize_states and observation_stats is not None:
            mean, std = observation_stats
            std = jnp.asarray(std, jnp.float32) + 1e-3  # CORL's compute_mean_std(eps=1e-3)
        else:  # the same leaves either way, so a checkpoint's structure does not depend on the option
            mean, std = jnp.zeros(observation_dim), jnp.ones(observation_dim)
        return cls(
            actor=common.make_train_state(actor_net.apply, actor_params, optax.adam(hp.lr)),
            actor_target_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(critic_net.apply, critic_params, optax.adam(hp.critic_lr)),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            observation_mean=jnp.asarray(mean, jnp.float32),
            observation_std=jnp.asarray(std, jnp.float32),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            hp=hp,
        )

    def critic_targets(self, next_observations, next_dataset_actions, rewards, dones, noise):
        """The critics' regression targets and the smoothed target-policy actions a' (unit box, normalised states).

        noise: standard normal draws [B, A], scaled by policy_noise and clipped at noise_clip here.
        """
        hp = self.hp
        noise = jnp.clip(hp.policy_noise * noise, -hp.noise_clip, hp.noise_clip)
        next_actions = jnp.clip(self.actor.apply_fn(self.actor_target_params, next_observations) + noise, -1.0, 1.0)
        next_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        backup = critic_backup(rewards, dones, next_q, next_actions, next_dataset_actions, hp.discount,
                               hp.critic_bc_coef)
        return backup, next_actions

    def critic_loss(self, params, observations, actions, backup):
        """Sum over heads of the mean squared TD error: returns (loss, q [heads, B])."""
        q = self.critic.apply_fn(params, observations, actions)
        return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

    def actor_loss(self, params, critic_params, observations, actions):
        """ReBRAC's actor loss with the given critics: returns (loss, (bc penalty, lambda))."""
        policy_actions = self.actor.apply_fn(params, observations)
        q = self.critic.apply_fn(critic_params, observations, policy_actions).min(axis=0)
        loss, penalty, lam = actor_objective(policy_actions, actions, q, self.hp.actor_bc_coef, self.hp.normalize_q,
                                             self.hp.axis_name)
        return loss, (penalty, lam)

    def draw_noise(self, step_key: jax.Array, local_batch: int) -> "ReBRACNoise":
        """The randomness of one update (the target policy's smoothing noise), from per-example keys so that a batch
        split over devices draws the same numbers as on one device."""
        keys = common.per_example_keys(step_key, local_batch, self.hp.axis_name)
        return ReBRACNoise(target_policy=common.per_example_normal(keys, (len(self.hp.max_action),)))

    def update(self, batch: common.Batch) -> tuple["ReBRACAgent", dict[str, Any]]:
        rng, step_key = jax.random.split(self.rng)
        noise = self.draw_noise(step_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def update_with_noise(self, batch: common.Batch, noise: "ReBRACNoise") -> tuple["ReBRACAgent", dict[str, Any]]:
        """One update with given randomness (`draw_noise`'s, or another implementation's for a parity check)."""
        hp = self.hp
        if "next_actions" not in batch:
            raise KeyError("--algo=rebrac needs the dataset's next actions in every batch (batch['next_actions']: "
                           "the action taken at s'); the data layer did not provide them")
        max_action = jnp.asarray(hp.max_action)
        observations = self._normalize(batch["observations"])
        next_observations = self._normalize(batch["next_observations"])
        unit_actions = batch["actions"] / max_action
        next_dataset_actions = batch["next_actions"] / max_action

        backup, _ = self.critic_targets(next_observations, next_dataset_actions, hp.reward_scale * batch["rewards"],
                                        batch["dones"], noise.target_policy)
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, unit_actions, backup)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))

        (actor_loss, (bc, lam)), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            self.actor.params, critic.params, observations, unit_actions)
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        # CORL's delayed_updates: arange(updates per epoch) % policy_freq == 0, so the first update moves the actor.
        due = self.step % hp.policy_freq == 0
        actor = common.apply_where(due, self.actor.apply_gradients(grads=actor_grads), self.actor)
        actor_target = common.apply_where(
            due, common.soft_update(self.actor_target_params, self.actor.params, hp.tau), self.actor_target_params)
        critic_target = common.apply_where(
            due, common.soft_update(self.critic_target_params, critic.params, hp.tau), self.critic_target_params)
        metrics = common.pmean({
            "critic_loss": critic_loss, "actor_loss": actor_loss, "bc_loss": bc, "lambda": lam,
            "q_mean": jnp.mean(q.min(axis=0)), "target_q_mean": jnp.mean(backup),
        }, hp.axis_name)
        agent = self.replace(actor=actor, actor_target_params=actor_target, critic=critic,
                             critic_target_params=critic_target, step=self.step + 1)
        return agent, metrics


class ReBRACNoise(struct.PyTreeNode):
    """The random inputs of one ReBRAC update: target_policy [B, A], standard normal draws that critic_targets
    scales by policy_noise and clips at noise_clip."""

    target_policy: jax.Array
