"""The paper's PyTorch Diffusion-QL, loaded from a checkout of its repository, next to this project's agent.

Nothing of the reference is copied here: `load_reference` imports `agents.ql_diffusion` from the checkout given
by --repo, `reference_agent` builds it with the settings of one of our configs, and the converters move weights
between its torch modules and our flax parameter trees. Used by `benchmarks.torch_reference` (throughput),
`benchmarks.parity --algo=dql` (update-for-update equality, benchmarks/parity/dql.py) and
`benchmarks.reference_curves` (learning curves).
"""

from __future__ import annotations

import sys

import numpy as np

# What the reference hard-codes; a config that differs cannot be compared with it.
REFERENCE_FIXED = {"hidden_dims": (256, 256, 256), "time_dim": 16, "activation": "mish", "critic_lr": 3e-4,
                   "num_q_backup_samples": 10, "num_action_candidates": 50}


def load_reference(repo: str):
    """(torch, the reference module agents.ql_diffusion), or exit with what is missing."""
    try:
        import torch
    except ImportError:
        sys.exit("error: this comparison needs PyTorch: pip install torch")
    sys.path.insert(0, repo)
    try:
        from agents import ql_diffusion
    except ImportError as error:
        sys.exit(f"error: --repo={repo} does not hold the reference agents/ql_diffusion.py ({error})")
    return torch, ql_diffusion


def check_comparable(config) -> None:
    for key, value in REFERENCE_FIXED.items():
        if (tuple(config[key]) if isinstance(value, tuple) else config[key]) != value:
            sys.exit(f"error: --config.{key}={config[key]!r}: the reference fixes it at {value!r}")


def num_epochs(config) -> int:
    """The reference's lr_maxt: T_max of its cosine schedule, counted in epochs."""
    return max(1, -(-int(config.steps) // int(config.steps_per_epoch)))


def reference_agent(ql_diffusion, config, obs_dim: int, act_dim: int, max_action: float = 1.0):
    """The reference `Diffusion_QL` with the settings of our resolved dql config.

    Its scheduler steps once per `train()` call: call `train(sampler, config.lr_decay_every)` to step it as often
    as ours does.
    """
    check_comparable(config)
    return ql_diffusion.Diffusion_QL(
        obs_dim, act_dim, max_action, "cpu", config.discount, config.tau, max_q_backup=config.max_q_backup,
        eta=config.eta, beta_schedule=config.beta_schedule, n_timesteps=config.diffusion_steps,
        ema_decay=config.ema_decay, step_start_ema=config.ema_start, update_ema_every=config.ema_every,
        lr=config.lr, lr_decay=config.lr_decay, lr_maxt=num_epochs(config), grad_norm=config.grad_norm)


def _dense(linear) -> dict:
    return {"kernel": linear.weight.detach().cpu().numpy().T.copy(), "bias": linear.bias.detach().cpu().numpy().copy()}


def noise_net_params(diffusion) -> dict:
    """Our NoisePredictor's parameters from the reference's Diffusion module (its `model`, an MLP).

    flax names the layers in creation order: the outer time layer (2d -> d) is TorchDense_0, the inner (d -> 2d)
    TorchDense_1; torch.nn.Linear keeps [out, in] weights, ours are [in, out].
    """
    model = diffusion.model
    mid = [model.mid_layer[i] for i in (0, 2, 4)] + [model.final_layer]
    return {"params": {
        "TorchDense_0": _dense(model.time_mlp[3]),
        "TorchDense_1": _dense(model.time_mlp[1]),
        "MLP_0": {f"TorchDense_{i}": _dense(layer) for i, layer in enumerate(mid)},
    }}


def critic_params(critic) -> dict:
    """Our CriticEnsemble's parameters (heads stacked on axis 0) from the reference's Critic (q1_model, q2_model)."""
    layers = {}
    for i, index in enumerate((0, 2, 4, 6)):
        heads = [_dense(model[index]) for model in (critic.q1_model, critic.q2_model)]
        layers[f"TorchDense_{i}"] = {key: np.stack([head[key] for head in heads]) for key in ("kernel", "bias")}
    return {"params": {"VmapMLP_0": layers}}


def parameter_groups(ref) -> dict:
    """The reference agent's four parameter groups, in our layout."""
    return {"actor": noise_net_params(ref.actor), "actor_ema": noise_net_params(ref.ema_model),
            "critic": critic_params(ref.critic), "critic_target": critic_params(ref.critic_target)}


def load_into_agent(agent, groups: dict):
    """Our DQLAgent with the given `parameter_groups` of a reference agent (optimizer states untouched)."""
    import jax.numpy as jnp
    from jax import tree_util

    groups = tree_util.tree_map(jnp.asarray, groups)
    return agent.replace(actor=agent.actor.replace(params=groups["actor"]), actor_ema_params=groups["actor_ema"],
                         critic=agent.critic.replace(params=groups["critic"]),
                         critic_target_params=groups["critic_target"])
