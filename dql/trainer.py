"""The training loop: compiled multi-step dispatches on device-resident data, evaluation, logs, checkpoints, resume.

One code path serves one device and many: the update runs under `shard_map` over a 1-D mesh named "data" (of one
device when there is one). Each device draws its share of the minibatch from its own replica of the dataset, the
agent averages gradients over the axis, and the agent stays replicated.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dql import logs
from dql.agents import create_agent, select_actions
from dql.checkpoint import Checkpoints
from dql.data import REWARD_TUNES, Dataset, sample_batch, training_arrays
from dql.evaluation import rollout

AXIS = "data"


class TrainingDiverged(RuntimeError):
    """A training metric became NaN or inf; the message names the step and the last good checkpoint."""


def make_mesh(num_devices: int = 0) -> Mesh:
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ValueError(f"--config.num_devices={num_devices}, but {len(devices)} device(s) are available")
    return Mesh(np.array(devices[: num_devices or len(devices)]), (AXIS,))


def build_train_chunk(mesh: Mesh, local_batch: int, length: int):
    """jit(shard_map(scan of `length` updates)); (agent, data, rng) -> (agent, rng, metrics of shape [length])."""

    def chunk(agent, data, rng):
        def body(carry, _):
            agent, rng = carry
            rng, key = jax.random.split(rng)
            # Each device samples its own part of the global batch.
            batch = sample_batch(data, jax.random.fold_in(key, jax.lax.axis_index(AXIS)), local_batch)
            agent, metrics = agent.update(batch)
            return (agent, rng), metrics

        (agent, rng), metrics = jax.lax.scan(body, (agent, rng), None, length=length)
        return agent, rng, metrics

    replicated = PartitionSpec()
    sharded = jax.shard_map(
        chunk,
        mesh=mesh,
        in_specs=(replicated, replicated, replicated),
        out_specs=(replicated, replicated, replicated),
        check_vma=False,
    )
    return jax.jit(sharded, donate_argnums=(0,))


def check_loop_config(config, num_devices: int) -> None:
    """The loop's own settings; the agent checks its hyperparameters itself."""
    for name in ("steps", "batch_size", "steps_per_dispatch", "eval_every", "save_every", "steps_per_epoch"):
        if int(config[name]) <= 0:
            raise ValueError(f"--{name} (config.{name}) must be positive, got {config[name]}")
    if config.top_k < 0:
        raise ValueError(f"--config.top_k must be >= 0, got {config.top_k}")
    if config.reward_tune not in REWARD_TUNES:
        raise ValueError(f"--config.reward_tune={config.reward_tune!r}; expected one of {REWARD_TUNES}")
    if config.eval_episodes < 0:
        raise ValueError(f"--eval_episodes must be >= 0, got {config.eval_episodes}")
    if config.batch_size % num_devices:
        raise ValueError(f"--batch_size={config.batch_size} must be divisible by the {num_devices} device(s)")


def dispatch_length(config) -> int:
    """Updates per compiled call: steps_per_dispatch, shortened to divide the eval and save intervals when that
    costs little, so that every dispatch has one length and the loop compiles once."""
    requested = int(config.steps_per_dispatch)
    aligned = math.gcd(requested, int(config.eval_every), int(config.save_every))
    return aligned if 4 * aligned >= requested else requested


