"""IDQL against the authors' JAX code (philippe-eecs/IDQL, `jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py`, the
learner its `jaxrl5/agents/__init__.py` exports): the `idql` case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=idql --repo=/path/to/IDQL [--obs_dim=17 --act_dim=6]

- loading: the learner and `jaxrl5/networks/{mlp,ensemble,state_action_value,state_value,diffusion,resnet}.py` are
  imported from the checkout one by one, with stand-ins for what the update never touches (gym, jaxrl5.types,
  jaxrl5.data); its code runs unchanged under today's JAX and flax.
- randomness: `JaxDraws` stands in for jax.random's sampling functions while the reference's update is traced and
  returns what they drew (the diffusion steps, the noise and flax's dropout masks) as outputs of the compiled update;
  the same numbers go to `IDQLAgent.update_with_noise`. Its float64 run replays them.
- compared: the losses of V, the critics and the diffusion policy; the gradients that enter each optimiser (`tap`);
  five parameter groups (policy, its EMA, critics, target critics, V).
- settings: the offline launcher's (`launcher/examples/train_ddpm_iql_offline.py`): batch 512, T = 5 VP betas,
  3 LN_Resnet blocks with dropout 0.1, LayerNorm in V, actor_tau 0.001, expectile 0.7; the policy's cosine decay
  over 2 x --updates steps on both sides (the launcher's 3M would leave it flat).
- action selection, float64, the final reference weights loaded into ours, the reference's own sampler noise:
  `eval_actions` (argmax of Q) against selection="argmax", and the older learner's `sample_implicit_policy`
  (`jaxrl5/agents/ddpm_iql/ddpm_iql_learner.py`, the paper's expectile resampling) against our implicit weights.
"""

from __future__ import annotations

import contextlib
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, stub_module, to_numpy, variant_report
from dql.agents.idql import IDQLAgent, IDQLHyperparams, IDQLNoise, implicit_weights

REFERENCES = {"official": {"repo": "philippe-eecs/IDQL", "file": "jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py"}}
VARIANTS = ("default",)
ACTION_STATES = 8
LOSSES = ("actor_loss", "value_loss", "critic_loss")
DIFFERENCES = {"official": [
    {"where": "jaxrl5/networks/diffusion.py, FourierFeatures: f = 2 * jnp.pi * x @ w.T",
     "what": "ours cast the step to float32 before 2 pi t, so in float64 the Fourier features kept float32 rounding "
             "(the reference multiplies in the parameters' precision): the policy's parameters 1.2e-8 apart after one "
             "float64 update (its gradients 7e-8).",
     "fate": "fixed: IDQLScoreNet computes f in the kernel's dtype (no change in float32)."},
    {"where": "ddpm_iql_learner.py, update_actor: randint/normal over the batch, rngs={'dropout': key}",
     "what": "the reference draws the steps, the noise and flax's dropout masks for the whole batch from one key; "
             "ours draws them per example from per-example keys (so that a sharded batch draws the same).",
     "fate": "explained: the same distributions; the comparison feeds the reference's draws and masks to "
             "IDQLAgent.update_with_noise (IDQLNoise.dropout_masks)."},
    {"where": "ddpm_iql_learner.py, eval_actions (jnp.argmax(qs))",
     "what": "the exported learner acts with the highest-Q candidate; the paper resamples with the implicit "
             "weights, as the older learner's sample_implicit_policy does with jax.random.choice.",
     "fate": "option: selection='argmax' | 'expectile' (default, the paper's); ours draws with "
             "jax.random.categorical on log weights, the same distribution as choice(p = w / sum w)."},
    {"where": "examples/states/train_diffusion_offline.py, ds.split(0.95)",
     "what": "the authors' script trains on a random 95% of the dataset (5% kept for a validation loss).",
     "fate": "explained: a data choice outside the update; ours trains on all of it (dql/agents/idql.py)."},
]}


# ------------------------------------------------------------------ tools for JAX references (edp.py uses them too)


