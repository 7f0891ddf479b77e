"""Implicit Diffusion Q-learning (Hansen-Estruch, Kostrikov, Janner, Kuba & Levine 2023): IQL's critic and value
beside a diffusion behaviour policy, and actions chosen by resampling the policy's candidates with the weights of
the implicit actor the critic defines.

Follows the authors' code (github.com/philippe-eecs/IDQL): `jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py`
(the learner its `jaxrl5/agents/__init__.py` exports), `jaxrl5/networks/{diffusion,resnet,mlp}.py` and the offline
launcher `launcher/examples/train_ddpm_iql_offline.py`:

- Per update, in its order: the behaviour policy (the diffusion loss alone: the batch mean of the squared noise
  error summed over action dimensions), its EMA copy (actor_tau every update), V on the expectile loss of
  min_k Q'_k(s, a) - V(s) with the target critics, the critics on r + gamma (1 - done) V(s') with the updated V
  (the mean squared error over heads and batch), the target critics by Polyak averaging (tau).
- Behaviour policy: DDPM (T = 5, VP betas) predicting the noise. Its network: learnable Fourier features of the
  step (time_dim outputs, weights N(0, 0.2^2), [cos 2 pi t W, sin 2 pi t W]) -> MLP(2 time_dim, 2 time_dim) ->
  cond; [a_t, s, cond] -> LN_Resnet: Dense(hidden) then num_blocks residual blocks x + Dense(act(Dense_4h(LN(
  dropout(x))))), then act -> Dense(action_dim). Swish activations, xavier-uniform kernels where its code sets
  them (flax's lecun-normal inside the blocks), dropout 0.1 while training. Dropout masks are drawn per example.
- Its sampler (`idql_sample`): x <- (x - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
  + [t > 0] sqrt(beta_t) ddpm_temperature z, the chain clipped to [-1, 1] after every step (clip_sampler), from the
  EMA parameters.
- Critics: two heads MLP(256, 256) ReLU -> Dense(1); V: LayerNorm of the input (value_layer_norm) ->
  MLP(256, 256) ReLU -> Dense(1); xavier-uniform kernels, zero biases. Adam; the policy AdamW (weight decay 1e-4,
  optax's default, which its learner takes) with a cosine decay over the run.
- Action selection (evaluation): `num_samples` (N) candidates from the EMA policy per state; with
  selection="expectile" one is resampled with the implicit actor's weights |tau - 1(Q < V)|, Q the target critics'
  min (the paper's policy extraction for the expectile critic; in the authors' code `sample_implicit_policy`, which
  only the older `ddpm_iql` learner has); with selection="argmax" the candidate of highest Q is taken (the exported
  learner's `eval_actions`, which their training script's `evaluate` reports at HEAD). The default is the paper's;
  the official numbers at HEAD come from --config.selection=argmax.
- Training uses the whole dataset; the authors' script trains on a random 95% and keeps 5% to log a validation
  loss.

Actions are handled in the unit box (divided by max_action) and scaled back when acting; dataset actions are
clipped to [-1 + action_clip_eps, 1 - action_clip_eps] as its D4RLDataset clips them.
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
from dql.agents.iql import expectile_loss
from dql.diffusion import DiffusionSchedule, make_betas, q_sample
from dql.nets import ACTIVATIONS

SELECTIONS = ("expectile", "argmax")
ACTOR_ACTIVATIONS = {"swish": jax.nn.swish, **ACTIVATIONS}


@dataclasses.dataclass(frozen=True)
class IDQLHyperparams(common.Hyperparams):
    expectile: float
    lr: float
    critic_lr: float
    value_lr: float
    actor_weight_decay: float
    discount: float
    tau: float
    actor_tau: float
    diffusion_steps: int
    beta_schedule: str
    time_dim: int
    actor_hidden_dim: int
    actor_num_blocks: int
    actor_dropout: float
    actor_layer_norm: bool
    actor_activation: str
    hidden_dims: tuple[int, ...]
    value_layer_norm: bool
    num_samples: int
    selection: str
    ddpm_temperature: float
    clip_sampler: bool
    action_clip_eps: float

    def __post_init__(self):
        """Reject values the update cannot run with, naming the --config flag."""
        super().__post_init__()
        make_betas(self.beta_schedule, self.diffusion_steps)
        if self.selection not in SELECTIONS:
            raise ValueError(f"--config.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.actor_activation not in ACTOR_ACTIVATIONS:
            raise ValueError(f"--config.actor_activation must be one of {', '.join(sorted(ACTOR_ACTIVATIONS))}, "
                             f"got {self.actor_activation!r}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"--config.time_dim must be even and >= 2, got {self.time_dim}")
        if not 0.0 <= self.actor_dropout < 1.0:
            raise ValueError(f"--config.actor_dropout must be in [0, 1), got {self.actor_dropout}")
        if not 0.0 < self.expectile < 1.0:  # the implicit weights tau and 1 - tau must both be positive
            raise ValueError(f"--config.expectile must be in (0, 1), got {self.expectile}")
        if self.action_clip_eps >= 1:
            raise ValueError(f"--config.action_clip_eps must be < 1, got {self.action_clip_eps}")
        self.require(
            at_least={"actor_hidden_dim": 1, "actor_num_blocks": 0, "num_samples": 1, "ddpm_temperature": 0,
                      "actor_weight_decay": 0, "action_clip_eps": 0},
            positive=("lr", "critic_lr", "value_lr"),
            unit_interval=("discount", "tau", "actor_tau"),
        )


# ---------------------------------------------------------------------------------------------------- networks


def _xavier():
    return nn.initializers.xavier_uniform()


def per_example_dropout_masks(keys: jax.Array, rate: float, num_blocks: int, width: int) -> jax.Array | None:
    """Keep masks [num_blocks, B, width] of inverted dropout, one per example and block drawn from the example's key
    folded with the block's number, so a batch split over devices draws the same masks; None at rate 0."""
    if rate == 0.0:
        return None

    def block_masks(block):
        return jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, block), 1.0 - rate, (width,)))(keys)

    return jnp.stack([block_masks(block) for block in range(num_blocks)])


