"""CQL against CORL's PyTorch CQL (tinkoff-ai/CORL, `algorithms/offline/cql.py`, the `corl` reference) and against
the paper's own code (aviralkumar2907/CQL, `d4rl/rlkit/torch/sac/cql.py`, `paper`): the `cql` case of
`python -m benchmarks.parity`.

    python -m benchmarks.parity --algo=cql --repo=/path/to/CORL [--reference=corl]
    python -m benchmarks.parity --algo=cql --repo=/path/to/CQL --reference=paper

- randomness: a torch function mode records every draw the reference's update makes (the actor's normal noise,
  the uniform actions) and every loss it backpropagates; the float64 run replays the float32 run's draws. The
  draws go to `CQLAgent.update_with_noise` as a `CQLNoise`.
- compared: the losses of every update; the gradients the optimisers applied; the parameter groups (actor,
  critics, target critics, log alpha, and log alpha' with the Lagrange form).
- settings: our config, with the options that reproduce each reference (REFERENCE_OPTIONS; the reference is
  built with our sizes and learning rates). Variants: the fixed weight and the Lagrange form (our AntMaze row's
  weight and threshold, the paper's lagrange_thresh = w * ours). `option_effects` measures each option at our
  default instead (ours in float64 against the float64 reference).
"""

from __future__ import annotations

import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import config_for
from benchmarks.parity.common import (Run, Settings, as_float64, differences, load_file, require_torch, stub_module,
                                      to_numpy, variant_report, worst)
from dql.agents.cql import CQLAgent, CQLHyperparams, CQLNoise
from dql.configs.cql import DATASET_OVERRIDES

REFERENCES = {"corl": {"repo": "tinkoff-ai/CORL", "file": "algorithms/offline/cql.py"},
              "paper": {"repo": "aviralkumar2907/CQL", "file": "d4rl/rlkit/torch/sac/cql.py"}}
VARIANTS = ("default", "lagrange")
PAPER_BC_STEPS = 100  # the paper's code clones the data first (policy_eval_start); 100 updates compare both phases
REFERENCE_OPTIONS = {
    "corl": {"log_alpha_prime_init": 1.0, "log_std_affine": True, "log_std_min": -20.0},
    "paper": {"tanh_log_density_epsilon": 1e-6, "temperature_first": True, "bc_steps": PAPER_BC_STEPS},
}
# The options whose effect is measured, per variant (log_std_affine changes the parameters: it cannot be run at
# our default on the reference's weights; alpha' plays no part without the Lagrange form).
MEASURED = {("corl", "default"): ("log_std_min",), ("corl", "lagrange"): ("log_alpha_prime_init",),
            ("paper", "default"): ("tanh_log_density_epsilon", "temperature_first", "bc_steps"),
            ("paper", "lagrange"): ()}


def _d(where: str, what: str, fate: str) -> dict:
    return {"where": where, "what": what, "fate": fate}


_ADAM = (("torch.optim.Adam (its bias corrections 1 - beta^t in Python floats; optax's in float32: 6.6e-6 off at "
          "the first step)"), ("fixed: CQL's optimisers are common.make_optimizer(..., like_torch=True) "
                               "(sac_parts(like_torch=True), scalar_state(like_torch=True))."))
_XLA = _d("ours in float32 (XLA CPU)", "not a difference in the update: XLA's CPU batched dot (the two stacked critic "
          "heads) accumulates the last layer's gradient over the 3N + 1 actions per state 2-4x less exactly than torch "
          "(1.0e-6 against 2-6e-7 relative on a [2, 8000, 256] test), and Adam's sign-like first steps spread that; "
          "ours in float32 therefore drifts from the float64 reference faster than its own float32 run at first.",
          "explained: rounding of XLA's CPU reduction (dql/nets.py CriticEnsemble, not CQL's math); float64 agrees.")
