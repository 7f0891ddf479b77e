"""Diffusion Policy (Chi, Feng, Du, Xu, Cousineau, Burchfiel & Song, RSS 2023) as an agent: a DDPM over chunks of
pred_horizon actions, conditioned on the last obs_horizon observations; the policy executes action_horizon of each
chunk, then replans (receding horizon).

Training data are windows of one episode (`training_arrays`: dql.data.windows.action_chunk_windows): the
observations of rows t - To + 1 .. t and the actions of rows t - To + 1 .. t - To + H, edge-padded. The denoiser
is the planner's temporal U-Net (dql.planning.TemporalUnet) with FiLM conditioning on the flattened, normalised
observation window (Diffusion Policy's ConditionalUnet1D, obs_as_global_cond); epsilon prediction; AdamW with
linear warm-up and cosine decay; an EMA copy (Diffusion Policy's EMAModel schedule) acts. Observations and actions
are normalised to [-1, 1] by their data limits (its LinearNormalizer, mode "limits"), and the predicted clean
chunk is clipped to [-1, 1] at every sampling step (clip_sample).

Acting: `begin` / `act` keep each episode's observation history and chunk queue (a new chunk at t = 0, Ta, 2 Ta,
...; the executed actions are the chunk's entries To - 1 .. To + Ta - 2, Diffusion Policy's oa_step_convention).
`sample_actions` (dql.load_policy, one call per observation row) has no memory: it repeats the observation as the
history, as Diffusion Policy's env wrapper pads an episode's first step, and returns the first executed action of
a fresh chunk, i.e. it replans at every call.

Task conditioning: the observation's last `goal_dims` entries are the goal; classifier-free guidance drops it in
training with probability condition_dropout and mixes the two predictions at sampling (dql.agents.conditioning).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common, conditioning
from dql.agents import normalizer as affine
from dql.data.dataset import Dataset
from dql.data.windows import action_chunk_windows
from dql.diffusion.ddpm import diffusion_loss, sample
from dql.diffusion.samplers import ddim_sample
from dql.diffusion.schedules import SCHEDULES, DiffusionSchedule
from dql.planning import TemporalUnet, check_horizon

SAMPLERS = ("ddim", "ddpm")


@dataclasses.dataclass(frozen=True)
class DiffusionPolicyHyperparams(common.Hyperparams):
    obs_horizon: int
    pred_horizon: int
    action_horizon: int
    diffusion_steps: int
    beta_schedule: str
    sampler: str
    sample_steps: int
    dim: int
    dim_mults: tuple[int, ...]
    kernel_size: int
    lr: float
    adam_b1: float
    adam_b2: float
    weight_decay: float
    warmup_steps: int
    ema_power: float
    ema_max_decay: float
    goal_dims: int
    condition_dropout: float
    guidance_scale: float

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))  # JSON gives lists
        self.require(
            at_least={"obs_horizon": 1, "action_horizon": 1, "diffusion_steps": 2, "sample_steps": 1,
                      "kernel_size": 1, "warmup_steps": 0, "goal_dims": 0, "guidance_scale": 0.0},
            positive=("lr", "ema_power"),
            unit_interval=("adam_b1", "adam_b2", "ema_max_decay", "condition_dropout"),
            choices={"beta_schedule": SCHEDULES, "sampler": SAMPLERS},
        )
        check_horizon(self.pred_horizon, self.dim_mults, "pred_horizon")
        if self.obs_horizon + self.action_horizon - 1 > self.pred_horizon:
            raise ValueError(f"--config.pred_horizon={self.pred_horizon} must cover the observed steps and the executed "
                             f"ones: obs_horizon + action_horizon - 1 = {self.obs_horizon + self.action_horizon - 1}")
        if self.sample_steps > self.diffusion_steps:
            raise ValueError(f"--config.sample_steps={self.sample_steps} exceeds --config.diffusion_steps="
                             f"{self.diffusion_steps}")
        if self.dim < 8 or self.dim % 8:
            raise ValueError(f"--config.dim={self.dim} must be a positive multiple of 8 (GroupNorm's 8 groups)")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"--config.kernel_size={self.kernel_size} must be odd (same-length convolutions)")


@functools.lru_cache(maxsize=None)
def _schedule(name: str, num_steps: int) -> DiffusionSchedule:
    return DiffusionSchedule.create(name, num_steps)


def _unet(hp: DiffusionPolicyHyperparams, action_dim: int) -> TemporalUnet:
    return TemporalUnet(action_dim, dim=hp.dim, dim_mults=hp.dim_mults, kernel_size=hp.kernel_size, film=True)


def learning_rate(hp: DiffusionPolicyHyperparams) -> optax.Schedule:
    """Linear warm-up from 0, then cosine decay to 0 at the run's end (diffusers' "cosine" schedule, which Diffusion
    Policy steps once per update). The warm-up is at most a tenth of a short run."""
    warmup = min(hp.warmup_steps, hp.total_steps // 10)
    return optax.warmup_cosine_decay_schedule(0.0, hp.lr, warmup, max(hp.total_steps, warmup + 1), 0.0)


def ema_decay(step: jax.Array, power: float, max_decay: float) -> jax.Array:
    """Diffusion Policy's EMAModel (update_after_step 0, inv_gamma 1, min 0) at its `step`-th update (0-based):
    0 (a copy) for the first two, then 1 - (1 + (step - 1))^-power, capped at max_decay."""
    n = jnp.maximum(step - 1, 0).astype(jnp.float32)
    return jnp.where(n <= 0, 0.0, jnp.clip(1.0 - (1.0 + n) ** -power, 0.0, max_decay))


class DiffusionPolicyAgent(struct.PyTreeNode):
    model: TrainState
    ema_params: Any
    normalizer: dict[str, jax.Array]  # STAT_KEYS -> [obs_dim] or [action_dim]
    rng: jax.Array
    step: jax.Array
    hp: DiffusionPolicyHyperparams = struct.field(pytree_node=False)

    # ------------------------------------------------------------------------------------- the trainer's hooks
    @staticmethod
    def training_arrays(dataset: Dataset, config) -> dict[str, np.ndarray]:
        return action_chunk_windows(dataset, int(config.obs_horizon), int(config.pred_horizon))

    @staticmethod
    def dataset_statistics(dataset: Dataset, config) -> dict[str, np.ndarray]:
        """The [-1, 1] normaliser of the observations and actions (their data limits)."""
        return affine.statistics(dataset.observations, dataset.actions, "limits")

    @classmethod
    def create(cls, rng: jax.Array, observation_dim: int, action_dim: int, hp: DiffusionPolicyHyperparams,
               observation_stats=None) -> "DiffusionPolicyAgent":
        """observation_stats: `dataset_statistics`'s dict; None (a template to restore into) gives the identity."""
        if len(hp.max_action) != action_dim:
            raise ValueError(f"max_action has {len(hp.max_action)} entries, expected action_dim={action_dim}")
        conditioning.check_guidance(hp.goal_dims, hp.condition_dropout, hp.guidance_scale, observation_dim)
        stats = affine.from_statistics(observation_stats, observation_dim, action_dim, "DiffusionPolicyAgent")
        condition_dim = hp.obs_horizon * conditioning.condition_size(observation_dim, hp.goal_dims)
        rng, key = jax.random.split(rng)
        unet = _unet(hp, action_dim)
        params = unet.init(key, jnp.zeros((1, hp.pred_horizon, action_dim)), jnp.zeros((1,), jnp.int32),
                           jnp.zeros((1, condition_dim)))
        tx = optax.adamw(learning_rate(hp), b1=hp.adam_b1, b2=hp.adam_b2, eps=1e-8, weight_decay=hp.weight_decay)
        return cls(model=common.make_train_state(unet.apply, params, tx),
                   ema_params=jax.tree_util.tree_map(jnp.copy, params), normalizer=stats, rng=rng,
                   step=jnp.zeros((), jnp.int32), hp=hp)

    # ----------------------------------------------------------------------------------------- normalisation
    @property
    def action_dim(self) -> int:
        return len(self.hp.max_action)

    def normalize(self, x: jax.Array, name: str) -> jax.Array:
        return affine.normalize(self.normalizer, x, name)

    def unnormalize(self, x: jax.Array, name: str) -> jax.Array:
        return affine.unnormalize(self.normalizer, x, name, clip=True)

    def condition(self, history: jax.Array, keep) -> jax.Array:
        """[B, To, obs] observations (data units) -> the network's global condition [B, To * (obs [+ 1])]: the
        normalised window, its goal entries kept or dropped (dql.agents.conditioning)."""
        window = conditioning.with_goal_kept(self.normalize(history, "observation"), self.hp.goal_dims,
                                             jnp.asarray(keep)[..., None] if jnp.ndim(keep) else keep)
        return window.reshape(history.shape[0], -1)

    def eps(self, params, x: jax.Array, t: jax.Array, condition: jax.Array) -> jax.Array:
        """The noise prediction for flattened chunks x [B, H A] (the samplers' layout) at steps t [B]."""
        chunks = x.reshape(x.shape[0], self.hp.pred_horizon, self.action_dim)
        return self.model.apply_fn(params, chunks, t, condition).reshape(x.shape)

    # ------------------------------------------------------------------------------------------------ update
    def loss(self, params, batch: common.Batch, t: jax.Array, noise: jax.Array, keep: jax.Array) -> jax.Array:
        """The epsilon-prediction loss on windows (batch["observations"] [B, H, obs], batch["actions"] [B, H, act])
        at steps t [B], noise [B, H act] and goal-keep flags [B]."""
        x0 = self.normalize(batch["actions"], "action").reshape(t.shape[0], -1)
        condition = self.condition(batch["observations"][:, :self.hp.obs_horizon], keep)
        return diffusion_loss(lambda x, steps, c: self.eps(params, x, steps, c), _schedule(
            self.hp.beta_schedule, self.hp.diffusion_steps), x0, condition, t, noise)

    def update(self, batch: common.Batch) -> tuple["DiffusionPolicyAgent", dict[str, jax.Array]]:
        hp = self.hp
        rng, key = jax.random.split(self.rng)
        local_batch = batch["actions"].shape[0]
        keys = common.per_example_keys(key, local_batch, hp.axis_name)
        step_keys, noise_keys, keep_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 0, 1)
        t = jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(step_keys)
        noise = common.per_example_normal(noise_keys, (hp.pred_horizon * self.action_dim,))
        keep = conditioning.keep_draws(keep_keys, hp.condition_dropout)
        loss, grads = jax.value_and_grad(self.loss)(self.model.params, batch, t, noise, keep)
        grads = common.pmean(grads, hp.axis_name)
        model = self.model.apply_gradients(grads=grads)
        decay = ema_decay(self.step, hp.ema_power, hp.ema_max_decay)
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, self.ema_params, model.params)
        # "bc_loss": the loop's offline model selection reads that key.
        metrics = common.pmean({"bc_loss": loss, "grad_norm": optax.tree.norm(grads), "ema_decay": decay},
                               hp.axis_name)
        return self.replace(model=model, ema_params=ema, rng=rng, step=self.step + 1), metrics

    # ---------------------------------------------------------------------------------------------- sampling
    def predict_chunks_with_noise(self, history: jax.Array, noise: jax.Array) -> jax.Array:
        """Chunks [B, H, act] (data units, within the bound) for observation histories [B, To, obs] from the EMA
        model; noise [B, H act] (DDIM) or [diffusion_steps + 1, B, H act] (DDPM: x_T, then each step's draw)."""
        hp = self.hp
        schedule = _schedule(hp.beta_schedule, hp.diffusion_steps)
        eps = conditioning.guided(lambda x, t, c: self.eps(self.ema_params, x, t, c), hp.guidance_scale)
        eps_fn = lambda x, t, window: eps(x, t, lambda keep: self.condition(window, keep))  # noqa: E731
        if hp.sampler == "ddim":
            x = ddim_sample(eps_fn, schedule, history, noise, hp.sample_steps, max_action=1.0)
        else:
            x = sample(eps_fn, schedule, history, noise[0], noise[1:], 1.0)
        chunks = self.unnormalize(x.reshape(history.shape[0], hp.pred_horizon, self.action_dim), "action")
        max_action = jnp.asarray(hp.max_action)
        return jnp.clip(chunks, -max_action, max_action)

    def predict_chunks(self, history: jax.Array, rng: jax.Array) -> jax.Array:
        hp = self.hp
        size = (history.shape[0], hp.pred_horizon * self.action_dim)
        shape = size if hp.sampler == "ddim" else (hp.diffusion_steps + 1, *size)
        return self.predict_chunks_with_noise(history, jax.random.normal(rng, shape))

    def executed(self, chunks: jax.Array) -> jax.Array:
        """The action_horizon actions of each chunk that are executed: from the current step (index To - 1) on."""
        first = self.hp.obs_horizon - 1
        return chunks[:, first:first + self.hp.action_horizon]

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """One action per state, without memory: a fresh chunk from the state repeated as its history, its first
        executed action (dql.load_policy; evaluation keeps a chunk queue instead, see `act`)."""
        history = jnp.repeat(observations[:, None], self.hp.obs_horizon, axis=1)
        return self.executed(self.predict_chunks(history, rng))[:, 0]

    # ------------------------------------------------------------------------------------- episode control
    def begin(self, observations: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        """An episode's memory: its observation history (the first state repeated) and an empty chunk queue."""
        del rng
        batch = observations.shape[0]
        return {"history": jnp.repeat(observations[:, None], self.hp.obs_horizon, axis=1),
                "queue": jnp.zeros((batch, self.hp.action_horizon, self.action_dim), observations.dtype)}

    def act(self, observations: jax.Array, memory: dict, t: jax.Array, rng: jax.Array):
        """(actions, memory) at episode step t: push the observation into the history; at t = 0, Ta, 2 Ta, ... plan
        a new chunk and queue its executed actions; act with queue entry t mod Ta."""
        history = jnp.concatenate([memory["history"][:, 1:], observations[:, None]], axis=1)
        horizon = self.hp.action_horizon
        queue = jax.lax.cond(t % horizon == 0, lambda: self.executed(self.predict_chunks(history, rng)),
                             lambda: memory["queue"])
        return queue[:, t % horizon], {"history": history, "queue": queue}
