"""Training and picking the behaviour policies that ship with the generated datasets (see dql.data.gym_datasets),
and re-running that training for the replay tiers. It sits above both the data layer and the online loop.

`train_policies` trains SAC online (or takes a finished `--algo=sac` run folder), picks the expert (the best
evaluation) and the medium policy (the first evaluation reaching a third of the expert's return), measures the
random, medium and expert returns with sampled actions, and writes them into dql/data/policies/<EnvId>/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from dql.configs.sac import get_config
from dql.data import gym_datasets
from dql.data.behaviour import BehaviourPolicy, load_actor, save_actor
from dql.data.dataset import DatasetError
from dql.envs import rollout
from dql.online import train_online


def measure_return(env_id: str, act, episodes: int, seed: int) -> dict:
    """Mean and std of the return of act(observations, t) over `episodes` episodes (sampled actions)."""
    returns = rollout(act, env_id, {}, episodes, seed)["returns"]
    return {"mean": float(returns.mean()), "std": float(returns.std()), "episodes": episodes}


def pick_policies(run_dir: Path) -> tuple[Path, Path]:
    """(medium, expert) snapshot files of a SAC run: expert the best evaluation, medium the first at 1/3 of it."""
    snapshots = sorted((run_dir / "policies").glob("step_*.npz"))
    if not snapshots:
        raise DatasetError(f"{run_dir / 'policies'} holds no step_*.npz snapshots: not a finished --algo=sac run")
    returns = [load_actor(path)[1]["eval_return_mean"] for path in snapshots]
    expert = int(np.argmax(returns))
    medium = next((i for i, value in enumerate(returns) if value >= returns[expert] / 3.0), expert)
    if returns[expert] <= 0 or medium == expert:
        raise DatasetError(f"{run_dir}: no evaluation before the best one reaches a third of its return "
                           f"({returns[expert]:.1f}); train longer")
    return snapshots[medium], snapshots[expert]


def train_policies(env_id: str, sac_steps: int, seed: int, from_run: str | None, episodes: int) -> dict:
    if env_id not in gym_datasets.ENVS:
        raise DatasetError(f"--env={env_id!r}: expected one of {', '.join(gym_datasets.ENVS)}")
    if from_run:
        run_dir = Path(from_run)
    else:
        config = get_config()
        config.steps, config.seed = sac_steps, seed
        # A fixed folder per (env, seed, steps): the same command after an interruption resumes the SAC run.
        run_dir = Path("runs") / f"sac-{env_id}-seed{seed}-steps{sac_steps}"
        train_online(config, env_id, run_dir)
    medium_file, expert_file = pick_policies(run_dir)
    key = jax.random.PRNGKey(seed)
    measured = {"random": measure_return(env_id, gym_datasets.random_actor(env_id, seed), 10 * episodes, seed)}
    for level, path in (("medium", medium_file), ("expert", expert_file)):
        policy = BehaviourPolicy(path)
        measured[level] = measure_return(env_id, lambda o, t: policy(o, jax.random.fold_in(key, t)), episodes, seed)
    out_dir = gym_datasets.policy_dir() / env_id
    out_dir.mkdir(parents=True, exist_ok=True)
    for level, path in (("medium", medium_file), ("expert", expert_file)):
        params, meta = load_actor(path)
        meta.update(level=level, sampled_return_mean=measured[level]["mean"], sampled_return_std=measured[level]["std"])
        save_actor(out_dir / f"{level}.npz", params, meta)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    reference = {
        "env_id": env_id,
        "random_return": measured["random"]["mean"],
        "expert_return": measured["expert"]["mean"],
        "medium_return": measured["medium"]["mean"],
        "measured": measured,
        "medium_step": load_actor(medium_file)[1]["step"],
        "expert_step": load_actor(expert_file)[1]["step"],
        "sac_steps": summary.get("steps"),
        "sac_wall_time_s": summary.get("wall_time_s"),
        "note": "returns with actions sampled from each policy (uniform for random), the behaviour of the datasets",
    }
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    shutil.copy(run_dir / "learning_curve.png", out_dir / "sac_learning_curve.png") if (
        run_dir / "learning_curve.png").exists() else None
    return reference


def shipped_sac_run(env_id: str, level: str) -> tuple[ConfigDict, dict, dict]:
    """The shipped `level` policy of `env_id` and the seeded SAC run that made it: (that run's config, the policy's
    actor parameters, its metadata)."""
    params, meta = load_actor(gym_datasets.shipped_policy(env_id, level))
    config = ConfigDict(meta["sac_config"])
    config.hidden_dims = tuple(config.hidden_dims)
    return config, params, meta


def replay_sac(env_id: str, level: str) -> tuple[dict, dict]:
    """Re-run the seeded SAC training that made the shipped `level` policy ("medium" or "expert"), up to its step:
    (buffer arrays in D4RL's layout, attributes for the file). The medium-replay and full-replay tiers of
    `gym_datasets.generate`."""
    config, shipped_params, meta = shipped_sac_run(env_id, level)
    print(f"  [{env_id}] re-running SAC (seed {config.seed}) to the {level} point, step {meta['step']}",
          file=sys.stderr, flush=True)
    _, buffer, agent = train_online(config, env_id, None, stop_at=int(meta["step"]), verbose=True)
    difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
                     zip(jax.tree_util.tree_leaves(shipped_params), jax.tree_util.tree_leaves(agent.actor.params)))
    if difference > 1e-4:
        print(f"  warning: the re-run's actor differs from the shipped {level} policy by up to {difference:.3g} "
              "(another JAX/XLA or MuJoCo version, a device, or a run made outside dql.reproducible's settings); "
              "the buffer is a replay of an equivalent, not identical, run",
              file=sys.stderr)
    arrays = buffer.contents()
    if not arrays["terminals"][-1]:
        arrays["timeouts"][-1] = True
    attrs = {f"replay_max_param_difference_to_shipped_{level}": difference, "seed": int(config.seed),
             "behaviour": f"replay buffer of SAC (seed {config.seed}) up to step {meta['step']}, the {level} point"}
    return arrays, attrs
