"""The pure function under JAX transformations: jit, vmap, grad, jvp, second order."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_instance_norm
from grad_check import check_grads

import lucid_jax
from lucid_jax.nn import Buffer

#: Each derivative check compiles one program (`grad_check.check_grads`): optimising it was
#: half its time (`conftest.xla_optimisations_off`). Every comparison here is within a
#: tolerance far above the rounding an optimisation could change.
pytestmark = pytest.mark.usefixtures("unoptimised_module")


def _data(rng, shape=(3, 4, 5, 6), dtype=np.float32):
    c = shape[1]
    return (
        jnp.asarray(rng.normal(2.0, 3.0, shape), dtype),
        jnp.asarray(rng.normal(0.0, 1.0, c), dtype),
        jnp.asarray(rng.uniform(0.5, 2.0, c), dtype),
        jnp.asarray(rng.normal(1.0, 0.5, c), dtype),
        jnp.asarray(rng.normal(0.0, 0.5, c), dtype),
    )


@pytest.mark.parametrize("training", [True, False])
def test_jit_equals_eager(rng, training):
    x, rm, rv, w, b = _data(rng)
    eager = lucid_jax.instance_norm(x, rm, rv, w, b, training, 0.3, 1e-3)
    jitted = jax.jit(lucid_jax.instance_norm, static_argnames=("training",))(
        x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-3
    )
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-6)


def test_jit_with_traced_momentum_and_eps_matches_reference(rng):
    x, rm, rv, w, b = _data(rng)
    f = jax.jit(lambda m, e: lucid_jax.instance_norm(x, rm, rv, w, b, True, m, e))
    out = f(0.25, 1e-2)
    y, new_mean, new_var = reference_instance_norm(x, rm, rv, w, b, True, 0.25, 1e-2)
    chex.assert_trees_all_close(tuple(out), (y, new_mean, new_var), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channel_axis", [1, -1, 2])
def test_vmap_equals_python_loop(rng, channel_axis):
    xs = jnp.asarray(rng.normal(size=(4, 2, 3, 5, 6)), jnp.float32)
    channels = xs.shape[1:][channel_axis]
    rm = jnp.asarray(rng.normal(size=(4, channels)), jnp.float32)
    rv = jnp.asarray(rng.uniform(1, 2, (4, channels)), jnp.float32)

    def f(x, m, v):
        return lucid_jax.instance_norm(x, m, v, momentum=0.2, channel_axis=channel_axis)

    batched = jax.vmap(f)(xs, rm, rv)
    looped = [f(xs[i], rm[i], rv[i]) for i in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *looped)
    chex.assert_trees_all_close(batched, stacked, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_matches_float64_reference_any_layout(rng, channel_axis):
    x, rm, rv, w, b = _data(rng, (2, 3, 4, 5))
    if channel_axis == -1:
        x = jnp.moveaxis(x, 1, -1)  # (2, 4, 5, 3): C = 3 last
        rm, rv, w, b = (v[:1].repeat(3) for v in (rm, rv, w, b))
    out = lucid_jax.instance_norm(x, rm, rv, w, b, momentum=0.4, channel_axis=channel_axis)
    y, new_mean, new_var = reference_instance_norm(
        x, rm, rv, w, b, True, 0.4, channel_axis=channel_axis
    )
    chex.assert_trees_all_close(tuple(out), (y, new_mean, new_var), rtol=1e-5, atol=1e-5)


@functools.cache
def _loss_fn(channel_axis=1, variance_method="two_pass"):
    """The same function for the same configuration: `check_grads` reuses its program."""

    def loss(x, w, b):
        y = lucid_jax.instance_norm(
            x, None, None, w, b, channel_axis=channel_axis, variance_method=variance_method
        ).output
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)

    return loss


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_grads_second_order_both_modes_float64(rng, channel_axis):
    with jax.enable_x64(True):
        x, _, _, w, b = _data(rng, (2, 3, 4), np.float64)
        if channel_axis == -1:
            x = jnp.moveaxis(x, 1, -1)[..., :3]
        check_grads(
            _loss_fn(channel_axis),
            (x, w, b),
            order=2,
            modes=["rev", "fwd"],
            atol=1e-5,
            rtol=1e-5,
        )
        check_grads(
            lambda x: lucid_jax.instance_norm(x, channel_axis=channel_axis).output,
            (x,),
            order=2,
            modes=["rev", "fwd"],
            atol=1e-5,
            rtol=1e-5,
        )


def _sin_with_rule(first_order_error, differentiable_rule):
    """`sin` with a JVP rule `cos(x)·ẋ·(1 + first_order_error)`; the `cos` hidden from AD
    when not `differentiable_rule` (then first order is right, second order wrong)."""

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        slope = jnp.cos(x) if differentiable_rule else jax.lax.stop_gradient(jnp.cos(x))
        return jnp.sin(x), slope * t * (1 + first_order_error)

    return f


@pytest.mark.parametrize(
    ("first_order_error", "differentiable_rule", "caught", "caught_in_reverse"),
    [
        (1e-3, True, "JVP tangent", "VJP cotangent projection"),
        (0.0, False, "JVP of JVP tangent", "VJP of VJP cotangent projection"),
    ],
)
def test_derivative_check_catches_a_wrong_rule(
    first_order_error, differentiable_rule, caught, caught_in_reverse
):
    """Control for `grad_check.check_grads`: a rule wrong at first or only at second order
    fails it, in forward mode and in reverse mode alone (the right rules of the package
    pass it in the tests above)."""
    f = _sin_with_rule(first_order_error, differentiable_rule)
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 5)
        # The first check to fail names itself on a line of its own.
        with pytest.raises(AssertionError, match=f"(?m)^{caught}$"):
            check_grads(f, (x,), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
        with pytest.raises(AssertionError, match=f"(?m)^{caught_in_reverse}$"):
            check_grads(f, (x,), order=2, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_grads_of_eval_mode_and_running_stats_float64(rng):
    with jax.enable_x64(True):
        x, rm, rv, w, b = _data(rng, (2, 3, 4), np.float64)

        def f(x, rm, rv, w):
            out = lucid_jax.instance_norm(x, rm, rv, w, b, training=False)
            return out.output

        def g(x, rm, rv):
            out = lucid_jax.instance_norm(x, rm, rv, momentum=0.3)
            return out.running_mean * out.running_var

        check_grads(f, (x, rm, rv, w), order=2, modes=["rev", "fwd"], atol=1e-5, rtol=1e-5)
        check_grads(g, (x, rm, rv), order=2, modes=["rev", "fwd"], atol=1e-5, rtol=1e-5)


@pytest.mark.torch
def test_gradient_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x, _, _, w, b = _data(rng, (2, 3, 7, 5))
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    _, pullback = jax.vjp(
        lambda x, w, b: lucid_jax.instance_norm(x, None, None, w, b).output, x, w, b
    )
    ours = pullback(g)
    tx, tw, tb = (
        torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for v in (x, w, b)
    )
    torch.nn.functional.instance_norm(tx, weight=tw, bias=tb, eps=1e-5).backward(
        torch.tensor(np.asarray(g), dtype=torch.float64)
    )
    for mine, theirs in zip(ours, (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=2e-4, atol=2e-4)


@pytest.mark.torch
def test_output_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, _, _, w, b = _data(rng, (3, 4, 6, 5))
    ours = lucid_jax.instance_norm(x, None, None, w, b, eps=1e-3).output
    theirs = torch.nn.functional.instance_norm(
        torch.tensor(np.asarray(x)),
        weight=torch.tensor(np.asarray(w)),
        bias=torch.tensor(np.asarray(b)),
        eps=1e-3,
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_in_same_dtype_out_stats_in_float32(rng, dtype):
    x = jnp.asarray(rng.normal(100.0, 2.0, (2, 3, 64)), dtype)
    rm, rv = jnp.zeros(3), jnp.ones(3)
    out = lucid_jax.instance_norm(x, rm, rv, momentum=1.0)
    assert out.output.dtype == dtype
    assert out.running_mean.dtype == jnp.float32
    y, new_mean, new_var = reference_instance_norm(np.asarray(x, np.float64), rm, rv, momentum=1.0)
    # Statistics accumulate in float32: they match the float64 reference far better than the
    # half-precision ulp at 100 (0.5 for bfloat16) would allow.
    np.testing.assert_allclose(out.running_mean, new_mean, rtol=1e-6)
    np.testing.assert_allclose(out.running_var, new_var, rtol=1e-4)
    tolerance = 2**-7 if dtype == jnp.bfloat16 else 2**-10
    np.testing.assert_allclose(np.asarray(out.output, np.float64), y, atol=4 * tolerance * 3)


def test_integer_input_is_promoted_to_default_float():
    x = jnp.arange(24, dtype=jnp.int32).reshape(2, 3, 4) ** 2
    out = lucid_jax.instance_norm(x)
    assert out.output.dtype == jnp.float32
    np.testing.assert_allclose(out.output, reference_instance_norm(np.asarray(x))[0], atol=1e-5)


def test_float64_under_x64(rng):
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, 3, 10)), jnp.float64)
        out = lucid_jax.instance_norm(x, jnp.zeros(3), jnp.ones(3))
        assert out.output.dtype == jnp.float64 and out.running_mean.dtype == jnp.float64
        y, _m, v = reference_instance_norm(x, np.zeros(3), np.ones(3))
        np.testing.assert_allclose(out.output, y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out.running_var, v, rtol=1e-12)


def test_pure_function_never_touches_its_inputs(rng):
    x, rm, rv, w, b = _data(rng)
    buffers = Buffer(rm), Buffer(rv)
    before = [np.array(v) for v in (x, rm, rv)]
    out = lucid_jax.instance_norm(x, *buffers, w, b, momentum=0.5)
    for arr, old in zip(
        (x, rm, rv, buffers[0].data, buffers[1].data), before + before[1:], strict=True
    ):
        np.testing.assert_array_equal(arr, old)
    assert not np.allclose(out.running_mean, rm)


def test_eval_returns_running_stats_unchanged_and_uses_them(rng):
    x, rm, rv, w, b = _data(rng)
    out = lucid_jax.instance_norm(x, rm, rv, w, b, training=False)
    assert out.running_mean is rm and out.running_var is rv
    np.testing.assert_allclose(
        out.output,
        reference_instance_norm(x, rm, rv, w, b, training=False)[0],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("variance_method", ["two_pass", "one_pass"])
@pytest.mark.parametrize("offset", [0.3, 50.0])
def test_grads_second_order_with_each_variance_method_float64(rng, offset, variance_method):
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(offset, 1.0, (2, 3, 6)))
        w = jnp.asarray(rng.normal(1.0, 0.3, 3))
        check_grads(
            _loss_fn(variance_method=variance_method),
            (x, w, w * 0.5),
            order=2,
            modes=["rev", "fwd"],
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_vmap_over_mixed_conditioning_matches_reference(rng, offset):
    # One batch element centred, the other far from zero: one program serves both.
    xs = np.stack([rng.normal(0.0, 1.0, (2, 3, 40)), rng.normal(offset + 5e3, 1.0, (2, 3, 40))])
    xs = jnp.asarray(xs, jnp.float32)
    out = jax.vmap(lambda x: lucid_jax.instance_norm(x).output)(xs)
    for i in range(2):
        np.testing.assert_allclose(out[i], reference_instance_norm(xs[i])[0], atol=2e-5)


def _equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                yield from _equations(inner)
        yield eqn


@pytest.mark.parametrize("variance_method", ["two_pass", "one_pass"])
def test_backward_reduces_the_activation_twice_only(variance_method):
    """The custom rule's transpose: Σ g and Σ g·d per instance, nothing else activation-sized."""
    x, w = jnp.ones((2, 3, 4, 5)), jnp.ones(3)

    def f(x, w, b):
        return lucid_jax.instance_norm(x, None, None, w, b, variance_method=variance_method)[0]

    y, pullback = jax.vjp(f, x, w, w)
    backward = jax.make_jaxpr(pullback)(y).jaxpr
    reduced = [
        e.invars[0].aval.shape
        for e in _equations(backward)
        if e.primitive.name.startswith("reduce") and e.invars[0].aval.shape == x.shape
    ]
    assert reduced == [x.shape, x.shape]
