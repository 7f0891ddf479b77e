"""IQL against the authors' JAX code (ikostrikov/implicit_q_learning, `learner.py` with `critic.py`, `actor.py`,
`value_net.py`, `policy.py`, `common.py`): the `iql` case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=iql --repo=/path/to/implicit_q_learning [--variants=default,dropout]

- the reference runs as it is, with shims for what newer libraries removed or changed (installed here, never in
  the checkout): `jax.tree_multimap`; flax's `init` returning a FrozenDict (its `Model.create` unpacks
  `variables.pop('params')`); tensorflow-probability's JAX substrate (the real one where it imports, else a
  stand-in computing MultivariateNormalDiag's log-density, the one thing the update takes of it); jax.jit's
  refusal of static_argnames a function lacks (policy.py's `distribution`), lifted while it loads; flax's
  Dropout, replaced by one drawing the same mask (uniform(key) < 1 - rate in float32, as nn.Dropout draws it in
  float32) that also records it. Drawing in float32 also under x64 makes the float64 run replay the float32 run's
  masks; `Model.apply_gradient` is wrapped to hand out the gradients it applies.
- variants: `default` (configs/mujoco_config.py, no dropout: the update draws nothing) and `dropout`
  (configs/kitchen_config.py, actor dropout 0.1: the reference's masks are fed to `IQLAgent.update_with_noise`).
  Ours takes the matching row of dql/configs/iql.py, whose hyperparameters must equal the reference's config file.
- settings: the actor's cosine schedule over 2 x --updates (max_steps of the reference, steps of ours), so the
  learning rate is halfway down at the last update compared.
- compared: the value, actor and critic losses of every update; the gradients each optimiser applied; the actor,
  critic, target critic and value parameters; and with the final weights, the reference's evaluation action
  (sample_actions at temperature 0) against ours.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
import time
import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, stub_module, to_numpy, variant_report
from dql.agents.iql import IQLAgent, IQLHyperparams, IQLNoise

REFERENCES = {"official": {"repo": "ikostrikov/implicit_q_learning", "file": "learner.py"}}
# variant: (the reference's config file, our config row)
VARIANTS = {"default": ("configs/mujoco_config.py", "hopper-medium-v2"),
            "dropout": ("configs/kitchen_config.py", "kitchen-complete-v0")}
LOSSES = ("value_loss", "actor_loss", "critic_loss")
ACTION_STATES = 64
# the reference's config key -> ours
HYPERPARAMETERS = {"actor_lr": "lr", "value_lr": "value_lr", "critic_lr": "critic_lr", "discount": "discount",
                   "expectile": "expectile", "temperature": "temperature", "tau": "tau", "hidden_dims": "hidden_dims",
                   "dropout_rate": "dropout_rate"}
DIFFERENCES = {"official": [
    {"where": "configs/kitchen_config.py:17 config.dropout_rate = 0.1 (README.md:45, the config of Kitchen and "
              "Adroit); common.py:40-42 nn.Dropout after each hidden activation, training=True in actor.py only",
     "what": "The actor drops 10% of its hidden units while it trains on Kitchen and Adroit; our IQL had no dropout.",
     "fate": "fixed: dql/agents/iql.py IQLPolicy + draw_noise (config key dropout_rate, default 0), 0.1 on the "
             "Kitchen and Adroit rows of dql/configs/iql.py; compared here with the reference's masks (variant "
             "dropout)."},
    {"where": "common.py default_init (orthogonal, scale sqrt(2)), used by every nn.Dense of the reference",
     "what": "The reference initialises its layers orthogonally; ours, like every network of the suite (dql/nets.py), "
             "as torch.nn.Linear does. The update is the same; the comparison copies the reference's initial "
             "weights into ours.",
     "fate": "explained: the suite's initialisation (dql/nets.py, shared), not a difference of the update."},
    {"where": "learner.py Learner.sample_actions: np.clip(actions, -1, 1); critic.py/actor.py take batch.actions",
     "what": "The reference works in the environment's action units and assumes a bound of 1 (its D4RL tasks); ours "
             "divides actions by max_action into the unit box and multiplies the policy's back.",
     "fate": "explained: identical for a bound of 1, as in every task the reference runs and in this comparison."},
]}


class _StandInMVNDiag:
    """tfd.MultivariateNormalDiag's log_prob (the update's one use of it) where tensorflow-probability's JAX
    substrate does not import: sum over the last axis of -z^2/2 - log(scale) - log(2 pi)/2, z = (x - loc)/scale."""

    def __init__(self, loc, scale_diag):
        self.loc, self.scale = loc, scale_diag

    def log_prob(self, x):
        z = (x - self.loc) / self.scale
        return jnp.sum(-0.5 * jnp.square(z) - jnp.log(self.scale) - 0.5 * math.log(2.0 * math.pi), axis=-1)

    def sample(self, seed):
        return self.loc + self.scale * jax.random.normal(seed, jnp.shape(self.loc), jnp.result_type(self.loc))


def tfp_modules() -> tuple[dict, str]:
    """The modules `from tensorflow_probability.substrates import jax as tfp` needs, and what stands behind them."""
    try:
        import tensorflow_probability
        from tensorflow_probability.substrates import jax as tfp  # noqa: F401
        return {}, f"tensorflow_probability {tensorflow_probability.__version__}"
    except (ImportError, AttributeError):  # not installed, or its JAX substrate predates this JAX
        pass
    jax_substrate = stub_module("tensorflow_probability.substrates.jax",
                                distributions=stub_module("tfd", MultivariateNormalDiag=_StandInMVNDiag))
    substrates = stub_module("tensorflow_probability.substrates", jax=jax_substrate)
    return {"tensorflow_probability": stub_module("tensorflow_probability", substrates=substrates),
            "tensorflow_probability.substrates": substrates,
            "tensorflow_probability.substrates.jax": jax_substrate}, "stand-in MultivariateNormalDiag.log_prob"


class _RecordingDropout(nn.Dropout):
    """flax's Dropout drawing its mask in float32 (as nn.Dropout does outside x64) and sowing it."""

    @nn.compact
    def __call__(self, inputs, deterministic=None, rng=None):
        if self.rate == 0.0 or nn.module.merge_param("deterministic", self.deterministic, deterministic):
            return inputs
        keep = 1.0 - self.rate
        key = self.make_rng(self.rng_collection) if rng is None else rng
        mask = jax.random.uniform(key, inputs.shape, jnp.float32) < jnp.float32(keep)
        self.sow("intermediates", "mask", mask)
        return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


