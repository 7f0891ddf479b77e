"""Diffuser's model core: the temporal U-Net's shapes, conditioning, value guidance and the loss, in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dql.diffusion import DiffusionSchedule
from dql.planning import (
    TemporalUnet,
    ValueFunction,
    apply_conditioning,
    best_plan,
    check_horizon,
    loss_weights,
    plan,
    trajectory_loss,
)

A, O = 2, 3  # action and observation widths
D = A + O


def _noise(seed, *shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _weights(module, x, t, seed=0):
    """Parameters of the module's shapes, drawn on the host in the +-1/sqrt(fan_in) range of its initialiser.

    module.init would compile the whole network and its random draws (tens of seconds on a busy CPU); these tests
    need weights, not that program.
    """
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        name = path[-1].key
        if name == "scale":  # GroupNorm, as initialised
            return np.ones(shape.shape, np.float32)
        fan_in = int(np.prod(shape.shape[:-1])) if len(shape.shape) > 1 else 10
        return rng.uniform(-1, 1, shape.shape).astype(np.float32) / np.sqrt(fan_in)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(module.init, jax.random.PRNGKey(0), x, t))


@pytest.mark.parametrize("horizon,transition_dim,dim_mults,attention", [
    (8, 5, (1, 2), False),
    (16, 3, (1, 2, 4), False),
    (4, 7, (1, 4, 8), True),  # HalfCheetah's shape: horizon 4, attention on
])
def test_networks_keep_the_trajectory_shape(horizon, transition_dim, dim_mults, attention):
    x = _noise(0, 2, horizon, transition_dim)
    t = jnp.array([0, 5])
    unet = TemporalUnet(transition_dim, dim=16, dim_mults=dim_mults, attention=attention)
    apply = jax.jit(unet.apply)
    params = _weights(unet, x, t)
    out = apply(params, x, t)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    # The step enters through the time embedding: another step, another output.
    assert not np.allclose(out, apply(params, x, jnp.array([3, 9])))
    value = ValueFunction(transition_dim, dim=16, dim_mults=dim_mults)
    assert jax.jit(value.apply)(_weights(value, x, t), x, t).shape == (2,)


def test_a_horizon_the_unet_cannot_halve_is_a_one_line_error():
    check_horizon(24, (1, 2, 4, 8))
    with pytest.raises(ValueError, match=r"--config.horizon=12 must be a positive multiple of 8") as error:
        TemporalUnet(D, dim=16).init(jax.random.PRNGKey(0), jnp.zeros((1, 12, D)), jnp.zeros((1,)))
    assert "\n" not in str(error.value)


def test_apply_conditioning_writes_only_the_observations_at_the_conditioned_steps():
    x = _noise(0, 2, 6, D)
    start, goal = _noise(1, 2, O), _noise(2, 2, O)
    out = np.asarray(apply_conditioning(x, {0: start, 5: goal}, A))
    np.testing.assert_array_equal(out[:, 0, A:], start)
    np.testing.assert_array_equal(out[:, 5, A:], goal)
    expected = np.asarray(x).copy()
    expected[:, 0, A:], expected[:, 5, A:] = start, goal
    np.testing.assert_array_equal(out, expected)  # actions and the other steps untouched


def _coordinate_sum(k):
    """A guide with a closed-form gradient: sum over the horizon of observation coordinate k; gradient one-hot."""
    return lambda x, t: jnp.sum(x[:, :, A + k], axis=1)


@pytest.mark.parametrize("guided", [False, True])
def test_conditions_hold_at_every_step_of_the_chain(guided):
    T, B, H = 6, 3, 8
    start, goal = _noise(1, B, O), _noise(2, B, O)

    def watchdog_model(x, t):
        # x0-prediction 0.5 x, poisoned with NaN if the model ever sees x with the conditions not in place
        # (conditioning must be re-applied after every guide step, not only after the posterior step).
        intact = jnp.all(x[:, 0, A:] == start) & jnp.all(x[:, -1, A:] == goal)
        return jnp.where(intact, 0.5 * x, jnp.nan)

    guide = dict(guide_fn=_coordinate_sum(0), guide_scale=2.0, n_guide_steps=2) if guided else {}
    result = plan(watchdog_model, DiffusionSchedule.create("cosine", T), {0: start, H - 1: goal}, A,
                  _noise(3, B, H, D), _noise(4, T, B, H, D), predict_epsilon=False, clip_denoised=False,
                  return_chain=True, **guide)
    assert result.chain.shape == (T + 1, B, H, D) and result.guidance.shape == (T, B, H, D)
    assert bool(jnp.all(jnp.isfinite(result.chain)))
    chain = np.asarray(result.chain)
    for step in range(T + 1):
        np.testing.assert_array_equal(chain[step, :, 0, A:], start)
        np.testing.assert_array_equal(chain[step, :, -1, A:], goal)
    np.testing.assert_array_equal(chain[-1], result.trajectories)
    if not guided:
        np.testing.assert_array_equal(result.values, np.zeros(B))
        np.testing.assert_array_equal(result.guidance, 0.0)


def test_guidance_follows_the_value_gradient_scaled_by_the_posterior_variance():
    T, B, H, k = 8, 4, 8, 1
    t_stopgrad, n_guide_steps, scale = 3, 2, 0.7
    schedule = DiffusionSchedule.create("cosine", T)
    start = _noise(1, B, O)
    guide_fn = _coordinate_sum(k)

    def run(guide_scale, guided=True, **kwargs):
        guide = dict(guide_fn=guide_fn, guide_scale=guide_scale, t_stopgrad=t_stopgrad,
                     n_guide_steps=n_guide_steps, **kwargs) if guided else {}
        # x0 = 0.5 x: the posterior mean is increasing in x, so pushing x up must raise the final value.
        return plan(lambda x, t: 0.5 * x, schedule, {0: start}, A, _noise(2, B, H, D), _noise(3, T, B, H, D),
                    predict_epsilon=False, clip_denoised=False, return_chain=True, **guide)

    one_hot = np.zeros((H, D))
    one_hot[:, A + k] = 1.0
    variance = np.exp(schedule.posterior_log_variance_clipped)
    guidance = np.asarray(run(scale).guidance)
    for row in range(T):  # row k of the chain is the step at index i = T - 1 - k
        i = T - 1 - row
        if i < t_stopgrad:
            np.testing.assert_array_equal(guidance[row], 0.0)
        else:
            expected = n_guide_steps * scale * variance[i] * one_hot
            np.testing.assert_allclose(guidance[row], np.broadcast_to(expected, guidance[row].shape), rtol=1e-6)
    unscaled = np.asarray(run(scale, scale_grad_by_std=False).guidance)
    np.testing.assert_allclose(unscaled[0], np.broadcast_to(n_guide_steps * scale * one_hot, unscaled[0].shape))

    def final_value(result):
        return np.asarray(guide_fn(result.trajectories, None))

    unguided, pushed_up, pushed_down = final_value(run(0.0, guided=False)), final_value(run(scale)), final_value(
        run(-scale))
    assert np.all(pushed_up > unguided + 1e-3), (pushed_up, unguided)
    assert np.all(pushed_down < unguided - 1e-3), (pushed_down, unguided)


def test_loss_weights_closed_form():
    H, discount = 5, 0.9
    weights = loss_weights(H, A, D, action_weight=10.0, discount=discount, observation_weights={1: 3.0})
    discounts = discount ** np.arange(H)
    expected = np.outer(discounts / discounts.mean(), np.ones(D))
    expected[:, A + 1] *= 3.0
    expected[0, :A] = 10.0
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


@pytest.mark.parametrize("predict_epsilon", [False, True])
@pytest.mark.parametrize("model", ["constant", "identity"])
def test_trajectory_loss_closed_form(predict_epsilon, model):
    T, B, H = 10, 4, 6
    schedule = DiffusionSchedule.create("cosine", T)
    x0, noise, start = _noise(1, B, H, D), _noise(2, B, H, D), _noise(3, B, O)
    t = jnp.array([0, 3, 7, 9])
    c = 0.3
    model_fn = (lambda x, t: jnp.full_like(x, c)) if model == "constant" else (lambda x, t: x)

    # numpy: the noised input with the start written in; the model's output with the start written in as well
    ab = schedule.alphas_cumprod[np.asarray(t)][:, None, None]
    x_noisy = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(noise)
    x_noisy[:, 0, A:] = start
    prediction = np.full((B, H, D), c) if model == "constant" else x_noisy.copy()
    prediction[:, 0, A:] = start
    squared = (prediction - np.asarray(noise if predict_epsilon else x0)) ** 2

    losses = {}
    for action_weight in (1.0, 10.0):
        weights = loss_weights(H, A, D, action_weight, discount=0.97)
        loss, info = trajectory_loss(model_fn, schedule, x0, {0: start}, A, t, noise, jnp.asarray(weights),
                                     predict_epsilon)
        assert float(loss) == pytest.approx(np.mean(squared * weights), rel=1e-5)
        assert float(info["a0_loss"]) == pytest.approx(np.mean(squared[:, 0, :A] / action_weight), rel=1e-5)
        losses[action_weight] = float(loss)
    # Only the first action's entries change weight (1 -> 10): the loss grows by 9 times their share.
    assert losses[10.0] - losses[1.0] == pytest.approx(9 * squared[:, 0, :A].sum() / squared.size, rel=1e-4)


def test_best_plan_takes_the_highest_value_per_condition():
    trajectories = _noise(0, 2, 3, 4, D)  # 2 conditions x 3 samples
    values = jnp.array([[0.1, 0.9, -1.0], [2.0, 0.0, 1.0]])
    chosen, best = best_plan(trajectories, values)
    np.testing.assert_array_equal(chosen, np.stack([trajectories[0, 1], trajectories[1, 0]]))
    np.testing.assert_array_equal(best, np.float32([0.9, 2.0]))


def test_a_jitted_guided_plan_is_one_scan():
    T, B, H = 4, 2, 4
    schedule = DiffusionSchedule.create("cosine", T)
    unet, value = TemporalUnet(D, dim=16, dim_mults=(1, 2)), ValueFunction(D, dim=16, dim_mults=(1, 2))
    x, t = jnp.zeros((B, H, D)), jnp.zeros((B,), jnp.int32)
    params = {"unet": _weights(unet, x, t, seed=0), "value": _weights(value, x, t, seed=1)}

    def planner(params, start, initial_noise, step_noise):
        return plan(lambda x, t: unet.apply(params["unet"], x, t), schedule, {0: start}, A, initial_noise,
                    step_noise, predict_epsilon=True, clip_denoised=True,
                    guide_fn=lambda x, t: value.apply(params["value"], x, t), guide_scale=0.1, t_stopgrad=1)

    start = _noise(1, B, O)
    args = (params, start, _noise(2, B, H, D), _noise(3, T, B, H, D))
    top_level = [eqn.primitive.name for eqn in jax.make_jaxpr(planner)(*args).jaxpr.eqns]
    assert top_level.count("scan") == 1 and "while" not in top_level
    result = jax.jit(planner)(*args)
    assert result.trajectories.shape == (B, H, D) and result.values.shape == (B,)
    assert bool(jnp.all(jnp.isfinite(result.trajectories))) and bool(jnp.all(jnp.isfinite(result.values)))
    np.testing.assert_array_equal(result.trajectories[:, 0, A:], start)


@pytest.mark.parametrize("length, stride, padding, dilation", [
    (4, 1, 2, 1),   # kernel longer than the sequence
    (3, 2, 1, 1),   # strided downsampling of a short sequence
    (2, 1, 2, 2),   # a transposed conv (dilated input) of a short sequence
    (16, 1, 2, 1),  # a longer sequence
])
def test_conv1d_is_torch_s_cross_correlation(length, stride, padding, dilation):
    from dql.planning.temporal_unet import conv1d

    rng = np.random.default_rng(length)
    x, kernel = rng.normal(size=(3, length, 4)), rng.normal(size=(5, 4, 6))
    # The definition, in numpy: dilate, pad, slide the kernel with the stride.
    dilated = np.zeros((3, (length - 1) * dilation + 1, 4))
    dilated[:, ::dilation] = x
    padded = np.pad(dilated, ((0, 0), (padding, padding), (0, 0)))
    out_length = (padded.shape[1] - 5) // stride + 1
    expected = np.stack([np.einsum("bkc,kco->bo", padded[:, i * stride:i * stride + 5], kernel)
                         for i in range(out_length)], axis=1)
    got = conv1d(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32), stride, padding, dilation)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
