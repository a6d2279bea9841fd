"""Numerical accuracy: a stable variance, measured against float64 and PyTorch's CPU kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_instance_norm

import lucid_jax
from lucid_jax import _core


def _offset_data(offset, shape=(4, 8, 32, 32), seed=0):
    return np.random.default_rng(seed).normal(offset, 1.0, shape).astype(np.float32)


def _max_error(y, reference):
    return float(np.max(np.abs(np.asarray(y, np.float64) - reference)))


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
    mixed[:, 1] += 3e3  # one channel far from zero: the batch is taken around each head
    zero_head = rng.normal(1e3, 1.0, (3, 4, 16, 48))
    zero_head[:, :, 0, :] = 0.0  # heads say "near zero", the instances are not: recentred
    far_head = rng.normal(2e4, 1.0, (3, 4, 16, 48))
    far_head[:, :, 0, :] = rng.normal(1e4, 1.0, (3, 4, 48))  # head 1e4 away from the mean
    line = rng.normal(-5e3, 0.5, (2, 3, 200))  # one spatial axis: the head is its first 32
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
def test_every_variance_path_matches_float64(case):
    """Raw, head-shifted and recentred moments (see _core.instance_moments) are all accurate."""
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


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("centred", "raw"),
        ("offset", "head"),
        ("mixed", "head"),
        ("zero-head", "recentred"),
        ("far-head", "recentred"),
    ],
)
def test_each_case_takes_the_path_it_is_meant_to_cover(case, path):
    """Pins which of instance_moments' three paths the cases above exercise (via the shift)."""
    x64, _ = _regime_cases()[case]
    x = jnp.asarray(x64.astype(np.float32))
    shift, _, _ = _core.instance_moments(x, (2, 3))
    head = np.asarray(x[:, :, :1, : _core.HEAD_SIZE]).mean(axis=(2, 3), keepdims=True)
    if path == "raw":
        assert np.all(np.asarray(shift) == 0)
    elif path == "head":
        np.testing.assert_allclose(shift, head, rtol=1e-6)
    else:  # recentred: the shift is the instance's own (rounded) mean, far from its head
        mean = x64.mean(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(shift, mean, rtol=1e-5)
        assert np.all(np.abs(np.asarray(shift) - head) > 100)


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
