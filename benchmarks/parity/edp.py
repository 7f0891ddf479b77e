"""Efficient Diffusion Policies against the authors' JAX code (sail-sg/edp, `diffusion/dql.py` with
`diffusion/{nets,diffusion,dpm_solver}.py`): the `edp` case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=edp --repo=/path/to/edp [--variants=TD3,CRR,IQL,TD3_max_q]

- loading: the files are imported from the checkout as the packages `diffusion`, `utilities`, `core` (its trainer
  too, for the action selection, with stand-ins for gym, wandb, its data and logging modules). Two shims for
  today's JAX: `jax.tree_multimap` (its target-network update) is jax.tree_util.tree_map, and arrays get back their
  `.tile` method (jnp.tile), which its DPM-Solver's `interpolate_fn` calls. Its float64 run needs two more: its
  diffusion module casts the betas and every gathered coefficient to float32 and its time embedding builds the
  frequencies in float32, so during that run those modules' `np.float32` / `jnp.float32` mean float64.
- randomness: `JaxDraws` (benchmarks/parity/idql.py) records what jax.random draws while the reference's
  `_train_step_{td3,crr,iql}` is traced (the DPM-Solver's x_T for the backup, the diffusion step and noise of the
  action approximation, CRR's N(x0_hat, I) samples through distrax, TD3's head choice) and feeds them to
  `EDPAgent.update_with_noise`; the float64 run replays them.
- compared: the critic loss (sum over heads), the policy loss with its diffusion and guide terms, V's loss (IQL);
  the gradients entering each optimiser (per critic head in EDP, stacked in ours); the parameter groups.
- settings: EDP's T = 1000 linear betas, DPM-Solver of order 3 with 15 calls uniform in time, batch 256, 3 x 256
  mish networks; gradient clip 4.0 (hopper-medium-replay's `gn`) with the policy's cosine decay over 2 x --updates
  steps; the target policy from update 200 (the reference's `train()` hard-codes 1000: its `_train_step_*` get
  `policy_tgt_update` computed with 200).
- action selection, float64, the final reference weights in ours: its trainer's `dpmensemble_act` against ours on
  its own noise and choice key: the same 50 DPM-Solver candidates, their Q and the same chosen one.
"""

from __future__ import annotations

import contextlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, stub_module, to_numpy, variant_report
from benchmarks.parity.idql import JaxDraws, record_and_replay, tap, with_params
from dql.agents.edp import EDPAgent, EDPHyperparams, EDPNoise

