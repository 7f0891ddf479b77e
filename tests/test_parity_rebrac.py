"""ReBRAC's noise injection (update = update_with_noise of its own draws) and, where a CORL checkout is given
(CORL_CHECKOUT=/path/to/CORL), the `rebrac` parity case at tiny sizes: equal to CORL's update in float64."""

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
from dql.agents.rebrac import ReBRACAgent, ReBRACHyperparams

ROOT = Path(__file__).resolve().parent.parent
# Two compiled programs may round differently in the last bit; other draws would move the results by far more.
UPDATE = jax.jit(lambda agent, batch: agent.update(batch))
UPDATE_WITH_NOISE = jax.jit(lambda agent, batch, noise: agent.update_with_noise(batch, noise))
TINY = ["--obs_dim=5", "--act_dim=2", "--set=hidden_dims=(16, 16)", "--set=batch_size=8", "--updates=4",
        "--checkpoints=1,2"]


def tiny_agent_and_batch():
    config = config_for("rebrac", ["hidden_dims=(16, 16)"])
    agent = ReBRACAgent.create(jax.random.PRNGKey(3), 5, 2, ReBRACHyperparams.from_config(config, (2.0, 2.0)))
    batch = {key: jnp.asarray(value) for key, value in random_transitions(8, 5, 2, seed=1).items()}
    return agent, batch


def test_update_is_update_with_noise_of_the_draws_of_its_key():
    agent, batch = tiny_agent_and_batch()
    for _ in range(2):  # an actor step, then a critic-only one
        updated, metrics = UPDATE(agent, batch)
        rng, step_key = jax.random.split(agent.rng)
        noise = agent.draw_noise(step_key, 8)
        assert noise.target_policy.shape == (8, 2)
        again, metrics_again = UPDATE_WITH_NOISE(agent.replace(rng=rng), batch, noise)
        for a, b in zip(jax.tree_util.tree_leaves((updated, metrics)), jax.tree_util.tree_leaves((again,
                                                                                                 metrics_again))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        agent = updated


@pytest.mark.skipif(not os.path.isdir(os.environ.get("CORL_CHECKOUT", "")),
                    reason="set CORL_CHECKOUT to a checkout of tinkoff-ai/CORL")
def test_rebrac_equals_corl_in_float64(tmp_path):
    out = tmp_path / "rebrac.json"
    # At full optimisation: XLA:CPU at the suite's --xla_backend_optimization_level=0 turned the float64 gradients
    # of one jitted program here into NaN (finite eagerly and at the default level).
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    result = subprocess.run([sys.executable, "-m", "benchmarks.parity", "--algo=rebrac",
                             f"--repo={os.environ['CORL_CHECKOUT']}", f"--out={out}", *TINY], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["default", "actor_ln"]
    for variant in report["variants"]:
        for k, diff in variant["float64"].items():
            for part in ("params", "gradients", "losses"):
                assert diff[part] and max(e["rel_l2"] for e in diff[part].values()) < 1e-12, (variant["variant"], k)
        assert variant["action_selection_float64"]["max_abs"] < 1e-12