DIFFERENCES = {"corl": [
    _d("algorithms/offline/cql.py:513", "log alpha' starts at 1 (Scalar(1.0)); ours at 0, as the paper's code "
       "(rlkit/torch/sac/cql.py:75, ptu.zeros).", "option: log_alpha_prime_init (default 0.0), 1.0 in this "
       "comparison; option_effects measures 0.0 (the Lagrange variant)."),
    _d("algorithms/offline/cql.py:349-350, 360, 374; 276, 299", "the log-std passes through a learned scale and "
       "offset (Scalar(1.0), Scalar(-1.0), trained by the actor's Adam) and is clipped to [-20, 2]; ours and the "
       "paper's clip the network's output to [-5, 2] with nothing learned.", "option: log_std_affine (default "
       "False) and log_std_min (default -5.0), True and -20.0 here; corl_log_std_multiplier_offset_at_end says how "
       "far the two scalars moved."),
    _d(*(("algorithms/offline/cql.py:506, 514, 894-895, 904",) + _ADAM)),
    _d("configs/offline/cql/antmaze/*_v2.yaml", "AntMaze rows: cql_alpha 5, cql_target_action_gap 0.8 in our form "
       "alpha' w (gap - tau) (the paper's lagrange_thresh 4; ours 1.0 = the paper's README's thresh 5), "
       "cql_max_target_backup, cql_clip_diff_min -200, rewards (r - 0.5) * 10, q_n_hidden_layers 5.",
       "explained: our rows follow the paper's README (dql/configs/cql.py docstring); the Lagrange variant gives "
       "both sides our row's w and tau."),
    _d("algorithms/offline/cql.py:568-580, 670-679", "max-target backup (min over heads, then max over N actions) "
       "and the clipped gap exist as options there (used by its AntMaze rows); ours has neither.",
       "explained: the paper's scripts run max_q_backup False (examples/cql_antmaze_new.py:161) and clip nothing; "
       "both are off on both sides here."),
    _d("algorithms/offline/cql.py:353-362, 544-546", "its BC phase scores the policy's own fresh sample: "
       "TanhGaussianPolicy.log_prob ignores `actions`; every CORL config sets bc_steps 0.",
       "explained: bc_steps 0 on both sides here; our bc_steps scores the data's actions (the paper's form)."),
    _d("algorithms/offline/cql.py:891", "its second critic is built without q_n_hidden_layers (3 hidden layers even "
       "where the first has 5, its AntMaze rows).", "explained: not met at our 3 x 256."),
    _d("algorithms/offline/cql.py:649-666", "the log-sum-exp's terms in the order [uniform, s', s]; ours "
       "[uniform, s, s'].", "explained: a sum's order, rounding only."),
    _d("configs/offline/cql/{halfcheetah,hopper,walker2d}/*.yaml", "gym rows: cql_alpha 10, policy_lr 3e-5; ours "
       "5 and 1e-4 (the paper's README: 5 or 10, 1e-4 or 3e-4); the temperature at the policy's lr "
       "(cql.py:506-509), ours alpha_lr (1e-4 = lr).", "explained: hyperparameters; the reference is built with our "
       "config's values and alpha_lr = lr."),
    _d("algorithms/offline/cql.py:256-271", "orthogonal initialisation", "explained: irrelevant here, the "
       "reference's initial weights are copied into ours."),
    _XLA,
], "paper": [
    _d("d4rl/rlkit/torch/sac/cql.py:270-273", "the Lagrange penalty is alpha' (w gap - lagrange_thresh); ours "
       "alpha' w (gap - target_action_gap), so our old AntMaze rows (w 5, gap 5) were its thresh 25. Its README "
       "runs AntMaze at thresh 5, min_q_weight 5 (the flag misspelt --min_q_wight; the script's own default "
       "weight is 1.0).", "fixed: our AntMaze rows (and the default) take target_action_gap 1.0 = 5 / 5, "
       "tests/test_parity_cql.py checks the equivalence; the Lagrange variant gives the paper's code "
       "lagrange_thresh = w * ours."),
    _d("d4rl/rlkit/torch/distributions.py:43-45", "the tanh's log-Jacobian as log(1 - a^2 + 1e-6); ours exact.",
       "option: tanh_log_density_epsilon (default 0.0), 1e-6 here; option_effects measures 0.0."),
    _d("d4rl/rlkit/torch/sac/cql.py:164-182", "the temperature steps first and the actor's loss takes the new "
       "alpha; ours (and CORL) the current one.", "option: temperature_first (default False), True here; "
       "option_effects measures False."),
    _d("d4rl/rlkit/torch/sac/cql.py:150, 184-191; examples/cql_antmaze_new.py:163", "behaviour cloning while "
       "_current_epoch (the update count) < policy_eval_start, 40000 in its scripts: alpha log pi - log pi(data "
       "action), the latter by policies.py:75-93 (arctanh with 1 +- a floored at 1e-6, the mean clipped to +-9).",
       "option: bc_steps (default 0, the code's comment: 'not much difference'), 100 here (policy_eval_start "
       "101); ours does not clip the mean at +-9 (tanh(9) = 1 - 3e-8: not met); option_effects measures 0."),
    _d(*(("d4rl/rlkit/torch/sac/cql.py:67, 76, 87-98 (optim.Adam)",) + _ADAM)),
    _d("d4rl/rlkit/torch/sac/cql.py:286-300", "both critics step before the policy's backward, whose graph runs "
       "through them: torch >= 1.5 refuses; torch < 1.5 (the README asks for >= 1.1) silently mixed the old "
       "activations with the new weights.", "explained: run under allow_mutation_on_saved_tensors() the policy's "
       "gradient is the one against the pre-step critics, which ours computes."),
    _d("d4rl/rlkit/torch/sac/cql.py:203-205", "draws a policy sample at s it never uses.",
       "explained: this case skips that draw."),
    _d("d4rl/rlkit/torch/sac/cql.py:139-146, 235-236", "the N policy actions are not detached, so the critics' "
       "losses backpropagate into the policy.", "explained: those gradients are zeroed before the policy's step "
       "(cql.py:298); nothing changes."),
    _d("examples/cql_antmaze_new.py:46, examples/cql_mujoco_new.py:45", "the target critics start from their own "
       "random weights; ours (and CORL) copy the critics.", "explained: the reference's target weights are copied "
       "into ours here; an initialisation choice that tau = 0.005 forgets."),
    _XLA,
]}