def _next_boundary(step: int, config) -> int:
    """The next step at which the loop must stop: a dispatch's end, an evaluation, a checkpoint or the end."""

    def next_multiple(every):
        return (step // every + 1) * every

    return min(
        step + dispatch_length(config),
        next_multiple(int(config.eval_every)),
        next_multiple(int(config.save_every)),
        int(config.steps),
    )


def _first_nonfinite(metrics: dict[str, np.ndarray]) -> tuple[int, str] | None:
    for index in range(len(next(iter(metrics.values())))):
        for key in sorted(metrics):
            if not np.isfinite(metrics[key][index]):
                return index, key
    return None


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


class Evaluator:
    """Runs the agent's batched action selection in a vector env; reproducible from (seed, step)."""

    def __init__(self, env_id: str, env_kwargs: dict, episodes: int, seed: int, dataset: Dataset):
        self.env_id, self.env_kwargs, self.episodes = env_id, env_kwargs, episodes
        self.seed = seed + 100  # the reference evaluates with seed + 100
        self.dataset = dataset

    def __call__(self, agent, step: int) -> dict:
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), step)

        def policy(observations, t):
            return np.asarray(select_actions(agent, observations, jax.random.fold_in(key, t)))

        result = rollout(policy, self.env_id, self.env_kwargs, self.episodes, self.seed)
        returns = result["returns"]
        scores = self.dataset.normalized_score(returns)
        return {
            "step": step,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "score_mean": None if scores is None else float(scores.mean()),
            "score_std": None if scores is None else float(scores.std()),
        }


def _raise_if_nonfinite(metrics: dict[str, np.ndarray], first_step: int, meta: dict, where: Path, label: str):
    bad = _first_nonfinite(metrics)
    if bad is None:
        return
    index, key = bad
    saved = meta.get("last_saved")
    kept = f"the last good checkpoint is step {saved} in {where}" if saved else "no checkpoint was saved before it"
    raise TrainingDiverged(
        f"{key} became {metrics[key][index]} at step {first_step + index} (run {label}); {kept}. "
        "Lower --config.lr or --config.grad_norm, or check the data's scale."
    )


