"""Unpickling that builds only what a Lucid checkpoint holds, and never runs anything else.

A pickle is a small program: its `GLOBAL` opcodes name any importable callable and its `REDUCE`
opcodes call it, so `pickle.load` on an untrusted file can run arbitrary code. Every callable
and class a pickle can reach goes through `Unpickler.find_class`; the subclass here answers it
from a fixed table of what `lucid.save` writes (numpy arrays, dtypes and scalars, `OrderedDict`)
and refuses every other name before anything is imported or called.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 keeps its internals in numpy._core (numpy.core is a deprecated alias)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x, older than the supported pins
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle named a callable or class outside the checkpoint allow-list."""


class _NdarrayType:
    """Stands for `numpy.ndarray` inside a pickle: accepted by `_reconstruct`, never callable.

    `numpy.ndarray` itself would let a pickle call `ndarray(shape)` and allocate any amount of
    memory; real pickles only pass the class to `_reconstruct`, which gets the real one below.
    """


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NdarrayType:
        raise RefusedGlobalError(
            f"numpy's _reconstruct may only build a numpy.ndarray; got {subtype!r}"
        )
    return _multiarray._reconstruct(np.ndarray, shape, typecode)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocols 0-2 spell raw bytes as _codecs.encode(str, "latin1"); no other codec is needed.
    if not isinstance(text, str) or encoding != "latin1":
        raise RefusedGlobalError(
            f"_codecs.encode is allowed only as encode(str, 'latin1'); got encoding {encoding!r}"
        )
    return codecs.encode(text, "latin1")


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "dict"): dict,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): np.dtype,
    }
    # Files written under numpy 1.x name numpy.core.*, under numpy 2.x numpy._core.*; both
    # resolve to this numpy's functions, so neither import path is ever executed.
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return table


_ALLOWED = _allowed()


class CheckpointUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` whose `find_class` serves only the allow-list above."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 may spell Python 3 names the Python 2 way (__builtin__, copy_reg).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobalError(
                f"it asks for {module}.{name}, which is not among the numpy arrays, dtypes, "
                "dicts, strings and numbers a Lucid checkpoint holds"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobalError(f"it refers to an external object {pid!r}")


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data` with `CheckpointUnpickler`; raises `pickle.UnpicklingError`."""
    return CheckpointUnpickler(io.BytesIO(data)).load()
