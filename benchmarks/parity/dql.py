"""Diffusion-QL against the paper's PyTorch code (Zhendong-Wang/Diffusion-Policies-for-Offline-RL,
`agents/ql_diffusion.py`): the `dql` case of `python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=dql --repo=/path/to/Diffusion-Policies-for-Offline-RL \
        [--dataset=gym:Hopper-v5/full-replay] [--obs_dim=17 --act_dim=6] [--set=eta=2.0]

- randomness: the reference draws from torch's and numpy's global generators inside `train()`; this case records
  every draw (diffusion steps and noise, the EMA actor's chains for the backup, the chains of the Q term, the
  Q-head order) by handing the reference's modules recording stand-ins for `torch` and `numpy`, and feeds the
  same numbers to `DQLAgent.update_with_noise`.
- compared: the critic loss, the actor's BC and Q losses of every update; the clipped gradients the optimisers
  applied (recorded when the reference's optimisers step); the four parameter groups (actor, EMA actor, critics,
  target critics).
- settings: the paper's sizes, gradient clip 4.0 (hopper-medium-replay's), the cosine schedule stepped every 100
  updates (so that it moves within the run) and the EMA actor from update 200 (so that it moves too).
- variants: the default backup and the max-Q backup.
- action selection: with the final reference weights loaded into ours, `sample_action` of the reference against
  `DQLAgent.action_candidates`: the same 50 candidates and the same choice probabilities softmax(min Q').
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import reference
from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, differences, variant_report
from dql.agents import common, diffusion_actor
from dql.agents.dql import DQLAgent, DQLHyperparams, DQLNoise
from dql.diffusion import DiffusionSchedule

REFERENCES = {"paper": {"repo": "Zhendong-Wang/Diffusion-Policies-for-Offline-RL",
                        "file": "agents/ql_diffusion.py"}}
VARIANTS = ("default", "max_q_backup")
GRAD_NORM = 4.0  # hopper-medium-replay's clip
LR_DECAY_EVERY = 100  # updates per step of the cosine schedule (the reference's train() call)
EMA_START = 200  # first update of the EMA actor (the paper's 1000 would leave it untouched)
ACTION_STATES = 8  # states whose action selection is compared
DIFFERENCES = {"paper": [
    {"where": "agents/ql_diffusion.py, the two clip_grad_norm_ calls",
     "what": "torch's clip_grad_norm_ scales by max_norm / (norm + 1e-6), optax.clip_by_global_norm by "
             "max_norm / norm (6.8e-8 relative on the critics' gradients in float64).",
     "fate": "fixed: common.clip_grad_norm_like_torch (make_optimizer(..., like_torch=True))."},
    {"where": "agents/ql_diffusion.py, torch.optim.Adam",
     "what": "torch takes Adam's bias corrections 1 - beta^t in Python floats; optax.adam computed 1 - 0.999^t in "
             "float32, 6.6e-6 off at the first step, so our float32 run drifted from the reference 100x faster "
             "than rounding does.",
     "fate": "fixed: common.scale_by_adam_like_torch."},
]}
RANDOM_CALLS = ("randn", "randn_like", "randint", "uniform", "multinomial")
LOSSES = ("critic_loss", "bc_loss", "ql_loss", "actor_loss")


class Recorder:
    """Stands in for a module (torch, numpy, numpy.random) and logs what its random functions return; with a
    `Replay`, they return its numbers instead of drawing."""

    def __init__(self, module, log: list, submodules: dict | None = None, replay: "Replay | None" = None):
        self._module, self._log, self._submodules, self._replay = module, log, submodules or {}, replay

    def __getattr__(self, name):
        if name in self._submodules:
            return self._submodules[name]
        value = getattr(self._module, name)
        if name not in RANDOM_CALLS:
            return value

        def recorded(*args, **kwargs):
            out = self._replay.next(name, args) if self._replay else value(*args, **kwargs)
            inputs = args[0].detach().numpy().copy() if name == "multinomial" else None
            self._log.append((name, np.array(out.detach().numpy() if hasattr(out, "detach") else out), inputs))
            return out

        return recorded


class Replay:
    """Another run's draws, in order, returned in the dtype the caller works in (float64 in the exact run)."""

    def __init__(self, torch, draws: list[list]):
        self.torch = torch
        self.queue = [(name, value) for update in draws for name, value, _ in update]
        self.position = 0

    def next(self, name: str, args):
        expected, value = self.queue[self.position]
        if name != expected:
            raise RuntimeError(f"replay: the run asked for {name} where the recorded run drew {expected}")
        self.position += 1
        if name == "uniform":
            return float(value)
        tensor = self.torch.from_numpy(np.array(value))
        if name == "randint":
            return tensor
        return tensor.to(args[0].dtype if name == "randn_like" else self.torch.get_default_dtype())