def reference_losses(name: str, lagrange: bool, values: list[float]) -> dict[str, float]:
    """The losses a reference update backpropagated, in its order, under our metric names."""
    if name == "corl":  # train(): [alpha' step inside _q_loss], alpha, policy, qf_loss
        keys = (["alpha_prime_loss"] if lagrange else []) + ["alpha_loss", "actor_loss", "critic_loss"]
        return dict(zip(keys, values, strict=True))
    keys = ["alpha_loss"] + (["alpha_prime_loss"] if lagrange else []) + ["qf1", "qf2", "actor_loss"]
    out = dict(zip(keys, values, strict=True))
    out["critic_loss"] = out.pop("qf1") + out.pop("qf2")
    return out


def noise_of_update(name: str, draws: list, dtype) -> CQLNoise:
    """One reference update's draws as our CQLNoise: CORL draws [actor, backup, uniform, current, next], the paper
    [actor, backup, an unused policy sample at s, uniform, current, next] with the N samples as rows b N + j."""
    kinds = [kind for kind, _ in draws]
    expected = ["normal", "normal"] + (["normal"] if name == "paper" else []) + ["uniform", "normal", "normal"]
    if kinds != expected:
        raise RuntimeError(f"the reference drew {kinds}, expected {expected}: its update changed")
    values = [np.asarray(value, dtype) for _, value in draws]
    actor, backup, uniform, current, following = values if name == "corl" else values[:2] + values[3:]
    batch, dim = actor.shape
    shaped = [jnp.asarray(v.reshape(batch, -1, dim)) for v in (current, following, uniform)]
    return CQLNoise(actor=jnp.asarray(actor), backup=jnp.asarray(backup), current=shaped[0], next=shaped[1],
                    uniform=shaped[2])


