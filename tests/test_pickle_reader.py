"""The pickle reader (`lucid_jax.io._pickle_reader`) against numpy's and Python's own pickles.

Reference: `pickle.loads` of the same bytes, on data made here (never on a file from outside):
every numpy array and scalar the reader accepts must come back as numpy's unpickler builds it,
whatever the protocol and whichever numpy (1.x names `numpy.core`, 2.x `numpy._core`).
"""

from __future__ import annotations

import pickle
import struct
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest

from lucid_jax.io._pickle_reader import (
    ARRAY_TYPE_CODES,
    MAX_DEPTH,
    PickleRefused,
    read_pickle,
)

PROTOCOLS = range(6)
CODES = sorted(ARRAY_TYPE_CODES)


def _as_numpy_1(data: bytes) -> bytes:
    """`data` as numpy 1.x writes it: `numpy.core.*` where numpy 2.x writes `numpy._core.*`."""
    length = len(data)
    for module in (b"multiarray", b"numeric"):
        new, old = b"numpy.core." + module, b"numpy._core." + module
        data = data.replace(bytes([0x8C, len(old)]) + old, bytes([0x8C, len(new)]) + new)
        data = data.replace(b"c" + old + b"\n", b"c" + new + b"\n")
    if (
        data[2:3] == b"\x95" and len(data) != length
    ):  # one FRAME (these pickles are small): it is shorter now
        framed = len(data) - 11
        data = data[:3] + struct.pack("<Q", framed) + data[11:]
    return data


def _samples(code: str) -> dict[str, object]:
    orders = "|" if code in ("b1", "i1", "u1") else "<>"
    values = np.arange(-3, 9).reshape(3, 4) % (2 if code == "b1" else 100)
    samples: dict[str, object] = {}
    for order in orders:
        dtype = np.dtype(order + code)
        array = values.astype(dtype)
        samples[f"{order}{code} C"] = array
        samples[f"{order}{code} F"] = np.asfortranarray(array)
        samples[f"{order}{code} strided"] = array[:, ::2]
        samples[f"{order}{code} 0-d"] = np.array(array[1, 1])
        samples[f"{order}{code} empty"] = np.zeros((0, 3), dtype)
        samples[f"{order}{code} scalar"] = array[2, 3]
    return samples


def _same(read: object, reference: object) -> None:
    assert type(read) is type(reference)
    if isinstance(reference, np.ndarray):
        assert isinstance(read, np.ndarray)
        # Protocol 0 is the one case where numpy's unpickler turns a big-endian array native;
        # the values are the same.
        assert read.dtype.newbyteorder("=") == reference.dtype.newbyteorder("=")
        assert read.shape == reference.shape
        assert read.flags.f_contiguous == reference.flags.f_contiguous
        assert read.flags.c_contiguous == reference.flags.c_contiguous
        np.testing.assert_array_equal(read, reference)
    elif isinstance(reference, np.generic):
        assert read.dtype == reference.dtype  # type: ignore[attr-defined]
        assert read.tobytes() == reference.tobytes()  # type: ignore[attr-defined]
    elif isinstance(reference, (dict, list, tuple)):
        assert len(read) == len(reference)  # type: ignore[arg-type]
        if isinstance(reference, dict):
            assert list(read) == list(reference)  # type: ignore[call-overload]
            for key in reference:
                _same(read[key], reference[key])  # type: ignore[index]
        else:
            for mine, theirs in zip(read, reference, strict=True):  # type: ignore[call-overload]
                _same(mine, theirs)
    else:
        assert read == reference


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("code", CODES)
def test_numpy_pickles_of_every_allowed_dtype_read_as_numpy_unpickles_them(code, protocol):
    for name, value in _samples(code).items():
        data = pickle.dumps(value, protocol=protocol)
        for spelling in (data, _as_numpy_1(data)):
            try:
                _same(read_pickle(spelling), pickle.loads(data))
            except AssertionError as error:
                raise AssertionError(f"{name}, protocol {protocol}: {error}") from None


def test_numpy_1_spelling_is_exercised():
    data = pickle.dumps(np.arange(3.0), protocol=4)
    assert b"numpy._core" in data and b"numpy._core" not in _as_numpy_1(data)
    assert b"numpy.core.multiarray" in _as_numpy_1(data)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_data_reads_as_pickle_loads_it(protocol):
    value = OrderedDict(
        [
            ("none", None),
            ("bools", [True, False]),
            ("ints", [0, -1, 255, 65535, 2**31 - 1, -(2**31), 2**70, -(2**70)]),
            ("floats", (1.1, -0.0, float("inf"), 1e-300)),
            ("text", ["", "é", "日本", "\U0001f600", "a\nb\\u"]),
            ("bytes", [b"", b"\x00\xff", bytes(300)]),
            ("nested", {"a": ({"b": [()]},)}),
        ]
    )
    data = pickle.dumps(value, protocol=protocol)
    _same(read_pickle(data), pickle.loads(data))


