"""The one implementation of instance normalisation: statistics, normalisation, running stats.

Everything here is pure, shape-polymorphic over `(N, C, *S)` with any `channel_axis`
(but 0), and safe under `jit`/`vmap`/`grad`/`jvp`. Nothing outside this module computes
a mean or a variance. Arguments are assumed valid: checking happens once, in
`lucid_jax.functional`.

Maths, for an instance `x[n, c, ...]` with `S` spatial elements:

```text
mean[n, c] = (1/S) Σ_s x[n, c, s]
var[n, c]  = (1/S) Σ_s (x[n, c, s] - mean[n, c])²        (biased, as Lucid)
y[n, c, s] = (x[n, c, s] - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c]
```

and, in training with running statistics (Lucid's momentum convention):

```text
running_mean ← momentum · mean_n(mean[n, :]) + (1 - momentum) · running_mean
running_var  ← momentum · mean_n(var[n, :])  + (1 - momentum) · running_var
```

The program is the same on every backend and for every value: no branch depends on the data
(no `lax.cond`/`while_loop`), so nothing stalls the host on GPU, `vmap` runs one
program, and sharding adds no collective beyond the statistics themselves. The only
backend-specific pieces are XLA:CPU fusion hints (`lucid_jax._cpu_barrier.cpu_only_barrier`)
and, on an XLA:CPU that adds rows in sequence (jaxlib < 0.10.2), float64 accumulation of the
instance sums (`lucid_jax._cpu_sums.instance_sum`), both chosen when the program is lowered
for a platform.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lucid_jax._cpu_barrier import cpu_only_barrier
from lucid_jax._cpu_sums import instance_sum

Array = jax.Array

#: How the per-instance variance is taken (a static choice, see `instance_moments`).
VarianceMethod = Literal["two_pass", "one_pass"]
VARIANCE_METHODS: tuple[str, ...] = ("two_pass", "one_pass")


class MappedAxis(NamedTuple):
    """A `shard_map`/`pmap` axis over which every instance is split (static, hashable).

    Each device holds an equal share of every instance's elements (e.g. the spatial axes are
    sharded), so the per-instance statistics are `lax.pmean`ed over `name`: Flax's
    `InstanceNorm(axis_name=...)`. `index_groups` are `lax.pmean`'s `axis_index_groups`.
    """

    name: str | tuple[str, ...]
    index_groups: tuple[tuple[int, ...], ...] | None = None


class InstanceReduction(NamedTuple):
    """How each instance's statistics are taken (static, hashable): one choice, passed whole.

    `axes` are the reduced axes of `x` (every axis but the batch and the channels);
    `variance_method` is the formula (see `instance_moments`); `instance_axis`, when not None,
    the mapped axis every instance is split over.
    """

    axes: tuple[int, ...]
    variance_method: VarianceMethod = "two_pass"
    instance_axis: MappedAxis | None = None


def _across(value: Array, instance_axis: MappedAxis | None) -> Array:
    """`value`, a per-instance mean, averaged over the devices sharing each instance."""
    if instance_axis is None:
        return value
    return lax.pmean(value, instance_axis.name, axis_index_groups=instance_axis.index_groups)


def statistics_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype statistics accumulate in: float32 for 16- and 32-bit floats, float64 stays.

    Chosen by size rather than by type promotion, so it holds under
    `jax.numpy_dtype_promotion("strict")` too.
    """
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype).itemsize >= 8 else jnp.dtype(jnp.float32)


