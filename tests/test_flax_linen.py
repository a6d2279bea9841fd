"""`lucid_jax.flax.linen.InstanceNorm`: what is linen's own: collections, `merge_param`, `mutable`.

What both faces share (training, momentum, drop-in, dtypes, checkpoints, bad input) is checked
in `test_flax_faces.py`, several devices in `test_flax_devices.py`. References: the pure
function, a float64 numpy implementation of Lucid's maths (`conftest.reference_instance_norm`)
and `flax.linen.InstanceNorm` (an independent implementation, for the gradients).

These tests pin the running statistics, so `InstanceNorm` here is the layer with them on
(opt-in) and Lucid's eps 1e-5; the default, Flax's layer, is pinned in
`test_flax_contract.py` and `test_flax_real_models.py`.
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

import functools
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from conftest import ROOT, host_array, jitted, reference_instance_norm, run_python
from conftest import channels_last_data as _data
from conftest import reference_channels_last as _reference_channels_last

import lucid_jax
from lucid_jax.flax import linen as lucid_linen

InstanceNorm = functools.partial(lucid_linen.InstanceNorm, track_running_stats=True, epsilon=1e-5)


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
    # Their values (ones, zeros, zeros, ones): test_flax_faces.py.


def test_init_with_eval_mode_declares_the_same_variables(rng):
    x = _data(rng)[0]
    train = InstanceNorm().init(jax.random.key(0), x, use_running_average=False)
    evaluate = InstanceNorm(use_running_average=True).init(jax.random.key(0), x)
    chex.assert_trees_all_equal(train, evaluate)


# --- training and eval ---------------------------------------------------------------------


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


@pytest.mark.parametrize("x_dtype", [jnp.bfloat16, jnp.float32])
def test_force_float32_reductions_false_still_reduces_in_float32(rng, x_dtype):
    """Flax's False reduces half precision input in half precision; ours stays float32."""
    x = host_array(rng.normal(2.0, 3.0, (2, 6, 7, 3)), x_dtype)
    variables = jitted(nn.InstanceNorm().init)(jax.random.key(0), x)
    forced = InstanceNorm(track_running_stats=False).apply(variables, x)
    free = InstanceNorm(track_running_stats=False, force_float32_reductions=False)
    y = free.apply(variables, x)
    assert y.dtype == forced.dtype
    np.testing.assert_array_equal(y, forced)
    # Eager, as a user's call: jitted, XLA:CPU keeps some of Flax's bfloat16 intermediates in
    # float32 (its error here halves, 0.011 -> 0.0055: still far above ours, 2e-7).
    theirs = nn.InstanceNorm(
        force_float32_reductions=False, epsilon=1e-5, use_fast_variance=False
    ).apply(variables, x)
    assert theirs.dtype == y.dtype
    ref_y, _, _ = _reference_channels_last(np.asarray(x, np.float32))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    if x_dtype == jnp.bfloat16:  # Flax's bfloat16 statistics are visibly less accurate
        ours_error = np.abs(np.asarray(y, np.float64) - ref_y).max()
        theirs_error = np.abs(np.asarray(theirs, np.float64) - ref_y).max()
        assert ours_error < theirs_error


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
    cotangent = host_array(rng.normal(size=x.shape))
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
        jitted(jax.grad(theirs, argnums=(0, 1)))(params, x),
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


# --- without flax --------------------------------------------------------------------------


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


@pytest.mark.long_running
def test_lucid_jax_imports_without_flax_and_lucid_jax_flax_says_how_to_install():
    result = run_python("-c", textwrap.dedent(NO_FLAX.format(blocked="flax")), cwd=ROOT)
    assert "pip install flax" in result.stdout
    assert "flax" in result.stdout