def route_draws(torch, ql_diffusion, log: list, replay: Replay | None = None) -> None:
    """Send the reference's random draws through recorders (replaying `replay` if given)."""
    import sys

    sys.modules["agents.diffusion"].torch = Recorder(torch, log, replay=replay)
    ql_diffusion.torch = Recorder(torch, log, replay=replay)
    ql_diffusion.np = Recorder(np, log, {"random": Recorder(np.random, log, replay=replay)})


def chain_noise(draws: list, steps: int) -> np.ndarray:
    """One reverse chain's draws in the reference's order (x_T, then steps T-1 .. 0) -> ours [B, T + 1, A]
    (x_T, then the draw of step t at index t + 1)."""
    initial, per_step = draws[0], draws[1:][::-1]
    assert len(per_step) == steps
    return np.stack([initial, *per_step], axis=1)


def noise_of_update(draws: list, steps: int, batch: int, n_backup: int) -> DQLNoise:
    """The reference's draws of one train() iteration as our DQLNoise."""
    names = [name for name, _, _ in draws]
    expected = ["randn"] + ["randn_like"] * steps + ["randint", "randn_like", "randn"] + ["randn_like"] * steps
    if names != expected + ["uniform"]:
        raise RuntimeError(f"the reference drew {names}, expected {expected + ['uniform']}: its train() changed")
    values = [value for _, value, _ in draws]
    next_chain = chain_noise(values[:steps + 1], steps)  # [B n, T + 1, A], states repeated n times each
    policy = chain_noise(values[steps + 3:2 * steps + 4], steps)
    return DQLNoise(next_actions=jnp.asarray(next_chain.reshape(batch, n_backup, *next_chain.shape[1:])),
                    bc_steps=jnp.asarray(values[steps + 1].astype(np.int32)), bc_noise=jnp.asarray(values[steps + 2]),
                    policy=jnp.asarray(policy), q1_first=jnp.asarray(float(values[-1]) > 0.5))


class Minibatches:
    """The reference's replay-buffer interface, serving minibatches fixed in advance; counts the updates."""

    def __init__(self, torch, data: dict, indices: np.ndarray, on_update):
        self.torch, self.data, self.indices, self.on_update = torch, data, indices, on_update
        self.count = 0

    def batch(self, k: int) -> dict:
        return {key: value[self.indices[k]] for key, value in self.data.items()}

    def sample(self, batch_size):
        self.on_update(self.count)  # update `count` starts: the draws so far belong to update count - 1
        b = self.batch(self.count)
        self.count += 1
        t = self.torch.from_numpy
        return (t(b["observations"]), t(b["actions"]), t(b["next_observations"]), t(b["rewards"])[:, None],
                t(1.0 - b["dones"])[:, None])


class GradientTap:
    """Wraps a torch optimizer: records the (clipped) gradients it applies at chosen updates."""

    def __init__(self, optimizer, convert, when, counter):
        self.optimizer, self.convert, self.when, self.counter = optimizer, convert, when, counter
        self.recorded: dict[int, dict] = {}

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self, *args, **kwargs):
        update = self.counter()
        if update in self.when:
            self.recorded[update] = self.convert()
        return self.optimizer.step(*args, **kwargs)


def _grads_of(module_to_params, module):
    """Our-layout gradients of a torch module: its parameters' .grad through the same converter as the weights."""
    import copy

    shadow = copy.deepcopy(module)
    for shadow_param, param in zip(shadow.parameters(), module.parameters()):
        shadow_param.data = param.grad.detach().clone()
    return module_to_params(shadow)


def our_gradients(agent: DQLAgent, batch: dict, noise: DQLNoise):
    """The clipped gradients our update applies (critic first, then the actor against the updated critic)."""
    clip = common.clip_grad_norm_like_torch(agent.hp.grad_norm) if agent.hp.grad_norm > 0 else optax.identity()
    backup = agent.backup(batch, noise.next_actions)
    critic_grads = jax.grad(lambda p: agent.critic_loss(p, batch, backup)[0])(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=critic_grads)
    actor_grads = jax.grad(lambda p: agent.actor_loss(p, critic, batch, noise)[0])(agent.actor.params)
    clipped = [clip.update(g, clip.init(g))[0] for g in (critic_grads, actor_grads)]
    return {"critic": clipped[0], "actor": clipped[1]}


