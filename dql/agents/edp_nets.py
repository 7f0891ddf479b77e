"""EDP's networks (github.com/sail-sg/edp, `diffusion/nets.py`): flax default initialisation, its sinusoidal time
embedding, Dense -> LayerNorm? -> activation trunks, and per-head gradient clipping for its critic ensemble."""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dql.nets import activation_by_name



def edp_time_embedding(t: jax.Array, dim: int, dtype=jnp.float32) -> jax.Array:
    """EDP's sinusoidal embedding of (possibly fractional) steps: [cos(t f_k), sin(t f_k)], f_k = 10000^(-k/(d/2)),
    in `dtype` (the network's: float32, or float64 where a parity check runs in double precision)."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=dtype) / half)
    angles = jnp.asarray(t, dtype)[..., None] * frequencies
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class EDPMLP(nn.Module):
    """EDP's trunk: per hidden layer Dense -> LayerNorm? -> activation, then Dense(output_dim); flax default init."""

    hidden_dims: Sequence[int]
    output_dim: int
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return nn.Dense(self.output_dim)(x)


class EDPNoiseNet(nn.Module):
    """eps(x_t, t, s): EDP's PolicyNet with its TimeEmbedding; t may be fractional (DPM-Solver)."""

    action_dim: int
    hidden_dims: Sequence[int]
    time_dim: int
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, noisy_actions: jax.Array, t: jax.Array, observations: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        embedding = edp_time_embedding(t, self.time_dim, noisy_actions.dtype)
        t_emb = nn.Dense(self.time_dim)(act(nn.Dense(2 * self.time_dim)(embedding)))
        x = jnp.concatenate([observations, noisy_actions, t_emb], axis=-1)
        return EDPMLP(self.hidden_dims, self.action_dim, self.activation, self.layer_norm)(x)


class EDPCritics(nn.Module):
    """num_heads Q(s, a) networks (EDP's Critic) as one batched computation (nn.vmap): returns [num_heads, B]."""

    hidden_dims: Sequence[int]
    activation: str
    layer_norm: bool
    num_heads: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        heads = nn.vmap(EDPMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                        axis_size=self.num_heads)(self.hidden_dims, 1, self.activation, self.layer_norm)
        return heads(jnp.concatenate([observations, actions], axis=-1))[..., 0]


class EDPValue(nn.Module):
    """V(s) (EDP's Value, used by the IQL variant): [B]."""

    hidden_dims: Sequence[int]
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return EDPMLP(self.hidden_dims, 1, self.activation, self.layer_norm)(observations)[..., 0]


def clip_by_head_norm(max_norm: float) -> optax.GradientTransformation:
    """clip_by_global_norm applied to each head of an nn.vmap ensemble on its own (every leaf's axis 0 is the head):
    what EDP gets from one optimiser per critic. Each head's leaves become (g / norm) * max_norm where its norm
    reaches max_norm, optax's arithmetic."""

    def update_fn(updates, state, params=None):
        del params
        leaves = jax.tree_util.tree_leaves(updates)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1) for g in leaves))  # [heads]

        def clip(g):
            head_norm = norm.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
            return jnp.where(head_norm < max_norm, g, (g / head_norm) * max_norm)

        return jax.tree_util.tree_map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
