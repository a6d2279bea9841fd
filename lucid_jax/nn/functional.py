"""Lucid's stateful ``nn.functional.instance_norm``, emulated over the pure function."""

from __future__ import annotations

from typing import Any

import jax

from lucid_jax import functional as _pure
from lucid_jax.nn._buffer import Buffer

__all__ = ["instance_norm"]


def instance_norm(
    input_: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> jax.Array:
    """Lucid's ``F.instance_norm``: returns one array and updates Buffers in place.

    Same maths as :func:`lucid_jax.instance_norm`. When ``training`` and both running stats
    are :class:`~lucid_jax.nn.Buffer`\\ s, the new statistics are written into them (both or
    neither: a call that raises leaves them untouched).

    .. warning::
       Plain arrays passed as running stats are **not** updated — exactly as Lucid leaves plain
       Tensors unchanged, so the update is silently lost. Wrap them in ``Buffer`` (or use the
       pure :func:`lucid_jax.instance_norm`, which returns the new statistics).

    Under a JAX transformation (``jit``, ``vmap``, ``grad`` ...) a Buffer cannot be updated in
    place; training with Buffers there raises ``TypeError`` pointing to the pure function.

    Example:
      >>> from lucid_jax import Tensor
      >>> from lucid_jax.nn import Buffer
      >>> import lucid_jax.nn.functional as F
      >>> mean, var = Buffer(Tensor([0.0, 0.0])), Buffer(Tensor([1.0, 1.0]))
      >>> y = F.instance_norm(Tensor([[[1.0, 2.0], [3.0, 4.0]]]), mean, var)
      >>> mean
      Buffer([0.15, 0.35], dtype=float32)
    """
    result = _pure.instance_norm(
        input_,
        _unwrap(running_mean),
        _unwrap(running_var),
        _unwrap(weight),
        _unwrap(bias),
        training,
        momentum,
        eps,
    )
    if training and isinstance(running_mean, Buffer) and isinstance(running_var, Buffer):
        if isinstance(result.running_mean, jax.core.Tracer) or isinstance(
            result.running_var, jax.core.Tracer
        ):
            raise TypeError(
                "lucid_jax.nn.functional.instance_norm: called under a JAX transformation "
                "(jit, vmap, grad, ...) with Buffers as running_mean/running_var in training; "
                "a Buffer cannot be updated in place there (it would leak a tracer). Use the "
                "pure lucid_jax.instance_norm(...), which returns the new running stats, or "
                "call this outside the transformation. The Buffers were left unchanged."
            )
        running_mean.data = result.running_mean
        running_var.data = result.running_var
    return result.output


def _unwrap(value: Any) -> Any:
    return value.data if isinstance(value, Buffer) else value
