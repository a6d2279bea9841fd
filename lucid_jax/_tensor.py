"""`Tensor`: Lucid's array constructor, returning a plain JAX array."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

_DEVICES = ("cpu", "gpu")


def Tensor(
    data: Any,
    requires_grad: bool = False,
    keep_grad: bool = False,
    dtype: DTypeLike | None = None,
    device: str = "cpu",
) -> jax.Array:
    """Build a JAX array the way `lucid.Tensor` builds a tensor, with Lucid's signature.

    Dtypes are Lucid's (numpy's): Python floats (and lists of them) are float64, Python ints
    int64, arrays keep their dtype, `dtype` overrides. JAX holds 64-bit values only with x64
    enabled (`jax.config.update("jax_enable_x64", True)`): without it float64 becomes float32
    and int64 int32, as for any JAX array. Buffers are unwrapped.

    `requires_grad` and `keep_grad` are accepted for Lucid code and do nothing: JAX computes
    gradients of functions (`jax.grad`), not of arrays. `device` (`"cpu"` or `"gpu"`, Lucid's
    choices) is accepted too; JAX places the array on its default device.

    Examples:
        >>> from lucid_jax import Tensor
        >>> Tensor([[1.0, 2.0], [3.0, 4.0]]).dtype  # float64 in Lucid; float32 without x64
        dtype('float32')
        >>> import jax
        >>> with jax.enable_x64(True):
        ...     print(Tensor([1.0, 2.0]).dtype, Tensor([1, 2]).dtype)
        float64 int64
    """
    if not isinstance(requires_grad, bool) or not isinstance(keep_grad, bool):
        raise TypeError(
            f"Tensor: requires_grad and keep_grad must be bools; got {requires_grad!r} and "
            f"{keep_grad!r}."
        )
    if device not in _DEVICES:
        raise ValueError(f"Tensor: device must be one of {_DEVICES}, as in Lucid; got {device!r}.")
    if hasattr(data, "__jax_array__"):
        data = data.__jax_array__()
    if not isinstance(data, (jax.Array, np.ndarray, np.generic)):
        data = np.asarray(data)  # numpy's dtypes for Python data, as Lucid's
    return jnp.asarray(data, dtype=dtype)
