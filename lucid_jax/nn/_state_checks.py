"""The checks a value passes before it may replace a module's Parameter or Buffer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from lucid_jax.nn._buffer import Buffer, unwrap


def _kind(dtype: Any) -> str | None:
    """The dtype's family as state holds it: floating or integer; None for anything else."""
    if jnp.issubdtype(dtype, jnp.floating):
        return "floating"
    if jnp.issubdtype(dtype, jnp.integer):
        return "integer"
    return None


def checked_state_value(where: str, key: str, value: Any, holder: Buffer) -> jax.Array:
    """`value` as an array fit to replace `holder` under `key`, or a TypeError/ValueError.

    The value must be an array (or array-like) of the holder's shape and dtype family
    (floating or integer); complex, bool, string, object and None values are refused. Tracers
    pass as they are. The dtype is not changed here.

    Args:
      where: the caller, for the message (`"InstanceNorm2d.load_state_dict"`).
      key: the state key, named in the message.
      value: what was given.
      holder: the Parameter or Buffer the value is meant for.

    Returns:
      The value as a JAX array (or the tracer it already was).

    Raises:
      TypeError: the value is None, not array-like, or of another dtype family.
      ValueError: the value has another shape.
    """
    return jnp.asarray(_checked_array(where, key, value, holder))


def loadable_state_value(where: str, key: str, value: Any, holder: Buffer) -> jax.Array:
    """`value` converted to `holder`'s dtype for `load_state_dict`, if nothing is lost or leaked.

    On top of `checked_state_value`'s checks: a tracer is refused (a module that kept one would
    fail on every later call), and so is a conversion that would change a value beyond
    rounding: an integer outside the range of the holder's integer dtype (it would wrap), a
    finite float beyond the holder's float dtype (it would become inf). Infinities and NaN are
    kept as given. The check runs on the host copy, before JAX converts anything (without x64,
    JAX itself wraps int64 into int32 silently).

    Raises:
      TypeError: as `checked_state_value`, or the value is a tracer.
      ValueError: as `checked_state_value`, or the conversion would lose a value.
    """
    array = _checked_array(where, key, value, holder)
    if isinstance(array, Tracer):
        raise TypeError(
            f"{where}: {key!r} is a traced value (load_state_dict was called under jax.jit, "
            "vmap, grad or another transformation); a module cannot keep it: the tracer would "
            "leak and every later call would fail. Load concrete arrays outside the "
            "transformation, or run the module with lucid_jax.nn.functional_call(module, "
            "state, ...), which takes traced state and returns the new one. Nothing was loaded."
        )
    target = np.dtype(holder.dtype)
    if not np.can_cast(array.dtype, target, casting="safe"):
        _check_lossless(where, key, np.asarray(array), target)
    return jnp.asarray(array, dtype=target)


def _check_lossless(where: str, key: str, host: np.ndarray, target: np.dtype) -> None:
    if host.size == 0:
        return
    if jnp.issubdtype(target, jnp.integer):
        info = np.iinfo(target)
        # Compared as Python ints: numpy would compare uint64 with int64 through float64.
        low, high = int(host.min()), int(host.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            index = np.unravel_index(np.flatnonzero(host == bad)[0], host.shape)
            raise ValueError(
                f"{where}: {key!r} holds {bad} at index {tuple(map(int, index))}, outside the "
                f"range of its entry's dtype {target} [{info.min}, {info.max}]: it would wrap to "
                f"{host[index].astype(target)}. Nothing was loaded."
            )
        return
    with np.errstate(over="ignore", invalid="ignore"):
        converted = host.astype(target)
    overflows = np.isfinite(host) & ~np.isfinite(converted)
    if overflows.any():
        index = np.unravel_index(np.flatnonzero(overflows)[0], host.shape)
        limit = float(np.finfo(target).max)
        value = float(host[index])
        raise ValueError(
            f"{where}: {key!r} holds {value!r} at index {tuple(map(int, index))}, a finite "
            f"value that overflows {target} (largest {limit:.7g}): it would become inf. "
            "Nothing was loaded."
        )


def _checked_array(where: str, key: str, value: Any, holder: Buffer) -> Any:
    """The family and shape checks; the value as a NumPy or JAX array, not yet converted."""
    expected = f"an array of shape {holder.shape} and a {_kind(holder.dtype)} dtype"
    value = unwrap(value)
    if value is None:
        raise TypeError(f"{where}: {key!r} is None; expected {expected}.")
    if not isinstance(value, jax.Array):
        try:
            value = np.asarray(value)
        except Exception as error:
            raise TypeError(
                f"{where}: {key!r} could not be read as an array ({error}); expected {expected}."
            ) from None
    if _kind(value.dtype) is None or _kind(value.dtype) != _kind(holder.dtype):
        raise TypeError(f"{where}: {key!r} has dtype {value.dtype}; expected {expected}.")
    if tuple(value.shape) != holder.shape:
        raise ValueError(f"{where}: {key!r} has shape {tuple(value.shape)}; expected {expected}.")
    return value


def split_state_keys(
    where: str, argument: str, state: Any, own: Mapping[str, Buffer]
) -> tuple[list[str], list[str]]:
    """The keys of `own` that `state` lacks and the keys of `state` that `own` lacks.

    Raises:
      TypeError: `state` (the caller's `argument`) is not a mapping.
    """
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{where}: {argument} must be a mapping of state_dict key to array; "
            f"got {type(state).__name__}."
        )
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    return missing, unexpected
