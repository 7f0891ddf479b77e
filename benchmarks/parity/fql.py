"""Flow Q-Learning against the authors' JAX code (seohongpark/fql, `agents/fql.py` with its `utils/`): the `fql`
case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=fql --repo=/path/to/fql [--dataset=...] [--set=KEY=VALUE]

- driving the reference: its `FQLAgent.create(seed, ...)` and jitted `FQLAgent.update(batch)` on our fixed
  minibatches, its batch as its main() builds it (masks = 1 - dones) with the actions clipped to
  [-1 + 1e-5, 1 - 1e-5] as its `envs/env_utils.py` clips datasets (ours clips inside the update).
- randomness: the reference splits its agent key into the update's draws: the one-step policy's noise for the
  backup (critic_loss -> sample_actions), the flow-matching noise and times, and the distillation noise
  (actor_loss). This case derives the same draws from the same keys and feeds them to `FQLAgent.update_with_noise`;
  the float64 reference replays the float32 run's draws (its `jax.random` draws in float32 and casts).
- compared: the critic, flow-matching, distillation, Q and total actor losses of every update; the gradients at the
  compared updates (the reference's own `total_loss` differentiated at its update's key, mapped to our three
  networks); the flow, the one-step policy, the critics and the target critics. After the run: its
  sample_actions and compute_flow_actions against ours on the final float64 weights and the same noise.
- variants: the reference's get_config() (= ours: alpha 10, q_agg mean, no Q normalisation, LayerNorm in the
  critics only), and "min_normalized" (q_agg min, normalize_q_loss, LayerNorm in the actor networks too).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, stub_module, to_numpy, variant_report
from benchmarks.parity.rebrac import Float32Draws
from dql.agents.fql import FQLAgent, FQLHyperparams, FQLNoise

REFERENCES = {"paper": {"repo": "seohongpark/fql", "file": "agents/fql.py"}}
VARIANTS = {"default": {}, "min_normalized": {"q_agg": "min", "normalize_q_loss": True, "actor_layer_norm": True}}
DIFFERENCES = {"paper": [
    {"where": "agents/fql.py, create(): one optax.adam over ModuleDict's parameters; update(): apply_loss_fn of "
              "critic_loss + actor_loss",
     "what": "the reference trains every network with one Adam on the summed losses (the target critic included, "
             "with zero gradient); ours keeps an Adam per network on its own loss. Each loss reaches only its own "
             "network's parameters and Adam acts per parameter with one step count, so the updates are the same.",
     "fate": "explained: the same update (float64 distances at rounding level)."},
    {"where": "envs/env_utils.py:139, make_env_and_datasets(action_clip_eps=1e-5)",
     "what": "the reference clips the dataset's actions to [-1 + 1e-5, 1 - 1e-5] once when loading it; ours clips "
             "each batch's (unit-box) actions inside the update (action_clip_eps).",
     "fate": "explained: the same numbers; the comparison clips the reference's batches as its loader would."},
    {"where": "agents/fql.py, compute_flow_actions: actions + vels / flow_steps",
     "what": "the reference's Euler step divides the velocity by flow_steps; ours (dql/diffusion/flow.py "
             "euler_sample) multiplies it by dt = 1 / flow_steps. In exact arithmetic the same; XLA on CPU compiles "
             "the division by a constant into a multiplication by its reciprocal, so here both give the same bits "
             "(flow samples 0 apart in float64); elsewhere they could differ in the last bit.",
     "fate": "explained: no difference in the math, none measured."},
]}
LOSSES = {"critic_loss": "critic/critic_loss", "actor_loss": "actor/actor_loss", "bc_loss": "actor/bc_flow_loss",
          "distill_loss": "actor/distill_loss", "q_loss": "actor/q_loss"}  # ours: theirs
GROUPS = {"flow": "modules_actor_bc_flow", "actor": "modules_actor_onestep_flow", "critic": "modules_critic",
          "critic_target": "modules_target_critic"}  # ours: theirs


def load_reference(repo: str):
    """The reference's agents/fql.py (with its utils/ on the path; distrax, needed only by its Gaussian actor, is
    stubbed); its jax.random draws go through Float32Draws."""
    ref = load_file(repo, REFERENCES["paper"]["file"], "fql_reference", {"distrax": stub_module("distrax")},
                    path=("",))
    ref.jax = Float32Draws()
    return ref


def to_ours(params: dict, group: str):
    """One of the reference's modules as our network's parameters (only the top-level names differ)."""
    module = params[GROUPS[group]]
    if group.startswith("critic"):
        return {"params": {"VmapFQLMLP_0": module["value_net"]}}
    return {"params": {"FQLMLP_0": module["mlp"]}}


def reference_config(ref, config):
    out = ref.get_config()
    out.update(lr=config.lr, batch_size=config.batch_size, actor_hidden_dims=tuple(config.hidden_dims),
               value_hidden_dims=tuple(config.hidden_dims), layer_norm=config.layer_norm,
               actor_layer_norm=config.actor_layer_norm, discount=config.discount, tau=config.tau,
               q_agg=config.q_agg, alpha=config.alpha, flow_steps=config.flow_steps,
               normalize_q_loss=config.normalize_q_loss)
    return out


def reference_batch(settings: Settings, indices, k: int, dtype, clip_eps: float) -> dict:
    """A minibatch as the reference's main() samples it: masks for dones, actions clipped as its loader clips."""
    b = settings.minibatch(indices, k, dtype)
    return {"observations": b["observations"], "actions": np.clip(b["actions"], -1 + clip_eps, 1 - clip_eps),
            "rewards": b["rewards"], "next_observations": b["next_observations"], "masks": 1.0 - b["dones"]}


