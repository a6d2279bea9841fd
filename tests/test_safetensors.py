"""`.safetensors` files: accepted and refused as the official `safetensors` package does (issue 17,
point 6), and written byte for byte as it writes them.

Reference: the `safetensors` package itself (the Rust crate's parser behind `safetensors.numpy`),
where it is installed (the `dev` extra installs it); the cases below also pin, by their exact
bytes, what it answered when they were written (safetensors 0.8.0), so they run without it.
"""

from __future__ import annotations

import json
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid_jax
from lucid_jax.io import _safetensors

try:
    import safetensors
    import safetensors.numpy as safetensors_numpy
except ImportError:  # pragma: no cover - the dev extra installs it
    safetensors = safetensors_numpy = None

needs_package = pytest.mark.skipif(
    safetensors is None, reason="the safetensors package is not installed (pip install safetensors)"
)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _file(header: bytes | dict, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _ours_accepts(blob: bytes) -> bool:
    try:
        _safetensors.decode(blob)
    except ValueError:
        return False
    return True


def _official_accepts(blob: bytes) -> bool:
    try:
        safetensors.deserialize(blob)
    except Exception:  # SafetensorError
        return False
    return True


_F64x2 = {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
_W = json.dumps(_F64x2).encode()
_EXTRA = b'{"w": {"dtype":"F64","shape":[2],"data_offsets":[0,16],"x":%s}}'

# name: (file bytes, accepted by safetensors 0.8.0)
PINNED = {
    # The four differences the issue found.
    "metadata null": (_file({"__metadata__": None, "w": _F64x2}, bytes(16)), True),
    "extra entry field": (_file({"w": {**_F64x2, "x": [1, {"a": None}]}}, bytes(16)), True),
    "C64 tensor": (_file({"w": {**_F64x2, "dtype": "C64"}}, bytes(16)), True),
    "byte-order mark": (
        _file(b"\xef\xbb\xbf" + json.dumps({"w": _F64x2}).encode(), bytes(16)),
        False,
    ),
    "nested 10000 deep": (_file(_EXTRA % (b"[" * 10_000 + b"]" * 10_000), bytes(16)), False),
    # serde_json's recursion limit: 127 nested containers parse, 128 do not.
    "nested 127 deep": (_file(_EXTRA % (b"[" * 125 + b"]" * 125), bytes(16)), True),
    "nested 128 deep": (_file(_EXTRA % (b"[" * 126 + b"]" * 126), bytes(16)), False),
    "nested 127 deep, objects": (
        _file(_EXTRA % (b'{"a":' * 125 + b"1" + b"}" * 125), bytes(16)),
        True,
    ),
    "nested 128 deep, objects": (
        _file(_EXTRA % (b'{"a":' * 126 + b"1" + b"}" * 126), bytes(16)),
        False,
    ),
    # The other rules, found by asking the package.
    "whitespace around the header": (
        _file(b" \n\t\r" + json.dumps({"w": _F64x2}).encode() + b"  ", bytes(16)),
        True,
    ),
    "form feed after the header": (
        _file(json.dumps({"w": _F64x2}).encode() + b"\x0c", bytes(16)),
        False,
    ),
    "NUL padding": (_file(json.dumps({"w": _F64x2}).encode() + b"\x00", bytes(16)), False),
    "repeated tensor name: last wins": (
        _file(b'{"w": {"dtype":"F64","shape":[1],"data_offsets":[0,8]}, "w": %s}' % _W, bytes(16)),
        True,
    ),
    "repeated tensor name: each must parse": (_file(b'{"w": {}, "w": %s}' % _W, bytes(16)), False),
    "repeated __metadata__": (
        _file(b'{"__metadata__": {}, "__metadata__": {}, "w": %s}' % _W, bytes(16)),
        False,
    ),
    "repeated field": (
        _file(b'{"w": {"dtype":"F64","dtype":"F64","shape":[2],"data_offsets":[0,16]}}', bytes(16)),
        False,
    ),
    "repeated unknown field": (
        _file(b'{"w": {"x":1,"x":2,"dtype":"F64","shape":[2],"data_offsets":[0,16]}}', bytes(16)),
        True,
    ),
    "repeated metadata key": (
        _file(b'{"__metadata__": {"a":"1","a":"2"}, "w": %s}' % _W, bytes(16)),
        True,
    ),
    "metadata non-string": (_file({"__metadata__": {"a": 1}, "w": _F64x2}, bytes(16)), False),
    "metadata array": (_file({"__metadata__": [], "w": _F64x2}, bytes(16)), False),
    "entry as an array": (_file({"w": ["F64", [2], [0, 16]]}, bytes(16)), True),
    "entry as an array of 4": (_file({"w": ["F64", [2], [0, 16], 1]}, bytes(16)), False),
    "dtype as {name: null}": (_file({"w": {**_F64x2, "dtype": {"F64": None}}}, bytes(16)), True),
    "dtype as {name: []}": (_file({"w": {**_F64x2, "dtype": {"F64": []}}}, bytes(16)), False),
    "dtype lower case": (_file({"w": {**_F64x2, "dtype": "f64"}}, bytes(16)), False),
    "NaN in an extra field": (_file(_EXTRA % b"NaN", bytes(16)), False),
    "1e400 in an extra field": (_file(_EXTRA % b"1e400", bytes(16)), False),
    "310-digit integer": (_file(_EXTRA % (b"1" + b"0" * 309), bytes(16)), False),
    "309-digit integer": (_file(_EXTRA % (b"1" + b"0" * 308), bytes(16)), True),
    "1e-99999 underflows to 0": (_file(_EXTRA % b"1e-99999", bytes(16)), True),
    # serde_json's float parsing is not correctly rounded near float64's largest value:
    "1.7976931348623158e308 (Python: the largest float)": (
        _file(_EXTRA % b"1.7976931348623158e308", bytes(16)),
        False,
    ),
    "1.79769313486231581e308 (Python: infinity)": (
        _file(_EXTRA % b"1.79769313486231581e308", bytes(16)),
        True,
    ),
    "unpaired surrogate": (_file(_EXTRA % b'"\\ud800"', bytes(16)), False),
    "surrogate pair": (_file(_EXTRA % b'"\\ud83d\\ude00"', bytes(16)), True),
    "control character in a name": (_file(b'{"w\x01": %s}' % _W, bytes(16)), False),
    "invalid UTF-8": (_file(b'{"w\xff": %s}' % _W, bytes(16)), False),
    "shape -0": (_file(b'{"w": {"dtype":"F64","shape":[-0,2],"data_offsets":[0,0]}}'), False),
    "shape 2.0": (_file({"w": {**_F64x2, "shape": [2.0]}}, bytes(16)), False),
    "shape true": (_file({"w": {**_F64x2, "shape": [True, 2]}}, bytes(16)), False),
    "shape 2**64": (_file({"w": {**_F64x2, "shape": [2**64]}}, bytes(16)), False),
    "shape overflows before a 0": (
        _file({"w": {**_F64x2, "shape": [2**63, 4, 0], "data_offsets": [0, 0]}}),
        False,
    ),
    "F4, whole bytes": (
        _file({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, bytes(2)),
        True,
    ),
    "F4, half a byte": (
        _file({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, bytes(2)),
        False,
    ),
    "zero-size tensors": (
        _file(
            {"a": {"dtype": "F64", "shape": [0], "data_offsets": [16, 16]}, "w": _F64x2}, bytes(16)
        ),
        True,
    ),
    "gap before a tensor": (_file({"w": {**_F64x2, "data_offsets": [8, 24]}}, bytes(24)), False),
    "offsets reversed": (
        _file({"w": {**_F64x2, "shape": [0], "data_offsets": [16, 0]}}, bytes(16)),
        False,
    ),
    "trailing byte": (_file({"w": _F64x2}, bytes(17)), False),
    "empty header object": (_file({}), True),
    "header of 0 bytes": (struct.pack("<Q", 0), False),
    "header length not a multiple of 8": (_file(b'{"w":' + _W + b"}", bytes(16)), True),
}
#: Files the crate reads but numpy cannot hold: refused, as safetensors.numpy refuses them.
NUMPY_CANNOT = {"F4, whole bytes"}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_pinned_case_is_accepted_or_refused_as_the_official_package(case):
    blob, accepted = PINNED[case]
    assert _ours_accepts(blob) == (accepted and case not in NUMPY_CANNOT)
    if safetensors is not None:
        assert _official_accepts(blob) == accepted


def test_deep_nesting_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "deep.safetensors"
    path.write_bytes(PINNED["nested 10000 deep"][0])
    with pytest.raises(ValueError, match=r"deep\.safetensors.*nests deeper than 127"):
        lucid_jax.load(path)


@pytest.mark.usefixtures("x64")
def test_c64_metadata_null_and_extra_fields_load_their_values(tmp_path):
    values = np.array([1 + 2j, -0.5 - 4j], np.complex64)
    header = {
        "__metadata__": None,
        "z": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16], "note": {}},
    }
    path = tmp_path / "z.safetensors"
    path.write_bytes(_file(header, values.tobytes()))
    loaded = lucid_jax.load(path)
    assert loaded["z"].dtype == jnp.complex64
    np.testing.assert_array_equal(np.asarray(loaded["z"]), values)


@pytest.mark.parametrize("name", ["__metadata__", "bad\ud800name"])
def test_save_refuses_a_name_that_load_would_refuse(tmp_path, name):
    with pytest.raises(ValueError, match=r"cannot write .*s\.safetensors"):
        lucid_jax.save({name: jnp.ones(2), "w": jnp.ones(2)}, tmp_path / "s", safetensors=True)
    assert list(tmp_path.iterdir()) == []


# Every dtype both sides hold; the values cover each type's edge cases through its raw bytes.
ALL_DTYPES = {name: dtype for name, dtype in _safetensors._DTYPES.items()}
NAMES = ["w", "0.weight", "\u00e9t\u00e9", "tab\there", 'quote"back\\slash', "\x7f\x01", "z" * 40]
NAMES += ["\N{GRINNING FACE}"]


def _arrays(seed: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    arrays = {}
    for i, (code, dtype) in enumerate(ALL_DTYPES.items()):
        shape = [(2, 3), (5,), (), (0, 2)][i % 4]
        raw = generator.integers(0, 256, size=math.prod(shape) * dtype.itemsize, dtype=np.uint8)
        if code == "BOOL":
            raw = raw % 2
        arrays[f"{NAMES[i % len(NAMES)]}.{code}"] = raw.view(dtype).reshape(shape)
    return arrays


@needs_package
@pytest.mark.parametrize("seed", [0, 1])
def test_our_files_are_the_packages_bytes_and_it_reads_them(seed):
    arrays = _arrays(seed)
    ours = _safetensors.encode(arrays)
    assert ours == safetensors_numpy.save(arrays)  # the same layout, header and padding
    read = dict(safetensors.deserialize(ours))
    assert sorted(read) == sorted(arrays)
    for name, array in arrays.items():
        assert read[name]["dtype"] == _safetensors.dtype_name(array.dtype)
        assert list(read[name]["shape"]) == list(array.shape)
        assert bytes(read[name]["data"]) == array.tobytes()
    numpy_native = {k: v for k, v in arrays.items() if v.dtype.type.__module__ == "numpy"}
    for name, array in safetensors_numpy.load(_safetensors.encode(numpy_native)).items():
        assert array.dtype == numpy_native[name].dtype
        np.testing.assert_array_equal(array, numpy_native[name])


def test_save_and_load_keep_every_dtype(tmp_path):
    arrays = _arrays(2)
    with jax.enable_x64(True):
        loaded = lucid_jax.load(lucid_jax.save(arrays, tmp_path / "all", safetensors=True))
    assert list(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert np.asarray(loaded[name]).tobytes() == array.tobytes(), name


@needs_package
@pytest.mark.parametrize("seed", [0, 1])
def test_we_read_the_packages_files(tmp_path, seed):
    arrays = _arrays(seed)
    path = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(arrays, path)
    with jax.enable_x64(True):
        loaded = lucid_jax.load(path)
    assert list(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        assert np.asarray(loaded[name]).tobytes() == array.tobytes()


@needs_package
def test_big_endian_arrays_are_written_as_the_package_writes_them():
    arrays = {"f": np.arange(3, dtype=">f8"), "i": np.arange(4, dtype=">i2")}
    assert _safetensors.encode(arrays) == safetensors_numpy.save(arrays)


# Forged headers: JSON text built piece by piece, so that it may repeat keys, nest deep, spell
# numbers oddly, and be framed wrongly.


class _Raw(str):
    """JSON text used as it is."""


def _dump(value) -> str:
    if isinstance(value, _Raw):
        return value
    if isinstance(value, tuple):  # an object as its pairs, repeats allowed
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


# Values the crate takes in an ignored field, and values it refuses anywhere.
_ODD_BUT_FINE = [
    _Raw("-0"),
    _Raw("2.0"),
    _Raw("1e308"),
    _Raw("1e-400"),
    _Raw('"\\ud83d\\ude00"'),
    _Raw("1" + "0" * 308),
    _Raw("-1"),
    True,
    None,
    "s",
    2**64,
    2**63,
]
_NEVER_FINE = [_Raw("1e400"), _Raw("NaN"), _Raw('"\\ud800"'), _Raw("1" + "0" * 309)]


_FAULTS = ["name", "dtype", "shape", "offsets", "form", "depth", "leaf", "metadata", "before"]
_FAULTS += ["after", "data", "length"]


@st.composite
def _forged_file(draw) -> bytes:
    """A safetensors file, well-formed (quirks included) or with one kind of fault."""
    fault = draw(st.sampled_from([None, None, None, *_FAULTS]))
    pending = [fault]  # the fault goes in once, at the first place it can

    def pick(site: str, fine: list, broken: list | None = None):
        if pending[0] == site and broken:
            pending[0] = None
            return draw(st.sampled_from(broken))
        return draw(st.sampled_from(fine))

    def nested():
        depth = pick("depth", [1, 2, 100, 124, 125], [126, 127, 130])
        leaf = pick("leaf", [0, 7, *_ODD_BUT_FINE], _NEVER_FINE)
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
        return _Raw(opener * depth + _dump(leaf) + closer * depth)

    count = draw(st.integers(1 if fault in ("depth", "leaf") else 0, 4))
    pairs, offset = [], 0
    names = [pick("name", ["w", "b", "", "\u00e9", "w"], ["__metadata__"]) for _ in range(count)]
    for index, name in enumerate(names):
        overwritten = name in names[index + 1 :]  # the crate keeps a repeated name's last entry
        dtype = pick(
            "dtype", [*_safetensors.CRATE_DTYPES, "{F32: null}"], ["f32", "C128", "{C64: []}"]
        )
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        if fault == "shape" or draw(st.integers(0, 4)) == 0:
            shape = [*shape, pick("shape", [0], [-1, 2**64, 2**63, _Raw("-0"), _Raw("2.0"), True])]
        sizes = [size if type(size) is int and 0 <= size < 4 else 1 for size in shape]
        size = math.prod(sizes) * _safetensors._BITS.get(dtype, 64) // 8
        offsets = [0, size] if overwritten else [offset, offset + size]
        offset += 0 if overwritten else size
        offsets = pick(
            "offsets",
            [offsets],
            [
                [offsets[0], offsets[1] + 1],
                [offsets[1], offsets[0]],
                [*offsets, 0],
                [_Raw("-0"), offsets[1]],
                [offsets[0] + 1, offsets[1] + 1],
            ],
        )
        dtype_value = {"{F32: null}": (("F32", None),), "{C64: []}": (("C64", []),)}.get(
            dtype, dtype
        )
        fields = [("dtype", dtype_value), ("shape", shape), ("data_offsets", offsets)]
        form = pick("form", ["object", "object", "array", "extra"], ["repeat", "lack", "array+1"])
        if fault in ("depth", "leaf"):
            form = "extra"
        if form.startswith("array"):
            entry = [value for _, value in fields] + ([0] if form == "array+1" else [])
        else:
            if form == "extra":
                keys = st.sampled_from(["x", "x", "y", "dtypes"])
                values = draw(st.lists(st.tuples(keys, st.booleans()), min_size=1, max_size=3))
                fields += [
                    (key, nested() if deep else pick("leaf", _ODD_BUT_FINE, _NEVER_FINE))
                    for key, deep in values
                ]
            elif form == "repeat":
                fields = [*fields, fields[draw(st.integers(0, 2))]]
            elif form == "lack":
                fields = fields[:2]
            entry = tuple(draw(st.permutations(fields)))
        pairs.append((name, entry))
    metadata = pick(
        "metadata",
        ["absent", _Raw("null"), (("a", "b"),), (("a", "1"), ("a", "2"))],
        [(("a", 1),), [], "x", "twice"],
    )
    if metadata == "twice":
        pairs += [("__metadata__", None), ("__metadata__", None)]
    elif metadata != "absent":
        pairs.append(("__metadata__", metadata))
    text = _dump(tuple(draw(st.permutations(pairs))))
    before = pick("before", ["", "", " ", "\n\t\r "], ["\ufeff", "\x0c"])
    after = pick("after", ["", "", "   "], ["\x00", "\u00a0", "}"])
    header = (before + text + after).encode("utf-8", "surrogatepass")
    data_size = max(offset + pick("data", [0], [1, -1, 8]), 0)
    data = bytes((np.arange(data_size) * 37 % 251).astype(np.uint8))
    length = len(header) + pick("length", [0], [1, -1])
    return struct.pack("<Q", max(length, 0)) + header + data


@pytest.mark.long_running
@needs_package
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_forged_file())
def test_forged_headers_are_accepted_and_refused_as_the_official_package(blob):
    try:
        theirs = {name: info for name, info in safetensors.deserialize(blob)}
    except Exception:  # SafetensorError: the crate refuses the file
        theirs = None
    try:
        ours = _safetensors.decode(blob)
    except ValueError as error:
        ours = error
    if theirs is None:
        assert isinstance(ours, ValueError), "we accept a file the package refuses"
        return
    # Accepted by the crate: we read it as safetensors.numpy does (numpy's dtypes, extended by
    # ml_dtypes' bfloat16 and float8; no sub-byte floats).
    try:
        expected = {
            name: np.frombuffer(info["data"], _safetensors._DTYPES[info["dtype"]]).reshape(
                info["shape"]
            )
            for name, info in theirs.items()
        }
    except (KeyError, ValueError):  # F4/F6, or a zero-size shape numpy cannot make
        assert isinstance(ours, ValueError)
        return
    assert not isinstance(ours, ValueError), f"we refuse a file the package accepts: {ours}"
    assert sorted(ours) == sorted(theirs)
    for name, array in expected.items():
        assert ours[name].dtype == array.dtype
        assert ours[name].shape == array.shape
        assert ours[name].tobytes() == array.tobytes()


_MAX_DIGITS = "17976931348623157081452742373170435679807056752584499659891747680315726078"


@st.composite
def _number_near_the_float_limit(draw) -> str:
    """A JSON number spelt to land near float64's largest value (or far above or below it)."""
    cut = draw(st.integers(1, len(_MAX_DIGITS)))
    digits = _MAX_DIGITS[:cut]
    if draw(st.booleans()):  # nudge the last digit
        digits = digits[:-1] + str((int(digits[-1]) + draw(st.integers(-1, 2))) % 10)
    digits = digits.lstrip("0") or "1"
    point = draw(st.integers(1, len(digits)))
    mantissa = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
    exponent = 308 - (point - 1) + draw(st.integers(-2, 1))
    spelling = draw(st.sampled_from(["e", "E", "e+", "int"]))
    if spelling == "int" and point == len(digits) and exponent >= 0:
        text = digits + "0" * exponent
    else:
        text = mantissa + spelling.replace("int", "e") + str(exponent)
    return draw(st.sampled_from(["", "-"])) + text


@needs_package
@settings(max_examples=300, deadline=None)
@given(_number_near_the_float_limit())
def test_numbers_near_the_float_limit_are_refused_as_the_package_refuses(number):
    blob = _file(_EXTRA % number.encode(), bytes(16))
    assert _ours_accepts(blob) == _official_accepts(blob), number