_RecordingDropout.__name__ = "Dropout"  # flax names submodules by class: keep "Dropout_0", hence the same keys


def _recording_apply_gradient(self, loss_fn):
    """common.Model.apply_gradient, also returning the gradients in the info dict (keyed by the model's loss)."""
    grads, info = jax.grad(loss_fn, has_aux=True)(self.params)
    updates, new_opt_state = self.tx.update(grads, self.opt_state, self.params)
    new_params = optax.apply_updates(self.params, updates)
    name = next(key for key in LOSSES if key in info).split("_")[0]
    model = self.replace(step=self.step + 1, params=new_params, opt_state=new_opt_state)
    return model, {**info, f"grads/{name}": grads}


@contextlib.contextmanager
def lenient_jit():
    """jax.jit ignoring static_argnames its function lacks (policy.py names a `distribution` argument it does not
    have; JAX once let that pass, now it refuses)."""
    original = jax.jit

    def jit(fun=None, **kwargs):
        if fun is None:
            return functools.partial(jit, **kwargs)
        if kwargs.get("static_argnames"):
            parameters = inspect.signature(fun).parameters
            kwargs["static_argnames"] = tuple(name for name in kwargs["static_argnames"] if name in parameters)
        return original(fun, **kwargs)

    jax.jit = jit
    try:
        yield
    finally:
        jax.jit = original


def load_reference(repo: str):
    """The reference's learner module (with the shims of the module docstring) and what its log-density is."""
    if not hasattr(jax, "tree_multimap"):
        jax.tree_multimap = jax.tree_util.tree_map
    stubs, log_prob = tfp_modules()
    with lenient_jit():
        learner = load_file(repo, "learner.py", "learner", stubs=stubs, path=("",))
    reference_common = sys.modules["common"]
    linen = types.ModuleType("flax.linen (recording dropout)")
    linen.__dict__.update(vars(nn))
    linen.Dropout = _RecordingDropout
    reference_common.nn = linen
    reference_common.Model.apply_gradient = _recording_apply_gradient
    return learner, log_prob


@contextlib.contextmanager
def frozendict_init():
    """flax's init returning FrozenDicts, as the flax the reference was written for did."""
    before = flax.config.flax_return_frozendict
    flax.config.update("flax_return_frozendict", True)
    try:
        yield
    finally:
        flax.config.update("flax_return_frozendict", before)


def reference_config(repo: str, variant: str):
    return load_file(repo, VARIANTS[variant][0], f"iql_reference_{variant}_config").get_config()


def _dense(p) -> dict:
    return {"kernel": jnp.asarray(p["kernel"]), "bias": jnp.asarray(p["bias"])}


