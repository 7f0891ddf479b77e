"""EDP's noise injection (update = update_with_noise of its own draws), its DPM-Solver noise clip and the float64
time embedding, and, where a checkout of the authors' code is given (EDP_CHECKOUT=/path/to/edp), the `edp` parity
case at tiny sizes: equal to its update in float64."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.common import config_for, random_transitions
from dql.agents.edp import EDPAgent, EDPHyperparams, edp_noise_clip
from dql.agents.edp_nets import edp_time_embedding
from dql.diffusion import DiffusionSchedule

ROOT = Path(__file__).resolve().parent.parent
UPDATE = jax.jit(lambda agent, batch: agent.update(batch))
UPDATE_WITH_NOISE = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
SMALL = dict(hidden_dims=(16, 16), diffusion_steps=40, dpm_steps=3, crr_samples=3)
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16, 16)", "--set=batch_size=8", "--set=diffusion_steps=40",
        "--set=dpm_steps=6", "--set=num_action_candidates=4", "--updates=4", "--checkpoints=1,2"]


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["TD3", "CRR", "IQL"])
def test_update_is_update_with_noise_of_the_draws_of_its_key(loss_type):
    config = config_for("edp", [f"{key}={value!r}" for key, value in {**SMALL, "loss_type": loss_type}.items()])
    agent = EDPAgent.create(jax.random.PRNGKey(3), 5, 2, EDPHyperparams.from_config(config, (2.0, 2.0)))
    batch = {key: jnp.asarray(value) for key, value in random_transitions(8, 5, 2, seed=1).items()}
    updated, metrics = UPDATE(agent, batch)
    rng, step_key, order_key = jax.random.split(agent.rng, 3)
    noise = agent.draw_noise(step_key, order_key, 8)
    again, metrics_again = UPDATE_WITH_NOISE(agent.replace(rng=rng), batch, noise)
    for a, b in zip(jax.tree_util.tree_leaves((updated, metrics)), jax.tree_util.tree_leaves((again, metrics_again))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_noise_clip_bounds_the_implied_x0_at_the_truncated_step():
    schedule = DiffusionSchedule.create("scaled_linear", 1000)
    x = jnp.array([[0.3, -2.0], [1.5, 0.1], [0.0, 0.0]])
    eps = jnp.array([[-40.0, 0.2], [3.0, -0.5], [0.0, 100.0]])
    # 932.4 truncates to step 932; 665.9999 (a stage on step 666, rounded down) counts as 666; 0.5 as step 0.
    model_time = jnp.array([932.4, 665.9999, 0.5])
    clipped = np.asarray(edp_noise_clip(schedule, eps, x, model_time, jnp.ones(2)))
    n = np.array([932, 666, 0])
    x_w, e_w = schedule.sqrt_recip_alphas_cumprod[n][:, None], schedule.sqrt_recipm1_alphas_cumprod[n][:, None]
    x0 = x_w * np.asarray(x) - e_w * np.asarray(eps)
    expected = (x_w * np.asarray(x) - np.clip(x0, -1.0, 1.0)) / e_w
    np.testing.assert_allclose(clipped, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(x_w * np.asarray(x) - e_w * clipped) <= 1.0 + 1e-4)


def test_time_embedding_follows_the_network_precision():
    with jax.enable_x64(True):
        t = jnp.array([0.0, 1.0, 666.0, 932.4])
        embedding = edp_time_embedding(t, 16, jnp.float64)
        frequencies = np.exp(-np.log(10000.0) * np.arange(8) / 8)
        angles = np.asarray(t)[:, None] * frequencies
        assert embedding.dtype == jnp.float64
        np.testing.assert_allclose(embedding, np.concatenate([np.cos(angles), np.sin(angles)], -1), rtol=1e-13,
                                   atol=1e-13)
    assert edp_time_embedding(t, 16).dtype == jnp.float32


@pytest.mark.skipif(not os.path.isdir(os.environ.get("EDP_CHECKOUT", "")),
                    reason="set EDP_CHECKOUT to a checkout of sail-sg/edp")
def test_edp_equals_the_authors_code_in_float64(tmp_path):
    out = tmp_path / "edp.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "benchmarks.parity", "--algo=edp",
                             f"--repo={os.environ['EDP_CHECKOUT']}", f"--out={out}", *TINY], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["TD3", "CRR", "IQL", "TD3_max_q"]
    for variant in report["variants"]:
        for k, diff in variant["float64"].items():
            for part in ("params", "gradients", "losses"):
                assert diff[part] and max(e["rel_l2"] for e in diff[part].values()) < 1e-12, (variant["variant"], k)
        selection = variant["action_selection_float64"]
        assert selection["candidates_max_abs"] < 1e-12 and selection["same_choice"] == selection["states"]