REFERENCES = {"official": {"repo": "sail-sg/edp", "file": "diffusion/dql.py"}}
VARIANTS = ("TD3", "CRR", "IQL", "TD3_max_q")
GRAD_NORM = 4.0  # hopper-medium-replay-v2's gn in diffusion/hps.py
EMA_START = 200
ACTION_STATES = 8
DIFFERENCES = {"official": [
    {"where": "diffusion/nets.py, DiffusionPolicy.dpm_sample, wrap_model (noise_clip)",
     "what": "EDP clips DPM-Solver's noise prediction so that the x_0 it implies at the truncated step int(t) lies "
             "in the box; ours clipped x_0 with the solver's continuous-time alpha_t, sigma_t. Alone 0.0086 apart "
             "on the backup's next actions (float64, initial weights).",
     "fate": "fixed: dql/agents/edp.py edp_noise_clip wraps the noise network, the shared solver runs unclipped."},
    {"where": "diffusion/dql.py, get_value_loss: jnp.clip(next_action) only under max_q_backup",
     "what": "EDP's default backup and its dpmensemble_act take DPM-Solver's actions unclipped (they leave the box by "
             "up to 0.031 at the initial weights: the solver stops at index 0, 0.01 of noise short of x_0); ours "
             "clipped them. With the clip above: next actions 0.031 apart, their Q' 4e-3 (relative L2).",
     "fate": "fixed: sample_with_noise(clip=...) clips in the max-Q backup and for the chosen action when acting "
             "only (the candidates' Q as EDP's; the action handed to the environment stays in its box)."},
    {"where": "diffusion/nets.py, wrap_model: t.astype(jnp.int32)",
     "what": "two of the 15 stage times fall on steps (666 and 333); truncating (t - 1/N) N drops a whole step when "
             "rounding lands just below: EDP's float32 run gets 665.99994 and 332.99997 (so its float32 floor is "
             "2.5e-5 on the critics after one update), its float64 run exactly 666 and 333, ours in float64 "
             "665.9999999999999 (critics 2.4e-5 apart, action candidates 9e-3).",
     "fate": "fixed: edp_noise_clip truncates t + 1e-3, the exact-arithmetic step (as EDP's float64 run); EDP's "
             "float32 truncation stays in its floor."},
    {"where": "diffusion/nets.py, sinusoidal_embedding (and ours, edp_time_embedding)",
     "what": "ours built the time embedding in float32 whatever the network's dtype (1.7e-5 off in float64).",
     "fate": "fixed: edp_time_embedding computes in the noisy actions' dtype (unchanged in float32). EDP hard-codes "
             "float32 there too: its float64 run reads float64 for it (module docstring)."},
    {"where": "diffusion/trainer.py, np.clip(dataset['actions'], -clip_action, clip_action)",
     "what": "ours clipped the batch's actions at action_clip * max_action formed in float32 (float32(0.999)) in a "
             "float64 update.",
     "fate": "fixed: the bound is formed in the actions' dtype (unchanged in float32)."},
    {"where": "diffusion/dql.py, get_optimizer: optax.clip_by_global_norm per critic",
     "what": "ours scaled each head by g * (max_norm / norm), optax by (g / norm) * max_norm: one rounding apart.",
     "fate": "fixed: clip_by_head_norm uses optax's arithmetic."},
    {"where": "diffusion/dql.py, train(): self._total_steps > 1000",
     "what": "the target policy starts moving after update 1000, hard-coded.",
     "fate": "option: ema_start (1000 by default); the comparison sets 200 and hands the reference's "
             "_train_step_* the policy_tgt_update flag computed with 200, so that it moves within the run."},
    {"where": "diffusion/dql.py, get_optimizer: `else: opt = optax.adamw(get_lr(), ...)`",
     "what": "without gradient clipping (max_grad_norm 0) EDP ignores lr_decay (get_lr() without the flag); ours "
             "decays whenever lr_decay is set.",
     "fate": "explained: found by reading; both default to lr_decay False, and with a clip (every dataset of "
             "hps.py has one) both decay. The comparison runs lr_decay with clip 4.0."},
    {"where": "diffusion/dql.py, get_diff_terms / policy_loss_fn: one key per batch, uniform(rng) for the head",
     "what": "EDP draws the steps, noises and the TD3 head from batch-wide keys; ours per example (so that a sharded "
             "batch draws the same).",
     "fate": "explained: the same distributions; the comparison feeds EDP's draws to EDPAgent.update_with_noise."},
]}


# ------------------------------------------------------------------------------------------------- the reference


def _restore_array_tile() -> None:
    """x.tile(reps) = jnp.tile(x, reps) on arrays and tracers, a method JAX has since removed."""
    from jax._src import core
    from jax._src.array import ArrayImpl

    def tile(self, reps):
        return jnp.tile(self, reps)

    ArrayImpl.tile = tile
    core.ShapedArray.tile = core.aval_method(tile)


def load_reference(repo: str) -> dict:
    jax.tree_multimap = jax.tree_util.tree_map
    _restore_array_tile()
    for package in ("diffusion", "utilities", "core", "data", "viskit"):
        sys.modules.setdefault(package, stub_module(package))
    modules = {}
    for relative in ("core/core_api.py", "utilities/jax_utils.py", "diffusion/diffusion.py", "diffusion/dpm_solver.py",
                     "diffusion/nets.py", "diffusion/dql.py", "diffusion/constants.py", "diffusion/hps.py"):
        name = relative[:-3].replace("/", ".")
        modules[name.split(".")[1]] = load_file(repo, relative, name)
    stubs = {name: stub_module(name) for name in ("gym", "tqdm", "wandb", "utilities.replay_buffer",
                                                  "utilities.sampler", "utilities.utils", "viskit.logging")}
    modules["trainer"] = load_file(repo, "diffusion/trainer.py", "diffusion.trainer", stubs=stubs)
    return modules