def reference_draws(agent_rng, batch_size: int, action_dim: int) -> dict:
    """The float32 draws of the reference's update from its agent key, traced through update -> total_loss ->
    critic_loss (-> sample_actions) and actor_loss."""
    normal = lambda key: jax.random.normal(key, (batch_size, action_dim), jnp.float32)  # noqa: E731
    _, rng = jax.random.split(agent_rng)  # update: new_rng, rng
    _, actor_rng, critic_rng = jax.random.split(rng, 3)  # total_loss
    _, sample_rng = jax.random.split(critic_rng)  # critic_loss
    action_seed, _ = jax.random.split(sample_rng)  # sample_actions
    actor_rest, x_rng, t_rng = jax.random.split(actor_rng, 3)  # actor_loss
    _, noise_rng = jax.random.split(actor_rest)
    return {"next_actions": normal(action_seed), "flow": normal(x_rng),
            "times": jax.random.uniform(t_rng, (batch_size, 1), jnp.float32), "policy": normal(noise_rng)}


def reference_gradients(agent, batch: dict) -> dict:
    """Gradients of the reference's total loss at its update's key, per network in our layout."""
    _, rng = jax.random.split(agent.rng)
    grads = jax.grad(lambda p: agent.total_loss(batch, p, rng=rng)[0])(agent.network.params)
    return {group: to_ours(grads, group) for group in ("critic", "flow", "actor")}


def run_reference(ref, config, settings: Settings, indices, exact: Run | None = None) -> Run:
    """The reference on the fixed minibatches with its own keys; with the float32 run `exact`, the same in float64
    (call inside jax.enable_x64): its initial agent cast, its draws replayed (Float32Draws)."""
    act_dim = settings.data["actions"].shape[1]
    if exact is None:
        agent = ref.FQLAgent.create(settings.seed, settings.data["observations"][:1],
                                    settings.data["actions"][:1], reference_config(ref, config))
        dtype = np.float32
    else:
        agent, dtype = as_float64(exact.extra["initial"]), np.float64
    run = Run(losses={name: [] for name in LOSSES}, extra={"initial": agent, "draws": []})
    draws = jax.jit(reference_draws, static_argnums=(1, 2))
    gradients = jax.jit(reference_gradients)
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in
                 reference_batch(settings, indices, k, dtype, config.action_clip_eps).items()}
        run.extra["draws"].append(jax.tree_util.tree_map(np.asarray, draws(agent.rng, config.batch_size, act_dim)))
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = to_numpy(gradients(agent, batch))
        agent, info = agent.update(batch)
        run.add_losses({ours: info[theirs] for ours, theirs in LOSSES.items()})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = to_numpy({group: to_ours(agent.network.params, group) for group in GROUPS})
    run.seconds = time.perf_counter() - start
    run.extra["final"] = agent
    return run


def our_gradients(agent: FQLAgent, batch: dict, noise: FQLNoise) -> dict:
    """The gradients our update computes for the critics, the flow and the one-step policy."""
    bound = 1.0 - agent.hp.action_clip_eps
    observations = batch["observations"]
    actions = jnp.clip(batch["actions"] / jnp.asarray(agent.hp.max_action), -bound, bound)
    backup = agent.critic_targets(batch["next_observations"], batch["rewards"], batch["dones"], noise.next_actions)
    return {"critic": jax.grad(lambda p: agent.critic_loss(p, observations, actions, backup)[0])(agent.critic.params),
            "flow": jax.grad(agent.flow_loss)(agent.flow.params, observations, actions, noise.times, noise.flow),
            "actor": jax.grad(lambda p: agent.actor_loss(p, observations, noise.policy)[0])(agent.actor.params)}


