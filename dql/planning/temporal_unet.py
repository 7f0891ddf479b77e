"""Diffuser's networks over whole trajectories (Janner et al. 2022): the temporal U-Net and the value function.

A trajectory is [B, H, D]: H steps of transitions [action, observation]. The networks convolve along the horizon
only, channels-last (flax's layout) where the reference is channels-first; every layer is initialised like its
torch counterpart (weights and biases uniform in +-1/sqrt(fan_in)) and padded so that lengths and values match
torch's, which a one-off comparison against the reference confirmed.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dql.nets import TorchDense, _torch_uniform, mish, sinusoidal_embedding



def check_horizon(horizon: int, dim_mults: Sequence[int], flag: str = "horizon") -> None:
    """The U-Net halves the horizon once per resolution but the last and doubles it back: H must survive that.
    flag: the config key that set H, named in the error."""
    divisor = 2 ** (len(dim_mults) - 1)
    if horizon < 1 or horizon % divisor:
        raise ValueError(f"--config.{flag}={horizon} must be a positive multiple of {divisor} (2^(len(dim_mults) - 1) "
                         f"for dim_mults={tuple(dim_mults)}), or the U-Net's skip connections would not line up")


def conv1d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0, input_dilation: int = 1) -> jax.Array:
    """1-D convolution of channels-last x [B, L, C] with kernel [K, C, O] (cross-correlation, as torch's), zero
    padding on both sides, the input optionally dilated (stride - 1 zeros between entries: a transposed conv).

    Written as K shifted slices contracted in one einsum rather than XLA's convolution, whose CPU code is ~20x
    slower in the two places this model needs speed: vmapped over seeds (per-seed kernels make it a grouped
    convolution; the loop and the evaluation always vmap) and where the kernel is longer than the sequence
    (Diffuser's deepest level: length 4, kernel 5). Unvmapped on long sequences it is ~1.4x slower than XLA's.
    """
    if input_dilation > 1:
        dilated = jnp.zeros((x.shape[0], (x.shape[1] - 1) * input_dilation + 1, x.shape[2]), x.dtype)
        x = dilated.at[:, ::input_dilation].set(x)
    x = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)))
    size = kernel.shape[0]
    length = (x.shape[1] - size) // stride + 1
    span = stride * (length - 1) + 1
    columns = jnp.stack([x[:, k:k + span:stride] for k in range(size)], axis=2)  # [B, length, K, C]
    return jnp.einsum("blkc,kco->blo", columns, kernel)


class TorchConv1d(nn.Module):
    """torch.nn.Conv1d on channels-last input: kernel [k, in, out], symmetric zero padding."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        fan_in = in_features * self.kernel_size
        kernel = self.param("kernel", _torch_uniform(fan_in), (self.kernel_size, in_features, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        return conv1d(x, kernel, self.stride, self.padding) + bias


class TorchConvTranspose1d(nn.Module):
    """torch.nn.ConvTranspose1d on channels-last input: kernel [k, in, out] (torch's [in, out, k] transposed).

    The transposed convolution is a convolution of the stride-dilated input with the flipped kernel, padded by
    k - 1 - padding on each side: output length (L - 1) stride - 2 padding + k, 2L for Diffuser's (4, 2, 1).
    torch takes fan_in from the output channels here (its weight is [in, out, k]); so do we.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        fan_in = self.features * self.kernel_size
        kernel = self.param("kernel", _torch_uniform(fan_in), (self.kernel_size, in_features, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        edge = self.kernel_size - 1 - self.padding
        return conv1d(x, kernel[::-1], 1, edge, input_dilation=self.stride) + bias


class ConvBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    features: int
    kernel_size: int = 5
    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = TorchConv1d(self.features, self.kernel_size, padding=self.kernel_size // 2, name="conv")(x)
        # torch's GroupNorm epsilon; flax's default is 1e-6.
        x = nn.GroupNorm(num_groups=self.groups, epsilon=1e-5, name="norm")(x)
        return mish(x)


class ResidualTemporalBlock(nn.Module):
    """Two ConvBlocks with the projected condition between them, plus a (1x1 conv) residual.

    Diffuser adds the projected time embedding; with `film` (Diffusion Policy's ConditionalResidualBlock1D with
    cond_predict_scale) the condition [time embedding, global condition] is projected to a per-channel scale and
    bias, out <- scale * out + bias (FiLM, Perez et al. 2018)."""

    features: int
    kernel_size: int = 5
    groups: int = 8
    film: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
        out = ConvBlock(self.features, self.kernel_size, self.groups, name="conv_block_0")(x)
        if self.film:
            scale, bias = jnp.split(TorchDense(2 * self.features, name="film_dense")(mish(condition)), 2, axis=-1)
            out = scale[:, None, :] * out + bias[:, None, :]
        else:
            out = out + TorchDense(self.features, name="time_dense")(mish(condition))[:, None, :]
        out = ConvBlock(self.features, self.kernel_size, self.groups, name="conv_block_1")(out)
        if x.shape[-1] != self.features:
            x = TorchConv1d(self.features, 1, name="residual_conv")(x)
        return out + x


class LinearAttention(nn.Module):
    """Diffuser's optional residual linear attention over the horizon (pre-normalised over channels).

    Keys are softmaxed over the horizon, queries only scaled, so the cost is linear in H.
    """

    heads: int = 4
    head_dim: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, channels = x.shape
        g = self.param("norm_scale", nn.initializers.ones, (channels,))
        b = self.param("norm_bias", nn.initializers.zeros, (channels,))
        mean = jnp.mean(x, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        normed = (x - mean) / jnp.sqrt(variance + 1e-5) * g + b

        hidden = self.heads * self.head_dim
        qkv_kernel = self.param("qkv_kernel", _torch_uniform(channels), (channels, 3 * hidden))
        q, k, v = jnp.split(normed @ qkv_kernel, 3, axis=-1)  # torch's to_qkv has no bias
        q, k, v = (a.reshape(batch, length, self.heads, self.head_dim) for a in (q, k, v))
        q = q * self.head_dim**-0.5
        k = jax.nn.softmax(k, axis=1)
        context = jnp.einsum("bnhd,bnhe->bhde", k, v)
        out = jnp.einsum("bhde,bnhd->bnhe", context, q).reshape(batch, length, hidden)
        return x + TorchDense(channels, name="out")(out)


class TimeMLP(nn.Module):
    """Sinusoidal embedding of the step -> Linear(4 dim) -> Mish -> Linear(dim)."""

    dim: int

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        embedding = sinusoidal_embedding(t, self.dim)
        return TorchDense(self.dim, name="dense_1")(mish(TorchDense(4 * self.dim, name="dense_0")(embedding)))


def _steps(t, batch: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(t), (batch,))


def _widths(transition_dim: int, dim: int, dim_mults: Sequence[int]) -> list[tuple[int, int]]:
    widths = [transition_dim, *(dim * m for m in dim_mults)]
    return list(zip(widths[:-1], widths[1:]))


class TemporalUnet(nn.Module):
    """Diffuser's denoiser: x [B, H, D], step t [B] (index 0..T-1, int or float) -> [B, H, D].

    Down path: per resolution two residual blocks (then attention if enabled), the output kept for the skip
    connection, then a stride-2 conv except at the last resolution. Two mid blocks. Up path over all but the first
    resolution: concatenate the skip, two residual blocks, a stride-2 transposed conv except at the last. Then a
    ConvBlock and a 1x1 conv back to the transition width.

    With `film`, the network is Diffusion Policy's ConditionalUnet1D (Chi et al. 2023; the same layout, widths
    dim * dim_mults = its down_dims): a global condition [B, C] (the observation features) is concatenated to the
    time embedding and every residual block applies it by FiLM.
    """

    transition_dim: int
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 5
    groups: int = 8
    attention: bool = False  # Diffuser turns it on for HalfCheetah only
    film: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, global_condition: jax.Array | None = None) -> jax.Array:
        check_horizon(x.shape[1], self.dim_mults)
        if (global_condition is not None) != self.film:
            raise ValueError("TemporalUnet takes a global condition exactly when film=True")
        block = lambda features, name: ResidualTemporalBlock(  # noqa: E731
            features, self.kernel_size, self.groups, self.film, name=name)
        attend = lambda h, name: LinearAttention(name=name)(h) if self.attention else h  # noqa: E731
        condition = TimeMLP(self.dim, name="time_mlp")(_steps(t, x.shape[0]))
        if self.film:
            condition = jnp.concatenate([condition, global_condition], axis=-1)
        widths = _widths(self.transition_dim, self.dim, self.dim_mults)

        skips = []
        for level, (_, width) in enumerate(widths):
            x = block(width, f"down_{level}_block_0")(x, condition)
            x = block(width, f"down_{level}_block_1")(x, condition)
            x = attend(x, f"down_{level}_attention")
            skips.append(x)
            if level < len(widths) - 1:
                x = TorchConv1d(width, 3, stride=2, padding=1, name=f"down_{level}_downsample")(x)

        x = block(widths[-1][1], "mid_block_0")(x, condition)
        x = attend(x, "mid_attention")
        x = block(widths[-1][1], "mid_block_1")(x, condition)

        # The reference's "is last" test on the up path never fires (its index stops one short), so every up level
        # upsamples: len(dim_mults) - 1 doublings undo as many halvings, and the top skip is never concatenated.
        for level, (width, _) in enumerate(reversed(widths[1:])):
            x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = block(width, f"up_{level}_block_0")(x, condition)
            x = block(width, f"up_{level}_block_1")(x, condition)
            x = attend(x, f"up_{level}_attention")
            x = TorchConvTranspose1d(width, 4, stride=2, padding=1, name=f"up_{level}_upsample")(x)

        x = ConvBlock(self.dim, self.kernel_size, self.groups, name="final_block")(x)
        return TorchConv1d(self.transition_dim, 1, name="final_conv")(x)


class ValueFunction(nn.Module):
    """Diffuser's guide: the U-Net's down path (downsampling after every resolution), two narrowing mid blocks
    each followed by a downsampling, then [flattened features, time embedding] -> MLP -> one value per trajectory.
    x [B, H, D], t [B] -> [B].
    """

    transition_dim: int
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 5
    groups: int = 8
    out_dim: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        block = lambda features, name: ResidualTemporalBlock(  # noqa: E731
            features, self.kernel_size, self.groups, name=name)
        downsample = lambda h, name: TorchConv1d(h.shape[-1], 3, stride=2, padding=1, name=name)(h)  # noqa: E731
        time_embedding = TimeMLP(self.dim, name="time_mlp")(_steps(t, x.shape[0]))
        widths = _widths(self.transition_dim, self.dim, self.dim_mults)

        for level, (_, width) in enumerate(widths):
            x = block(width, f"down_{level}_block_0")(x, time_embedding)
            x = block(width, f"down_{level}_block_1")(x, time_embedding)
            x = downsample(x, f"down_{level}_downsample")
        mid = widths[-1][1]
        x = downsample(block(mid // 2, "mid_block_0")(x, time_embedding), "mid_downsample_0")
        x = downsample(block(mid // 4, "mid_block_1")(x, time_embedding), "mid_downsample_1")

        # Flatten channel-major, as torch's view of [B, C, L] does, so that weights carry over.
        features = jnp.swapaxes(x, 1, 2).reshape(x.shape[0], -1)
        hidden = jnp.concatenate([features, time_embedding], axis=-1)
        hidden = mish(TorchDense(features.shape[-1] // 2, name="final_dense_0")(hidden))
        out = TorchDense(self.out_dim, name="final_dense_1")(hidden)
        return out[:, 0] if self.out_dim == 1 else out
