"""A reader of the pickle opcodes that builds plain data and numeric numpy arrays, nothing else.

A pickle is a program for a stack machine: `GLOBAL` imports a name, `REDUCE` calls it, `BUILD`
hands an object state (`__setstate__` or `setattr`). Even an unpickler restricted to a few
numpy names lets a file drive numpy's own object machinery (`dtype.__setstate__` with raw flags
and field offsets corrupts memory). So this module never unpickles: it interprets the opcodes
itself, over Python values it builds directly. (The design is the one of PyTorch's
weights-only unpickler, `torch/_weights_only_unpickler.py`: an opcode interpreter whose `GLOBAL`
is a table lookup and whose `BUILD` is limited to known types; here even the known names stay
markers, and the only "types" built are numpy arrays from a checked dtype, shape and bytes.)

What it can build:

- `None`, `bool`, `int`, `float`, `str`, `bytes` (a `bytearray` is read as `bytes`), `tuple`,
  `list`, `dict` and `collections.OrderedDict` with string keys;
- numpy arrays and scalars of the numeric dtypes `b1`, `i1`-`i8`, `u1`-`u8`, `f2`, `f4`, `f8`,
  `c8`, `c16` in either byte order, in exactly the shapes numpy's own pickles take:
  `_reconstruct(ndarray, (0,), b'b')` then `BUILD (1, shape, dtype, is_fortran, raw bytes)`,
  `_frombuffer(raw bytes, dtype, shape, 'C' | 'F')` (protocol 5, in band) and
  `scalar(dtype, raw bytes)`; a dtype is `dtype(code, False, True)` then
  `BUILD (3, byte order, None, None, None, -1, -1, 0)`, every field checked.

The names a file may give (`GLOBAL`, `STACK_GLOBAL`) resolve to inert markers, never to the
functions: numpy only ever sees a byte order and type code from the list above (as a string
built here), a checked shape and the raw bytes of the array (`np.frombuffer`, then `reshape`).

It is bounded: every length is checked against the bytes present before anything is allocated;
the memo holds only what the file put there (in a list while the indices come in order, as
pickle writes them, else in a dict: never sized by an index); `MARK`s and containers nest at most
`MAX_DEPTH` levels; what it allocates beyond the file's own bytes is counted, and a file that
needs more than twice its size plus `MEMORY_SLACK` bytes is refused; each opcode costs time in
proportion to the bytes it reads or the items it consumes. Every refusal is a `PickleRefused`
(a `ValueError`) with the byte offset of the opcode and what was refused.
"""

from __future__ import annotations

import math
import reprlib
import struct
import sys
from collections import OrderedDict
from typing import Any, cast

import numpy as np

#: How deep `MARK`s and containers may nest (a Lucid checkpoint needs 4).
MAX_DEPTH = 100
#: Memory the reader may use beyond twice the file's size, for the Python objects it builds.
MEMORY_SLACK = 128 * 2**20
#: The most dimensions an array may have (numpy 1.x's own limit).
MAX_NDIM = 32
#: numpy type codes an array or scalar may have; byte order `|` for one-byte types.
ARRAY_TYPE_CODES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)
# What a dict item costs CPython, about, with the table's spare room (the memo when its
# indices are out of order, and the dicts the file builds).
_DICT_ITEM_COST = 100
# A text-protocol number longer than this is no number a checkpoint holds; capping it keeps
# int() and float() linear.
_MAX_NUMBER_TEXT = 64
_MAX_LONG_BYTES = 64


class _ShortRepr(reprlib.Repr):
    """`reprlib`'s short repr, which also cuts bytes before, not after, writing them out."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        cut = value[: self.maxstring]
        return repr(cut) + ("..." if len(value) > len(cut) else "")


_short = _ShortRepr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 2


def short_repr(value: Any) -> str:
    """A repr of at most about 100 characters, in time that does not grow with `value`."""
    return _short.repr(value)


class PickleRefused(ValueError):
    """The bytes are not a pickle of plain data this reader builds; nothing was run."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class _Marker:
    """A value a file can name but never gets as data: a global, a dtype, an unbuilt array."""

    __slots__ = ()


