"""Online imitation (`--algo=gail`): PPO in the env of `--dataset`, rewarded by a discriminator of its demonstrations.

Each round steps `num_envs` envs together for `rollout_length` steps (one compiled policy call per step for all
envs), then runs one compiled `agent.update` on the rollout (discriminator updates, rewards, GAE, PPO epochs).
`--steps` counts environment steps over all envs; evaluation (`dql.envs.rollout`, the deterministic policy)
and checkpoints happen at round boundaries. The run folder holds config.json, dataset.json, metrics.csv (one row per
round), learning_curve.png, summary.json and orbax checkpoints, so `dql.load_policy(workdir)` works on it.

Resuming is exact: a resumed run ends with the same parameters and the same metrics.csv (timing columns aside) as
one never interrupted. Every random draw is a function of the run's seed and a counter: env i's k-th episode starts
from `env.reset(seed=episode_seed(seed, i, k))`, the exploration noise of step t is fold_in(key, t), the update's
randomness lives in the agent. A checkpoint (taken at a round boundary: every save_every steps, and on SIGTERM)
holds the agent and, as JSON, each env's episode count, the actions of its episode in progress and its current
observation; a resumed run resets each env with its episode's seed, replays those actions and checks that it
arrives at the stored observation.
"""

from __future__ import annotations

import base64
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dql import logs
from dql.agents import AGENTS, hyperparams, select_actions
from dql.checkpoint import Checkpoints
from dql.data import Dataset
from dql.envs import make_env, rollout
from dql.run_folder import prepare_program, write_json
from dql.stopping import Preempted, StopSignal, TrainingDiverged, first_nonfinite

RECENT_EPISODES = 10  # train_return_mean: the mean true return of the last this many finished episodes


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    """The reset seed of env `env_index`'s `episode`-th episode (from 0) in a run of `seed`."""
    return int(np.random.SeedSequence([seed, env_index, episode]).generate_state(1)[0])


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _decode(text: str, dtype, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype).reshape(shape).copy()


class EnvGroup:
    """`num_envs` envs of one id stepped together; each keeps what its episode in progress needs to be rebuilt."""

    def __init__(self, env_id: str, env_kwargs: dict, num_envs: int, seed: int):
        self.envs = [make_env(env_id, env_kwargs) for _ in range(num_envs)]
        self.seed = seed
        self.episodes = [0] * num_envs  # episodes begun per env
        self.actions: list[list[np.ndarray]] = [[] for _ in range(num_envs)]  # since the episode began
        self.returns = np.zeros(num_envs)  # true return of the episode so far
        self.observations: np.ndarray | None = None  # [N, obs_dim] as the envs gave them

    def _reset(self, index: int) -> np.ndarray:
        observation, _ = self.envs[index].reset(seed=episode_seed(self.seed, index, self.episodes[index]))
        self.episodes[index] += 1
        self.actions[index], self.returns[index] = [], 0.0
        return np.asarray(observation)

    def start(self) -> None:
        self.observations = np.stack([self._reset(index) for index in range(len(self.envs))])

    def step(self, actions: np.ndarray):
        """Step every env; returns (next observations [N, O] (the final one where an episode ended), terminals [N],
        ends [N], the true returns of the episodes that ended). Ended episodes restart at once."""
        next_observations = np.empty_like(self.observations)
        terminals, ends, finished = np.zeros(len(self.envs), bool), np.zeros(len(self.envs), bool), []
        for index, env in enumerate(self.envs):
            observation, reward, terminated, truncated, _ = env.step(actions[index])
            self.actions[index].append(np.array(actions[index]))
            self.returns[index] += float(reward)
            next_observations[index] = observation
            terminals[index], ends[index] = terminated, terminated or truncated
            if ends[index]:
                finished.append(float(self.returns[index]))
                self.observations[index] = self._reset(index)
            else:
                self.observations[index] = observation
        return next_observations, terminals, ends, finished

    def state(self) -> dict:
        """JSON-ready: what `restore` rebuilds the episodes in progress from."""
        return {"episodes": list(self.episodes),
                "actions": [_encode(np.asarray(a, np.float32).ravel()) for a in self.actions],
                "observations": _encode(np.asarray(self.observations, np.float64)),
                "observation_shape": list(self.observations.shape)}

    def restore(self, state: dict, action_dim: int) -> None:
        """Reset each env with its episode's seed and replay the episode's actions; check the observation reached."""
        stored = _decode(state["observations"], np.float64, state["observation_shape"])
        observations = []
        for index, env in enumerate(self.envs):
            self.episodes[index] = int(state["episodes"][index]) - 1
            observation = self._reset(index)
            for action in _decode(state["actions"][index], np.float32, (-1, action_dim)):
                observation, reward, *_ = env.step(action)
                self.actions[index].append(action)
                self.returns[index] += float(reward)
            if not np.array_equal(np.asarray(observation, np.float64), stored[index]):
                raise ValueError(f"resuming: replaying env {index}'s episode in progress did not reproduce the "
                                 "observation the checkpoint recorded (another simulator build?); start the run in "
                                 "a new --workdir")
            observations.append(np.asarray(observation))
        self.observations = np.stack(observations)

    def close(self) -> None:
        for env in self.envs:
            env.close()


