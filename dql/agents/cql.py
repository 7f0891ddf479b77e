"""Conservative Q-Learning, CQL(H) on a SAC backbone (Kumar et al., 2020).

Critic loss per head: (Q(s, a) - y)^2 + w * (T log sum_a' exp(Q(s, a') / T) - Q(s, a)), where the log-sum-exp
runs over N uniform actions, N policy actions at s and N policy actions at s', each importance-weighted by its
density (uniform: 2^-d on the unit box; policy: pi(a' | .)). y = r + gamma (1 - done) min Q'(s', a' ~ pi).
With `lagrange`, w = alpha' * cql_weight and alpha' is tuned so the gap stays at `target_action_gap` (AntMaze).
The actor minimises alpha log pi - min Q(s, a ~ pi) with automatic entropy tuning (target entropy -d).

Options that reproduce the two reference implementations exactly (dql/configs/cql.py says which sets which):
log_alpha_prime_init, tanh_log_density_epsilon, temperature_first, bc_steps, log_std_affine and log_std_min.
The optimisers are torch's Adam (`common.make_optimizer(..., like_torch=True)`), as in both references.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.agents.sac import SACHyperparams, actor_and_temperature_step, sac_parts, scalar_state, tanh_policy
from dql.nets import GaussianPolicy


@dataclasses.dataclass(frozen=True)
class CQLHyperparams(SACHyperparams):
    """SAC's hyperparameters (CQL runs on SAC's actor and temperature) and the conservative term's."""

    cql_weight: float
    num_samples: int
    cql_temperature: float
    lagrange: bool
    target_action_gap: float
    log_alpha_prime_init: float
    tanh_log_density_epsilon: float
    temperature_first: bool
    bc_steps: int
    log_std_affine: bool
    log_std_min: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"num_samples": 1, "cql_weight": 0, "bc_steps": 0, "tanh_log_density_epsilon": 0},
                     positive=("cql_temperature",))


class AffineLogStdPolicy(nn.Module):
    """GaussianPolicy whose log-std passes through a learned scale and offset (initially 1 and -1) before it is
    clipped to [log_std_min, 2]: CORL's and JaxCQL's TanhGaussianPolicy."""

    action_dim: int
    hidden_dims: tuple[int, ...]
    activation: str
    log_std_min: float

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, log_std = GaussianPolicy(self.action_dim, self.hidden_dims, self.activation, log_std_min=-jnp.inf,
                                       log_std_max=jnp.inf)(observations)
        multiplier = self.param("log_std_multiplier", nn.initializers.constant(1.0), ())
        offset = self.param("log_std_offset", nn.initializers.constant(-1.0), ())
        return mean, jnp.clip(multiplier * log_std + offset, self.log_std_min, 2.0)


def policy_network(action_dim: int, hp: CQLHyperparams) -> nn.Module:
    if hp.log_std_affine:
        return AffineLogStdPolicy(action_dim, hp.hidden_dims, hp.activation, hp.log_std_min)
    return GaussianPolicy(action_dim, hp.hidden_dims, hp.activation, log_std_min=hp.log_std_min)


def conservative_gap(q_data: jax.Array, q_ood: jax.Array, log_density: jax.Array, temperature: float) -> jax.Array:
    """T logsumexp((Q(s, a') - log density(a')) / T) over the sampled a' (last axis), minus Q(s, a) of the data."""
    return temperature * jax.nn.logsumexp((q_ood - log_density) / temperature, axis=-1) - q_data


class CQLNoise(struct.PyTreeNode):
    """The random inputs of one CQL update: standard normal noise of the actor step's actions at s ([B, A]), of the
    backup's action at s' ([B, A]), of the N policy actions at s and at s' ([B, N, A] each), and the N uniform
    actions in [-1, 1]^A ([B, N, A])."""

    actor: jax.Array
    backup: jax.Array
    current: jax.Array
    next: jax.Array
    uniform: jax.Array