def run_reference(torch, ql_diffusion, log, config, settings: Settings, indices: np.ndarray,
                  exact: Run | None = None) -> Run:
    """Train the reference on the fixed minibatches; snapshots, applied gradients, losses and draws per update.

    Given the float32 run `exact`, the same run again in float64: its initial weights and its recorded draws,
    every module and minibatch cast to float64. Its distance from the float32 run is how far float32 rounding
    alone takes the reference, the tolerance any float32 implementation has to be judged by.
    """
    data = settings.data
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    ref = reference.reference_agent(ql_diffusion, config, obs_dim, act_dim)
    dtype = np.float32
    if exact is not None:
        for module in (ref.actor, ref.ema_model, ref.critic, ref.critic_target):
            module.double()  # in place: the optimizers keep the same parameters
        torch.set_default_dtype(torch.float64)
        route_draws(torch, ql_diffusion, log, Replay(torch, exact.extra["draws"]))
        dtype = np.float64
    checkpoints = settings.compared_at
    run = Run(losses={key: [] for key in LOSSES},
              extra={"draws": [], "agent": ref, "initial": reference.parameter_groups(ref)})

    def on_update(count):
        if count > 0:
            run.extra["draws"].append(list(log))
        log.clear()
        if count in checkpoints:
            run.snapshots[count] = reference.parameter_groups(ref)

    sampler = Minibatches(torch, {key: value.astype(dtype) for key, value in data.items()}, indices, on_update)
    counter = lambda: sampler.count  # noqa: E731  (the update in progress, 1-based)
    ref.critic_optimizer = GradientTap(ref.critic_optimizer, lambda: _grads_of(reference.critic_params, ref.critic),
                                       set(checkpoints), counter)
    ref.actor_optimizer = GradientTap(ref.actor_optimizer, lambda: _grads_of(reference.noise_net_params, ref.actor),
                                      set(checkpoints), counter)
    start, done = time.perf_counter(), 0
    while done < settings.updates:  # one train() call per step of the schedule, as the reference's main.py does
        chunk = min(int(config.lr_decay_every), settings.updates - done)
        metrics = ref.train(sampler, chunk, batch_size=config.batch_size)
        for key in LOSSES:
            run.losses[key].extend(metrics[key])
        done += chunk
    on_update(sampler.count)
    if exact is not None:
        torch.set_default_dtype(torch.float32)
        route_draws(torch, ql_diffusion, log)
    run.seconds = time.perf_counter() - start
    run.gradients = {k: {"critic": ref.critic_optimizer.recorded[k], "actor": ref.actor_optimizer.recorded[k]}
                     for k in checkpoints}
    run.extra.update(sampler=sampler, lr=float(ref.actor_optimizer.param_groups[0]["lr"]))
    return run


@contextlib.contextmanager
def reference_constants(diffusion):
    """Our agent computing with the reference's schedule constants: it computes them in float32 (cumprod, sqrt,
    ...), we in float64 rounded once, so they differ by ~1e-7 relative, which x_0 = c1 x_t - c2 eps amplifies."""
    values = {field.name: getattr(diffusion, field.name).double().numpy() for field in
              dataclasses.fields(DiffusionSchedule) if hasattr(diffusion, field.name)}
    values["alphas"] = 1.0 - values["betas"]
    original = diffusion_actor.schedule
    diffusion_actor.schedule = lambda hp: DiffusionSchedule(**values)
    try:
        yield
    finally:
        diffusion_actor.schedule = original


def run_ours(agent: DQLAgent, ref_run: Run, config, settings: Settings) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    n_backup = config.num_q_backup_samples if config.max_q_backup else 1
    checkpoints = settings.compared_at
    # Fresh functions, so that a run under `reference_constants` traces anew instead of reusing a cached trace.
    update = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
    gradients = jax.jit(lambda agent, batch, noise: our_gradients(agent, batch, noise))
    run = Run(losses={key: [] for key in LOSSES})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in ref_run.extra["sampler"].batch(k).items()}
        noise = noise_of_update(ref_run.extra["draws"][k], config.diffusion_steps, config.batch_size, n_backup)
        if k + 1 in checkpoints:
            run.gradients[k + 1] = gradients(agent, batch, noise)
        agent, metrics = update(agent, batch, noise)
        run.add_losses({key: metrics[key] for key in LOSSES})
        if k + 1 in checkpoints:
            run.snapshots[k + 1] = {"actor": agent.actor.params, "actor_ema": agent.actor_ema_params,
                                    "critic": agent.critic.params, "critic_target": agent.critic_target_params}
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = agent
    return run