def result_dtype(*dtypes: jnp.dtype | None) -> jnp.dtype:
    """The output dtype: JAX's standard promotion of the (floating) input, weight and bias.

    Computed with standard promotion even when the caller runs in strict mode: the output of a
    float32 input with float64 weight is float64 (as Lucid's numpy and Flax give), and strict
    mode forbids only *implicit* promotion, which this explicit choice is not.
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(*(d for d in dtypes if d is not None)))


def reduction_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    """Every axis but the batch axis (0) and `channel_axis` (already non-negative)."""
    return tuple(a for a in range(1, ndim) if a != channel_axis)


def _per_channel(values: Array, ndim: int, channel_axis: int) -> Array:
    """Reshape a `(C,)` vector so that it broadcasts against the input along channel_axis."""
    shape = [1] * ndim
    shape[channel_axis] = values.shape[0]
    return values.reshape(shape)


def _mean(x: Array, how: InstanceReduction) -> Array:
    """`Σ x / n` over `how.axes` (kept), with a true division, as numpy's (and Lucid's) mean.

    XLA rewrites a division by a constant into a multiplication by its rounded reciprocal,
    which is off by an ulp: the mean of seven 123.25s would not be 123.25, and a constant
    instance would get a variance of ~1e-18 instead of 0 (it does so for any scalar divisor,
    constant or not). Dividing by `n` per instance, an array hidden behind an optimization
    barrier (`N·C` elements: free on every backend), keeps the division. With an
    `instance_axis`, the means of the equal shares are averaged across it.
    """
    total = instance_sum(x, how.axes)
    count = lax.optimization_barrier(jnp.full_like(total, math.prod(x.shape[a] for a in how.axes)))
    return _across(total / count, how.instance_axis)


def instance_moments(
    x: Array, how: InstanceReduction, dtype: jnp.dtype
) -> tuple[Array, Array, Array]:
    """Per-instance `(shift, centred_mean, var)` in `dtype`: `mean = shift + centred_mean`.

    `var` is the biased variance. Which formula is used is the static `how.variance_method`:

    `"two_pass"` (the default; accurate at any mean, for any layout)
        A first reduction takes the mean `s` of each instance (rounded, a few ulps off);
        a second takes `E[d]` and `E[d²]` of `d = x - s` and `var = E[d²] - E[d]²`.
        As `s` is the instance's own mean, `E[d]` is tiny and the subtraction cancels
        nothing, whatever the mean and however the values are laid out (no sample decides
        anything). `d` is exact wherever `x` is within a factor 2 of `s` (Sterbenz),
        and the mean is kept as the unrounded pair `s + E[d]`, so the output's centring
        `(x - s) - E[d]` is accurate to a few ulps of the data's spread, not of its mean.
        Cost: the input is read three times (two statistic passes and the output).
    `"one_pass"` (fastest; for data known to sit near zero)
        `E[x]` and `E[x²]` in one pass, `var = E[x²] - E[x]²`. Its relative error grows
        like `(mean² / var) · ulp`: fine for activations of mean ≲ std, wrong in float32
        for, say, mean 1e4 and std 1 (every digit cancels).

    Non-finite data follows Lucid's float arithmetic: an instance holding `±inf` has mean
    `±inf` and variance NaN (`inf - inf`); a square that overflows gives variance `inf`.
    """
    # Each reduction reads x through a barrier with its own partner on CPU (see
    # lucid_jax._cpu_barrier): the partners are distinct, and used, so XLA merges none of them.
    if how.variance_method == "one_pass":
        centred_mean = _mean(x.astype(dtype), how)
        x_read, negated_mean = cpu_only_barrier(x, -centred_mean)
        square_mean = _mean(jnp.square(x_read.astype(dtype)), how)
        shift, centred_mean = jnp.zeros_like(centred_mean), -negated_mean
    else:
        shift = lax.stop_gradient(_mean(x.astype(dtype), how))
        x_read, shift_read = cpu_only_barrier(x, shift)
        centred_mean = _mean(x_read.astype(dtype) - shift_read, how)
        x_read, negated_shift = cpu_only_barrier(x, -shift)
        square_mean = _mean(jnp.square(x_read.astype(dtype) + negated_shift), how)
        # An infinite mean (an instance holding ±inf) is the mean: x - inf has nothing to add.
        centred_mean = jnp.where(jnp.isfinite(shift), centred_mean, 0)
    var = square_mean - jnp.square(centred_mean)
    # A rounding-negative variance becomes 0; NaN (`inf - inf`) stays NaN, as in Lucid.
    return shift, centred_mean, jnp.where(var < 0, 0, var)


def _train_forward(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, how: InstanceReduction
) -> tuple[Array, Array, Array, Array, Array]:
    """Normalise with instance statistics; returns `(y, shift, centred_mean, var, inv_std)`.

    Everything is in `eps`'s dtype (the computation dtype; `y` too, the caller casts);
    the mean is `shift + centred_mean`; `weight`/`bias` already broadcast against `x`;
    the statistics keep the reduced axes.
    """
    dtype = eps.dtype
    shift, centred_mean, var = instance_moments(x, how, dtype)
    x_read, inv_std = cpu_only_barrier(x, lax.rsqrt(var + eps))
    scale = inv_std if weight is None else inv_std * weight
    y = ((x_read.astype(dtype) - shift) - centred_mean) * scale
    if bias is not None:
        y = y + bias
    return y, shift, centred_mean, var, inv_std


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def train_normalize(
    x: Array, weight: Array | None, bias: Array | None, eps: Array, how: InstanceReduction
) -> tuple[Array, Array, Array]:
    r"""Normalise `x` with each instance's own statistics; returns `(y, mean, var)`.

    `y = (x - mean) · rsqrt(var + eps) · weight + bias`, `mean` and the biased `var` are
    all in `eps`'s dtype (the computation dtype: at least float32); the statistics keep the
    reduced axes (`how.axes`) as size-1 dims; `weight`/`bias` (or None) broadcast against `x`.

    The derivative is a forward-mode rule (so `jvp`, `grad`, and every higher order in both
    modes work: JAX transposes it for reverse mode). With `r = (σ² + ε)^{-1/2}`, the mean
    `μ = s + m` held as a shift `s` plus a small centred mean `m` (see
    `instance_moments`), and `d = x - s`:

    $$
    \dot y = w r\,\dot x + \big(\dot b - w r\,\overline{\dot x} - m\,\dot\rho\big)
             + d\,\dot\rho, \qquad \dot\rho = w \dot r + r \dot w,
    \qquad \dot r = -\tfrac12 r^3\,\big(2\,(\overline{d\,\dot x}
             - m\,\overline{\dot x}) + \dot\varepsilon\big)
    $$

    (overlines are means over the instance; `d - m = x - μ`). Its transpose needs just two
    per-instance reductions of the cotangent `g` — `Σ g` and `Σ g·d` — and one
    elementwise pass: the bracketed per-instance terms are summed *before* they broadcast, so
    `Σ g` serves `ḃ`, the mean's and the shift's terms, and `Σ g·d` both `ẇ` and the
    variance's. `d` is recomputed from `x` inside each fusion (one subtraction, which XLA
    fuses into the reduction), so no activation-sized intermediate outlives its fusion (XLA's
    compiled temporary memory of a forward+backward stays near zero) and low-precision input
    is converted on the fly, never materialised in float32.
    """
    y, shift, centred_mean, var, _ = _train_forward(x, weight, bias, eps, how)
    return y, shift + centred_mean, var


@train_normalize.defjvp
def _train_normalize_jvp(how, primals, tangents):
    x, weight, bias, eps = primals
    dx, dweight, dbias, deps = tangents
    y, shift, centred_mean, var, inv_std = _train_forward(x, weight, bias, eps, how)
    dtype = var.dtype

    def per_instance(t: Array) -> Array:
        return jnp.broadcast_to(t, jnp.broadcast_shapes(t.shape, var.shape))

    dx = dx.astype(dtype)
    # `d` twice, each through a read of x of its own (see lucid_jax._cpu_barrier: a no-op but on
    # CPU): once for the terms whose transpose is elementwise, once for the term whose
    # transpose reduces `g·d`.
    x_read, shift_read, inv_std = cpu_only_barrier(x, shift, inv_std)
    shifted = x_read.astype(dtype) - shift_read
    x_read, shift_read, centred_mean = cpu_only_barrier(x, shift, centred_mean)
    shifted_for_reduction = x_read.astype(dtype) - shift_read
    scale = inv_std if weight is None else inv_std * weight
    axes, instance_axis = how.axes, how.instance_axis
    count = math.prod(x.shape[a] for a in axes)
    dmean = _across(instance_sum(dx, axes) / count, instance_axis)
    shifted_dx_mean = _across(instance_sum(shifted * dx, axes) / count, instance_axis)
    dvar = 2 * (shifted_dx_mean - centred_mean * dmean)
    dinv_std = -0.5 * inv_std**3 * (dvar + deps)
    dscale = dinv_std if weight is None else dinv_std * weight + inv_std * per_instance(dweight)
    offset = -scale * dmean - centred_mean * dscale  # per instance (see the docstring)
    if bias is not None:
        # A barrier on a per-instance value (free on every backend) keeps XLA from folding
        # the transpose's Σ_n Σ_s g into a second full reduction of g: `ḃ`'s cotangent
        # reuses the per-instance Σ_s g. Measured on CPU, (8,64,64,64) forward+backward: five
        # activation-sized reductions with it, six without.
        offset = offset + lax.optimization_barrier(per_instance(dbias))
    dy = scale * dx + offset + shifted_for_reduction * dscale
    return (y, shift + centred_mean, var), (dy, dmean, dvar)


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
    variance_method: VarianceMethod = "two_pass",
    instance_axis: MappedAxis | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """Instance norm with Lucid's semantics; returns `(y, new_running_mean, new_running_var)`.

    `use_instance_stats` is Lucid's `training` (or no running stats to fall back on): the
    output is normalised with each instance's own statistics, and running stats, when given,
    are updated. Otherwise the running stats normalise and are returned unchanged.
    `y`'s dtype is `result_dtype` of `x`, `weight` and `bias`; the arithmetic is
    in `statistics_dtype` of it; the running stats keep their own dtypes. `axis_name` is
    the axis the batch is split over (the running stats' batch averages are averaged over
    it); `instance_axis` the one every instance is split over (its statistics are).
    Arguments must already be checked (see `lucid_jax.functional.instance_norm`).
    """
    ndim = x.ndim
    axes = reduction_axes(ndim, channel_axis)
    out_dtype = result_dtype(x.dtype, *(None if v is None else v.dtype for v in (weight, bias)))
    compute_dtype = statistics_dtype(out_dtype)
    eps = jnp.asarray(eps, compute_dtype)

    def channel(v: Array) -> Array:
        return _per_channel(v.astype(compute_dtype), ndim, channel_axis)

    w = None if weight is None else channel(weight)
    b = None if bias is None else channel(bias)
    if not use_instance_stats:
        if running_mean is None or running_var is None:
            raise ValueError("normalize: use_instance_stats=False needs both running statistics.")
        scale = lax.rsqrt(channel(running_var) + eps)
        if w is not None:
            scale = scale * w
        y = (x.astype(compute_dtype) - channel(running_mean)) * scale
        if b is not None:
            y = y + b
        return y.astype(out_dtype), running_mean, running_var

    how = InstanceReduction(axes, variance_method, instance_axis)
    y, mean, var = train_normalize(x, w, b, eps, how)
    y = y.astype(out_dtype)
    if running_mean is None or running_var is None or x.shape[0] == 0:
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
    """Lucid's convention: `momentum · batch + (1 - momentum) · old`, in old's dtype."""
    dtype = result_dtype(old.dtype, batch.dtype)
    m = jnp.asarray(momentum, dtype)
    new = m * batch.astype(dtype) + (1 - m) * old.astype(dtype)
    return new.astype(old.dtype)
