"""`instance_sum(v, axes)`: `Σ v` over `axes` (kept), accurate whatever order XLA:CPU adds in.

Why it exists: a float32 sum's error depends on the order of its additions, and XLA chooses
it. XLA:CPU before jaxlib 0.10.2 adds each row of an instance in a few running sums (a
vector accumulator walked along the row), so many similar terms added to one large term are
each rounded against the large term's ulp, always the same way: with one outlier of 1e6 among
1,023 standard normal values, the sum of squares of the outlier's 32-term row is already
9.1e-7 of the instance's total off on jaxlib 0.7.2 (0.10.2: 9.1e-8), and the output of
`instance_norm` 1.8e-6 (a CT-like volume: 4.3e-6; the bound is 1e-6) on jaxlib 0.7.2 and
0.10.1 alike. Splitting the sum into levels of whole axes does not help (each row is still
added in sequence: 1.8e-6); short levels need reshapes that XLA:CPU 0.10.2 runs 1.2-9x
slower. XLA:CPU 0.10.2 and newer sum in blocks (worst 2.5e-7 on every layout of
`tests/accuracy_layouts.py`), and there float64 accumulation would cost 1.14-1.98x the
forward (measured with `benchmarks.compare`), so there the float32 reduction stays.

So on a CPU whose XLA sums rows in sequence the sum is accumulated in float64 (each addition
rounds at 2^-53, 2^29 times finer than float32's: whatever the order, the sum of a billion
terms is still within float32's own rounding), and everywhere else it is the plain float32
reduction. Like `lucid_jax._cpu_barrier`, this is a primitive whose *lowering* is
chosen per platform, so a program exported for GPU or TPU holds the float32 reduction and no
trace of this; with jaxlib 0.10.2 or newer it is not used at all (`instance_sum` is
`jnp.sum`), so today's programs are unchanged. It is linear (its own JVP; its transpose
broadcasts), batched by moving the batch axis first, and sharding-transparent: the float64
reduction is an ordinary reduction to the partitioner.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import jaxlib.version
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["SEQUENTIAL_CPU_SUMS", "float64_on_cpu_sum", "instance_sum"]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


#: Whether this jaxlib's XLA:CPU adds a row's terms in sequence (jaxlib < 0.10.2, measured).
SEQUENTIAL_CPU_SUMS = _version(jaxlib.version.__version__) < (0, 10, 2)


def instance_sum(v: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """`jnp.sum(v, axes, keepdims=True)`, accumulated in float64 on an XLA:CPU that adds rows in
    sequence (see the module docstring); `v` is float32 (or float64, summed as is)."""
    if not SEQUENTIAL_CPU_SUMS:
        return jnp.sum(v, axis=axes, keepdims=True)
    return float64_on_cpu_sum(v, axes)


def float64_on_cpu_sum(v: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """`jnp.sum(v, axes, keepdims=True)` accumulated in float64 on CPU, in `v`'s dtype elsewhere
    (whatever the jaxlib); float64 `v` is summed as is."""
    if v.dtype != jnp.float32 or not axes:
        return jnp.sum(v, axis=axes, keepdims=True)
    return _instance_sum_p.bind(v, axes=tuple(sorted(axes)))


_instance_sum_p = Primitive("lucid_jax_instance_sum")


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _abstract_eval(v, *, axes):
    shape = _kept_shape(v.shape, axes)
    sharding = getattr(v, "sharding", None)
    spec = getattr(sharding, "spec", None)
    if (
        sharding is None
        or spec is None
        or not any(spec[a] is not None for a in axes if a < len(spec))
    ):
        return v.update(shape=shape)
    # With explicit sharding, a reduced axis is no longer split: its sum is whole on every
    # device that holds the instance (as `jnp.sum`'s keepdims result).
    kept = type(spec)(*(None if i in axes else entry for i, entry in enumerate(spec)))
    # NamedSharding.update(spec=...) since jax 0.7; with_spec before (and gone by 0.10).
    if hasattr(sharding, "update"):
        return v.update(shape=shape, sharding=sharding.update(spec=kept))
    return v.update(shape=shape, sharding=sharding.with_spec(kept))


def _bind(v, axes):
    return _instance_sum_p.bind(v, axes=axes)


# Eagerly too, the sum runs as compiled for the device (its lowering decides); one jitted
# function, so an eager call of a shape already seen is not traced again.
_impl = jax.jit(_bind, static_argnames="axes")


def _float32_sum(v, *, axes):
    return jnp.sum(v, axis=axes, keepdims=True)


def _float64_sum(v, *, axes):
    with _enable_x64():
        return jnp.sum(v.astype(jnp.float64), axis=axes, keepdims=True).astype(v.dtype)


def _enable_x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    # jax 0.7 and older have the same context manager only as jax.experimental.enable_x64.
    return importlib.import_module("jax.experimental").enable_x64()


def _transpose(cotangent, v, *, axes):
    if type(cotangent) is ad.Zero:
        return [ad.Zero(v.aval)]
    # Back to the operand's shape and, with explicit sharding, its sharding (as reduce_sum's
    # transpose does): a size-1 axis broadcast to a split one.
    aval = v.aval
    sharding = getattr(aval, "sharding", None)
    spec = getattr(sharding, "spec", None)
    out_sharding = sharding if spec is not None and any(e is not None for e in spec) else None
    return [
        lax.broadcast_in_dim(
            cotangent, aval.shape, tuple(range(aval.ndim)), out_sharding=out_sharding
        )
    ]


def _batch(args, dims, *, axes):
    (v,), (dim,) = args, dims
    v = jnp.moveaxis(v, dim, 0)
    return float64_on_cpu_sum(v, tuple(a + 1 for a in axes)), 0


_instance_sum_p.def_impl(_impl)
_instance_sum_p.def_abstract_eval(_abstract_eval)
ad.deflinear2(_instance_sum_p, _transpose)
batching.primitive_batchers[_instance_sum_p] = _batch
mlir.register_lowering(_instance_sum_p, mlir.lower_fun(_float32_sum, multiple_results=False))
mlir.register_lowering(
    _instance_sum_p, mlir.lower_fun(_float64_sum, multiple_results=False), platform="cpu"
)
