"""Flow Q-Learning (Park, Li & Levine, ICML 2025): a flow-matching behaviour policy distilled into a one-step policy
that maximises Q.

Follows the authors' `agents/fql.py` (seohongpark/fql):

- Behaviour flow v(s, x_t, t): conditional flow matching on the straight path x_t = (1 - t) z + t a, z ~ N(0, I),
  t ~ U[0, 1], target velocity a - z (`dql.diffusion.flow`). Its samples integrate the flow in `flow_steps` Euler
  steps from z and are clipped to the action box.
- One-step policy mu(s, z): loss alpha * mean ||mu(s, z) - flow(s, z)||^2 (the same noise z into both; the flow's
  actions are a constant target, clipped) - lambda mean_b mean_i Q_i(s, clip(mu(s, z))), the Q mean over the two
  heads; lambda = 1 / mean |Q| held constant when normalize_q_loss, else 1. The Q term uses the critics as they
  were before this step's update.
- Critics: two heads regress on r + gamma (1 - done) agg_i Q'_i(s', clip(mu(s', z'))), agg = mean or min
  (`q_agg`); the loss is the mean squared error over heads and batch. The target critics follow by Polyak
  averaging every step toward the critics as they were before this step's gradient, as the reference does.
- Evaluation acts with the one-step policy on fresh noise, clipped to the action box.
- Networks: MLPs with GELU, kernels variance_scaling(1, fan_avg, uniform), zero biases; LayerNorm after each hidden
  activation in the critics (`layer_norm`) and in both actor networks when `actor_layer_norm`. Inputs are
  concatenated: [s, x_t, t] for the flow, [s, z] for the one-step policy, [s, a] for the critics.

Actions are handled in the unit box (divided by max_action), dataset actions clipped to
[-1 + action_clip_eps, 1 - action_clip_eps] as the reference clips its datasets. All networks share one learning
rate; the reference trains them with one Adam over the summed losses, which is the same update since Adam acts
per parameter and each loss reaches only its own network's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.diffusion.flow import euler_sample, flow_matching_loss

Q_AGGREGATES = ("mean", "min")


@dataclasses.dataclass(frozen=True)
class FQLHyperparams(common.Hyperparams):
    alpha: float
    lr: float
    discount: float
    tau: float
    q_agg: str
    flow_steps: int
    normalize_q_loss: bool
    hidden_dims: tuple[int, ...]
    layer_norm: bool
    actor_layer_norm: bool
    action_clip_eps: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"alpha": 0, "flow_steps": 1, "action_clip_eps": 0}, positive=("lr",),
                     unit_interval=("discount", "tau"))
        if self.q_agg not in Q_AGGREGATES:
            raise ValueError(f"--config.q_agg must be one of {', '.join(Q_AGGREGATES)}, got {self.q_agg!r}")
        if self.action_clip_eps >= 1:
            raise ValueError(f"--config.action_clip_eps must be < 1, got {self.action_clip_eps}")


def _fan_avg_uniform():
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class FQLMLP(nn.Module):
    """The reference's MLP: Dense -> GELU -> LayerNorm? per hidden layer, then a Dense (same init, no activation)."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = nn.gelu(nn.Dense(width, kernel_init=_fan_avg_uniform())(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.output_dim, kernel_init=_fan_avg_uniform())(x)


class VelocityField(nn.Module):
    """v(s, x_t, t) for the flow [B, A], or mu(s, z) for the one-step policy when called without times."""

    action_dim: int
    hidden_dims: Sequence[int]
    layer_norm: bool

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array, times: jax.Array | None = None) -> jax.Array:
        inputs = [observations, actions] if times is None else [observations, actions, times]
        return FQLMLP(self.hidden_dims, self.action_dim, self.layer_norm)(jnp.concatenate(inputs, axis=-1))


class FQLCritics(nn.Module):
    """num_heads Q(s, a) networks as one batched computation (nn.vmap): returns [num_heads, B]."""

    hidden_dims: Sequence[int]
    layer_norm: bool
    num_heads: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        heads = nn.vmap(FQLMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                        axis_size=self.num_heads)(self.hidden_dims, 1, self.layer_norm)
        return heads(jnp.concatenate([observations, actions], axis=-1))[..., 0]


