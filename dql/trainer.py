"""The offline training loop: compiled multi-step dispatches on device-resident data for S seeds at once,
evaluation, logs, checkpoints, resume and preemption.

A run is a program of `config.num_seeds` seeds (`dql.parallel` lays it over the devices). Per dispatch the loop
runs `dispatch_length` updates of every seed in one compiled call, then, per seed, checks the metrics for NaN/inf,
evaluates, appends to the seed's metrics.csv and checkpoints, each in that seed's own run folder.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from dql import logs
from dql.agents import AGENTS, create_agent
from dql.agents.common import hook
from dql.data import REWARD_TUNES, Dataset, training_arrays
from dql.evaluation import Evaluator
from dql.parallel import Layout, build_train_chunk, make_layout, put, seed_slice, stack_seeds, to_host
from dql.run_folder import SeedRun, prepare_program
from dql.stopping import Preempted, StopSignal, TrainingDiverged, first_nonfinite  # noqa: F401 (re-exported)


def layout_for(config) -> Layout:
    return make_layout(int(config.num_devices), int(config.num_seeds), str(config.parallel), int(config.batch_size))


LOOP_KEYS = ("steps", "batch_size", "steps_per_dispatch", "eval_every", "save_every", "steps_per_epoch", "num_seeds",
             "eval_episodes", "top_k", "reward_tune", "num_devices", "parallel", "seed")


def check_loop_config(config) -> None:
    """The loop's own settings; the agent checks its hyperparameters itself, `make_layout` the devices."""
    missing = [name for name in LOOP_KEYS if name not in config]
    if missing:
        raise ValueError(f"the config lacks the loop keys {', '.join(missing)}; a --config=FILE should start from "
                         f"dql/configs/{config.get('algo', 'ALGO')}.py (dql.configs.common.loop_config)")
    for name in ("steps", "batch_size", "steps_per_dispatch", "eval_every", "save_every", "steps_per_epoch",
                 "num_seeds"):
        if int(config[name]) <= 0:
            raise ValueError(f"--{name} (config.{name}) must be positive, got {config[name]}")
    if config.top_k < 0:
        raise ValueError(f"--config.top_k must be >= 0, got {config.top_k}")
    if config.reward_tune not in REWARD_TUNES:
        raise ValueError(f"--config.reward_tune={config.reward_tune!r}; expected one of {REWARD_TUNES}")
    if config.eval_episodes < 0:
        raise ValueError(f"--eval_episodes must be >= 0, got {config.eval_episodes}")


def dispatch_length(config) -> int:
    """Updates per compiled call: steps_per_dispatch, shortened to divide the eval and save intervals when that
    costs little, so that every dispatch has one length and the loop compiles once."""
    requested = int(config.steps_per_dispatch)
    aligned = math.gcd(requested, int(config.eval_every), int(config.save_every))
    return aligned if 4 * aligned >= requested else requested


