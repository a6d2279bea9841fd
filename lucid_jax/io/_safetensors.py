"""The safetensors format, read and written with numpy alone.

A file is an 8-byte little-endian header length `n`, `n` bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
tensors' raw little-endian bytes, offsets counted from the end of the header. The reader checks
what the reference implementation (the `safetensors` crate) checks: the header's size, its
JSON, each entry's dtype, shape and byte count, and that the tensors tile the data exactly.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

#: The crate refuses headers over 100 MB: a corrupt length must not make us allocate that much.
MAX_HEADER_BYTES = 100_000_000

_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(jnp.bfloat16),  # ml_dtypes' type, as JAX exports it
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def decode(data: bytes) -> OrderedDict[str, np.ndarray]:
    """The tensors of a safetensors file's bytes, by name in sorted order (as the crate lists).

    Raises:
        ValueError: the bytes are not a well-formed safetensors file (the message says why).
    """
    if len(data) < 8:
        raise ValueError(f"it has {len(data)} bytes, fewer than the 8-byte header length")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > MAX_HEADER_BYTES or 8 + header_size > len(data):
        raise ValueError(
            f"its header length field says {header_size} bytes, but the file has "
            f"{len(data) - 8} bytes after it (and headers are at most {MAX_HEADER_BYTES} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + header_size], object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("its __metadata__ is not a mapping of strings to strings")

    buffer = memoryview(data)[8 + header_size :]
    entries = sorted(
        ((_parse_entry(name, entry), name) for name, entry in header.items()),
        key=lambda item: item[0][2],
    )
    tensors: dict[str, np.ndarray] = {}
    expected_begin = 0
    for (dtype, shape, (begin, end)), name in entries:
        if begin != expected_begin or end > len(buffer):
            raise ValueError(
                f"tensor {name!r} occupies bytes [{begin}, {end}) of the {len(buffer)}-byte data, "
                f"where the tensors must follow one another from byte {expected_begin}"
            )
        tensors[name] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape).copy()
        expected_begin = end
    if expected_begin != len(buffer):
        raise ValueError(
            f"its tensors cover {expected_begin} of the {len(buffer)} data bytes after the header"
        )
    return OrderedDict((name, tensors[name]) for name in sorted(tensors))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {sorted(keys)}")
    return dict(pairs)


def _parse_entry(name: str, entry: Any) -> tuple[np.dtype, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(
            f"header entry {name!r} must be an object with exactly dtype, shape and "
            f"data_offsets; got {entry!r}"
        )
    dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise ValueError(
            f"tensor {name!r} has dtype {entry['dtype']!r}; supported: {sorted(_DTYPES)}"
        )
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ValueError(f"tensor {name!r} has shape {shape!r}, not a list of sizes >= 0")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(
            f"tensor {name!r} of dtype {entry['dtype']} and shape {shape} needs {nbytes} bytes; "
            f"its data_offsets {offsets} give {offsets[1] - offsets[0]}"
        )
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def dtype_name(dtype: np.dtype) -> str | None:
    """The safetensors name of a numpy dtype (byte order aside), or None if it has none."""
    return _NAMES.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    """A safetensors file holding `tensors` (numpy arrays of dtypes `dtype_name` knows).

    Laid out as the `safetensors` package lays it out: tensors ordered by decreasing alignment,
    then name; the header padded with spaces to a multiple of 8 bytes.
    """
    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}
    arrays = {
        name: value.astype(value.dtype.newbyteorder("<")) if value.dtype.byteorder == ">" else value
        for name, value in arrays.items()
    }
    order = sorted(arrays, key=lambda name: (-arrays[name].dtype.alignment, name))
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": dtype_name(array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    return b"".join(
        [len(header_bytes).to_bytes(8, "little"), header_bytes]
        + [arrays[name].tobytes() for name in order]
    )
