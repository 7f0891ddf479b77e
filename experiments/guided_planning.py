"""Value-guided planning against unguided sampling, with one trained Diffuser on a locomotion tier.

    python -m launch.local experiments/sweeps/guided_hopper.py --root=runs/guided_hopper
    python -m experiments.guided_planning runs/guided_hopper --out=experiments/results/guided-hopper

The saved planner (diffusion model and value model of one run) plans three ways from the same noise:
- unguided: the first of the N samples, no value model (Diffuser without guidance);
- best of N: the highest-valued of the N samples, no gradient steps (guide scale 0);
- guided: the run's guide scale (and every --scales value), gradient steps on the value, then the best of N.
For each it reports the value model's prediction (at diffusion step 0) for the chosen plans from --states dataset
states, how often the chosen plan is valued above the unguided one from the same noise, and the return and
normalized score of --episodes episodes replanning at every step on the evaluation's env seeds and keys. Writes
results.json and table.md under --out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import dql
from dql.data import load_dataset
from dql.data.evaluation_envs import env_for_dataset
from experiments.runs import evaluate_agent, find_runs

flags.DEFINE_string("out", "experiments/results/guided-hopper", "Folder for results.json and table.md.")
flags.DEFINE_integer("episodes", 10, "Evaluation episodes per variant (replanning at every step).")
flags.DEFINE_integer("states", 256, "Dataset states the plans' predicted values are averaged over.")
flags.DEFINE_list("scales", [], "Guide scales evaluated besides the run's own (for example 0.01,1.0).")
FLAGS = flags.FLAGS


def variants(hp, scales: list[float]) -> dict:
    """name -> the planner's hyperparameters for that way of planning."""
    out = {"unguided": dataclasses.replace(hp, use_value_guide=False),
           "best of N": dataclasses.replace(hp, guide_scale=0.0)}
    for scale in sorted({hp.guide_scale, *scales} - {0.0}):
        out[f"guided, scale {scale:g}"] = dataclasses.replace(hp, guide_scale=scale)
    return out


def chosen_values(agent, observations: jax.Array, rng: jax.Array) -> jax.Array:
    """The value model's prediction, at diffusion step 0, for the plan `agent` chooses from each state."""
    _, chosen, _ = agent.plans(observations, rng)
    return agent.value.apply_fn(agent.value_ema_params, chosen, jnp.zeros((chosen.shape[0],), jnp.int32))


def study(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    dataset = load_dataset(config["dataset"])
    env = env_for_dataset(dataset, config.get("env"))
    policy = dql.load_policy(run)
    agent, seed = policy.agent, int(config["seed"])
    if not agent.hp.use_value_guide:
        raise SystemExit(f"error: {run} was trained without a value model (--config.use_value_guide=False)")
    rows = np.random.default_rng(0).choice(len(dataset.observations), FLAGS.states, replace=False)
    states = jnp.asarray(dataset.observations[rows], jnp.float32)
    print(f"{run}: {config['dataset']}, step {policy.step}, {agent.hp.num_plan_samples} plans per state", flush=True)
    results, unguided_values = {}, None
    for name, hp in variants(agent.hp, [float(s) for s in FLAGS.scales]).items():
        variant = agent.replace(hp=hp)
        values = np.asarray(jax.jit(chosen_values)(variant, states, jax.random.PRNGKey(0)))
        unguided_values = values if unguided_values is None else unguided_values
        evaluation = evaluate_agent(variant, env, FLAGS.episodes, seed, dataset)
        results[name] = {"predicted_value_mean": float(values.mean()),
                         "above_unguided": float((values > unguided_values).mean()), **evaluation}
        print(f"  {name}: predicted value {values.mean():.2f}, above unguided {results[name]['above_unguided']:.2f}"
              f", score {evaluation['score_mean']:.1f} ± {evaluation['score_std']:.1f}", flush=True)
    return {"run": str(run), "dataset": config["dataset"], "step": policy.step,
            "num_plan_samples": agent.hp.num_plan_samples, "episodes": FLAGS.episodes, "states": FLAGS.states,
            "variants": results}


def table(studies: list[dict]) -> str:
    lines = ["| run | planning | predicted value of the chosen plan | valued above unguided | return | score |",
             "|---|---|---|---|---|---|"]
    for entry in studies:
        name = f"{entry['dataset']} step {entry['step']}"
        for variant, result in entry["variants"].items():
            lines.append(f"| {name} | {variant} | {result['predicted_value_mean']:.2f} | "
                         f"{100 * result['above_unguided']:.0f}% | {result['return_mean']:.1f} ± "
                         f"{result['return_std']:.1f} | {result['score_mean']:.1f} ± {result['score_std']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    roots = argv[1:]
    if not roots:
        raise app.UsageError("give the run folder(s) or sweep root(s) with the Diffuser runs")
    runs = [run for run in find_runs(roots) if json.loads((run / "config.json").read_text())["algo"] == "diffuser"]
    if not runs:
        raise SystemExit(f"error: no diffuser run folder at or below {' '.join(roots)}")
    studies = [study(run) for run in runs]
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(studies, indent=2) + "\n")
    (out / "table.md").write_text(table(studies))
    print(table(studies))


if __name__ == "__main__":
    app.run(main)
