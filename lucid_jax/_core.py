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


#: Largest ``mean² / var`` for which an instance's variance is taken as ``E[x²] - E[x]²``.
#: That formula's relative rounding error grows like ``(1 + mean²/var) · ulp``; at 1 (the mean
#: within one standard deviation of zero, as for most activations) the output stays about as
#: accurate as with the two-pass method (max error ~7e-7 in float32; PyTorch's CPU kernel ~5e-7).
FAST_VARIANCE_MAX_RATIO = 1.0


def instance_moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array, Array]:
    """Per-instance ``(shift, centred_mean, var)``: ``mean = shift + centred_mean``, var biased.

    One pass takes ``E[x]`` and ``E[x²]`` with no activation-sized temporary. Where every
    instance is well conditioned (``E[x]² <= FAST_VARIANCE_MAX_RATIO · var``),
    ``var = E[x²] - E[x]²`` is accurate and nothing more is read (``shift`` is 0). Otherwise —
    data far from zero, say float32 of mean 1e4 and std 1, where that formula loses every digit
    — each instance is shifted by its rounded mean ``m`` (``x - m`` is then exact: Sterbenz) and
    the variance is taken by two more passes over the shifted values (their mean, then the mean
    square of the centred values). The choice is one ``lax.cond`` for the whole batch; under
    ``vmap`` (a batched predicate) both branches run and the right one is selected.
    """
    mean = jnp.mean(x, axis=axes, keepdims=True)
    fast_var = jnp.mean(x * x, axis=axes, keepdims=True) - mean * mean
    ill_conditioned = jnp.any(mean * mean > FAST_VARIANCE_MAX_RATIO * fast_var)

    def shifted_two_pass(x: Array, mean: Array, fast_var: Array):
        shift = lax.stop_gradient(mean)  # the statistics do not depend on the shift
        shifted = x - shift
        centred_mean = jnp.mean(shifted, axis=axes, keepdims=True)
        centred = shifted - centred_mean
        return shift, centred_mean, jnp.mean(centred * centred, axis=axes, keepdims=True)

    def one_pass(x: Array, mean: Array, fast_var: Array):
        return jnp.zeros_like(mean), mean, jnp.maximum(fast_var, 0)

    return lax.cond(ill_conditioned, shifted_two_pass, one_pass, x, mean, fast_var)


def _train_forward(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, axes: tuple[int, ...]
) -> tuple[Array, Array, Array, Array, Array]:
    """Normalise with instance statistics; returns ``(y, mean, var, centred, inv_std)``.

    ``weight``/``bias`` already broadcast against ``x``; the statistics keep ``axes``.
    """
    shift, centred_mean, var = instance_moments(x, axes)
    centred = (x - shift) - centred_mean
    inv_std = lax.rsqrt(var + eps)
    scale = inv_std if weight is None else inv_std * weight
    y = centred * scale
    if bias is not None:
        y = y + bias
    return y, shift + centred_mean, var, centred, inv_std


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def train_normalize(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, axes: tuple[int, ...]
) -> tuple[Array, Array, Array]:
    r"""Normalise ``x`` with each instance's own statistics; returns ``(y, mean, var)``.

    ``y = (x - mean) · rsqrt(var + eps) · weight + bias``; ``mean`` and the biased ``var`` keep
    the reduced ``axes`` as size-1 dims; ``weight``/``bias`` broadcast against ``x`` (or None).

    The derivative is a forward-mode rule (so ``jvp``, ``grad``, and every higher order in both
    modes work: JAX transposes it for reverse mode). With ``c = x - μ``, ``r = (σ² + ε)^{-1/2}``:

    .. math::

        \dot y = w r\,(\dot x - \overline{\dot x}) + c\,(w \dot r + r \dot w) + \dot b,
        \qquad \dot r = -\tfrac12 r^3\,(2\,\overline{c\,\dot x} + \dot\varepsilon)

    (overlines are means over the instance). It is written so that its transpose needs just two
    per-instance reductions of the cotangent ``g`` — ``Σ g`` and ``Σ g·c`` — and one elementwise
    pass: per-instance factors multiply *after* each reduction, and the per-channel ``ẇ``, ``ḃ``
    are first broadcast per instance, so their transposes reuse those two sums. No
    activation-sized intermediate then outlives its fusion (XLA's compiled temporary memory of a
    forward+backward stays near zero).
    """
    return _train_forward(x, weight, bias, eps, axes)[:3]


@train_normalize.defjvp
def _train_normalize_jvp(axes, primals, tangents):
    x, weight, bias, eps = primals
    dx, dweight, dbias, deps = tangents
    y, mean, var, centred, inv_std = _train_forward(x, weight, bias, eps, axes)

    def per_instance(t: Array) -> Array:
        return jnp.broadcast_to(t, jnp.broadcast_shapes(t.shape, mean.shape))

    scale = inv_std if weight is None else inv_std * weight
    dmean = jnp.mean(dx, axis=axes, keepdims=True)
    dvar = 2 * jnp.mean(centred * dx, axis=axes, keepdims=True)
    dinv_std = -0.5 * inv_std**3 * (dvar + deps)
    dscale = dinv_std if weight is None else dinv_std * weight + inv_std * per_instance(dweight)
    dy = scale * dx - scale * dmean + centred * dscale
    if bias is not None:
        dy = dy + per_instance(dbias)
    return (y, mean, var), (dy, dmean, dvar)


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
    out_dtype = x.dtype
    ndim = x.ndim
    axes = reduction_axes(ndim, channel_axis)
    xs = x.astype(statistics_dtype(x.dtype))
    compute_dtype = xs.dtype
    eps = jnp.asarray(eps, compute_dtype)

    def channel(v: Array | None) -> Array | None:
        return None if v is None else _per_channel(v.astype(compute_dtype), ndim, channel_axis)

    w, b = channel(weight), channel(bias)
    if not use_instance_stats:
        scale = lax.rsqrt(channel(running_var) + eps)
        if w is not None:
            scale = scale * w
        y = (xs - channel(running_mean)) * scale
        if b is not None:
            y = y + b
        return y.astype(out_dtype), running_mean, running_var

    y, mean, var = train_normalize(xs, w, b, eps, axes)
    y = y.astype(out_dtype)
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
