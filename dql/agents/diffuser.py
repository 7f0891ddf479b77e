"""Diffuser (Janner, Du, Tenenbaum & Levine, ICML 2022) as an agent: a diffusion model over state-action
trajectories, planning by (value-guided) sampling with the current state pinned, acting with the plan's first
action and replanning at every step (receding horizon).

Training data are windows of H consecutive rows of one episode (`training_arrays`: dql.data.windows, sampled by
dql.data.sample_batch's window mode). One update trains
- the trajectory model (dql.planning.TemporalUnet) on Diffuser's weighted loss: x = [normalised actions,
  normalised observations] noised at a random step, the first observation written in, the output compared with
  x (or the noise), the first action weighted action_weight; Adam, and an EMA copy as Diffuser's trainer keeps
  it (every ema_every updates: a plain copy before ema_start, then decay ema_decay), which plans;
- when use_value_guide, the value model (dql.planning.ValueFunction) on Diffuser's ValueDiffusion loss: the same
  noised, conditioned windows regressed on the discounted return from the window's start; its EMA copy guides.

The normaliser (Gaussian: (x - mean) / std; limits: [min, max] -> [-1, 1]) is held in the agent as an affine map
x -> (x - shift) / scale per dimension of observations and actions, computed from the dataset's rows by
`dataset_statistics` (the trainer's hook), so a restored policy normalises as the trained one did.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.agents import normalizer as affine
from dql.data.dataset import Dataset, training_arrays
from dql.data.windows import trajectory_windows
from dql.diffusion.ddpm import q_sample
from dql.diffusion.schedules import SCHEDULES, DiffusionSchedule
from dql.planning import (
    TemporalUnet,
    ValueFunction,
    apply_conditioning,
    best_plan,
    check_horizon,
    loss_weights,
    plan,
    trajectory_loss,
)

# How an episode is driven (`control`): replan every step and act with the plan's first action (locomotion);
# plan once and track the plan's states with Diffuser's maze controller; plan once and play the plan's actions.
CONTROLS = ("replan", "waypoints", "actions")


@dataclasses.dataclass(frozen=True)
class DiffuserHyperparams(common.Hyperparams):
    horizon: int
    diffusion_steps: int
    beta_schedule: str
    dim: int
    dim_mults: tuple[int, ...]
    attention: bool
    predict_epsilon: bool
    clip_denoised: bool
    action_weight: float
    loss_discount: float
    normalizer: str
    lr: float
    value_lr: float
    ema_decay: float
    ema_every: int
    ema_start: int
    use_padding: bool
    max_path_length: int
    value_discount: float
    termination_penalty: float
    use_value_guide: bool
    guide_scale: float
    t_stopgrad: int
    n_guide_steps: int
    scale_grad_by_std: bool
    num_plan_samples: int
    state_dims: int
    goal_conditioned: bool
    control: str

    def __post_init__(self):
        """Reject values the update or the planner cannot run with, naming the --config flag."""
        super().__post_init__()
        # JSON (a run's config.json) gives lists: the hyperparameters are static in jit, so hashable.
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        self.require(
            at_least={"horizon": 1, "diffusion_steps": 1, "ema_every": 1, "ema_start": 0, "n_guide_steps": 1,
                      "num_plan_samples": 1, "t_stopgrad": 0, "guide_scale": 0, "max_path_length": 1,
                      "state_dims": 0},
            positive=("lr", "value_lr", "action_weight", "loss_discount"),
            unit_interval=("ema_decay", "value_discount"),
            choices={"beta_schedule": SCHEDULES, "control": CONTROLS, "normalizer": affine.KINDS},
        )
        check_horizon(self.horizon, self.dim_mults)
        if self.max_path_length < self.horizon:
            raise ValueError(f"--config.max_path_length={self.max_path_length} must be >= --config.horizon="
                             f"{self.horizon}")
        if not self.dim_mults or min(self.dim_mults) < 1:
            raise ValueError(f"--config.dim_mults must be positive multipliers, got {self.dim_mults}")
        if self.dim < 8 or self.dim % 8:
            raise ValueError(f"--config.dim={self.dim} must be a positive multiple of 8 (the U-Net's GroupNorm has "
                             "8 groups)")
        if self.use_value_guide and (self.dim * self.dim_mults[-1]) % 32:
            raise ValueError(f"--config.dim * dim_mults[-1] = {self.dim * self.dim_mults[-1]} must be a multiple of "
                             "32: the value model's mid blocks narrow it by 4 into 8 GroupNorm groups")


@functools.lru_cache(maxsize=None)
def _schedule(name: str, num_steps: int) -> DiffusionSchedule:
    return DiffusionSchedule.create(name, num_steps)


def _unet(hp: DiffuserHyperparams, transition_dim: int) -> TemporalUnet:
    return TemporalUnet(transition_dim, dim=hp.dim, dim_mults=hp.dim_mults, attention=hp.attention)


def _value_net(hp: DiffuserHyperparams, transition_dim: int) -> ValueFunction:
    return ValueFunction(transition_dim, dim=hp.dim, dim_mults=hp.dim_mults)


def planned_state_dim(hp: DiffuserHyperparams, observation_dim: int, action_dim: int) -> int:
    """The observation entries the trajectory model plans (the first state_dims, or all), after checking that the
    observation and action layouts suit goal conditioning and waypoint control."""
    state_dim = hp.state_dims or observation_dim
    if state_dim > observation_dim:
        raise ValueError(f"--config.state_dims={hp.state_dims} exceeds the observation's {observation_dim} entries")
    if hp.goal_conditioned and (state_dim % 2 or observation_dim != state_dim + state_dim // 2):
        raise ValueError(f"--config.goal_conditioned=True needs observations laid out [positions, velocities, goal "
                         f"position] (a point maze's [x, y, vx, vy, goal_x, goal_y]): with --config.state_dims="
                         f"{state_dim}, {state_dim + state_dim // 2} entries, got {observation_dim}")
    if hp.control == "waypoints" and state_dim != 2 * action_dim:
        raise ValueError(f"--config.control=waypoints tracks planned [positions, velocities] with one action per "
                         f"position (a point mass): needs a planned state of 2 x {action_dim} entries, got {state_dim} "
                         "(set --config.state_dims)")
    return state_dim


class DiffuserAgent(struct.PyTreeNode):
    model: TrainState
    model_ema_params: Any
    value: TrainState | None  # None unless use_value_guide
    value_ema_params: Any
    normalizer: dict[str, jax.Array]  # STAT_KEYS -> [obs_dim] or [action_dim]
    rng: jax.Array
    step: jax.Array
    hp: DiffuserHyperparams = struct.field(pytree_node=False)

    # ------------------------------------------------------------------------------------- the trainer's hooks
    @staticmethod
    def training_arrays(dataset: Dataset, config) -> dict[str, np.ndarray]:
        """The windows layout the loop samples from: per-row observations, actions and discounted returns with
        Diffuser's padding, window starts and offsets (dql.data.windows)."""
        return trajectory_windows(
            training_arrays(dataset, config.reward_tune), dataset, int(config.horizon), bool(config.use_padding),
            float(config.value_discount), int(config.max_path_length), float(config.termination_penalty))

    @staticmethod
    def dataset_statistics(dataset: Dataset, config) -> dict[str, np.ndarray]:
        """The normaliser, from the dataset's rows (not the padding), as Diffuser's DatasetNormalizer takes it: of
        the planned state's entries and the actions."""
        if config.normalizer not in affine.KINDS:
            raise ValueError(f"--config.normalizer={config.normalizer!r}; expected one of "
                             f"{', '.join(affine.KINDS)}")
        return affine.statistics(dataset.observations[:, :int(config.state_dims) or None], dataset.actions,
                                     config.normalizer)

    @classmethod
    def create(cls, rng: jax.Array, observation_dim: int, action_dim: int, hp: DiffuserHyperparams,
               observation_stats=None) -> "DiffuserAgent":
        """observation_stats: `dataset_statistics`'s dict; None (a template to restore into) gives the identity."""
        if len(hp.max_action) != action_dim:
            raise ValueError(f"max_action has {len(hp.max_action)} entries, expected action_dim={action_dim}")
        state_dim = planned_state_dim(hp, observation_dim, action_dim)
        stats = affine.from_statistics(observation_stats, state_dim, action_dim, "DiffuserAgent")
        transition_dim = state_dim + action_dim
        x = jnp.zeros((1, hp.horizon, transition_dim))
        t = jnp.zeros((1,), jnp.int32)
        rng, model_key, value_key = jax.random.split(rng, 3)
        unet = _unet(hp, transition_dim)
        params = unet.init(model_key, x, t)
        model = common.make_train_state(unet.apply, params, common.make_optimizer(optax.constant_schedule(hp.lr), 0))
        value, value_ema = None, None
        if hp.use_value_guide:
            value_net = _value_net(hp, transition_dim)
            value_params = value_net.init(value_key, x, t)
            value = common.make_train_state(value_net.apply, value_params,
                                            common.make_optimizer(optax.constant_schedule(hp.value_lr), 0))
            value_ema = jax.tree_util.tree_map(jnp.copy, value_params)
        return cls(model=model, model_ema_params=jax.tree_util.tree_map(jnp.copy, params), value=value,
                   value_ema_params=value_ema, normalizer=stats, rng=rng, step=jnp.zeros((), jnp.int32), hp=hp)

    # ----------------------------------------------------------------------------------------- normalisation
    @property
    def action_dim(self) -> int:
        return len(self.hp.max_action)

    @property
    def state_dim(self) -> int:
        return self.normalizer["observation_shift"].shape[0]

    def normalize(self, x: jax.Array, name: str) -> jax.Array:
        return affine.normalize(self.normalizer, x, name)

    def unnormalize(self, x: jax.Array, name: str) -> jax.Array:
        return affine.unnormalize(self.normalizer, x, name, clip=self.hp.normalizer == "limits")

    def trajectories(self, batch: common.Batch) -> jax.Array:
        """[B, H, action_dim + state_dim]: normalised actions, then the normalised planned part of the observations
        (Diffuser's layout)."""
        return jnp.concatenate([self.normalize(batch["actions"], "action"),
                                self.normalize(batch["observations"][..., :self.state_dim], "observation")], axis=-1)

    def training_conditions(self, x0: jax.Array) -> dict[int, jax.Array]:
        """The window's first state, and with goal conditioning its last (Diffuser's GoalDataset)."""
        conditions = {0: x0[:, 0, self.action_dim:]}
        if self.hp.goal_conditioned:
            conditions[self.hp.horizon - 1] = x0[:, -1, self.action_dim:]
        return conditions

    def planning_conditions(self, observations: jax.Array) -> dict[int, jax.Array]:
        """The current state at index 0; with goal conditioning the goal at rest at the last index (Diffuser's
        maze planner pins [goal, 0, 0])."""
        state = observations[:, :self.state_dim]
        conditions = {0: self.normalize(state, "observation")}
        if self.hp.goal_conditioned:
            goal = observations[:, self.state_dim:]
            at_rest = jnp.concatenate([goal, jnp.zeros((goal.shape[0], self.state_dim - goal.shape[1]))], axis=-1)
            conditions[self.hp.horizon - 1] = self.normalize(at_rest, "observation")
        return conditions

    # ------------------------------------------------------------------------------------------------ losses
    def diffusion_loss(self, params, x0: jax.Array, t: jax.Array, noise: jax.Array):
        """(Diffuser's weighted trajectory loss, info with a0_loss); conditioned on the first observation."""
        hp = self.hp
        weights = jnp.asarray(loss_weights(hp.horizon, self.action_dim, x0.shape[-1], hp.action_weight,
                                           hp.loss_discount))
        return trajectory_loss(lambda x, steps: self.model.apply_fn(params, x, steps),
                               _schedule(hp.beta_schedule, hp.diffusion_steps), x0,
                               self.training_conditions(x0), self.action_dim, t, noise, weights,
                               hp.predict_epsilon)

    def value_loss(self, params, x0: jax.Array, targets: jax.Array, t: jax.Array, noise: jax.Array):
        """(mean squared error of the value of the noised, conditioned window against its return, predictions)."""
        schedule = _schedule(self.hp.beta_schedule, self.hp.diffusion_steps)
        flat = x0.reshape(x0.shape[0], -1)
        x_noisy = q_sample(schedule, flat, t, noise.reshape(flat.shape)).reshape(x0.shape)
        x_noisy = apply_conditioning(x_noisy, self.training_conditions(x0), self.action_dim)
        predictions = self.value.apply_fn(params, x_noisy, t)
        return jnp.mean(jnp.square(predictions - targets)), predictions

    # ------------------------------------------------------------------------------------------------ update
    def draw_noise(self, key: jax.Array, local_batch: int, transition_dim: int) -> "DiffuserNoise":
        """The update's randomness from per-example keys: the same numbers on one device or split over many."""
        hp = self.hp
        keys = common.per_example_keys(key, local_batch, hp.axis_name)
        step_keys, noise_keys, value_step_keys, value_noise_keys = jnp.swapaxes(
            jax.vmap(lambda k: jax.random.split(k, 4))(keys), 0, 1)
        randint = jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))
        shape = (hp.horizon, transition_dim)
        return DiffuserNoise(steps=randint(step_keys), noise=common.per_example_normal(noise_keys, shape),
                             value_steps=randint(value_step_keys),
                             value_noise=common.per_example_normal(value_noise_keys, shape))

    def update(self, batch: common.Batch) -> tuple["DiffuserAgent", dict[str, jax.Array]]:
        """batch: observations [B, H, obs], actions [B, H, act], returns [B, H] (windows)."""
        rng, key = jax.random.split(self.rng)
        x0 = self.trajectories(batch)
        noise = self.draw_noise(key, x0.shape[0], x0.shape[-1])
        return self.replace(rng=rng).update_with_noise(x0, batch["returns"][:, 0], noise)

    def update_with_noise(self, x0: jax.Array, returns: jax.Array, noise: "DiffuserNoise"):
        hp = self.hp
        (loss, info), grads = jax.value_and_grad(self.diffusion_loss, has_aux=True)(
            self.model.params, x0, noise.steps, noise.noise)
        grads = common.pmean(grads, hp.axis_name)
        model = self.model.apply_gradients(grads=grads)
        model_ema = self._ema(self.model_ema_params, model.params)
        # "bc_loss" is the trajectory diffusion loss (imitation of the data's trajectories): the loop's offline
        # model selection reads that key.
        metrics = {"bc_loss": loss, "a0_loss": info["a0_loss"], "model_grad_norm": optax.tree.norm(grads)}
        value, value_ema = self.value, self.value_ema_params
        if hp.use_value_guide:
            (value_loss, predictions), value_grads = jax.value_and_grad(self.value_loss, has_aux=True)(
                self.value.params, x0, returns, noise.value_steps, noise.value_noise)
            value_grads = common.pmean(value_grads, hp.axis_name)
            value = self.value.apply_gradients(grads=value_grads)
            value_ema = self._ema(value_ema, value.params)
            metrics.update(value_loss=value_loss, value_mean=jnp.mean(predictions), return_mean=jnp.mean(returns),
                           value_grad_norm=optax.tree.norm(value_grads))
        metrics = common.pmean(metrics, hp.axis_name)
        return self.replace(model=model, model_ema_params=model_ema, value=value, value_ema_params=value_ema,
                            step=self.step + 1), metrics

    def _ema(self, ema_params, params):
        """Diffuser's trainer: every ema_every updates (counted before this one), a copy before ema_start, then
        ema <- decay ema + (1 - decay) params."""
        hp = self.hp
        due = self.step % hp.ema_every == 0
        warm = self.step < hp.ema_start
        decay = jnp.where(due, jnp.where(warm, 0.0, hp.ema_decay), 1.0)
        return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)

    # ---------------------------------------------------------------------------------------------- planning
    def value_guide(self) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
        """The EMA value model as plan's guide_fn(x, t) -> [B], or None without value guidance."""
        if not self.hp.use_value_guide:
            return None
        return lambda x, t: self.value.apply_fn(self.value_ema_params, x, t)

    def plan_with_noise(self, observations: jax.Array, initial_noise: jax.Array, step_noise: jax.Array,
                        guide_fn=None) -> tuple[jax.Array, jax.Array]:
        """num_plan_samples plans per state from the EMA model, the conditions of `planning_conditions` pinned.

        observations [B, obs]; initial_noise [B N, H, D], step_noise [T, B N, H, D]; guide_fn defaults to the value
        guide. Returns (normalised trajectories [B, N, H, D], values [B, N] (zeros without a guide)).
        """
        hp = self.hp
        batch, n = observations.shape[0], hp.num_plan_samples
        guide_fn = self.value_guide() if guide_fn is None else guide_fn
        conditions = {index: jnp.repeat(value, n, axis=0)
                      for index, value in self.planning_conditions(observations).items()}
        planned = plan(lambda x, t: self.model.apply_fn(self.model_ema_params, x, t),
                       _schedule(hp.beta_schedule, hp.diffusion_steps), conditions, self.action_dim, initial_noise,
                       step_noise, hp.predict_epsilon, hp.clip_denoised, guide_fn=guide_fn,
                       guide_scale=hp.guide_scale, t_stopgrad=hp.t_stopgrad, n_guide_steps=hp.n_guide_steps,
                       scale_grad_by_std=hp.scale_grad_by_std)
        shape = (batch, n, hp.horizon, -1)
        return planned.trajectories.reshape(shape), planned.values.reshape(batch, n)

    def plans(self, observations: jax.Array, rng: jax.Array, guide_fn=None):
        """(first actions [B, act], chosen normalised plans [B, H, D], their values [B]): the highest-valued of the
        num_plan_samples when guided, else the first sample, as Diffuser's policy takes them."""
        hp = self.hp
        batch, transition_dim = observations.shape[0], self.state_dim + self.action_dim
        shape = (batch * hp.num_plan_samples, hp.horizon, transition_dim)
        initial_key, step_key = jax.random.split(rng)
        trajectories, values = self.plan_with_noise(
            observations, jax.random.normal(initial_key, shape),
            jax.random.normal(step_key, (hp.diffusion_steps, *shape)), guide_fn)
        if guide_fn is not None or hp.use_value_guide:
            chosen, value = best_plan(trajectories, values)
        else:
            chosen, value = trajectories[:, 0], values[:, 0]
        actions = self.unnormalize(chosen[:, 0, :self.action_dim], "action")
        max_action = jnp.asarray(hp.max_action)
        return jnp.clip(actions, -max_action, max_action), chosen, value

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """Receding-horizon control: plan from each state, act with the chosen plan's first action."""
        return self.plans(observations, rng)[0]

    def plan_arrays(self, observations: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        """One chosen plan per state in the data's units: "states" [B, H, state_dim] and "actions" [B, H, act]."""
        _, chosen, _ = self.plans(observations, rng)
        max_action = jnp.asarray(self.hp.max_action)
        return {"states": self.unnormalize(chosen[..., self.action_dim:], "observation"),
                "actions": jnp.clip(self.unnormalize(chosen[..., :self.action_dim], "action"), -max_action,
                                    max_action)}

    # ------------------------------------------------------------------------------------- episode control
    def begin(self, observations: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        """An episode's memory at its first state: the plan that `act` follows (nothing when replanning)."""
        return {} if self.hp.control == "replan" else self.plan_arrays(observations, rng)

    def act(self, observations: jax.Array, memory: dict, t: jax.Array, rng: jax.Array):
        """(actions [B, act], memory) at episode step t under `control`:
        replan: the first action of a fresh plan from the current state;
        waypoints: Diffuser's maze controller, action = (p_next - p) + (v_next - v) towards the plan's state t + 1
          (past the plan's end its last state at rest), the state laid out [positions, velocities];
        actions: the plan's action t, zero past its end."""
        hp = self.hp
        if hp.control == "replan":
            return self.sample_actions(observations, rng), memory
        last = hp.horizon - 1
        if hp.control == "actions":
            planned = memory["actions"][:, jnp.minimum(t, last)]
            return jnp.where(t <= last, planned, 0.0), memory
        half = self.state_dim // 2
        target = memory["states"][:, jnp.minimum(t + 1, last)]
        target_velocity = jnp.where(t + 1 <= last, target[:, half:], 0.0)
        action = (target[:, :half] - observations[:, :half]) + (target_velocity - observations[:, half:self.state_dim])
        max_action = jnp.asarray(hp.max_action)
        return jnp.clip(action, -max_action, max_action), memory


class DiffuserNoise(struct.PyTreeNode):
    """One update's random inputs: the diffusion loss's steps [B] and noise [B, H, D], and the value loss's."""

    steps: jax.Array
    noise: jax.Array
    value_steps: jax.Array
    value_noise: jax.Array
