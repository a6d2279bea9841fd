"""`check_grads`: `jax.test_util.check_grads`'s checks, every one computed by a single program.

`jax.test_util.check_grads(f, args, order=2, modes=["fwd", "rev"])` differentiates `f` six
ways (a JVP and a VJP, then a JVP and a VJP of each of those) and compares each against
central finite differences. It runs eagerly: each derivative function is a separate program
to compile (about thirteen per call, most of such a test's time), run at three points.

This computes the same quantities, with the same rules, directions and finite-difference
step, as one jitted function of `args` (one compile), then compares them on the host with
`check_grads`'s own criterion: `np.testing.assert_allclose` with `atol` and `rtol` each
multiplied by the number of elements compared. What it checks, for each function `g` of the
recursion (`f`, then `jvp(f)` and `args -> vjp(f)(args)(f(args))` at second order):

* JVP: `jvp(g)(args, t)` against `(g(args + eps t) - g(args - eps t)) / 2 eps`, and its
  primal output against `g(args)`;
* VJP: `<t, vjp(g)(args)(c)>` against `<finite-difference JVP along t, c>`, and its
  primal output against `g(args)`,

with `t` and `c` drawn as `check_grads` draws them (`np.random.RandomState(0)` per check).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: `jax.test_util.check_grads`'s finite-difference step.
EPS = 1e-4


def _rand_like(rng: np.random.RandomState, x: Any) -> np.ndarray:
    return np.asarray(rng.randn(*np.shape(x)), dtype=x.dtype)


def _value_and_numerical_jvp(g: Callable, args: tuple, tangents: tuple, eps: float) -> Any:
    """`g(args)` and `(g(args + eps t) - g(args - eps t)) / 2 eps`, `t` the `tangents`."""

    def step(sign: float) -> list[Any]:
        return jax.tree.map(lambda x, t: x + jnp.asarray(sign * eps, x.dtype) * t, args, tangents)

    def difference(pos: jax.Array, neg: jax.Array) -> jax.Array:
        # As check_grads: equal values (inf and inf too) differ by 0.
        return jnp.where(pos == neg, 0, pos - neg) * jnp.asarray(0.5 / eps, pos.dtype)

    return g(*args), jax.tree.map(difference, g(*step(1.0)), g(*step(-1.0)))


def _inner_product(xs: Any, ys: Any) -> jax.Array:
    products = jax.tree.map(lambda x, y: jnp.vdot(x.reshape(-1), y.reshape(-1)), xs, ys)
    return sum(jax.tree.leaves(products))


def _comparisons(
    f: Callable, args: tuple, order: int, modes: Sequence[str], eps: float
) -> list[tuple[str, Any, Any]]:
    """`(what, computed, expected)` for every check of `check_grads`, as traced values."""
    found: list[tuple[str, Any, Any]] = []

    def jvp_check(g: Callable, args: tuple, name: str) -> None:
        rng = np.random.RandomState(0)
        tangent = jax.tree.map(partial(_rand_like, rng), args)
        out, tangent_out = jax.jvp(g, args, tangent)
        value, numerical = _value_and_numerical_jvp(g, args, tangent, eps)
        found.append((f"{name} primal", out, value))
        found.append((f"{name} tangent", tangent_out, numerical))

    def vjp_check(g: Callable, args: tuple, name: str) -> None:
        rng = np.random.RandomState(0)
        out, pullback = jax.vjp(g, *args)
        tangent = jax.tree.map(partial(_rand_like, rng), args)
        value, tangent_out = _value_and_numerical_jvp(g, args, tangent, eps)
        found.append((f"{name} primal", out, value))
        cotangent = jax.tree.map(partial(_rand_like, rng), out)
        projection = _inner_product(tangent, pullback(cotangent))
        expected = _inner_product(tangent_out, cotangent)
        found.append((f"{name} cotangent projection", projection, expected))

    def recurse(g: Callable, args: tuple, order: int, name: str) -> None:
        if "fwd" in modes:
            fwd_name = f"JVP of {name}" if name else "JVP"
            jvp_check(g, args, fwd_name)
            if order > 1:
                recurse(partial(jax.jvp, g), (args, args), order - 1, fwd_name)
        if "rev" in modes:
            rev_name = f"VJP of {name}" if name else "VJP"
            vjp_check(g, args, rev_name)
            if order > 1:

                def g_vjp(*args: Any, g: Callable = g) -> Any:
                    out, pullback = jax.vjp(g, *args)
                    return pullback(out)

                recurse(g_vjp, args, order - 1, rev_name)

    recurse(f, args, order, "")
    return found


@functools.cache
def _program(
    f: Callable, order: int, modes: tuple[str, ...], eps: float
) -> tuple[Callable, list[str]]:
    """The jitted function of `args` giving every `(computed, expected)` pair, and their
    names (filled in when it is traced). Cached: a second check of the same `f` with
    arguments of the same shapes reuses the compiled program."""
    names: list[str] = []

    def everything(*args: Any) -> list[tuple[Any, Any]]:
        comparisons = _comparisons(f, args, order, modes, eps)
        names[:] = [name for name, _, _ in comparisons]
        return [(computed, expected) for _, computed, expected in comparisons]

    return jax.jit(everything), names


def check_grads(
    f: Callable,
    args: Sequence[Any],
    order: int,
    modes: Sequence[str] = ("fwd", "rev"),
    atol: float | None = None,
    rtol: float | None = None,
    eps: float = EPS,
) -> None:
    """`jax.test_util.check_grads(f, args, order, modes, atol, rtol, eps)`, in one program.

    `atol` and `rtol` are required here (floats): `check_grads`' per-dtype defaults are not
    reproduced.
    """
    if atol is None or rtol is None:
        raise TypeError("grad_check.check_grads: give atol and rtol")
    unknown = set(modes) - {"fwd", "rev"}
    if unknown:
        raise ValueError(f"grad_check.check_grads: modes are 'fwd' and 'rev', got {unknown}")
    program, names = _program(f, order, tuple(modes), eps)
    results = program(*(jnp.asarray(a) for a in args))
    assert len(results) == len(names) > 0
    for name, (computed, expected) in zip(names, results, strict=True):
        jax.tree.map(partial(_assert_close, atol=atol, rtol=rtol, err_msg=name), computed, expected)


def _assert_close(computed: Any, expected: Any, *, atol: float, rtol: float, err_msg: str) -> None:
    """`check_grads`' criterion: tolerances scaled by the number of elements compared."""
    computed, expected = np.asarray(computed), np.asarray(expected)
    assert computed.dtype == expected.dtype, (err_msg, computed.dtype, expected.dtype)
    assert computed.shape == expected.shape, (err_msg, computed.shape, expected.shape)
    np.testing.assert_allclose(
        computed, expected, atol=atol * computed.size, rtol=rtol * expected.size, err_msg=err_msg
    )
