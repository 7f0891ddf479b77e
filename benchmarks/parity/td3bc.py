"""TD3+BC against the authors' PyTorch code (sfujim/TD3_BC, `TD3_BC.py`): the `td3bc` case of
`python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=td3bc --repo=/path/to/TD3_BC [--variants=default,optax_adam]

- states: the reference's main.py standardises the replay buffer's states once (utils.ReplayBuffer.normalize_states,
  the dataset's mean and std + 1e-3) and trains on those; ours gets the raw states and the same (mean, std) as
  `observation_stats`, the trainer's, and standardises inside the update. Here the reference samples already
  standardised minibatches, as its buffer serves them.
- randomness: the one draw of an update, the target policy's smoothing noise (`torch.randn_like`), is recorded
  through a stand-in for the module's `torch` and fed to `TD3BCAgent.update_with_noise`; the float64 reference
  replays the float32 run's draws.
- compared: the critic loss of every update and the actor loss of every update that moves the actor (the policy
  delay: even updates), both recorded where the reference calls backward(); the gradients each optimiser applied;
  actor, target actor, critic and target critic; with the final weights, the reference's select_action against ours.
- variants: `default`, our agent as it is (torch's Adam: common.make_optimizer(..., like_torch=True)); and
  `optax_adam`, ours with optax.adam instead, to measure what following torch's Adam buys.
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import config_for
from benchmarks.parity.common import Run, Settings, as_float64, load_file, require_torch, variant_report
from dql.agents import common
from dql.agents.td3bc import TD3BCAgent, TD3BCHyperparams, TD3BCNoise

REFERENCES = {"official": {"repo": "sfujim/TD3_BC", "file": "TD3_BC.py"}}
VARIANTS = ("default", "optax_adam")
BATCH_SIZE = 256  # main.py --batch_size
ACTION_STATES = 64
# TD3_BC's attribute -> our config key (its defaults are main.py's; lr: torch.optim.Adam(..., lr=3e-4))
HYPERPARAMETERS = {"discount": "discount", "tau": "tau", "policy_noise": "policy_noise", "noise_clip": "noise_clip",
                   "policy_freq": "policy_freq", "alpha": "alpha"}
DIFFERENCES = {"official": [
    {"where": "TD3_BC.py:81,85 torch.optim.Adam",
     "what": "torch takes Adam's bias corrections 1 - beta^t in Python floats; optax.adam computes 1 - 0.999^t in "
             "float32 (its first step 6.5e-6 short). Both in float32, ours with optax.adam was 2.3e-7 from the "
             "reference's parameters after 10 updates and 2.7e-6 off its first actor loss; with torch's Adam "
             "9.3e-8 and 9.4e-8 (variant optax_adam against default). After 1000 updates float32 rounding has "
             "spread every run (0.07 against the float64 reference, the reference's own float32 run included).",
     "fate": "fixed: dql/agents/td3bc.py builds both optimisers with common.make_optimizer(..., like_torch=True)."},
    {"where": "main.py:90-91 (policy_noise, noise_clip times max_action); TD3_BC.py:25 (max_action * tanh), "
              ":117 (clamp to +-max_action), :143 (F.mse_loss(pi, action))",
     "what": "The reference acts, smooths and clones in the environment's units; ours in the unit box (actions "
             "divided by max_action). For a bound other than 1 its critic sees a, ours a / max_action, and its BC "
             "term is ours times max_action^2.",
     "fate": "explained: identical for a bound of 1 (every D4RL task the paper runs, and this comparison); the "
             "suite's agents all work in the unit box."},
]}


class TorchDraws:
    """Stands in for TD3_BC.py's `torch`: `randn_like` logs its draws, or returns a recorded run's (cast to the
    dtype asked for); everything else is torch's."""

    def __init__(self, torch, log: list, replay: list | None = None):
        self._torch, self._log, self._replay = torch, log, replay

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def randn_like(self, like):
        if self._replay is None:
            out = self._torch.randn_like(like)
        else:
            out = self._torch.from_numpy(self._replay[len(self._log)]).to(like.dtype)
        self._log.append(out.detach().numpy().copy())
        return out


@contextlib.contextmanager
def recorded_losses(torch, log: list):
    """Every loss the reference calls backward() on, in order (the critic's, then the actor's when it moves)."""
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        log.append(float(self.detach()))
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.Tensor.backward = original


def _linear(layer, grad: bool = False) -> dict:
    weight, bias = (layer.weight.grad, layer.bias.grad) if grad else (layer.weight, layer.bias)
    return {"kernel": weight.detach().numpy().T.astype(np.float64), "bias": bias.detach().numpy().astype(np.float64)}


def actor_params(actor, grad: bool = False) -> dict:
    """The reference's Actor (l1..l3) in our DeterministicPolicy's layout."""
    return {"params": {"MLP_0": {f"TorchDense_{i}": _linear(layer, grad)
                                 for i, layer in enumerate((actor.l1, actor.l2, actor.l3))}}}


