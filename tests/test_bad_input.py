"""Bad input: a clear error naming the argument, from both faces, and nothing lost."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import host_array, host_ones

import lucid_jax
import lucid_jax.nn.functional as F
from lucid_jax.nn import Buffer, InstanceNorm1d

X = host_array(np.arange(24.0).reshape(2, 3, 4))
C3 = host_ones(3)

# (description, kwargs, exception, fragments the message must contain)
CASES = [
    ("2-D input", dict(input_=host_ones((2, 3))), ValueError, ["input_", "(2, 3)", "3 dims"]),
    ("1-D input", dict(input_=host_ones(5)), ValueError, ["input_", "(5,)"]),
    (
        "zero-size spatial",
        dict(input_=host_ones((2, 3, 0))),
        ValueError,
        ["input_", "(2, 3, 0)", "zero-size"],
    ),
    ("weight shape", dict(weight=host_ones(4)), ValueError, ["weight", "(3,)", "(4,)"]),
    ("bias shape", dict(bias=host_ones((3, 1))), ValueError, ["bias", "(3,)", "(3, 1)"]),
    (
        "running_mean shape",
        dict(running_mean=host_ones(2), running_var=C3),
        ValueError,
        ["running_mean", "(3,)", "(2,)"],
    ),
    (
        "running_var shape",
        dict(running_mean=C3, running_var=host_ones(5)),
        ValueError,
        ["running_var", "(5,)"],
    ),
    (
        "only running_mean",
        dict(running_mean=C3),
        ValueError,
        ["running_mean", "running_var", "both"],
    ),
    ("only running_var", dict(running_var=C3), ValueError, ["running_var", "both"]),
    ("momentum too big", dict(momentum=1.5), ValueError, ["momentum", "[0, 1]", "1.5"]),
    ("momentum negative", dict(momentum=-0.1), ValueError, ["momentum", "-0.1"]),
    ("momentum NaN", dict(momentum=float("nan")), ValueError, ["momentum", "nan"]),
    ("eps negative", dict(eps=-1e-5), ValueError, ["eps", ">= 0", "-1e-05"]),
    ("string input", dict(input_="abc"), TypeError, ["input_", "numeric"]),
    ("object input", dict(input_=np.array([[[object()]]])), TypeError, ["input_"]),
    ("bool input", dict(input_=host_ones((2, 3, 4), bool)), TypeError, ["input_", "bool"]),
    (
        "complex input",
        dict(input_=host_ones((2, 3, 4), np.complex64)),
        TypeError,
        ["input_", "complex64"],
    ),
    ("string weight", dict(weight="w"), TypeError, ["weight"]),
    ("momentum string", dict(momentum="0.1"), TypeError, ["momentum"]),
    ("momentum vector", dict(momentum=np.ones(2)), TypeError, ["momentum", "scalar"]),
    (
        "training array",
        dict(training=jax.device_put(np.array(True))),
        TypeError,
        ["training", "bool"],
    ),
]


# Arguments of the pure function only (the shim keeps Lucid's exact signature).
PURE_ONLY_CASES = [
    (
        "unknown variance_method",
        dict(variance_method="fast"),
        ValueError,
        ["variance_method", "'two_pass'", "'one_pass'", "'fast'"],
    ),
    (
        "variance_method not a string",
        dict(variance_method=True),
        TypeError,
        ["variance_method", "string", "True"],
    ),
]


def _pure_call(**kwargs):
    args = dict(input_=X)
    args.update(kwargs)
    return lucid_jax.instance_norm(**args)


@pytest.mark.parametrize(
    "name, kwargs, error, fragments",
    CASES + PURE_ONLY_CASES,
    ids=[c[0] for c in CASES + PURE_ONLY_CASES],
)
def test_pure_function_rejects(name, kwargs, error, fragments):
    with pytest.raises(error) as info:
        _pure_call(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("name, kwargs, error, fragments", CASES, ids=[c[0] for c in CASES])
def test_shim_rejects_and_leaves_buffers_untouched(name, kwargs, error, fragments):
    args = dict(input_=X, running_mean=Buffer(jnp.zeros(3)), running_var=Buffer(jnp.ones(3)))
    args.update(kwargs)
    for key in ("running_mean", "running_var"):
        if key in kwargs and not isinstance(kwargs[key], Buffer) and kwargs[key] is not None:
            args[key] = Buffer(kwargs[key])
    if "running_mean" in kwargs and "running_var" not in kwargs:
        args["running_var"] = None
    if "running_var" in kwargs and "running_mean" not in kwargs:
        args["running_mean"] = None
    snapshot = {k: np.array(v.data) for k, v in args.items() if isinstance(v, Buffer)}
    with pytest.raises(error) as info:
        F.instance_norm(**args)
    for fragment in fragments:
        assert fragment in str(info.value)
    for key, before in snapshot.items():
        np.testing.assert_array_equal(args[key].data, before)


def test_channel_axis_zero_and_out_of_range_are_rejected():
    for axis in (0, 3, -3, -4):
        with pytest.raises(ValueError, match="channel_axis"):
            lucid_jax.instance_norm(X, channel_axis=axis)
    with pytest.raises(TypeError, match="channel_axis"):
        lucid_jax.instance_norm(X, channel_axis=1.0)


def test_shape_checks_work_under_jit():
    f = jax.jit(lambda x, w: lucid_jax.instance_norm(x, weight=w).output)
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\)"):
        f(X, jnp.ones(2))
    with pytest.raises(ValueError, match="at least 3 dims"):
        jax.jit(lambda x: lucid_jax.instance_norm(x).output)(jnp.ones((2, 3)))


def test_traced_momentum_is_accepted_under_jit():
    out = jax.jit(lambda m: lucid_jax.instance_norm(X, C3 * 0, C3, momentum=m))(0.5)
    np.testing.assert_allclose(out.running_mean, 0.5 * X.mean(axis=(0, 2)), rtol=1e-6)


def test_empty_batch_in_training_keeps_running_stats():
    rm, rv = Buffer(jnp.array([1.0, 2.0, 3.0])), Buffer(jnp.array([4.0, 5.0, 6.0]))
    y = F.instance_norm(jnp.ones((0, 3, 4)), rm, rv, momentum=0.5)
    assert y.shape == (0, 3, 4)
    np.testing.assert_array_equal(rm.data, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(rv.data, [4.0, 5.0, 6.0])
    out = lucid_jax.instance_norm(jnp.ones((0, 3, 4)), rm, rv, momentum=0.5)
    assert np.all(np.isfinite(out.running_mean)) and np.all(np.isfinite(out.running_var))


def test_nan_in_one_instance_stays_in_that_instance():
    x = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)
    x[1, 0, 2] = np.nan
    y = np.asarray(lucid_jax.instance_norm(jnp.asarray(x)).output)
    assert np.isnan(y[1, 0]).all()
    finite = np.ones((3, 2), bool)
    finite[1, 0] = False
    assert np.isfinite(y[finite]).all()


def test_module_rejects_wrong_rank_with_expected_layout():
    with pytest.raises(ValueError, match=r"InstanceNorm1d: expected a 3-D input .* got 4-D"):
        InstanceNorm1d(3)(jnp.ones((2, 3, 4, 5)))


def test_module_rejects_bad_num_features():
    with pytest.raises(ValueError, match="num_features"):
        InstanceNorm1d(0)