class _Global(_Marker):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_RECONSTRUCT = _Global("numpy's _reconstruct")
_SCALAR = _Global("numpy's scalar")
_FROMBUFFER = _Global("numpy's _frombuffer")
_NDARRAY = _Global("numpy.ndarray")
_DTYPE = _Global("numpy.dtype")
_ORDERED_DICT = _Global("collections.OrderedDict")
_DICT = _Global("builtins.dict")
_ENCODE = _Global("_codecs.encode")
_BYTES = _Global("builtins.bytes")

_GLOBALS: dict[tuple[str, str], _Global] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("collections", "OrderedDict"): _ORDERED_DICT,
    ("builtins", "dict"): _DICT,
    ("__builtin__", "dict"): _DICT,  # protocols 0-2 spell builtins the Python 2 way
    ("_codecs", "encode"): _ENCODE,
    ("builtins", "bytes"): _BYTES,  # protocols 0-2 write b"" as bytes()
    ("__builtin__", "bytes"): _BYTES,
}
# numpy 1.x writes numpy.core.*, numpy 2.x numpy._core.*: both are names only, nothing is imported.
for _package in ("numpy.core", "numpy._core"):
    _GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _GLOBALS[(f"{_package}.multiarray", "scalar")] = _SCALAR
    _GLOBALS[(f"{_package}.numeric", "_frombuffer")] = _FROMBUFFER


class _Dtype(_Marker):
    """`dtype(code, False, True)`: its byte order comes with `BUILD`."""

    __slots__ = ("code", "dtype")

    def __init__(self, code: str) -> None:
        self.code = code
        self.dtype: np.dtype[Any] | None = None

    def __repr__(self) -> str:
        return f"numpy.dtype({self.code!r})"


