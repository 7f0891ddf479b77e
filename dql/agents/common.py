"""Pieces every agent shares: optimisers, target updates, cross-device averaging and per-example randomness.

Agents are pytrees whose `update(batch) -> (agent, metrics)` is pure. When the trainer runs them data-parallel it
binds a named mesh axis and sets `axis_name`; with `axis_name=None` the same code runs on one device. That is the
only difference between the two paths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from dql.nets import activation_by_name

Params = Any
Batch = dict[str, jax.Array]


@runtime_checkable
class Agent(Protocol):
    """What the training loop, the evaluation and `dql.load_policy` ask of an agent (dql/agents/<name>.py, found by
    the registry dql.agents.AGENTS). An agent is a flax `struct.PyTreeNode` holding its train states, targets and
    PRNG key, with its hyperparameters as the static field `hp`; `update` is pure, so jit, scan, vmap over seeds and
    shard_map over devices compose on it unchanged.

    Optional hooks, looked up by name (`hook`) where the loop needs them; an agent without them gets the default:
    - `training_arrays(dataset, config) -> dict` (static): the host arrays minibatches are drawn from; default the
      transitions with the reward transform (Diffuser: windows of whole episodes).
    - `dataset_statistics(dataset, config)` (static): what `create` receives as `observation_stats`; default the
      observations' (mean, std) (Diffuser: its normaliser of observations and actions).
    - `begin(observations, rng) -> memory` and `act(observations, memory, t, rng) -> (actions, memory)`: acting with
      a memory kept through the episode (a planner that plans once); default `sample_actions` at every step.
    """

    @classmethod
    def create(cls, rng: jax.Array, observation_dim: int, action_dim: int, hp: Any,
               observation_stats: Any = None) -> "Agent":
        """A new agent (its networks initialised from `rng`) for the data's sizes and the validated `hp`."""

    def update(self, batch: Batch) -> tuple["Agent", dict[str, jax.Array]]:
        """One gradient step on a minibatch: the new agent and scalar metrics (losses, norms)."""

    def sample_actions(self, observations: jax.Array, rng: jax.Array) -> jax.Array:
        """Actions [B, act_dim] within the action bound for observations [B, obs_dim] (evaluation, load_policy)."""


OPTIONAL_HOOKS = ("training_arrays", "dataset_statistics", "begin", "act")


def hook(agent_or_class, name: str):
    """The agent's optional hook `name` (see Agent), or None where it keeps the default."""
    if name not in OPTIONAL_HOOKS:
        raise KeyError(f"{name!r} is not an optional agent hook; they are {', '.join(OPTIONAL_HOOKS)}")
    return getattr(agent_or_class, name, None)


def pmean(tree, axis_name: str | None):
    """Average over the data-parallel axis when one is bound, identity otherwise."""
    if axis_name is None:
        return tree
    return jax.lax.pmean(tree, axis_name)


def global_example_index(local_batch: int, axis_name: str | None) -> jax.Array:
    """Index of each local example within the global (all-device) batch."""
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch
    return offset + jnp.arange(local_batch)


def per_example_keys(key: jax.Array, local_batch: int, axis_name: str | None) -> jax.Array:
    """One PRNG key per example, a function of its global index only.

    Random draws made from these keys are the same whether the global batch sits on one device or is split over
    many, which is what makes the data-parallel update equal the single-device one.
    """
    index = global_example_index(local_batch, axis_name)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)


