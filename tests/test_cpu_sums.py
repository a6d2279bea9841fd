"""`lucid_jax._cpu_sums`: instance sums accumulated in float64 on CPU, float32 elsewhere.

`instance_sum` takes this path only on a jaxlib whose XLA:CPU adds rows in sequence (older than
0.10.2: `make test-oldest` runs there); `float64_on_cpu_sum` is the path itself, tested here on
every jaxlib: its value, its lowering per platform, and every transformation, as `jnp.sum`.
"""

from __future__ import annotations

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_cases import make_mesh

from lucid_jax import _cpu_sums
from lucid_jax._cpu_sums import float64_on_cpu_sum, instance_sum

#: The sums' values are claims about the numbers users' XLA computes: compiled as XLA compiles
#: by default (conftest.FAST_COMPILE).
pytestmark = pytest.mark.default_codegen

AXES = (2, 3)


def _squares_after_an_outlier() -> np.ndarray:
    """Sums of squares that a running float32 sum gets wrong: in each (32, 32) instance a
    first term of 1e12 and 1,023 terms near 9.5e5 (each a 14.57-ulp step at 1e12: every
    addition rounds the same way, 2.7e-5 of the total lost in a single running sum)."""
    rng = np.random.default_rng(0)
    d = rng.normal(-977.0, 1.0, (2, 3, 32, 32))
    d[:, :, 0, 0] = 1e6
    return np.square(d).astype(np.float32)


def test_sum_is_the_float32_rounding_of_the_exact_sum():
    v = _squares_after_an_outlier()
    exact = v.astype(np.float64).sum(axis=AXES, keepdims=True)
    total = np.asarray(jax.jit(lambda v: float64_on_cpu_sum(v, AXES))(v), np.float64)
    # float64 accumulation leaves the sum within one float32 rounding of the exact value.
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(total - exact) <= ulp / 2 + 1e-6 * ulp), np.abs(total - exact) / ulp


def test_eager_call_is_the_compiled_sum():
    v = _squares_after_an_outlier()
    np.testing.assert_array_equal(
        float64_on_cpu_sum(v, AXES), jax.jit(lambda v: float64_on_cpu_sum(v, AXES))(v)
    )


def test_cpu_program_accumulates_in_float64_and_gpu_tpu_programs_do_not():
    v = jnp.ones((2, 3, 8, 8), jnp.float32)
    f = jax.jit(lambda v: float64_on_cpu_sum(v, AXES))
    assert "xf64>" in f.lower(v).as_text()  # a tensor<...xf64> in the CPU program
    for platform in ("cuda", "tpu"):
        text = export.export(f, platforms=[platform])(v).mlir_module()
        assert "xf64>" not in text and "f64>" not in text.replace("xf64>", ""), platform
        assert "stablehlo.reduce" in text


def test_float64_input_and_no_axes_are_plain_sums():
    v = np.arange(24.0).reshape(2, 3, 4)
    with jax.enable_x64(True):
        chex.assert_trees_all_equal(
            float64_on_cpu_sum(jnp.asarray(v), (2,)), jnp.sum(jnp.asarray(v), 2, keepdims=True)
        )
    x = jnp.ones((2, 3), jnp.float32)
    chex.assert_trees_all_equal(float64_on_cpu_sum(x, ()), x)


@pytest.mark.long_running
def test_transformations_are_those_of_a_sum():
    # Data from numpy: jax.random compiles a program per shape (seconds each on XLA:CPU).
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 3, 4, 5), np.float32)) * 3 + 1
    t = jnp.asarray(rng.standard_normal(x.shape, np.float32))

    def ours(x):
        return jnp.sin(float64_on_cpu_sum(x, AXES))

    def theirs(x):
        return jnp.sin(jnp.sum(x, AXES, keepdims=True))

    tol = {"rtol": 1e-5, "atol": 1e-5}
    chex.assert_trees_all_close(jax.jvp(ours, (x,), (t,)), jax.jvp(theirs, (x,), (t,)), **tol)
    chex.assert_trees_all_close(
        jax.grad(lambda x: ours(x).sum())(x), jax.grad(lambda x: theirs(x).sum())(x), **tol
    )
    chex.assert_trees_all_close(
        jax.hessian(lambda x: ours(x).sum())(x[:1, :1, :2, :2]),
        jax.hessian(lambda x: theirs(x).sum())(x[:1, :1, :2, :2]),
        **tol,
    )
    batched = jnp.stack([x, 2 * x, -x])
    for in_axes in (0, 2):
        moved = jnp.moveaxis(batched, 0, in_axes)
        chex.assert_trees_all_close(
            jax.vmap(ours, in_axes=in_axes)(moved), jax.vmap(theirs, in_axes=in_axes)(moved), **tol
        )


@pytest.mark.parametrize("mode", ["auto", "explicit"])
def test_sum_over_a_split_axis_is_whole_and_its_gradient_keeps_the_split(mode):
    mesh = make_mesh((8,), ("x",), mode)
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 4), np.float32)
    sharding = NamedSharding(mesh, P(None, None, "x"))
    x = jax.device_put(x, sharding)

    def loss(x):
        return jnp.sum(jnp.sin(float64_on_cpu_sum(x, AXES)))

    with jax.set_mesh(mesh) if mode == "explicit" else contextlib.nullcontext():
        total = jax.jit(lambda x: float64_on_cpu_sum(x, AXES))(x)
        grad = jax.jit(jax.grad(loss))(x)
    expected = np.asarray(x, np.float64).sum(axis=AXES, keepdims=True)
    np.testing.assert_allclose(np.asarray(total), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(grad), np.broadcast_to(np.cos(expected), x.shape), rtol=1e-5, atol=1e-5
    )
    if mode == "explicit":  # typed shardings: the cotangent is split as its operand
        assert grad.sharding.is_equivalent_to(sharding, grad.ndim)


def test_instance_sum_takes_the_float64_path_only_where_cpu_sums_run_in_sequence():
    jaxpr = str(jax.make_jaxpr(lambda v: instance_sum(v, AXES))(jnp.ones((2, 3, 4, 4))))
    assert ("lucid_jax_instance_sum" in jaxpr) == _cpu_sums.SEQUENTIAL_CPU_SUMS