class _Array(_Marker):
    """`_reconstruct(ndarray, (0,), b'b')`: its shape, dtype and bytes come with `BUILD`."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray[Any, Any] | None = None

    def __repr__(self) -> str:
        return "a numpy array awaiting its state"


class _Arguments(tuple):  # type: ignore[type-arg]
    """A tuple holding a marker: arguments for numpy, never data."""

    __slots__ = ()


_CONTAINERS = (list, dict, tuple)
_STRUCT_D = struct.Struct(">d")


def _same(value: Any, expected: Any) -> bool:
    """`value == expected` for plain `expected`, without asking an array to compare itself."""
    if type(value) is not type(expected):
        return False
    if type(expected) is tuple:
        return len(value) == len(expected) and all(map(_same, value, expected))
    return bool(value == expected)


def _what(value: Any) -> str:
    if isinstance(value, _Marker):
        return repr(value)
    if isinstance(value, _Arguments):
        markers = [_what(v) for v in value[:6] if isinstance(v, _Marker)]
        return f"a tuple holding {', '.join(markers) or 'such values'}"
    return f"{type(value).__name__} {_short.repr(value)}"


def read_pickle(data: bytes) -> Any:
    """The value the pickle `data` describes, built from plain data; raises `PickleRefused`."""
    return _Reader(data).run()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.offset = 0  # of the opcode being read
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        # The memo: indices 0, 1, 2, ... as MEMOIZE and pickle's PUTs give them, in a list;
        # any other index in a dict. Either holds one entry per PUT, whatever the index.
        self.memo: list[Any] = []
        self.memo_elsewhere: dict[int, Any] = {}
        # Depth of each container on the stack deeper than 1, by id. A container is never
        # shared (GET and DUP of one are refused): it is placed once and then never again,
        # so its entry goes when it leaves the stack and the table stays as small as it.
        self.depths: dict[int, int] = {}
        self.budget = 2 * len(data) + MEMORY_SLACK
        self.protocol = 0

    # --- reading the bytes --------------------------------------------------------------

    def refuse(self, reason: str) -> PickleRefused:
        return PickleRefused(self.offset, reason)

    def take(self, size: int, what: str) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise self.refuse(
                f"{what} says {size} bytes follow; {len(self.data) - self.position} do"
            )
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def length(self, size: int, what: str) -> int:
        (value,) = struct.unpack({1: "<B", 4: "<I", 8: "<Q"}[size], self.take(size, what))
        return int(value)

    def line(self, what: str, limit: int | None = None) -> bytes:
        # A limited line is looked for only as far as its limit: no scan past it.
        stop = len(self.data) if limit is None else self.position + limit + 1
        end = self.data.find(b"\n", self.position, stop)
        if end < 0 and stop < len(self.data):
            raise self.refuse(f"{what} is longer than {limit} characters")
        if end < 0:
            raise self.refuse(f"{what} has no end of line before the end of the file")
        text = self.data[self.position : end]
        self.position = end + 1
        return text

    def charge(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise self.refuse(
                f"the file builds more than twice its size plus {MEMORY_SLACK} bytes of "
                "objects; a checkpoint's bulk is its arrays' bytes"
            )

    # --- the stack ----------------------------------------------------------------------

    def push(self, value: Any, fresh: bool = True) -> None:
        # A stack slot, and the object itself when it is new (sys.getsizeof is O(1): it
        # counts an object's own memory, not what it refers to, nor a view's buffer).
        self.charge(8 + (sys.getsizeof(value) if fresh else 0))
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise self.refuse("the stack is empty (or only a MARK is on it)")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.refuse("the stack is empty (or only a MARK is on it)")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.refuse("no MARK to pop to")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def consumed(self, value: Any) -> int:
        """The depth of `value`, which leaves the stack for good (placed, used or dropped)."""
        if not isinstance(value, _CONTAINERS):
            return 0
        return self.depths.pop(id(value), 1)

    def placed(self, container: Any, items: Any) -> None:
        """Record `container`'s depth after `items` went into it."""
        deepest = max((self.consumed(item) for item in items), default=0) + 1
        deepest = max(deepest, self.depths.get(id(container), 1))
        if deepest > MAX_DEPTH:
            raise self.refuse(f"containers nest more than {MAX_DEPTH} levels deep")
        if deepest > 1:
            self.depths[id(container)] = deepest

    def data_value(self, value: Any, where: str) -> Any:
        if isinstance(value, _Array) and value.array is not None:
            return value.array
        if isinstance(value, (_Marker, _Arguments)):
            raise self.refuse(f"{_what(value)} cannot be {where}: it is no checkpoint data")
        return value

    def key(self, value: Any) -> str:
        # Strings only: their hashes are randomised, so no file can make a dict quadratic.
        if type(value) is not str:
            raise self.refuse(f"dict key {_what(value)} refused: keys are strings")
        return value

    def make_tuple(self, items: list[Any]) -> tuple[Any, ...]:
        items = [v.array if isinstance(v, _Array) and v.array is not None else v for v in items]
        if any(isinstance(item, (_Marker, _Arguments)) for item in items):
            result: tuple[Any, ...] = _Arguments(items)
        else:
            result = tuple(items)
        self.new_container(result)
        self.placed(result, items)
        return result

    def new_container(self, value: Any) -> Any:
        # Entries go with their containers; should one ever be left (an id reused), it is
        # not this container's.
        self.depths.pop(id(value), None)
        return value

    # --- the interpreter ----------------------------------------------------------------

    def run(self) -> Any:
        data = self.data
        while True:
            self.offset = self.position
            if self.position >= len(data):
                raise self.refuse("the file ends before the pickle's STOP")
            code = data[self.position : self.position + 1]
            self.position += 1
            if code == b".":
                value = self.data_value(self.pop(), "the pickle's result")
                if self.stack or self.marks:
                    raise self.refuse("STOP leaves values on the stack")
                if self.position != len(data):
                    raise self.refuse(f"{len(data) - self.position} bytes follow the STOP")
                return value
            handler = _OPCODES.get(code)
            if handler is None:
                raise self.refuse(f"opcode {code!r} is not one a checkpoint needs")
            handler(self)


# --- numbers, strings, bytes ---------------------------------------------------------------