def test_bytearray_reads_as_bytes():
    data = pickle.dumps(bytearray(b"ab"), protocol=5)
    assert b"\x96" in data  # BYTEARRAY8
    assert read_pickle(data) == b"ab"


def _refused(data: bytes, match: str) -> PickleRefused:
    with pytest.raises(PickleRefused, match=match) as caught:
        read_pickle(data)
    return caught.value


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([1, None], dtype=object), r"numpy\.dtype\('O8'"),
        (np.array(["ab"]), r"numpy\.dtype\('U2'"),
        (np.array([1], "datetime64[s]"), r"numpy\.dtype\('M8'"),
        (np.zeros(2, [("x", "f8")]), r"numpy\.dtype\('V8'"),
        (np.longdouble(1), r"numpy\.dtype\('f16'"),
        ({1, 2}, r"EMPTY_SET|GLOBAL __builtin__\.set is not"),
        (OrderedDict([(1, np.ones(1))]), r"dict key int 1 refused"),
    ],
    ids=["object array", "str array", "datetime", "structured", "longdouble", "set", "int key"],
)
def test_pickles_beyond_plain_data_and_numeric_arrays_are_refused(value, match):
    for protocol in (2, 4, 5):
        _refused(pickle.dumps(value, protocol=protocol), match)


def test_out_of_band_buffers_are_refused():
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(np.arange(3.0), protocol=5, buffer_callback=buffers.append)
    assert buffers
    _refused(data, r"NEXT_BUFFER")


def test_refusals_give_the_offset_of_the_opcode():
    data = b"\x80\x04N" + b"\x8c\x02os\x8c\x06system\x93" + b"."
    error = _refused(data, r"GLOBAL os\.system is not one of")
    assert error.offset == 15  # the STACK_GLOBAL, after PROTO, NONE and the two strings
    assert str(error).startswith("at byte 15: GLOBAL os.system")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\x04B\xff\xff\xff\x7f", r"says 2147483647 bytes follow; 0 do"),
        (b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"x.", r"says 4611686018427387904 bytes"),
        (b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b".", r"says 1099511627776 bytes"),
        (b"\x80\x04\x8b\xff\xff\xff\x7f.", r"an integer of 2147483647 bytes"),
        (b"\x80\x04\x95" + struct.pack("<Q", 2**50) + b"N.", r"FRAME of 1125899906842624"),
        (b"\x80\x04h\x07.", r"GET 7, which the file never PUT"),
        (b"\x80\x04]\x94h\x00.", r"GET 0 of a list: containers are not shared"),
        (b"\x80\x04]2a.", r"DUP"),
        (b"\x80\x04N.N", r"1 bytes follow the STOP"),
        (b"\x80\x04NN.", r"STOP leaves values on the stack"),
        (b"\x80\x04", r"ends before the pickle's STOP"),
        (b"\x80\x04a.", r"the stack is empty"),
        (b"\x80\x04Nt.", r"no MARK to pop to"),
        (b"\x80\x04N(NNu.", r"SETITEM on NoneType None; only dicts"),
        (b"\x80\x04}(Nu.", r"odd number"),
        (b"\x80\x06N.", r"PROTO 6"),
        (
            b"I123456789012345678901234567890123456789012345678901234567890123456789\n.",
            r"INT is longer than 64 characters",
        ),
        (b"I12", r"no end of line"),
    ],
)
def test_malformed_pickles_are_refused_before_allocating(data, match):
    tracemalloc.start()
    try:
        _refused(data, match)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _nested_lists(depth: int) -> bytes:
    return b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."


def _nested_dicts(depth: int) -> bytes:
    return b"\x80\x04}" + b"\x8c\x01k}" * (depth - 1) + b"s" * (depth - 1) + b"."


def test_nesting_is_bounded():
    for nested in (_nested_lists, _nested_dicts):
        value = read_pickle(nested(MAX_DEPTH))
        for _ in range(MAX_DEPTH - 1):
            (value,) = value.values() if isinstance(value, dict) else value
        assert value in ([], {})
        _refused(nested(MAX_DEPTH + 1), r"containers nest more than 100 levels")
        _refused(nested(100_000), r"containers nest more than 100 levels")
    _refused(b"\x80\x04N" + b"\x85" * 100_000 + b".", r"containers nest more than 100")
    _refused(b"\x80\x04" + b"(" * 100_000, r"MARKs nest more than 100 levels")


def test_memory_beyond_twice_the_file_plus_the_slack_is_refused(monkeypatch):
    import lucid_jax.io._pickle_reader as reader

    monkeypatch.setattr(reader, "MEMORY_SLACK", 10_000)
    many_lists = b"\x80\x04" + b"]\x94" * 5_000 + b"."  # 10 kB of file, 5,000 lists
    _refused(many_lists, r"builds more than twice its size plus 10000 bytes of objects")
    array = np.arange(20_000.0)  # its 160 kB of bytes are within twice the file's size
    assert read_pickle(pickle.dumps(array, protocol=4)).tobytes() == array.tobytes()
