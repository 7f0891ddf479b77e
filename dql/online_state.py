"""The resumable state of an online run (`dql.online`): what a run interrupted by SIGTERM, a crash or the end of a
session needs to continue exactly where its last checkpoint stopped.

- the agent, as an orbax checkpoint (`dql.checkpoint.Checkpoints`), with the loop's bookkeeping as its JSON meta:
  the host RNG's state, the evaluations so far, the finished episodes' returns, the wall time;
- the replay buffer, as append-only chunks `replay/rows_<first>_<end>.npz`: each save writes only the rows
  collected since the previous one, so a 1M-step run does not rewrite its buffer at every checkpoint;
- the episode in progress, as the env's RNG state before the reset that began it and the buffer row where it
  began: a resumed run resets the env from that RNG state and replays the episode's actions from the buffer, which
  puts the simulator back into the same state (checked against the buffer's last observation) without reading
  any simulator internals, for any Gymnasium env.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dql.checkpoint import Checkpoints


class OnlineState:
    def __init__(self, workdir: Path):
        self.checkpoints = Checkpoints(workdir, max_to_keep=2)
        self.replay = Path(workdir) / "replay"
        self.saved_rows = 0

    def latest_step(self) -> int | None:
        return self.checkpoints.latest_step()

    def save(self, step: int, agent, buffer, meta: dict) -> None:
        """Rows first, then the checkpoint that counts them: a checkpoint never names rows that are not on disk."""
        if buffer.size > self.saved_rows:
            self.replay.mkdir(parents=True, exist_ok=True)
            path = self.replay / f"rows_{self.saved_rows:09d}_{buffer.size:09d}.npz"
            rows = {key: value[self.saved_rows:buffer.size] for key, value in buffer.arrays.items()}
            with open(path.with_suffix(".tmp"), "wb") as f:
                np.savez(f, **rows)
            path.with_suffix(".tmp").replace(path)
            self.saved_rows = buffer.size
        self.checkpoints.save(step, {"agent": agent}, {**meta, "buffer_size": buffer.size})

    def restore(self, agent_template, buffer) -> tuple[object, dict]:
        """(agent, meta) of the latest checkpoint; fills `buffer` with its rows and drops any rows saved after it."""
        step = self.checkpoints.latest_step()
        state, meta = self.checkpoints.restore(step, {"agent": agent_template})
        self.checkpoints.delete_after(step)
        size = int(meta["buffer_size"])
        for path in sorted(self.replay.glob("rows_*.npz")):
            first, end = (int(part) for part in path.stem.split("_")[1:])
            if first >= size:
                path.unlink()  # written after the checkpoint: these steps run again
                continue
            if end > size or first != buffer.size:
                raise ValueError(f"{path}: rows {first}-{end} do not continue the {buffer.size} rows read before it "
                                 f"(checkpoint of step {step} counts {size}); the replay folder was changed")
            with np.load(path) as rows:
                for key in buffer.arrays:
                    buffer.arrays[key][first:end] = rows[key]
            buffer.size = end
        if buffer.size != size:
            raise ValueError(f"{self.replay}: holds {buffer.size} rows, the checkpoint of step {step} needs {size}")
        self.saved_rows = size
        return state["agent"], meta

    def close(self) -> None:
        self.checkpoints.close()


def env_rng_state(env) -> dict:
    """The env's RNG state (JSON-ready): taken before a reset, it lets that reset be repeated."""
    return env.unwrapped.np_random.bit_generator.state


def restore_episode(env, seed: int, episode: dict, buffer) -> tuple[np.ndarray, float]:
    """Put `env` back into the episode in progress: reset as it was reset (with the seed for the run's first
    episode, else from the RNG state saved before that reset), then replay the buffer's actions since the episode
    began. Returns (current observation, the episode's return so far)."""
    if episode["reset_rng"] is None:
        observation, _ = env.reset(seed=seed)
    else:
        env.reset(seed=seed)  # a first reset, as the run made; the saved RNG state then repeats the later one
        env.unwrapped.np_random.bit_generator.state = episode["reset_rng"]
        observation, _ = env.reset()
    start, episode_return = int(episode["start"]), 0.0
    for row in range(start, buffer.size):
        observation, reward, *_ = env.step(buffer.arrays["actions"][row])
        episode_return += float(reward)
    expected = buffer.arrays["next_observations"][buffer.size - 1] if buffer.size > start else None
    if expected is not None and not np.array_equal(np.asarray(observation, np.float32), expected):
        raise ValueError("resuming: replaying the episode in progress did not reproduce the observation the buffer "
                         "recorded (a different simulator build?); start the run in a new --workdir")
    return observation, episode_return