class IDQLMLP(nn.Module):
    """jaxrl5's MLP: LayerNorm of the input when layer_norm, then Dense (xavier-uniform) -> act per layer, the last
    activated only when activate_final."""

    hidden_dims: Sequence[int]
    activation: str = "relu"
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTOR_ACTIVATIONS[self.activation]
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=_xavier())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = act(x)
        return x


class IDQLScoreNet(nn.Module):
    """eps(s, a_t, t): IDQL's DDPM module with the LN_Resnet reverse encoder. t: [B, 1] (step index, as a float)."""

    action_dim: int
    time_dim: int
    hidden_dim: int
    num_blocks: int
    dropout: float
    layer_norm: bool
    activation: str

    @nn.compact
    def __call__(self, observations, noisy_actions, times, dropout_masks=None) -> jax.Array:
        """dropout_masks: [num_blocks, B, hidden_dim] keep masks (`per_example_dropout_masks`); None: no dropout."""
        act = ACTOR_ACTIVATIONS[self.activation]
        # FourierFeatures(learnable): f = 2 pi t W^T, W [time_dim / 2, 1] ~ N(0, 0.2^2), in W's dtype.
        w = self.param("fourier_kernel", nn.initializers.normal(0.2), (self.time_dim // 2, times.shape[-1]))
        f = 2.0 * jnp.pi * times.astype(w.dtype) @ w.T
        cond = IDQLMLP((2 * self.time_dim, 2 * self.time_dim), self.activation)(
            jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1))
        x = nn.Dense(self.hidden_dim, kernel_init=_xavier())(jnp.concatenate([noisy_actions, observations, cond], -1))
        for block in range(self.num_blocks):  # MLPResNetBlock
            residual = x
            if dropout_masks is not None:  # flax's Dropout: kept entries scaled by 1 / (1 - rate)
                x = jnp.where(dropout_masks[block], x / (1.0 - self.dropout), 0.0)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            hidden = act(nn.Dense(4 * self.hidden_dim)(x))
            x = residual + nn.Dense(self.hidden_dim)(hidden)
        return nn.Dense(self.action_dim, kernel_init=_xavier())(act(x))


class IDQLCritics(nn.Module):
    """num_heads StateActionValue(MLP(hidden, activate_final)) -> Dense(1), as one nn.vmap ensemble: [heads, B]."""

    hidden_dims: Sequence[int]
    num_heads: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        heads = nn.vmap(_QHead, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                        axis_size=self.num_heads)(self.hidden_dims)
        return heads(jnp.concatenate([observations, actions], axis=-1))


class _QHead(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = IDQLMLP(self.hidden_dims, "relu", activate_final=True, layer_norm=self.layer_norm)(x)
        return nn.Dense(1, kernel_init=_xavier())(x)[..., 0]


class IDQLValue(nn.Module):
    """StateValue: [LayerNorm of s] -> MLP(hidden, activate_final) -> Dense(1): [B]."""

    hidden_dims: Sequence[int]
    layer_norm: bool

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return _QHead(self.hidden_dims, self.layer_norm)(observations)


# ------------------------------------------------------------------------------------------------- closed forms


def implicit_weights(advantages: jax.Array, expectile: float) -> jax.Array:
    """The expectile critic's implicit-actor weights |tau - 1(Q - V < 0)|: tau where Q > V, 1 - tau elsewhere."""
    return jnp.where(advantages > 0, expectile, 1.0 - expectile)


def select_candidates(q: jax.Array, v: jax.Array, key: jax.Array, selection: str, expectile: float) -> jax.Array:
    """The chosen candidate per state [B] from Q [B, N] and V [B]: drawn with probability proportional to the
    implicit weights (selection="expectile"), or the argmax of Q ("argmax")."""
    if selection == "argmax":
        return jnp.argmax(q, axis=-1)
    return jax.random.categorical(key, jnp.log(implicit_weights(q - v[:, None], expectile)), axis=-1)


def idql_sample(eps_fn, schedule: DiffusionSchedule, observations, initial_noise, step_noise, temperature: float,
                clip: bool) -> jax.Array:
    """IDQL's ddpm_sampler in the unit box. initial_noise [B, A] is x_T; step_noise [T, B, A], step_noise[t] the
    draw of step t (t = 0 adds none). Each step: x <- (x - (1 - alpha_t) / sqrt(1 - abar_t) eps(s, x, t))
    / sqrt(alpha_t) + [t > 0] sqrt(beta_t) temperature z_t, clipped to [-1, 1] when `clip`; the result is clipped."""
    batch = observations.shape[0]
    dtype = initial_noise.dtype
    coefficients = {
        "scale": jnp.asarray(1.0 / schedule.alphas ** 0.5, dtype),
        "eps": jnp.asarray((1.0 - schedule.alphas) / schedule.sqrt_one_minus_alphas_cumprod, dtype),
        "sigma": jnp.asarray(schedule.betas ** 0.5 * temperature, dtype),
    }

    def step(x, inputs):
        t, c, z = inputs
        eps = eps_fn(x, jnp.full((batch, 1), t, dtype), observations)
        x = c["scale"] * (x - c["eps"] * eps) + (t > 0).astype(dtype) * c["sigma"] * z
        return (jnp.clip(x, -1.0, 1.0) if clip else x), None

    steps = jnp.arange(schedule.num_steps - 1, -1, -1)
    reverse = lambda tree: jax.tree_util.tree_map(lambda v: v[::-1], tree)  # noqa: E731
    x, _ = jax.lax.scan(step, initial_noise, (steps, reverse(coefficients), step_noise[::-1]),
                        unroll=schedule.num_steps <= 10)
    return jnp.clip(x, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------------- agent


class IDQLNoise(struct.PyTreeNode):
    """The random inputs of one IDQL update: bc_steps [B] and bc_noise [B, A], the noised dataset action's step and
    noise; dropout_masks [num_blocks, B, actor_hidden_dim] (None without dropout), the LN_Resnet blocks' keep masks."""

    bc_steps: jax.Array
    bc_noise: jax.Array
    dropout_masks: jax.Array | None


class IDQLAgent(struct.PyTreeNode):
    actor: TrainState  # the behaviour policy's score (noise) network
    actor_target_params: Any  # its EMA, which samples
    critic: TrainState
    critic_target_params: Any
    value: TrainState
    rng: jax.Array
    hp: IDQLHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: IDQLHyperparams, observation_stats=None):
        del observation_stats  # IDQL feeds raw states
        rng, actor_key, critic_key, value_key = jax.random.split(rng, 4)
        score_net = IDQLScoreNet(action_dim, hp.time_dim, hp.actor_hidden_dim, hp.actor_num_blocks, hp.actor_dropout,
                                 hp.actor_layer_norm, hp.actor_activation)
        critic_net = IDQLCritics(hp.hidden_dims)
        value_net = IDQLValue(hp.hidden_dims, hp.value_layer_norm)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_params = score_net.init(actor_key, observations, actions, jnp.zeros((1, 1)))
        critic_params = critic_net.init(critic_key, observations, actions)
        actor_tx = optax.adamw(optax.cosine_decay_schedule(hp.lr, hp.total_steps), weight_decay=hp.actor_weight_decay)
        return cls(
            actor=common.make_train_state(score_net.apply, actor_params, actor_tx),
            actor_target_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(critic_net.apply, critic_params, optax.adam(hp.critic_lr)),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            value=common.make_train_state(value_net.apply, value_net.init(value_key, observations),
                                          optax.adam(hp.value_lr)),
            rng=rng,
            hp=hp,
        )

    # --------------------------------------------------------------------------------------------- sampling
    @property
    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.create(self.hp.beta_schedule, self.hp.diffusion_steps)

    def behaviour_actions(self, params, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """Unit-box actions of the diffusion policy from noise [B, T + 1, A] (x_T, then the draw of step t at
        index t + 1)."""

        def eps_fn(x, t, s):
            return self.actor.apply_fn(params, s, x, t)

        return idql_sample(eps_fn, self.schedule, observations, noise[:, 0], jnp.swapaxes(noise[:, 1:], 0, 1),
                           self.hp.ddpm_temperature, self.hp.clip_sampler)

    def sample_behaviour(self, observations: jax.Array, rng: jax.Array, params=None) -> jax.Array:
        """One draw per state from the diffusion policy alone (the EMA parameters unless `params`), scaled to the
        action bound."""
        params = self.actor_target_params if params is None else params
        noise = jax.random.normal(rng, (observations.shape[0], self.hp.diffusion_steps + 1, len(self.hp.max_action)))
        return self.behaviour_actions(params, observations, noise) * jnp.asarray(self.hp.max_action)

    def action_candidates(self, observations: jax.Array, noise: jax.Array):
        """(unit-box candidates [B, N, A] of the EMA policy from noise [B N, T + 1, A], min_k Q'_k [B, N] of the
        target critics, V(s) [B])."""
        batch, n = observations.shape[0], self.hp.num_samples
        repeated = jnp.repeat(observations, n, axis=0)
        candidates = self.behaviour_actions(self.actor_target_params, repeated, noise)
        q = self.critic.apply_fn(self.critic_target_params, repeated, candidates).min(axis=0).reshape(batch, n)
        v = self.value.apply_fn(self.value.params, observations)
        return candidates.reshape(batch, n, -1), q, v

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        batch = observations.shape[0]
        noise_key, choice_key = jax.random.split(rng)
        noise = jax.random.normal(noise_key, (batch * self.hp.num_samples, self.hp.diffusion_steps + 1,
                                              len(self.hp.max_action)))
        candidates, q, v = self.action_candidates(observations, noise)
        choice = select_candidates(q, v, choice_key, self.hp.selection, self.hp.expectile)
        return candidates[jnp.arange(batch), choice] * jnp.asarray(self.hp.max_action)

    # ------------------------------------------------------------------------------------------------ losses
    def actor_loss(self, params, observations, actions, t, noise, dropout_masks) -> jax.Array:
        """Batch mean of ||eps(s, a_t, t) - eps||^2 (summed over action dimensions), with the dropout masks."""
        noisy_actions = q_sample(self.schedule, actions, t, noise)
        eps = self.actor.apply_fn(params, observations, noisy_actions, t[:, None].astype(jnp.float32), dropout_masks)
        return jnp.mean(jnp.sum(jnp.square(eps - noise), axis=-1))

    def value_loss(self, params, observations, target_q) -> tuple[jax.Array, jax.Array]:
        v = self.value.apply_fn(params, observations)
        return jnp.mean(expectile_loss(target_q - v, self.hp.expectile)), v

    def critic_loss(self, params, observations, actions, backup) -> tuple[jax.Array, jax.Array]:
        """Mean squared TD error over heads and batch: (loss, Q [2, B])."""
        q = self.critic.apply_fn(params, observations, actions)
        return jnp.mean(jnp.square(q - backup[None])), q

    def draw_noise(self, step_key: jax.Array, local_batch: int) -> IDQLNoise:
        """All the randomness of one update from per-example keys, so a batch split over devices draws the same."""
        hp = self.hp
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(common.per_example_keys(step_key, local_batch, hp.axis_name))
        return IDQLNoise(
            bc_steps=jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(keys[:, 0]),
            bc_noise=common.per_example_normal(keys[:, 1], (len(hp.max_action),)),
            dropout_masks=per_example_dropout_masks(keys[:, 2], hp.actor_dropout, hp.actor_num_blocks,
                                                    hp.actor_hidden_dim),
        )

    def update(self, batch: common.Batch) -> tuple["IDQLAgent", dict[str, jax.Array]]:
        rng, step_key = jax.random.split(self.rng)
        noise = self.draw_noise(step_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def update_with_noise(self, batch: common.Batch, noise: IDQLNoise) -> tuple["IDQLAgent", dict[str, jax.Array]]:
        """One update with given randomness (`draw_noise`'s, or another implementation's for a parity check)."""
        hp = self.hp
        observations = batch["observations"]
        bound = 1.0 - hp.action_clip_eps
        actions = jnp.clip(batch["actions"] / jnp.asarray(hp.max_action), -bound, bound)

        # ---- behaviour policy and its EMA
        actor_loss, actor_grads = jax.value_and_grad(self.actor_loss)(self.actor.params, observations, actions,
                                                                      noise.bc_steps, noise.bc_noise,
                                                                      noise.dropout_masks)
        actor = self.actor.apply_gradients(grads=common.pmean(actor_grads, hp.axis_name))
        actor_target_params = common.soft_update(self.actor_target_params, actor.params, hp.actor_tau)

        # ---- V: expectile of the target critics' min over the data's actions
        target_q = self.critic.apply_fn(self.critic_target_params, observations, actions).min(axis=0)
        (value_loss, v), value_grads = jax.value_and_grad(self.value_loss, has_aux=True)(
            self.value.params, observations, target_q)
        value = self.value.apply_gradients(grads=common.pmean(value_grads, hp.axis_name))

        # ---- critics on r + gamma (1 - done) V(s') with the updated V; targets follow
        backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * value.apply_fn(
            value.params, batch["next_observations"])
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, actions, backup)
        critic = self.critic.apply_gradients(grads=common.pmean(critic_grads, hp.axis_name))
        critic_target_params = common.soft_update(self.critic_target_params, critic.params, hp.tau)

        metrics = common.pmean({
            "bc_loss": actor_loss, "actor_loss": actor_loss, "value_loss": value_loss, "critic_loss": critic_loss,
            "v_mean": jnp.mean(v), "q_mean": jnp.mean(q), "target_q_mean": jnp.mean(backup),
            "adv_positive": jnp.mean((target_q - v) > 0),
        }, hp.axis_name)
        agent = self.replace(actor=actor, actor_target_params=actor_target_params, critic=critic,
                             critic_target_params=critic_target_params, value=value)
        return agent, metrics
