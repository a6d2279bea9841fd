"""Mutable holders of one array: ``Buffer`` (running statistics) and ``Parameter``."""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Buffer:
    """A mutable holder of one JAX array, like ``lucid.nn.Buffer``.

    JAX arrays are immutable, so Lucid's in-place update of running statistics is emulated by
    swapping the array a ``Buffer`` holds. A Buffer converts explicitly (``jnp.asarray(buf)``,
    ``np.asarray(buf)``), supports arithmetic, indexing and array methods (``buf.sum()``), and
    exposes ``.data``, ``.shape``, ``.dtype`` and ``.ndim``. Recent JAX (0.10 here) no longer
    converts such objects inside ``jnp`` functions: write ``jnp.sum(buf.data)``, not
    ``jnp.sum(buf)``.
    Every lucid_jax function accepts Buffers directly.

    Example:
      >>> import jax.numpy as jnp
      >>> from lucid_jax.nn import Buffer
      >>> buf = Buffer(jnp.zeros(2))
      >>> buf.data = buf.data + 1
      >>> buf
      Buffer([1., 1.], dtype=float32)
      >>> float((buf * 2).sum())
      4.0
    """

    __slots__ = ("_data",)
    __array_priority__ = 100

    def __init__(self, data: Any) -> None:
        self.data = data

    @property
    def data(self) -> jax.Array:
        """The array held."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, Buffer):
            value = value.data
        self._data = jnp.asarray(value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return int(self._data.size)

    def __jax_array__(self) -> jax.Array:
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = np.asarray(self._data)
        return array if dtype is None else array.astype(dtype)

    def numpy(self) -> np.ndarray:
        """A host copy of the data."""
        return np.asarray(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: Any) -> jax.Array:
        return self._data[index]

    def __iter__(self):
        return iter(self._data)

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self._data), separator=", ", prefix=" " * 7)
        return f"{type(self).__name__}({body}, dtype={self.dtype})"

    def __getattr__(self, name: str) -> Any:
        # Array methods (sum, mean, reshape, astype, ...) act on the held array.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._data, name)


def _unwrap(value: Any) -> Any:
    return value._data if isinstance(value, Buffer) else value


def _binary(op: Any, reflected: bool = False) -> Any:
    def method(self: Buffer, other: Any) -> jax.Array:
        a, b = self._data, _unwrap(other)
        return op(b, a) if reflected else op(a, b)

    return method


for _name, _op in {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "mod": operator.mod,
}.items():
    setattr(Buffer, f"__{_name}__", _binary(_op))
    setattr(Buffer, f"__r{_name}__", _binary(_op, reflected=True))
for _name, _op in {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}.items():
    setattr(Buffer, f"__{_name}__", _binary(_op))
Buffer.__neg__ = lambda self: -self._data  # type: ignore[attr-defined]
Buffer.__abs__ = lambda self: abs(self._data)  # type: ignore[attr-defined]


class Parameter(Buffer):
    """A trainable array held by a module (``weight``, ``bias``), like ``lucid.nn.Parameter``."""

    __slots__ = ()