def actor_params(p) -> dict:
    """The reference's NormalTanhPolicy parameters in our IQLPolicy's layout."""
    hidden = len([name for name in p["MLP_0"] if name.startswith("Dense_")])
    layers = {f"TorchDense_{i}": _dense(p["MLP_0"][f"Dense_{i}"]) for i in range(hidden)}
    return {"params": {**layers, f"TorchDense_{hidden}": _dense(p["Dense_0"]), "log_std": jnp.asarray(p["log_stds"])}}


def value_params(p) -> dict:
    return {"params": {"MLP_0": {f"TorchDense_{i}": _dense(p["MLP_0"][f"Dense_{i}"]) for i in range(len(p["MLP_0"]))}}}


def critic_params(p) -> dict:
    """DoubleCritic's two heads stacked on a leading axis, as our CriticEnsemble holds them."""
    heads = [p["Critic_0"]["MLP_0"], p["Critic_1"]["MLP_0"]]
    return {"params": {"VmapMLP_0": {f"TorchDense_{i}": jax.tree_util.tree_map(
        lambda *x: jnp.stack(x), *[_dense(head[f"Dense_{i}"]) for head in heads]) for i in range(len(heads[0]))}}}


def reference_groups(ref) -> dict:
    return to_numpy({"actor": actor_params(ref.actor.params), "critic": critic_params(ref.critic.params),
                     "critic_target": critic_params(ref.target_critic.params), "value": value_params(ref.value.params)})


def make_reference(learner, config, settings: Settings, float64: bool):
    """The reference Learner, built as train_offline.py builds it (in float32; cast to float64 when asked)."""
    data = settings.data
    kwargs = {key: value for key, value in config.items()}
    with frozendict_init(), jax.enable_x64(False):  # as float32 runs build it, then cast
        ref = learner.Learner(settings.seed, data["observations"][:1], data["actions"][:1],
                              max_steps=2 * settings.updates, **kwargs)
    if float64:
        for name in ("actor", "critic", "value", "target_critic"):
            model = getattr(ref, name)
            setattr(ref, name, model.replace(params=as_float64(model.params), opt_state=as_float64(model.opt_state)))
    return ref


def dropout_masks(actor, observations, key) -> tuple:
    """The keep-masks the reference's actor (a common.Model) draws with this key (per hidden layer, in order)."""
    _, state = actor.apply_fn.apply({"params": actor.params}, observations, training=True, rngs={"dropout": key},
                                    mutable=["intermediates"])
    mlp = state["intermediates"]["MLP_0"]
    return tuple(mlp[name]["mask"][0] for name in sorted(mlp))


def run_reference(learner, config, settings: Settings, indices, float64: bool) -> Run:
    """Train the reference on the fixed minibatches; snapshots, applied gradients, losses and dropout masks."""
    dtype = np.float64 if float64 else np.float32
    ref = make_reference(learner, config, settings, float64)
    masks = jax.jit(dropout_masks)
    run = Run(losses={key: [] for key in LOSSES}, extra={"masks": [], "initial": reference_groups(ref)})
    start = time.perf_counter()
    for k in range(settings.updates):
        b = settings.minibatch(indices, k, dtype)
        batch = learner.Batch(observations=b["observations"], actions=b["actions"], rewards=b["rewards"],
                              masks=1.0 - b["dones"], next_observations=b["next_observations"])
        if config.dropout_rate:  # the key _update_jit splits off for the actor
            run.extra["masks"].append(jax.device_get(masks(ref.actor, b["observations"], jax.random.split(ref.rng)[0])))
        info = ref.update(batch)
        run.add_losses({key: info[key] for key in LOSSES})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = reference_groups(ref)
            run.gradients[k + 1] = to_numpy({"value": value_params(info["grads/value"]),
                                             "actor": actor_params(info["grads/actor"]),
                                             "critic": critic_params(info["grads/critic"])})
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = ref
    return run


def our_agent(config, settings: Settings, initial: dict, float64: bool) -> IQLAgent:
    data = settings.data
    hp = IQLHyperparams.from_config(config, (1.0,) * data["actions"].shape[1])
    agent = IQLAgent.create(jax.random.PRNGKey(settings.seed), data["observations"].shape[1],
                            data["actions"].shape[1], hp)
    agent = agent.replace(actor=agent.actor.replace(params=initial["actor"]),
                          critic=agent.critic.replace(params=initial["critic"]),
                          critic_target_params=initial["critic_target"],
                          value=agent.value.replace(params=initial["value"]))
    return as_float64(agent) if float64 else agent


