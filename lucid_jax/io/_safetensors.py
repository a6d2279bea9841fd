"""The safetensors format, read and written with numpy alone, as the `safetensors` package does.

A file is an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str} | null}`,
then the tensors' raw little-endian bytes, offsets counted from the end of the header.

The reader accepts exactly the files the reference implementation (the `safetensors` crate, 0.8,
through `safetensors.numpy`) accepts; its rules, each checked here:

- the header length at most 100 MB and within the file; the header strict UTF-8 (no byte-order
  mark) holding one JSON object, optionally surrounded by JSON whitespace (space, tab, CR, LF:
  the writer pads with spaces); no `NaN`/`Infinity`, no number beyond float64's range (as
  serde_json rounds), no unpaired surrogate escape, nesting at most 127 deep (serde_json's
  recursion limit);
- `__metadata__` at most once: `null` or an object of strings;
- every other key a tensor: an object with `dtype`, `shape`, `data_offsets`, each once, other
  fields ignored (serde's struct rules also take the array `[dtype, shape, data_offsets]`, and a
  dtype spelt `{"F32": null}`); a known dtype name; sizes and offsets integers in [0, 2**64);
  a repeated tensor name keeps its last entry, every one of them well-formed;
- sorted by offsets, the tensors follow one another from byte 0 to the end of the file exactly
  (no gap, overlap or trailing byte), each as long as its dtype and shape say, with no overflow
  in 64 bits.

Where the crate accepts a file numpy cannot hold, lucid_jax refuses it, as `safetensors.numpy`
does: 4- and 6-bit floats (`F4`, `F6_*`, packed below a byte) and shapes numpy cannot make.
bfloat16 and every float8 are read as `ml_dtypes`' types (which `safetensors.numpy` lacks).
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from lucid_jax.io._serde_json_numbers import out_of_range

#: The crate refuses headers over 100 MB: a corrupt length must not make us allocate that much.
MAX_HEADER_BYTES = 100_000_000
#: The deepest JSON nesting the crate parses (serde_json stops at 128).
MAX_DEPTH = 127
_WORD = 2**64  # sizes and offsets are Rust `usize`: 64-bit
METADATA_KEY = "__metadata__"

#: Every dtype the crate knows, in its order (increasing alignment; the writer sorts by it).
CRATE_DTYPES = (
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
)
_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "BOOL": 8, "U8": 8, "I8": 8}
_BITS |= {name: 8 for name in CRATE_DTYPES if name.startswith("F8_")}
_BITS |= {name: 16 for name in ("I16", "U16", "F16", "BF16")}
_BITS |= {name: 32 for name in ("I32", "U32", "F32")}
_BITS |= {name: 64 for name in ("C64", "F64", "I64", "U64")}
_RANK = {name: rank for rank, name in enumerate(CRATE_DTYPES)}

#: The dtypes read and written here: the crate's, but for those packed below a byte.
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(jnp.bfloat16),  # ml_dtypes' types, as JAX exports them
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "C64": np.dtype("<c8"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
    "F8_E8M0": np.dtype(jnp.float8_e8m0fnu),
    "F8_E4M3FNUZ": np.dtype(jnp.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(jnp.float8_e5m2fnuz),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class Entry(NamedTuple):
    """One tensor's header entry, checked."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class _Object(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept (as serde sees them)."""


def decode(data: bytes) -> OrderedDict[str, np.ndarray]:
    """The tensors of a safetensors file's bytes, by name in sorted order (as the crate lists).

    Memory: the file's bytes, one copy of the tensors, and the parsed header (Python objects,
    linear in its size, which is at most 100 MB).

    Raises:
        ValueError: the bytes are not a safetensors file the crate reads, or hold a tensor numpy
            cannot (the message says why).
    """
    header_size, entries = read_header(data)
    buffer = memoryview(data)[8 + header_size :]
    tensors = {}
    for name in sorted(entries):
        dtype, shape, begin, end = entries[name]
        if dtype not in _DTYPES:
            raise ValueError(
                f"tensor {name!r} has dtype {dtype}, packed below a byte, which numpy cannot "
                f"hold (lucid_jax reads {sorted(_DTYPES)})"
            )
        try:
            array = np.frombuffer(buffer[begin:end], dtype=_DTYPES[dtype]).reshape(shape)
        except ValueError as error:  # a zero-size shape numpy cannot make (> 64 axes, ...)
            raise ValueError(f"tensor {name!r} has shape {list(shape)}: {error}") from None
        tensors[name] = array.copy()
    return OrderedDict(tensors)


