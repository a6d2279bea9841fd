"""The public pure API: `instance_norm` and its result type.

Argument checking lives here, once; the maths lives in `lucid_jax._core`.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.typing import ArrayLike

from lucid_jax import _core

# The dtype rules of `instance_norm`, re-exported (`as`: for type checkers) for the layers over
# it: `result_dtype(*dtypes)` is the output dtype (standard promotion of the floating input,
# weight and bias, also under strict promotion); `statistics_dtype(dtype)` the dtype the
# statistics (and running statistics) are kept in: float32, or float64 for 64-bit input.
from lucid_jax._core import result_dtype as result_dtype
from lucid_jax._core import statistics_dtype as statistics_dtype

Array = jax.Array

__all__ = ["InstanceNormOutput", "instance_norm"]


class InstanceNormOutput(NamedTuple):
    """What [`instance_norm`][lucid_jax.instance_norm] returns.

    Attributes:
      output: the normalised input, same shape and (floating) dtype as the input.
      running_mean: the new running mean, shape `(C,)`; `None` when none was given.
      running_var: the new running variance, shape `(C,)`; `None` when none was given.
    """

    output: Array
    running_mean: Array | None
    running_var: Array | None


_normalize = jax.jit(
    _core.normalize,
    static_argnames=(
        "use_instance_stats",
        "channel_axis",
        "axis_name",
        "variance_method",
        "instance_axis",
    ),
)


def instance_norm(
    input_: ArrayLike,
    running_mean: ArrayLike | None = None,
    running_var: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    axis_name: str | Sequence[str] | None = None,
    variance_method: _core.VarianceMethod = "two_pass",
    instance_axis_name: str | Sequence[str] | None = None,
    axis_index_groups: Sequence[Sequence[int]] | None = None,
) -> InstanceNormOutput:
    r"""Instance normalisation with Lucid 2.14.5's semantics, as a pure function.

    For input `x` of shape `(N, C, *S)` (channels on `channel_axis`), each instance
    `x[n, c]` is normalised by its own statistics over every other axis:

    $$
    \mu_{nc} = \frac{1}{|S|}\sum_s x_{ncs}, \qquad
    \sigma^2_{nc} = \frac{1}{|S|}\sum_s (x_{ncs} - \mu_{nc})^2 \quad\text{(biased)},
    $$

    $$
    y_{ncs} = \frac{x_{ncs} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}}\,w_c + b_c .
    $$

    In training with running statistics, they are updated with Lucid's convention
    `new = momentum * mean_n(stat) + (1 - momentum) * old` (the biased variance feeds the
    running variance, unlike PyTorch) and returned; nothing is modified in place. With
    `training=False` the running statistics normalise instead, or, when there are none,
    the instance statistics do.

    The output's dtype is the standard promotion of the input's, `weight`'s and `bias`'s
    (as Lucid's numpy and Flax: bfloat16 input with float32 weight gives float32), also under
    `jax.numpy_dtype_promotion("strict")`; integer input is promoted to the default float
    dtype. Statistics and arithmetic are in float32 at least (float64 stays float64). The
    returned running statistics keep the dtype they were given in.

    The program is the same for every value (no branch on data) and every backend, and all
    choices are static, so the function can be called under `jit`, `vmap`, `grad`,
    `jvp`, `shard_map`, `pmap` and with sharded inputs.

    Args:
      input_: array of shape `(N, C, *S)` with at least one spatial axis.
      running_mean: `(C,)` running mean, or `None`. Give both running stats or neither.
      running_var: `(C,)` running (biased) variance, or `None`.
      weight: `(C,)` scale, or `None` for 1.
      bias: `(C,)` shift, or `None` for 0.
      training: a Python bool: normalise with instance statistics and update running stats.
      momentum: in `[0, 1]`, Lucid's convention (weight of the new batch statistic).
      eps: `>= 0`, added to the variance.
      channel_axis: the channel axis, any but 0 (1 is Lucid's layout, -1 Flax's).
      axis_name: a mapped axis name (`shard_map`/`pmap`): the batch statistics feeding
        the running stats are averaged over it too, so every shard gets the global update.
      variance_method: how each instance's variance is taken (static). `"two_pass"` (the
        default): the mean first, then the moments around it; accurate at any mean and for
        any layout of values, at the cost of one more read of the input. `"one_pass"`:
        `E[x²] - E[x]²` from one read; as accurate only for data whose mean is no more than
        about its standard deviation (typical activations), wrong in float32 far from zero.
      instance_axis_name: a mapped axis name over which every instance is split (each
        device holds an equal share of each instance's elements, e.g. sharded spatial axes):
        the per-instance statistics are averaged over it (`lax.pmean`), as Flax's
        `InstanceNorm(axis_name=...)` does.
      axis_index_groups: `lax.pmean`'s groups of indices of `instance_axis_name` (only with
        it): each group of devices shares its own instances.

    Returns:
      [`InstanceNormOutput`][lucid_jax.InstanceNormOutput] `(output, running_mean, running_var)`.

    Raises:
      TypeError: non-numeric input or arguments of the wrong kind.
      ValueError: wrong shapes, only one running statistic, momentum outside `[0, 1]`,
        negative `eps`, a zero-size spatial axis.

    Examples:
      Values are shown rounded to five decimals: the last bit of a float32 result may differ
      between CPUs (and backends), the fifth decimal does not.

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from lucid_jax import instance_norm
      >>> x = jnp.array([[[1.0, 2.0], [2.0, 6.0]]])          # (N=1, C=2, L=2)
      >>> out = instance_norm(x, jnp.zeros(2), jnp.ones(2))
      >>> np.asarray(out.output).round(5)                    # (x - mean) / sqrt(var + eps)
      array([[[-0.99998,  0.99998],
              [-1.     ,  1.     ]]], dtype=float32)
      >>> np.asarray(out.running_mean).round(5), np.asarray(out.running_var).round(5)
      (array([0.15, 0.4 ], dtype=float32), array([0.925, 1.3  ], dtype=float32))
      >>> jax.jit(instance_norm, static_argnames="training")(x, training=False).output.shape
      (1, 2, 2)
    """
    x = _as_input(input_)
    channel_axis = check_channel_axis(channel_axis, x.ndim)
    _check_spatial(x, channel_axis)
    channels = x.shape[channel_axis]
    weight = _as_vector(weight, "weight", channels)
    bias = _as_vector(bias, "bias", channels)
    running_mean = _as_vector(running_mean, "running_mean", channels)
    running_var = _as_vector(running_var, "running_var", channels)
    if (running_mean is None) != (running_var is None):
        given = "running_mean" if running_var is None else "running_var"
        raise ValueError(
            f"instance_norm: got {given} but not the other; pass both running_mean and "
            "running_var (each of shape (C,)) or neither."
        )
    training = _check_training(training)
    _check_scalar(momentum, "momentum", low=0.0, high=1.0)
    _check_scalar(eps, "eps", low=0.0, high=None)
    _check_variance_method(variance_method)
    instance_axis = _instance_axis(instance_axis_name, axis_index_groups)

    use_instance_stats = training or running_mean is None
    y, new_mean, new_var = _normalize(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        use_instance_stats=use_instance_stats,
        momentum=momentum,
        eps=eps,
        channel_axis=channel_axis,
        axis_name=_hashable(axis_name),
        variance_method=variance_method,
        instance_axis=instance_axis,
    )
    if not training:
        # Running stats are returned exactly as they came in (not a recomputed copy).
        new_mean, new_var = running_mean, running_var
    return InstanceNormOutput(y, new_mean, new_var)


# --- argument checking -------------------------------------------------------------------


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _to_array(value: Any, name: str) -> Array:
    if isinstance(value, jax.Array):
        array = value
    else:
        if hasattr(value, "__jax_array__"):
            value = value.__jax_array__()
        try:
            array = jnp.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"instance_norm: {name} must be a numeric array; got {_describe(value)}."
            ) from error
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(
            f"instance_norm: {name} must have a real numeric dtype (float or int); got "
            f"{_describe(array)}."
        )
    return array


def _as_input(input_: Any) -> Array:
    x = _to_array(input_, "input_")
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.result_type(float))
    if x.ndim < 3:
        raise ValueError(
            f"instance_norm: input_ must have at least 3 dims (N, C, *spatial); got shape "
            f"{tuple(x.shape)}. For a single unbatched sample, add a batch axis: x[None]."
        )
    return x


def check_channel_axis(channel_axis: Any, ndim: int, caller: str = "instance_norm") -> int:
    """`channel_axis` as a non-negative axis of an `ndim`-dim input, or a clear error.

    Shared with the Flax layers (`caller` names the one whose argument is wrong).
    """
    if not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool):
        raise TypeError(
            f"{caller}: channel_axis must be a Python int; got {_describe(channel_axis)}."
        )
    axis = operator.index(channel_axis)
    if not -ndim <= axis < ndim or axis % ndim == 0:
        raise ValueError(
            f"{caller}: channel_axis must be an axis of the {ndim}-dim input other than "
            f"the batch axis 0 (1..{ndim - 1} or -{ndim - 1}..-1); got {channel_axis}."
        )
    return axis % ndim


def check_num_features(num_features: Any, caller: str) -> int:
    """`num_features` (a layer's channel count) as an int, or a ValueError naming `caller`.

    Shared by the Lucid modules and the nnx layer.
    """
    if (
        not isinstance(num_features, numbers.Integral)
        or isinstance(num_features, bool)
        or num_features <= 0
    ):
        raise ValueError(f"{caller}: num_features must be a positive int; got {num_features!r}.")
    return int(num_features)


def _check_spatial(x: Array, channel_axis: int) -> None:
    axes = _core.reduction_axes(x.ndim, channel_axis)
    empty = [a for a in axes if x.shape[a] == 0]
    if empty:
        raise ValueError(
            f"instance_norm: input_ has shape {tuple(x.shape)} with zero-size spatial axis "
            f"{empty[0]}; every spatial axis needs at least one element (statistics of an "
            "empty instance are undefined)."
        )


def _as_vector(value: Any, name: str, channels: int) -> Array | None:
    if value is None:
        return None
    array = _to_array(value, name)
    if array.shape != (channels,):
        raise ValueError(
            f"instance_norm: {name} must have shape (C,) = ({channels},) to match the input's "
            f"{channels} channels; got shape {tuple(array.shape)}."
        )
    if jnp.issubdtype(array.dtype, jnp.integer):
        array = array.astype(jnp.result_type(float))
    return array


def _check_training(training: Any) -> bool:
    if isinstance(training, bool | np.bool_):
        return bool(training)
    raise TypeError(
        f"instance_norm: training must be a Python bool (it selects the computation, so it "
        f"must be static under jit: use static_argnames='training'); got {_describe(training)}."
    )


def _check_variance_method(variance_method: Any) -> None:
    options = " or ".join(map(repr, _core.VARIANCE_METHODS))
    if not isinstance(variance_method, str):
        raise TypeError(
            f"instance_norm: variance_method must be a string, {options}; got "
            f"{_describe(variance_method)}."
        )
    if variance_method not in _core.VARIANCE_METHODS:
        raise ValueError(
            f"instance_norm: variance_method must be {options} (two_pass: accurate at any "
            f"mean; one_pass: fastest, for data near zero); got {variance_method!r}."
        )


def _concrete_float(value: Any, name: str) -> float | None:
    """The value as a float, or None when it is traced (checked only when it can be)."""
    if isinstance(value, Tracer):
        return None
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(
            f"instance_norm: {name} must be a real number; got {_describe(value)}."
        ) from error
    if array.shape != () or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"instance_norm: {name} must be a real scalar; got {_describe(value)}.")
    return float(array)


def _check_scalar(value: Any, name: str, *, low: float, high: float | None) -> None:
    number = _concrete_float(value, name)
    if number is None:
        return
    in_range = number >= low and (high is None or number <= high)
    if not in_range:  # also catches NaN
        expected = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"instance_norm: {name} must be {expected}; got {number!r}.")


def _instance_axis(name: Any, index_groups: Any) -> _core.MappedAxis | None:
    if index_groups is not None:
        try:
            index_groups = tuple(tuple(operator.index(i) for i in group) for group in index_groups)
        except TypeError as error:
            raise TypeError(
                "instance_norm: axis_index_groups must be a sequence of sequences of device "
                f"indices, e.g. [[0, 1], [2, 3]]; got {_describe(index_groups)}."
            ) from error
    if name is None:
        if index_groups is not None:
            raise ValueError(
                f"instance_norm: axis_index_groups={index_groups} needs instance_axis_name, "
                "the mapped axis whose indices they group; got instance_axis_name=None."
            )
        return None
    return _core.MappedAxis(_hashable(name), index_groups)


def _hashable(axis_name: Any) -> Any:
    if isinstance(axis_name, list):
        return tuple(axis_name)
    return axis_name