def run_ours(agent: IQLAgent, ref_run: Run, settings: Settings, indices, float64: bool) -> Run:
    """Our updates on the same minibatches and the reference's dropout masks; the same records."""
    dtype = np.float64 if float64 else np.float32
    update = jax.jit(lambda agent, batch, noise: agent.update_and_gradients(batch, noise))
    run = Run(losses={key: [] for key in LOSSES})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        masks = ref_run.extra["masks"]
        noise = IQLNoise(dropout=tuple(jnp.asarray(m) for m in masks[k])) if masks else IQLNoise()
        agent, metrics, grads = update(agent, batch, noise)
        run.add_losses({key: metrics[key] for key in LOSSES})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = to_numpy({"actor": agent.actor.params, "critic": agent.critic.params,
                                             "critic_target": agent.critic_target_params,
                                             "value": agent.value.params})
            run.gradients[k + 1] = to_numpy(grads)
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = agent
    return run


def compare_actions(ref, agent: IQLAgent, settings: Settings) -> dict:
    """With the reference's final actor loaded into ours: its evaluation action (sample_actions at temperature 0:
    the mean, no dropout) against ours."""
    agent = agent.replace(actor=agent.actor.replace(params=actor_params(ref.actor.params)))
    observations = settings.data["observations"][:ACTION_STATES]
    theirs = ref.sample_actions(observations, temperature=0.0)
    ours = np.asarray(agent.sample_actions(jnp.asarray(observations), jax.random.PRNGKey(0)))
    return {"states": ACTION_STATES, "max_abs": float(np.max(np.abs(ours - theirs)))}


def matching_config(repo: str, variant: str, settings: Settings):
    """The reference's config file and our row for the variant; our values must be the reference's."""
    theirs = reference_config(repo, variant)
    ours = config_for("iql", list(settings.overrides), row=VARIANTS[variant][1])
    ours.steps = 2 * settings.updates  # the cosine schedule's length, as the reference's max_steps
    for key, our_key in HYPERPARAMETERS.items():
        want = theirs[key] if theirs[key] is not None else 0.0  # dropout_rate None: none
        if tuple(np.atleast_1d(ours[our_key])) != tuple(np.atleast_1d(want)):
            raise RuntimeError(f"our {VARIANTS[variant][1]} row has {our_key}={ours[our_key]}, the reference's "
                               f"{VARIANTS[variant][0]} {key}={theirs[key]}")
    if ours.batch_size != 256:  # train_offline.py's --batch_size
        raise RuntimeError(f"our batch_size is {ours.batch_size}, the reference's 256")
    return theirs, ours


def compare_variant(learner, settings: Settings, variant: str, log_prob: str) -> dict:
    theirs, ours = matching_config(settings.repo, variant, settings)
    indices = settings.minibatch_indices(ours.batch_size)
    ref32 = run_reference(learner, theirs, settings, indices, float64=False)
    initial = jax.tree_util.tree_map(jnp.asarray, ref32.extra["initial"])
    ours32 = run_ours(our_agent(ours, settings, initial, False), ref32, settings, indices, float64=False)
    with jax.enable_x64(True):
        ref64 = run_reference(learner, theirs, settings, indices, float64=True)
        if any(not np.array_equal(a, b) for m32, m64 in zip(ref32.extra["masks"], ref64.extra["masks"])
               for a, b in zip(m32, m64)):
            raise RuntimeError("the float64 reference drew other dropout masks than the float32 run")
        ours64 = run_ours(our_agent(ours, settings, initial, True), ref64, settings, indices, float64=True)
    kept = [float(np.mean(np.concatenate([m.ravel() for m in masks]))) for masks in ref32.extra["masks"]]
    return variant_report(
        variant, settings.compared_at, ours32, ref32, ours64, ref64, reference_config=VARIANTS[variant][0],
        our_row=VARIANTS[variant][1], dropout_rate=float(ours.dropout_rate), reference_log_prob=log_prob,
        kept_fraction_of_hidden_units=float(np.mean(kept)) if kept else None,
        actor_lr_at_last_update=float(optax.cosine_decay_schedule(ours.lr, ours.steps)(settings.updates - 1)),
        action_selection=compare_actions(ref32.extra["agent"], ours32.extra["agent"], settings))


def compare(settings: Settings) -> dict:
    """Every variant (no dropout; Kitchen's actor dropout with the reference's masks)."""
    learner, log_prob = load_reference(settings.repo)
    variants = settings.variants or tuple(VARIANTS)
    return {"variants": [compare_variant(learner, settings, variant, log_prob) for variant in variants]}
