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


def instance_statistics(x: Array, axes: Sequence[int]) -> tuple[Array, Array, Array]:
    """Per-instance mean and biased variance, by a shifted two-pass method.

    Each instance is first shifted by its own first element ``k`` (a sample of the data, so
    ``x - k`` is exact for data far from zero: Sterbenz), then mean and variance are taken in
    two passes over the shifted values. This stays accurate where ``E[x²] - E[x]²`` loses every
    digit (float32 data of mean 1e4 and std 1).

    Args:
      x: input, already in the statistics dtype.
      axes: the axes to reduce (every axis but batch and channel).

    Returns:
      ``(shift, centred_mean, var)``, each with ``axes`` kept as size-1 dims:
      ``mean = shift + centred_mean``; ``x - mean == (x - shift) - centred_mean``.
    """
    # The statistics do not depend on the shift, so no gradient needs to flow through it.
    index = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    shift = lax.stop_gradient(x[index])
    shifted = x - shift
    centred_mean = jnp.mean(shifted, axis=tuple(axes), keepdims=True)
    var = jnp.mean(jnp.square(shifted - centred_mean), axis=tuple(axes), keepdims=True)
    return shift, centred_mean, var


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

    def channel(v: Array | None) -> Array | None:
        return None if v is None else _per_channel(v.astype(compute_dtype), ndim, channel_axis)

    w, b = channel(weight), channel(bias)

    if use_instance_stats:
        shift, centred_mean, var = instance_statistics(xs, axes)
        inv_std = lax.rsqrt(var + jnp.asarray(eps, compute_dtype))
        centred = (xs - shift) - centred_mean
    else:
        mean, var = channel(running_mean), channel(running_var)
        inv_std = lax.rsqrt(var + jnp.asarray(eps, compute_dtype))
        centred = xs - mean

    scale = inv_std if w is None else inv_std * w
    y = centred * scale
    if b is not None:
        y = y + b
    y = y.astype(out_dtype)

    if not use_instance_stats or running_mean is None:
        return y, running_mean, running_var
    batch = x.shape[0]
    if batch == 0:
        # An empty batch carries no statistics; averaging it would write NaN.
        return y, running_mean, running_var
    mean_c = _batch_average(shift + centred_mean, channel_axis, axis_name)
    var_c = _batch_average(var, channel_axis, axis_name)
    return (
        y,
        _running_update(running_mean, mean_c, momentum),
        _running_update(running_var, var_c, momentum),
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