def read_header(data: bytes) -> tuple[int, dict[str, Entry]]:
    """The header's size and its tensor entries, checked against the whole file as the crate does.

    Raises:
        ValueError: anything the crate refuses (the message says what).
    """
    if len(data) < 8:
        raise ValueError(f"it has {len(data)} bytes, fewer than the 8-byte header length")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > MAX_HEADER_BYTES or 8 + header_size > len(data):
        raise ValueError(
            f"its header length field says {header_size} bytes, but the file has "
            f"{len(data) - 8} bytes after it (and headers are at most {MAX_HEADER_BYTES} bytes)"
        )
    header = _parse_json(data[8 : 8 + header_size])
    if type(header) is not _Object:
        raise ValueError(f"its header is a JSON {_json_type(header)}, not an object")
    entries: dict[str, Entry] = {}
    metadata_seen = False
    for key, value in header:
        if key == METADATA_KEY:
            if metadata_seen:
                raise ValueError(f"its header has {METADATA_KEY} twice")
            metadata_seen = True
            _check_metadata(value)
        else:
            entries[key] = _parse_entry(key, value)  # a repeated name: the last entry counts
    data_size = len(data) - 8 - header_size
    expected_begin = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != expected_begin or not entry.begin <= entry.end <= data_size:
            raise ValueError(
                f"tensor {name!r} occupies bytes [{entry.begin}, {entry.end}) of the "
                f"{data_size}-byte data, where the tensors must follow one another from byte "
                f"{expected_begin}"
            )
        nbytes = _byte_count(name, entry)
        if entry.end - entry.begin != nbytes:
            raise ValueError(
                f"tensor {name!r} of dtype {entry.dtype} and shape {list(entry.shape)} needs "
                f"{nbytes} bytes; its data_offsets [{entry.begin}, {entry.end}] give "
                f"{entry.end - entry.begin}"
            )
        expected_begin = entry.end
    if expected_begin != data_size:
        raise ValueError(
            f"its tensors cover {expected_begin} of the {data_size} data bytes after the header"
        )
    return header_size, entries


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")  # strict: a byte-order mark stays, and JSON refuses it
    except UnicodeDecodeError as error:
        raise ValueError(f"its header is not UTF-8 ({error})") from None
    decoder = json.JSONDecoder(
        object_pairs_hook=_Object,
        # serde_json reads "-0" as a float (so never as a size); a hook per integer costs a
        # Python call each, so it runs only when the text may hold one.
        parse_int=_parse_int if b"-0" in raw else None,
        parse_float=_parse_float,
        parse_constant=_refuse_constant,
    )
    try:
        header = decoder.decode(text)
    except RecursionError:
        raise ValueError(f"its header nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # includes integers of over 4300 digits
        raise ValueError(f"its header is not valid JSON ({error})") from None
    _check_values(header)
    return header


def _parse_int(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    # Far from float64's largest value, Python and serde_json agree (no overflow).
    if not abs(value) < 1e307 and out_of_range(text):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def _check_values(header: Any) -> None:
    """What serde_json refuses and Python's json takes: nesting deeper than MAX_DEPTH, an
    integer beyond float64's range, a string with an unpaired surrogate (a `\\ud800` escape).
    (Floats are checked as they are parsed, where their spelling is known.)

    Depth first, holding one iterator per open container: memory is bounded by the depth.
    """
    path = [iter((header,))]
    while path:
        for value in path[-1]:
            kind = type(value)
            if kind is str:
                if not value.isascii():
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:
                        raise ValueError("its header has an unpaired surrogate escape") from None
            elif kind is list or kind is _Object:
                if len(path) > MAX_DEPTH:
                    raise ValueError(f"its header nests deeper than {MAX_DEPTH} levels")
                path.append(iter(value) if kind is list else itertools.chain.from_iterable(value))
                break
            elif kind is int and not -(10**307) < value < 10**307:
                if out_of_range(str(value)):  # (JSON has one spelling of an integer)
                    raise ValueError("its header has a number beyond float64's range")
        else:
            path.pop()


def _check_metadata(value: Any) -> None:
    if value is None:
        return
    if type(value) is not _Object or not all(type(item) is str for _, item in value):
        raise ValueError(
            f"its {METADATA_KEY} is not a mapping of strings to strings (or null); it is a "
            f"JSON {_json_type(value)}"
            + (" holding a non-string" if type(value) is _Object else "")
        )


def _parse_entry(name: str, value: Any) -> Entry:
    fields: dict[str, Any] = {}
    if type(value) is list:  # serde builds a struct from a sequence of its fields too
        if len(value) != 3:
            raise ValueError(
                f"header entry {name!r} is an array of {len(value)} items; expected an object "
                "(or [dtype, shape, data_offsets])"
            )
        fields = dict(zip(("dtype", "shape", "data_offsets"), value, strict=True))
    elif type(value) is _Object:
        for key, item in value:
            if key in ("dtype", "shape", "data_offsets"):
                if key in fields:
                    raise ValueError(f"header entry {name!r} has {key!r} twice")
                fields[key] = item  # any other field is ignored, as the crate does
        missing = [key for key in ("dtype", "shape", "data_offsets") if key not in fields]
        if missing:
            raise ValueError(f"header entry {name!r} lacks {', '.join(missing)}")
    else:
        raise ValueError(
            f"header entry {name!r} is a JSON {_json_type(value)}; expected an object with "
            "dtype, shape and data_offsets"
        )
    dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
    if type(dtype) is _Object and len(dtype) == 1 and dtype[0][1] is None:
        dtype = dtype[0][0]  # serde's map form of a unit variant: {"F32": null}
    if type(dtype) is not str or dtype not in _RANK:
        raise ValueError(
            f"tensor {name!r} has dtype {dtype!r}; the format knows {list(CRATE_DTYPES)}"
        )
    if type(shape) is not list or not all(_is_size(size) for size in shape):
        raise ValueError(f"tensor {name!r} has shape {shape!r}, not a list of sizes >= 0")
    if type(offsets) is not list or len(offsets) != 2 or not all(map(_is_size, offsets)):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    return Entry(dtype, tuple(shape), offsets[0], offsets[1])


def _is_size(value: Any) -> bool:
    return type(value) is int and 0 <= value < _WORD


def _byte_count(name: str, entry: Entry) -> int:
    # The crate multiplies left to right in 64 bits and refuses any overflow on the way.
    count = 1
    for size in entry.shape:
        count *= size
        if count >= _WORD:
            raise ValueError(f"tensor {name!r}: the shape {list(entry.shape)} overflows 64 bits")
    bits = count * _BITS[entry.dtype]
    if bits >= _WORD:
        raise ValueError(f"tensor {name!r}: the shape {list(entry.shape)} overflows 64 bits")
    if bits % 8:
        raise ValueError(
            f"tensor {name!r} of dtype {entry.dtype} and shape {list(entry.shape)} does not "
            "end on a byte boundary"
        )
    return bits // 8


def _json_type(value: Any) -> str:
    if type(value) is _Object:
        return "object"
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def dtype_name(dtype: np.dtype) -> str | None:
    """The safetensors name of a numpy dtype (byte order aside), or None if it has none."""
    return _NAMES.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    """A safetensors file holding `tensors` (numpy arrays of dtypes `dtype_name` knows).

    The bytes `safetensors.numpy.save` writes for the same arrays: tensors ordered by the
    crate's dtype order (decreasing alignment), then name; the header JSON as serde_json writes
    it (raw UTF-8), padded with spaces to a multiple of 8 bytes. It refuses what `decode` would
    refuse (which `safetensors.numpy.save` writes): a tensor named `__metadata__`, a name that
    is not valid Unicode, a header over 100 MB.

    Raises:
        ValueError: a name the format cannot hold; the message says which.
    """
    for name in tensors:
        if name == METADATA_KEY:
            raise ValueError(
                f"a tensor cannot be named {METADATA_KEY!r}: the format reserves that key for "
                "its metadata, and a file holding it is refused when read"
            )
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"tensor name {name!r} holds an unpaired surrogate, which UTF-8 cannot encode"
            ) from None
    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}
    arrays = {
        name: value.astype(value.dtype.newbyteorder("<")) if value.dtype.byteorder == ">" else value
        for name, value in arrays.items()
    }
    names: dict[str, str] = {}
    for name, array in arrays.items():
        code = dtype_name(array.dtype)
        if code is None:  # save checks first, with its own message; this is the last guard
            raise TypeError(f"tensor {name!r} has dtype {array.dtype}, which safetensors lacks")
        names[name] = code
    order = sorted(arrays, key=lambda name: (-_RANK[names[name]], name))
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": names[name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(
            f"the header would take {len(header_bytes)} bytes; the format allows {MAX_HEADER_BYTES}"
        )
    return b"".join(
        [len(header_bytes).to_bytes(8, "little"), header_bytes]
        + [arrays[name].tobytes() for name in order]
    )
