"""GAIL (Ho & Ermon 2016) with a PPO generator, as imitation's GAIL over stable-baselines3's PPO does it.

A discriminator D(s, a) = sigmoid(logits) tells demonstration rows (label 1) from the policy's; the policy is trained
by PPO on the reward -log(1 - D(s, a)) = -log_sigmoid(-logits), which grows as the policy's rows look more like the
expert's. One `update` is one round on a rollout of the policy: `disc_updates` discriminator steps, then the rewards
of the updated discriminator, GAE, and `ppo_epochs` epochs of clipped-surrogate PPO over shuffled minibatches, all
in one compiled call. Settings and their sources: dql/configs/gail.py.

Actions: the policy is a Gaussian over unit-box actions (the env's divided by its bound) with a state-independent
log std; draws are kept unclipped for their log-probabilities and clipped to the box when sent to the env and
shown to the discriminator. `sample_actions` acts with the clipped mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from dql.agents import common
from dql.nets import MLP, TorchDense, activation_by_name

LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class GAILHyperparams(common.Hyperparams):
    num_envs: int
    rollout_length: int
    batch_size: int
    ppo_epochs: int
    clip_range: float
    discount: float
    gae_lambda: float
    normalize_advantage: bool
    ent_coef: float
    vf_coef: float
    lr: float
    max_grad_norm: float
    log_std_init: float
    hidden_dims: tuple[int, ...]
    activation: str
    disc_hidden_dims: tuple[int, ...]
    disc_activation: str
    disc_lr: float
    disc_updates: int
    demo_batch_size: int
    gradient_penalty: float

    @classmethod
    def from_config(cls, config, max_action, axis_name: str | None = None):
        hp = super().from_config(config, max_action, axis_name)
        # A config read back from config.json holds lists; the hyperparameters are static in jit, so hashable.
        return dataclasses.replace(hp, disc_hidden_dims=tuple(int(v) for v in hp.disc_hidden_dims))

    @property
    def rollout_rows(self) -> int:
        return self.num_envs * self.rollout_length

    def __post_init__(self):
        super().__post_init__()
        activation_by_name(self.disc_activation)
        self.require(at_least={"num_envs": 1, "rollout_length": 1, "batch_size": 1, "ppo_epochs": 1,
                               "disc_updates": 1, "demo_batch_size": 1, "ent_coef": 0.0, "vf_coef": 0.0,
                               "max_grad_norm": 0.0, "gradient_penalty": 0.0},
                     positive=("clip_range", "lr", "disc_lr"), unit_interval=("discount", "gae_lambda"))
        if not self.disc_hidden_dims or min(self.disc_hidden_dims) < 1:
            raise ValueError(f"--config.disc_hidden_dims must be positive layer widths, got {self.disc_hidden_dims}")
        if self.rollout_rows % self.batch_size:
            raise ValueError(f"--batch_size={self.batch_size} (PPO's minibatch) must divide a rollout's "
                             f"--config.num_envs x --config.rollout_length = {self.rollout_rows} rows")
        if self.demo_batch_size > self.rollout_rows:
            raise ValueError(f"--config.demo_batch_size={self.demo_batch_size} exceeds a rollout's "
                             f"{self.rollout_rows} policy rows (--config.num_envs x --config.rollout_length)")


class PPOPolicy(nn.Module):
    """SB3's MlpPolicy actor: hidden layers, an action-mean layer named "mean", one learned log std."""

    action_dim: int
    hidden_dims: Sequence[int]
    activation: str
    log_std_init: float

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation_by_name(self.activation)
        for width in self.hidden_dims:
            x = act(TorchDense(width)(x))
        mean = TorchDense(self.action_dim, name="mean")(x)
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class PPOValue(nn.Module):
    """SB3's value network: hidden layers, then a scalar; returns [B]."""

    hidden_dims: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1, self.activation)(x)[..., 0]


class Discriminator(nn.Module):
    """Logits of 'this (s, a) is the expert's' from normalised observations and unit-box actions; returns [B]."""

    hidden_dims: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1, self.activation)(jnp.concatenate([observations, actions], -1))[..., 0]


MEAN_LAYER_SCALE = 0.01  # the action-mean layer's initial weights, relative to torch's default (SB3's gain 0.01)


