"""ReBRAC against the authors' JAX code as CORL keeps it (tinkoff-ai/CORL, `algorithms/offline/rebrac.py`): the
`rebrac` case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=rebrac --repo=/path/to/CORL [--dataset=...] [--set=KEY=VALUE]

- driving the reference: its module-level update functions (`update_td3` on the updates where the actor moves,
  `update_td3_no_targets` on the others, chosen as its loop's `delayed_updates` does), jitted here, on our fixed
  minibatches (its buffer's sample_batch is bypassed; the batch key its loop splits off is split off and unused),
  with its own PRNG key chain from PRNGKey(seed) and its own initialisation (`DetActor`, `EnsembleCritic`).
- randomness: the only draw that reaches the update is the target-policy smoothing noise, normal(actions_key, [B, A])
  in `update_critic`; this case derives it from the same key and feeds it to `ReBRACAgent.update_with_noise`. The
  float64 reference replays the float32 run's draws: its `jax.random` draws in float32 and casts (`Float32Draws`).
- compared: the critic loss, the actor loss and its BC term of every update; the critics' and the actor's gradients
  (the applied ones, recorded by train states that keep the gradients they apply; on updates where the actor does
  not move, the gradient the reference's own `update_actor` computes there, its result discarded); the actor, the
  critics and both targets.
- variants: CORL's Config defaults (LayerNorm in the critics only, normalize_q, beta1 = beta2 = 1), and "actor_ln"
  (LayerNorm in the actor too, normalize_q off, hopper-medium-replay's beta1 0.05, beta2 0.5).
"""

from __future__ import annotations

import functools
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, stub_module, to_numpy, variant_report
from dql.agents.rebrac import ReBRACAgent, ReBRACHyperparams, ReBRACNoise

REFERENCES = {"corl": {"repo": "tinkoff-ai/CORL", "file": "algorithms/offline/rebrac.py"}}
VARIANTS = {"default": {}, "actor_ln": {"actor_ln": True, "normalize_q": False, "actor_bc_coef": 0.05,
                                         "critic_bc_coef": 0.5}}
DIFFERENCES = {"corl": [
    {"where": "algorithms/offline/rebrac.py, main(): update_carry['delayed_updates'] and td3_loop_update_step",
     "what": "CORL decides whether the actor moves from the update's index within an epoch (arange("
             "num_updates_on_epoch) % policy_freq == 0, restarting each epoch); ours from the global step "
             "(step % policy_freq == 0). They agree whenever num_updates_on_epoch is a multiple of policy_freq, as in "
             "every CORL config (1000 updates an epoch, policy_freq 2).",
     "fate": "explained: the same schedule for CORL's settings; the comparison runs 1000 updates of one epoch."},
    {"where": "algorithms/offline/rebrac.py, ReplayBuffer.create_from_d4rl / normalize_reward",
     "what": "CORL multiplies AntMaze rewards by 100 in the buffer; ours by reward_scale inside the update (the "
             "same product); the comparison keeps reward_scale 1.",
     "fate": "explained: the same math, applied at a different place."},
]}
LOSSES = {"critic_loss": "critic_loss", "actor_loss": "actor_loss", "bc_loss": "bc_mse_policy"}  # ours: theirs
METRICS = ("critic_loss", "q_min", "actor_loss", "bc_mse_policy", "bc_mse_random", "action_mse")


class Float32Draws:
    """Stands in for the `jax` module inside a reference: its random.normal and random.uniform draw in float32 from
    the reference's own keys and cast to the default float type. In a float32 run they draw exactly what they
    would; in the float64 run (x64 on) they return the float32 run's numbers in float64, instead of fresh 64-bit
    draws."""

    def __init__(self, module=jax):
        self._module = module
        self.random = types.SimpleNamespace(**{name: getattr(jax.random, name) for name in dir(jax.random)
                                               if not name.startswith("_")})
        self.random.normal = self._cast(jax.random.normal)
        self.random.uniform = self._cast(jax.random.uniform)

    @staticmethod
    def _cast(draw):
        def drawn(key, shape=(), dtype=None, *args, **kwargs):
            return draw(key, shape, jnp.float32, *args, **kwargs).astype(dtype or jnp.result_type(float))

        return drawn

    def __getattr__(self, name):
        return getattr(self._module, name)


def load_reference(repo: str):
    """CORL's rebrac.py with stand-ins for what only its main() needs (wandb, pyrallis, d4rl, gym, tqdm)."""
    stubs = {name: stub_module(name) for name in ("wandb", "pyrallis", "d4rl", "gym", "tqdm", "tqdm.auto")}
    ref = load_file(repo, REFERENCES["corl"]["file"], "corl_rebrac", stubs)
    ref.jax = Float32Draws()

    def tapped(base):  # a train state that keeps the gradients it applied last
        class Tapped(base):
            applied: Any = None

            def apply_gradients(self, *, grads, **kwargs):
                return super().apply_gradients(grads=grads, applied=grads, **kwargs)

        return Tapped

    ref.TappedActorState, ref.TappedCriticState = tapped(ref.ActorTrainState), tapped(ref.CriticTrainState)
    return ref


