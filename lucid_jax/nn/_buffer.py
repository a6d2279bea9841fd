"""Mutable holders of one array: `Buffer` (running statistics) and `Parameter`."""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lucid_jax.nn._overrides import slot_of


def _flatten(holder: Buffer) -> tuple[tuple[jax.Array], None]:
    return (holder.data,), None


def _register_pytree(cls: type[Buffer]) -> None:
    def unflatten(_: None, leaves: tuple[Any]) -> Buffer:
        # JAX unflattens with tracers and placeholders as leaves: store them without conversion.
        holder = object.__new__(cls)
        holder._lock = threading.Lock()
        holder._data = leaves[0]
        return holder

    jax.tree_util.register_pytree_node(cls, _flatten, unflatten)


class Buffer:
    """A mutable holder of one JAX array, like `lucid.nn.Buffer`.

    JAX arrays are immutable, so Lucid's in-place update of running statistics is emulated by
    swapping the array a `Buffer` holds. A Buffer converts explicitly (`jnp.asarray(buf)`,
    `np.asarray(buf)`), supports arithmetic, indexing and array methods (`buf.sum()`), and
    exposes `.data`, `.shape`, `.dtype` and `.ndim`. JAX does not convert such objects inside
    `jnp` functions: write `jnp.sum(buf.data)`, not `jnp.sum(buf)`. Every lucid_jax function
    accepts Buffers directly.

    Inside [`functional_call`][lucid_jax.nn.functional_call] a Buffer of the called module
    reads and writes that call's value instead of its own, so the module is left as it was.
    A Buffer is a pytree with one leaf: passed into `jax.jit` or `jax.grad` it arrives as a new
    Buffer holding the traced array (writing to that one does not reach the caller's).

    Args:
      data: the array to hold (anything `jnp.asarray` accepts; a Buffer is unwrapped).
      dtype: convert to this dtype; default: keep the data's.

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax.nn import Buffer
      >>> buf = Buffer(jnp.zeros(2))
      >>> buf.data = buf.data + 1
      >>> buf
      Buffer([1., 1.], dtype=float32)
      >>> float((buf * 2).sum())
      4.0
    """

    __slots__ = ("_data", "_lock")
    __array_priority__ = 100

    def __init__(self, data: ArrayLike | Buffer, dtype: Any = None) -> None:
        # The lock serialises the shim's read-compute-write of running statistics.
        self._lock = threading.Lock()
        self._data = jnp.asarray(unwrap(data), dtype=dtype)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register_pytree(cls)

    @property
    def data(self) -> jax.Array:
        """The array held (within a `functional_call` of its module: that call's value)."""
        slot = slot_of(self)
        return self._data if slot is None else slot.value

    @data.setter
    def data(self, value: ArrayLike) -> None:
        array = jnp.asarray(unwrap(value))
        slot = slot_of(self)
        if slot is None:
            self._data = array
        else:
            slot.value = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __jax_array__(self) -> jax.Array:
        return self.data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = np.asarray(self.data)
        return array if dtype is None else array.astype(dtype)

    def numpy(self) -> np.ndarray:
        """A host copy of the data."""
        return np.asarray(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> jax.Array:
        return self.data[index]

    def __iter__(self) -> Iterator[jax.Array]:
        return iter(self.data)

    def __reduce__(self) -> tuple[type, tuple[jax.Array, np.dtype]]:
        # Copies and pickles get their own lock; the array is immutable and can be shared. The
        # dtype is given so that a float64 Parameter is not demoted on the way.
        return type(self), (self.data, self.data.dtype)

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self.data), separator=", ", prefix=" " * 7)
        return f"{type(self).__name__}({body}, dtype={self.dtype})"

    def __getattr__(self, name: str) -> Any:
        # Array methods (sum, mean, reshape, astype, ...) act on the held array.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.data, name)


class Parameter(Buffer):
    """A trainable array held by a module (`weight`, `bias`), like `lucid.nn.Parameter`.

    A [`Module`][lucid_jax.nn.Module] lists it among its `parameters()`; otherwise it behaves
    as a [`Buffer`][lucid_jax.nn.Buffer].

    As in Lucid 2.14.5, a float64 *tensor* (here: a JAX array, a Buffer or a Parameter) without
    `dtype` becomes a float32 Parameter, while float64 NumPy arrays, Python floats and lists stay
    float64 (with x64 on; without it JAX holds every float as float32 anyway). Give `dtype` to
    keep a float64 JAX array as it is.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from lucid_jax.nn import Parameter
      >>> Parameter(jnp.ones(2)) * 3
      Array([3., 3.], dtype=float32)
      >>> with jax.enable_x64(True):
      ...     print(Parameter(jnp.ones(2)).dtype, Parameter(np.ones(2)).dtype)
      float32 float64
    """

    __slots__ = ()

    def __init__(self, data: ArrayLike | Buffer, dtype: Any = None) -> None:
        if dtype is None and isinstance(data, (jax.Array, Buffer)) and data.dtype == np.float64:
            dtype = np.float32  # Lucid's Parameter demotes a float64 Tensor
        super().__init__(data, dtype)


_register_pytree(Buffer)  # subclasses register themselves in __init_subclass__


@contextlib.contextmanager
def holding_locks(holders: Iterable[Buffer]) -> Iterator[None]:
    """Hold the locks of several Buffers, taken in one global order (by id) so none deadlock."""
    unique = sorted({id(holder): holder for holder in holders}.values(), key=id)
    with contextlib.ExitStack() as stack:
        for holder in unique:
            stack.enter_context(holder._lock)
        yield


def read_together(holders: Iterable[Buffer]) -> list[jax.Array]:
    """The arrays of several Buffers, read as one snapshot (under their locks).

    Writers that swap several Buffers at once (`load_state_dict`, the shim's running-stat
    update) hold the same locks, so the snapshot is all before or all after each of them.
    """
    holders = list(holders)
    with holding_locks(holders):
        return [holder.data for holder in holders]


def unwrap(value: Any) -> Any:
    """The array a Buffer (or Parameter) holds; any other value as it is."""
    return value.data if isinstance(value, Buffer) else value


def _binary(op: Any, reflected: bool = False) -> Any:
    def method(self: Buffer, other: Any) -> jax.Array:
        a, b = self.data, unwrap(other)
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
Buffer.__neg__ = lambda self: -self.data  # type: ignore[attr-defined]
Buffer.__abs__ = lambda self: abs(self.data)  # type: ignore[attr-defined]