class CQLAgent(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target_params: Any
    log_alpha: TrainState
    log_alpha_prime: TrainState
    rng: jax.Array
    hp: CQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: CQLHyperparams, observation_stats=None):
        """Tanh-Gaussian actor, twin critics and their targets, the entropy temperature and alpha' (torch's Adam)."""
        parts = sac_parts(rng, observation_dim, action_dim, hp, actor_net=policy_network(action_dim, hp),
                          like_torch=True)
        return cls(**parts, log_alpha_prime=scalar_state(hp.log_alpha_prime_init, hp.critic_lr, like_torch=True),
                   hp=hp)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """The policy's mode, tanh(mean) (deterministic: `rng` is unused), in the environment's units."""
        del rng  # the mode
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return jnp.tanh(mean) * jnp.asarray(self.hp.max_action)

    def _policy(self, params, observations, noise):
        return tanh_policy(self.actor, params, observations, noise, self.hp.tanh_log_density_epsilon)

    def draw_noise(self, step_key: jax.Array, local_batch: int) -> CQLNoise:
        """All the randomness of one update, from per-example keys (the same numbers on one device or many)."""
        n, action_dim = self.hp.num_samples, len(self.hp.max_action)
        keys = common.per_example_keys(step_key, local_batch, self.hp.axis_name)
        k_pi, k_next, k_cur_n, k_next_n, k_rand = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 5))(keys), 0, 1)
        return CQLNoise(
            actor=common.per_example_normal(k_pi, (action_dim,)),
            backup=common.per_example_normal(k_next, (action_dim,)),
            current=common.per_example_normal(k_cur_n, (n, action_dim)),
            next=common.per_example_normal(k_next_n, (n, action_dim)),
            uniform=jax.vmap(lambda k: jax.random.uniform(k, (n, action_dim), minval=-1.0, maxval=1.0))(k_rand))

    def update(self, batch: common.Batch) -> tuple["CQLAgent", dict[str, Any]]:
        """One update: draws this step's randomness from the agent's key, then `update_with_noise`."""
        rng, step_key = jax.random.split(self.rng)
        noise = self.draw_noise(step_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def out_of_data_actions(self, batch: common.Batch, noise: CQLNoise) -> tuple[jax.Array, jax.Array]:
        """The log-sum-exp's actions [B, 3N, A] (uniform, policy at s, policy at s') and their log-densities."""
        local_batch, n = noise.uniform.shape[:2]
        current, current_log_prob = self._policy(self.actor.params, batch["observations"], noise.current)
        following, following_log_prob = self._policy(self.actor.params, batch["next_observations"], noise.next)
        uniform_log_density = jnp.full((local_batch, n), -noise.uniform.shape[-1] * math.log(2.0))
        return (jnp.concatenate([noise.uniform, current, following], axis=1),
                jnp.concatenate([uniform_log_density, current_log_prob, following_log_prob], axis=1))

    def critic_loss(self, params, batch: common.Batch, backup: jax.Array, ood_actions: jax.Array,
                    log_density: jax.Array, alpha_prime: jax.Array):
        """Sum over heads of the TD error plus alpha' w (gap - target gap); aux: TD loss, gap per head, Q(s, a)."""
        hp = self.hp
        observations = batch["observations"]
        local_batch, samples, action_dim = ood_actions.shape
        q_data = self.critic.apply_fn(params, observations, batch["actions"] / jnp.asarray(hp.max_action))  # [2, B]
        q_ood = self.critic.apply_fn(params, jnp.repeat(observations, samples, axis=0),
                                     ood_actions.reshape(-1, action_dim))
        gap = conservative_gap(q_data, q_ood.reshape(2, local_batch, samples), log_density[None],
                               hp.cql_temperature).mean(axis=1)  # [2]
        penalty = alpha_prime * hp.cql_weight * (gap - (hp.target_action_gap if hp.lagrange else 0.0))
        td = jnp.mean(jnp.square(q_data - backup[None]), axis=1)
        return jnp.sum(td + penalty), (jnp.sum(td), gap, q_data)

    def alpha_prime(self, log_alpha_prime_params) -> jax.Array:
        return jnp.clip(jnp.exp(log_alpha_prime_params["value"]), 0.0, 1e6)

    def update_with_noise(self, batch: common.Batch, noise: CQLNoise) -> tuple["CQLAgent", dict[str, Any]]:
        """One update with given randomness (`draw_noise`'s, or a reference implementation's for a parity check)."""
        hp = self.hp
        observations, next_observations = batch["observations"], batch["next_observations"]
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        # ---- actor and entropy temperature, against the current critics (behaviour cloning for bc_steps updates).
        actor, log_alpha, actor_metrics = actor_and_temperature_step(
            self.actor, self.log_alpha, self.critic, observations, noise.actor, hp.axis_name,
            temperature_first=hp.temperature_first, log_density_epsilon=hp.tanh_log_density_epsilon,
            data_actions=unit_actions if hp.bc_steps > 0 else None, clone=self.actor.step < hp.bc_steps)

        # ---- critics: TD error plus the conservative gap.
        next_actions, _ = self._policy(self.actor.params, next_observations, noise.backup)
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * target_q
        ood_actions, log_density = self.out_of_data_actions(batch, noise)
        alpha_prime = self.alpha_prime(self.log_alpha_prime.params) if hp.lagrange else jnp.asarray(1.0)
        (critic_loss, (td_loss, gap, q)), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, batch, backup, ood_actions, log_density, alpha_prime)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))

        log_alpha_prime, lagrange_metrics = self.log_alpha_prime, {}
        if hp.lagrange:
            # alpha' rises while the gap exceeds its target and falls below it (gradient ascent on the penalty).
            gap_now = common.pmean(jax.lax.stop_gradient(gap), hp.axis_name)

            def alpha_prime_loss_fn(log_ap):
                return -jnp.mean(self.alpha_prime(log_ap) * hp.cql_weight * (gap_now - hp.target_action_gap))

            alpha_prime_loss, alpha_prime_grad = jax.value_and_grad(alpha_prime_loss_fn)(self.log_alpha_prime.params)
            log_alpha_prime = self.log_alpha_prime.apply_gradients(grads=alpha_prime_grad)
            lagrange_metrics = {"alpha_prime_loss": alpha_prime_loss}

        metrics = common.pmean({
            "critic_loss": critic_loss, "td_loss": td_loss, "cql_gap": jnp.mean(gap), "q_mean": jnp.mean(q),
            "alpha_prime": jnp.asarray(alpha_prime, jnp.float32), **lagrange_metrics, **actor_metrics,
        }, hp.axis_name)
        agent = self.replace(
            actor=actor, critic=critic, log_alpha=log_alpha, log_alpha_prime=log_alpha_prime,
            critic_target_params=common.soft_update(self.critic_target_params, critic.params, hp.tau),
        )
        return agent, metrics
