"""One program for every backend: no control flow on data, no CPU hint outside CPU, any dtype.

``jax.export`` lowers for ``cuda`` and ``tpu`` without those devices, so the programs XLA gets
there are read here: they must hold no conditional or loop (a data-dependent ``case`` stalls
the host on GPU, runs every branch under ``vmap`` and costs a collective when sharded), and
no optimization barrier over an activation (those are XLA:CPU fusion hints, see
``lucid_jax._cpu_barrier``; on GPU they would split sibling reductions into separate reads).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_instance_norm
from jax import export

import lucid_jax

#: The exports only lower (XLA's optimisation flag does not touch them); the programs compiled
#: here are run once each, where optimising them was most of their time
#: (`conftest.xla_optimisations_off`): the one bit-for-bit comparison is between two programs
#: compiled alike, the others within tolerances far above the rounding it could change.
# Each export serves two tests (cached): the fixture keeps the module on one worker.
pytestmark = pytest.mark.usefixtures("unoptimised_module")

SHAPE = (2, 4, 6, 10)
CONTROL_FLOW = ("stablehlo.case", "stablehlo.if", "stablehlo.while")


def _arguments(channel_axis: int, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    shape = SHAPE if channel_axis == 1 else (2, 6, 10, 4)
    x = jnp.asarray(rng.normal(3.0, 2.0, shape), dtype)
    vectors = [jnp.asarray(v, jnp.float32) for v in rng.uniform(0.5, 1.5, (4, 4))]
    return x, *vectors


def _functions(channel_axis: int, variance_method: str):
    def train(x, rm, rv, w, b):
        return lucid_jax.instance_norm(
            x, rm, rv, w, b, channel_axis=channel_axis, variance_method=variance_method
        )

    def evaluate(x, rm, rv, w, b):
        return lucid_jax.instance_norm(x, rm, rv, w, b, training=False, channel_axis=channel_axis)

    def forward_backward(x, rm, rv, w, b):
        y, pullback = jax.vjp(lambda x, w, b: train(x, rm, rv, w, b).output, x, w, b)
        return y, pullback(jnp.cos(y))

    def second_order(x, rm, rv, w, b):
        return jax.grad(
            lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(train(x, rm, rv, w, b)[0] ** 3))(x) ** 2)
        )(x)

    return {
        "train": train,
        "eval": evaluate,
        "forward_backward": forward_backward,
        "second_order": second_order,
        "vmap_forward_backward": jax.vmap(forward_backward, in_axes=(0, None, None, None, None)),
    }


CASES = [
    (platform, channel_axis, method, fn)
    for platform in ("cuda", "tpu")
    for channel_axis in (1, -1)
    for method in ("two_pass", "one_pass")
    for fn in ("train", "eval", "forward_backward", "second_order", "vmap_forward_backward")
]


@functools.cache
def _exported_text(platform: str, channel_axis: int, method: str, fn: str) -> str:
    """The StableHLO module of the case exported for `platform` (each read by two tests)."""
    args = _arguments(channel_axis)
    if fn.startswith("vmap"):
        args = (jnp.stack([args[0], args[0] + 1]), *args[1:])
    f = jax.jit(_functions(channel_axis, method)[fn])
    return export.export(f, platforms=[platform])(*args).mlir_module()


@pytest.mark.parametrize(("platform", "channel_axis", "method", "fn"), CASES)
def test_exported_program_has_no_control_flow(platform, channel_axis, method, fn):
    text = _exported_text(platform, channel_axis, method, fn)
    found = [op for op in CONTROL_FLOW if op in text]
    assert not found, f"{platform} {fn}: {found}"


@pytest.mark.parametrize(("platform", "channel_axis", "method", "fn"), CASES)
def test_exported_program_has_no_barrier_over_an_activation(platform, channel_axis, method, fn):
    """The CPU read hints lower to nothing elsewhere; barriers on statistics are harmless."""
    text = _exported_text(platform, channel_axis, method, fn)
    barriers = [line for line in text.splitlines() if "stablehlo.optimization_barrier" in line]
    elements = [
        int(np.prod([int(d) for d in shape.split("x")[:-1]]))
        for line in barriers
        for shape in re.findall(r"tensor<([0-9x]+[a-z0-9]+)>", line.split(":")[-1])
    ]
    assert all(n < int(np.prod(SHAPE)) for n in elements), (platform, fn, barriers)


def test_the_parser_above_sees_an_activation_barrier_and_a_case():
    """Control: a program with both is caught by the same checks."""

    def f(x):
        x = jax.lax.optimization_barrier(x)
        return jax.lax.cond(jnp.sum(x) > 0, jnp.sin, jnp.cos, x)

    text = export.export(jax.jit(f), platforms=["cuda"])(jnp.ones(SHAPE)).mlir_module()
    assert "stablehlo.case" in text
    barrier = next(line for line in text.splitlines() if "optimization_barrier" in line)
    assert re.findall(r"tensor<([0-9x]+[a-z0-9]+)>", barrier.split(":")[-1]) == ["2x4x6x10xf32"]


@pytest.mark.parametrize("method", ["two_pass", "one_pass"])
@pytest.mark.parametrize("fn", ["train", "forward_backward", "vmap_forward_backward"])
def test_compiled_cpu_program_has_no_conditional(method, fn):
    args = _arguments(1)
    if fn.startswith("vmap"):
        args = (jnp.stack([args[0], args[0] + 1]), *args[1:])
    f = _functions(1, method)[fn]
    jaxpr = str(jax.make_jaxpr(f)(*args))
    assert "cond[" not in jaxpr and "while[" not in jaxpr
    hlo = jax.jit(f).lower(*args).compile().as_text()
    assert not re.search(r"\bconditional\(|\bwhile\(", hlo)


# --- dtypes --------------------------------------------------------------------------------

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.int32, jnp.int8, jnp.uint8]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("with_params", [False, True])
def test_strict_promotion_works_for_every_input_dtype(dtype, with_params):
    x = jnp.asarray(np.random.default_rng(0).integers(0, 9, SHAPE), dtype)
    params = (jnp.ones(4), jnp.zeros(4), jnp.full(4, 2.0), jnp.full(4, 0.5)) if with_params else ()
    with jax.numpy_dtype_promotion("strict"):
        out = lucid_jax.instance_norm(x, *params)
        # Jitted: traced under strict promotion all the same, and compiled as one program.
        grad = jax.jit(jax.grad(lambda x: jnp.sum(lucid_jax.instance_norm(x, *params).output)))
        if jnp.issubdtype(dtype, jnp.floating):
            grad(x)
    standard = lucid_jax.instance_norm(x, *params)
    assert out.output.dtype == standard.output.dtype
    np.testing.assert_array_equal(out.output, standard.output)
    expected, _, _ = reference_instance_norm(np.asarray(x, np.float64), *map(np.asarray, params))
    tolerance = 5e-3 if jnp.dtype(dtype).itemsize == 2 and with_params is False else 2e-2
    np.testing.assert_allclose(np.asarray(out.output, np.float64), expected, atol=tolerance)


@pytest.mark.parametrize(
    ("x_dtype", "param_dtype", "expected"),
    [
        (jnp.bfloat16, None, jnp.bfloat16),
        (jnp.float16, None, jnp.float16),
        (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
        (jnp.bfloat16, jnp.float32, jnp.float32),
        (jnp.float16, jnp.bfloat16, jnp.float32),
        (jnp.float32, jnp.float16, jnp.float32),
        (jnp.int32, jnp.float32, jnp.float32),
    ],
)
def test_output_dtype_is_the_promotion_of_input_weight_and_bias(x_dtype, param_dtype, expected):
    x = jnp.ones(SHAPE, x_dtype)
    params = () if param_dtype is None else (jnp.ones(4, param_dtype), jnp.zeros(4, param_dtype))
    assert lucid_jax.instance_norm(x, None, None, *params).output.dtype == expected


def test_float32_input_with_float64_weight_gives_float64_when_x64_is_on():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(1e4, 1.0, SHAPE), jnp.float32)
        out = lucid_jax.instance_norm(x, weight=jnp.ones(4, jnp.float64))
        assert out.output.dtype == jnp.float64
        expected, _, _ = reference_instance_norm(np.asarray(x), weight=np.ones(4))
        np.testing.assert_allclose(out.output, expected, rtol=1e-10, atol=1e-10)