class JaxDraws:
    """Stands in for jax.random's sampling functions while a reference's update is traced: records what they return
    (for the traced function to return them as outputs), or returns another run's draws instead (`replay`), in
    the dtype the call asks for. The names of the calls, in order, are kept from the last trace."""

    NAMES = ("normal", "uniform", "randint", "bernoulli")

    def __init__(self):
        self.names: list[str] = []
        self.values: list = []
        self._replay: list | None = None

    @contextlib.contextmanager
    def active(self, replay=None):
        originals = {name: getattr(jax.random, name) for name in self.NAMES}
        self.names, self.values, self._replay = [], [], None if replay is None else list(replay)
        for name, fn in originals.items():
            setattr(jax.random, name, self._stand_in(name, fn))
        try:
            yield self.values
        finally:
            for name, fn in originals.items():
                setattr(jax.random, name, fn)

    def _stand_in(self, name, fn):
        def draw(*args, **kwargs):
            if self._replay is None:
                value = fn(*args, **kwargs)
            else:
                like = jax.eval_shape(lambda: fn(*args, **kwargs))
                value = jnp.asarray(self._replay.pop(0)).astype(like.dtype)
                if value.shape != like.shape:
                    raise RuntimeError(f"replay: {name} of shape {like.shape} where the recorded run drew "
                                       f"{value.shape}")
            self.names.append(name)
            self.values.append(value)
            return value

        return draw


def tap(state, sink: dict, name: str):
    """The TrainState with its optimiser writing the gradients it receives into sink[name] (at trace time, so that
    the traced update can return them)."""
    tx = state.tx

    def update(grads, opt_state, params=None):
        sink[name] = grads
        return tx.update(grads, opt_state, params)

    return state.replace(tx=optax.GradientTransformation(tx.init, update))


def with_params(state, params):
    """A TrainState restarted at `params` (a fresh optimiser state of their dtype)."""
    return state.replace(params=params, opt_state=state.tx.init(params))


def record_and_replay(step, draws: JaxDraws):
    """Compiled versions of step(*args) -> outputs: one returning (outputs, the draws it made), one taking the draws
    to replay as its last argument."""
    def recording(*args):
        with draws.active() as values:
            return step(*args), list(values)

    def replaying(*args):
        *args, replay = args
        with draws.active(replay):
            return step(*args)

    return jax.jit(recording), jax.jit(replaying)


# ------------------------------------------------------------------------------------------------- the reference


def load_reference(repo: str):
    """The exported learner and the older one (for sample_implicit_policy), with jaxrl5's networks."""
    stubs = {"gym": stub_module("gym"), "jaxrl5.types": stub_module("jaxrl5.types", PRNGKey=jax.Array),
             "jaxrl5.data": stub_module("jaxrl5.data"), "jaxrl5.data.dataset": stub_module("jaxrl5.data.dataset",
                                                                                          DatasetDict=dict)}
    for name, module in stubs.items():
        sys.modules.setdefault(name, module)
    networks = sys.modules.setdefault("jaxrl5.networks", types.ModuleType("jaxrl5.networks"))
    for part in ("mlp", "ensemble", "state_action_value", "state_value", "diffusion", "resnet"):
        loaded = load_file(repo, f"jaxrl5/networks/{part}.py", f"jaxrl5.networks.{part}")
        networks.__dict__.update({k: v for k, v in vars(loaded).items() if not k.startswith("__")})
    load_file(repo, "jaxrl5/agents/agent.py", "jaxrl5.agents.agent")
    simple = load_file(repo, "jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py", "idql_reference")
    older = load_file(repo, "jaxrl5/agents/ddpm_iql/ddpm_iql_learner.py", "idql_reference_older")
    return simple, older