# The two implementations' trees differ only in the name of the module holding the layers.
def actor_to_ours(params):
    return {"params": {"ReBRACMLP_0": params["params"]}}


def critic_to_ours(params):
    return {"params": {"VmapReBRACMLP_0": params["params"]["VmapCritic_0"]}}


def reference_states(ref, config, observation: np.ndarray, act_dim: int, seed: int):
    """The reference's key, actor and critics as its main() makes them (the targets: a second init, same key)."""
    import optax

    key = jax.random.PRNGKey(seed)
    key, actor_key, critic_key = jax.random.split(key, 3)
    width, depth = config.hidden_dims[0], len(config.hidden_dims)
    if any(w != width for w in config.hidden_dims):
        raise ValueError(f"CORL's networks have equal hidden widths; got hidden_dims={config.hidden_dims}")
    state, action = jnp.asarray(observation[None]), jnp.zeros((1, act_dim), jnp.float32)
    actor_module = ref.DetActor(action_dim=act_dim, hidden_dim=width, layernorm=config.actor_ln, n_hiddens=depth)
    critic_module = ref.EnsembleCritic(hidden_dim=width, num_critics=2, layernorm=config.critic_ln, n_hiddens=depth)
    actor_params = actor_module.init(actor_key, state)
    critic_params = critic_module.init(critic_key, state, action)
    actor = ref.TappedActorState.create(
        apply_fn=actor_module.apply, params=actor_params, target_params=actor_module.init(actor_key, state),
        tx=optax.adam(learning_rate=config.lr), applied=jax.tree_util.tree_map(jnp.zeros_like, actor_params))
    critic = ref.TappedCriticState.create(
        apply_fn=critic_module.apply, params=critic_params, target_params=critic_module.init(critic_key, state, action),
        tx=optax.adam(learning_rate=config.critic_lr), applied=jax.tree_util.tree_map(jnp.zeros_like, critic_params))
    return key, actor, critic


def reference_updates(ref, config):
    """The reference's update functions with its main()'s partials: (full update, critic-only update, actor only)."""
    common = dict(gamma=config.discount, actor_bc_coef=config.actor_bc_coef, critic_bc_coef=config.critic_bc_coef,
                  tau=config.tau, policy_noise=config.policy_noise, noise_clip=config.noise_clip)
    full = jax.jit(functools.partial(ref.update_td3, normalize_q=config.normalize_q, **common))
    critic_only = jax.jit(functools.partial(ref.update_td3_no_targets, **common))
    actor_only = jax.jit(functools.partial(ref.update_actor, beta=config.actor_bc_coef, tau=config.tau,
                                           normalize_q=config.normalize_q))
    return full, critic_only, actor_only


def reference_batch(settings: Settings, indices, k: int, dtype) -> dict:
    b = settings.minibatch(indices, k, dtype)
    return {"states": b["observations"], "actions": b["actions"], "rewards": b["rewards"],
            "next_states": b["next_observations"], "next_actions": b["next_actions"], "dones": b["dones"]}


def run_reference(ref, config, settings: Settings, indices, exact: Run | None = None) -> Run:
    """The reference on the fixed minibatches with its own keys; with the float32 run `exact`, the same in float64
    (call inside jax.enable_x64): its initial states cast, its draws replayed (Float32Draws)."""
    act_dim = settings.data["actions"].shape[1]
    if exact is None:
        key, actor, critic = reference_states(ref, config, settings.data["observations"][0], act_dim, settings.seed)
        dtype = np.float32
    else:
        key, actor, critic = as_float64(exact.extra["initial"])
        dtype = np.float64
    run = Run(losses={name: [] for name in LOSSES}, extra={"initial": (key, actor, critic), "noise": []})
    full, critic_only, actor_only = reference_updates(ref, config)
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = reference_batch(settings, indices, k, dtype)
        key, _ = jax.random.split(key)  # its loop's batch key: our minibatches stand in for its sample_batch
        run.extra["noise"].append(np.asarray(jax.random.normal(jax.random.split(key)[1], (config.batch_size, act_dim),
                                                               jnp.float32)))  # update_critic's actions_key draw
        metrics = ref.Metrics.create(METRICS)
        if k % config.policy_freq == 0:
            key, actor, critic, metrics = full(key=key, actor=actor, critic=critic, batch=batch, metrics=metrics)
            actor_grads = actor.applied
        else:  # the actor stays; its loss and gradient here are what update_actor would compute, then dropped
            key, actor, critic, metrics = critic_only(key=key, actor=actor, critic=critic, batch=batch,
                                                      metrics=metrics)
            _, probe, _, metrics = actor_only(key, actor, critic, batch, metrics=metrics)
            actor_grads = probe.applied
        run.add_losses({ours: metrics.accumulators[theirs][0][0] for ours, theirs in LOSSES.items()})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = to_numpy({
                "actor": actor_to_ours(actor.params), "actor_target": actor_to_ours(actor.target_params),
                "critic": critic_to_ours(critic.params), "critic_target": critic_to_ours(critic.target_params)})
            run.gradients[k + 1] = to_numpy({"critic": critic_to_ours(critic.applied),
                                             "actor": actor_to_ours(actor_grads)})
    run.seconds = time.perf_counter() - start
    run.extra["final"] = actor
    return run