class _Float64Numpy:
    """A numpy-like module in which `float32` is float64, for the reference's float64 run."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return jnp.float64 if name == "float32" else getattr(self._module, name)


@contextlib.contextmanager
def reference_float64(ref: dict):
    """jax.enable_x64, with the reference's hard-coded float32 (schedule coefficients, time embedding) in float64."""
    diffusion, nets = ref["diffusion"], ref["nets"]
    originals = diffusion.np, nets.jnp
    diffusion.np, nets.jnp = _Float64Numpy(diffusion.np), _Float64Numpy(nets.jnp)
    try:
        with jax.enable_x64(True):
            yield
    finally:
        diffusion.np, nets.jnp = originals


def reference_agent(ref: dict, config, obs_dim: int, act_dim: int, seed: int):
    """DiffusionQL as EDP's trainer builds it (_setup_policy, _setup_qf, _setup_vf) with our config's values."""
    d, nets = ref["diffusion"], ref["nets"]
    ref["jax_utils"].init_rng(seed)
    diffusion = d.GaussianDiffusion(num_timesteps=config.diffusion_steps, schedule_name="linear",
                                    model_mean_type=d.ModelMeanType.EPSILON, model_var_type=d.ModelVarType.FIXED_SMALL,
                                    loss_type=d.LossType.MSE, min_value=-1.0, max_value=1.0)
    arch = tuple(config.hidden_dims)
    policy = nets.DiffusionPolicy(diffusion=diffusion, observation_dim=obs_dim, action_dim=act_dim, arch=arch,
                                  time_embed_size=config.time_dim, use_layer_norm=config.policy_layer_norm,
                                  sample_method=config.sampler, dpm_steps=config.dpm_steps,
                                  dpm_t_end=1.0 / config.diffusion_steps)
    qf = nets.Critic(obs_dim, act_dim, arch, use_layer_norm=config.critic_layer_norm, act=nets.mish)
    vf = nets.Value(obs_dim, arch, use_layer_norm=config.critic_layer_norm, act=nets.mish)
    values = dict(
        loss_type=config.loss_type, num_timesteps=config.diffusion_steps, time_embed_size=config.time_dim,
        discount=config.discount, tau=config.tau, alpha=config.alpha, guide_coef=config.guide_coef, lr=config.lr,
        lr_decay=config.lr_decay, lr_decay_steps=config.steps, max_grad_norm=config.grad_norm,
        max_q_backup=config.max_q_backup, max_q_backup_samples=config.num_q_backup_samples,
        sample_actions=config.crr_samples, crr_beta=config.crr_beta, crr_ratio_upper_bound=config.crr_max_weight,
        expectile=config.expectile, awr_temperature=config.awr_temperature, dpm_steps=config.dpm_steps,
        dpm_t_end=1.0 / config.diffusion_steps, policy_tgt_freq=config.ema_every)
    defaults = ref["dql"].DiffusionQL.get_default_config()  # its ConfigDict keeps each default's type (20, not 20.0)
    cfg = ref["dql"].DiffusionQL.get_default_config({key: type(defaults[key])(value) for key, value in values.items()})
    return ref["dql"].DiffusionQL(cfg, policy, qf, vf, nets.GaussianPolicy(act_dim))


def _stack_heads(first, second):
    return jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), first, second)


