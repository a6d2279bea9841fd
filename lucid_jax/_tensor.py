"""`Tensor`: Lucid's array constructor, returning a plain JAX array."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def Tensor(data: Any, dtype: Any = None) -> jax.Array:
    """Build a JAX array the way `lucid.Tensor` builds a tensor.

    Python floats (and lists of them) become float32, as in Lucid, even when JAX's x64 mode is
    on; arrays keep their dtype; `dtype` overrides both. Buffers are unwrapped.

    Example:
      >>> from lucid_jax import Tensor
      >>> Tensor([[1.0, 2.0], [3.0, 4.0]]).dtype
      dtype('float32')
      >>> Tensor([1, 2]).dtype
      dtype('int32')
    """
    if hasattr(data, "__jax_array__"):
        data = data.__jax_array__()
    if dtype is None and not hasattr(data, "dtype"):
        host = np.asarray(data)
        if np.issubdtype(host.dtype, np.floating):
            dtype = jnp.float32
        elif np.issubdtype(host.dtype, np.integer):
            dtype = jnp.int32
        data = host
    return jnp.asarray(data, dtype=dtype)