def per_example_normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal draws of `shape` per example: [B, *shape]."""
    return jax.vmap(lambda k: jax.random.normal(k, shape))(keys)


def soft_update(target_params: Params, online_params: Params, tau: float) -> Params:
    """Polyak averaging: target <- tau * online + (1 - tau) * target."""
    return jax.tree_util.tree_map(lambda t, o: tau * o + (1.0 - tau) * t, target_params, online_params)


def learning_rate_schedule(
    lr: float, decay: bool, total_steps: int, steps_per_epoch: int, decay_every: int
) -> optax.Schedule:
    """Constant, or PyTorch's CosineAnnealingLR(T_max = number of epochs) stepped once every `decay_every` updates.

    The reference implementation steps its scheduler once per call of `train()`, i.e. once per evaluation interval
    (50 epochs), while T_max counts epochs; so over a full run its rate falls by only 0.1%. decay_every =
    steps_per_epoch gives the cosine decay to zero that the paper's text describes.
    """
    if not decay:
        return optax.constant_schedule(lr)
    num_epochs = max(1, -(-total_steps // steps_per_epoch))
    cosine = optax.cosine_decay_schedule(lr, decay_steps=num_epochs)
    return lambda count: cosine(count // decay_every)


def make_train_state(apply_fn, params, tx: optax.GradientTransformation) -> TrainState:
    """A flax TrainState whose step counter is an int32 array from the start.

    flax starts it as the Python int 0 (weakly typed), which makes the state after one update a different input
    type for jit, and so a second compilation of the whole training loop.
    """
    return TrainState.create(apply_fn=apply_fn, params=params, tx=tx).replace(step=jnp.zeros((), jnp.int32))


def clip_grad_norm_like_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: the gradients times min(1, max_norm / (norm + 1e-6)), the norm taken over the
    leaves' norms. optax.clip_by_global_norm scales by max_norm / norm, 1e-6 / norm relatively apart (6.8e-8 on
    Diffusion-QL's Hopper critics: the one difference left when ours and the paper's code both run in float64)."""

    def update(updates, state, params=None):
        del params
        leaves = jax.tree_util.tree_leaves(updates)
        norm = jnp.linalg.norm(jnp.stack([jnp.linalg.norm(leaf.ravel()) for leaf in leaves]))
        scale = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_by_adam_like_torch(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """torch.optim.Adam's direction, (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps), in optax's state.

    optax.scale_by_adam computes 1 - b2^t in float32, where 0.999 rounds to 0.99900001, so its first step is 6.6e-6
    off the exact one; torch computes the corrections in Python floats (7.5e-8 off). Here 1 - b^t = -expm1(t log(b))
    with log(b) taken in double precision, as exact as float32 allows.
    """
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params):
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

    def update(grads, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: m + (1.0 - b1) * (g - m), state.mu, grads)  # torch's lerp_
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, grads)
        count = optax.safe_int32_increment(state.count)

        def direction(m, v):
            t = count.astype(m.dtype)
            return (m / -jnp.expm1(t * log_b1)) / (jnp.sqrt(v) / jnp.sqrt(-jnp.expm1(t * log_b2)) + eps)

        return jax.tree_util.tree_map(direction, mu, nu), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(schedule: optax.Schedule, grad_norm: float, like_torch: bool = False
                   ) -> optax.GradientTransformation:
    """Adam, with the update clipped to a global gradient norm when grad_norm > 0; `like_torch`: torch's Adam and
    clip_grad_norm_ (the reference of Diffusion-QL), whose rounding and epsilon optax's differ from slightly."""
    clip = clip_grad_norm_like_torch if like_torch else optax.clip_by_global_norm
    adam = (optax.chain(scale_by_adam_like_torch(), optax.scale_by_learning_rate(schedule)) if like_torch
            else optax.adam(schedule))
    if grad_norm > 0:
        return optax.chain(clip(grad_norm), adam)
    return adam


def apply_where(condition: jax.Array, new_tree, old_tree):
    """new_tree where condition holds, else old_tree (for updates that run only on some steps, e.g. TD3's delay)."""
    return jax.tree_util.tree_map(lambda new, old: jnp.where(condition, new, old), new_tree, old_tree)


@dataclasses.dataclass(frozen=True)
class Hyperparams:
    """Base of the agents' hyperparameters: read from the resolved config, checked, hashable (static in jit).

    Subclasses list their fields without defaults: the algorithm's config (`dql/configs/<algo>.py`) is the one
    source of every value. `max_action`, `total_steps` and `axis_name` come from the data, the loop and the trainer
    rather than from config keys of those names.
    """

    max_action: tuple[float, ...]
    total_steps: int
    axis_name: str | None

    @classmethod
    def from_config(cls, config, max_action, axis_name: str | None = None):
        names = {f.name for f in dataclasses.fields(cls)} - {"max_action", "total_steps", "axis_name"}
        missing = sorted(name for name in names if name not in config)
        if missing:
            raise ValueError(f"the config of --algo={config.get('algo')} lacks {', '.join(missing)} "
                             f"(needed by {cls.__name__}); start from dql/configs/{config.get('algo')}.py")
        values = {name: config[name] for name in names}
        if "hidden_dims" in values:
            values["hidden_dims"] = tuple(int(v) for v in values["hidden_dims"])
        return cls(
            max_action=tuple(float(m) for m in max_action),
            total_steps=int(config.steps),
            axis_name=axis_name,
            **values,
        )

    def __post_init__(self):
        if not self.max_action or min(self.max_action) <= 0:
            raise ValueError(f"action bounds must be positive, got {self.max_action}")
        if self.total_steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.total_steps}")
        if hasattr(self, "activation"):
            activation_by_name(self.activation)  # an unknown name fails here, naming the choices
        hidden = getattr(self, "hidden_dims", (1,))
        if not hidden or min(hidden) < 1:
            raise ValueError(f"--config.hidden_dims must be positive layer widths, got {hidden}")

    def require(self, at_least: dict[str, float] = (), positive=(), unit_interval=(), choices=()) -> None:
        """Range and choice checks whose messages name the --config flag; choices: {name: allowed values}."""
        for name, allowed in dict(choices).items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--config.{name}={getattr(self, name)!r}; expected one of "
                                 f"{', '.join(map(str, allowed))}")
        for name, low in dict(at_least).items():
            if getattr(self, name) < low:
                raise ValueError(f"--config.{name} must be >= {low}, got {getattr(self, name)}")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"--config.{name} must be > 0, got {getattr(self, name)}")
        for name in unit_interval:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--config.{name} must be in [0.0, 1.0], got {getattr(self, name)}")