def ours_from_reference(groups: dict) -> dict:
    """The reference's groups ({policy, policy_target, qf1, qf2, qf1_target, qf2_target, vf} as flax variables) in
    our layout: the time embedding's two Dense layers, the heads stacked for our nn.vmap ensemble."""
    def actor(p):
        net = dict(p["params"]["base_net"])
        embedding = net.pop("TimeEmbedding_0")
        return {"params": {"Dense_0": embedding["Dense_1"], "Dense_1": embedding["Dense_0"], "EDPMLP_0": net}}

    out = {}
    if "policy" in groups:
        out["actor"] = actor(groups["policy"])
    if "policy_target" in groups:
        out["actor_target"] = actor(groups["policy_target"])
    if "vf" in groups:
        out["value"] = {"params": {"EDPMLP_0": groups["vf"]["params"]}}
    for name, suffix in (("critic", ""), ("critic_target", "_target")):
        if "qf1" + suffix in groups:
            out[name] = {"params": {"VmapEDPMLP_0": _stack_heads(groups["qf1" + suffix]["params"],
                                                                  groups["qf2" + suffix]["params"])}}
    return out


def reference_groups(train_states, tgt_params) -> dict:
    return {"policy": train_states["policy"].params, "qf1": train_states["qf1"].params,
            "qf2": train_states["qf2"].params, "vf": train_states["vf"].params, "policy_target": tgt_params["policy"],
            "qf1_target": tgt_params["qf1"], "qf2_target": tgt_params["qf2"], "vf_target": tgt_params["vf"]}


def reference_losses(metrics: dict, loss_type: str) -> dict:
    """The reference's metrics under our names."""
    out = {"critic_loss": metrics["qf1_loss"] + metrics["qf2_loss"], "actor_loss": metrics["policy_loss"],
           "bc_loss": metrics["diff_loss"], "guide_loss": metrics["guide_loss"]}
    if loss_type == "IQL":
        out["value_loss"] = metrics["vf_loss"]
    return out


def run_reference(ref: dict, config, settings: Settings, indices, exact: Run | None = None) -> Run:
    """The reference on the fixed minibatches, recording its draws; given the float32 run `exact`, the same run in
    float64 (inside `reference_float64`, which the caller holds) from its initial weights, replaying its draws."""
    data, dtype = settings.data, np.float32 if exact is None else np.float64
    agent = reference_agent(ref, config, data["observations"].shape[1], data["actions"].shape[1], settings.seed)
    states, targets = dict(agent.train_states), dict(agent._tgt_params)
    if exact is not None:
        initial = as_float64(exact.extra["initial"])
        states = {k: with_params(s, initial.get(k, s.params)) for k, s in states.items()}
        targets = {k: initial[k + "_target"] for k in targets}
    sink: dict = {}
    states = {k: tap(s, sink, k) if k in ("policy", "qf1", "qf2", "vf") else s for k, s in states.items()}
    step = getattr(agent, f"_train_step_{config.loss_type.lower()}")
    draws = JaxDraws()
    compiled = {due: record_and_replay(
        lambda s, t, rng, batch, due=due: (*step(dict(s), dict(t), rng, batch, due), dict(sink)), draws)
        for due in (False, True)}
    run = Run(extra={"initial": to_numpy({**reference_groups(states, targets)}), "draws": []})
    start = time.perf_counter()
    for k in range(settings.updates):
        b = settings.minibatch(indices, k, dtype)
        b["actions"] = np.clip(b["actions"], -config.action_clip, config.action_clip)  # EDP clips its dataset
        due = k + 1 > config.ema_start and (k + 1) % config.ema_every == 0  # DiffusionQL.train's test
        recording, replaying = compiled[due]
        if exact is None:
            (states, targets, metrics, grads), values = recording(states, targets, ref["jax_utils"].next_rng(), b)
            run.extra["draws"].append([np.asarray(v) for v in values])
        else:
            states, targets, metrics, grads = replaying(states, targets, jax.random.PRNGKey(0), b,
                                                        exact.extra["draws"][k])
        run.add_losses(reference_losses({key: float(value) for key, value in metrics.items()}, config.loss_type))
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = ours_from_reference(to_numpy(grads))
            run.snapshots[k + 1] = ours_from_reference(to_numpy(reference_groups(states, targets)))
    run.seconds = time.perf_counter() - start
    run.extra.update(states=states, targets=targets, agent=agent, names=list(draws.names))
    return run


