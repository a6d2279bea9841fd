"""Numerical accuracy: a stable variance, measured against float64 and PyTorch's CPU kernel."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from accuracy_layouts import LAYOUTS, layout, relative_error
from conftest import reference_instance_norm

import lucid_jax

# One worker for the module: its tests share programs (layouts and shapes), which split over two
# workers each compiled (85 programs against 59). Its claims are about the numbers users' XLA
# computes: compiled as XLA compiles by default (conftest.FAST_COMPILE).
pytestmark = [pytest.mark.xdist_group("numerics"), pytest.mark.default_codegen]


def _offset_data(offset, shape=(4, 8, 32, 32), seed=0):
    return np.random.default_rng(seed).normal(offset, 1.0, shape).astype(np.float32)


def _max_error(y, reference):
    return float(np.max(np.abs(np.asarray(y, np.float64) - reference)))


@pytest.mark.torch
@pytest.mark.parametrize("offset", [1e4, 1e5, -3e4])
def test_error_stays_within_twice_pytorch_cpu(offset):
    torch = pytest.importorskip("torch")
    x = _offset_data(offset)
    reference, _, _ = reference_instance_norm(x)  # float64 on the same float32 values
    ours = _max_error(lucid_jax.instance_norm(jnp.asarray(x)).output, reference)
    theirs = _max_error(torch.nn.functional.instance_norm(torch.from_numpy(x)).numpy(), reference)
    assert ours <= 2 * theirs, (ours, theirs)


def test_variance_is_accurate_where_the_one_pass_formula_fails():
    x = _offset_data(1e4, shape=(2, 3, 4096))
    out = lucid_jax.instance_norm(jnp.asarray(x), jnp.zeros(3), jnp.zeros(3), momentum=1.0)
    exact_var = x.astype(np.float64).var(axis=2).mean(axis=0)
    np.testing.assert_allclose(out.running_var, exact_var, rtol=1e-4)
    # E[x²] - E[x]² in float32 on the same data loses every digit (the naive way is wrong).
    naive = (x**2).mean(axis=2) - x.mean(axis=2) ** 2
    assert np.max(np.abs(naive.mean(axis=0) - exact_var) / exact_var) > 1e-2
    y = np.asarray(lucid_jax.instance_norm(jnp.asarray(x)).output, np.float64)
    np.testing.assert_allclose(y.std(axis=2), 1.0, rtol=1e-4)
    np.testing.assert_allclose(y.mean(axis=2), 0.0, atol=1e-4)


def test_constant_instance_gives_zero_not_nan():
    x = jnp.full((2, 3, 7), 123.25, jnp.float32)
    out = lucid_jax.instance_norm(x, jnp.zeros(3), jnp.ones(3), momentum=1.0)
    np.testing.assert_array_equal(out.output, np.zeros((2, 3, 7)))
    np.testing.assert_array_equal(out.running_var, np.zeros(3))
    np.testing.assert_allclose(out.running_mean, np.full(3, 123.25))


def test_eps_zero_with_nonconstant_data_is_finite():
    x = jnp.asarray(_offset_data(0.0, (2, 3, 16)))
    y = lucid_jax.instance_norm(x, eps=0.0).output
    np.testing.assert_allclose(y, reference_instance_norm(x, eps=0.0)[0], rtol=1e-5, atol=1e-5)


def _regime_cases():
    rng = np.random.default_rng(7)
    centred = rng.normal(0.5, 2.0, (3, 4, 16, 48))
    offset = rng.normal(1e4, 1.0, (3, 4, 16, 48))
    mixed = centred.copy()
    mixed[:, 1] += 3e3  # one channel far from zero, the others near it
    zero_head = rng.normal(1e3, 1.0, (3, 4, 16, 48))
    zero_head[:, :, 0, :] = 0.0  # a first row that says "near zero"; the instance is not
    far_head = rng.normal(2e4, 1.0, (3, 4, 16, 48))
    far_head[:, :, 0, :] = rng.normal(1e4, 1.0, (3, 4, 48))  # first row 1e4 away from the mean
    line = rng.normal(-5e3, 0.5, (2, 3, 200))  # one spatial axis
    return {
        "centred": (centred, 1),
        "offset": (offset, 1),
        "mixed": (mixed, 1),
        "zero-head": (zero_head, 1),
        "far-head": (far_head, 1),
        "far-head-channels-last": (np.moveaxis(far_head, 1, -1), -1),
        "line": (line, 1),
    }


@pytest.mark.parametrize("case", sorted(_regime_cases()))
def test_output_and_running_stats_match_float64_in_every_regime(case):
    """The default two-pass variance: output, running mean and running var, any layout."""
    x64, channel_axis = _regime_cases()[case]
    x = x64.astype(np.float32)
    stats = (np.zeros(x.shape[channel_axis]), np.ones(x.shape[channel_axis]))
    expected, mean, var = reference_instance_norm(
        x, *stats, momentum=1.0, channel_axis=channel_axis
    )  # float64 on the same float32 values
    out = lucid_jax.instance_norm(
        jnp.asarray(x), *map(jnp.asarray, stats), momentum=1.0, channel_axis=channel_axis
    )
    assert _max_error(out.output, expected) < 1e-5
    np.testing.assert_allclose(out.running_var, var, rtol=1e-4)
    np.testing.assert_allclose(out.running_mean, mean, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_two_pass_error_is_within_a_millionth_on_every_awkward_layout(name):
    """Issue bound: ≤ max(2 × PyTorch CPU's, 1e-6); this pins the stricter 1e-6 (and 2e-7
    measured, see ``make accuracy``) without needing PyTorch."""
    x, channel_axis = layout(name)
    reference, _, _ = reference_instance_norm(x, channel_axis=channel_axis)
    y = lucid_jax.instance_norm(jnp.asarray(x), channel_axis=channel_axis).output
    assert relative_error(y, reference) <= 1e-6


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_two_pass_error_is_within_twice_pytorch_cpu_on_every_awkward_layout(name):
    torch = pytest.importorskip("torch")
    x, channel_axis = layout(name)
    reference, _, _ = reference_instance_norm(x, channel_axis=channel_axis)
    ours = relative_error(
        lucid_jax.instance_norm(jnp.asarray(x), channel_axis=channel_axis).output, reference
    )
    channels_first = np.ascontiguousarray(np.moveaxis(x, channel_axis, 1))
    theirs = torch.nn.functional.instance_norm(torch.from_numpy(channels_first)).numpy()
    theirs = relative_error(np.moveaxis(theirs, 1, channel_axis), reference)
    assert ours <= max(2 * theirs, 1e-6), (ours, theirs)


@pytest.mark.parametrize("mean", [0.0, 0.5, -1.0])
def test_one_pass_is_as_accurate_near_zero(mean):
    x = _offset_data(mean)
    reference, _, _ = reference_instance_norm(x)
    y = lucid_jax.instance_norm(jnp.asarray(x), variance_method="one_pass").output
    assert relative_error(y, reference) <= 1e-6


def test_one_pass_is_wrong_far_from_zero_as_documented():
    """Why two_pass is the default: E[x²] - E[x]² loses every digit at mean 1e4, std 1."""
    x = _offset_data(1e4)
    reference, _, _ = reference_instance_norm(x)
    one = lucid_jax.instance_norm(jnp.asarray(x), variance_method="one_pass").output
    two = lucid_jax.instance_norm(jnp.asarray(x), variance_method="two_pass").output
    assert relative_error(one, reference) > 1e-1
    assert relative_error(two, reference) <= 1e-6


def test_variance_methods_agree_on_centred_data_in_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).normal(0.2, 1.5, (3, 4, 9, 7)))
        one = lucid_jax.instance_norm(x, jnp.zeros(4), jnp.ones(4), variance_method="one_pass")
        two = lucid_jax.instance_norm(x, jnp.zeros(4), jnp.ones(4), variance_method="two_pass")
        chex.assert_trees_all_close(tuple(one), tuple(two), rtol=1e-12, atol=1e-12)


def test_infinite_value_gives_an_infinite_running_mean_as_lucid():
    """Lucid 2.14.5 (numpy): mean of an instance holding +inf is inf, its variance NaN."""
    x = np.array([[[1.0, 2.0, np.inf], [1.0, 2.0, 3.0]], [[-np.inf, 0.0, 1.0], [4.0, 5.0, 6.0]]])
    x = x.astype(np.float32)
    out = lucid_jax.instance_norm(jnp.asarray(x), jnp.zeros(2), jnp.ones(2), momentum=1.0)
    with np.errstate(invalid="ignore"):
        expected, mean, var = reference_instance_norm(x, np.zeros(2), np.ones(2), momentum=1.0)
    # channel 0 averages +inf and -inf instances: NaN; channel 1 is finite.
    np.testing.assert_array_equal(np.isnan(out.running_mean), np.isnan(mean))
    np.testing.assert_array_equal(np.isnan(out.running_var), np.isnan(var))
    np.testing.assert_allclose(out.running_mean[1], mean[1], rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(np.asarray(out.output)), np.isnan(expected))
    single = lucid_jax.instance_norm(
        jnp.asarray(x[:1, :1]), jnp.zeros(1), jnp.ones(1), momentum=1.0
    )
    assert single.running_mean[0] == np.inf and np.isnan(single.running_var[0])
    negative = lucid_jax.instance_norm(
        jnp.asarray(x[1:, :1]), jnp.zeros(1), jnp.ones(1), momentum=1.0
    )
    assert negative.running_mean[0] == -np.inf


@pytest.mark.parametrize("variance_method", ["two_pass", "one_pass"])
def test_overflowing_square_gives_an_infinite_variance_as_lucid(variance_method):
    """float32 squares above 3.4e38 overflow: Lucid's variance is inf, so y = bias."""
    x = jnp.asarray([[[1e30, 1e30, -1e30]]], jnp.float32)
    out = lucid_jax.instance_norm(
        x,
        jnp.zeros(1),
        jnp.ones(1),
        bias=jnp.asarray([0.5]),
        momentum=1.0,
        variance_method=variance_method,
    )
    np.testing.assert_array_equal(out.output, np.full((1, 1, 3), 0.5, np.float32))
    assert out.running_var[0] == np.inf
    np.testing.assert_allclose(out.running_mean, [1e30 / 3], rtol=1e-6)


@pytest.mark.parametrize("offset", [0.0, 30.0, 1e4])
def test_float32_gradient_matches_float64_autodiff(offset):
    """The custom derivative stays accurate far from zero (PyTorch's CPU one: 1.4e-5 at 1e4)."""
    x = _offset_data(offset)
    g = np.random.default_rng(1).normal(0.0, 1.0, x.shape).astype(np.float32)

    def naive(x):
        mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5)

    with jax.enable_x64(True):
        (expected,) = jax.vjp(naive, jnp.asarray(x, jnp.float64))[1](jnp.asarray(g, jnp.float64))
        expected = np.asarray(expected)
    (ours,) = jax.vjp(lambda x: lucid_jax.instance_norm(x).output, jnp.asarray(x))[1](
        jnp.asarray(g)
    )
    assert _max_error(ours, expected) / np.max(np.abs(expected)) < 1e-6
