"""``lucid_jax.flax.nnx.InstanceNorm``: state, train/eval, nnx.jit + nnx.Optimizer, references.

References: the pure function, the float64 numpy reference (``conftest``), the linen layer on
the same numbers, ``flax.nnx.InstanceNorm`` (independent, for the drop-in claims and the
gradients of a training step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import channels_last_data as _data
from conftest import reference_channels_last as _reference_channels_last
from conftest import reference_instance_norm
from flax import nnx, serialization

import lucid_jax
from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax.nnx import InstanceNorm

ROOT = Path(__file__).resolve().parent.parent


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
    np.testing.assert_array_equal(params["scale"], np.ones(3))
    np.testing.assert_array_equal(params["bias"], np.zeros(3))
    np.testing.assert_array_equal(stats["mean"], np.zeros(3))
    np.testing.assert_array_equal(stats["var"], np.ones(3))
    assert layer.use_running_average is False


def test_options_select_state():
    layer = InstanceNorm(3, track_running_stats=False, use_bias=False, rngs=nnx.Rngs(0))
    assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer))) == {"scale": (3,)}
    layer = InstanceNorm(
        3,
        use_scale=False,
        param_dtype=jnp.bfloat16,
        bias_init=nnx.initializers.constant(0.5),
        rngs=nnx.Rngs(0),
    )
    params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == {"bias": ((3,), jnp.bfloat16)}
    np.testing.assert_array_equal(params["bias"], np.full(3, 0.5))
    assert layer.mean[...].dtype == jnp.float32  # statistics stay float32
    x = jnp.asarray(np.random.default_rng(0).normal(1.0, 2.0, (2, 4, 4, 3)), jnp.float32)
    ref_y, _, _ = reference_instance_norm(x, bias=np.full(3, 0.5), channel_axis=-1)
    y = layer(x)
    assert y.dtype == jnp.float32  # inferred from float32 input and bfloat16 bias
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)


# --- training / eval --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (3, 7, 2), (2, 3, 4, 5, 4)])
def test_training_equals_pure_function_and_updates_in_place(rng, shape):
    x, scale, bias, mean, var = _data(rng, shape)
    layer = _layer(scale, bias, mean, var, momentum=0.9, epsilon=1e-3)
    y = layer(x)
    pure = lucid_jax.instance_norm(
        jnp.moveaxis(x, -1, 1),
        mean,
        var,
        scale,
        bias,
        training=True,
        momentum=0.1,
        eps=1e-3,
        channel_axis=1,
    )
    np.testing.assert_allclose(y, jnp.moveaxis(pure.output, 1, -1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.mean[...], pure.running_mean, rtol=1e-6)
    np.testing.assert_allclose(layer.var[...], pure.running_var, rtol=1e-6)
    ref_y, ref_mean, ref_var = _reference_channels_last(
        x, mean, var, scale, bias, training=True, momentum=0.1, eps=1e-3
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.mean[...], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.var[...], ref_var, rtol=1e-5)


def test_equals_linen_layer_over_several_steps(rng):
    x = _data(rng)[0]
    linen = lucid_linen.InstanceNorm(momentum=0.8, channel_axis=2)
    c = x.shape[2]
    variables = {
        "params": {"scale": jnp.linspace(0.5, 1.5, c), "bias": jnp.linspace(-1, 1, c)},
        "batch_stats": {"mean": jnp.zeros(c), "var": jnp.ones(c)},
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


@pytest.mark.parametrize("flax_momentum", [0.9, 0.99, 0.0, 1.0])
def test_momentum_is_flax_convention(rng, flax_momentum):
    x, scale, bias, mean, var = _data(rng)
    layer = _layer(scale, bias, mean, var, momentum=flax_momentum)
    layer(x)
    x64 = np.asarray(x, np.float64)
    expected_mean = flax_momentum * np.asarray(mean) + (1 - flax_momentum) * x64.mean(
        axis=(1, 2)
    ).mean(axis=0)
    expected_var = flax_momentum * np.asarray(var) + (1 - flax_momentum) * x64.var(
        axis=(1, 2)
    ).mean(axis=0)
    np.testing.assert_allclose(layer.mean[...], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.var[...], expected_var, rtol=1e-5)


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


def test_without_tracking_every_mode_uses_instance_stats(rng):
    x, scale, bias, _, _ = _data(rng)
    ref_y, _, _ = _reference_channels_last(x, weight=scale, bias=bias)
    for use_running_average in (False, True, None):
        layer = _layer(
            scale,
            bias,
            None,
            None,
            track_running_stats=False,
            use_running_average=use_running_average,
        )
        np.testing.assert_allclose(layer(x), ref_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer(x, use_running_average=True), ref_y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("shape", "channel_axis"), [((4, 5, 6, 3), -1), ((3, 4, 5, 6), 1)])
def test_drop_in_for_flax_nnx_instance_norm(rng, shape, channel_axis):
    x = jnp.asarray(rng.normal(2.0, 3.0, shape), jnp.float32)
    c = shape[channel_axis]
    ours = InstanceNorm(
        c, track_running_stats=False, channel_axis=channel_axis, epsilon=1e-6, rngs=nnx.Rngs(0)
    )
    theirs = nnx.InstanceNorm(
        c, feature_axes=channel_axis, use_fast_variance=False, rngs=nnx.Rngs(0)
    )
    ours_state, theirs_state = (
        nnx.to_pure_dict(nnx.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
    )
    chex.assert_trees_all_equal(ours_state, theirs_state)
    trained = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(0, 0.5, p.shape)), ours_state)
    for layer in (ours, theirs):
        state = nnx.state(layer)
        nnx.replace_by_pure_dict(state, trained)
        nnx.update(layer, state)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_dtype_follows_flax(rng):
    x = jnp.asarray(rng.normal(2.0, 3.0, (2, 4, 5, 3)), jnp.bfloat16)
    assert InstanceNorm(3, rngs=nnx.Rngs(0))(x).dtype == jnp.float32  # inferred with params
    y = InstanceNorm(3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x)
    assert y.dtype == jnp.bfloat16
    ref_y, _, _ = _reference_channels_last(x.astype(np.float32))
    np.testing.assert_allclose(y.astype(np.float32), ref_y, rtol=2e-2, atol=2e-2)


def test_float64(rng):
    with jax.enable_x64(True):
        x, scale, bias, mean, var = _data(rng, dtype=np.float64)
        layer = InstanceNorm(3, momentum=0.9, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        assert layer.mean[...].dtype == jnp.float64
        layer.scale[...], layer.bias[...] = scale, bias
        layer.mean[...], layer.var[...] = mean, var
        y = layer(x)
        assert y.dtype == jnp.float64
        ref_y, ref_mean, ref_var = _reference_channels_last(
            x, mean, var, scale, bias, training=True, momentum=0.1
        )
        np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.mean[...], ref_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.var[...], ref_var, rtol=1e-12)


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
    ref_loss, ref_grads = nnx.value_and_grad(lambda model: jnp.mean((model(x) - target) ** 2))(
        reference
    )
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


def test_running_stats_carry_no_gradient(rng):
    x, scale, bias, mean, var = _data(rng)

    def new_mean_sum(scale):
        layer = _layer(scale, bias, mean, var)
        layer(x * scale)
        return layer.mean[...].sum()

    np.testing.assert_array_equal(jax.grad(new_mean_sum)(scale), np.zeros(3))


# --- checkpoints -------------------------------------------------------------------------------


def test_serialization_round_trip(rng):
    x, scale, bias, mean, var = _data(rng)
    layer = _layer(scale, bias, mean, var, momentum=0.5)
    for _ in range(3):
        layer(x)
    blob = serialization.to_bytes(nnx.to_pure_dict(nnx.state(layer)))

    fresh = InstanceNorm(3, momentum=0.5, rngs=nnx.Rngs(1))
    state = nnx.state(fresh)
    restored = serialization.from_bytes(nnx.to_pure_dict(state), blob)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(fresh, state)
    chex.assert_trees_all_equal(
        nnx.to_pure_dict(nnx.state(fresh)), nnx.to_pure_dict(nnx.state(layer))
    )
    assert not np.allclose(fresh.mean[...], 0.0)
    layer.eval()
    fresh.eval()
    np.testing.assert_array_equal(fresh(x), layer(x))


# --- bad input ---------------------------------------------------------------------------------


def test_bad_arguments_raise_named_errors(rng):
    x = _data(rng)[0]
    with pytest.raises(ValueError, match=r"num_features.*0"):
        InstanceNorm(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"4 channels.*num_features=3"):
        InstanceNorm(3, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"channel_axis.*got 0"):
        InstanceNorm(4, channel_axis=0, rngs=nnx.Rngs(0))(x)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        InstanceNorm(3, momentum=-0.1, rngs=nnx.Rngs(0))(x)


# --- several devices ---------------------------------------------------------------------------


SHARDED_NNX = """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from lucid_jax.flax.nnx import InstanceNorm

    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("batch",))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0, 1, (8, 5, 5, 3)) * np.arange(1, 9)[:, None, None, None]
                    + np.arange(8)[:, None, None, None], jnp.float32)

    def sharded(axis_name):
        graphdef, state = nnx.split(InstanceNorm(3, momentum=0.9, batch_axis_name=axis_name,
                                                 rngs=nnx.Rngs(0)))
        def step(state, x):
            model = nnx.merge(graphdef, state)
            y = model(x)
            stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
            return y, jax.tree.map(lambda a: a[None], stats)  # one row per shard
        f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")),
                                  out_specs=(P("batch"), P("batch"))))
        return f(jax.device_put(state, NamedSharding(mesh, P())),
                 jax.device_put(x, NamedSharding(mesh, P("batch"))))

    y, stats = sharded("batch")
    single = InstanceNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
    ref_y = single(x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    for name in ("mean", "var"):
        rows = np.asarray(stats[name])
        assert rows.shape == (4, 3)
        for row in rows:
            np.testing.assert_allclose(row, getattr(single, name)[...], rtol=1e-6, atol=1e-6)
    _, local = sharded(None)  # control: per-shard updates differ
    rows = np.asarray(local["mean"])
    assert not np.allclose(rows[0], rows[3])
    print("OK")
"""


def test_axis_name_under_shard_map_gives_every_shard_the_global_update():
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SHARDED_NNX)],
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
