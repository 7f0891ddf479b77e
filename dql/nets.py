"""Networks: MLPs with PyTorch's default initialisation, the time-conditioned noise predictor and critic ensembles.

Initialisation follows torch.nn.Linear (weights and biases uniform in +-1/sqrt(fan_in)) so that our runs start
from the same distribution as the reference Diffusion-QL implementation.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]



@jax.custom_jvp
def mish(x: jax.Array) -> jax.Array:
    """Mish, x tanh(softplus(x)), in closed form: x n / (n + 2) with n = w (w + 2), w = e^x.

    One exp and one reciprocal instead of exp, log1p and tanh: with its derivative below it runs several times
    faster than jax.nn.mish on CPU, where Diffusion-QL's 256-wide layers spend a sizeable share of a step in it.
    Written as n / (n + 2), not the equal 1 - 2 / (n + 2), which cancels for negative x (relative error ~1e-5 at
    x = -5); this form stays within 2.5e-7 of the exact value. Clamping the exponent at 20 is exact in float32
    and keeps n finite.
    """
    w = jnp.exp(jnp.minimum(x, 20.0))
    n = w * (w + 2.0)
    return x * n / (n + 2.0)


@mish.defjvp
def _mish_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    w = jnp.exp(jnp.minimum(x, 20.0))
    n = w * (w + 2.0)
    r = 1.0 / (n + 2.0)
    # d/dx [x n / (n + 2)] = n / (n + 2) + 2 x n' / (n + 2)^2, with n' = 2 w (w + 1).
    slope = n * r + 4.0 * x * w * (w + 1.0) * r * r
    return x * n * r, slope * dx


ACTIVATIONS: dict[str, Activation] = {
    "mish": mish,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
}


def activation_by_name(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def _torch_uniform(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchDense(nn.Module):
    """A dense layer initialised like torch.nn.Linear."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _torch_uniform(fan_in), (fan_in, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        return x @ kernel + bias


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    output_dim: int
    activation: str = "mish"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        for width in self.hidden_dims:
            x = act(TorchDense(width)(x))
        return TorchDense(self.output_dim)(x)


def sinusoidal_embedding(t: jax.Array, dim: int, dtype=jnp.float32) -> jax.Array:
    """Transformer-style embedding of (integer) diffusion steps: [sin(t w_k), cos(t w_k)], w_k = 10000^(-k/(d/2-1))."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(10000.0) / (half - 1) * jnp.arange(half, dtype=dtype))
    angles = t.astype(dtype)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NoisePredictor(nn.Module):
    """epsilon(x_t, t, s): the Diffusion-QL noise network.

    Time embedding: sinusoidal(time_dim) -> Linear(2 time_dim) -> Mish -> Linear(time_dim); then
    [x_t, t_emb, s] -> hidden layers with Mish -> Linear(action_dim).
    """

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256)
    time_dim: int = 16
    activation: str = "mish"

    @nn.compact
    def __call__(self, noisy_actions: jax.Array, t: jax.Array, observations: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        t_emb = sinusoidal_embedding(t, self.time_dim, noisy_actions.dtype)
        t_emb = TorchDense(self.time_dim)(act(TorchDense(2 * self.time_dim)(t_emb)))
        x = jnp.concatenate([noisy_actions, t_emb, observations], axis=-1)
        return MLP(self.hidden_dims, self.action_dim, self.activation)(x)


class CriticEnsemble(nn.Module):
    """num_heads independent Q(s, a) networks evaluated as one batched computation: returns [num_heads, B].

    nn.vmap stacks the heads' parameters on a leading axis, so each layer is one batched matmul over the heads.
    """

    hidden_dims: Sequence[int] = (256, 256, 256)
    num_heads: int = 2
    activation: str = "mish"

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        heads = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_heads,
        )(self.hidden_dims, 1, self.activation)
        return heads(jnp.concatenate([observations, actions], axis=-1))[..., 0]


class GaussianPolicy(nn.Module):
    """A diagonal Gaussian over unit-box actions: returns (mean, log_std), each [B, action_dim].

    state_dependent_std: log_std from the network (SAC/CQL, BC) or one learned vector (IQL). tanh_mean squashes the
    mean into [-1, 1] (IQL's policy, whose distribution itself is not squashed).
    """

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"
    state_dependent_std: bool = True
    tanh_mean: bool = False
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation_by_name(self.activation)
        x = observations
        for width in self.hidden_dims:
            x = act(TorchDense(width)(x))
        mean = TorchDense(self.action_dim)(x)
        if self.tanh_mean:
            mean = jnp.tanh(mean)
        if self.state_dependent_std:
            log_std = TorchDense(self.action_dim)(x)
        else:
            log_std = jnp.broadcast_to(self.param("log_std", nn.initializers.zeros, (self.action_dim,)), mean.shape)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class DeterministicPolicy(nn.Module):
    """TD3's actor: MLP -> tanh, an action in the unit box."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.activation)(observations))


class ValueNet(nn.Module):
    """V(s): MLP -> scalar, [B]."""

    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1, self.activation)(observations)[..., 0]
