"""Online training in a Gymnasium environment (`--algo=sac`): the learner behind the project's generated datasets.

SpinningUp's SAC loop: `start_steps` uniform random actions, then actions sampled from the policy; from
`update_after` on, every `update_every` environment steps run as many updates in one compiled `lax.scan` (one
update per environment step on average). The replay buffer lives on the host and keeps every transition, so the
buffer up to any step is the medium-replay data of the policy at that step. The run is a pure function of the
seed on one machine: re-running it reproduces the same policies and the same buffer, which is how
`medium-replay` is regenerated.

At every evaluation the actor is saved to `policies/step_XXXXXXXX.npz` (see `dql.data.behaviour`) with its
evaluation return, and the whole run is checkpointed (`dql.online_state`: agent, replay rows, RNG, the episode in
progress); running the same command on the same folder continues from the last checkpoint exactly, and SIGTERM
checkpoints the current step and stops. `metrics.csv`, `learning_curve.png` and `summary.json` are written as for
offline runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np

from dql import logs
from dql.agents import create_agent, select_actions
from dql.data.behaviour import save_actor
from dql.envs import rollout
from dql.online_state import OnlineState, env_rng_state, restore_episode
from dql.stopping import Preempted, StopSignal, TrainingDiverged, first_nonfinite

BUFFER_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


class ReplayBuffer:
    """Host arrays in D4RL's layout (rows in the order they were collected, terminals and timeouts per row)."""

    def __init__(self, capacity: int, observation_dim: int, action_dim: int):
        self.size = 0
        self.arrays = {
            "observations": np.zeros((capacity, observation_dim), np.float32),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, observation_dim), np.float32),
            "terminals": np.zeros(capacity, bool),
            "timeouts": np.zeros(capacity, bool),
        }

    def add(self, **row) -> None:
        for key, value in row.items():
            self.arrays[key][self.size] = value
        self.size += 1

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """[num_batches, batch_size, ...] minibatches in the agents' batch layout."""
        index = rng.integers(0, self.size, (num_batches, batch_size))
        return {
            "observations": self.arrays["observations"][index],
            "actions": self.arrays["actions"][index],
            "rewards": self.arrays["rewards"][index],
            "next_observations": self.arrays["next_observations"][index],
            # Only a true termination cuts the bootstrap; a time limit does not.
            "dones": self.arrays["terminals"][index].astype(np.float32),
        }

    def contents(self, upto: int | None = None) -> dict[str, np.ndarray]:
        upto = self.size if upto is None else upto
        return {key: value[:upto].copy() for key, value in self.arrays.items()}


SAC_METRICS = ("actor_loss", "alpha", "alpha_loss", "critic_loss", "entropy", "q_mean")


def check_online_config(config) -> None:
    for name in ("steps", "batch_size", "eval_every", "eval_episodes"):
        if int(config[name]) <= 0:
            raise ValueError(f"--{name} (config.{name}) must be positive, got {config[name]}")
    if int(config.update_every) <= 0:
        raise ValueError(f"--config.update_every must be positive, got {config.update_every}")
    for name in ("start_steps", "update_after"):
        if int(config[name]) < 0:
            raise ValueError(f"--config.{name} must be >= 0, got {config[name]}")
    # The online loop writes metrics.csv, its policy snapshots and the learning curve only.
    for name in ("tensorboard", "wandb"):
        if config.get(name):
            raise ValueError(f"--config.{name}=True is not supported by the online loop (--algo={config.algo})")


