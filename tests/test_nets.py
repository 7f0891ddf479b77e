import jax
import jax.numpy as jnp
import numpy as np

from dql.nets import CriticEnsemble, MLP, mish, sinusoidal_embedding


def test_mish_matches_definition_and_derivative():
    x = jnp.linspace(-60.0, 60.0, 48001)
    reference = x * jnp.tanh(jax.nn.softplus(x))
    np.testing.assert_allclose(mish(x), reference, atol=1e-5)
    grad = jax.vmap(jax.grad(mish))(x)
    grad_reference = jax.vmap(jax.grad(lambda v: v * jnp.tanh(jax.nn.softplus(v))))(x)
    np.testing.assert_allclose(grad, grad_reference, atol=1e-5)


def test_sinusoidal_embedding_closed_form():
    emb = sinusoidal_embedding(jnp.array([0, 3]), 16)
    w = np.exp(-np.log(10000.0) / 7 * np.arange(8))
    np.testing.assert_allclose(emb[1], np.concatenate([np.sin(3 * w), np.cos(3 * w)]), rtol=1e-5)
    np.testing.assert_allclose(emb[0], np.concatenate([np.zeros(8), np.ones(8)]))


def test_torch_style_initialisation_bounds():
    params = MLP((64,), 1).init(jax.random.PRNGKey(0), jnp.zeros((1, 25)))["params"]
    first = params["TorchDense_0"]
    assert np.abs(first["kernel"]).max() <= 1 / 5 and np.abs(first["bias"]).max() <= 1 / 5
    assert np.abs(first["kernel"]).max() > 0.9 / 5  # uniform over the whole range, not a narrow normal


def test_critic_ensemble_heads_are_independent_networks():
    critic = CriticEnsemble((32, 32), num_heads=2)
    obs, act = jnp.ones((7, 3)), jnp.ones((7, 2))
    params = critic.init(jax.random.PRNGKey(0), obs, act)
    q = critic.apply(params, obs, act)
    assert q.shape == (2, 7)
    assert not np.allclose(q[0], q[1])  # different initial weights per head
    # Head 0 computed by hand from its slice of the stacked parameters.
    head0 = jax.tree_util.tree_map(lambda p: p[0], params["params"]["VmapMLP_0"])
    x = jnp.concatenate([obs, act], -1)
    for i in range(2):
        layer = head0[f"TorchDense_{i}"]
        x = mish(x @ layer["kernel"] + layer["bias"])
    last = head0["TorchDense_2"]
    np.testing.assert_allclose(q[0], (x @ last["kernel"] + last["bias"])[:, 0], rtol=1e-5)