def draw_tap(torch):
    """A torch function mode that records the reference's draws and the losses it backpropagates; given another
    run's draws, it supplies those instead of drawing."""

    class DrawTap(torch.overrides.TorchFunctionMode):
        def __init__(self, replay: list | None = None):
            super().__init__()
            self.replay = iter([draw for update in replay for draw in update]) if replay is not None else None
            self.draws, self.losses = [], []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name == "backward":
                self.losses.append(float(args[0].detach()))
            if name not in ("normal", "normal_", "uniform_"):
                return func(*args, **kwargs)
            kind = "uniform" if name == "uniform_" else "normal"
            if self.replay is None:
                out = func(*args, **kwargs)
            else:
                recorded, value = next(self.replay)
                if recorded != kind:
                    raise RuntimeError(f"replay: the run drew {kind} where the recorded run drew {recorded}")
                if name == "normal":  # torch.normal(loc, scale): a new tensor
                    out = torch.from_numpy(value).to(args[0].dtype)
                else:  # tensor.normal_() / tensor.uniform_(-1, 1): in place
                    with torch.no_grad():
                        out = args[0].copy_(torch.from_numpy(value))
            self.draws.append((kind, out.detach().numpy().copy()))
            return out

    return DrawTap


def _dense(named: dict, prefix: str, rows: slice = slice(None)) -> dict:
    return {"kernel": named[f"{prefix}.weight"][rows].T.copy(), "bias": named[f"{prefix}.bias"][rows].copy()}


def _named(module, grads: bool = False) -> dict:
    return {name: (p.grad if grads else p).detach().double().numpy().copy() for name, p in module.named_parameters()}


def _initial(module) -> dict:
    """A copy of the module's weights (state_dict holds the live tensors, which training changes)."""
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def critic_layout(heads: list[dict], prefixes: tuple[str, ...]) -> dict:
    """Our CriticEnsemble's parameters (heads stacked on axis 0) from two torch critics' named tensors."""
    layers = {}
    for i, prefix in enumerate(prefixes):
        dense = [_dense(head, prefix) for head in heads]
        layers[f"TorchDense_{i}"] = {key: np.stack([d[key] for d in dense]) for key in ("kernel", "bias")}
    return {"params": {"VmapMLP_0": layers}}