def reference_agent(ref, config, obs_dim: int, act_dim: int, seed: int):
    space = lambda n: types.SimpleNamespace(shape=(n,), sample=lambda: np.zeros(n, np.float32))  # noqa: E731
    return ref.DDPMIQLLearner.create(
        seed, space(obs_dim), space(act_dim), actor_lr=config.lr, critic_lr=config.critic_lr,
        value_lr=config.value_lr, critic_hidden_dims=tuple(config.hidden_dims), discount=config.discount,
        tau=config.tau, critic_hyperparam=config.expectile, ddpm_temperature=config.ddpm_temperature,
        actor_num_blocks=config.actor_num_blocks, actor_tau=config.actor_tau,
        actor_dropout_rate=config.actor_dropout, actor_layer_norm=config.actor_layer_norm,
        value_layer_norm=config.value_layer_norm, T=config.diffusion_steps, time_dim=config.time_dim,
        N=config.num_samples, M=0, clip_sampler=config.clip_sampler, beta_schedule=config.beta_schedule,
        decay_steps=config.steps)


def _head(mlp, dense):
    return {"IDQLMLP_0": dict(mlp), "Dense_0": dense}


def ours_from_reference(groups: dict, num_blocks: int) -> dict:
    """The reference's parameter groups (its layout, without {'params': ...}) in ours."""
    def actor(p):
        resnet = p["MLPResNet_0"]
        out = {"fourier_kernel": p["FourierFeatures_0"]["kernel"], "IDQLMLP_0": dict(p["MLP_0"]),
               "Dense_0": resnet["Dense_0"], f"Dense_{1 + 2 * num_blocks}": resnet["Dense_1"]}
        for b in range(num_blocks):
            block = resnet[f"MLPResNetBlock_{b}"]
            out.update({f"LayerNorm_{b}": block["LayerNorm_0"], f"Dense_{1 + 2 * b}": block["Dense_0"],
                        f"Dense_{2 + 2 * b}": block["Dense_1"]})
        return {"params": out}

    def critic(p):
        (heads,) = p.values()
        return {"params": {"Vmap_QHead_0": _head(heads["MLP_0"], heads["Dense_0"])}}

    def value(p):
        return {"params": {"_QHead_0": _head(p["MLP_0"], p["OutputVDense"])}}

    convert = {"actor": actor, "actor_target": actor, "critic": critic, "critic_target": critic, "value": value}
    return {name: convert[name](tree) for name, tree in groups.items()}


def reference_groups(agent) -> dict:
    return {"actor": agent.score_model.params, "actor_target": agent.target_score_model.params,
            "critic": agent.critic.params, "critic_target": agent.target_critic.params, "value": agent.value.params}


def reference_step(agent, batch, sink):
    """The learner's update (actor, V, critics, in its order), uncompiled so that the draws can be intercepted."""
    agent, actor_info = agent.update_actor(batch)
    agent, value_info = agent.update_v(batch)
    agent, critic_info = agent.update_q(batch)
    return agent, {**actor_info, **value_info, **critic_info}, dict(sink)


def run_reference(ref, config, settings: Settings, indices, exact: Run | None = None) -> Run:
    """The reference on the fixed minibatches, recording its draws; given the float32 run `exact`, the same run in
    float64 (under jax.enable_x64, which the caller holds) from its initial weights, replaying its draws."""
    data, dtype = settings.data, np.float32 if exact is None else np.float64
    agent = reference_agent(ref, config, data["observations"].shape[1], data["actions"].shape[1], settings.seed)
    if exact is not None:
        initial = as_float64(exact.extra["initial"])
        agent = agent.replace(score_model=with_params(agent.score_model, initial["actor"]),
                              target_score_model=agent.target_score_model.replace(params=initial["actor_target"]),
                              critic=with_params(agent.critic, initial["critic"]),
                              target_critic=agent.target_critic.replace(params=initial["critic_target"]),
                              value=with_params(agent.value, initial["value"]))
    sink: dict = {}
    agent = agent.replace(score_model=tap(agent.score_model, sink, "actor"), critic=tap(agent.critic, sink, "critic"),
                          value=tap(agent.value, sink, "value"))
    draws = JaxDraws()
    recording, replaying = record_and_replay(lambda a, b: reference_step(a, b, sink), draws)
    run = Run(losses={key: [] for key in LOSSES}, extra={"initial": reference_groups(agent), "draws": []})
    bound = 1.0 - config.action_clip_eps  # D4RLDataset's clip of the dataset's actions
    start = time.perf_counter()
    for k in range(settings.updates):
        b = settings.minibatch(indices, k, dtype)
        batch = {"observations": b["observations"], "actions": np.clip(b["actions"], -bound, bound),
                 "rewards": b["rewards"], "masks": 1.0 - b["dones"], "dones": b["dones"],
                 "next_observations": b["next_observations"]}
        if exact is None:
            (agent, info, grads), values = recording(agent, batch)
            run.extra["draws"].append([np.asarray(v) for v in values])
        else:
            agent, info, grads = replaying(agent, batch, exact.extra["draws"][k])
        run.add_losses({key: info[key] for key in LOSSES})
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = ours_from_reference(to_numpy(grads), config.actor_num_blocks)
            run.snapshots[k + 1] = ours_from_reference(to_numpy(reference_groups(agent)), config.actor_num_blocks)
    run.seconds = time.perf_counter() - start
    run.extra.update(agent=agent, names=list(draws.names))
    return run