# Module-level, so that a resumed run in the same process reuses the compiled functions.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _create(algo, observation_dim, action_dim, hp, key, observation_stats):
    """The agent from one compiled initialiser (run op by op, its initialisers compile for seconds)."""
    return AGENTS[algo][0].create(key, observation_dim, action_dim, hp, observation_stats)


@jax.jit
def _explore(agent, observations, key, t):
    return agent.explore(observations, jax.random.fold_in(key, t))


@jax.jit
def _update(agent, batch):
    return agent.update(batch)


def check_imitation_config(config) -> None:
    for name in ("steps", "eval_every", "save_every", "eval_episodes"):
        if int(config[name]) <= 0:
            raise ValueError(f"--{name} (config.{name}) must be positive for --algo={config.algo}, got {config[name]}")
    if int(config.num_seeds) != 1:
        raise ValueError(f"--algo={config.algo} trains one seed per process; --num_seeds does not apply")
    for name in ("tensorboard", "wandb"):
        if config.get(name):
            raise ValueError(f"--config.{name}=True is not supported by the online loop (--algo={config.algo})")


def _crossed(before: int, after: int, every: int) -> bool:
    return before // every < after // every


def train_imitation(config, dataset: Dataset, env: tuple[str, dict], workdir: str | Path,
                    stop_at: int | None = None, verbose: bool = True) -> tuple[dict, object]:
    """Train GAIL on `dataset`'s demonstrations in `env` = (env_id, kwargs) for config.steps environment steps,
    resuming from the latest checkpoint in `workdir`; returns (summary, agent).

    stop_at: act as if SIGTERM arrived during the round that reaches this many environment steps (tests)."""
    check_imitation_config(config)
    workdir = Path(workdir)
    env_id, env_kwargs = env
    seed, algo = int(config.seed), config.algo
    label = f"{algo}:{dataset.name}-seed{seed}"
    max_action = np.asarray(dataset.max_action, np.float32)
    stats = (dataset.observations.mean(axis=0), dataset.observations.std(axis=0))
    hp = hyperparams(algo, config, max_action)
    agent = _create(algo, dataset.observation_dim, dataset.action_dim, hp, jax.random.PRNGKey(seed), stats)
    num_envs, length = hp.num_envs, hp.rollout_length
    rows = num_envs * length
    rounds = -(-int(config.steps) // rows)
    total = rounds * rows
    explore_key = jax.random.PRNGKey(seed + 1)
    demos = {"demo_observations": jnp.asarray(dataset.observations, jnp.float32),
             "demo_actions": jnp.asarray(dataset.actions, jnp.float32)}

    prepare_program(workdir, config, dataset.summary())  # config.json; a folder of another run is refused
    write_json(workdir / "dataset.json", {**dataset.summary(), "max_action": max_action.tolist(),
                                          "env_kwargs": env_kwargs, "eval_env_id": env_id})
    checkpoints = Checkpoints(workdir, max_to_keep=2)
    envs = EnvGroup(env_id, env_kwargs, num_envs, seed)
    meta = {"round": 0, "step": 0, "wall_time_s": 0.0, "evaluations": [], "recent_returns": [],
            "train_episodes": 0}
    try:
        latest = checkpoints.latest_step()
        if latest is not None:
            state, meta = checkpoints.restore(latest, {"agent": agent, "data_rng": explore_key})
            checkpoints.delete_after(latest)
            agent, explore_key = state["agent"], state["data_rng"]
            envs.restore(meta["envs"], dataset.action_dim)
            if verbose:
                print(f"[{label}] resuming at environment step {latest} of {total} from {checkpoints.directory}",
                      flush=True)
        else:
            envs.start()
        done_rounds = int(meta["round"])
        evaluations, recent = meta["evaluations"], list(meta["recent_returns"])
        metrics_csv = logs.MetricsCSV(workdir / "metrics.csv", list(_metric_names(agent, demos, num_envs, length)),
                                      resume_step=int(meta["step"]) if latest is not None else None)
        progress = logs.Progress(total, label) if verbose else None
        start = time.monotonic() - float(meta["wall_time_s"])
        last_print = (int(meta["step"]), time.monotonic())

        def save(step: int, round_index: int) -> None:
            meta.update({"round": round_index, "step": step, "wall_time_s": time.monotonic() - start,
                         "evaluations": evaluations, "recent_returns": recent, "envs": envs.state()})
            checkpoints.save(step, {"agent": agent, "data_rng": explore_key}, meta)

        with StopSignal() as stop:
            for round_index in range(done_rounds, rounds):
                round_start = time.monotonic()
                buffer = {"observations": np.zeros((length, num_envs, dataset.observation_dim), np.float32),
                          "draws": np.zeros((length, num_envs, dataset.action_dim), np.float32),
                          "next_observations": np.zeros((length, num_envs, dataset.observation_dim), np.float32),
                          "terminals": np.zeros((length, num_envs), bool), "ends": np.zeros((length, num_envs), bool)}
                for t in range(length):
                    observations = np.array(envs.observations, np.float32)  # a copy: step() changes them
                    draws, actions = jax.device_get(_explore(agent, observations, explore_key,
                                                             np.int32(round_index * length + t)))
                    next_observations, terminals, ends, finished = envs.step(np.asarray(actions))
                    buffer["observations"][t], buffer["draws"][t] = observations, draws
                    buffer["next_observations"][t], buffer["terminals"][t], buffer["ends"][t] = (
                        next_observations, terminals, ends)
                    recent = (recent + finished)[-RECENT_EPISODES:]
                    meta["train_episodes"] += len(finished)
                agent, metrics = _update(agent, {**buffer, **demos})
                metrics = {key: float(value) for key, value in jax.device_get(metrics).items()}
                step, before = (round_index + 1) * rows, round_index * rows
                bad = first_nonfinite({key: np.array([value]) for key, value in metrics.items()})
                if bad is not None:
                    saved = checkpoints.latest_step()
                    where = "no checkpoint yet" if saved is None else f"the last good checkpoint is step {saved}"
                    raise TrainingDiverged(
                        f"{bad[1]} became {metrics[bad[1]]} in the round ending at environment step {step} of "
                        f"{label} ({where}); lower --config.lr or --config.disc_lr")
                now = time.monotonic()
                row = {"step": step, "wall_time_s": now - start, "steps_per_s": rows / max(now - round_start, 1e-9),
                       **metrics, "train_return_mean": float(np.mean(recent)) if recent else None}
                last = round_index + 1 == rounds
                if last or _crossed(before, step, int(config.eval_every)):
                    evaluation = _evaluate(agent, env_id, env_kwargs, int(config.eval_episodes), seed, step, dataset)
                    evaluations.append(evaluation)
                    row.update({f"eval_{key}": evaluation[key] for key in
                                ("return_mean", "return_std", "score_mean", "score_std")})
                    if progress is not None:
                        score = evaluation["score_mean"]
                        progress.evaluated(step, f"return {evaluation['return_mean']:.1f} ± "
                                                 f"{evaluation['return_std']:.1f}"
                                                 + ("" if score is None else f", normalized score {score:.1f}"))
                metrics_csv.append(row)
                if progress is not None and (last or "eval_return_mean" in row or now - last_print[1] > 10.0):
                    progress.update(step, step - last_print[0], now - last_print[1], metrics)
                    last_print = (step, time.monotonic())
                stopping = stop.received or (stop_at is not None and step >= stop_at)
                if last or stopping or _crossed(before, step, int(config.save_every)):
                    save(step, round_index + 1)
                if stopping and not last:
                    print(f"[{label}] SIGTERM: stopped at environment step {step} with a checkpoint in "
                          f"{checkpoints.directory}; run the same command to resume", flush=True)
                    raise Preempted(f"preempted by SIGTERM at environment step {step}; the same command resumes")
    finally:
        envs.close()
        checkpoints.close()

    # The offline runs' layout (final / online choices, the dataset's summary), which experiments.report reads.
    summary = {"run": label, "algo": algo, "dataset": dataset.summary(), "env_id": env_id, "steps": total,
               "wall_time_s": time.monotonic() - start, "final": evaluations[-1],
               "online": max(evaluations, key=lambda e: e["return_mean"]), "evaluations": evaluations,
               "train_episodes": meta["train_episodes"]}
    write_json(workdir / "summary.json", summary)
    logs.plot_learning_curve(workdir / "metrics.csv", workdir / "learning_curve.png", label, None,
                             x_label="environment steps")
    if verbose:
        final, best = evaluations[-1], max(evaluations, key=lambda e: e["return_mean"])
        score = "" if final["score_mean"] is None else f" (normalized score {final['score_mean']:.1f})"
        print(f"[{label}] final return {final['return_mean']:.1f} ± {final['return_std']:.1f}{score}; best "
              f"{best['return_mean']:.1f} at step {best['step']}; {total} environment steps in "
              f"{summary['wall_time_s']:.1f} s; wrote {workdir}", flush=True)
    return summary, agent


def _metric_names(agent, demos, num_envs: int, length: int) -> list[str]:
    """The update's metric names (traced, not run) and the loop's own."""
    obs_dim, act_dim = demos["demo_observations"].shape[1], demos["demo_actions"].shape[1]
    batch = {"observations": jnp.zeros((length, num_envs, obs_dim)), "draws": jnp.zeros((length, num_envs, act_dim)),
             "next_observations": jnp.zeros((length, num_envs, obs_dim)),
             "terminals": jnp.zeros((length, num_envs), bool), "ends": jnp.zeros((length, num_envs), bool), **demos}
    _, metrics = jax.eval_shape(lambda agent, batch: agent.update(batch), agent, batch)
    return [*metrics, "train_return_mean"]


def _evaluate(agent, env_id: str, env_kwargs: dict, episodes: int, seed: int, step: int, dataset: Dataset) -> dict:
    """The deterministic policy's returns in `episodes` envs seeded seed + 100 + i, as the offline runs evaluate."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed + 100), step)
    returns = rollout(lambda observations, t: np.asarray(select_actions(agent, observations, key)),
                      env_id, env_kwargs, episodes, seed + 100)["returns"]
    scores = dataset.normalized_score(returns)
    return {"step": step, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "score_mean": None if scores is None else float(scores.mean()),
            "score_std": None if scores is None else float(scores.std())}