class Corl:
    """CORL's ContinuousCQL with our config's settings; parameter groups in our layout."""

    critic_prefixes = ("network.0", "network.2", "network.4", "network.6")

    def __init__(self, torch, module, config, obs_dim: int, act_dim: int, initial: dict | None):
        actor = module.TanhGaussianPolicy(obs_dim, act_dim, 1.0)
        critics = [module.FullyConnectedQFunction(obs_dim, act_dim) for _ in range(2)]
        if initial is not None:  # the float32 run's initial weights (targets are copies, made below)
            for net, key in ((actor, "actor"), (critics[0], "critic_1"), (critics[1], "critic_2")):
                net.load_state_dict(initial[key])
        adam = torch.optim.Adam
        self.trainer = module.ContinuousCQL(
            critics[0], adam(critics[0].parameters(), config.critic_lr), critics[1],
            adam(critics[1].parameters(), config.critic_lr), actor, adam(actor.parameters(), config.lr),
            target_entropy=-float(act_dim), discount=config.discount, policy_lr=config.lr, qf_lr=config.critic_lr,
            soft_target_update_rate=config.tau, bc_steps=config.bc_steps, cql_n_actions=config.num_samples,
            cql_lagrange=config.lagrange, cql_target_action_gap=config.target_action_gap,
            cql_temp=config.cql_temperature, cql_alpha=config.cql_weight, device="cpu")
        self.state = {key: _initial(net) for key, net in (("actor", actor), ("critic_1", critics[0]),
                                                           ("critic_2", critics[1]))}
        self.optimizers = {"actor": "actor_optimizer", "critic": ("critic_1_optimizer", "critic_2_optimizer"),
                           "log_alpha": "alpha_optimizer", "log_alpha_prime": "alpha_prime_optimizer"}

    def modules(self):
        t = self.trainer
        return [t.actor, t.critic_1, t.critic_2, t.target_critic_1, t.target_critic_2, t.log_alpha, t.log_alpha_prime]

    def group(self, name: str, grads: bool = False):
        """One parameter group (or the gradients in it) in our layout."""
        t = self.trainer
        if name == "actor":
            actor = _named(t.actor, grads)
            act_dim = actor["base_network.6.bias"].shape[0] // 2  # one layer outputs [mean, log_std]
            inner = {f"TorchDense_{i}": _dense(actor, f"base_network.{2 * i}") for i in range(3)}
            inner["TorchDense_3"] = _dense(actor, "base_network.6", slice(None, act_dim))
            inner["TorchDense_4"] = _dense(actor, "base_network.6", slice(act_dim, None))
            return {"params": {"GaussianPolicy_0": inner, "log_std_multiplier": actor["log_std_multiplier.constant"],
                               "log_std_offset": actor["log_std_offset.constant"]}}
        if name in ("log_alpha", "log_alpha_prime"):
            return _named(getattr(t, name), grads)["constant"]
        heads = (t.critic_1, t.critic_2) if name == "critic" else (t.target_critic_1, t.target_critic_2)
        return critic_layout([_named(head, grads) for head in heads], self.critic_prefixes)

    def groups(self) -> dict:
        return {name: self.group(name) for name in ("actor", "critic", "critic_target", "log_alpha",
                                                     "log_alpha_prime")}

    def train(self, torch, batch: dict) -> None:
        t = torch.from_numpy
        self.trainer.train([t(batch["observations"]), t(batch["actions"]), t(batch["rewards"])[:, None],
                            t(batch["next_observations"]), t(batch["dones"])[:, None]])


