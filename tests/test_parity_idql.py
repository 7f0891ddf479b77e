"""IDQL's noise injection (update = update_with_noise of its own draws, dropout masks included) and, where a checkout
of the authors' code is given (IDQL_CHECKOUT=/path/to/IDQL), the `idql` parity case at small sizes: equal to its
update in float64."""

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
from dql.agents.idql import IDQLMLP, IDQLAgent, IDQLHyperparams, IDQLScoreNet, per_example_dropout_masks

ROOT = Path(__file__).resolve().parent.parent
UPDATE = jax.jit(lambda agent, batch: agent.update(batch))
UPDATE_WITH_NOISE = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
SMALL = dict(hidden_dims=(16, 16), actor_hidden_dim=16, actor_num_blocks=2, time_dim=8)
# The reference's LN_Resnet is 256 wide whatever the config says (its learner does not pass a width).
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16, 16)", "--set=batch_size=8", "--set=time_dim=8",
        "--set=actor_num_blocks=1", "--updates=4", "--checkpoints=1,2"]


def small_agent(**overrides):
    config = config_for("idql", [f"{key}={value!r}" for key, value in {**SMALL, **overrides}.items()])
    return IDQLAgent.create(jax.random.PRNGKey(3), 5, 2, IDQLHyperparams.from_config(config, (2.0, 2.0)))


@pytest.mark.slow
def test_update_is_update_with_noise_of_the_draws_of_its_key():
    agent = small_agent()
    batch = {key: jnp.asarray(value) for key, value in random_transitions(8, 5, 2, seed=1).items()}
    updated, metrics = UPDATE(agent, batch)
    rng, step_key = jax.random.split(agent.rng)
    noise = agent.draw_noise(step_key, 8)
    assert noise.bc_steps.shape == (8,) and noise.bc_noise.shape == (8, 2)
    assert noise.dropout_masks.shape == (2, 8, 16) and noise.dropout_masks.dtype == jnp.bool_
    again, metrics_again = UPDATE_WITH_NOISE(agent.replace(rng=rng), batch, noise)
    for a, b in zip(jax.tree_util.tree_leaves((updated, metrics)), jax.tree_util.tree_leaves((again, metrics_again))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert small_agent(actor_dropout=0.0).draw_noise(step_key, 8).dropout_masks is None


def test_dropout_masks_scale_kept_entries_and_zero_the_rest():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    masks = per_example_dropout_masks(keys, 0.1, 2, 16)
    assert masks.shape == (2, 4000, 16) and abs(float(masks.mean()) - 0.9) < 0.01
    assert not np.array_equal(np.asarray(masks[0]), np.asarray(masks[1]))  # each block its own mask
    # The blocks' inputs are kept and scaled by 1 / 0.9, or zeroed (without LayerNorm, which would undo the scale).
    net = IDQLScoreNet(2, 8, 16, 1, 0.1, False, "swish")
    s, a, t = jnp.ones((3, 5)), jnp.ones((3, 2)), jnp.zeros((3, 1))
    params = net.init(jax.random.PRNGKey(1), s, a, t)
    plain = net.apply(params, s, a, t)
    kept = net.apply(params, s, a, t, jnp.ones((1, 3, 16), bool))
    dropped = net.apply(params, s, a, t, jnp.zeros((1, 3, 16), bool))
    assert not np.allclose(plain, kept) and not np.allclose(kept, dropped)


def test_fourier_features_follow_the_parameters_precision():
    # In float64 the conditioning MLP sees [cos 2 pi t W, sin 2 pi t W] in float64 (a float32 2 pi t is ~1e-7 off).
    net = IDQLScoreNet(2, 8, 16, 1, 0.0, True, "swish")
    with jax.enable_x64(True):
        s, a, t = jnp.ones((3, 5)), jnp.ones((3, 2)), jnp.array([[1.0], [3.0], [4.0]])
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), net.init(jax.random.PRNGKey(1), s, a, t))
        _, state = net.apply(params, s, a, t, capture_intermediates=True, mutable=["intermediates"])
        f = 2.0 * np.pi * np.asarray(t) @ np.asarray(params["params"]["fourier_kernel"]).T
        mlp = IDQLMLP((16, 16), "swish")
        expected = mlp.apply({"params": params["params"]["IDQLMLP_0"]}, np.concatenate([np.cos(f), np.sin(f)], -1))
        np.testing.assert_allclose(state["intermediates"]["IDQLMLP_0"]["__call__"][0], expected, rtol=1e-13,
                                   atol=1e-13)


@pytest.mark.skipif(not os.path.isdir(os.environ.get("IDQL_CHECKOUT", "")),
                    reason="set IDQL_CHECKOUT to a checkout of philippe-eecs/IDQL")
def test_idql_equals_the_authors_code_in_float64(tmp_path):
    out = tmp_path / "idql.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "benchmarks.parity", "--algo=idql",
                             f"--repo={os.environ['IDQL_CHECKOUT']}", f"--out={out}", *TINY], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (variant,) = json.loads(out.read_text())["variants"]
    for k, diff in variant["float64"].items():
        for part in ("params", "gradients", "losses"):
            assert diff[part] and max(e["rel_l2"] for e in diff[part].values()) < 1e-12, (k, part)
    selection = variant["action_selection_float64"]
    assert selection["argmax_action_max_abs"] < 1e-12 and selection["implicit_action_max_abs"] < 1e-12
    assert selection["same_argmax_candidate"] == selection["same_implicit_candidate"] == selection["states"]
