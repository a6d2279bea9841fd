"""``lucid_jax.flax.linen.InstanceNorm``: variables, conventions, references, transformations.

References: the pure function on channel-first data (the layer must be a thin wrapper), a
float64 numpy implementation of Lucid's maths (``conftest.reference_instance_norm``) and
``flax.linen.InstanceNorm`` (an independent implementation, for the drop-in claims).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import channels_last_data as _data
from conftest import reference_channels_last as _reference_channels_last
from conftest import reference_instance_norm
from flax import serialization

import lucid_jax
from lucid_jax.flax.linen import InstanceNorm

ROOT = Path(__file__).resolve().parent.parent


def _variables(scale, bias, mean=None, var=None):
    variables = {"params": {"scale": scale, "bias": bias}}
    if mean is not None:
        variables["batch_stats"] = {"mean": mean, "var": var}
    return variables


# --- variables -----------------------------------------------------------------------------


def test_init_declares_params_and_batch_stats_and_leaves_stats_untouched(rng):
    x = _data(rng)[0]
    layer = InstanceNorm()
    # init runs a training-mode call, which must not move the running statistics.
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == {
        "params": {"scale": ((3,), jnp.float32), "bias": ((3,), jnp.float32)},
        "batch_stats": {"mean": ((3,), jnp.float32), "var": ((3,), jnp.float32)},
    }
    np.testing.assert_array_equal(variables["params"]["scale"], np.ones(3))
    np.testing.assert_array_equal(variables["params"]["bias"], np.zeros(3))
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(3))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(3))


def test_init_with_eval_mode_declares_the_same_variables(rng):
    x = _data(rng)[0]
    train = InstanceNorm().init(jax.random.key(0), x, use_running_average=False)
    evaluate = InstanceNorm(use_running_average=True).init(jax.random.key(0), x)
    chex.assert_trees_all_equal(train, evaluate)


def test_options_select_variables(rng):
    x = _data(rng)[0]
    variables = InstanceNorm(track_running_stats=False, use_bias=False).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": (3,)}}
    variables = InstanceNorm(use_scale=False, use_bias=False).init(
        jax.random.key(0), x, use_running_average=False
    )
    assert jax.tree.map(jnp.shape, variables) == {"batch_stats": {"mean": (3,), "var": (3,)}}


def test_custom_initializers_and_param_dtype(rng):
    x = _data(rng)[0]
    layer = InstanceNorm(
        scale_init=nn.initializers.constant(2.5),
        bias_init=nn.initializers.constant(-1.0),
        param_dtype=jnp.bfloat16,
    )
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    assert variables["params"]["scale"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(variables["params"]["scale"], np.full(3, 2.5))
    np.testing.assert_array_equal(variables["params"]["bias"], np.full(3, -1.0))
    # Running statistics stay in float32 when the params are half precision.
    assert variables["batch_stats"]["mean"].dtype == jnp.float32


# --- training and eval against the pure function and the float64 reference -----------------


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (3, 7, 2), (2, 3, 4, 5, 4)])
def test_training_equals_pure_function_on_channel_first_data(rng, shape):
    x, scale, bias, mean, var = _data(rng, shape)
    layer = InstanceNorm(momentum=0.9, epsilon=1e-3)
    y, updates = layer.apply(
        _variables(scale, bias, mean, var),
        x,
        use_running_average=False,
        mutable=["batch_stats"],
    )
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
    np.testing.assert_allclose(updates["batch_stats"]["mean"], pure.running_mean, rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], pure.running_var, rtol=1e-6)

    ref_y, ref_mean, ref_var = _reference_channels_last(
        x, mean, var, scale, bias, training=True, momentum=0.1, eps=1e-3
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], ref_var, rtol=1e-5)


@pytest.mark.parametrize("channel_axis", [1, 2, -2])
def test_any_channel_axis_matches_reference(rng, channel_axis):
    x = jnp.asarray(rng.normal(1.0, 2.0, (3, 4, 5, 6)), jnp.float32)
    c = x.shape[channel_axis]
    layer = InstanceNorm(momentum=0.8, channel_axis=channel_axis)
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    assert variables["params"]["scale"].shape == (c,)
    y, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    ref_y, ref_mean, ref_var = reference_instance_norm(
        x,
        np.zeros(c),
        np.ones(c),
        training=True,
        momentum=0.2,
        eps=1e-5,
        channel_axis=channel_axis,
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], ref_var, rtol=1e-5)


@pytest.mark.parametrize("flax_momentum", [0.9, 0.99, 0.75, 0.0, 1.0])
def test_momentum_is_flax_convention(rng, flax_momentum):
    """new = momentum * old + (1 - momentum) * batch: Flax's m is Lucid's 1 - m."""
    x, scale, bias, mean, var = _data(rng)
    _, updates = InstanceNorm(momentum=flax_momentum).apply(
        _variables(scale, bias, mean, var),
        x,
        use_running_average=False,
        mutable=["batch_stats"],
    )
    x64 = np.asarray(x, np.float64)
    batch_mean = x64.mean(axis=(1, 2)).mean(axis=0)
    batch_var = x64.var(axis=(1, 2)).mean(axis=0)  # biased, per instance, then batch mean
    expected_mean = flax_momentum * np.asarray(mean) + (1 - flax_momentum) * batch_mean
    expected_var = flax_momentum * np.asarray(var) + (1 - flax_momentum) * batch_var
    np.testing.assert_allclose(updates["batch_stats"]["mean"], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], expected_var, rtol=1e-5)

    lucid = lucid_jax.instance_norm(x, mean, var, momentum=1 - flax_momentum, channel_axis=-1)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], lucid.running_mean, rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], lucid.running_var, rtol=1e-6)


def test_flax_point_nine_is_lucid_point_one(rng):
    x, _, _, mean, var = _data(rng)
    _, updates = InstanceNorm(momentum=0.9, use_scale=False, use_bias=False).apply(
        {"batch_stats": {"mean": mean, "var": var}},
        x,
        use_running_average=False,
        mutable=["batch_stats"],
    )
    lucid = lucid_jax.nn.InstanceNorm2d(3, momentum=0.1, affine=False)
    lucid.running_mean.data, lucid.running_var.data = mean, var
    lucid(jnp.moveaxis(x, -1, 1))
    np.testing.assert_allclose(updates["batch_stats"]["mean"], lucid.running_mean.data, rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], lucid.running_var.data, rtol=1e-6)


def test_eval_normalises_with_running_stats_and_leaves_them(rng):
    x, scale, bias, mean, var = _data(rng)
    variables = _variables(scale, bias, mean, var)
    y, updates = InstanceNorm(epsilon=1e-3).apply(
        variables, x, use_running_average=True, mutable=["batch_stats"]
    )
    ref_y, _, _ = _reference_channels_last(x, mean, var, scale, bias, training=False, eps=1e-3)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
    # The same with the flag given at construction.
    y2 = InstanceNorm(use_running_average=True, epsilon=1e-3).apply(variables, x)
    np.testing.assert_array_equal(y2, y)


def test_training_without_mutable_batch_stats_normalises_and_stores_nothing(rng):
    x, scale, bias, mean, var = _data(rng)
    variables = _variables(scale, bias, mean, var)
    y = InstanceNorm().apply(variables, x, use_running_average=False)  # not mutable: no error
    ref_y, _, _ = _reference_channels_last(x, mean, var, scale, bias, training=True)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)


def test_use_running_average_merges_as_flax(rng):
    x, scale, bias, mean, var = _data(rng)
    variables = _variables(scale, bias, mean, var)
    with pytest.raises(ValueError, match="use_running_average"):
        InstanceNorm().apply(variables, x)  # neither
    with pytest.raises(ValueError, match="use_running_average"):
        InstanceNorm(use_running_average=True).apply(variables, x, use_running_average=True)


def test_without_tracking_every_mode_uses_instance_stats(rng):
    x, scale, bias, _, _ = _data(rng)
    variables = _variables(scale, bias)
    ref_y, _, _ = _reference_channels_last(x, weight=scale, bias=bias)
    layer = InstanceNorm(track_running_stats=False)
    for y in (
        layer.apply(variables, x),
        layer.apply(variables, x, use_running_average=False),
        layer.apply(variables, x, use_running_average=True),  # Lucid's fallback
        InstanceNorm(track_running_stats=False, use_running_average=True).apply(variables, x),
    ):
        np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)


# --- drop-in for flax.linen.InstanceNorm ---------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "channel_axis", "use_scale", "use_bias"),
    [
        ((4, 5, 6, 3), -1, True, True),
        ((3, 7, 2), -1, True, False),
        ((2, 3, 4, 5, 4), -1, False, True),
        ((3, 4, 5, 6), 1, True, True),
    ],
)
def test_drop_in_for_flax_instance_norm(rng, shape, channel_axis, use_scale, use_bias):
    x = jnp.asarray(rng.normal(2.0, 3.0, shape), jnp.float32)
    ours = InstanceNorm(
        track_running_stats=False,
        channel_axis=channel_axis,
        epsilon=1e-6,
        use_scale=use_scale,
        use_bias=use_bias,
    )
    theirs = nn.InstanceNorm(
        feature_axes=channel_axis,
        use_fast_variance=False,
        use_scale=use_scale,
        use_bias=use_bias,
    )
    ours_vars = ours.init(jax.random.key(0), x)
    theirs_vars = theirs.init(jax.random.key(0), x)
    chex.assert_trees_all_equal_shapes_and_dtypes(ours_vars, theirs_vars)
    chex.assert_trees_all_equal(ours_vars, theirs_vars)
    # Trained-looking params, shared both ways.
    params = jax.tree.map(
        lambda p: p + jnp.asarray(rng.normal(0, 0.5, p.shape), p.dtype), theirs_vars
    )
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


def test_drop_in_default_epsilon_differs_only_by_epsilon(rng):
    """Our default epsilon is Lucid's 1e-5 (Flax's InstanceNorm has 1e-6)."""
    x = jnp.asarray(rng.normal(0.0, 1.0, (2, 4, 4, 3)), jnp.float32)
    variables = nn.InstanceNorm().init(jax.random.key(0), x)
    ours = InstanceNorm(track_running_stats=False).apply(variables, x)
    theirs = nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False).apply(variables, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("x_dtype", "dtype", "expected"),
    [
        (jnp.bfloat16, None, jnp.float32),  # inferred from input and float32 params
        (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
        (jnp.float32, jnp.bfloat16, jnp.bfloat16),
        (jnp.float32, None, jnp.float32),
    ],
)
def test_dtype_follows_flax(rng, x_dtype, dtype, expected):
    x = jnp.asarray(rng.normal(2.0, 3.0, (2, 4, 5, 3)), x_dtype)
    ours = InstanceNorm(track_running_stats=False, dtype=dtype, epsilon=1e-6)
    theirs = nn.InstanceNorm(dtype=dtype, use_fast_variance=False)
    variables = theirs.init(jax.random.key(0), x)
    y_ours, y_theirs = ours.apply(variables, x), theirs.apply(variables, x)
    assert y_ours.dtype == y_theirs.dtype == expected
    tol = 2e-2 if expected == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(
        y_ours.astype(np.float32), y_theirs.astype(np.float32), rtol=tol, atol=tol
    )
    # With tracking the stored statistics stay float32.
    _, updates = InstanceNorm(dtype=dtype).apply(
        {**variables, "batch_stats": {"mean": jnp.zeros(3), "var": jnp.ones(3)}},
        x,
        use_running_average=False,
        mutable=["batch_stats"],
    )
    assert updates["batch_stats"]["mean"].dtype == jnp.float32


def test_float64(rng):
    with jax.enable_x64(True):
        x, scale, bias, mean, var = _data(rng, dtype=np.float64)
        layer = InstanceNorm(momentum=0.9, param_dtype=jnp.float64)
        variables = layer.init(jax.random.key(0), x, use_running_average=False)
        assert variables["batch_stats"]["mean"].dtype == jnp.float64
        y, updates = layer.apply(
            _variables(scale, bias, mean, var),
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        assert y.dtype == jnp.float64
        ref_y, ref_mean, ref_var = _reference_channels_last(
            x, mean, var, scale, bias, training=True, momentum=0.1
        )
        np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(updates["batch_stats"]["mean"], ref_mean, rtol=1e-12)
        np.testing.assert_allclose(updates["batch_stats"]["var"], ref_var, rtol=1e-12)


# --- transformations ------------------------------------------------------------------------


@pytest.mark.parametrize("use_running_average", [False, True])
def test_jit_equals_eager(rng, use_running_average):
    x, scale, bias, mean, var = _data(rng)
    variables = _variables(scale, bias, mean, var)
    layer = InstanceNorm(momentum=0.9)

    def apply(variables, x):
        return layer.apply(
            variables, x, use_running_average=use_running_average, mutable=["batch_stats"]
        )

    chex.assert_trees_all_close(
        jax.jit(apply)(variables, x), apply(variables, x), rtol=1e-6, atol=1e-6
    )


def test_training_grad_matches_flax_instance_norm(rng):
    """In training the output only depends on instance stats: grads equal Flax's."""
    x, scale, bias, mean, var = _data(rng)
    cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    params = {"scale": scale, "bias": bias}

    def ours(params, x):
        y, _ = InstanceNorm(epsilon=1e-6).apply(
            {"params": params, "batch_stats": {"mean": mean, "var": var}},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return jnp.sum(y * cotangent)

    def theirs(params, x):
        y = nn.InstanceNorm(use_fast_variance=False).apply({"params": params}, x)
        return jnp.sum(y * cotangent)

    chex.assert_trees_all_close(
        jax.jit(jax.grad(ours, argnums=(0, 1)))(params, x),
        jax.grad(theirs, argnums=(0, 1))(params, x),
        rtol=1e-4,
        atol=1e-4,
    )


def test_eval_grad_matches_closed_form(rng):
    x, scale, bias, mean, var = _data(rng)
    g = rng.normal(size=x.shape)

    def loss(params, x):
        y = InstanceNorm(use_running_average=True, epsilon=1e-3).apply(
            {"params": params, "batch_stats": {"mean": mean, "var": var}}, x
        )
        return jnp.sum(y * g)

    grads, grad_x = jax.grad(loss, argnums=(0, 1))({"scale": scale, "bias": bias}, x)
    inv_std = 1 / np.sqrt(np.asarray(var, np.float64) + 1e-3)
    x_hat = (np.asarray(x, np.float64) - np.asarray(mean, np.float64)) * inv_std
    np.testing.assert_allclose(grads["scale"], (x_hat * g).sum(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(grads["bias"], g.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_x, g * np.asarray(scale) * inv_std, rtol=1e-5, atol=1e-6)


def test_running_stats_carry_no_gradient(rng):
    x, scale, bias, mean, var = _data(rng)

    def new_stats_sum(params):
        _, updates = InstanceNorm().apply(
            {"params": params, "batch_stats": {"mean": mean, "var": var}},
            x * params["scale"],
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return updates["batch_stats"]["mean"].sum()

    grads = jax.grad(new_stats_sum)({"scale": scale, "bias": bias})
    np.testing.assert_array_equal(grads["scale"], np.zeros(3))


# --- checkpoints ----------------------------------------------------------------------------


def test_flax_serialization_round_trip(rng):
    x, scale, bias, mean, var = _data(rng)
    layer = InstanceNorm(momentum=0.5)
    variables = _variables(scale, bias, mean, var)
    for _ in range(3):
        _, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        variables = {**variables, **updates}
    blob = serialization.to_bytes(variables)
    template = layer.init(jax.random.key(0), x, use_running_average=False)
    restored = serialization.from_bytes(template, blob)
    chex.assert_trees_all_equal(restored, variables)
    assert not np.allclose(restored["batch_stats"]["mean"], template["batch_stats"]["mean"])
    np.testing.assert_array_equal(
        layer.apply(restored, x, use_running_average=True),
        layer.apply(variables, x, use_running_average=True),
    )


# --- bad input ------------------------------------------------------------------------------


def test_bad_arguments_raise_named_errors(rng):
    x = _data(rng)[0]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"channel_axis.*got 0"):
        InstanceNorm(channel_axis=0).init(key, x, use_running_average=False)
    with pytest.raises(ValueError, match=r"channel_axis.*got 4"):
        InstanceNorm(channel_axis=4).init(key, x, use_running_average=False)
    with pytest.raises(TypeError, match="channel_axis"):
        InstanceNorm(channel_axis=1.0).init(key, x, use_running_average=False)
    with pytest.raises(ValueError, match=r"at least 3 dims.*\(4, 3\)"):
        InstanceNorm().init(key, x[:, 0, 0], use_running_average=False)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*1.5"):
        InstanceNorm(momentum=1.5).init(key, x, use_running_average=False)
    with pytest.raises(TypeError, match="momentum"):
        InstanceNorm(momentum="0.9").init(key, x, use_running_average=False)


# --- subprocesses: several devices, and no flax ---------------------------------------------


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


SHARDED_LINEN = """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from lucid_jax.flax.linen import InstanceNorm

    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("batch",))
    rng = np.random.default_rng(0)
    # Shards with different statistics, so a per-shard update would differ from the global.
    x = jnp.asarray(rng.normal(0, 1, (8, 5, 5, 3)) * np.arange(1, 9)[:, None, None, None]
                    + np.arange(8)[:, None, None, None], jnp.float32)
    variables = {"params": {"scale": jnp.asarray([1.0, 2.0, 0.5]),
                            "bias": jnp.asarray([0.0, 1.0, -1.0])},
                 "batch_stats": {"mean": jnp.asarray([0.5, -1.0, 2.0]),
                                 "var": jnp.asarray([1.0, 2.0, 0.5])}}

    def sharded(layer):
        def step(variables, x):
            y, updates = layer.apply(variables, x, use_running_average=False,
                                     mutable=["batch_stats"])
            return y, jax.tree.map(lambda a: a[None], updates)  # one row per shard
        f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")),
                                  out_specs=(P("batch"), P("batch"))))
        return f(jax.device_put(variables, NamedSharding(mesh, P())),
                 jax.device_put(x, NamedSharding(mesh, P("batch"))))

    y, updates = sharded(InstanceNorm(momentum=0.9, batch_axis_name="batch"))
    ref_y, ref = InstanceNorm(momentum=0.9).apply(variables, x, use_running_average=False,
                                                  mutable=["batch_stats"])
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    for name in ("mean", "var"):
        rows = np.asarray(updates["batch_stats"][name])
        assert rows.shape == (4, 3)
        for row in rows:
            np.testing.assert_allclose(row, ref["batch_stats"][name], rtol=1e-6, atol=1e-6)
    # Control: without axis_name each shard only sees its own two samples.
    _, local = sharded(InstanceNorm(momentum=0.9))
    rows = np.asarray(local["batch_stats"]["mean"])
    assert not np.allclose(rows[0], rows[3])
    print("OK")
"""


def test_axis_name_under_shard_map_gives_every_shard_the_global_update():
    result = _run_python(SHARDED_LINEN, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


NO_FLAX = """
    import sys
    sys.modules[{blocked!r}] = None  # any later `import {blocked}` raises ImportError
    import jax.numpy as jnp
    import lucid_jax
    assert sys.modules.get("flax") is None and "lucid_jax.flax" not in sys.modules
    out = lucid_jax.instance_norm(jnp.ones((1, 2, 3)))  # the core works without the extra
    assert out.output.shape == (1, 2, 3)
    try:
        import lucid_jax.flax.linen
    except ImportError as error:
        print(error)
    else:
        raise SystemExit("lucid_jax.flax imported without {blocked}")
"""


def test_lucid_jax_imports_without_flax_and_lucid_jax_flax_says_how_to_install():
    result = _run_python(NO_FLAX.format(blocked="flax"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install flax" in result.stdout
    assert "flax" in result.stdout
