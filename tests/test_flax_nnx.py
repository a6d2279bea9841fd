"""`lucid_jax.flax.nnx.InstanceNorm`: what is nnx's own: state, train/eval, nnx.jit, hooks.

What both faces share (training, momentum, drop-in, dtypes, checkpoints, bad input) is checked
in `test_flax_faces.py`, several devices in `test_flax_devices.py`. References: the float64
numpy reference (`conftest`), the linen layer on the same numbers, `flax.nnx.InstanceNorm`
(independent, for the gradients of a training step and the `promote_dtype` hook).

These tests pin the running statistics, so `InstanceNorm` here is the layer with them on
(opt-in) and Lucid's eps 1e-5; the default, Flax's layer, is pinned in
`test_flax_contract.py` and `test_flax_real_models.py`.
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import channels_last_data as _data
from conftest import host_array, nnx_jitted_call
from conftest import reference_channels_last as _reference_channels_last
from flax import nnx

from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax import nnx as lucid_nnx

InstanceNorm = functools.partial(lucid_nnx.InstanceNorm, track_running_stats=True, epsilon=1e-5)


def _layer(scale, bias, mean, var, **kwargs):
    layer = InstanceNorm(scale.shape[0], rngs=nnx.Rngs(0), **kwargs)
    layer.scale[...], layer.bias[...] = scale, bias
    if mean is not None:
        layer.mean[...], layer.var[...] = mean, var
    return layer


# --- state ------------------------------------------------------------------------------------


def test_state_holds_params_and_batch_stats():
    layer = InstanceNorm(3, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    stats = nnx.to_pure_dict(nnx.state(layer, nnx.BatchStat))
    assert jax.tree.map(jnp.shape, params) == {"scale": (3,), "bias": (3,)}
    assert jax.tree.map(jnp.shape, stats) == {"mean": (3,), "var": (3,)}
    # Their values (ones, zeros, zeros, ones): test_flax_faces.py.
    assert layer.use_running_average is False


# --- training / eval --------------------------------------------------------------------------


def test_equals_linen_layer_over_several_steps(rng):
    x = _data(rng)[0]
    linen = lucid_linen.InstanceNorm.lucid(momentum=0.8, channel_axis=2)
    c = x.shape[2]
    variables = {
        "params": {
            "scale": host_array(np.linspace(0.5, 1.5, c)),
            "bias": host_array(np.linspace(-1, 1, c)),
        },
        "batch_stats": {"mean": host_array(np.zeros(c)), "var": host_array(np.ones(c))},
    }
    layer = InstanceNorm(c, momentum=0.8, channel_axis=2, rngs=nnx.Rngs(0))
    layer.scale[...], layer.bias[...] = variables["params"]["scale"], variables["params"]["bias"]
    for step in range(3):
        xs = x * (step + 1)
        y_linen, updates = linen.apply(
            variables, xs, use_running_average=False, mutable=["batch_stats"]
        )
        variables = {**variables, **updates}
        np.testing.assert_allclose(layer(xs), y_linen, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(layer.mean[...], updates["batch_stats"]["mean"], rtol=1e-6)
        np.testing.assert_allclose(layer.var[...], updates["batch_stats"]["var"], rtol=1e-6)


def test_train_and_eval_switch_use_running_average(rng):
    x, scale, bias, mean, var = _data(rng)

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.norm = _layer(scale, bias, mean, var, epsilon=1e-3)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.norm(x)

    net = Net(nnx.Rngs(0))
    net.eval()
    assert net.norm.use_running_average is True
    y = net(x)
    ref_y, _, _ = _reference_channels_last(x, mean, var, scale, bias, training=False, eps=1e-3)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net.norm.mean[...], mean)  # frozen in eval
    np.testing.assert_array_equal(net.norm.var[...], var)

    net.train()
    assert net.norm.use_running_average is False
    y = net(x)
    ref_y, ref_mean, _ = _reference_channels_last(
        x, mean, var, scale, bias, training=True, momentum=0.01, eps=1e-3
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.norm.mean[...], ref_mean, rtol=1e-5, atol=1e-6)


def test_view_and_call_time_override(rng):
    x, scale, bias, mean, var = _data(rng)
    layer = _layer(scale, bias, mean, var)
    ref_eval, _, _ = _reference_channels_last(x, mean, var, scale, bias, training=False)
    np.testing.assert_allclose(
        nnx.view(layer, use_running_average=True)(x), ref_eval, rtol=1e-5, atol=1e-5
    )
    assert layer.use_running_average is False  # the view did not change the layer
    np.testing.assert_array_equal(layer.mean[...], mean)
    # A call-time value takes precedence over the attribute.
    np.testing.assert_allclose(layer(x, use_running_average=True), ref_eval, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.mean[...], mean)
    with pytest.raises(ValueError, match="use_running_average"):
        _layer(scale, bias, mean, var, use_running_average=None)(x)


# --- nnx.jit training step with nnx.Optimizer --------------------------------------------------


def test_jit_training_step_with_optimizer_matches_flax_gradients(rng):
    x, scale, bias, mean, var = _data(rng)
    target = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    lr = 0.1
    layer = _layer(scale, bias, mean, var, momentum=0.9, epsilon=1e-6)
    optimizer = nnx.Optimizer(layer, optax.sgd(lr), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, target):
        def loss_fn(model):
            return jnp.mean((model(x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    loss = train_step(layer, optimizer, x, target)

    # Independent gradients: flax's own InstanceNorm (training output uses instance stats).
    reference = nnx.InstanceNorm(3, use_fast_variance=False, rngs=nnx.Rngs(0))
    reference.scale[...], reference.bias[...] = scale, bias
    ref_loss, ref_grads = nnx.jit(
        nnx.value_and_grad(lambda model: jnp.mean((model(x) - target) ** 2))
    )(reference)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(
        layer.scale[...], scale - lr * ref_grads["scale"][...], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.bias[...], bias - lr * ref_grads["bias"][...], rtol=1e-5, atol=1e-6
    )
    # The running statistics were updated by the step (not by the optimizer).
    _, ref_mean, ref_var = _reference_channels_last(x, mean, var, training=True, momentum=0.1)
    np.testing.assert_allclose(layer.mean[...], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.var[...], ref_var, rtol=1e-5)
    assert int(optimizer.step[...]) == 1

    # A second step keeps moving both (the jitted step sees the updated state).
    before = nnx.to_pure_dict(nnx.clone(nnx.state(layer)))
    train_step(layer, optimizer, x * 2.0, target)
    after = nnx.to_pure_dict(nnx.state(layer))
    for name in ("scale", "bias", "mean", "var"):
        assert not np.allclose(after[name], before[name]), name


def test_eval_under_jit_leaves_batch_stats(rng):
    x, scale, bias, mean, var = _data(rng)
    layer = _layer(scale, bias, mean, var)
    layer.eval()
    y = nnx.jit(lambda model, x: model(x))(layer, x)
    ref_y, _, _ = _reference_channels_last(x, mean, var, scale, bias, training=False)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.mean[...], mean)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_arguments_raise_named_errors(rng):
    x = _data(rng)[0]
    with pytest.raises(ValueError, match=r"num_features.*0"):
        InstanceNorm(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"4 channels.*num_features=3"):
        InstanceNorm(3, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"30 channels on feature_axes \(1, 2\).*num_features=3"):
        InstanceNorm(3, feature_axes=(1, 2), rngs=nnx.Rngs(0))(x)
    with pytest.raises(ValueError, match=r"feature_axes.*channel_axis"):
        InstanceNorm(3, feature_axes=1, channel_axis=2, rngs=nnx.Rngs(0))


# --- Flax's hooks ------------------------------------------------------------------------------


def test_promote_dtype_hook_is_called_as_flax_calls_it(rng):
    x = host_array(rng.normal(2.0, 3.0, (2, 4, 5, 3)))
    calls = []

    def to_bfloat16(args, *, dtype):
        calls.append((tuple(None if a is None else a.shape for a in args), dtype))
        return tuple(None if a is None else jnp.asarray(a, jnp.bfloat16) for a in args)

    ours = InstanceNorm(3, promote_dtype=to_bfloat16, track_running_stats=False, rngs=nnx.Rngs(0))
    theirs = nnx.InstanceNorm(
        3, promote_dtype=to_bfloat16, use_fast_variance=False, epsilon=1e-5, rngs=nnx.Rngs(0)
    )
    y_ours = ours(x)
    y_theirs = nnx_jitted_call(theirs, x)  # the hook runs once, as the program is traced
    assert calls == [(((2, 4, 5, 3), (3,), (3,)), None)] * 2  # (x, scale, bias), dtype=
    assert y_ours.dtype == y_theirs.dtype == jnp.bfloat16
    # Both normalise the bfloat16-rounded input: compare with float64 on that input.
    ref_y, _, _ = _reference_channels_last(np.asarray(x).astype(jnp.bfloat16))
    y_ours, y_theirs = np.asarray(y_ours, np.float32), np.asarray(y_theirs, np.float32)
    np.testing.assert_allclose(y_ours, ref_y, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-2, atol=1e-2)


def test_scale_and_bias_metadata_reach_the_params_as_in_flax():
    metadata = {"scale_metadata": {"tag": "norm-scale"}, "bias_metadata": {"tag": "norm-bias"}}
    ours = InstanceNorm(3, rngs=nnx.Rngs(0), **metadata)
    theirs = nnx.InstanceNorm(3, rngs=nnx.Rngs(0), **metadata)
    assert ours.scale.get_metadata() == theirs.scale.get_metadata()
    assert ours.bias.get_metadata() == theirs.bias.get_metadata()
    assert ours.scale.get_metadata()["tag"] == "norm-scale"
    assert ours.bias.get_metadata()["tag"] == "norm-bias"
