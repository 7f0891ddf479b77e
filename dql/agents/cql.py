"""Conservative Q-Learning, CQL(H) on a SAC backbone (Kumar et al., 2020).

Critic loss per head: (Q(s, a) - y)^2 + w * (T log sum_a' exp(Q(s, a') / T) - Q(s, a)), where the log-sum-exp
runs over N uniform actions, N policy actions at s and N policy actions at s', each importance-weighted by its
density (uniform: 2^-d on the unit box; policy: pi(a' | .)). y = r + gamma (1 - done) min Q'(s', a' ~ pi).
With `lagrange`, w = alpha' * cql_weight and alpha' is tuned so the gap stays at `target_action_gap` (AntMaze).
The actor minimises alpha log pi - min Q(s, a ~ pi) with automatic entropy tuning (target entropy -d).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.agents.sac import SACHyperparams, actor_and_temperature_step, sac_parts, scalar_state, tanh_policy


@dataclasses.dataclass(frozen=True)
class CQLHyperparams(SACHyperparams):
    """SAC's hyperparameters (CQL runs on SAC's actor and temperature) and the conservative term's."""

    cql_weight: float
    num_samples: int
    cql_temperature: float
    lagrange: bool
    target_action_gap: float

    def __post_init__(self):
        super().__post_init__()
        self.require(at_least={"num_samples": 1, "cql_weight": 0}, positive=("cql_temperature",))


def conservative_gap(q_data: jax.Array, q_ood: jax.Array, log_density: jax.Array, temperature: float) -> jax.Array:
    """T logsumexp((Q(s, a') - log density(a')) / T) over the sampled a' (last axis), minus Q(s, a) of the data."""
    return temperature * jax.nn.logsumexp((q_ood - log_density) / temperature, axis=-1) - q_data


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
        return cls(**sac_parts(rng, observation_dim, action_dim, hp), log_alpha_prime=scalar_state(0.0, hp.critic_lr),
                   hp=hp)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        del rng  # the mode
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return jnp.tanh(mean) * jnp.asarray(self.hp.max_action)

    def _policy(self, params, observations, noise):
        return tanh_policy(self.actor, params, observations, noise)

    def update(self, batch: common.Batch) -> tuple["CQLAgent", dict[str, Any]]:
        hp = self.hp
        observations, next_observations = batch["observations"], batch["next_observations"]
        unit_actions = batch["actions"] / jnp.asarray(hp.max_action)
        local_batch, action_dim = unit_actions.shape
        n = hp.num_samples
        rng, step_key = jax.random.split(self.rng)
        keys = common.per_example_keys(step_key, local_batch, hp.axis_name)
        k_pi, k_next, k_cur_n, k_next_n, k_rand = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 5))(keys), 0, 1)
        # ---- actor and entropy temperature, against the current critics.
        actor, log_alpha, actor_metrics = actor_and_temperature_step(
            self.actor, self.log_alpha, self.critic, observations, common.per_example_normal(k_pi, (action_dim,)),
            hp.axis_name)

        # ---- critics: TD error plus the conservative gap.
        next_actions, _ = self._policy(self.actor.params, next_observations,
                                       common.per_example_normal(k_next, (action_dim,)))
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions).min(axis=0)
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * target_q

        current_actions, current_log_prob = self._policy(
            self.actor.params, observations, common.per_example_normal(k_cur_n, (n, action_dim)))
        next_sampled, next_log_prob = self._policy(
            self.actor.params, next_observations, common.per_example_normal(k_next_n, (n, action_dim)))
        random_actions = jax.vmap(lambda k: jax.random.uniform(k, (n, action_dim), minval=-1.0, maxval=1.0))(k_rand)
        ood_actions = jnp.concatenate([random_actions, current_actions, next_sampled], axis=1)  # [B, 3n, A]
        log_density = jnp.concatenate([
            jnp.full((local_batch, n), -action_dim * math.log(2.0)), current_log_prob, next_log_prob], axis=1)
        repeated = jnp.repeat(observations, 3 * n, axis=0)
        alpha_prime = jnp.clip(jnp.exp(self.log_alpha_prime.params["value"]), 0.0, 1e6) if hp.lagrange else 1.0

        def critic_loss_fn(params):
            q_data = self.critic.apply_fn(params, observations, unit_actions)  # [2, B]
            q_ood = self.critic.apply_fn(params, repeated, ood_actions.reshape(-1, action_dim))
            gap = conservative_gap(q_data, q_ood.reshape(2, local_batch, 3 * n), log_density[None],
                                   hp.cql_temperature).mean(axis=1)  # [2]
            penalty = alpha_prime * hp.cql_weight * (gap - (hp.target_action_gap if hp.lagrange else 0.0))
            td = jnp.mean(jnp.square(q_data - backup[None]), axis=1)
            return jnp.sum(td + penalty), (jnp.sum(td), gap, q_data)

        (critic_loss, (td_loss, gap, q)), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            self.critic.params)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))

        log_alpha_prime = self.log_alpha_prime
        if hp.lagrange:
            # alpha' rises while the gap exceeds its target and falls below it (gradient ascent on the penalty).
            gap_now = common.pmean(jax.lax.stop_gradient(gap), hp.axis_name)

            def alpha_prime_loss_fn(log_ap):
                ap = jnp.clip(jnp.exp(log_ap["value"]), 0.0, 1e6)
                return -jnp.mean(ap * hp.cql_weight * (gap_now - hp.target_action_gap))

            alpha_prime_grad = jax.grad(alpha_prime_loss_fn)(self.log_alpha_prime.params)
            log_alpha_prime = self.log_alpha_prime.apply_gradients(grads=alpha_prime_grad)

        metrics = common.pmean({
            "critic_loss": critic_loss, "td_loss": td_loss, "cql_gap": jnp.mean(gap), "q_mean": jnp.mean(q),
            "alpha_prime": jnp.asarray(alpha_prime, jnp.float32), **actor_metrics,
        }, hp.axis_name)
        agent = self.replace(
            actor=actor, critic=critic, log_alpha=log_alpha, log_alpha_prime=log_alpha_prime, rng=rng,
            critic_target_params=common.soft_update(self.critic_target_params, critic.params, hp.tau),
        )
        return agent, metrics