def check_online_env(env_id: str) -> tuple[np.ndarray, int]:
    """(action bound, observation size) of env_id; ValueError unless SAC can act in it."""
    from dql.envs import make_vector_env

    envs = make_vector_env(env_id, {}, 1)  # registers gymnasium-robotics envs, errors name --env
    try:
        action_space, observation_space = envs.single_action_space, envs.single_observation_space
    finally:
        envs.close()
    if not isinstance(action_space, gym.spaces.Box) or not np.allclose(-action_space.low, action_space.high):
        raise ValueError(f"--env={env_id}: SAC needs a symmetric Box action space, got {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"--env={env_id}: SAC needs flat Box observations, got {observation_space}")
    return np.asarray(action_space.high, np.float32), observation_space.shape[0]


# Module-level, so that every run of a process (a resumed one, the replays of dql.policy_training) reuses the
# compiled functions.
@jax.jit
def _explore(agent, observation, key):
    return agent.explore_actions(observation[None], key)[0]


@jax.jit
def _update_chunk(agent, batches):
    return jax.lax.scan(lambda agent, batch: agent.update(batch), agent, batches)


def train_online(config, env_id: str, workdir: str | Path | None, stop_at: int | None = None,
                 verbose: bool = True) -> tuple[dict, ReplayBuffer, object]:
    """Run SAC in `env_id` for config.steps environment steps (or until `stop_at`); returns (summary, buffer, agent).

    With workdir None nothing is written (used to regenerate a replay buffer).
    """
    check_online_config(config)
    total = int(config.steps) if stop_at is None else min(int(stop_at), int(config.steps))
    seed, update_every = int(config.seed), int(config.update_every)
    max_action, observation_dim = check_online_env(env_id)
    action_dim = max_action.shape[0]
    env = gym.make(env_id)
    agent = create_agent("sac", jax.random.PRNGKey(seed), observation_dim, action_dim, max_action, config)
    buffer = ReplayBuffer(total, observation_dim, action_dim)
    rng = np.random.default_rng(seed)
    explore_key = jax.random.PRNGKey(seed + 1)
    workdir = None if workdir is None else Path(workdir)
    label = f"sac-{env_id}-seed{seed}"
    state = None if workdir is None else OnlineState(workdir)
    evaluations, episode_returns, train_metrics, done_steps, wall = [], [], {}, 0, 0.0
    episode = {"reset_rng": None, "start": 0}  # how the episode in progress began (see dql.online_state)
    if state is not None and state.latest_step() is not None:
        agent, meta = state.restore(agent, buffer)
        done_steps, wall, episode = int(meta["step"]), float(meta["wall_time_s"]), meta["episode"]
        evaluations, episode_returns, train_metrics = meta["evaluations"], meta["episode_returns"], meta["train"]
        rng.bit_generator.state = meta["rng"]
        observation, episode_return = restore_episode(env, seed, episode, buffer)
        print(f"[{label}] resuming at step {done_steps} of {total} from {state.checkpoints.directory}", flush=True)
    else:
        observation, _ = env.reset(seed=seed)
        episode_return = 0.0
    if workdir is not None:
        (workdir / "policies").mkdir(parents=True, exist_ok=True)
        metrics_csv = logs.MetricsCSV(workdir / "metrics.csv", list(SAC_METRICS),
                                      resume_step=done_steps if done_steps else None)
    progress = logs.Progress(total, label) if verbose else None
    start = time.monotonic() - wall
    last_report = (done_steps, time.monotonic())

    def save(step: int) -> None:
        state.save(step, agent, buffer, {"step": step, "wall_time_s": time.monotonic() - start, "episode": episode,
                                         "rng": rng.bit_generator.state, "evaluations": evaluations,
                                         "episode_returns": episode_returns, "train": train_metrics})

    # SIGTERM sets stop.received (the handler before it is put back below); a run without a folder cannot resume,
    # so it keeps the default handler.
    stop = StopSignal() if state is not None else None
    if stop is not None:
        stop.__enter__()
    try:
        for step in range(done_steps + 1, total + 1):
            if step <= int(config.start_steps):
                action = rng.uniform(-max_action, max_action).astype(np.float32)
            else:
                action = np.asarray(_explore(agent, observation, jax.random.fold_in(explore_key, step)))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            buffer.add(observations=observation, actions=action, rewards=reward, next_observations=next_observation,
                       terminals=terminated, timeouts=truncated and not terminated)
            episode_return += float(reward)
            observation = next_observation
            if terminated or truncated:
                episode_returns.append(episode_return)
                episode = {"reset_rng": env_rng_state(env), "start": buffer.size}
                observation, _ = env.reset()
                episode_return = 0.0

            if step >= int(config.update_after) and step % update_every == 0:
                agent, metrics = _update_chunk(agent, buffer.sample(rng, update_every, int(config.batch_size)))
                metrics = jax.device_get(metrics)
                bad = first_nonfinite(metrics)
                if bad is not None:
                    index, key = bad
                    update = step - update_every + index + 1
                    raise TrainingDiverged(f"{key} became {metrics[key][index]} at update {update} of {label}; "
                                           "lower --config.lr")
                train_metrics = {key: float(np.mean(value)) for key, value in metrics.items()}

            if step % int(config.eval_every) == 0 or step == total:
                evaluation = _evaluate(agent, env_id, int(config.eval_episodes), seed, step)
                evaluation["train_return_mean"] = float(np.mean(episode_returns[-10:])) if episode_returns else None
                evaluations.append(evaluation)
                now = time.monotonic()
                rate = (step - last_report[0]) / max(now - last_report[1], 1e-9)  # env steps/s, evaluation included
                if progress is not None:
                    progress.update(step, step - last_report[0], now - last_report[1], train_metrics)
                    progress.evaluated(
                        step, f"return {evaluation['return_mean']:.1f} ± {evaluation['return_std']:.1f}")
                last_report = (step, now)
                if workdir is not None:
                    metrics_csv.append({"step": step, "wall_time_s": now - start, "steps_per_s": rate,
                                        **train_metrics, "eval_return_mean": evaluation["return_mean"],
                                        "eval_return_std": evaluation["return_std"]})
                    save_actor(workdir / "policies" / f"step_{step:08d}.npz", agent.actor.params,
                               policy_meta(agent, env_id, config, step, evaluation))
                    save(step)
            if stop is not None and stop.received:
                if state.latest_step() != step:
                    save(step)
                print(f"[{label}] SIGTERM: stopped at step {step} with a checkpoint in {state.checkpoints.directory}; "
                      "run the same command to resume", flush=True)
                raise Preempted(f"preempted by SIGTERM at step {step}; the same command resumes")
    finally:
        env.close()
        if stop is not None:
            stop.__exit__()
            state.close()

    summary = {"run": label, "env_id": env_id, "steps": total, "wall_time_s": time.monotonic() - start,
               "evaluations": evaluations, "train_episodes": len(episode_returns)}
    if workdir is not None:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logs.plot_learning_curve(workdir / "metrics.csv", workdir / "learning_curve.png", label, None,
                                 x_label="environment steps (one update each)")
        if verbose:
            best = max(evaluations, key=lambda e: e["return_mean"])
            print(f"[{label}] final return {evaluations[-1]['return_mean']:.1f} ± {evaluations[-1]['return_std']:.1f}"
                  f"; best {best['return_mean']:.1f} at step {best['step']}; wrote {workdir}", flush=True)
    return summary, buffer, agent


def _evaluate(agent, env_id: str, episodes: int, seed: int, step: int) -> dict:
    key = jax.random.fold_in(jax.random.PRNGKey(seed + 100), step)
    result = rollout(lambda observations, t: np.asarray(select_actions(agent, observations, key)),
                     env_id, {}, episodes, seed + 100)
    return {"step": step, "return_mean": float(result["returns"].mean()),
            "return_std": float(result["returns"].std())}


def policy_meta(agent, env_id: str, config, step: int, evaluation: dict) -> dict:
    """What a behaviour-policy file records: enough to rebuild the actor, and how it was trained and how it did."""
    return {
        "env_id": env_id,
        "hidden_dims": list(agent.hp.hidden_dims),
        "activation": agent.hp.activation,
        "max_action": list(agent.hp.max_action),
        "step": step,
        "eval_return_mean": evaluation["return_mean"],
        "eval_return_std": evaluation["return_std"],
        "sac_config": {key: (list(value) if isinstance(value, tuple) else value)
                       for key, value in config.to_dict().items()},
    }