class Paper:
    """The paper's CQLTrainer (rlkit's networks from the same checkout) with our config's settings."""

    critic_prefixes = ("fc0", "fc1", "fc2", "last_fc")

    def __init__(self, torch, module, config, obs_dim: int, act_dim: int, initial: dict | None):
        from rlkit.torch.networks import FlattenMlp
        from rlkit.torch.sac.policies import TanhGaussianPolicy

        hidden = [int(h) for h in config.hidden_dims]
        policy = TanhGaussianPolicy(hidden_sizes=hidden, obs_dim=obs_dim, action_dim=act_dim)
        critics = [FlattenMlp(input_size=obs_dim + act_dim, output_size=1, hidden_sizes=hidden) for _ in range(4)]
        nets = {"policy": policy, "qf1": critics[0], "qf2": critics[1], "target_qf1": critics[2],
                "target_qf2": critics[3]}
        if initial is not None:
            for key, net in nets.items():
                net.load_state_dict(initial[key])
        self.state = {key: _initial(net) for key, net in nets.items()}
        env = types.SimpleNamespace(action_space=types.SimpleNamespace(shape=(act_dim,)))
        self.trainer = module.CQLTrainer(
            env, **nets, discount=config.discount, policy_lr=config.lr, qf_lr=config.critic_lr,
            soft_target_tau=config.tau, policy_eval_start=config.bc_steps + 1, temp=config.cql_temperature,
            min_q_weight=config.cql_weight, num_random=config.num_samples, with_lagrange=config.lagrange,
            lagrange_thresh=config.cql_weight * config.target_action_gap)
        self.optimizers = {"actor": "policy_optimizer", "critic": ("qf1_optimizer", "qf2_optimizer"),
                           "log_alpha": "alpha_optimizer", "log_alpha_prime": "alpha_prime_optimizer"}
        self.lagrange = config.lagrange

    def modules(self):
        t = self.trainer
        return [t.policy, t.qf1, t.qf2, t.target_qf1, t.target_qf2]

    def group(self, name: str, grads: bool = False):
        t = self.trainer
        if name == "actor":
            policy = _named(t.policy, grads)
            prefixes = ("fc0", "fc1", "fc2", "last_fc", "last_fc_log_std")  # last_fc: the mean
            return {"params": {f"TorchDense_{i}": _dense(policy, p) for i, p in enumerate(prefixes)}}
        if name in ("log_alpha", "log_alpha_prime"):  # plain [1] tensors
            tensor = getattr(t, name)
            return (tensor.grad if grads else tensor).detach().double().numpy().copy().reshape(())
        heads = (t.qf1, t.qf2) if name == "critic" else (t.target_qf1, t.target_qf2)
        return critic_layout([_named(head, grads) for head in heads], self.critic_prefixes)

    def groups(self) -> dict:
        names = ("actor", "critic", "critic_target", "log_alpha") + (("log_alpha_prime",) if self.lagrange else ())
        return {name: self.group(name) for name in names}

    def train(self, torch, batch: dict) -> None:
        t = torch.from_numpy
        self.trainer._need_to_update_eval_statistics = False  # its statistics: not compared, slow
        # On torch >= 1.5 the policy's backward after the critics' steps needs their pre-step weights kept.
        with torch.autograd.graph.allow_mutation_on_saved_tensors():
            self.trainer.train_from_torch({
                "observations": t(batch["observations"]), "actions": t(batch["actions"]),
                "rewards": t(batch["rewards"])[:, None], "terminals": t(batch["dones"])[:, None],
                "next_observations": t(batch["next_observations"])})


def tap_gradients(side, checkpoints: set, counter) -> dict:
    """Wrap the reference's optimizers' step: at the compared updates, keep the gradients they apply (the critics'
    at the second head's step, when both heads' gradients are final)."""
    recorded: dict[int, dict] = {}
    for group, names in side.optimizers.items():
        optimizer = getattr(side.trainer, names[-1] if isinstance(names, tuple) else names, None)
        if optimizer is None:  # the paper's code makes alpha' only with the Lagrange form
            continue

        def step(*args, _step=optimizer.step, _group=group, **kwargs):
            if counter() in checkpoints:
                recorded.setdefault(counter(), {})[_group] = side.group(_group, grads=True)
            return _step(*args, **kwargs)

        optimizer.step = step
    return recorded


def run_reference(torch, module, name: str, config, settings: Settings, indices, exact: Run | None = None) -> Run:
    """The reference on the fixed minibatches: snapshots, applied gradients, losses and draws per update. Given
    the float32 run `exact`, the same in float64 from its initial weights, replaying its draws."""
    data = settings.data
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    torch.manual_seed(settings.seed)
    side = (Corl if name == "corl" else Paper)(torch, module, config, obs_dim, act_dim,
                                               exact.extra["state"] if exact else None)
    dtype = np.float64 if exact else np.float32
    if exact:
        torch.set_default_dtype(torch.float64)
        for net in side.modules():
            net.double()  # in place: the optimizers keep the same parameters
        if name == "paper":  # plain tensors, not modules
            side.trainer.log_alpha.data = side.trainer.log_alpha.data.double()
            if config.lagrange:
                side.trainer.log_alpha_prime.data = side.trainer.log_alpha_prime.data.double()
    run = Run(losses={}, extra={"draws": [], "state": side.state, "initial": side.groups()})
    count = [0]
    run.gradients = tap_gradients(side, set(settings.compared_at), lambda: count[0])
    tap = draw_tap(torch)(exact.extra["draws"] if exact else None)
    start = time.perf_counter()
    try:
        for k in range(settings.updates):
            count[0] = k + 1
            tap.draws, tap.losses = [], []
            with tap:
                side.train(torch, settings.minibatch(indices, k, dtype))
            run.extra["draws"].append(tap.draws)
            run.add_losses(reference_losses(name, config.lagrange, tap.losses))
            if k + 1 in settings.compared_at:
                run.snapshots[k + 1] = side.groups()
    finally:
        torch.set_default_dtype(torch.float32)
    run.seconds = time.perf_counter() - start
    return run