# ------------------------------------------------------------------------------------------------------- ours


def noise_of_update(names: list[str], values: list, hp) -> EDPNoise:
    """The reference's draws of one update as EDPNoise. The reference takes each gradient of a multi-output loss
    (value_and_multi_grad) in its own call, so draws repeat: the first of each is used."""
    queue = list(zip(names, values))

    def take(name):
        position = next(i for i, (drawn, _) in enumerate(queue) if drawn == name)
        return queue.pop(position)[1]

    batch = values[names.index("randint")].shape[0]
    act_dim = len(hp.max_action)
    n_backup = hp.num_q_backup_samples if hp.max_q_backup else 1
    next_actions = np.zeros((batch, n_backup, 1, act_dim), np.float32)
    if hp.loss_type != "IQL":  # the backup's DPM-Solver x_T: [B, A], or [B, n, A] with the max-Q backup
        next_actions = np.reshape(take("normal"), (batch, n_backup, 1, act_dim))
        del queue[0]  # its repeat (the second critic head's gradient)
    bc_steps, bc_noise = take("randint"), take("normal")
    crr = np.swapaxes(take("normal"), 0, 1) if hp.loss_type == "CRR" else np.zeros((batch, 1, act_dim), np.float32)
    q1_first = float(take("uniform")) > 0.5 if hp.loss_type == "TD3" else False
    return EDPNoise(next_actions=next_actions, bc_steps=np.asarray(bc_steps, np.int32), bc_noise=bc_noise,
                    crr=crr, q1_first=np.asarray(q1_first))


def load_into_ours(agent: EDPAgent, groups: dict) -> EDPAgent:
    """Our agent at the given groups (our layout, cast to the current default precision), fresh optimiser states."""
    groups = jax.tree_util.tree_map(jnp.asarray, groups)
    return agent.replace(actor=with_params(agent.actor, groups["actor"]), actor_target_params=groups["actor_target"],
                         critic=with_params(agent.critic, groups["critic"]),
                         critic_target_params=groups["critic_target"], value=with_params(agent.value, groups["value"]))


def ours_groups(agent: EDPAgent) -> dict:
    return {"actor": agent.actor.params, "actor_target": agent.actor_target_params, "critic": agent.critic.params,
            "critic_target": agent.critic_target_params, "value": agent.value.params}


def run_ours(agent: EDPAgent, ref_run: Run, settings: Settings, indices, dtype) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    sink: dict = {}
    agent = agent.replace(actor=tap(agent.actor, sink, "actor"), critic=tap(agent.critic, sink, "critic"),
                          value=tap(agent.value, sink, "value"))
    update = jax.jit(lambda agent, batch, noise: (*agent.update_with_noise(batch, noise), dict(sink)))
    names = [name for name in ref_run.losses]
    run = Run(losses={name: [] for name in names})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        noise = noise_of_update(ref_run.extra["names"], ref_run.extra["draws"][k], agent.hp)
        noise = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if np.asarray(x).dtype.kind == "f" else
                                       jnp.asarray(x), noise)
        agent, metrics, grads = update(agent, batch, noise)
        run.add_losses({name: metrics[name] for name in names})
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = to_numpy({name: grads[name] for name in ("actor", "critic", "value")
                                             if name in grads})
            run.snapshots[k + 1] = to_numpy(ours_groups(agent))
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = agent
    return run


# ------------------------------------------------------------------------------------------------ comparison