# ------------------------------------------------------------------------------------------------------- ours


def noise_of_update(names: list[str], values: list) -> IDQLNoise:
    """The reference's draws of one update (randint, normal, then one bernoulli per dropout block) as IDQLNoise."""
    if names[:2] != ["randint", "normal"] or set(names[2:]) - {"bernoulli"}:
        raise RuntimeError(f"the reference drew {names}: its update_actor changed")
    masks = jnp.stack([jnp.asarray(v) for v in values[2:]]) if len(values) > 2 else None
    return IDQLNoise(bc_steps=jnp.asarray(values[0], jnp.int32), bc_noise=jnp.asarray(values[1]),
                     dropout_masks=masks)


def load_into_ours(agent: IDQLAgent, groups: dict) -> IDQLAgent:
    """Our agent at the given parameter groups (our layout), with fresh optimiser states of their dtype."""
    return agent.replace(actor=with_params(agent.actor, groups["actor"]), actor_target_params=groups["actor_target"],
                         critic=with_params(agent.critic, groups["critic"]),
                         critic_target_params=groups["critic_target"], value=with_params(agent.value, groups["value"]))


def ours_groups(agent: IDQLAgent) -> dict:
    return {"actor": agent.actor.params, "actor_target": agent.actor_target_params, "critic": agent.critic.params,
            "critic_target": agent.critic_target_params, "value": agent.value.params}


def run_ours(agent: IDQLAgent, ref_run: Run, settings: Settings, dtype) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    sink: dict = {}
    agent = agent.replace(actor=tap(agent.actor, sink, "actor"), critic=tap(agent.critic, sink, "critic"),
                          value=tap(agent.value, sink, "value"))
    update = jax.jit(lambda agent, batch, noise: (*agent.update_with_noise(batch, noise), dict(sink)))
    indices = ref_run.extra["indices"]
    run = Run(losses={key: [] for key in LOSSES})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        noise = noise_of_update(ref_run.extra["names"], ref_run.extra["draws"][k])
        noise = jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                       noise)
        agent, metrics, grads = update(agent, batch, noise)
        run.add_losses({key: metrics[key] for key in LOSSES})
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = to_numpy(grads)
            run.snapshots[k + 1] = to_numpy(ours_groups(agent))
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = agent
    return run


# ------------------------------------------------------------------------------------------------ comparison


def sampler_noise(rng, n: int, steps: int, act_dim: int):
    """The draws of the reference's ddpm_sampler from `rng` (x_T, then one per step from T - 1 down to 0) as our
    chain noise [n, T + 1, A] (x_T, then the draw of step t at index t + 1), and the key it hands back."""
    key, rng = jax.random.split(rng)
    initial, per_step = jax.random.normal(key, (n, act_dim)), []
    for _ in range(steps):
        rng, key = jax.random.split(rng)
        per_step.append(jax.random.normal(key, (n, act_dim)))
    return jnp.stack([initial, *per_step[::-1]], axis=1), rng