def recording(state):
    """The same TrainState whose optimiser first keeps the gradient it is given (in opt_state[0])."""
    keep = optax.GradientTransformation(lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
                                        lambda grads, _, params=None: (grads, grads))
    return state.replace(tx=optax.chain(keep, state.tx), opt_state=(keep.init(state.params), state.opt_state))


def our_groups(agent: CQLAgent, names, grads: bool = False) -> dict:
    states = {"actor": agent.actor, "critic": agent.critic, "log_alpha": agent.log_alpha,
              "log_alpha_prime": agent.log_alpha_prime}
    out = {}
    for name in names:
        if name == "critic_target":
            out[name] = agent.critic_target_params
        else:
            tree = states[name].opt_state[0] if grads else states[name].params
            out[name] = tree["value"] if name.startswith("log_alpha") else tree
    return to_numpy(out)


def load_groups(agent: CQLAgent, groups: dict, dtype, skip: tuple[str, ...] = ()) -> CQLAgent:
    """Our agent with a reference's parameter groups (all but `skip`) in `dtype`; records applied gradients."""
    g = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, dtype)), groups)
    replaced = {"critic_target_params": g["critic_target"]}
    for name in ("actor", "critic", "log_alpha", "log_alpha_prime"):
        state = getattr(agent, name)
        if name in g and name not in skip:
            state = state.replace(params={"value": g[name]} if name.startswith("log_alpha") else g[name])
        replaced[name] = recording(state)
    return agent.replace(**replaced)


def run_ours(agent: CQLAgent, ref_run: Run, name: str, settings: Settings, indices, dtype) -> Run:
    """Our updates on the reference run's minibatches and draws; the same records as run_reference."""
    update = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))  # fresh: x64 retraces
    names = list(ref_run.snapshots[settings.updates])
    run = Run(losses={})
    start = time.perf_counter()
    for k in range(settings.updates):
        batch = {key: jnp.asarray(value) for key, value in settings.minibatch(indices, k, dtype).items()}
        agent, metrics = update(agent, batch, noise_of_update(name, ref_run.extra["draws"][k], dtype))
        run.add_losses({key: metrics[key] for key in ref_run.losses})
        if k + 1 in settings.compared_at:
            run.snapshots[k + 1] = our_groups(agent, names)
            run.gradients[k + 1] = our_groups(agent, ref_run.gradients[k + 1], grads=True)
    run.seconds = time.perf_counter() - start
    return run


def variant_config(name: str, variant: str, settings: Settings, **options):
    """Our config for one variant with the reference's options (--set=KEY=VALUE and `options` win)."""
    config = config_for("cql", list(settings.overrides))
    given = {item.partition("=")[0] for item in settings.overrides}
    if variant == "lagrange":  # our AntMaze row's Lagrange settings
        row = DATASET_OVERRIDES["antmaze-umaze-v2"]
        config.update({key: row[key] for key in ("lagrange", "cql_weight", "target_action_gap") if key not in given})
    chosen = {"alpha_lr": config.lr, **REFERENCE_OPTIONS[name]}  # both tune the temperature at the policy's lr
    config.update({key: value for key, value in chosen.items() if key not in given})
    config.update(options)
    return config