def _proto(reader: _Reader) -> None:
    version = reader.take(1, "PROTO")[0]
    if version > 5 or reader.offset != 0:
        raise reader.refuse(f"PROTO {version} (protocols 0-5, first opcode only)")
    reader.protocol = version


def _frame(reader: _Reader) -> None:
    size = reader.length(8, "FRAME")
    if size > len(reader.data) - reader.position:
        raise reader.refuse(f"FRAME of {size} bytes; {len(reader.data) - reader.position} follow")


def _const(value: Any) -> Any:
    def handler(reader: _Reader) -> None:
        reader.push(value)

    return handler


def _int_text(reader: _Reader) -> None:
    text = reader.line("INT", _MAX_NUMBER_TEXT)
    if text in (b"00", b"01"):  # protocol 0's False and True
        reader.push(text == b"01")
        return
    reader.push(_parse(reader, int, text, "INT"))


def _long_text(reader: _Reader) -> None:
    text = reader.line("LONG", _MAX_NUMBER_TEXT)
    reader.push(_parse(reader, int, text.removesuffix(b"L"), "LONG"))


def _float_text(reader: _Reader) -> None:
    reader.push(_parse(reader, float, reader.line("FLOAT", _MAX_NUMBER_TEXT), "FLOAT"))


def _parse(reader: _Reader, kind: Any, text: bytes, what: str) -> Any:
    try:
        return kind(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise reader.refuse(f"{what} {_short.repr(text)} is not a number") from None


def _binint(layout: str) -> Any:
    unpacker = struct.Struct(layout)

    def handler(reader: _Reader) -> None:
        (value,) = unpacker.unpack(reader.take(unpacker.size, "an integer"))
        reader.push(int(value))

    return handler


def _long_binary(width: int) -> Any:
    def handler(reader: _Reader) -> None:
        size = reader.length(width, "LONG")
        if size > _MAX_LONG_BYTES:
            raise reader.refuse(f"an integer of {size} bytes; at most {_MAX_LONG_BYTES}")
        reader.push(int.from_bytes(reader.take(size, "LONG"), "little", signed=True))

    return handler


def _binfloat(reader: _Reader) -> None:
    (value,) = _STRUCT_D.unpack(reader.take(8, "BINFLOAT"))
    reader.push(float(value))


def _unicode_text(reader: _Reader) -> None:
    raw = reader.line("UNICODE")
    try:
        text = raw.decode("raw-unicode-escape")
    except UnicodeDecodeError as error:
        raise reader.refuse(f"UNICODE text that does not decode ({error.reason})") from None
    reader.push(text)


def _unicode(width: int) -> Any:
    def handler(reader: _Reader) -> None:
        raw = reader.take(reader.length(width, "the string's length"), "the string")
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as error:
            raise reader.refuse(f"a string that is not UTF-8 ({error.reason})") from None
        reader.push(text)

    return handler


def _bytes(width: int) -> Any:
    def handler(reader: _Reader) -> None:
        raw = reader.take(reader.length(width, "the bytes' length"), "the bytes")
        reader.push(raw)

    return handler


def _refused(what: str) -> Any:
    def handler(reader: _Reader) -> None:
        raise reader.refuse(what)

    return handler


# --- the stack and the memo ------------------------------------------------------------------


def _mark(reader: _Reader) -> None:
    if len(reader.marks) >= MAX_DEPTH:
        raise reader.refuse(f"MARKs nest more than {MAX_DEPTH} levels deep")
    reader.charge(64)
    reader.marks.append(reader.stack)
    reader.stack = []


def _pop(reader: _Reader) -> None:
    reader.consumed(reader.pop())


def _pop_mark(reader: _Reader) -> None:
    for item in reader.pop_mark():
        reader.consumed(item)


def _put(reader: _Reader, index: int) -> None:
    value = reader.top()
    if index == len(reader.memo):
        reader.charge(8)
        reader.memo.append(value)
    elif 0 <= index < len(reader.memo):
        reader.memo[index] = value
    else:
        reader.charge(_DICT_ITEM_COST)
        reader.memo_elsewhere[index] = value


def _put_text(reader: _Reader) -> None:
    _put(reader, _parse(reader, int, reader.line("PUT", _MAX_NUMBER_TEXT), "PUT"))


def _put_binary(width: int) -> Any:
    def handler(reader: _Reader) -> None:
        _put(reader, reader.length(width, "PUT"))

    return handler


def _memoize(reader: _Reader) -> None:
    _put(reader, len(reader.memo) + len(reader.memo_elsewhere))


def _get(reader: _Reader, index: int) -> None:
    if 0 <= index < len(reader.memo):
        value = reader.memo[index]
    elif index in reader.memo_elsewhere:
        value = reader.memo_elsewhere[index]
    else:
        raise reader.refuse(f"GET {index}, which the file never PUT")
    if isinstance(value, _CONTAINERS):
        # Lucid's checkpoints share no containers; refusing shared ones keeps every container
        # with one parent: no cycles, no exponential walks, depth known at placement.
        raise reader.refuse(f"GET {index} of a {type(value).__name__}: containers are not shared")
    if isinstance(value, _Array) and value.array is not None:
        value = value.array
    reader.push(value, fresh=False)


def _get_text(reader: _Reader) -> None:
    _get(reader, _parse(reader, int, reader.line("GET", _MAX_NUMBER_TEXT), "GET"))


def _get_binary(width: int) -> Any:
    def handler(reader: _Reader) -> None:
        _get(reader, reader.length(width, "GET"))

    return handler


# --- containers ---------------------------------------------------------------------------------


def _empty(kind: Any) -> Any:
    def handler(reader: _Reader) -> None:
        reader.push(reader.new_container(kind()))

    return handler


def _tuple_from_mark(reader: _Reader) -> None:
    reader.push(reader.make_tuple(reader.pop_mark()))


def _tuple_n(count: int) -> Any:
    def handler(reader: _Reader) -> None:
        if len(reader.stack) < count:
            raise reader.refuse(f"TUPLE{count} with {len(reader.stack)} values on the stack")
        items = reader.stack[len(reader.stack) - count :]
        del reader.stack[len(reader.stack) - count :]
        reader.push(reader.make_tuple(items))

    return handler


def _empty_tuple(reader: _Reader) -> None:
    reader.push(())


def _list_from_mark(reader: _Reader) -> None:
    items = [reader.data_value(item, "in a list") for item in reader.pop_mark()]
    result = reader.new_container(items)
    reader.placed(result, items)
    reader.push(result)


def _dict_from_mark(reader: _Reader) -> None:
    result = reader.new_container({})
    _set_items(reader, result, reader.pop_mark())
    reader.push(result)


def _append(reader: _Reader) -> None:
    value = reader.pop()
    _extend(reader, reader.top(), [value])


def _appends(reader: _Reader) -> None:
    items = reader.pop_mark()
    _extend(reader, reader.top(), items)


def _extend(reader: _Reader, target: Any, items: list[Any]) -> None:
    if type(target) is not list:
        raise reader.refuse(f"APPEND to {_what(target)}; only lists take items")
    values = [reader.data_value(item, "in a list") for item in items]
    reader.charge(8 * len(values))
    reader.placed(target, values)
    target.extend(values)


def _setitem(reader: _Reader) -> None:
    value = reader.pop()
    key = reader.pop()
    _set_items(reader, reader.top(), [key, value])


def _setitems(reader: _Reader) -> None:
    items = reader.pop_mark()
    _set_items(reader, reader.top(), items)


def _set_items(reader: _Reader, target: Any, items: list[Any]) -> None:
    if type(target) not in (dict, OrderedDict):
        raise reader.refuse(f"SETITEM on {_what(target)}; only dicts take items")
    if len(items) % 2:
        raise reader.refuse(f"SETITEMS with an odd number ({len(items)}) of keys and values")
    values = [reader.data_value(item, "in a dict") for item in items[1::2]]
    keys = [reader.key(item) for item in items[0::2]]
    reader.charge(_DICT_ITEM_COST * len(keys))
    reader.placed(target, values)
    target.update(zip(keys, values, strict=True))


# --- names and the calls numpy's pickles make -----------------------------------------------------


def _resolve(reader: _Reader, module: Any, name: Any) -> None:
    found = _GLOBALS.get((module, name)) if type(module) is type(name) is str else None
    if found is None:
        raise reader.refuse(
            f"GLOBAL {_name(module)}.{_name(name)} is not one of the "
            "numpy array, dtype and scalar builders, OrderedDict and dict a checkpoint names"
        )
    reader.push(found)


def _name(value: Any) -> str:
    return _short.repr(value)[1:-1] if type(value) is str else _what(value)


def _global_text(reader: _Reader) -> None:
    module = reader.line("GLOBAL's module", 200).decode("utf-8", "replace")
    name = reader.line("GLOBAL's name", 200).decode("utf-8", "replace")
    _resolve(reader, module, name)


def _stack_global(reader: _Reader) -> None:
    name = reader.pop()
    module = reader.pop()
    _resolve(reader, module, name)


def _reduce(reader: _Reader) -> None:
    arguments = reader.pop()
    function = reader.pop()
    reader.consumed(arguments)
    if not isinstance(arguments, tuple):
        raise reader.refuse(f"REDUCE with arguments {_what(arguments)}; expected a tuple")
    call = _CALLS.get(id(function)) if isinstance(function, _Global) else None
    if call is None:
        raise reader.refuse(f"REDUCE calls {_what(function)}, which is not called in checkpoints")
    reader.push(call(reader, tuple(arguments)))


def _call_dict(reader: _Reader, arguments: tuple[Any, ...], kind: Any) -> Any:
    if arguments:
        raise reader.refuse(f"{kind.__name__} called with {len(arguments)} arguments; expected ()")
    return reader.new_container(kind())


def _call_bytes(reader: _Reader, arguments: tuple[Any, ...]) -> bytes:
    if arguments:
        raise reader.refuse(f"bytes called with {len(arguments)} arguments; expected ()")
    return b""


def _call_encode(reader: _Reader, arguments: tuple[Any, ...]) -> bytes:
    # Protocols 0-2 spell bytes as _codecs.encode(str, "latin1"), one character per byte.
    if len(arguments) != 2 or type(arguments[0]) is not str or not _same(arguments[1], "latin1"):
        raise reader.refuse(
            f"_codecs.encode{_short.repr(arguments)}; only encode(str, 'latin1') is read"
        )
    try:
        encoded = arguments[0].encode("latin1")
    except UnicodeEncodeError:
        raise reader.refuse("_codecs.encode of a string with characters beyond latin1") from None
    return encoded


def _call_dtype(reader: _Reader, arguments: tuple[Any, ...]) -> _Dtype:
    code = arguments[0] if arguments else None
    if (
        len(arguments) != 3
        or type(code) is not str
        or code not in ARRAY_TYPE_CODES
        or arguments[1] is not False
        or arguments[2] is not True
    ):
        raise reader.refuse(
            f"numpy.dtype{_short.repr(arguments)}; only dtype(code, False, True) with a code "
            f"among {', '.join(sorted(ARRAY_TYPE_CODES))} is read"
        )
    return _Dtype(code)


def _call_reconstruct(reader: _Reader, arguments: tuple[Any, ...]) -> _Array:
    if (
        len(arguments) != 3
        or arguments[0] is not _NDARRAY
        or not _same(arguments[1:], ((0,), b"b"))
    ):
        raise reader.refuse(
            f"numpy's _reconstruct{_short.repr(arguments)}; only "
            "_reconstruct(numpy.ndarray, (0,), b'b') is read (the data comes with BUILD)"
        )
    return _Array()


def _call_scalar(reader: _Reader, arguments: tuple[Any, ...]) -> np.generic:
    if len(arguments) != 2 or type(arguments[1]) is not bytes:
        raise reader.refuse(
            f"numpy's scalar{_short.repr(arguments)}; only scalar(dtype, bytes) is read"
        )
    dtype = _built_dtype(reader, arguments[0])
    return cast(np.generic, _numeric_array(reader, arguments[1], dtype, (), False)[()])


def _call_frombuffer(reader: _Reader, arguments: tuple[Any, ...]) -> np.ndarray[Any, Any]:
    order = arguments[3] if len(arguments) == 4 and type(arguments[3]) is str else None
    if order is None or type(arguments[0]) is not bytes or order not in ("C", "F"):
        raise reader.refuse(
            f"numpy's _frombuffer{_short.repr(arguments)}; only _frombuffer(bytes, dtype, "
            "shape, 'C' or 'F') is read"
        )
    dtype = _built_dtype(reader, arguments[1])
    return _numeric_array(reader, arguments[0], dtype, arguments[2], order == "F")


_CALLS: dict[int, Any] = {
    id(_ORDERED_DICT): lambda reader, arguments: _call_dict(reader, arguments, OrderedDict),
    id(_DICT): lambda reader, arguments: _call_dict(reader, arguments, dict),
    id(_ENCODE): _call_encode,
    id(_BYTES): _call_bytes,
    id(_DTYPE): _call_dtype,
    id(_RECONSTRUCT): _call_reconstruct,
    id(_SCALAR): _call_scalar,
    id(_FROMBUFFER): _call_frombuffer,
}


def _build(reader: _Reader) -> None:
    state = reader.pop()
    target = reader.top()
    reader.consumed(state)
    if isinstance(target, _Dtype) and target.dtype is None:
        target.dtype = _dtype_from_state(reader, target.code, state)
    elif isinstance(target, _Array) and target.array is None:
        target.array = _array_from_state(reader, state)
        reader.stack[-1] = target.array
    else:
        raise reader.refuse(
            f"BUILD on {_what(target)}: state is given only to a new numpy dtype or array"
        )


def _dtype_from_state(reader: _Reader, code: str, state: Any) -> np.dtype[Any]:
    # numpy's dtype.__setstate__ would take flags, field offsets and sizes from the file; here
    # the only accepted state is the one numpy writes for a plain numeric dtype.
    one_byte = code in ("b1", "i1", "u1")
    orders = ("|",) if one_byte else ("<", ">")
    if not (
        type(state) is tuple
        and len(state) == 8
        and any(_same(state[1], order) for order in orders)
        and _same(state, (3, state[1], None, None, None, -1, -1, 0))
    ):
        raise reader.refuse(
            f"numpy.dtype({code!r}) state {_short.repr(state)}; only (3, byte order, None, "
            f"None, None, -1, -1, 0) with byte order {' or '.join(orders)} is read"
        )
    return np.dtype(state[1] + code)


def _built_dtype(reader: _Reader, value: Any) -> np.dtype[Any]:
    if not isinstance(value, _Dtype) or value.dtype is None:
        raise reader.refuse(f"{_what(value)} where a numpy dtype (with its BUILD) belongs")
    return value.dtype


def _array_from_state(reader: _Reader, state: Any) -> np.ndarray[Any, Any]:
    if not isinstance(state, tuple) or len(state) != 5 or not _same(state[0], 1):
        raise reader.refuse(
            f"array state {_what(state)}; only (1, shape, dtype, is_fortran, bytes) is read"
        )
    _, shape, dtype, fortran, raw = state
    if type(fortran) is not bool:
        raise reader.refuse(f"array state's is_fortran {_what(fortran)}; expected a bool")
    if type(raw) is not bytes:
        raise reader.refuse(
            f"array data {_what(raw)}; only raw bytes are read (object arrays are refused)"
        )
    return _numeric_array(reader, raw, _built_dtype(reader, dtype), shape, fortran)


def _numeric_array(
    reader: _Reader, raw: bytes, dtype: np.dtype[Any], shape: Any, fortran: bool
) -> np.ndarray[Any, Any]:
    if type(shape) is not tuple or len(shape) > MAX_NDIM:
        raise reader.refuse(f"array shape {_what(shape)}; expected a tuple of at most {MAX_NDIM}")
    if any(type(n) is not int or n < 0 for n in shape):
        raise reader.refuse(f"array shape {_short.repr(shape)}; entries are ints >= 0")
    # The product of the non-zero extents is checked before it is formed, so a shape that
    # numpy would overflow on is refused here and the element count is exact.
    count = 1
    for extent in shape:
        count *= max(extent, 1)
        if count > 2**48:
            raise reader.refuse(f"array shape {_short.repr(shape)}: too many elements")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise reader.refuse(
            f"array of shape {_short.repr(shape)} and dtype {dtype.str} needs "
            f"{count * dtype.itemsize} bytes; the file gives {len(raw)}"
        )
    if dtype.kind == "b" and raw and np.frombuffer(raw, np.uint8).max() > 1:
        raise reader.refuse("a bool array with bytes other than 0 and 1")
    # The array is a read-only view of a bytes object this reader made (a slice of the file):
    # immutable and private, so no copy is needed.
    array = np.frombuffer(raw, dtype, count)
    return array.reshape(shape, order="F" if fortran else "C")


_OPCODES: dict[bytes, Any] = {
    b"\x80": _proto,
    b"\x95": _frame,
    b"(": _mark,
    b"0": _pop,
    b"1": _pop_mark,
    b"N": _const(None),
    b"\x88": _const(True),
    b"\x89": _const(False),
    b"I": _int_text,
    b"L": _long_text,
    b"F": _float_text,
    b"J": _binint("<i"),
    b"K": _binint("<B"),
    b"M": _binint("<H"),
    b"\x8a": _long_binary(1),
    b"\x8b": _long_binary(4),
    b"G": _binfloat,
    b"V": _unicode_text,
    b"X": _unicode(4),
    b"\x8c": _unicode(1),
    b"\x8d": _unicode(8),
    b"B": _bytes(4),
    b"C": _bytes(1),
    b"\x8e": _bytes(8),
    b"\x96": _bytes(8),  # BYTEARRAY8, read as bytes
    b"p": _put_text,
    b"q": _put_binary(1),
    b"r": _put_binary(4),
    b"\x94": _memoize,
    b"g": _get_text,
    b"h": _get_binary(1),
    b"j": _get_binary(4),
    b")": _empty_tuple,
    b"t": _tuple_from_mark,
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"]": _empty(list),
    b"l": _list_from_mark,
    b"a": _append,
    b"e": _appends,
    b"}": _empty(dict),
    b"d": _dict_from_mark,
    b"s": _setitem,
    b"u": _setitems,
    b"c": _global_text,
    b"\x93": _stack_global,
    b"R": _reduce,
    b"b": _build,
    b"2": _refused("DUP: a checkpoint shares no values this way"),
    b"S": _refused("STRING (a Python 2 str); Python 3 writes text as UNICODE"),
    b"T": _refused("BINSTRING (a Python 2 str); Python 3 writes text as BINUNICODE"),
    b"U": _refused("SHORT_BINSTRING (a Python 2 str); Python 3 writes text as BINUNICODE"),
    b"\x97": _refused("NEXT_BUFFER: out-of-band buffers are not part of a file"),
    b"\x98": _refused("READONLY_BUFFER: out-of-band buffers are not part of a file"),
    b"\x8f": _refused("EMPTY_SET: checkpoints hold no sets"),
    b"\x90": _refused("ADDITEMS: checkpoints hold no sets"),
    b"\x91": _refused("FROZENSET: checkpoints hold no sets"),
    b"\x81": _refused("NEWOBJ: checkpoints create no objects of classes"),
    b"\x92": _refused("NEWOBJ_EX: checkpoints create no objects of classes"),
    b"o": _refused("OBJ: checkpoints create no objects of classes"),
    b"i": _refused("INST: checkpoints create no objects of classes"),
    b"P": _refused("PERSID: checkpoints refer to no external objects"),
    b"Q": _refused("BINPERSID: checkpoints refer to no external objects"),
    b"\x82": _refused("EXT1: checkpoints use no extension registry"),
    b"\x83": _refused("EXT2: checkpoints use no extension registry"),
    b"\x84": _refused("EXT4: checkpoints use no extension registry"),
}
