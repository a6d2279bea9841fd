"""What the linen and nnx InstanceNorm layers share: argument checks and the call to the core.

Both faces are thin: they declare their variables in their framework's way and call
:func:`normalize`, which converts Flax's conventions (momentum, dtypes, layout) to the pure
:func:`lucid_jax.instance_norm`. No statistic is computed here.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax.typing import Dtype

from lucid_jax import _core
from lucid_jax.functional import check_channel_axis, instance_norm

Array = jax.Array


def num_channels(layer: str, x: Array, channel_axis: Any) -> int:
    """The size of ``channel_axis`` of ``x``, with a layer-named error for a bad axis."""
    if x.ndim < 3:
        raise ValueError(
            f"{layer}: input must have at least 3 dims (batch, spatial..., channels); got shape "
            f"{tuple(x.shape)}. For a single unbatched sample, add a batch axis: x[None]."
        )
    return int(x.shape[check_channel_axis(channel_axis, x.ndim, caller=layer)])


def lucid_momentum(layer: str, momentum: Any) -> Any:
    """Flax's momentum (weight of the old value) as Lucid's (weight of the new batch stat)."""
    if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
        if not 0.0 <= float(momentum) <= 1.0:  # also rejects NaN
            raise ValueError(
                f"{layer}: momentum must be in [0, 1] (Flax convention: the weight of the old "
                f"running value; Flax 0.9 is Lucid's 0.1); got {momentum!r}."
            )
    elif not isinstance(momentum, jax.Array):
        raise TypeError(
            f"{layer}: momentum must be a real number in [0, 1]; got "
            f"{type(momentum).__name__} {momentum!r}."
        )
    return 1 - momentum


def normalize(
    layer: str,
    x: Array,
    scale: Array | None,
    bias: Array | None,
    running_mean: Array | None,
    running_var: Array | None,
    *,
    training: bool,
    momentum: Any,
    epsilon: float,
    channel_axis: int,
    axis_name: str | None,
    dtype: Dtype | None,
    use_fast_variance: bool,
) -> tuple[Array, Array | None, Array | None]:
    """Call :func:`lucid_jax.instance_norm` with Flax's conventions.

    ``momentum`` is Flax's. The output dtype is Flax's: ``dtype`` when given, else inferred
    from the input and the parameters (standard promotion, also under strict promotion, where
    it is explicit); the input is promoted to it first when that widens it, so e.g. bfloat16
    input with float32 params is normalised in float32. ``use_fast_variance`` picks the
    one-pass variance (see :func:`lucid_jax.instance_norm`'s ``variance_method``). New running
    statistics carry no gradient (they are buffers).
    """
    # Flax's canonicalize_dtype: the promotion of the arguments, float32 if that is an int.
    inferred = _core.result_dtype(x.dtype, *(None if p is None else p.dtype for p in (scale, bias)))
    if not jnp.issubdtype(inferred, jnp.inexact):
        inferred = jnp.dtype(jnp.float32)
    out_dtype = inferred if dtype is None else jnp.dtype(dtype)
    x = x.astype(_core.result_dtype(inferred, out_dtype))
    y, new_mean, new_var = instance_norm(
        x,
        running_mean,
        running_var,
        scale,
        bias,
        training=training,
        momentum=lucid_momentum(layer, momentum),
        eps=epsilon,
        channel_axis=channel_axis,
        axis_name=axis_name,
        variance_method="one_pass" if use_fast_variance else "two_pass",
    )
    if new_mean is not None:
        new_mean, new_var = jax.lax.stop_gradient((new_mean, new_var))
    return y.astype(out_dtype), new_mean, new_var
