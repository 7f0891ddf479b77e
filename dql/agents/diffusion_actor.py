"""The conditional DDPM actor shared by Diffusion-QL and Diffusion-BC: network, loss and reverse-chain sampling."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dql.agents import common
from dql.diffusion import DiffusionSchedule, diffusion_loss, make_betas, sample
from dql.nets import NoisePredictor


@dataclasses.dataclass(frozen=True)
class DiffusionActorHyperparams(common.Hyperparams):
    diffusion_steps: int
    beta_schedule: str
    hidden_dims: tuple[int, ...]
    time_dim: int
    activation: str

    def __post_init__(self):
        super().__post_init__()
        make_betas(self.beta_schedule, self.diffusion_steps)
        if self.time_dim < 4 or self.time_dim % 2:
            raise ValueError(f"--config.time_dim must be even and >= 4, got {self.time_dim}")


def noise_net(hp: DiffusionActorHyperparams, action_dim: int) -> NoisePredictor:
    return NoisePredictor(action_dim, hp.hidden_dims, hp.time_dim, hp.activation)


def init_params(hp: DiffusionActorHyperparams, key: jax.Array, observation_dim: int, action_dim: int):
    return noise_net(hp, action_dim).init(
        key, jnp.zeros((1, action_dim)), jnp.zeros((1,), jnp.int32), jnp.zeros((1, observation_dim))
    )


def schedule(hp: DiffusionActorHyperparams) -> DiffusionSchedule:
    return DiffusionSchedule.create(hp.beta_schedule, hp.diffusion_steps)


def sample_with_noise(apply_fn, params, hp: DiffusionActorHyperparams, observations, noise) -> jax.Array:
    """Reverse chain with given noise [B, T + 1, A]: noise[:, 0] is x_T, noise[:, 1:] the per-step draws."""

    def eps_fn(x, t, s):
        return apply_fn(params, x, t, s)

    step_noise = jnp.swapaxes(noise[:, 1:], 0, 1)
    return sample(eps_fn, schedule(hp), observations, noise[:, 0], step_noise, jnp.asarray(hp.max_action))


def sample_actions(apply_fn, params, hp: DiffusionActorHyperparams, observations, rng) -> jax.Array:
    """One draw per state from the reverse chain, with fresh noise."""
    noise = jax.random.normal(rng, (observations.shape[0], hp.diffusion_steps + 1, len(hp.max_action)))
    return sample_with_noise(apply_fn, params, hp, observations, noise)


def bc_loss(apply_fn, params, hp: DiffusionActorHyperparams, actions, observations, t_keys, noise_keys):
    """The epsilon-prediction loss with a random step and noise per example, drawn from per-example keys."""
    t = jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(t_keys)
    noise = common.per_example_normal(noise_keys, (actions.shape[1],))
    return bc_loss_with_noise(apply_fn, params, hp, actions, observations, t, noise)


def bc_loss_with_noise(apply_fn, params, hp: DiffusionActorHyperparams, actions, observations, t, noise):
    """The epsilon-prediction loss at given steps t [B] and noise [B, A]."""

    def eps_fn(x, steps, s):
        return apply_fn(params, x, steps, s)

    return diffusion_loss(eps_fn, schedule(hp), actions, observations, t, noise)
