"""The checks a value passes before it may replace a module's Parameter or Buffer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
    return jnp.asarray(value)


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