def q_loss(q: jax.Array, normalize: bool, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """-lambda mean(Q), lambda = 1 / mean |Q| over the global batch held constant (normalize_q_loss), else 1."""
    lam = (jax.lax.stop_gradient(1.0 / common.pmean(jnp.mean(jnp.abs(q)), axis_name)) if normalize
           else jnp.ones((), q.dtype))
    return -lam * jnp.mean(q), lam


class FQLAgent(struct.PyTreeNode):
    flow: TrainState  # the behaviour flow v(s, x_t, t)
    actor: TrainState  # the one-step policy mu(s, z)
    critic: TrainState
    critic_target_params: Any
    rng: jax.Array
    hp: FQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: FQLHyperparams, observation_stats=None):
        del observation_stats  # FQL feeds raw states
        rng, flow_key, actor_key, critic_key = jax.random.split(rng, 4)
        net = VelocityField(action_dim, hp.hidden_dims, hp.actor_layer_norm)
        critic_net = FQLCritics(hp.hidden_dims, hp.layer_norm)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        flow_params = net.init(flow_key, observations, actions, jnp.zeros((1, 1)))
        actor_params = net.init(actor_key, observations, actions)
        critic_params = critic_net.init(critic_key, observations, actions)
        return cls(
            flow=common.make_train_state(net.apply, flow_params, optax.adam(hp.lr)),
            actor=common.make_train_state(net.apply, actor_params, optax.adam(hp.lr)),
            critic=common.make_train_state(critic_net.apply, critic_params, optax.adam(hp.lr)),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            rng=rng,
            hp=hp,
        )

    # ---- policies (unit-box actions)
    def one_step_actions(self, params, observations, noise):
        """mu(s, z), unclipped."""
        return self.actor.apply_fn(params, observations, noise)

    def flow_actions(self, params, observations, noise):
        """The behaviour flow's actions from noise z: flow_steps Euler steps from t = 0 to 1, clipped to [-1, 1]."""
        v_fn = lambda x, t, s: self.flow.apply_fn(params, s, x, t)  # noqa: E731
        return euler_sample(v_fn, observations, noise, self.hp.flow_steps, max_action=1.0)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """The one-step policy on fresh noise, clipped and scaled to the action bound (FQL's evaluation)."""
        noise = jax.random.normal(rng, (observations.shape[0], len(self.hp.max_action)), observations.dtype)
        actions = jnp.clip(self.one_step_actions(self.actor.params, observations, noise), -1.0, 1.0)
        return actions * jnp.asarray(self.hp.max_action)

    def sample_flow(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """The behaviour flow's samples, scaled to the action bound (what the one-step policy is distilled from)."""
        noise = jax.random.normal(rng, (observations.shape[0], len(self.hp.max_action)), observations.dtype)
        return self.flow_actions(self.flow.params, observations, noise) * jnp.asarray(self.hp.max_action)

    # ---- losses
    def flow_loss(self, params, observations, actions, times, noise):
        """Flow matching: mean ||v(s, x_t, t) - (a - z)||^2 over batch and action dimensions."""
        v_fn = lambda x, t, s: self.flow.apply_fn(params, s, x, t)  # noqa: E731
        return flow_matching_loss(v_fn, actions, observations, times, noise)

    def distillation_loss(self, params, observations, noise):
        """mean ||mu(s, z) - flow(s, z)||^2 over batch and action dimensions; the flow's actions are a constant."""
        target = jax.lax.stop_gradient(self.flow_actions(self.flow.params, observations, noise))
        actions = self.one_step_actions(params, observations, noise)
        return jnp.mean(jnp.square(actions - target)), actions

    def actor_loss(self, params, observations, noise):
        """alpha * distillation + Q loss (with the critics before this step's update): (loss, aux)."""
        distill, actions = self.distillation_loss(params, observations, noise)
        q = self.critic.apply_fn(self.critic.params, observations, jnp.clip(actions, -1.0, 1.0)).mean(axis=0)
        q_term, lam = q_loss(q, self.hp.normalize_q_loss, self.hp.axis_name)
        return self.hp.alpha * distill + q_term, {"distill_loss": distill, "q_loss": q_term, "q": jnp.mean(q),
                                                  "lambda": lam, "actions": actions}

    def critic_targets(self, next_observations, rewards, dones, noise):
        """r + gamma (1 - done) agg_i Q'_i(s', clip(mu(s', z'))) with the one-step policy before this update."""
        next_actions = jnp.clip(self.one_step_actions(self.actor.params, next_observations, noise), -1.0, 1.0)
        next_qs = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions)
        next_q = next_qs.min(axis=0) if self.hp.q_agg == "min" else next_qs.mean(axis=0)
        return rewards + self.hp.discount * (1.0 - dones) * next_q

    def critic_loss(self, params, observations, actions, backup):
        """Mean squared TD error over heads and batch: (loss, q [heads, B])."""
        q = self.critic.apply_fn(params, observations, actions)
        return jnp.mean(jnp.square(q - backup[None])), q

    def draw_noise(self, step_key: jax.Array, local_batch: int) -> "FQLNoise":
        """The randomness of one update, from per-example keys so that a batch split over devices draws the same
        numbers as on one device."""
        action_dim = len(self.hp.max_action)
        keys = jax.vmap(lambda k: jax.random.split(k, 4))(common.per_example_keys(step_key, local_batch,
                                                                                  self.hp.axis_name))
        return FQLNoise(next_actions=common.per_example_normal(keys[:, 0], (action_dim,)),
                        flow=common.per_example_normal(keys[:, 1], (action_dim,)),
                        times=jax.vmap(lambda k: jax.random.uniform(k, (1,)))(keys[:, 2]),
                        policy=common.per_example_normal(keys[:, 3], (action_dim,)))

    def update(self, batch: common.Batch) -> tuple["FQLAgent", dict[str, Any]]:
        rng, step_key = jax.random.split(self.rng)
        noise = self.draw_noise(step_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def update_with_noise(self, batch: common.Batch, noise: "FQLNoise") -> tuple["FQLAgent", dict[str, Any]]:
        """One update with given randomness (`draw_noise`'s, or another implementation's for a parity check)."""
        hp = self.hp
        observations = batch["observations"]
        bound = 1.0 - hp.action_clip_eps
        unit_actions = jnp.clip(batch["actions"] / jnp.asarray(hp.max_action), -bound, bound)

        backup = self.critic_targets(batch["next_observations"], batch["rewards"], batch["dones"], noise.next_actions)
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, unit_actions, backup)
        flow_loss, flow_grads = jax.value_and_grad(self.flow_loss)(
            self.flow.params, observations, unit_actions, noise.times, noise.flow)
        (actor_loss, aux), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            self.actor.params, observations, noise.policy)

        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))
        flow = self.flow.apply_gradients(grads=common.pmean(flow_grads, hp.axis_name))
        actor = self.actor.apply_gradients(grads=common.pmean(actor_grads, hp.axis_name))
        # The reference moves the target toward the critic's parameters before this step's gradient.
        critic_target = common.soft_update(self.critic_target_params, self.critic.params, hp.tau)
        metrics = common.pmean({
            "critic_loss": critic_loss, "actor_loss": flow_loss + actor_loss, "bc_loss": flow_loss,
            "distill_loss": aux["distill_loss"], "q_loss": aux["q_loss"], "lambda": aux["lambda"],
            "q_mean": jnp.mean(q), "target_q_mean": jnp.mean(backup),
            "mse": jnp.mean(jnp.square(jnp.clip(aux["actions"], -1.0, 1.0) - unit_actions)),
        }, hp.axis_name)
        agent = self.replace(flow=flow, actor=actor, critic=critic, critic_target_params=critic_target)
        return agent, metrics


class FQLNoise(struct.PyTreeNode):
    """The random inputs of one FQL update, each [B, A] standard normal unless noted: next_actions, the one-step
    policy's noise z' for the backup; flow and times [B, 1] (uniform on [0, 1)), the flow-matching loss's z and t;
    policy, the noise z shared by the one-step policy and the flow in the distillation and Q losses."""

    next_actions: jax.Array
    flow: jax.Array
    times: jax.Array
    policy: jax.Array
