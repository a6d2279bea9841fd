"""What the linen and nnx InstanceNorm layers share: argument checks, layout and the core call.

Both faces are thin: they declare their variables in their framework's way and call
`normalize`, which converts Flax's conventions (momentum, dtypes, feature axes) to the pure
[`instance_norm`][lucid_jax.instance_norm]. No statistic is computed here. Each rule has one
home: the settings' checks (`check_settings`, `check_momentum`), the call's (`check_call`),
the variance formula (`variance_method`), the dtypes (`promote_dtype`, from the functional
layer's `result_dtype`), the Lucid preset (`LUCID_PRESET`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype

from lucid_jax.functional import instance_norm, result_dtype

Array = jax.Array
TupleArg = TypeVar("TupleArg", bound=tuple)

#: Lucid's whole behaviour, as the layers' `lucid(...)` factories build it: Lucid's `eps`,
#: running statistics, and Lucid's momentum 0.1 in Flax's convention (`1 - 0.1`).
LUCID_PRESET: dict[str, Any] = {
    "epsilon": 1e-5,
    "track_running_stats": True,
    "momentum": 0.9,
}

#: Flax's words for a feature axis on the batch axis (its own tests match them).
_BATCH_AXIS_MESSAGE = (
    "The channel axes cannot include the leading dimension as this is assumed to be the batch axis."
)


def choose_feature_axes(layer: str, feature_axes: Any, channel_axis: Any) -> tuple[str, Any]:
    """`(argument name, value)` of the feature axes: Flax's `feature_axes` or Lucid's alias.

    `channel_axis` (`None` unless given) names one feature axis; it may not be given with a
    `feature_axes` other than the default -1.
    """
    if channel_axis is None:
        return "feature_axes", feature_axes
    if not (isinstance(feature_axes, numbers.Integral) and feature_axes == -1):
        raise ValueError(
            f"{layer}: give the feature axes as feature_axes (Flax's name) or channel_axis "
            f"(Lucid's, one axis), not both; got feature_axes={feature_axes!r} and "
            f"channel_axis={channel_axis!r}."
        )
    return "channel_axis", channel_axis


def canonical_feature_axes(layer: str, name: str, value: Any, ndim: int) -> tuple[int, ...]:
    """The feature axes as sorted, deduplicated non-negative ints (as Flax canonicalises them).

    `value` is one axis or a sequence of them (Flax's `Axes`); `name` is the argument it came
    from, for the errors. The batch axis 0 cannot be a feature axis.
    """
    given = tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else (value,)
    axes: list[int] = []
    for axis in given:
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise TypeError(
                f"{layer}: {name} must be an int or a sequence of ints (axes of the input); "
                f"got {value!r}."
            )
        axes.append(int(axis))
    if not all(-ndim <= axis < ndim for axis in axes):
        raise ValueError(
            f"{layer}: {name} must be axes of the {ndim}-dim input (1..{ndim - 1} or "
            f"-{ndim - 1}..-1); got {value!r}."
        )
    canonical = tuple(sorted({axis % ndim for axis in axes}))
    if 0 in canonical:
        raise ValueError(
            f"{layer}: {name} must not include axis 0; got {value!r}. {_BATCH_AXIS_MESSAGE}"
        )
    return canonical


def check_input(layer: str, x: Any, name: str, value: Any) -> tuple[Array, tuple[int, ...]]:
    """`x` as an array and its canonical feature axes, with a layer-named error for bad input.

    Axis 0 is the batch; every axis that is neither it nor a feature axis is normalised over.
    There may be none, as for the `(N, features)` output of a Dense layer: then, as in Flax,
    each instance is one element, its mean the element and its variance 0, and the output is
    the bias (and the gradient with respect to `x` is 0).
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError(
            f"{layer}: the input must have a batch axis 0 and feature axes; got a scalar."
        )
    axes = canonical_feature_axes(layer, name, value, x.ndim)
    empty = [a for a in range(1, x.ndim) if a not in axes and x.shape[a] == 0]
    if empty:
        raise ValueError(
            f"{layer}: the input has shape {tuple(x.shape)}, with axis {empty[0]} (one to "
            "normalise over) of size 0: the statistics of an empty instance are undefined."
        )
    return x, axes


def check_mask(layer: str, mask: Any) -> None:
    """Flax's `mask` is accepted as `None` only: statistics are over every element."""
    if mask is not None:
        shape = getattr(mask, "shape", None)
        raise ValueError(
            f"{layer}: mask is not supported (statistics are taken over every element of each "
            f"instance); got a mask{'' if shape is None else f' of shape {tuple(shape)}'}. "
            "Pass mask=None, or use flax's InstanceNorm for masked statistics."
        )


def check_call(
    layer: str, x: Any, feature_axes: Any, channel_axis: Any, mask: Any
) -> tuple[Array, tuple[int, ...], str, Any]:
    """The checks of a layer's call, in order: feature axes, input, mask.

    Returns `(x, canonical feature axes, argument name, value)`: `x` as an array, and the
    argument the feature axes came from (`feature_axes` or `channel_axis`) for messages.
    """
    name, value = choose_feature_axes(layer, feature_axes, channel_axis)
    x, axes = check_input(layer, x, name, value)
    check_mask(layer, mask)
    return x, axes, name, value


def feature_shape(x: Array, feature_axes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the per-feature variables: the sizes of the feature axes, in order."""
    return tuple(int(x.shape[axis]) for axis in feature_axes)


def promote_dtype(
    args: TupleArg, /, *, dtype: Dtype | None = None, inexact: bool = True
) -> TupleArg:
    """Flax nnx's default `promote_dtype`: cast the arrays of `args` (a tuple) to one dtype.

    The dtype is `dtype` when given, else the standard promotion of the arrays' (Nones are
    skipped and returned as they are), widened to float32 when that is not inexact. The
    promotion is explicit, so it also runs under `jax.numpy_dtype_promotion("strict")` (as
    the core's output dtype does), where Flax's refuses, e.g., bfloat16 input with float32
    params.
    """
    if dtype is None:
        dtype = result_dtype(*(jnp.asarray(arg).dtype for arg in args if arg is not None))
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = result_dtype(jnp.float32, dtype)
    if inexact and not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"promote_dtype: the dtype must be inexact (a float); got {dtype}.")
    return cast(TupleArg, tuple(None if arg is None else jnp.asarray(arg, dtype) for arg in args))


def first_given(*values: Any, error: str) -> Any:
    """The first of `values` that is not None; a ValueError saying `error` when all are."""
    for value in values:
        if value is not None:
            return value
    raise ValueError(error)


def check_momentum(caller: str, momentum: Any, *, convention: str = "flax") -> Any:
    """`momentum` when it is a weight in [0, 1], else a TypeError/ValueError naming `caller`.

    The one check of a momentum in the Flax faces: the layers' (`convention="flax"`, the
    weight of the old running value) and `flax_momentum_from_lucid`'s (`"lucid"`, the weight
    of the new batch statistic). A JAX array (e.g. traced) is accepted as it is.
    """
    meaning = (
        "Flax convention: the weight of the old running value; Flax 0.9 is Lucid's 0.1"
        if convention == "flax"
        else "Lucid convention: the weight of the new batch statistic"
    )
    if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
        if not 0.0 <= float(momentum) <= 1.0:  # also rejects NaN
            raise ValueError(f"{caller}: momentum must be in [0, 1] ({meaning}); got {momentum!r}.")
    elif not isinstance(momentum, jax.Array):
        raise TypeError(
            f"{caller}: momentum must be a real number in [0, 1]; got "
            f"{type(momentum).__name__} {momentum!r}."
        )
    return momentum


def check_settings(layer: str, *, momentum: Any, epsilon: Any) -> None:
    """The checks of a layer's numeric settings, at construction, named as the layer names them.

    `momentum` is Flax's (see `check_momentum`); `epsilon` a real number >= 0 (or a JAX
    array, accepted as it is).
    """
    check_momentum(layer, momentum)
    if isinstance(epsilon, numbers.Real) and not isinstance(epsilon, bool):
        if not float(epsilon) >= 0.0:  # also rejects NaN
            raise ValueError(
                f"{layer}: epsilon must be >= 0 (it is added to the variance); got {epsilon!r}."
            )
    elif not isinstance(epsilon, jax.Array):
        raise TypeError(
            f"{layer}: epsilon must be a real number >= 0; got "
            f"{type(epsilon).__name__} {epsilon!r}."
        )


def variance_method(use_fast_variance: bool) -> Literal["one_pass", "two_pass"]:
    """Flax's `use_fast_variance` as the core's `variance_method`.

    True is Flax's formula, `E[x²] - E[x]²` in one pass (`"one_pass"`); False the two-pass
    variance around the instance's own mean (`"two_pass"`), accurate at any mean.
    """
    return "one_pass" if use_fast_variance else "two_pass"


def _core_layout(
    x: Array, feature_axes: tuple[int, ...]
) -> tuple[Array, int, Callable[[Array], Array]]:
    """`(x', channel_axis, restore)`: `x` in a layout with one channel axis for the core.

    One feature axis with at least one axis to normalise over is passed through as the
    channel axis. Otherwise `x` is laid out as `(N, reduced elements, features)` (with one
    reduced element when nothing is left to normalise over), which the core normalises with
    `channel_axis=2`, and `restore` puts the output back.
    """
    if len(feature_axes) == 1 and x.ndim > 2:
        return x, feature_axes[0], lambda y: y
    reduced = [axis for axis in range(1, x.ndim) if axis not in feature_axes]
    order = (0, *reduced, *feature_axes)
    moved = jnp.transpose(x, order)
    flat = moved.reshape(
        x.shape[0],
        math.prod(x.shape[axis] for axis in reduced),
        math.prod(x.shape[axis] for axis in feature_axes),
    )
    inverse = tuple(int(axis) for axis in np.argsort(order))
    return flat, 2, lambda y: jnp.transpose(y.reshape(moved.shape), inverse)


def _flat(v: Array | None) -> Array | None:
    return None if v is None else jnp.reshape(v, -1)


def normalize(
    x: Array,
    scale: Array | None,
    bias: Array | None,
    running_mean: Array | None,
    running_var: Array | None,
    *,
    training: bool,
    momentum: Any,
    epsilon: float,
    feature_axes: tuple[int, ...],
    axis_name: Any,
    axis_index_groups: Any,
    batch_axis_name: Any,
    dtype: Dtype | None,
    use_fast_variance: bool,
) -> tuple[Array, Array | None, Array | None]:
    """Call [`instance_norm`][lucid_jax.instance_norm] with Flax's conventions.

    `momentum` is Flax's. `feature_axes` come from `check_call`; `scale`, `bias` and the
    running statistics have the shape of the feature axes (or are flat), and the new running
    statistics come back in the shape of the old. `axis_name` is Flax's: the axis every
    instance is split over (its statistics are averaged over it, with `axis_index_groups`);
    `batch_axis_name` the axis the batch is split over (the running statistics' batch
    averages are). The settings were checked at construction (`check_settings`). The output
    dtype is Flax's: `dtype` when given, else inferred from the input and the parameters
    (standard promotion, also under strict promotion, where it is explicit); the input is
    promoted to it first when that widens it, so e.g. bfloat16 input with float32 params is
    normalised in float32. `use_fast_variance` picks the one-pass variance
    (`variance_method`). New running statistics carry no gradient (they are buffers).
    """
    # Flax's canonicalize_dtype: the promotion of the arguments, float32 if that is an int.
    inferred = result_dtype(x.dtype, *(None if p is None else p.dtype for p in (scale, bias)))
    if not jnp.issubdtype(inferred, jnp.inexact):
        inferred = jnp.dtype(jnp.float32)
    out_dtype = inferred if dtype is None else jnp.dtype(dtype)
    x = x.astype(result_dtype(inferred, out_dtype))
    core_x, channel_axis, restore = _core_layout(x, feature_axes)
    y, new_mean, new_var = instance_norm(
        core_x,
        _flat(running_mean),
        _flat(running_var),
        _flat(scale),
        _flat(bias),
        training=training,
        momentum=1 - momentum,  # Flax's weight of the old value -> Lucid's of the new
        eps=epsilon,
        channel_axis=channel_axis,
        axis_name=batch_axis_name,
        variance_method=variance_method(use_fast_variance),
        instance_axis_name=axis_name,
        # As Flax: the groups only mean something with the axis they group.
        axis_index_groups=None if axis_name is None else axis_index_groups,
    )
    if new_mean is not None and new_var is not None and running_mean is not None:
        assert running_var is not None  # both or neither, as instance_norm requires
        new_mean, new_var = jax.lax.stop_gradient((new_mean, new_var))
        new_mean = new_mean.reshape(running_mean.shape)
        new_var = new_var.reshape(running_var.shape)
    return restore(y).astype(out_dtype), new_mean, new_var