def next_boundary(step: int, config) -> int:
    """The next step at which the loop must stop: a dispatch's end, an evaluation, a checkpoint or the end."""

    def next_multiple(every):
        return (step // every + 1) * every

    return min(step + dispatch_length(config), next_multiple(int(config.eval_every)),
               next_multiple(int(config.save_every)), int(config.steps))


def select_models(evaluations: list[dict], top_k: int) -> dict:
    """Final, online (best score) and offline (BC-loss rank top_k) choices among the evaluations.

    Offline selection picks the evaluation whose preceding BC loss is the (top_k)-th smallest, which is what the
    paper describes (its code indexes the argsort the other way round).
    """
    if not evaluations:
        return {}
    key = "score_mean" if evaluations[0].get("score_mean") is not None else "return_mean"
    choice = {"final": evaluations[-1], "online": max(evaluations, key=lambda e: e[key])}
    with_bc = [e for e in evaluations if e.get("bc_loss") is not None]
    if with_bc:
        order = np.argsort([e["bc_loss"] for e in with_bc], kind="stable")
        choice["offline"] = with_bc[int(order[min(top_k, len(with_bc) - 1)])]
    return choice


def _agent_hook(config, name: str):
    """The agent class's own data hook `name` (dql.agents.common.Agent), or None where it keeps the default."""
    return hook(AGENTS[config.algo][0], name)


def agent_arrays(config, dataset: Dataset) -> dict[str, np.ndarray]:
    """The host arrays the loop samples minibatches from: the transitions with the reward transform, or the agent
    class's `training_arrays(dataset, config)` when it has one (Diffuser's trajectory windows)."""
    hook = _agent_hook(config, "training_arrays")
    return hook(dataset, config) if hook is not None else training_arrays(dataset, config.reward_tune)


def agent_statistics(config, dataset: Dataset):
    """What `create` gets as observation_stats: (mean, std) of the observations, or the agent class's
    `dataset_statistics(dataset, config)` when it has one (Diffuser's normaliser of observations and actions)."""
    hook = _agent_hook(config, "dataset_statistics")
    if hook is not None:
        return hook(dataset, config)
    return dataset.observations.mean(axis=0), dataset.observations.std(axis=0)


def initial_state(config, dataset: Dataset, layout: Layout) -> tuple[object, np.ndarray]:
    """Host arrays of the S agents and data keys; seed s's equal a separate run's with --seed=s."""
    keys = [jax.random.split(jax.random.PRNGKey(int(config.seed) + index)) for index in range(layout.num_seeds)]
    agent_keys, data_keys = np.stack([k[0] for k in keys]), np.stack([k[1] for k in keys])
    observation_stats = agent_statistics(config, dataset)

    def make(key):
        return create_agent(config.algo, key, dataset.observation_dim, dataset.action_dim, dataset.max_action,
                            config, layout.agent_axis, observation_stats)

    return jax.device_get(jax.jit(jax.vmap(make))(agent_keys)), data_keys


def _resume(runs: list[SeedRun], agents, rngs, layout: Layout, label: str) -> tuple[int, object, object]:
    """(step, agents, rngs) from the newest checkpoint every seed has; 0 and the initial state when none.

    Seeds save one after another, so a program stopped while saving may have some seeds one checkpoint ahead (or,
    during its first save, some seeds with none): those newer checkpoints are dropped once all seeds restored.
    """
    saved = [set(run.checkpoints.all_steps()) | {0} for run in runs]
    step = max(set.intersection(*saved))
    if step == 0:
        for run in runs:
            run.checkpoints.delete_after(0)
        return 0, agents, rngs
    states = []
    for index, run in enumerate(runs):
        template = jax.tree_util.tree_map(jax.numpy.asarray, {"agent": seed_slice(agents, index),
                                                              "data_rng": rngs[index]})
        states.append(run.restore(step, template))
        if run.meta["num_devices"] != layout.data_width:
            # Each device draws its own slice of a seed's minibatch, so the width is part of the run's identity.
            raise ValueError(
                f"{run.directory} was trained with its batch split over {run.meta['num_devices']} device(s), this "
                f"layout splits it over {layout.data_width}; resume with --config.num_devices="
                f"{run.meta['num_devices']} (and --config.parallel=data), or start a new --workdir"
            )
    for run in runs:
        run.checkpoints.delete_after(step)
    print(f"[{label}] resumed from the checkpoint at step {step} in {runs[0].checkpoints.directory}", flush=True)
    return step, stack_seeds([s["agent"] for s in states]), stack_seeds([s["data_rng"] for s in states])


def _raise_if_nonfinite(metrics: dict[str, np.ndarray], first_step: int, run: SeedRun, label: str):
    bad = first_nonfinite(metrics)
    if bad is None:
        return
    index, key = bad
    saved = run.meta.get("last_saved")
    kept = (f"the last good checkpoint is step {saved} in {run.checkpoints.directory}" if saved
            else "no checkpoint was saved before it")
    raise TrainingDiverged(
        f"{key} became {metrics[key][index]} at step {first_step + index} (run {label}, seed {run.seed}); {kept}. "
        "Lower --config.lr or --config.grad_norm, or check the data's scale."
    )


def train(config, dataset: Dataset, workdir: str | Path, env: tuple[str, dict] | None) -> list[dict]:
    """Train config.algo on `dataset` for seeds seed .. seed + num_seeds - 1, resuming from the latest checkpoints
    in `workdir`; returns the seeds' summaries."""
    workdir = Path(workdir)
    check_loop_config(config)
    layout = layout_for(config)
    seeds = [int(config.seed) + index for index in range(layout.num_seeds)]
    label = f"{config.algo}:{dataset.name}" + (f" x{len(seeds)} seeds" if len(seeds) > 1 else "")
    # The agents first: a config their create() refuses (a goal wider than the observation, say) must fail before
    # the run folder and its config.json exist, or the corrected command would find "a run of another config" there.
    agents, rngs = initial_state(config, dataset, layout)
    dirs = prepare_program(workdir, config, dataset.summary())
    runs = [SeedRun(directory, seed, config, layout.data_width) for directory, seed in zip(dirs, seeds)]
    try:
        for run in runs:
            if run.writer:
                run_info = {**dataset.summary(), "max_action": np.asarray(dataset.max_action).tolist(),
                            "env_kwargs": env[1] if env else {}, "eval_env_id": env[0] if env else None}
                (run.directory / "dataset.json").write_text(json.dumps(run_info, indent=2) + "\n")
        step, agents, rngs = _resume(runs, agents, rngs, layout, label)
        evaluator = None
        if env is not None and int(config.eval_episodes) > 0:
            evaluator = Evaluator(env[0], env[1], int(config.eval_episodes), seeds, dataset)
        data = put(agent_arrays(config, dataset), layout.replicated)
        state = (put(agents, layout.seed_sharding), put(rngs, layout.seed_sharding))
        with StopSignal() as stop:
            _loop(config, layout, runs, state, data, step, evaluator, stop, label)
    finally:
        for run in runs:
            run.close()
    return [finish(config, dataset, run.directory, run.meta["evaluations"], label_of(config, dataset, run.seed,
                                                                                     len(seeds)))
            for run in runs]


def label_of(config, dataset: Dataset, seed: int, num_seeds: int) -> str:
    return f"{config.algo}:{dataset.name}" + (f" seed {seed}" if num_seeds > 1 else "")


def _loop(config, layout: Layout, runs: list[SeedRun], state, data, step: int, evaluator, stop: StopSignal,
          label: str) -> None:
    agents, rngs = state
    total_steps, resume_step = int(config.steps), step
    compiled: dict[int, object] = {}
    # In a multi-host run process 0 speaks for all.
    stream = sys.stdout if jax.process_index() == 0 else open(os.devnull, "w")  # noqa: SIM115
    progress = logs.Progress(total_steps, label, stream=stream, seeds=layout.num_seeds)
    if runs[0].meta["evaluations"]:
        progress.last_eval = f" | eval@{runs[0].meta['evaluations'][-1]['step']}: " + _describe_seeds(
            [run.meta["evaluations"][-1] for run in runs])
    train_start = time.monotonic()
    while step < total_steps:
        _stop_if_requested(stop, runs, step, agents, rngs, label)
        end = next_boundary(step, config)
        length = end - step
        if length not in compiled:
            start = time.monotonic()
            compiled[length] = build_train_chunk(layout, length).lower(agents, data, rngs).compile()
            print(f"[{label}] compiled {length} updates per dispatch in {time.monotonic() - start:.1f}s", file=stream,
                  flush=True)
            _stop_if_requested(stop, runs, step, agents, rngs, label)
        start = time.monotonic()
        agents, rngs, metrics = compiled[length](agents, data, rngs)
        metrics = {key: np.asarray(value) for key, value in to_host(metrics).items()}  # each [length, S]
        seconds = time.monotonic() - start
        for index, run in enumerate(runs):
            _raise_if_nonfinite({k: v[:, index] for k, v in metrics.items()}, step + 1, run, label)
            _account_bc_loss(run, metrics, index, length)
        step = end
        rate = progress.update(step, length, seconds, {k: float(np.mean(v)) for k, v in metrics.items()})
        results = None
        if evaluator is not None and (step % int(config.eval_every) == 0 or step == total_steps):
            results = _evaluate(evaluator, agents, step, runs)
            progress.evaluated(step, _describe_seeds(results))
        for index, run in enumerate(runs):
            row = {"step": step, "wall_time_s": round(time.monotonic() - train_start, 3), "steps_per_s": rate,
                   **{key: float(np.mean(value[:, index])) for key, value in metrics.items()}}
            if results is not None:
                row.update({f"eval_{k}": v for k, v in results[index].items() if k not in ("step", "bc_loss")})
            run.record(row, resume_step)
        if step % int(config.save_every) == 0 or step == total_steps:
            _save(runs, step, agents, rngs)
    if stream is not sys.stdout:
        stream.close()


def _stop_if_requested(stop: StopSignal, runs: list[SeedRun], step: int, agents, rngs, label: str) -> None:
    """After SIGTERM: make sure a checkpoint of `step` exists, say so, and stop."""
    if not stop.requested():
        return
    if step and runs[0].meta["last_saved"] != step:
        _save(runs, step, agents, rngs)
    where = runs[0].directory if len(runs) == 1 else runs[0].directory.parent
    print(f"[{label}] SIGTERM: stopped at step {step} with a checkpoint in {where}; run the same command to resume",
          flush=True)
    raise Preempted(f"preempted by SIGTERM at step {step}; the same command resumes")


def _account_bc_loss(run: SeedRun, metrics: dict[str, np.ndarray], index: int, length: int) -> None:
    if "bc_loss" in metrics:
        run.meta["bc_loss_sum"] += float(np.sum(metrics["bc_loss"][:, index], dtype=np.float64))
        run.meta["bc_loss_count"] += length


def _save(runs: list[SeedRun], step: int, agents, rngs) -> None:
    host = to_host({"agent": agents, "data_rng": rngs})
    for index, run in enumerate(runs):
        run.save(step, seed_slice(host, index))


def _evaluate(evaluator: Evaluator, agents, step: int, runs: list[SeedRun]) -> list[dict]:
    """Evaluate every seed, attach its mean BC loss since its previous evaluation, record it in its meta."""
    if jax.process_count() > 1:  # every process evaluates on its own first device, from one copy per evaluation
        agents = jax.device_put(to_host(agents), jax.local_devices()[0])
    results = evaluator(agents, step)
    for run, result in zip(runs, results):
        meta = run.meta
        # The BC loss since the previous evaluation: what offline model selection ranks.
        if meta["bc_loss_count"]:
            result["bc_loss"] = meta["bc_loss_sum"] / meta["bc_loss_count"]
        meta["bc_loss_sum"], meta["bc_loss_count"] = 0.0, 0
        meta["evaluations"].append(result)
    return results


def _describe(result: dict) -> str:
    text = f"return {result['return_mean']:.1f} ± {result['return_std']:.1f}"
    if result.get("score_mean") is not None:
        text += f", normalized score {result['score_mean']:.1f} ± {result['score_std']:.1f}"
    return text


def _describe_seeds(results: list[dict]) -> str:
    """One seed: its return (and score) ± the std over episodes; several: the mean over seeds ± the std of the
    seeds' means."""
    if len(results) == 1:
        return _describe(results[0])
    key = "score_mean" if results[0].get("score_mean") is not None else "return_mean"
    values = np.array([r[key] for r in results])
    name = "normalized score" if key == "score_mean" else "return"
    return f"{name} {values.mean():.1f} ± {values.std():.1f} over {len(values)} seeds"


def finish(config, dataset: Dataset, workdir: Path, evaluations: list[dict], label: str) -> dict:
    """Write summary.json and the learning curve; print the final score beside the data's own average."""
    data_summary = dataset.summary()
    summary = {"run": label, "steps": int(config.steps), "dataset": data_summary}
    summary.update(select_models(evaluations, int(config.top_k)))
    if jax.process_index() != 0:
        return summary
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if (workdir / "metrics.csv").exists():
        reference = data_summary["average_normalized_score"]
        if reference is None or not evaluations or evaluations[0].get("score_mean") is None:
            reference = data_summary["average_return"]
        logs.plot_learning_curve(workdir / "metrics.csv", workdir / "learning_curve.png", label, reference)

    average = data_summary["average_return"]
    normalized = data_summary["average_normalized_score"]
    lines = [f"== {label}: {config.steps} steps, results in {workdir}"]
    data_line = f"behaviour data ({data_summary['episodes']} episodes): average return {average:.1f}"
    if normalized is not None:
        data_line += f", normalized score {normalized:.1f}"
    lines.append(data_line)
    for name, title in (("final", "final policy"), ("online", "online selection (best eval)"),
                        ("offline", f"offline selection (BC-loss rank {config.top_k})")):
        if name in summary:
            lines.append(f"{title} at step {summary[name]['step']}: {_describe(summary[name])}")
    if not evaluations:
        lines.append("no evaluation ran (no environment, or --eval_episodes=0)")
    print("\n".join(lines), flush=True)
    return summary
