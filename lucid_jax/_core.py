"""The one implementation of instance normalisation: statistics, normalisation, running stats.

Everything here is pure, shape-polymorphic over ``(N, C, *S)`` with any ``channel_axis``
(but 0), and safe under ``jit``/``vmap``/``grad``/``jvp``. Nothing outside this module computes
a mean or a variance. Arguments are assumed valid: checking happens once, in
:mod:`lucid_jax.functional`.

Maths, for an instance ``x[n, c, ...]`` with ``S`` spatial elements::

    mean[n, c] = (1/S) Σ_s x[n, c, s]
    var[n, c]  = (1/S) Σ_s (x[n, c, s] - mean[n, c])²        (biased, as Lucid)
    y[n, c, s] = (x[n, c, s] - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c]

and, in training with running statistics (Lucid's momentum convention)::

    running_mean ← momentum · mean_n(mean[n, :]) + (1 - momentum) · running_mean
    running_var  ← momentum · mean_n(var[n, :])  + (1 - momentum) · running_var
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def statistics_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype statistics accumulate in: at least float32, float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def reduction_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    """Every axis but the batch axis (0) and ``channel_axis`` (already non-negative)."""
    return tuple(a for a in range(1, ndim) if a != channel_axis)


def _per_channel(values: Array, ndim: int, channel_axis: int) -> Array:
    """Reshape a ``(C,)`` vector so that it broadcasts against the input along channel_axis."""
    shape = [1] * ndim
    shape[channel_axis] = values.shape[0]
    return values.reshape(shape)


#: How many leading elements of each instance's first row make up its *head*, a cheap sample
#: that decides how the variance is taken (see :func:`instance_moments`).
HEAD_SIZE = 32

#: Largest ``mean² / var`` (around the shift used) for which a one-pass variance
#: ``E[d²] - E[d]²`` is kept. Its relative rounding error grows like ``(1 + ratio) · ulp``
#: (measured in float32 on 128×128 instances: max output error 5e-7 at ratio 0, 1e-6 at 1,
#: 2.4e-6 at 4, 9e-6 at 16, any mean); above it the batch takes one more, centred, pass.
FAST_VARIANCE_MAX_RATIO = 4.0


def _explicitly_sharded_axes(x: Array) -> frozenset[int]:
    """Axes of ``x`` that its type shards over mesh axes (JAX's explicit sharding mode)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None) or ()
    return frozenset(i for i, entry in enumerate(spec) if entry is not None)


def _head_moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Mean and biased variance of each instance's head: a few of its first elements.

    Index 0 along every reduced axis but the last, the first ``HEAD_SIZE`` along the last: a
    contiguous read of ``N·C·HEAD_SIZE`` elements at most, for either layout. A reduced axis
    that the array's type shards (explicit sharding) is not sliced — that would need a
    reshard — but averaged whole, still over a small slice of the others; under automatic
    (GSPMD) sharding the slice is of one shard. Never a gather of the activation.
    """
    sharded = _explicitly_sharded_axes(x)
    sliceable = [a for a in axes if a not in sharded]
    index = [slice(None)] * x.ndim
    for axis in sliceable:
        index[axis] = slice(0, 1)
    if sliceable:
        last = sliceable[-1]
        index[last] = slice(0, min(HEAD_SIZE, x.shape[last]))
    head = lax.stop_gradient(x[tuple(index)].astype(statistics_dtype(x.dtype)))
    mean = jnp.mean(head, axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(head - mean), axis=axes, keepdims=True)


def _private(x: Array, dtype: jnp.dtype) -> Array:
    """``x`` in ``dtype``, as a value of its own for XLA: no common subexpression with others.

    XLA's CPU reduction fusions never duplicate a producer they share with another consumer:
    a conversion (or any elementwise op) of ``x`` feeding two reductions is materialised as an
    activation-sized temporary — for bfloat16 input, a float32 copy. An optimization barrier
    makes this read of ``x`` distinct, so each reduction fuses its own conversion; the barrier
    itself costs nothing (no copy) and is transparent to every JAX transformation.
    """
    return lax.optimization_barrier(x).astype(dtype)


def _shifted_moments(x: Array, shift: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """``(E[x - shift], E[(x - shift)²] - E[x - shift]²)`` in one pass over ``x``.

    The two sums read ``x`` through distinct producers (see :func:`_private`) and are spelt
    differently (``x - shift`` and ``x + (-shift)``, equal in IEEE arithmetic), so neither
    ``x``'s conversion nor the broadcast ``shift`` is shared between them.
    """
    m1 = jnp.mean(x.astype(shift.dtype) - shift, axis=axes, keepdims=True)
    m2 = jnp.mean(jnp.square(_private(x, shift.dtype) + (-shift)), axis=axes, keepdims=True)
    return m1, m2 - m1 * m1


def _raw_moments(x: Array, axes: tuple[int, ...], dtype: jnp.dtype) -> tuple[Array, Array]:
    """``(E[x], E[x²] - E[x]²)`` in one pass: the cheapest reductions XLA has."""
    m1 = jnp.mean(x.astype(dtype), axis=axes, keepdims=True)
    return m1, jnp.mean(jnp.square(_private(x, dtype)), axis=axes, keepdims=True) - m1 * m1


def instance_moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array, Array]:
    """Per-instance ``(shift, centred_mean, var)``: ``mean = shift + centred_mean``, var biased.

    Statistics are in :func:`statistics_dtype` whatever ``x``'s dtype, and cost one pass over
    ``x`` (two fused reductions) in all but rare cases:

    1. A head of each instance (:func:`_head_moments`, a few elements) tells whether the data
       sits near zero (``mean² <= FAST_VARIANCE_MAX_RATIO · var`` for every head). If so,
       ``E[x]`` and ``E[x²]`` are taken raw — the fastest reductions — and
       ``var = E[x²] - E[x]²`` is accurate. Otherwise the moments of ``d = x - p`` are taken
       around each head's mean ``p``, so ``E[d²] - E[d]²`` cancels little even far from zero
       (float32 of mean 1e4 and std 1, where ``E[x²] - E[x]²`` loses every digit). ``x - p``
       is exact when ``x`` is within a factor 2 of ``p`` (Sterbenz), and the mean is kept as
       the unrounded pair ``p + E[d]``, so ``(x - p) - E[d]`` centres accurately.
    2. If the whole instance disagrees with its head (``E[d]² > FAST_VARIANCE_MAX_RATIO ·
       var`` somewhere), the batch takes one more pass around its rounded mean.

    Each choice is one ``lax.cond`` for the whole batch; under ``vmap`` (a batched predicate)
    both branches run and the right one is selected.
    """
    dtype = statistics_dtype(x.dtype)
    head_mean, head_var = _head_moments(x, axes)
    near_zero = jnp.all(head_mean * head_mean <= FAST_VARIANCE_MAX_RATIO * head_var)

    def raw(x: Array, shift: Array):
        return (jnp.zeros_like(shift), *_raw_moments(x, axes, dtype))

    def around_head(x: Array, shift: Array):
        return (shift, *_shifted_moments(x, shift, axes))

    shift, m1, var = lax.cond(near_zero, raw, around_head, x, head_mean)

    def recentre(x: Array, shift: Array, m1: Array, var: Array):
        shift = lax.stop_gradient(shift + m1)  # the statistics do not depend on the shift
        return (shift, *_shifted_moments(x, shift, axes))

    def keep(x: Array, shift: Array, m1: Array, var: Array):
        return shift, m1, var

    poor_shift = jnp.any(m1 * m1 > FAST_VARIANCE_MAX_RATIO * var)
    shift, m1, var = lax.cond(poor_shift, recentre, keep, x, shift, m1, var)
    return shift, m1, jnp.maximum(var, 0)


def _train_forward(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, axes: tuple[int, ...]
) -> tuple[Array, Array, Array, Array, Array]:
    """Normalise with instance statistics; returns ``(y, shift, centred_mean, var, inv_std)``.

    ``y`` is in ``x``'s dtype, everything else in the statistics dtype (the mean is
    ``shift + centred_mean``); ``weight``/``bias`` already broadcast against ``x``; the
    statistics keep ``axes``.
    """
    shift, centred_mean, var = instance_moments(x, axes)
    inv_std = lax.rsqrt(var + eps)
    scale = inv_std if weight is None else inv_std * weight
    y = ((x.astype(var.dtype) - shift) - centred_mean) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), shift, centred_mean, var, inv_std


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def train_normalize(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, axes: tuple[int, ...]
) -> tuple[Array, Array, Array]:
    r"""Normalise ``x`` with each instance's own statistics; returns ``(y, mean, var)``.

    ``y = (x - mean) · rsqrt(var + eps) · weight + bias`` in ``x``'s (floating) dtype; ``mean``
    and the biased ``var`` are in :func:`statistics_dtype` and keep the reduced ``axes`` as
    size-1 dims; ``weight``/``bias``/``eps`` are in that dtype and broadcast against ``x``
    (``weight``/``bias`` may be None).

    The derivative is a forward-mode rule (so ``jvp``, ``grad``, and every higher order in both
    modes work: JAX transposes it for reverse mode). With ``r = (σ² + ε)^{-1/2}``, the mean
    ``μ = s + m`` held as a shift ``s`` plus a small centred mean ``m`` (see
    :func:`instance_moments`), and ``d = x - s``:

    .. math::

        \dot y = w r\,\dot x + \big(\dot b - w r\,\overline{\dot x} - m\,\dot\rho\big)
                 + d\,\dot\rho, \qquad \dot\rho = w \dot r + r \dot w,
        \qquad \dot r = -\tfrac12 r^3\,\big(2\,(\overline{d\,\dot x}
                 - m\,\overline{\dot x}) + \dot\varepsilon\big)

    (overlines are means over the instance; ``d - m = x - μ``). Its transpose needs just two
    per-instance reductions of the cotangent ``g`` — ``Σ g`` and ``Σ g·d`` — and one
    elementwise pass: the bracketed per-instance terms are summed *before* they broadcast, so
    ``Σ g`` serves ``ḃ``, the mean's and the shift's terms, and ``Σ g·d`` both ``ẇ`` and the
    variance's. ``d`` is recomputed from ``x`` inside each fusion (one subtraction, which XLA
    fuses into the reduction), so no activation-sized intermediate outlives its fusion (XLA's
    compiled temporary memory of a forward+backward stays near zero) and low-precision input
    is converted on the fly, never materialised in float32.
    """
    y, shift, centred_mean, var, _ = _train_forward(x, weight, bias, eps, axes)
    return y, shift + centred_mean, var


@train_normalize.defjvp
def _train_normalize_jvp(axes, primals, tangents):
    x, weight, bias, eps = primals
    dx, dweight, dbias, deps = tangents
    y, shift, centred_mean, var, inv_std = _train_forward(x, weight, bias, eps, axes)

    def per_instance(t: Array) -> Array:
        return jnp.broadcast_to(t, jnp.broadcast_shapes(t.shape, var.shape))

    dx = dx.astype(var.dtype)
    shifted = x.astype(var.dtype) - shift
    # The same values through a private read of x and spelt differently, for the term whose
    # transpose reduces ``g·d``: XLA's CPU reduction fusions do not share producers.
    shifted_for_reduction = _private(x, var.dtype) + (-shift)
    scale = inv_std if weight is None else inv_std * weight
    dmean = jnp.mean(dx, axis=axes, keepdims=True)
    dvar = 2 * (jnp.mean(shifted * dx, axis=axes, keepdims=True) - centred_mean * dmean)
    dinv_std = -0.5 * inv_std**3 * (dvar + deps)
    dscale = dinv_std if weight is None else dinv_std * weight + inv_std * per_instance(dweight)
    offset = -scale * dmean - centred_mean * dscale  # per instance (see the docstring)
    if bias is not None:
        # The barrier keeps XLA from folding the transpose's Σ_n Σ_s g into a separate full
        # reduction of g: ``ḃ``'s cotangent then reuses the per-instance Σ_s g.
        offset = offset + lax.optimization_barrier(per_instance(dbias))
    dy = scale * dx + offset + shifted_for_reduction * dscale
    return (y, shift + centred_mean, var), (dy.astype(y.dtype), dmean, dvar)


def normalize(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    running_mean: Array | None,
    running_var: Array | None,
    *,
    use_instance_stats: bool,
    momentum: Array | float,
    eps: Array | float,
    channel_axis: int,
    axis_name: str | Sequence[str] | None,
) -> tuple[Array, Array | None, Array | None]:
    """Instance norm with Lucid's semantics; returns ``(y, new_running_mean, new_running_var)``.

    ``use_instance_stats`` is Lucid's ``training`` (or no running stats to fall back on): the
    output is normalised with each instance's own statistics, and running stats, when given,
    are updated. Otherwise the running stats normalise and are returned unchanged.
    Arguments must already be checked (see :func:`lucid_jax.functional.instance_norm`).
    """
    ndim = x.ndim
    axes = reduction_axes(ndim, channel_axis)
    compute_dtype = statistics_dtype(x.dtype)
    eps = jnp.asarray(eps, compute_dtype)

    def channel(v: Array | None) -> Array | None:
        return None if v is None else _per_channel(v.astype(compute_dtype), ndim, channel_axis)

    w, b = channel(weight), channel(bias)
    if not use_instance_stats:
        scale = lax.rsqrt(channel(running_var) + eps)
        if w is not None:
            scale = scale * w
        y = (x.astype(compute_dtype) - channel(running_mean)) * scale
        if b is not None:
            y = y + b
        return y.astype(x.dtype), running_mean, running_var

    y, mean, var = train_normalize(x, w, b, eps, axes)
    if running_mean is None or x.shape[0] == 0:
        # No running stats to update, or an empty batch: averaging it would write NaN.
        return y, running_mean, running_var
    return (
        y,
        _running_update(running_mean, _batch_average(mean, channel_axis, axis_name), momentum),
        _running_update(running_var, _batch_average(var, channel_axis, axis_name), momentum),
    )


def _batch_average(stat: Array, channel_axis: int, axis_name: str | Sequence[str] | None) -> Array:
    """Average a keepdims per-instance statistic over the batch (and mapped axes): shape (C,)."""
    per_sample = jnp.moveaxis(stat, channel_axis, 1).reshape(stat.shape[0], -1)
    average = jnp.mean(per_sample, axis=0)
    if axis_name is not None:
        average = lax.pmean(average, axis_name)
    return average


def _running_update(old: Array, batch: Array, momentum: Array | float) -> Array:
    """Lucid's convention: ``momentum · batch + (1 - momentum) · old``, in old's dtype."""
    dtype = jnp.promote_types(old.dtype, batch.dtype)
    m = jnp.asarray(momentum, dtype)
    new = m * batch.astype(dtype) + (1 - m) * old.astype(dtype)
    return new.astype(old.dtype)