def ours_float64(config, initial: dict, ref64: Run, name: str, settings: Settings, indices, skip=()) -> Run:
    data = settings.data
    with jax.enable_x64(True):
        hp = CQLHyperparams.from_config(config, (1.0,) * data["actions"].shape[1])
        agent = CQLAgent.create(jax.random.PRNGKey(settings.seed), data["observations"].shape[1],
                                data["actions"].shape[1], hp)
        return run_ours(load_groups(as_float64(agent), initial, np.float64, skip), ref64, name, settings, indices,
                        np.float64)


def compare_variant(torch, module, name: str, settings: Settings, variant: str) -> dict:
    config = variant_config(name, variant, settings)
    data = settings.data
    indices = settings.minibatch_indices(config.batch_size)
    ref32 = run_reference(torch, module, name, config, settings, indices)
    hp = CQLHyperparams.from_config(config, (1.0,) * data["actions"].shape[1])
    agent = CQLAgent.create(jax.random.PRNGKey(settings.seed), data["observations"].shape[1],
                            data["actions"].shape[1], hp)
    ours32 = run_ours(load_groups(agent, ref32.extra["initial"], np.float32), ref32, name, settings, indices,
                      np.float32)
    ref64 = run_reference(torch, module, name, config, settings, indices, exact=ref32)
    ours64 = ours_float64(config, ref32.extra["initial"], ref64, name, settings, indices)
    effects = {}
    for option in MEASURED.get((name, variant), ()):  # one reference setting at a time back at our default
        default = config_for("cql", [])[option]
        run = ours_float64(variant_config(name, variant, settings, **{option: default}), ref32.extra["initial"],
                           ref64, name, settings, indices, skip=("log_alpha_prime",) if "alpha_prime" in option else ())
        diff = differences(run, ref64, settings.compared_at)
        effects[f"{option}={default!r} (ours) instead of {config[option]!r}"] = {
            k: worst(d) for k, d in diff.items()}
    settings_used = {key: config[key] for key in (*REFERENCE_OPTIONS[name], "lagrange", "cql_weight",
                                                  "target_action_gap", "lr", "critic_lr", "alpha_lr", "num_samples")}
    extra = {}
    if name == "corl":  # how far its learned log-std scale and offset moved from 1 and -1
        actor = ref64.snapshots[settings.updates]["actor"]["params"]
        extra["corl_log_std_multiplier_offset_at_end"] = [float(actor["log_std_multiplier"]),
                                                          float(actor["log_std_offset"])]
    return variant_report(variant, settings.compared_at, ours32, ref32, ours64, ref64, config=settings_used,
                          option_effects_float64_params_rel_l2=effects, **extra)


def _stubs(*names: str) -> dict:
    # __file__ None: inspect.getmodule (run by torch's lazy imports) skips the module instead of failing on it.
    return {name: stub_module(name, __file__=None) for name in names}


def load_reference(torch, settings: Settings):
    if settings.reference == "corl":
        stubs = _stubs("wandb", "pyrallis", "d4rl", "gym")
        return load_file(settings.repo, REFERENCES["corl"]["file"], "corl_cql", stubs)
    stubs = _stubs("gtimer", "dateutil", "dateutil.tz", "rlkit.core.batch_rl_algorithm",
                   "rlkit.core.online_rl_algorithm")
    return load_file(settings.repo, REFERENCES["paper"]["file"], "paper_cql", stubs, path=("d4rl",))


def compare(settings: Settings) -> dict:
    """Every variant (fixed weight, Lagrange form) of the comparison with settings.reference."""
    torch = require_torch()  # before the stubs: torch's import inspects the modules loaded
    module = load_reference(torch, settings)
    variants = settings.variants or VARIANTS
    return {"variants": [compare_variant(torch, module, settings.reference, settings, v) for v in variants],
            "reference_options": REFERENCE_OPTIONS[settings.reference]}
