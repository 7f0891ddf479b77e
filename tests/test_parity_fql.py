"""FQL's noise injection (update = update_with_noise of its own draws) and, where a checkout of the authors' code
is given (FQL_CHECKOUT=/path/to/fql), the `fql` parity case at tiny sizes: equal to its update in float64."""

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
from dql.agents.fql import FQLAgent, FQLHyperparams

ROOT = Path(__file__).resolve().parent.parent
# Two compiled programs may round differently in the last bit; other draws would move the results by far more.
UPDATE = jax.jit(lambda agent, batch: agent.update(batch))
UPDATE_WITH_NOISE = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16, 16)", "--set=batch_size=8", "--set=flow_steps=3",
        "--updates=4", "--checkpoints=1,2"]


@pytest.mark.slow
def test_update_is_update_with_noise_of_the_draws_of_its_key():
    config = config_for("fql", ["hidden_dims=(16, 16)", "flow_steps=3"])
    agent = FQLAgent.create(jax.random.PRNGKey(3), 5, 2, FQLHyperparams.from_config(config, (2.0, 2.0)))
    batch = {key: jnp.asarray(value) for key, value in random_transitions(8, 5, 2, seed=1).items()}
    updated, metrics = UPDATE(agent, batch)
    rng, step_key = jax.random.split(agent.rng)
    noise = agent.draw_noise(step_key, 8)
    assert noise.times.shape == (8, 1) and noise.policy.shape == noise.flow.shape == (8, 2)
    assert float(noise.times.min()) >= 0.0 and float(noise.times.max()) < 1.0
    again, metrics_again = UPDATE_WITH_NOISE(agent.replace(rng=rng), batch, noise)
    for a, b in zip(jax.tree_util.tree_leaves((updated, metrics)), jax.tree_util.tree_leaves((again, metrics_again))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not os.path.isdir(os.environ.get("FQL_CHECKOUT", "")),
                    reason="set FQL_CHECKOUT to a checkout of seohongpark/fql")
def test_fql_equals_the_authors_code_in_float64(tmp_path):
    out = tmp_path / "fql.json"
    # At full optimisation: XLA:CPU at the suite's --xla_backend_optimization_level=0 turned the float64 gradients
    # of one jitted program here into NaN (finite eagerly and at the default level).
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    result = subprocess.run([sys.executable, "-m", "benchmarks.parity", "--algo=fql",
                             f"--repo={os.environ['FQL_CHECKOUT']}", f"--out={out}", *TINY], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["default", "min_normalized"]
    for variant in report["variants"]:
        for k, diff in variant["float64"].items():
            for part in ("params", "gradients", "losses"):
                assert diff[part] and max(e["rel_l2"] for e in diff[part].values()) < 1e-12, (variant["variant"], k)
        selection = variant["action_selection_float64"]
        assert selection["one_step_policy_max_abs"] < 1e-12 and selection["flow_max_abs"] < 1e-12
