"""Every method on the 2-D multimodal bandit, side by side: the data and the actions each saved policy takes.

    python -m experiments.bandit_policies [--workdir=runs/bandit] [--out_dir=experiments/results/bandit]
        [--algos=bc,diffusion_bc,...]

The bandit (dql/data/bandit.py) has four action modes with rewards 1.0 / 0.6 / 0.2 / 0.6 (best: top right) and
one-step episodes. Each method trains through the project's loop (`dql.trainer.train`, a run folder with its
checkpoint); its saved policy is then loaded with `dql.load_policy` and asked for actions at the bandit's state.
The picture shows the point of a diffusion-policy suite: a Gaussian policy (bc) puts its actions between the
modes, a diffusion or flow policy keeps every mode (diffusion_bc), and a Q term or a value-weighted selection
picks the best one among them. Writes `policies.png` and `fractions.json` (per method the fraction of actions near
each mode) to --out_dir; run folders stay in --workdir, and a method whose run is complete is loaded, not retrained.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import dql
from dql.configs import resolve
from dql.data.bandit import BEST, MODE_REWARDS, MODES, RADIUS, bandit_data, bandit_dataset, mode_fractions

# The bandit's state is the constant 1: with an all-zero observation, LayerNorm critics (rebrac, fql) see a
# near-zero spread at the centre of the action box and come out arbitrary there (see tests/test_family_bandit.py).
STATE = 1.0
NUM_ACTIONS = 1000  # actions asked of each policy
# Toy settings per method: small networks, higher learning rates and a finer diffusion chain than the D4RL rows, so
# that each trains within a minute on a CPU; the bandit tests' settings, trained about twice as long (at the tests'
# lengths some seeds of diffusion_bc have not yet separated the modes).
DIFFUSION = dict(beta_schedule="linear", diffusion_steps=10)
SETTINGS = {
    "bc": dict(hidden_dims=(64, 64), lr=1e-3, steps=3000),
    "diffusion_bc": dict(hidden_dims=(64, 64), lr=1e-3, steps=5000, **DIFFUSION),
    "dql": dict(hidden_dims=(64, 64), eta=5.0, lr=1e-3, critic_lr=1e-3, lr_decay=False, grad_norm=0.0,
                ema_start=0, steps=5000, **DIFFUSION),
    "edp": dict(hidden_dims=(32, 32), lr=3e-3, alpha=5.0, dpm_steps=6, steps=4000),
    "idql": dict(hidden_dims=(32, 32), actor_hidden_dim=64, actor_num_blocks=1, time_dim=16, diffusion_steps=10,
                 lr=1e-3, critic_lr=1e-3, value_lr=1e-3, actor_tau=0.05, expectile=0.9, steps=5000),
    "fql": dict(hidden_dims=(64, 64), lr=1e-3, alpha=0.03, steps=3000),
    "rebrac": dict(hidden_dims=(64, 64), actor_bc_coef=0.01, critic_bc_coef=0.01, steps=2000),
    "iql": dict(hidden_dims=(64, 64), lr=1e-3, critic_lr=1e-3, value_lr=1e-3, temperature=10.0, steps=3000),
    "cql": dict(hidden_dims=(64, 64), lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, steps=3000),
}

flags.DEFINE_string("workdir", "runs/bandit", "Folder of the run folders (one per method).")
flags.DEFINE_string("out_dir", "experiments/results/bandit", "Output folder (policies.png, fractions.json).")
flags.DEFINE_list("algos", list(SETTINGS), "Methods to train and draw, in panel order.")
FLAGS = flags.FLAGS


def bandit_config(algo: str):
    """The method's own config with the toy settings (every key checked against it); saved at the end."""
    steps = SETTINGS[algo]["steps"]
    return resolve(algo, None, loop_flags={"seed": 0}, overrides=dict(
        SETTINGS[algo], batch_size=128, eval_episodes=0, eval_every=steps, save_every=steps, steps_per_dispatch=500))


def policy_actions(workdir: Path) -> np.ndarray:
    """The saved policy's actions for NUM_ACTIONS copies of the bandit's state (independent draws per row)."""
    return dql.load_policy(workdir)(np.full((NUM_ACTIONS, 1), STATE, np.float32), seed=0)


def draw(panels: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 5
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, actions) in zip(axes.flat, panels.items()):
        ax.scatter(actions[:, 0], actions[:, 1], s=4, alpha=0.3, color="tab:blue" if name == "data" else "tab:red")
        for mode, reward in zip(MODES, MODE_REWARDS):
            ax.add_patch(plt.Circle(mode, RADIUS, fill=False, color="gray", lw=0.8))
            ax.annotate(f"r={reward:g}", 0.4 * mode, fontsize=7, color="gray", ha="center", va="center")
        near = mode_fractions(actions)
        ax.set_title(f"{name}: {near[BEST]:.0%} best, {near.sum():.0%} on a mode", fontsize=9)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    figure.suptitle("2-D bandit: the data (blue) and the actions each saved policy takes (red)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the output
    unknown = [algo for algo in FLAGS.algos if algo not in SETTINGS]
    if unknown:
        sys.exit(f"error: --algos: no bandit settings for {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    from dql.trainer import train  # after flag parsing: importing the loop initialises JAX

    out_dir, workdir = Path(FLAGS.out_dir), Path(FLAGS.workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = bandit_dataset(state=STATE)
    panels = {"data": bandit_data(n=NUM_ACTIONS, seed=1, state=STATE)["actions"]}
    for algo in FLAGS.algos:
        train(bandit_config(algo), dataset, workdir / algo, None)
        panels[algo] = policy_actions(workdir / algo)
    fractions = {name: {f"{x:+.1f},{y:+.1f} (r={r:g})": float(f) for (x, y), r, f in
                        zip(MODES, MODE_REWARDS, mode_fractions(actions))} for name, actions in panels.items()}
    (out_dir / "fractions.json").write_text(json.dumps(fractions, indent=2) + "\n")
    draw(panels, out_dir / "policies.png")
    for name, actions in panels.items():
        near = mode_fractions(actions)
        print(f"{name:>13}: near the best mode {near[BEST]:.2f}, near any mode {near.sum():.2f}")
    print(f"wrote {out_dir / 'policies.png'} and {out_dir / 'fractions.json'}")


if __name__ == "__main__":
    app.run(main)
