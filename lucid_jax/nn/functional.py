"""Lucid's stateful `nn.functional.instance_norm`, emulated over the pure function."""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
from jax.core import Tracer
from jax.typing import ArrayLike

from lucid_jax import functional as _pure
from lucid_jax.nn._buffer import Buffer, holding_locks, unwrap
from lucid_jax.nn._overrides import slot_of

__all__ = ["instance_norm"]


def instance_norm(
    input_: ArrayLike,
    running_mean: ArrayLike | Buffer | None = None,
    running_var: ArrayLike | Buffer | None = None,
    weight: ArrayLike | Buffer | None = None,
    bias: ArrayLike | Buffer | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> jax.Array:
    """Lucid's `F.instance_norm`: returns one array and updates Buffers in place.

    Same maths as [`instance_norm`][lucid_jax.instance_norm]. When `training` and both
    running stats are [`Buffer`][lucid_jax.nn.Buffer]s, the new statistics are written into
    them: both or neither (a call that raises leaves them untouched), and under the Buffers'
    locks, so concurrent calls on shared Buffers lose no update. As in Lucid, the new
    statistics take the promoted dtype of the input and the Buffer (float32 input updates a
    float16 Buffer to float32; float16 input keeps it float16). Evaluating with running
    statistics, the output takes the promoted dtype of the input and the statistics, as in
    Lucid (float32 input with float64 statistics gives float64, under x64). Buffer arguments
    are read as one snapshot under their locks: a `load_state_dict` in another thread is
    seen whole or not at all.

    !!! warning
        Plain arrays passed as running stats are **not** updated, exactly as Lucid leaves
        plain Tensors unchanged, so the update is silently lost. Wrap them in `Buffer`, or use
        the pure [`instance_norm`][lucid_jax.instance_norm], which returns the new statistics.

    Under a JAX transformation (`jit`, `vmap`, `grad`, ...) a Buffer cannot be updated in
    place: training there raises `TypeError`, unless the Buffers belong to a module run by
    [`functional_call`][lucid_jax.nn.functional_call], which returns the new state.

    Args:
      input_: `(N, C, *spatial)` input.
      running_mean: `(C,)` running mean; a Buffer is updated in training.
      running_var: `(C,)` running variance; a Buffer is updated in training.
      weight: `(C,)` scale, or None.
      bias: `(C,)` shift, or None.
      training: normalise by the instance statistics (and update the running ones) or, when
        False, by the running statistics.
      momentum: weight of the batch statistics in the running-stat update.
      eps: added to the variance.

    Returns:
      The normalised input.

    Raises:
      TypeError: Buffers would be written with traced values outside `functional_call`, or
        an argument is of the wrong type (see [`instance_norm`][lucid_jax.instance_norm]).
      ValueError: an argument has the wrong shape or value.

    Examples:
      >>> from lucid_jax import Tensor
      >>> from lucid_jax.nn import Buffer
      >>> import lucid_jax.nn.functional as F
      >>> mean, var = Buffer(Tensor([0.0, 0.0])), Buffer(Tensor([1.0, 1.0]))
      >>> y = F.instance_norm(Tensor([[[1.0, 2.0], [3.0, 4.0]]]), mean, var)
      >>> mean
      Buffer([0.15, 0.35], dtype=float32)
    """
    arguments = (running_mean, running_var, weight, bias)
    # Every Buffer argument is read under its lock, so a load_state_dict swapping them in
    # another thread (under the same locks) is seen whole or not at all.
    holders = [argument for argument in arguments if isinstance(argument, Buffer)]
    if not (training and isinstance(running_mean, Buffer) and isinstance(running_var, Buffer)):
        with holding_locks(holders):
            mean, var, scale, shift = (unwrap(argument) for argument in arguments)
        if not training:
            input_ = _promoted_for_eval(input_, mean, var)
        return _pure.instance_norm(input_, mean, var, scale, shift, training, momentum, eps)[0]
    with holding_locks(holders):
        stat_dtype = _statistics_dtype(input_)
        result = _pure.instance_norm(
            input_,
            _promoted(running_mean.data, stat_dtype),
            _promoted(running_var.data, stat_dtype),
            unwrap(weight),
            unwrap(bias),
            training,
            momentum,
            eps,
        )
        # Both running statistics were given, so the pure function returns both.
        new_mean = cast(jax.Array, result.running_mean)
        new_var = cast(jax.Array, result.running_var)
        traced = isinstance(new_mean, Tracer) or isinstance(new_var, Tracer)
        if traced and (slot_of(running_mean) is None or slot_of(running_var) is None):
            raise TypeError(
                "lucid_jax.nn.functional.instance_norm: called under a JAX transformation "
                "(jit, vmap, grad, ...) with Buffers as running_mean/running_var in training; "
                "a Buffer cannot be updated in place there (it would leak a tracer). Run the "
                "module through lucid_jax.nn.functional_call(module, state, x), which returns "
                "the new state, or use the pure lucid_jax.instance_norm(...), which returns the "
                "new running stats, or call this outside the transformation. The Buffers were "
                "left unchanged."
            )
        running_mean.data = new_mean
        running_var.data = new_var
    return result.output


def _promoted_for_eval(input_: Any, running_mean: Any, running_var: Any) -> Any:
    """The input in the dtype Lucid normalises it in when it uses the running statistics.

    Lucid computes `(x - running_mean) / sqrt(running_var + eps)` in numpy, which promotes: a
    float32 input with float64 running statistics gives a float64 output (under x64; without
    it every float is float32 and nothing changes). Only floating inputs and statistics.
    """
    if running_mean is None or running_var is None:
        return input_  # instance statistics: the input's dtype, as in training
    dtypes = [
        getattr(value, "dtype", None) for value in (unwrap(input_), running_mean, running_var)
    ]
    if not all(dtype is not None and jnp.issubdtype(dtype, jnp.floating) for dtype in dtypes):
        return input_
    # As JAX will hold them (a float64 NumPy input is float32 without x64).
    dtypes = [jax.dtypes.canonicalize_dtype(dtype) for dtype in dtypes]
    with jax.numpy_dtype_promotion("standard"):
        target = jnp.result_type(*dtypes)
    return input_ if target == dtypes[0] else jnp.asarray(unwrap(input_)).astype(target)


def _statistics_dtype(input_: Any) -> Any:
    """The dtype of the input's statistics in Lucid (numpy): its own, or float for integers."""
    dtype = getattr(unwrap(input_), "dtype", None)
    if dtype is None:
        try:
            dtype = jnp.asarray(input_).dtype
        except (TypeError, ValueError):
            return None  # the pure function names the problem
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.result_type(float)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else None


def _promoted(running: jax.Array, stat_dtype: Any) -> jax.Array:
    # Lucid computes momentum * batch_stat + (1 - momentum) * running in numpy, which promotes.
    numeric = jnp.issubdtype(running.dtype, jnp.floating) or jnp.issubdtype(
        running.dtype, jnp.integer
    )
    if stat_dtype is None or not numeric:
        return running
    with jax.numpy_dtype_promotion("standard"):
        return running.astype(jnp.promote_types(stat_dtype, running.dtype))