def our_agent(initial: FQLAgent, ref_agent) -> FQLAgent:
    """Ours with the reference's initial weights (its Adam moments start at zero, as ours do)."""
    params = ref_agent.network.params
    return initial.replace(flow=initial.flow.replace(params=to_ours(params, "flow")),
                           actor=initial.actor.replace(params=to_ours(params, "actor")),
                           critic=initial.critic.replace(params=to_ours(params, "critic")),
                           critic_target_params=to_ours(params, "critic_target"))


def run_ours(agent: FQLAgent, ref_run: Run, settings: Settings, indices, dtype) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    update = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
    gradients = jax.jit(our_gradients)
    run = Run(losses={name: [] for name in LOSSES})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        noise = FQLNoise(**{key: jnp.asarray(value.astype(dtype)) for key, value in ref_run.extra["draws"][k].items()})
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = to_numpy(gradients(agent, batch, noise))
        agent, metrics = update(agent, batch, noise)
        run.add_losses({name: metrics[name] for name in LOSSES})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = to_numpy({"flow": agent.flow.params, "actor": agent.actor.params,
                                             "critic": agent.critic.params,
                                             "critic_target": agent.critic_target_params})
    run.seconds = time.perf_counter() - start
    run.extra["final"] = agent
    return run


def compare_actions(ref_agent, agent: FQLAgent, observations: np.ndarray, seed: int) -> dict:
    """The reference's sample_actions (one-step policy, clipped) and compute_flow_actions (Euler, clipped) against
    ours on the same states and noise, each side with its own final weights."""
    states = jnp.asarray(observations)
    key = jax.random.PRNGKey(seed)
    theirs_policy = ref_agent.sample_actions(states, seed=key)
    noise = jax.random.normal(jax.random.split(key)[0], (len(states), len(agent.hp.max_action)),
                              jnp.float32).astype(states.dtype)  # sample_actions' action_seed draw
    ours_policy = jnp.clip(agent.one_step_actions(agent.actor.params, states, noise), -1.0, 1.0)
    theirs_flow = ref_agent.compute_flow_actions(states, noises=noise)
    ours_flow = agent.flow_actions(agent.flow.params, states, noise)
    return {"states": len(observations),
            "one_step_policy_max_abs": float(jnp.max(jnp.abs(ours_policy - theirs_policy))),
            "flow_max_abs": float(jnp.max(jnp.abs(ours_flow - theirs_flow)))}


def compare_variant(ref, settings: Settings, variant: str) -> dict:
    config = config_for("fql", list(settings.overrides))  # --set=KEY=VALUE: any other setting of the config
    config.update(VARIANTS[variant])
    obs_dim, act_dim = settings.data["observations"].shape[1], settings.data["actions"].shape[1]
    indices = settings.minibatch_indices(config.batch_size)
    exact = run_reference(ref, config, settings, indices)
    initial = FQLAgent.create(jax.random.PRNGKey(settings.seed), obs_dim, act_dim,
                              FQLHyperparams.from_config(config, (1.0,) * act_dim))
    ours = run_ours(our_agent(initial, exact.extra["initial"]), exact, settings, indices, np.float32)
    with jax.enable_x64(True):
        float64 = run_reference(ref, config, settings, indices, exact=exact)
        if not all(np.array_equal(a[name], b[name]) for a, b in zip(exact.extra["draws"], float64.extra["draws"])
                   for name in a):
            raise RuntimeError("the float64 reference drew other numbers than the float32 run")
        ours64 = run_ours(as_float64(our_agent(initial, exact.extra["initial"])), exact, settings, indices, np.float64)
        actions = compare_actions(float64.extra["final"], ours64.extra["final"],
                                  settings.data["observations"][:256].astype(np.float64), settings.seed)
    settings_used = {key: config[key] for key in ("batch_size", "alpha", "lr", "q_agg", "normalize_q_loss",
                                                  "flow_steps", "layer_norm", "actor_layer_norm", "action_clip_eps")}
    return variant_report(variant, settings.compared_at, ours, exact, ours64, float64, settings=settings_used,
                          action_selection_float64=actions)


def compare(settings: Settings) -> dict:
    ref = load_reference(settings.repo)
    variants = settings.variants or tuple(VARIANTS)
    return {"variants": [compare_variant(ref, settings, variant) for variant in variants]}