def compare_variant(torch, ql_diffusion, log, settings: Settings, variant: str) -> dict:
    config = config_for("dql", list(settings.overrides))  # --set=KEY=VALUE: any other setting of the dql config
    config.update(max_q_backup=variant == "max_q_backup", grad_norm=GRAD_NORM, lr_decay=True,
                  lr_decay_every=LR_DECAY_EVERY, steps_per_epoch=LR_DECAY_EVERY, ema_start=EMA_START,
                  steps=2 * settings.updates)  # the schedule is halfway down at the last update compared
    data = settings.data
    act_dim = data["actions"].shape[1]
    indices = settings.minibatch_indices(config.batch_size)
    exact = run_reference(torch, ql_diffusion, log, config, settings, indices)
    hp = DQLHyperparams.from_config(config, (1.0,) * act_dim)
    initial = DQLAgent.create(jax.random.PRNGKey(0), data["observations"].shape[1], act_dim, hp)
    ours = run_ours(reference.load_into_agent(initial, exact.extra["initial"]), exact, config, settings)
    with reference_constants(exact.extra["agent"].actor):
        ours_constants = run_ours(reference.load_into_agent(initial, exact.extra["initial"]), exact, config, settings)
    float64 = run_reference(torch, ql_diffusion, log, config, settings, indices, exact=exact)
    # Ours in float64 too, on the float64 run's minibatches and draws and with its schedule constants (computed in
    # float32 and cast, as the reference's buffers are before .double()).
    with jax.enable_x64(True), reference_constants(float64.extra["agent"].actor):
        ours_float64 = run_ours(as_float64(reference.load_into_agent(initial, float64.extra["initial"])), float64,
                                config, settings)
    return variant_report(
        variant, settings.compared_at, ours, exact, ours_float64, float64,
        grad_norm=config.grad_norm, ema_start=config.ema_start, lr_at_last_update=exact.extra["lr"],
        ours_with_reference_constants_vs_reference_float64=differences(ours_constants, float64, settings.compared_at),
        action_selection=compare_action_selection(torch, exact.extra["agent"], ours.extra["agent"], settings, log))


def compare_action_selection(torch, ref, agent: DQLAgent, settings: Settings, log: list) -> dict:
    """The reference's sample_action against ours on the same weights, candidates noise and states."""
    agent = reference.load_into_agent(agent, reference.parameter_groups(ref))
    steps = agent.hp.diffusion_steps
    candidates_diff, probability_diff, same_choice = 0.0, 0.0, 0
    for state in settings.data["observations"][:ACTION_STATES]:
        log.clear()
        chosen = ref.sample_action(state)
        draws = [value for name, value, _ in log if name != "multinomial"]
        (_, index, probabilities), = [entry for entry in log if entry[0] == "multinomial"]
        noise = jnp.asarray(chain_noise(draws, steps))
        candidates, q = agent.action_candidates(jnp.asarray(state[None]), noise)
        ours_probabilities = np.asarray(jax.nn.softmax(q[0]))
        candidates_diff = max(candidates_diff, float(np.max(np.abs(np.asarray(candidates[0][int(index[0])]) - chosen))))
        probability_diff = max(probability_diff, float(np.max(np.abs(ours_probabilities - probabilities))))
        same_choice += int(np.argmax(ours_probabilities) == np.argmax(probabilities))
    return {"states": ACTION_STATES, "chosen_action_max_abs": candidates_diff,
            "probabilities_max_abs": probability_diff, "same_most_likely_candidate": same_choice}


def compare(settings: Settings) -> dict:
    """Every variant (default backup, max-Q backup) of the comparison."""
    torch, ql_diffusion = reference.load_reference(settings.repo)
    log: list = []
    route_draws(torch, ql_diffusion, log)
    variants = settings.variants or VARIANTS
    return {"variants": [compare_variant(torch, ql_diffusion, log, settings, variant) for variant in variants]}