def critic_params(critic, grad: bool = False) -> dict:
    """The reference's Critic (Q1: l1..l3, Q2: l4..l6), its heads stacked as our CriticEnsemble holds them."""
    pairs = ((critic.l1, critic.l4), (critic.l2, critic.l5), (critic.l3, critic.l6))
    return {"params": {"VmapMLP_0": {f"TorchDense_{i}": jax.tree_util.tree_map(
        lambda a, b: np.stack([a, b]), _linear(q1, grad), _linear(q2, grad)) for i, (q1, q2) in enumerate(pairs)}}}


def reference_groups(ref) -> dict:
    return {"actor": actor_params(ref.actor), "actor_target": actor_params(ref.actor_target),
            "critic": critic_params(ref.critic), "critic_target": critic_params(ref.critic_target)}


def state_stats(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's (mean, std), in its dtype, as ReplayBuffer.normalize_states and our trainer take them."""
    return observations.mean(axis=0), observations.std(axis=0)


class Minibatches:
    """The reference's replay buffer, serving the fixed minibatches with states standardised as its buffer holds
    them."""

    def __init__(self, torch, settings: Settings, indices: np.ndarray, dtype):
        self.torch, self.settings, self.indices, self.dtype = torch, settings, indices, dtype
        mean, std = state_stats(settings.data["observations"].astype(dtype))
        self.mean, self.std = mean, std + dtype(1e-3)
        self.count = 0

    def sample(self, batch_size):
        b = self.settings.minibatch(self.indices, self.count, self.dtype)
        self.count += 1
        t = self.torch.from_numpy
        return (t((b["observations"] - self.mean) / self.std), t(b["actions"]),
                t((b["next_observations"] - self.mean) / self.std), t(b["rewards"][:, None]),
                t(1.0 - b["dones"][:, None]))


def tap_gradients(optimizer, convert, when: set, counter, store: dict, name: str) -> None:
    """Record what `optimizer` applies (its parameters' .grad, through `convert`) when counter() is in `when`:
    read at step() time, since the actor's backward adds to the critic's .grad after the critic's step."""
    step = optimizer.step

    def recording_step(*args, **kwargs):
        if counter() in when:
            store.setdefault(counter(), {})[name] = convert()
        return step(*args, **kwargs)

    optimizer.step = recording_step


def run_reference(torch, module, settings: Settings, indices, exact: Run | None = None) -> Run:
    """Train the reference on the fixed minibatches; with the float32 run `exact`, again in float64 (the same
    initial weights, cast) replaying its draws."""
    data = settings.data
    dtype = np.float32 if exact is None else np.float64
    torch.manual_seed(settings.seed)
    ref = module.TD3_BC(data["observations"].shape[1], data["actions"].shape[1], 1.0)  # main.py's other defaults
    if exact is not None:
        for net in (ref.actor, ref.actor_target, ref.critic, ref.critic_target):
            net.double()  # in place: the optimisers keep the same parameters
    draws, losses = [], []
    run = Run(losses={"critic_loss": [], "actor_loss": []}, extra={"initial": reference_groups(ref), "ref": ref})
    when, counter = set(settings.compared_at), lambda: ref.total_it  # noqa: E731  (the update in progress)
    tap_gradients(ref.critic_optimizer, lambda: critic_params(ref.critic, grad=True), when, counter, run.gradients,
                  "critic")
    tap_gradients(ref.actor_optimizer, lambda: actor_params(ref.actor, grad=True), when, counter, run.gradients,
                  "actor")
    module.torch = TorchDraws(torch, draws, None if exact is None else exact.extra["draws"])
    sampler = Minibatches(torch, settings, indices, dtype)
    start = time.perf_counter()
    try:
        torch.set_default_dtype(torch.float64 if exact is not None else torch.float32)
        with recorded_losses(torch, losses):
            for k in range(settings.updates):
                ref.train(sampler, BATCH_SIZE)
                critic_loss, *actor_loss = losses[-2:] if ref.total_it % ref.policy_freq == 0 else losses[-1:]
                run.add_losses({"critic_loss": critic_loss, **({"actor_loss": actor_loss[0]} if actor_loss else {})})
                if k + 1 in when:
                    run.snapshots[k + 1] = reference_groups(ref)
    finally:
        torch.set_default_dtype(torch.float32)
        module.torch = torch
    run.seconds = time.perf_counter() - start
    run.extra.update(draws=draws, stats=(sampler.mean, sampler.std))
    return run


def our_agent(config, settings: Settings, ref_run: Run, variant: str, float64: bool) -> TD3BCAgent:
    """Ours from the reference's initial weights and state statistics (float64: cast, stats exact)."""
    data = settings.data
    hp = TD3BCHyperparams.from_config(config, (1.0,) * data["actions"].shape[1])
    agent = TD3BCAgent.create(jax.random.PRNGKey(settings.seed), data["observations"].shape[1],
                              data["actions"].shape[1], hp, state_stats(data["observations"]))
    initial = jax.tree_util.tree_map(jnp.asarray, ref_run.extra["initial"])
    actor, critic = agent.actor.replace(params=initial["actor"]), agent.critic.replace(params=initial["critic"])
    if variant == "optax_adam":
        actor = common.make_train_state(actor.apply_fn, initial["actor"], optax.adam(hp.lr))
        critic = common.make_train_state(critic.apply_fn, initial["critic"], optax.adam(hp.critic_lr))
    agent = agent.replace(actor=actor, actor_target_params=initial["actor_target"], critic=critic,
                          critic_target_params=initial["critic_target"])
    if not float64:
        return agent
    mean, std = ref_run.extra["stats"]  # the float64 run's: mean and std + 1e-3 in float64
    return as_float64(agent).replace(observation_mean=jnp.asarray(mean), observation_std=jnp.asarray(std))


def run_ours(agent: TD3BCAgent, ref_run: Run, settings: Settings, indices, float64: bool) -> Run:
    """Our updates on the same (raw-state) minibatches and the reference's draws; the same records."""
    dtype = np.float64 if float64 else np.float32
    update = jax.jit(lambda agent, batch, noise: agent.update_and_gradients(batch, noise))
    run = Run(losses={"critic_loss": [], "actor_loss": []})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        moves = (k + 1) % agent.hp.policy_freq == 0
        noise = TD3BCNoise(target_smoothing=jnp.asarray(ref_run.extra["draws"][k]))
        agent, metrics, grads = update(agent, batch, noise)
        run.add_losses({"critic_loss": metrics["critic_loss"],
                        **({"actor_loss": metrics["actor_loss"]} if moves else {})})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = jax.device_get({
                "actor": agent.actor.params, "actor_target": agent.actor_target_params, "critic": agent.critic.params,
                "critic_target": agent.critic_target_params})
            run.gradients[k + 1] = jax.device_get(grads if moves else {"critic": grads["critic"]})
    run.seconds = time.perf_counter() - start
    run.extra["agent"] = agent
    return run


def matching_config(ref, settings: Settings):
    """Our config with the reference's hyperparameters (raising where ours differ: then our defaults are wrong)."""
    config = config_for("td3bc", list(settings.overrides))
    for attribute, key in HYPERPARAMETERS.items():
        if config[key] != getattr(ref, attribute):
            raise RuntimeError(f"our td3bc config has {key}={config[key]}, the reference {attribute}="
                               f"{getattr(ref, attribute)}")
    for key, optimizer in (("lr", ref.actor_optimizer), ("critic_lr", ref.critic_optimizer)):
        if config[key] != optimizer.param_groups[0]["lr"]:
            raise RuntimeError(f"our td3bc config has {key}={config[key]}, the reference's Adam lr "
                               f"{optimizer.param_groups[0]['lr']}")
    if config.batch_size != BATCH_SIZE:
        raise RuntimeError(f"our batch_size is {config.batch_size}, the reference's {BATCH_SIZE}")
    return config


def compare_actions(ref, agent: TD3BCAgent, stats, settings: Settings) -> dict:
    """With the reference's final actor loaded into ours: its select_action on standardised states (as its
    eval_policy feeds them) against ours on raw ones."""
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), actor_params(ref.actor))
    agent = agent.replace(actor=agent.actor.replace(params=params))
    observations = settings.data["observations"][:ACTION_STATES]
    mean, std = stats
    theirs = np.stack([ref.select_action((state - mean) / std) for state in observations])
    ours = np.asarray(agent.sample_actions(jnp.asarray(observations), jax.random.PRNGKey(0)))
    return {"states": ACTION_STATES, "max_abs": float(np.max(np.abs(ours - theirs)))}


def compare_variant(torch, module, settings: Settings, variant: str) -> dict:
    indices = settings.minibatch_indices(BATCH_SIZE)
    ref32 = run_reference(torch, module, settings, indices)
    config = matching_config(ref32.extra["ref"], settings)
    ours32 = run_ours(our_agent(config, settings, ref32, variant, False), ref32, settings, indices, False)
    ref64 = run_reference(torch, module, settings, indices, exact=ref32)
    with jax.enable_x64(True):
        ours64 = run_ours(our_agent(config, settings, ref64, variant, True), ref64, settings, indices, True)
    return variant_report(
        variant, settings.compared_at, ours32, ref32, ours64, ref64,
        adam="optax.adam" if variant == "optax_adam" else "torch's (common.make_optimizer(..., like_torch=True))",
        action_selection=compare_actions(ref32.extra["ref"], ours32.extra["agent"], ref32.extra["stats"], settings))


def compare(settings: Settings) -> dict:
    """Every variant (ours as it is; ours with optax's Adam)."""
    torch = require_torch()
    module = load_file(settings.repo, "TD3_BC.py", "td3bc_reference")
    variants = settings.variants or VARIANTS
    return {"variants": [compare_variant(torch, module, settings, variant) for variant in variants]}