def our_gradients(agent: ReBRACAgent, batch: dict, noise: ReBRACNoise) -> dict:
    """The gradients our update computes: the critics', then the actor's against the updated critics."""
    max_action = jnp.asarray(agent.hp.max_action)
    observations, unit_actions = agent._normalize(batch["observations"]), batch["actions"] / max_action
    backup, _ = agent.critic_targets(agent._normalize(batch["next_observations"]), batch["next_actions"] / max_action,
                                     agent.hp.reward_scale * batch["rewards"], batch["dones"], noise.target_policy)
    critic_grads = jax.grad(lambda p: agent.critic_loss(p, observations, unit_actions, backup)[0])(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=critic_grads)
    actor_grads = jax.grad(lambda p: agent.actor_loss(p, critic.params, observations, unit_actions)[0])(
        agent.actor.params)
    return {"critic": critic_grads, "actor": actor_grads}


def our_agent(initial: ReBRACAgent, ref_initial) -> ReBRACAgent:
    """Ours with the reference's initial weights (its optimiser states start at zero, as ours do)."""
    _, actor, critic = ref_initial
    return initial.replace(actor=initial.actor.replace(params=actor_to_ours(actor.params)),
                           actor_target_params=actor_to_ours(actor.target_params),
                           critic=initial.critic.replace(params=critic_to_ours(critic.params)),
                           critic_target_params=critic_to_ours(critic.target_params))


def run_ours(agent: ReBRACAgent, ref_run: Run, settings: Settings, indices, dtype) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    update = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
    gradients = jax.jit(our_gradients)
    run = Run(losses={name: [] for name in LOSSES})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        noise = ReBRACNoise(target_policy=jnp.asarray(ref_run.extra["noise"][k].astype(dtype)))
        if k + 1 in settings.compared_at:
            run.gradients[k + 1] = to_numpy(gradients(agent, batch, noise))
        agent, metrics = update(agent, batch, noise)
        run.add_losses({name: metrics[name] for name in LOSSES})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = to_numpy({"actor": agent.actor.params, "actor_target": agent.actor_target_params,
                                             "critic": agent.critic.params,
                                             "critic_target": agent.critic_target_params})
    run.seconds = time.perf_counter() - start
    run.extra["final"] = agent
    return run


def compare_actions(ref_actor, agent: ReBRACAgent, observations: np.ndarray) -> dict:
    """The reference's evaluation action (actor.apply_fn on the state) against ours, each on its own final weights."""
    theirs = np.asarray(ref_actor.apply_fn(ref_actor.params, jnp.asarray(observations)))
    ours = np.asarray(agent.sample_actions(jnp.asarray(observations), jax.random.PRNGKey(0)))
    return {"states": len(observations), "max_abs": float(np.max(np.abs(ours - theirs)))}


def compare_variant(ref, settings: Settings, variant: str) -> dict:
    config = config_for("rebrac", list(settings.overrides))  # --set=KEY=VALUE: any other setting of the config
    config.update(VARIANTS[variant])
    obs_dim, act_dim = settings.data["observations"].shape[1], settings.data["actions"].shape[1]
    indices = settings.minibatch_indices(config.batch_size)
    exact = run_reference(ref, config, settings, indices)
    initial = ReBRACAgent.create(jax.random.PRNGKey(settings.seed), obs_dim, act_dim,
                                 ReBRACHyperparams.from_config(config, (1.0,) * act_dim))
    ours = run_ours(our_agent(initial, exact.extra["initial"]), exact, settings, indices, np.float32)
    with jax.enable_x64(True):
        float64 = run_reference(ref, config, settings, indices, exact=exact)
        if not all(np.array_equal(a, b) for a, b in zip(exact.extra["noise"], float64.extra["noise"])):
            raise RuntimeError("the float64 reference drew other noise than the float32 run")
        ours64 = run_ours(as_float64(our_agent(initial, exact.extra["initial"])), exact, settings, indices, np.float64)
        states = settings.data["observations"][:256].astype(np.float64)
        actions = compare_actions(float64.extra["final"], ours64.extra["final"], states)
    settings_used = {key: config[key] for key in ("batch_size", "actor_bc_coef", "critic_bc_coef", "lr", "critic_lr",
                                                  "policy_freq", "normalize_q", "actor_ln", "critic_ln")}
    return variant_report(variant, settings.compared_at, ours, exact, ours64, float64, settings=settings_used,
                          action_selection_float64=actions)


def compare(settings: Settings) -> dict:
    ref = load_reference(settings.repo)
    variants = settings.variants or tuple(VARIANTS)
    return {"variants": [compare_variant(ref, settings, variant) for variant in variants]}
