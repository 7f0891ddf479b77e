"""Efficient Diffusion Policies (Kang, Ma, Du, Pang & Yan, NeurIPS 2023): a diffusion policy trained without
running its reverse chain, so the chain can be long (T = 1000), and sampled with DPM-Solver.

Follows the authors' JAX code (github.com/sail-sg/edp, `diffusion/dql.py`, `diffusion/nets.py`,
`diffusion/trainer.py`):

- Action approximation. Each update noises the dataset action, x_t = sqrt(abar_t) a + sqrt(1 - abar_t) eps at a
  random step t, and the network's noise prediction gives the one-step denoised action
  x0_hat = clip(x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps_theta(x_t, t, s)) (`one_step_actions`). The diffusion
  loss and the policy-improvement term both use this x0_hat, so no gradient runs through the reverse chain.
- Three policy-improvement terms, `loss_type`:
  TD3 (the default, Diffusion-QL's): L = L_diff - guide_coef * alpha * mean Q_k(s, x0_hat) / stop_grad(mean |Q_k|),
  k one head drawn at random each step, the critics as they were before this step's update.
  CRR: L = L_diff - guide_coef * mean w log N(a; x0_hat, I), w = min(exp(A / crr_beta), crr_max_weight),
  A = min_k Q_k(s, a) - mean_j min_k Q_k(s, a_j), a_j ~ N(x0_hat, I) (crr_samples of them), w held constant.
  IQL: an expectile value V; L = L_diff - guide_coef * mean w log N(a; x0_hat, I),
  w = min(exp(awr_temperature (min_k Q'_k(s, a) - V(s))), 100) with the target critics and the updated V.
- Critics: two Q networks. TD3 and CRR regress on r + gamma (1 - done) min_k Q'_k(s', a'), a' from the target
  policy through the sampler (optionally the max-Q backup over several a'); IQL on r + gamma (1 - done) V(s').
  Loss: the sum over heads of the batch-mean squared error. Target critics follow every step (tau) toward the
  updated critics; the target policy follows with the same tau every `ema_every` updates once past `ema_start`
  (EDP's `policy_tgt_freq` 5 after step 1000, counted from 1).
- Sampling: DPM-Solver ("dpm": `dpm_steps` network calls of order `dpm_order`, `dpm_spacing`, from index T - 1 to
  index 0, each noise prediction clipped as EDP clips it, `edp_noise_clip`) or the ancestral DDPM chain ("ddpm", T
  calls). The backup's next actions and evaluation use the same sampler; as in EDP, DPM-Solver's actions are
  clipped to the box only in the max-Q backup and when acting.
- Energy-based action selection (evaluation): `num_action_candidates` draws from the online policy, one chosen
  with probability softmax(min_k Q_k) over them, with the online critics (EDP's `dpmensemble_act`).
- Networks (EDP's, not Diffusion-QL's): flax default initialisation (lecun-normal kernels, zero biases); time
  embedding [cos(t f), sin(t f)], f_k = 10000^(-k / (d / 2)), then Dense(2 d) -> mish -> Dense(d); the noise
  network takes [s, x_t, t_emb] through hidden layers Dense -> LayerNorm? -> mish; the critics and the value
  [s, a] / s through the same trunk. Each critic head has its own optimiser in EDP, so gradient-norm clipping
  (`grad_norm`, per dataset) applies per head (`clip_by_head_norm`), and to the policy and the value separately.

Actions stay in the environment's units, clipped to +-max_action; dataset actions are clipped to
+-action_clip * max_action as EDP clips its datasets (0.999).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.agents.edp_nets import EDPCritics, EDPNoiseNet, EDPValue, clip_by_head_norm
from dql.agents.iql import expectile_loss
from dql.diffusion import DiffusionSchedule, dpm_solver_sample, make_betas, predict_x0_from_eps, q_sample, sample
from dql.diffusion.samplers import SPACINGS
from dql.distributions import gaussian_log_prob

LOSS_TYPES = ("TD3", "CRR", "IQL")
SAMPLERS = ("dpm", "ddpm")
AWR_MAX_WEIGHT = 100.0  # EDP's IQL variant clips exp(temperature * advantage) at 100


@dataclasses.dataclass(frozen=True)
class EDPHyperparams(common.Hyperparams):
    loss_type: str
    diffusion_steps: int
    beta_schedule: str
    sampler: str
    dpm_steps: int
    dpm_order: int
    dpm_spacing: str
    hidden_dims: tuple[int, ...]
    time_dim: int
    activation: str
    policy_layer_norm: bool
    critic_layer_norm: bool
    lr: float
    lr_decay: bool
    grad_norm: float
    discount: float
    tau: float
    alpha: float
    guide_coef: float
    max_q_backup: bool
    num_q_backup_samples: int
    ema_start: int
    ema_every: int
    crr_samples: int
    crr_beta: float
    crr_max_weight: float
    expectile: float
    awr_temperature: float
    num_action_candidates: int
    action_clip: float

    def __post_init__(self):
        """Reject values the update cannot run with, naming the --config flag."""
        super().__post_init__()
        make_betas(self.beta_schedule, self.diffusion_steps)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"--config.loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--config.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.dpm_spacing not in SPACINGS:
            raise ValueError(f"--config.dpm_spacing must be one of {', '.join(SPACINGS)}, got {self.dpm_spacing!r}")
        if self.dpm_order not in (1, 2, 3):
            raise ValueError(f"--config.dpm_order must be 1, 2 or 3, got {self.dpm_order}")
        if self.sampler == "dpm" and self.diffusion_steps < 2:
            raise ValueError("--config.sampler='dpm' needs --config.diffusion_steps >= 2")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"--config.time_dim must be even and >= 2, got {self.time_dim}")
        self.require(
            at_least={"dpm_steps": 1, "num_q_backup_samples": 1, "ema_start": 0, "ema_every": 1, "crr_samples": 1,
                      "num_action_candidates": 1, "grad_norm": 0, "alpha": 0, "guide_coef": 0,
                      "awr_temperature": 0},
            positive=("lr", "crr_beta", "crr_max_weight"),
            unit_interval=("discount", "tau", "expectile", "action_clip"),
        )
        if self.action_clip <= 0:
            raise ValueError(f"--config.action_clip must be > 0, got {self.action_clip}")


# ------------------------------------------------------------------------------------------------- closed forms


def one_step_actions(schedule: DiffusionSchedule, noisy_actions, t, eps, max_action) -> jax.Array:
    """EDP's action approximation: the q_sample inversion x0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps,
    clipped to the action box (its p_mean_variance with clip_denoised)."""
    max_action = jnp.asarray(max_action, jnp.float32)
    return jnp.clip(predict_x0_from_eps(schedule, noisy_actions, t, eps), -max_action, max_action)


def edp_noise_clip(schedule: DiffusionSchedule, eps, x, model_time, max_action) -> jax.Array:
    """EDP's noise clipping inside DPM-Solver: eps limited to [(-m + x_w x) / e_w, (m + x_w x) / e_w], so that the
    x_0 = x_w x - e_w eps it implies lies in the box, with x_w = sqrt(1 / abar_n), e_w = sqrt(1 / abar_n - 1) at the
    discrete step n = int(model_time): the solver's fractional time truncated, as EDP's wrapped model does.

    Stages that fall on a step (666 and 333 of EDP's 15 calls over T = 1000) are truncated to that step, as exact
    arithmetic and EDP's float64 run have it: times within 1e-3 below an integer count as the integer, so that the
    rounding of the time grid (float32's 665.99994, or float64's 665.9999999999999) cannot drop a whole step.
    """
    n = (model_time + 1e-3).astype(jnp.int32)
    x_w = jnp.asarray(schedule.sqrt_recip_alphas_cumprod, x.dtype)[n][:, None]
    e_w = jnp.asarray(schedule.sqrt_recipm1_alphas_cumprod, x.dtype)[n][:, None]
    return jnp.clip(eps, (-max_action + x_w * x) / e_w, (max_action + x_w * x) / e_w)


def target_policy_due(step, ema_start: int, ema_every: int):
    """Whether the update at 0-based `step` moves the target policy: EDP counts updates from 1 and moves it on
    updates k > ema_start with k % ema_every == 0 (k = 1005, 1010, ... for its 1000 and 5)."""
    count = step + 1
    return (count > ema_start) & (count % ema_every == 0)


def crr_weights(q_data: jax.Array, q_samples: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """min(exp((Q(s, a) - mean_j Q(s, a_j)) / beta), max_weight): q_data [B], q_samples [B, m]."""
    return jnp.minimum(jnp.exp((q_data - q_samples.mean(axis=-1)) / beta), max_weight)


def awr_weights(q: jax.Array, v: jax.Array, temperature: float) -> jax.Array:
    """min(exp(temperature (Q - V)), 100): EDP's IQL weights."""
    return jnp.minimum(jnp.exp((q - v) * temperature), AWR_MAX_WEIGHT)


def unit_gaussian_log_prob(mean: jax.Array, actions: jax.Array) -> jax.Array:
    """log N(a; mean, I), summed over action dimensions (EDP's fixed_std policy distribution)."""
    return gaussian_log_prob(mean, jnp.zeros_like(mean), actions)


# ----------------------------------------------------------------------------------------------------- agent


class EDPNoise(struct.PyTreeNode):
    """The random inputs of one EDP update.

    next_actions [B, n, K, A]: the target policy's sampler noise for the backup (n = 1 without the max-Q backup;
    K = 1 for DPM-Solver, the draw of x_T; K = T + 1 for DDPM, x_T then the draw of step t at index t + 1);
    bc_steps [B], bc_noise [B, A]: the noised dataset action's step and noise; crr [B, m, A]: the N(x0_hat, I)
    draws of the CRR baseline; q1_first: whether the TD3 term uses head 1 (else head 2).
    """

    next_actions: jax.Array
    bc_steps: jax.Array
    bc_noise: jax.Array
    crr: jax.Array
    q1_first: jax.Array


class EDPAgent(struct.PyTreeNode):
    actor: TrainState
    actor_target_params: Any
    critic: TrainState
    critic_target_params: Any
    value: TrainState  # trained by the IQL variant only
    rng: jax.Array
    step: jax.Array
    hp: EDPHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: EDPHyperparams, observation_stats=None):
        del observation_stats  # EDP feeds raw states (its obs_norm is off by default)
        if len(hp.max_action) != action_dim:
            raise ValueError(f"max_action has {len(hp.max_action)} entries, expected action_dim={action_dim}")
        rng, actor_key, critic_key, value_key = jax.random.split(rng, 4)
        noise_net = EDPNoiseNet(action_dim, hp.hidden_dims, hp.time_dim, hp.activation, hp.policy_layer_norm)
        critic_net = EDPCritics(hp.hidden_dims, hp.activation, hp.critic_layer_norm)
        value_net = EDPValue(hp.hidden_dims, hp.activation, hp.critic_layer_norm)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        actor_params = noise_net.init(actor_key, actions, jnp.zeros((1,), jnp.int32), observations)
        critic_params = critic_net.init(critic_key, observations, actions)
        value_params = value_net.init(value_key, observations)
        # EDP's get_optimizer: Adam(W) with weight decay 0, after clip_by_global_norm(gn) when gn > 0; the policy's
        # rate decays (cosine over the run) only with lr_decay.
        actor_lr = optax.cosine_decay_schedule(hp.lr, hp.total_steps) if hp.lr_decay else optax.constant_schedule(
            hp.lr)
        critic_tx = optax.adam(hp.lr)
        if hp.grad_norm > 0:
            critic_tx = optax.chain(clip_by_head_norm(hp.grad_norm), critic_tx)
        return cls(
            actor=common.make_train_state(noise_net.apply, actor_params, common.make_optimizer(actor_lr, hp.grad_norm)),
            actor_target_params=jax.tree_util.tree_map(jnp.copy, actor_params),
            critic=common.make_train_state(critic_net.apply, critic_params, critic_tx),
            critic_target_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            value=common.make_train_state(value_net.apply, value_params,
                                          common.make_optimizer(optax.constant_schedule(hp.lr), hp.grad_norm)),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            hp=hp,
        )

    # --------------------------------------------------------------------------------------------- sampling
    @property
    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.create(self.hp.beta_schedule, self.hp.diffusion_steps)

    @property
    def chain_noise_length(self) -> int:
        """K: the noise draws one chain takes (1 for DPM-Solver, T + 1 for DDPM)."""
        return 1 if self.hp.sampler == "dpm" else self.hp.diffusion_steps + 1

    def sample_with_noise(self, params, observations: jax.Array, noise: jax.Array, clip: bool = True) -> jax.Array:
        """The sampler's actions from noise [B, K, A] (see EDPNoise), clipped to the action box when `clip`.

        DPM-Solver as EDP runs it (`DiffusionPolicy.dpm_sample`): each noise prediction clipped so that the x_0 it
        implies at the truncated step lies in the box (`edp_noise_clip`), the result not clipped (the solver stops
        at index 0, sqrt(1 - abar_1) = 0.01 of noise short of x_0, so it can leave the box by a little). DDPM clips
        every predicted x_0 and lands in the box.
        """
        hp = self.hp
        schedule = self.schedule
        max_action = jnp.asarray(hp.max_action, noise.dtype)

        def eps_fn(x, t, s):
            return self.actor.apply_fn(params, x, t, s)

        if hp.sampler == "dpm":
            def clipped_eps_fn(x, t, s):
                return edp_noise_clip(schedule, eps_fn(x, t, s), x, t, max_action)

            x = dpm_solver_sample(clipped_eps_fn, schedule, observations, noise[:, 0], hp.dpm_steps, hp.dpm_order,
                                  spacing=hp.dpm_spacing)
            return jnp.clip(x, -max_action, max_action) if clip else x
        return sample(eps_fn, schedule, observations, noise[:, 0], jnp.swapaxes(noise[:, 1:], 0, 1), max_action)

    def sample_actor(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """One draw per state from the online policy, with no critic involved."""
        noise = jax.random.normal(rng, (observations.shape[0], self.chain_noise_length, len(self.hp.max_action)))
        return self.sample_with_noise(self.actor.params, observations, noise)

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """Energy-based action selection: N candidates per state, one drawn with p = softmax(min_k Q_k)."""
        batch, n = observations.shape[0], self.hp.num_action_candidates
        noise_key, choice_key = jax.random.split(rng)
        noise = jax.random.normal(noise_key, (batch * n, self.chain_noise_length, len(self.hp.max_action)))
        candidates, q = self.action_candidates(observations, noise)
        choice = jax.random.categorical(choice_key, q, axis=-1)
        max_action = jnp.asarray(self.hp.max_action, candidates.dtype)
        return jnp.clip(candidates[jnp.arange(batch), choice], -max_action, max_action)

    def action_candidates(self, observations: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(candidates [B, N, A] of the online policy from noise [B N, K, A], their min_k Q_k [B, N] under the online
        critics, as EDP's evaluation (`dpmensemble_act`) takes them: its train_params, the sampler's actions as they
        come (sample_actions clips the chosen one to the box)."""
        batch, n = observations.shape[0], self.hp.num_action_candidates
        repeated = jnp.repeat(observations, n, axis=0)
        candidates = self.sample_with_noise(self.actor.params, repeated, noise, clip=False)
        q = self.critic.apply_fn(self.critic.params, repeated, candidates).min(axis=0).reshape(batch, n)
        return candidates.reshape(batch, n, -1), q

    # ------------------------------------------------------------------------------------------------ losses
    def draw_noise(self, step_key: jax.Array, order_key: jax.Array, local_batch: int) -> EDPNoise:
        """All the randomness of one update from per-example keys, so a batch split over devices draws the same."""
        hp = self.hp
        action_dim = len(hp.max_action)
        keys = common.per_example_keys(step_key, local_batch, hp.axis_name)
        next_keys, t_keys, noise_keys, crr_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, 4))(keys), 0, 1)
        n_backup = hp.num_q_backup_samples if hp.max_q_backup else 1
        return EDPNoise(
            next_actions=common.per_example_normal(next_keys, (n_backup, self.chain_noise_length, action_dim)),
            bc_steps=jax.vmap(lambda k: jax.random.randint(k, (), 0, hp.diffusion_steps))(t_keys),
            bc_noise=common.per_example_normal(noise_keys, (action_dim,)),
            crr=common.per_example_normal(crr_keys, (hp.crr_samples if hp.loss_type == "CRR" else 1, action_dim)),
            q1_first=jax.random.bernoulli(order_key),
        )

    def approximate_actions(self, actor_params, observations, actions, t, noise) -> tuple[jax.Array, jax.Array]:
        """(diffusion loss, x0_hat [B, A]): one network call on the noised dataset actions serves both."""
        schedule = self.schedule
        noisy_actions = q_sample(schedule, actions, t, noise)
        eps = self.actor.apply_fn(actor_params, noisy_actions, t, observations)
        return jnp.mean(jnp.square(eps - noise)), one_step_actions(schedule, noisy_actions, t, eps, self.hp.max_action)

    def backup(self, batch: common.Batch, next_action_noise: jax.Array) -> jax.Array:
        """r + gamma (1 - done) min_k Q'_k(s', a'), a' from the target policy's sampler; with the max-Q backup each
        head takes the max over its n a' per state before the min over heads. next_action_noise: [B, n, K, A]."""
        local_batch, n_backup = next_action_noise.shape[:2]
        next_observations = jnp.repeat(batch["next_observations"], n_backup, axis=0)
        # EDP clips the next actions in its max-Q backup only (get_value_loss).
        next_actions = self.sample_with_noise(self.actor_target_params, next_observations,
                                              next_action_noise.reshape(-1, *next_action_noise.shape[2:]),
                                              clip=self.hp.max_q_backup)
        target_q = self.critic.apply_fn(self.critic_target_params, next_observations, next_actions)
        target_q = target_q.reshape(2, local_batch, n_backup).max(axis=-1).min(axis=0)
        return batch["rewards"] + self.hp.discount * (1.0 - batch["dones"]) * target_q

    def critic_loss(self, critic_params, observations, actions, backup) -> tuple[jax.Array, jax.Array]:
        """(sum over the two heads of the batch-mean squared TD error, Q [2, B])."""
        q = self.critic.apply_fn(critic_params, observations, actions)
        return jnp.mean(jnp.square(q - backup[None]), axis=1).sum(), q

    def value_loss(self, value_params, observations, target_q) -> tuple[jax.Array, jax.Array]:
        """IQL variant: mean expectile loss of min_k Q'_k(s, a) - V(s)."""
        v = self.value.apply_fn(value_params, observations)
        return jnp.mean(expectile_loss(target_q - v, self.hp.expectile)), v

    def actor_loss(self, actor_params, critic_params, batch: common.Batch, noise: EDPNoise, weights=None):
        """(L_diff + guide_coef * L_guide, aux) for the configured loss_type.

        TD3 and CRR evaluate the critics with `critic_params`; IQL takes its (constant) weights [B] instead.
        """
        hp = self.hp
        observations, actions = batch["observations"], batch["actions"]
        bc_loss, x0 = self.approximate_actions(actor_params, observations, actions, noise.bc_steps, noise.bc_noise)
        aux = {"bc_loss": bc_loss}
        if hp.loss_type == "TD3":
            q = self.critic.apply_fn(critic_params, observations, x0)
            q_k = jnp.where(noise.q1_first, q[0], q[1])
            # The scale is a mean over the *global* batch so that sharding the batch does not change the loss.
            lam = hp.alpha / jax.lax.stop_gradient(common.pmean(jnp.mean(jnp.abs(q_k)), hp.axis_name))
            guide_loss = -lam * jnp.mean(q_k)
            aux.update({"lambda": lam, "q_policy": jnp.mean(q_k)})
        else:
            log_prob = unit_gaussian_log_prob(x0, actions)
            if hp.loss_type == "CRR":
                batch_size, m = noise.crr.shape[:2]
                samples = (x0[:, None] + noise.crr).reshape(batch_size * m, -1)
                q_data = self.critic.apply_fn(critic_params, observations, actions).min(axis=0)
                q_samples = self.critic.apply_fn(critic_params, jnp.repeat(observations, m, axis=0), samples)
                weights = crr_weights(q_data, q_samples.min(axis=0).reshape(batch_size, m), hp.crr_beta,
                                      hp.crr_max_weight)
            weights = jax.lax.stop_gradient(weights)
            guide_loss = -jnp.mean(weights * log_prob)
            aux.update(weight_mean=jnp.mean(weights), log_prob=jnp.mean(log_prob))
        aux["guide_loss"] = guide_loss
        return bc_loss + hp.guide_coef * guide_loss, aux

    # ------------------------------------------------------------------------------------------------ update
    def update(self, batch: common.Batch) -> tuple["EDPAgent", dict[str, jax.Array]]:
        rng, step_key, order_key = jax.random.split(self.rng, 3)
        noise = self.draw_noise(step_key, order_key, batch["actions"].shape[0])
        return self.replace(rng=rng).update_with_noise(batch, noise)

    def update_with_noise(self, batch: common.Batch, noise: EDPNoise) -> tuple["EDPAgent", dict[str, jax.Array]]:
        """One update with given randomness (`draw_noise`'s or any other)."""
        hp = self.hp
        bound = hp.action_clip * jnp.asarray(hp.max_action, batch["actions"].dtype)
        batch = dict(batch, actions=jnp.clip(batch["actions"], -bound, bound))
        observations, actions = batch["observations"], batch["actions"]
        metrics = {}
        value = self.value
        if hp.loss_type == "IQL":
            # EDP's order: V on the target critics, the policy with the updated V, the critics on r + gamma V(s').
            target_q = self.critic.apply_fn(self.critic_target_params, observations, actions).min(axis=0)
            (value_loss, v), value_grads = jax.value_and_grad(self.value_loss, has_aux=True)(
                self.value.params, observations, target_q)
            value = self.value.apply_gradients(grads=common.pmean(value_grads, hp.axis_name))
            weights = awr_weights(target_q, value.apply_fn(value.params, observations), hp.awr_temperature)
            (actor_loss, aux), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
                self.actor.params, None, batch, noise, weights)
            next_v = value.apply_fn(value.params, batch["next_observations"])
            backup = batch["rewards"] + hp.discount * (1.0 - batch["dones"]) * next_v
            metrics.update(value_loss=value_loss, v_mean=jnp.mean(v))
        else:
            # TD3 and CRR: both losses from the critics as they were before this step (EDP's _train_step_td3/crr).
            backup = self.backup(batch, noise.next_actions)
            (actor_loss, aux), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
                self.actor.params, self.critic.params, batch, noise)
        (critic_loss, q), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            self.critic.params, observations, actions, backup)
        critic_grads = common.pmean(critic_grads, hp.axis_name)
        actor_grads = common.pmean(actor_grads, hp.axis_name)
        critic = self.critic.apply_gradients(grads=critic_grads)
        actor = self.actor.apply_gradients(grads=actor_grads)

        policy_due = target_policy_due(self.step, hp.ema_start, hp.ema_every)
        actor_target_params = common.soft_update(self.actor_target_params, actor.params,
                                                 jnp.where(policy_due, hp.tau, 0.0))
        critic_target_params = common.soft_update(self.critic_target_params, critic.params, hp.tau)

        metrics.update(
            critic_loss=critic_loss,
            actor_loss=actor_loss,
            q_mean=jnp.mean(q),
            target_q_mean=jnp.mean(backup),
            critic_grad_norm=optax.tree.norm(critic_grads),
            actor_grad_norm=optax.tree.norm(actor_grads),
            **aux,
        )
        agent = self.replace(actor=actor, actor_target_params=actor_target_params, critic=critic,
                             critic_target_params=critic_target_params, value=value, step=self.step + 1)
        return agent, common.pmean(metrics, hp.axis_name)