def compare_action_selection(ref: dict, ref_run: Run, agent: EDPAgent, settings: Settings) -> dict:
    """The trainer's dpmensemble_act (the reference's final weights) against ours with those weights: the same
    DPM-Solver noise (its x_T) gives the same candidates, and its categorical draw the same choice."""
    reference, states, targets = ref_run.extra["agent"], ref_run.extra["states"], ref_run.extra["targets"]
    agent = load_into_ours(agent, ours_from_reference(to_numpy(reference_groups(states, targets))))
    params = {key: states[key].params for key in ("policy", "qf1", "qf2")}
    sampler = ref["trainer"].SamplerPolicy(reference.policy, reference.qf)
    n, act_dim = agent.hp.num_action_candidates, len(agent.hp.max_action)
    candidates_fn = jax.jit(agent.action_candidates)
    out = {"states": ACTION_STATES, "candidates_max_abs": 0.0, "q_max_abs": 0.0, "chosen_action_max_abs": 0.0,
           "same_choice": 0}
    for i, state in enumerate(settings.data["observations"][:ACTION_STATES].astype(np.float64)):
        rng = jax.random.PRNGKey(100 + i)
        chosen = np.asarray(sampler.dpmensemble_act(params, rng, state[None], True, n)).reshape(act_dim)
        key = jax.random.split(rng)[0]  # dpmensemble_act samples and chooses with the first half of its split
        theirs = reference.policy.apply(params["policy"], key, state[None], True, repeat=n,
                                        method=reference.policy.dpm_sample)[0]
        q_theirs = jnp.minimum(*(reference.qf.apply(params[h], state[None], theirs[None])[0] for h in ("qf1", "qf2")))
        candidates, q = candidates_fn(jnp.asarray(state[None]), jax.random.normal(key, (1, n, act_dim))[0, :, None])
        index = int(jax.random.categorical(key, q)[0])
        out["candidates_max_abs"] = max(out["candidates_max_abs"], float(jnp.max(jnp.abs(candidates[0] - theirs))))
        out["q_max_abs"] = max(out["q_max_abs"], float(jnp.max(jnp.abs(q[0] - q_theirs))))
        out["chosen_action_max_abs"] = max(out["chosen_action_max_abs"],
                                           float(np.max(np.abs(np.asarray(candidates[0, index]) - chosen))))
        out["same_choice"] += int(np.argmin(np.abs(np.asarray(theirs) - chosen).max(-1)) == index)
    return out


def variant_config(settings: Settings, variant: str):
    config = config_for("edp", list(settings.overrides))  # --set=KEY=VALUE: any other setting of the edp config
    config.update(loss_type=variant.split("_")[0], max_q_backup=variant.endswith("max_q"), grad_norm=GRAD_NORM,
                  lr_decay=True, steps=2 * settings.updates, ema_start=EMA_START)
    return config


def compare_variant(ref: dict, settings: Settings, variant: str) -> dict:
    config = variant_config(settings, variant)
    obs_dim, act_dim = settings.data["observations"].shape[1], settings.data["actions"].shape[1]
    indices = settings.minibatch_indices(config.batch_size)
    exact = run_reference(ref, config, settings, indices)
    hp = EDPHyperparams.from_config(config, (1.0,) * act_dim)
    initial = load_into_ours(EDPAgent.create(jax.random.PRNGKey(0), obs_dim, act_dim, hp),
                             ours_from_reference(exact.extra["initial"]))
    ours = run_ours(initial, exact, settings, indices, np.float32)
    with reference_float64(ref):
        float64 = run_reference(ref, config, settings, indices, exact=exact)
        float64.extra.update(names=exact.extra["names"], draws=exact.extra["draws"])
        ours_float64 = run_ours(load_into_ours(initial, as_float64(ours_groups(initial))), float64, settings, indices,
                                np.float64)
        action_selection = compare_action_selection(ref, float64, ours_float64.extra["agent"], settings)
    return variant_report(variant, settings.compared_at, ours, exact, ours_float64, float64,
                          loss_type=config.loss_type, max_q_backup=config.max_q_backup, grad_norm=config.grad_norm,
                          ema_start=config.ema_start, lr_decay_steps=config.steps, sampler=config.sampler,
                          action_selection_float64=action_selection)


def compare(settings: Settings) -> dict:
    ref = load_reference(settings.repo)
    return {"variants": [compare_variant(ref, settings, variant) for variant in settings.variants or VARIANTS]}
