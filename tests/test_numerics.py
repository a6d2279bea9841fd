"""Numerical accuracy: a stable variance, measured against float64 and PyTorch's CPU kernel."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_instance_norm

import lucid_jax


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