class _ExpectileObjective:
    """The exported learner's agent as the older learner's sample_implicit_policy expects it (critic_objective)."""

    critic_objective = "expectile"

    def __init__(self, agent):
        self._agent = agent

    def __getattr__(self, name):
        return getattr(self._agent, name)


def compare_action_selection(older, ref_agent, agent: IDQLAgent, settings: Settings) -> dict:
    """With the reference's final weights in ours: the reference's argmax (eval_actions) and implicit resampling
    (the older learner's sample_implicit_policy) against ours on the same sampler noise and choice key."""
    agent = load_into_ours(agent, ours_from_reference(reference_groups(ref_agent), agent.hp.actor_num_blocks))
    hp, proxy = agent.hp, _ExpectileObjective(ref_agent)
    out = {"states": ACTION_STATES, "argmax_action_max_abs": 0.0, "implicit_action_max_abs": 0.0,
           "same_argmax_candidate": 0, "same_implicit_candidate": 0}
    candidates_fn = jax.jit(agent.action_candidates)
    for state in settings.data["observations"][:ACTION_STATES].astype(np.float64):
        noise, rng = sampler_noise(ref_agent.rng, hp.num_samples, hp.diffusion_steps, len(hp.max_action))
        candidates, q, v = candidates_fn(jnp.asarray(state[None]), noise)
        chosen = {"argmax": int(jnp.argmax(q[0]))}
        weights = implicit_weights(q[0] - v[0], hp.expectile)
        chosen["implicit"] = int(jax.random.choice(jax.random.split(rng)[1], hp.num_samples, p=weights / weights.sum()))
        theirs = {"argmax": ref_agent.eval_actions(state)[0],
                  "implicit": older.DDPMIQLLearner.sample_implicit_policy(proxy, state)[0]}
        for name in ("argmax", "implicit"):
            ours = np.asarray(candidates[0, chosen[name]])
            gap = float(np.max(np.abs(ours - theirs[name])))
            out[f"{name}_action_max_abs"] = max(out[f"{name}_action_max_abs"], gap)
            out[f"same_{name}_candidate"] += int(np.argmin(np.abs(np.asarray(candidates[0]) - theirs[name]).max(-1))
                                                 == chosen[name])
    return out


def compare_variant(simple, older, settings: Settings, variant: str) -> dict:
    config = config_for("idql", list(settings.overrides))
    config.steps = 2 * settings.updates  # the policy's cosine decay halfway down at the last update compared
    config.actor_hidden_dim = 256  # the learner builds MLPResNet at its default width
    data = settings.data
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    indices = settings.minibatch_indices(config.batch_size)
    exact = run_reference(simple, config, settings, indices)
    exact.extra["indices"] = indices
    hp = IDQLHyperparams.from_config(config, (1.0,) * act_dim)
    initial = load_into_ours(IDQLAgent.create(jax.random.PRNGKey(0), obs_dim, act_dim, hp),
                             ours_from_reference(exact.extra["initial"], config.actor_num_blocks))
    ours = run_ours(initial, exact, settings, np.float32)
    with jax.enable_x64(True):
        float64 = run_reference(simple, config, settings, indices, exact=exact)
        float64.extra.update(indices=indices, names=exact.extra["names"], draws=exact.extra["draws"])
        ours_float64 = run_ours(load_into_ours(initial, as_float64(ours_groups(initial))), float64, settings,
                                np.float64)
        action_selection = compare_action_selection(older, float64.extra["agent"], ours_float64.extra["agent"],
                                                    settings)
    return variant_report(variant, settings.compared_at, ours, exact, ours_float64, float64,
                          dropout=config.actor_dropout, decay_steps=config.steps,
                          action_selection_float64=action_selection)


def compare(settings: Settings) -> dict:
    simple, older = load_reference(settings.repo)
    return {"variants": [compare_variant(simple, older, settings, v) for v in settings.variants or VARIANTS]}
