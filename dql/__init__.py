"""dql: Diffusion-Q-Learning and behaviour-regularised offline RL in JAX."""

__version__ = "0.1.0"


def load_policy(workdir, step=None):
    """The trained policy of a run folder: `policy(observations [B, obs_dim], seed) -> actions [B, act_dim]`."""
    from dql.policy import load_policy as _load_policy

    return _load_policy(workdir, step)


__all__ = ["load_policy", "__version__"]
