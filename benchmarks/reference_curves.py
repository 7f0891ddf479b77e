"""Learning curves of the paper's PyTorch Diffusion-QL on one of this project's datasets, as run folders that
`experiments.report` and `experiments.parity_curves` read beside ours.

    python -m benchmarks.reference_curves --repo=/tmp/dql-torch --dataset=gym:Hopper-v5/full-replay \
        --seeds=0,1,2,3,4 --steps=50000 --eval_every=10000 --workdir=runs/parity/reference \
        --set=grad_norm=4.0 --set=lr_decay=False

The agent, its replay sampler (`utils.data_sampler.Data_Sampler`) and its `sample_action` are the reference's,
seeded as its main.py seeds them (torch and numpy with the seed); its `train()` runs `--eval_every` updates per
call, as main.py calls it once per evaluation. The settings are those `python -m dql.train --algo=dql` resolves
for the dataset (its row), with --set overrides on top. Evaluation uses this project's envs and seeds (env i of
seed s seeded s + 100 + i). Each seed writes <workdir>/seed_<s>/ with config.json (algo `dql-reference`),
dataset.json (a resume on other data is refused, as dql.train refuses it), metrics.csv, summary.json and
checkpoint.pt, the whole training state (weights, optimizers, schedulers, the torch and numpy generators, the
evaluations). With a constant learning rate (`--set=lr_decay=False`) the reference's
train() is the same in pieces, so it is also checkpointed every --save_every updates between evaluations (the
losses of the unfinished interval included): a stopped run loses at most that many updates and continues exactly.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from benchmarks import reference
from dql.configs import resolve
from dql.data import load_dataset
from dql.envs import rollout
from dql.logs import MetricsCSV, plot_learning_curve
from dql.run_folder import check_same_data, jsonable, write_json

flags.DEFINE_string("repo", None, "Path to a checkout of Zhendong-Wang/Diffusion-Policies-for-Offline-RL.")
flags.DEFINE_string("dataset", None, "The --dataset to train on.")
flags.DEFINE_list("seeds", ["0"], "Seeds, one run each, one after another.")
flags.DEFINE_integer("steps", 50_000, "Gradient steps per seed.")
flags.DEFINE_integer("eval_every", 10_000, "Updates per train() call and between evaluations.")
flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
flags.DEFINE_integer("save_every", 2_000, "Updates between checkpoints inside an evaluation interval (constant "
                     "learning rate only; with lr_decay the reference's schedule steps once per train() call, so "
                     "checkpoints come at evaluations).")
flags.DEFINE_string("workdir", None, "Folder of the seeds' run folders.")
flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE, as --config.KEY=VALUE of dql.train.")
flags.mark_flags_as_required(["repo", "dataset", "workdir"])
FLAGS = flags.FLAGS

LOSSES = ("critic_loss", "bc_loss", "ql_loss", "actor_loss")


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise app.UsageError(f"--set={item!r}: expected KEY=VALUE")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def training_state(torch, ref) -> dict:
    state = {name: getattr(ref, name).state_dict() for name in
             ("actor", "ema_model", "critic", "critic_target", "actor_optimizer", "critic_optimizer")}
    if ref.lr_decay:
        state.update(actor_lr_scheduler=ref.actor_lr_scheduler.state_dict(),
                     critic_lr_scheduler=ref.critic_lr_scheduler.state_dict())
    return {"modules": state, "agent_step": ref.step, "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state()}


def restore(torch, ref, saved: dict) -> None:
    for name, value in saved["modules"].items():
        getattr(ref, name).load_state_dict(value)
    ref.step = saved["agent_step"]
    torch.set_rng_state(saved["torch_rng"])
    np.random.set_state(saved["numpy_rng"])


def evaluate(ref, dataset, seed: int, step: int, episodes: int) -> dict:
    def policy(observations, t):
        return np.stack([ref.sample_action(observation) for observation in observations])

    returns = rollout(policy, dataset.env_id, dataset.env_kwargs, episodes,
                      [seed + 100 + i for i in range(episodes)])["returns"]
    scores = dataset.normalized_score(returns)
    return {"step": step, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "score_mean": None if scores is None else float(scores.mean()),
            "score_std": None if scores is None else float(scores.std())}


def run_seed(torch, ql_diffusion, sampler_class, config, dataset, seed: int, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "checkpoint.pt"
    torch.manual_seed(seed)
    np.random.seed(seed)
    ref = reference.reference_agent(ql_diffusion, config, dataset.observation_dim, dataset.action_dim,
                                    float(np.max(dataset.max_action)))
    sampler = sampler_class({"observations": dataset.observations, "actions": dataset.actions,
                             "next_observations": dataset.next_observations, "rewards": dataset.rewards,
                             "terminals": dataset.dones}, "cpu", config.reward_tune)
    # `pending`: the losses and training seconds of the evaluation interval in progress.
    step, evaluations, wall, pending = 0, [], 0.0, {"losses": {key: [] for key in LOSSES}, "train_s": 0.0}
    if checkpoint.exists():
        check_same_data(folder, dataset.summary())  # a replay tier re-generated on another CPU is other data
        saved = torch.load(checkpoint, weights_only=False)
        restore(torch, ref, saved)
        step, evaluations, wall = saved["step"], saved["evaluations"], saved["wall_time_s"]
        pending = saved.get("pending", pending)
        print(f"[seed {seed}] resuming at step {step}", flush=True)
    else:
        write_json(folder / "config.json", {**jsonable(config), "algo": "dql-reference", "seed": seed,
                                            "reference_repo": os.path.abspath(FLAGS.repo)})
        write_json(folder / "dataset.json", {**dataset.summary(), "eval_env_id": dataset.env_id})
    last_eval = evaluations[-1]["step"] if evaluations else 0
    metrics = MetricsCSV(folder / "metrics.csv", list(LOSSES), resume_step=last_eval)
    piece_size = FLAGS.eval_every if config.lr_decay else min(FLAGS.save_every, FLAGS.eval_every)

    def save():
        torch.save({"step": step, "evaluations": evaluations, "wall_time_s": wall, "pending": pending,
                    **training_state(torch, ref)}, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)

    while step < FLAGS.steps:
        start = time.monotonic()
        next_eval = min(last_eval + FLAGS.eval_every, FLAGS.steps)
        piece = min(piece_size, next_eval - step)
        losses = ref.train(sampler, piece, batch_size=config.batch_size)
        pending["train_s"] += time.monotonic() - start
        for key in LOSSES:
            pending["losses"][key].extend(losses[key])
        step += piece
        if step < next_eval:
            wall += time.monotonic() - start
            save()
            continue
        evaluation = evaluate(ref, dataset, seed, step, FLAGS.eval_episodes)
        evaluations.append(evaluation)
        wall += time.monotonic() - start
        speed = (step - last_eval) / pending["train_s"]
        metrics.append({"step": step, "wall_time_s": wall, "steps_per_s": speed,
                        **{key: float(np.mean(pending["losses"][key])) for key in LOSSES},
                        **{f"eval_{key}": value for key, value in evaluation.items() if key != "step"}})
        last_eval, pending = step, {"losses": {key: [] for key in LOSSES}, "train_s": 0.0}
        save()
        print(f"[seed {seed}] step {step}/{FLAGS.steps} | {speed:.1f} steps/s | "
              f"eval: return {evaluation['return_mean']:.1f}, score {evaluation['score_mean']}", flush=True)
    summary = {"algo": "dql-reference", "seed": seed, "steps": step, "wall_time_s": wall,
               "final": evaluations[-1], "evaluations": evaluations, "dataset": dataset.summary()}
    write_json(folder / "summary.json", summary)
    plot_learning_curve(folder / "metrics.csv", folder / "learning_curve.png", f"dql-reference {dataset.name} "
                        f"seed {seed}", dataset.summary()["average_normalized_score"])
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    torch, ql_diffusion = reference.load_reference(FLAGS.repo)
    from utils.data_sampler import Data_Sampler  # the reference's, importable once its checkout is on sys.path

    try:
        config = resolve("dql", FLAGS.dataset, loop_flags={"steps": FLAGS.steps, "eval_every": FLAGS.eval_every,
                                                            "eval_episodes": FLAGS.eval_episodes,
                                                            "save_every": FLAGS.save_every},
                         overrides=parse_overrides(FLAGS.set))
    except ValueError as error:
        sys.exit(f"error: {error}")
    if config.lr_decay and config.lr_decay_every != FLAGS.eval_every:
        sys.exit(f"error: the reference steps its learning-rate schedule once per train() call, here every "
                 f"--eval_every={FLAGS.eval_every} updates, while lr_decay_every={config.lr_decay_every}: pass "
                 "--set=lr_decay=False or --set=lr_decay_every=<eval_every>")
    reference.check_comparable(config)
    dataset = load_dataset(FLAGS.dataset)
    if dataset.env_id is None:
        sys.exit(f"error: --dataset={FLAGS.dataset} names no environment to evaluate in")
    for seed in (int(s) for s in FLAGS.seeds):
        summary = run_seed(torch, ql_diffusion, Data_Sampler, config, dataset,
                           seed, Path(FLAGS.workdir) / f"seed_{seed}")
        print(json.dumps({"seed": seed, "final": summary["final"], "wall_time_s": round(summary["wall_time_s"], 1)}))


if __name__ == "__main__":
    app.run(main)