def init_params(module: nn.Module, key: jax.Array, *inputs, constants: dict | None = None) -> Any:
    """`module`'s parameters as torch.nn.Linear initialises them (each kernel [fan_in, out] and its bias uniform in
    +-1/sqrt(fan_in); the layer named "mean" scaled by MEAN_LAYER_SCALE), from ONE uniform draw for all of them:
    on a CPU each random-number call site costs about a second of XLA compilation, and one per array took most of
    a short run's time. constants: {parameter name: value} for the others (the log std)."""
    shapes = jax.eval_shape(module.init, key, *inputs)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    fan_in = {tuple(path[:-1]): leaf.shape[0] for path, leaf in leaves if path[-1].key == "kernel"}
    sizes = [leaf.size for _, leaf in leaves]
    draw = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
    params, start = [], 0
    for (path, leaf), size in zip(leaves, sizes):
        name = path[-1].key
        if name in (constants or {}):
            params.append(jnp.full(leaf.shape, constants[name], leaf.dtype))
        else:
            scale = MEAN_LAYER_SCALE if any(getattr(p, "key", None) == "mean" for p in path) else 1.0
            bound = scale / math.sqrt(fan_in[tuple(path[:-1])])
            params.append((bound * draw[start:start + size]).reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return jax.tree_util.tree_unflatten(treedef, params)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """log N(x; mean, diag(exp(log_std)^2)) summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)


def logistic_loss(expert_logits: jax.Array, policy_logits: jax.Array) -> jax.Array:
    """Binary cross-entropy with the expert labelled 1 and the policy 0, averaged over the equal-sized halves (as
    imitation's BCE over the concatenated batch): (mean softplus(-l_expert) + mean softplus(l_policy)) / 2."""
    return 0.5 * (jnp.mean(-jax.nn.log_sigmoid(expert_logits)) + jnp.mean(-jax.nn.log_sigmoid(-policy_logits)))


def gail_reward(logits: jax.Array) -> jax.Array:
    """-log(1 - D) with D = sigmoid(logits), as -log_sigmoid(-logits): finite for any logits, >= 0, increasing."""
    return -jax.nn.log_sigmoid(-logits)


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminals: jax.Array, ends: jax.Array,
        discount: float, gae_lambda: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a rollout, time on the leading axis ([T, ...] arrays).

    next_values: V of the observation each step led to (the true final one where an episode ended); terminals cut
    the bootstrap (a true termination), ends (terminated or truncated) cut the sum over later steps, so a
    time-limit end bootstraps from V(final observation) without leaking into the next episode. The rollout's last
    step bootstraps from its next value. Returns (advantages, returns = advantages + values).
    """
    deltas = rewards + discount * (1.0 - terminals) * next_values - values

    def backward(later, step):
        delta, end = step
        advantage = delta + discount * gae_lambda * (1.0 - end) * later
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, ends), reverse=True)
    return advantages, advantages + values


class GAILAgent(struct.PyTreeNode):
    policy: TrainState
    value: TrainState
    discriminator: TrainState
    observation_mean: jax.Array
    observation_std: jax.Array
    rng: jax.Array
    hp: GAILHyperparams = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng, observation_dim: int, action_dim: int, hp: GAILHyperparams, observation_stats=None):
        """observation_stats: (mean, std) of the demonstrations' observations; None: identity (a restore template)."""
        rng, policy_key, value_key, disc_key = jax.random.split(rng, 4)
        observations, actions = jnp.zeros((1, observation_dim)), jnp.zeros((1, action_dim))
        policy_net = PPOPolicy(action_dim, hp.hidden_dims, hp.activation, hp.log_std_init)
        value_net = PPOValue(hp.hidden_dims, hp.activation)
        disc_net = Discriminator(hp.disc_hidden_dims, hp.disc_activation)
        ppo_adam = optax.adam(hp.lr, eps=1e-5)  # SB3's PPO optimiser; the gradient clip is joint (see update)
        if observation_stats is None:
            mean, std = jnp.zeros(observation_dim), jnp.ones(observation_dim)
        else:
            mean, std = (jnp.asarray(x, jnp.float32) for x in observation_stats)
            std = jnp.where(std < 1e-6, 1.0, std)  # a constant feature stays as it is
        policy_params = init_params(policy_net, policy_key, observations, constants={"log_std": hp.log_std_init})
        disc_params = init_params(disc_net, disc_key, observations, actions)
        return cls(
            policy=common.make_train_state(policy_net.apply, policy_params, ppo_adam),
            value=common.make_train_state(value_net.apply, init_params(value_net, value_key, observations), ppo_adam),
            discriminator=common.make_train_state(disc_net.apply, disc_params, optax.adam(hp.disc_lr)),
            observation_mean=mean.astype(jnp.float32), observation_std=std.astype(jnp.float32), rng=rng, hp=hp)

    # --- acting -------------------------------------------------------------------------------------------------

    def normalize(self, observations: jax.Array) -> jax.Array:
        return (observations - self.observation_mean) / self.observation_std

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """The deterministic action: the policy's mean clipped to the box, in the env's units (evaluation)."""
        del rng
        mean, _ = self.policy.apply_fn(self.policy.params, self.normalize(observations))
        return jnp.clip(mean, -1.0, 1.0) * jnp.asarray(self.hp.max_action)

    def explore(self, observations: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(unit-box draws unclipped [B, A], the env's actions: the draws clipped and scaled) for rollouts."""
        mean, log_std = self.policy.apply_fn(self.policy.params, self.normalize(observations))
        draws = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
        return draws, jnp.clip(draws, -1.0, 1.0) * jnp.asarray(self.hp.max_action)

    # --- losses (pure: a test can call them with fixed inputs) --------------------------------------------------

    def discriminator_logits(self, params, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """Logits [B] for raw observations and actions in the env's units."""
        unit = actions / jnp.asarray(self.hp.max_action)
        return self.discriminator.apply_fn(params, self.normalize(observations), unit)

    def discriminator_loss(self, params, policy_obs, policy_actions, demo_obs, demo_actions,
                           rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Logistic loss, expert label 1 (`logistic_loss`), plus gradient_penalty x E[(|grad_x logits| - 1)^2] at
        points interpolated between the demonstration and the policy rows (needs `rng` when the weight is > 0).
        Actions in the env's units."""
        expert = self.discriminator_logits(params, demo_obs, demo_actions)
        policy = self.discriminator_logits(params, policy_obs, policy_actions)
        loss = logistic_loss(expert, policy)
        metrics = {"disc_loss": loss, "disc_expert_accuracy": jnp.mean(expert > 0),
                   "disc_policy_accuracy": jnp.mean(policy < 0)}
        if self.hp.gradient_penalty > 0:
            mix = jax.random.uniform(rng, (demo_obs.shape[0], 1))
            obs = mix * demo_obs + (1.0 - mix) * policy_obs
            act = mix * demo_actions + (1.0 - mix) * policy_actions

            def logit(o, a):
                return self.discriminator_logits(params, o[None], a[None])[0]

            grad_obs, grad_act = jax.vmap(jax.grad(logit, argnums=(0, 1)))(obs, act)
            norm = jnp.sqrt(jnp.sum(grad_obs**2, -1) + jnp.sum(grad_act**2, -1) + 1e-12)
            penalty = jnp.mean(jnp.square(norm - 1.0))
            loss = loss + self.hp.gradient_penalty * penalty
            metrics["disc_gradient_penalty"] = penalty
        return loss, metrics

    def rewards(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """GAIL's reward -log(1 - D(s, a)) [B] from the current discriminator (actions in the env's units)."""
        return gail_reward(self.discriminator_logits(self.discriminator.params, observations, actions))

    def ppo_loss(self, params: dict, batch: dict) -> tuple[jax.Array, dict]:
        """SB3's PPO loss on a minibatch: clipped surrogate + vf_coef x value MSE - ent_coef x entropy.

        params: {"policy", "value"}; batch: observations (raw), draws (unit box, unclipped), old_log_probs,
        advantages, returns."""
        hp = self.hp
        observations = self.normalize(batch["observations"])
        mean, log_std = self.policy.apply_fn(params["policy"], observations)
        log_probs = gaussian_log_prob(mean, log_std, batch["draws"])
        advantages = batch["advantages"]
        if hp.normalize_advantage and advantages.shape[0] > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_probs - batch["old_log_probs"]
        ratio = jnp.exp(log_ratio)
        surrogate = jnp.minimum(advantages * ratio,
                                advantages * jnp.clip(ratio, 1.0 - hp.clip_range, 1.0 + hp.clip_range))
        policy_loss = -jnp.mean(surrogate)
        values = self.value.apply_fn(params["value"], observations)
        value_loss = jnp.mean(jnp.square(batch["returns"] - values))
        entropy = jnp.mean(gaussian_entropy(log_std))
        loss = policy_loss - hp.ent_coef * entropy + hp.vf_coef * value_loss
        metrics = {"actor_loss": policy_loss, "critic_loss": value_loss, "entropy": entropy,
                   "approx_kl": jnp.mean(jnp.exp(log_ratio) - 1.0 - log_ratio),
                   "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > hp.clip_range)}
        return loss, metrics

    # --- one round ----------------------------------------------------------------------------------------------

    def update(self, batch: common.Batch) -> tuple[GAILAgent, dict[str, jax.Array]]:
        """One GAIL round on a rollout: batch holds observations [T, N, O], draws [T, N, A] (unclipped unit-box),
        next_observations [T, N, O], terminals and ends [T, N], and the demonstrations demo_observations [M, O] and
        demo_actions [M, A] (env units). Returns the agent and the round's mean metrics (scalars)."""
        hp = self.hp
        steps, envs = batch["observations"].shape[:2]
        rows = steps * envs

        def flat(x):
            return x.reshape((rows,) + x.shape[2:])

        observations, draws = flat(batch["observations"]), flat(batch["draws"])
        next_observations = flat(batch["next_observations"])
        env_actions = jnp.clip(draws, -1.0, 1.0) * jnp.asarray(hp.max_action)
        demo_obs, demo_actions = batch["demo_observations"], batch["demo_actions"]
        # The round's random draws, one uniform array each: shuffles are argsorts of uniforms (on a CPU every
        # random-number call site costs about a second of compilation).
        rng, disc_key, ppo_key, penalty_key = jax.random.split(self.rng, 4)
        num_demos = demo_obs.shape[0]
        disc_draws = jax.random.uniform(disc_key, (hp.disc_updates, rows + hp.demo_batch_size))

        # 1. The discriminator: demo_batch_size rows of the demonstrations (with replacement) against as many
        #    distinct rows of this rollout, disc_updates times.
        def disc_step(disc, step):
            draws, index = step
            policy_rows = jnp.argsort(draws[:rows])[:hp.demo_batch_size]
            demo_rows = jnp.minimum((draws[rows:] * num_demos).astype(jnp.int32), num_demos - 1)
            grads, metrics = jax.grad(self.discriminator_loss, has_aux=True)(
                disc.params, observations[policy_rows], env_actions[policy_rows], demo_obs[demo_rows],
                demo_actions[demo_rows], jax.random.fold_in(penalty_key, index))
            return disc.apply_gradients(grads=common.pmean(grads, hp.axis_name)), metrics

        discriminator, disc_metrics = jax.lax.scan(disc_step, self.discriminator,
                                                   (disc_draws, jnp.arange(hp.disc_updates)))
        agent = self.replace(discriminator=discriminator)

        # 2. Rewards of the updated discriminator, values, GAE, the rollout's log-probabilities.
        rewards = agent.rewards(observations, env_actions)
        values = self.value.apply_fn(self.value.params, self.normalize(observations))
        next_values = self.value.apply_fn(self.value.params, self.normalize(next_observations))
        shape = (steps, envs)
        advantages, returns = gae(rewards.reshape(shape), values.reshape(shape), next_values.reshape(shape),
                                  batch["terminals"].astype(jnp.float32), batch["ends"].astype(jnp.float32),
                                  hp.discount, hp.gae_lambda)
        mean, log_std = self.policy.apply_fn(self.policy.params, self.normalize(observations))
        data = {"observations": observations, "draws": draws, "old_log_probs": gaussian_log_prob(mean, log_std, draws),
                "advantages": advantages.reshape(rows), "returns": returns.reshape(rows)}

        # 3. PPO epochs over shuffled minibatches; one gradient-norm clip over policy and value together.
        clip = optax.clip_by_global_norm(hp.max_grad_norm) if hp.max_grad_norm > 0 else optax.identity()

        def minibatch_step(states, indices):
            policy, value = states
            minibatch = jax.tree_util.tree_map(lambda x: x[indices], data)
            grads, metrics = jax.grad(agent.ppo_loss, has_aux=True)(
                {"policy": policy.params, "value": value.params}, minibatch)
            grads, _ = clip.update(common.pmean(grads, hp.axis_name), clip.init(grads))
            return (policy.apply_gradients(grads=grads["policy"]), value.apply_gradients(grads=grads["value"])), metrics

        def epoch(states, draws):
            order = jnp.argsort(draws).reshape(rows // hp.batch_size, hp.batch_size)
            return jax.lax.scan(minibatch_step, states, order)

        (policy, value), ppo_metrics = jax.lax.scan(epoch, (self.policy, self.value),
                                                    jax.random.uniform(ppo_key, (hp.ppo_epochs, rows)))
        variance = jnp.var(data["returns"])
        metrics = {
            **{key: jnp.mean(value) for key, value in disc_metrics.items()},
            **{key: jnp.mean(value) for key, value in ppo_metrics.items()},
            "gail_reward": jnp.mean(rewards),
            "explained_variance": jnp.where(variance > 0, 1.0 - jnp.var(data["returns"] - values) / variance, 0.0),
            "policy_std": jnp.mean(jnp.exp(log_std)),
        }
        return agent.replace(policy=policy, value=value, rng=rng), metrics