def train(config, dataset: Dataset, workdir: str | Path, env: tuple[str, dict] | None) -> dict:
    """Train config.algo on `dataset`, resuming from the latest checkpoint in `workdir`; returns the summary."""
    workdir = Path(workdir)
    mesh = make_mesh(int(config.num_devices))
    check_loop_config(config, mesh.size)
    local_batch = int(config.batch_size) // mesh.size
    total_steps = int(config.steps)
    replicated = NamedSharding(mesh, PartitionSpec())
    label = f"{config.algo}:{dataset.name}"

    data = jax.device_put(training_arrays(dataset, config.reward_tune), replicated)
    agent_key, data_key = jax.random.split(jax.random.PRNGKey(int(config.seed)))
    observation_stats = (dataset.observations.mean(axis=0), dataset.observations.std(axis=0))
    agent = create_agent(
        config.algo, agent_key, dataset.observation_dim, dataset.action_dim, dataset.max_action, config, AXIS,
        observation_stats,
    )
    state = jax.device_put({"agent": agent, "data_rng": data_key}, replicated)

    checkpoints = Checkpoints(workdir)
    tensorboard = None
    try:
        step = checkpoints.latest_step() or 0
        # bc_loss_sum/count: the BC loss since the last evaluation, which offline model selection ranks.
        meta = {"evaluations": [], "last_saved": None, "num_devices": mesh.size, "bc_loss_sum": 0.0,
                "bc_loss_count": 0}
        if step:
            state, meta = checkpoints.restore(step, state)
            if meta["num_devices"] != mesh.size:
                # Each device draws its own minibatch stream, so the device count is part of the run's identity.
                raise ValueError(
                    f"{workdir} was trained on {meta['num_devices']} device(s), this machine offers {mesh.size}; "
                    f"resume with --config.num_devices={meta['num_devices']} or start a new --workdir"
                )
            print(f"[{label}] resumed from the checkpoint at step {step} in {checkpoints.directory}", flush=True)
        agent, data_rng = state["agent"], state["data_rng"]

        evaluator = None
        if env is not None and int(config.eval_episodes) > 0:
            evaluator = Evaluator(env[0], env[1], int(config.eval_episodes), int(config.seed), dataset)

        compiled: dict[int, object] = {}
        metrics_csv = None
        tensorboard = logs.TensorBoard(workdir / "tensorboard") if config.get("tensorboard") else None
        progress = logs.Progress(total_steps, label)
        if meta["evaluations"]:
            last = meta["evaluations"][-1]
            progress.last_eval = f" | eval@{last['step']}: {_describe(last)}"
        train_start = time.monotonic()
        while step < total_steps:
            end = _next_boundary(step, config)
            length = end - step
            if length not in compiled:
                start = time.monotonic()
                compiled[length] = build_train_chunk(mesh, local_batch, length).lower(agent, data, data_rng).compile()
                print(f"[{label}] compiled {length} updates per dispatch in {time.monotonic() - start:.1f}s",
                      flush=True)
            start = time.monotonic()
            agent, data_rng, metrics = compiled[length](agent, data, data_rng)
            metrics = {key: np.asarray(value) for key, value in jax.device_get(metrics).items()}
            seconds = time.monotonic() - start
            _raise_if_nonfinite(metrics, step + 1, meta, checkpoints.directory, label)

            means = {key: float(np.mean(value)) for key, value in metrics.items()}
            if "bc_loss" in metrics:
                meta["bc_loss_sum"] += float(np.sum(metrics["bc_loss"], dtype=np.float64))
                meta["bc_loss_count"] += length
            if metrics_csv is None:
                metrics_csv = logs.MetricsCSV(workdir / "metrics.csv", list(means), resume_step=step)
            step = end
            rate = progress.update(step, length, seconds, means)
            row = {"step": step, "wall_time_s": round(time.monotonic() - train_start, 3), "steps_per_s": rate,
                   **means}

            if evaluator is not None and (step % int(config.eval_every) == 0 or step == total_steps):
                result = _evaluate(evaluator, agent, step, meta)
                row.update({f"eval_{k}": v for k, v in result.items() if k not in ("step", "bc_loss")})
                progress.evaluated(step, _describe(result))
            metrics_csv.append(row)
            if tensorboard is not None:
                tensorboard.scalars(step, {("eval/" + k[5:] if k.startswith("eval_") else f"train/{k}"): v
                                           for k, v in row.items() if k not in ("step", "wall_time_s")})

            if step % int(config.save_every) == 0 or step == total_steps:
                meta["last_saved"] = step
                checkpoints.save(step, {"agent": agent, "data_rng": data_rng}, meta)
    finally:
        checkpoints.close()
        if tensorboard is not None:
            tensorboard.close()
    return finish(config, dataset, workdir, meta["evaluations"], label)


def _evaluate(evaluator: Evaluator, agent, step: int, meta: dict) -> dict:
    """Evaluate, attach the mean BC loss since the previous evaluation, and record the result in `meta`."""
    result = evaluator(agent, step)
    if meta["bc_loss_count"]:
        result["bc_loss"] = meta["bc_loss_sum"] / meta["bc_loss_count"]
    meta["bc_loss_sum"], meta["bc_loss_count"] = 0.0, 0
    meta["evaluations"].append(result)
    return result


def _describe(result: dict) -> str:
    text = f"return {result['return_mean']:.1f} ± {result['return_std']:.1f}"
    if result.get("score_mean") is not None:
        text += f", normalized score {result['score_mean']:.1f} ± {result['score_std']:.1f}"
    return text


def finish(config, dataset: Dataset, workdir: Path, evaluations: list[dict], label: str) -> dict:
    """Write summary.json and the learning curve; print the final score beside the data's own average."""
    data_summary = dataset.summary()
    summary = {"run": label, "steps": int(config.steps), "dataset": data_summary}
    summary.update(select_models(evaluations, int(config.top_k)))
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


def checkpoint_template(config, observation_dim: int, action_dim: int, max_action):
    """An agent of the right structure to restore a checkpoint into (single device, no named axis)."""
    agent = create_agent(config.algo, jax.random.PRNGKey(0), observation_dim, action_dim, max_action, config)
    return {"agent": agent, "data_rng": jax.random.PRNGKey(0)}


